package zmm

import (
	"math/bits"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
)

// Free slots of small bins form one singly linked list per bin. A free
// slot's first word is the address of the next free slot (0 ends the list)
// and its second word is a check word: next ^ key ^ slot. The check word
// makes a corrupted link detectable before it is followed (the Zend MM 8.4+
// keeps a shadow pointer for the same reason), and it marks the slot as
// free: Free finds a valid check word in a block it is given only when the
// block is already free. Alloc clears the check word of the slot it hands
// out. The key is random per heap and per request, so user data matches a
// check word by chance with probability 2^-64.

//
// Debug heaps keep the link and check word at offset 16 (s.linkOff), after
// the freed block's Size and Site, and use their own lists (s.dfree); the
// fast paths, which hard-code offset 0 and s.free, never see them.

func (s *heapState) setLink(slot, next uintptr) { writeLink(slot, next, s.key, s.linkOff) }

// writeLink is setLink with the key and link offset passed in, for loops
// that keep them in registers.
func writeLink(slot, next, key, off uintptr) {
	*(*uintptr)(ptr(slot + off)) = next
	*(*uintptr)(ptr(slot + off + 8)) = next ^ key ^ slot
}

// isFreeSlot reports whether the slot carries a valid free-list check word.
func (s *heapState) isFreeSlot(slot uintptr) bool {
	return *(*uintptr)(ptr(slot + s.linkOff + 8)) == *(*uintptr)(ptr(slot + s.linkOff))^s.key^slot
}

// lists returns the free lists the slow paths work on.
func (s *heapState) lists() *[32]uintptr {
	if s.special != 0 {
		return &s.dfree
	}
	return &s.free
}

// Alloc returns a block of at least size bytes (emalloc). Blocks of up to
// 3072 bytes come from size-class bins and are 8-byte aligned (16-byte
// for sizes that are multiples of 16); larger blocks are page runs, 4 KiB
// aligned; blocks above 2 MiB − 4 KiB are huge blocks of their own
// mapping, 2 MiB aligned. Alloc(0) returns a valid minimal block. The
// contents are not zeroed. It panics with a *Error when the memory limit
// would be exceeded or the OS has no memory.
//
// The small-block fast path below is the whole of zend_mm_alloc_small: it
// calls nothing (every helper is inlined) and touches the heap state and
// the slot's first cache line only. It is nosplit: its frame is small and
// every call it makes is to a function that checks the stack itself.
//
//go:nosplit
func (h *Heap) Alloc(size uintptr) unsafe.Pointer {
	if size > bins.MaxSize {
		return h.allocBig(size)
	}
	s := h.st
	bin := smallBin(size) & 31
	slot := s.free[bin]
	if slot == 0 {
		return h.refill(bin, size)
	}
	p := ptr(slot)
	next := *(*uintptr)(p)
	check := (*uintptr)(unsafe.Add(p, 8))
	if *check != next^s.key^slot {
		s.corruptSlot("Alloc", bin, slot)
	}
	*check = 0
	s.free[bin] = next
	s.size += uintptr(bins.Size[bin])
	s.peak = max(s.peak, s.size)
	return p
}

// corruptSlot reports a broken free-list link. The rest of the list cannot
// be trusted, so it is abandoned (its slots leak) and the heap stays usable.
//
//go:noinline
func (s *heapState) corruptSlot(op string, bin uint32, slot uintptr) {
	s.lists()[bin&31] = 0
	fail(ErrCorrupted, op, slot,
		"zmm: heap corrupted: free slot 0x%x of bin %d (%d bytes) has a broken link (written after free, or overflow from the block before it)",
		slot, bin, bins.Size[bin])
}

// refill is Alloc's slow path for small sizes: the bin's free list is
// empty, or the heap is special (debug, system, guard, custom handlers)
// and serves every block here.
//
//go:noinline
func (h *Heap) refill(bin uint32, size uintptr) unsafe.Pointer {
	s := h.st
	if s.special != 0 {
		return h.allocSpecial(size, "Alloc")
	}
	s.checkOpen("Alloc")
	h.enter(opAlloc)
	defer h.exit()
	return s.refill(bin)
}

// allocBig is Alloc's path for sizes above the bins.
//
//go:noinline
func (h *Heap) allocBig(size uintptr) unsafe.Pointer {
	s := h.st
	if s.special != 0 {
		return h.allocSpecial(size, "Alloc")
	}
	s.checkOpen("Alloc")
	h.enter(opAlloc)
	defer h.exit()
	return s.allocBig(size, "Alloc")
}

// alloc is Alloc inside the heap, for slow paths that have entered it
// already (see enter): the block comes from the lists the slow paths work
// on, never through the public entry points.
func (s *heapState) alloc(size uintptr, op string) unsafe.Pointer {
	if size > bins.MaxSize {
		return s.allocBig(size, op)
	}
	bin := smallBin(size) & 31
	l := s.lists()
	slot := l[bin]
	if slot == 0 {
		return s.refill(bin)
	}
	if !s.isFreeSlot(slot) {
		s.corruptSlot(op, bin, slot)
	}
	l[bin] = *(*uintptr)(ptr(slot + s.linkOff))
	*(*uintptr)(ptr(slot + s.linkOff + 8)) = 0
	s.size += uintptr(bins.Size[bin])
	s.peak = max(s.peak, s.size)
	return ptr(slot)
}

// uncarved reports whether addr is in the uncarved rest of the bin's newest
// run (one compare, for Free's fast path).
func (s *heapState) uncarved(bin uint32, addr uintptr) bool {
	return addr-s.carveNext[bin&31] < s.carveLeft[bin&31]
}

// uncarvedSlots returns how many slots of the bin's newest run are
// uncarved.
func (s *heapState) uncarvedSlots(bin uint32) int {
	return int(s.carveLeft[bin&31] / uintptr(bins.Size[bin&31]))
}

// A new run is threaded onto its free list a batch at a time. Threading
// writes each slot's link and check word, and the first write to a line
// misses the cache: a request that ends (Reset) after a few allocations of
// a bin should pay that only for the slots it could use. The first batch
// of a run is carveFirst bytes (at least carveMinSlots slots); each later
// batch is as large as all before it, so a bin in heavy use reaches the
// end of its run in a few calls to refill.
const (
	carveFirst    = 1024
	carveMinSlots = 4
)

// carveFirstBytes is the first batch of each bin, in whole slots.
var carveFirstBytes = func() (t [32]uintptr) {
	for b := range bins.NumBins {
		size := uintptr(bins.Size[b])
		t[b] = max(carveMinSlots*size, carveFirst/size*size)
	}
	return t
}()

// refill takes the next batch of slots from the bin's newest run, or
// carves a new run when that is used up: it threads the batch but its
// first slot onto the free list and returns the first
// (zend_mm_alloc_small_slow, which threads the whole run at once).
func (s *heapState) refill(bin uint32) unsafe.Pointer {
	s.checkOpen("Alloc")
	size := uintptr(bins.Size[bin])
	bin &= 31
	runBytes := uintptr(bins.Elements[bin]) * size
	if s.carveLeft[bin] == 0 {
		n := bins.Pages[bin]
		c, start := s.allocPages(n, "Alloc", uintptr(n)*chunk.PageSize)
		c.SetSmallRun(start, n, bin)
		s.carveNext[bin], s.carveLeft[bin] = uintptr(c.Page(start)), runBytes
	}
	first, left := s.carveNext[bin], s.carveLeft[bin]
	batch := left
	if s.special == 0 {
		batch = min(left, max(carveFirstBytes[bin], runBytes-left))
	}
	end := first + batch
	s.carveNext[bin], s.carveLeft[bin] = end, left-batch
	if s.debug {
		// Free debug slots carry the free fill, checked when handed out.
		for p := first + size; p < end; p += size {
			debugheader.Fill(ptr(p), size)
		}
	}
	if end-first > size {
		s.pushSlots(bin, first+size, end, size)
	}
	// The pages may be recycled (a run GC emptied, a cached chunk) and
	// still hold an old free slot's link and check word: clear the check
	// word of the slot handed out, as the fast path does.
	*(*uintptr)(ptr(first + s.linkOff + 8)) = 0
	s.size += size
	s.peak = max(s.peak, s.size)
	return ptr(first)
}

// flushCarve threads the uncarved rest of every bin's newest run onto the
// free lists, for the slow paths that walk the lists and count on every
// slot not handed out being on one.
func (s *heapState) flushCarve() {
	for bin := range uint32(bins.NumBins) {
		if left := s.carveLeft[bin]; left != 0 {
			first := s.carveNext[bin]
			s.pushSlots(bin, first, first+left, uintptr(bins.Size[bin]))
			s.carveNext[bin], s.carveLeft[bin] = 0, 0
		}
	}
}

// pushSlots threads the slots of size bytes from first up to end onto the
// bin's free list, in address order, ahead of what the list held.
func (s *heapState) pushSlots(bin uint32, first, end, size uintptr) {
	// The key and link offset live in locals: the stores below go through
	// unsafe pointers, which the compiler must assume may alias s, so it
	// would reload both fields for every slot.
	key, off := s.key, s.linkOff
	last := end - size
	for p := first; p < last; p += size {
		writeLink(p, p+size, key, off)
	}
	l := s.lists()
	writeLink(last, l[bin&31], key, off)
	l[bin&31] = first
}

// allocBig serves sizes above the small bins: a page run, or a huge block.
func (s *heapState) allocBig(size uintptr, op string) unsafe.Pointer {
	if size <= chunk.MaxLargeSize {
		return s.allocLarge(size, op)
	}
	return s.allocHuge(size, op)
}

// allocLarge takes a run of whole pages inside a chunk (zend_mm_alloc_large).
func (s *heapState) allocLarge(size uintptr, op string) unsafe.Pointer {
	s.checkOpen(op)
	n := uint32((size + chunk.PageSize - 1) >> chunk.PageShift)
	c, start := s.allocPages(n, op, uintptr(n)*chunk.PageSize)
	c.SetLargeRun(start, n)
	s.size += uintptr(n) * chunk.PageSize
	s.peak = max(s.peak, s.size)
	return c.Page(start)
}

// Calloc returns a zeroed block of n*size bytes (ecalloc). The product is
// checked: if it wraps, Calloc panics with ErrOverflow.
func (h *Heap) Calloc(n, size uintptr) unsafe.Pointer {
	total := safeSize("Calloc", n, size, 0)
	p := h.Alloc(total)
	clear(unsafe.Slice((*byte)(p), total))
	return p
}

// SafeAlloc returns a block of n*size+offset bytes (safe_emalloc). The
// arithmetic is checked in full: if it wraps, SafeAlloc panics with
// ErrOverflow and Zend's message "Possible integer overflow in memory
// allocation (n * size + offset)".
func (h *Heap) SafeAlloc(n, size, offset uintptr) unsafe.Pointer {
	return h.Alloc(safeSize("SafeAlloc", n, size, offset))
}

// safeSize computes n*size+offset or panics if it does not fit a uintptr
// (zend_safe_address_guarded).
func safeSize(op string, n, size, offset uintptr) uintptr {
	total, ok := SafeSize(n, size, offset)
	if !ok {
		overflowError(op, n, size, offset)
	}
	return total
}

// SafeSize computes n*size+offset as SafeAlloc does and reports whether it
// fits in a uintptr without wrapping (zend_safe_address).
func SafeSize(n, size, offset uintptr) (uintptr, bool) {
	hi, lo := bits.Mul64(uint64(n), uint64(size))
	sum, carry := bits.Add64(lo, uint64(offset), 0)
	return uintptr(sum), hi == 0 && carry == 0
}

// Strdup copies s into a new block followed by a NUL byte (estrdup) and
// returns the block.
func (h *Heap) Strdup(s string) unsafe.Pointer {
	return h.copyString("Strdup", s)
}

// Strndup copies at most n bytes of s into a new block followed by a NUL
// byte (estrndup) and returns the block. Unlike C, s has a known length, so
// Strndup stops at the end of s when n is larger.
//
// It is kept out of line so that debug mode names its caller as the site.
//
//go:noinline
func (h *Heap) Strndup(s string, n uintptr) unsafe.Pointer {
	if n < uintptr(len(s)) {
		s = s[:n]
	}
	return h.copyString("Strndup", s)
}

func (h *Heap) copyString(op string, s string) unsafe.Pointer {
	n := uintptr(len(s))
	if n+1 < n {
		overflowError(op, 1, n, 1)
	}
	p := h.Alloc(n + 1)
	b := unsafe.Slice((*byte)(p), n+1)
	copy(b, s)
	b[n] = 0
	return p
}

// Bytes returns a []byte view of the first n bytes of the block at p. The
// view is valid until the block is freed, reallocated, or the heap is Reset
// or Closed; it must not outlive the block, and nothing the Go garbage
// collector manages may be stored in it as a pointer.
func Bytes(p unsafe.Pointer, n int) []byte { return unsafe.Slice((*byte)(p), n) }

// AllocBytes allocates n bytes and returns them as a slice of length n
// whose capacity is the whole block (BlockSize). Free it with FreeBytes.
// The same lifetime rules as Bytes apply.
func (h *Heap) AllocBytes(n int) []byte {
	if n < 0 {
		fail(ErrOverflow, "AllocBytes", 0, "zmm: AllocBytes of negative size %d", n)
	}
	p := h.Alloc(uintptr(n))
	return unsafe.Slice((*byte)(p), h.BlockSize(p))[:n]
}

// FreeBytes frees a slice that AllocBytes (or Bytes of a block) returned.
// The slice must start at the start of the block.
func (h *Heap) FreeBytes(b []byte) {
	if cap(b) == 0 {
		return
	}
	h.Free(unsafe.Pointer(unsafe.SliceData(b)))
}
