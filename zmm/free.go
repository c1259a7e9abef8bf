package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/internal/frames"
)

// Free gives a block back to the heap (efree). Free(nil) does nothing.
//
// A pointer the heap did not hand out — a random address, Go memory, a
// pointer inside a block, a block of another heap, a block already freed —
// makes Free panic with a *Error naming the pointer (ErrInvalidPointer,
// ErrWrongHeap or ErrDoubleFree); the heap is left untouched. The pointer
// is checked against the process-wide frame table before any chunk header
// is read, so a bad pointer never faults.
//
// Free is nosplit for the same reason as Alloc.
//
//go:nosplit
func (h *Heap) Free(p unsafe.Pointer) {
	// The pointer becomes an integer at once and stays one inside zmm: a
	// bad value (below 4096, say) held in a pointer variable makes the Go
	// runtime abort when it copies a growing stack.
	slot := uintptr(p)
	s := h.st
	off := slot & (chunk.Size - 1)
	// Fast path (zend_mm_free_small): a slot of one of our live chunks (the
	// own set says so, or, for a chunk the set does not hold, the frame
	// table), at the exact start of an element, handed out (not in its
	// bin's uncarved rest) and not already free. A chunk's base itself has
	// off 0 and map entry 0 is the header's, so it falls through to the
	// slow path. (Two ifs, not ||: the compiler would make a bool of the
	// condition and test it, four more instructions on the hit path.)
	if s.own[ownSlot(slot)] != slot-off {
		if !s.fastFrame(slot) {
			h.freeSlow(slot)
			return
		}
	}
	e := hdr(slot - off).Map[off>>chunk.PageShift&(chunk.Pages-1)]
	bin := chunk.EntryBin(e) & 31
	within := uint32(off&(chunk.PageSize-1)) + chunk.EntryIndex(e)<<chunk.PageShift
	idx, exact := bins.ElementIndex(bin, within)
	check := (*uintptr)(ptr(slot + 8))
	key := s.key
	if e&chunk.MapKindMask == chunk.MapSmall && exact && idx < bins.Elements[bin] &&
		!s.uncarved(bin, slot) && *check != *(*uintptr)(ptr(slot))^key^slot {
		head := s.free[bin]
		*(*uintptr)(ptr(slot)) = head
		*check = head ^ key ^ slot
		s.free[bin] = slot
		s.size -= uintptr(bins.Size[bin])
		return
	}
	h.freeSlow(slot)
}

// fastFrame is the fast paths' test for a chunk the own set does not hold:
// it reports whether slot's frame is a live chunk of this heap and the heap
// is not special (debug, system, guard and hooked heaps are served by the
// slow paths only).
func (s *heapState) fastFrame(slot uintptr) bool {
	return s.special == 0 && frames.Lookup(slot) == s.frame
}

// handedOut is Free's fast-path test as a function, for Realloc: it
// reports whether slot is a handed-out block of a small bin of this heap
// (in a live chunk of this heap by the own set or fastFrame, at the exact
// start of an element, not in the run's unused tail nor in its bin's
// uncarved rest, and without a valid check word), and its bin. Free spells
// the same test out inline: at a cost of 189 this function is beyond Go's
// inlining budget of 80, and a call would cost Free more than the test
// itself. Keep the two in step; TestBadPointersAreReported runs every bad
// pointer through both.
func (s *heapState) handedOut(slot uintptr) (bin uint32, ok bool) {
	off := slot & (chunk.Size - 1)
	if s.own[ownSlot(slot)] != slot-off && !s.fastFrame(slot) {
		return 0, false
	}
	e := hdr(slot - off).Map[off>>chunk.PageShift&(chunk.Pages-1)]
	bin = chunk.EntryBin(e) & 31
	within := uint32(off&(chunk.PageSize-1)) + chunk.EntryIndex(e)<<chunk.PageShift
	idx, exact := bins.ElementIndex(bin, within)
	return bin, e&chunk.MapKindMask == chunk.MapSmall && exact && idx < bins.Elements[bin] &&
		!s.uncarved(bin, slot) && *(*uintptr)(ptr(slot + 8)) != *(*uintptr)(ptr(slot))^s.key^slot
}

//go:noinline
func (h *Heap) freeSlow(addr uintptr) {
	if addr == 0 {
		return
	}
	s := h.st
	s.checkOpen("Free")
	if s.special != 0 {
		h.freeSpecial(addr)
		return
	}
	h.enter(opFree)
	defer h.exit()
	s.freeBlock(s.lookup("Free", addr), addr)
}

// freeBlock frees a block that lookup accepted.
func (s *heapState) freeBlock(b block, addr uintptr) {
	switch b.kind {
	case kindSmall:
		s.addOwn(b.c.Base())
		s.pushFree(addr, b.bin)
	case kindLarge:
		s.freeLarge(b.c, b.page, b.pages)
	case kindHuge:
		s.freeHuge(b.huge)
	}
}

// freeLarge gives a page run back to its chunk and retires the chunk when
// it is empty (zend_mm_free_large).
func (s *heapState) freeLarge(c *chunk.Header, page, n uint32) {
	c.ReleaseLarge(page, n)
	s.size -= uintptr(n) * chunk.PageSize
	if c.Empty() && c.Base() != s.main {
		s.deleteChunk(c)
	}
}

type blockKind uint8

const (
	kindSmall blockKind = iota + 1
	kindLarge
	kindHuge
)

// block describes a live block found by lookup.
type block struct {
	kind  blockKind
	c     *chunk.Header // small and large
	page  uint32        // small and large: the page p is in / starts
	bin   uint32        // small
	pages uint32        // large
	huge  uint32        // huge: index in the huge table
	size  uintptr       // the block's class size (BlockSize)
}

// lookup finds the live block that starts at p, or panics with a *Error
// that says what p is instead. It reads a chunk header only after the frame
// table has said the chunk is one of this heap's live chunks.
//
// In debug mode p is the user pointer, debugheader.Size bytes past the block
// start; messages name p, and the start of the block it points into as a
// user pointer too.
func (s *heapState) lookup(op string, user uintptr) block {
	addr := user - s.hdr
	f := frames.Lookup(addr)
	off := addr & (chunk.Size - 1)
	if f.Kind() == frames.None {
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: not allocated by zmm", op, user)
	}
	if f.Owner() != s.id {
		switch f.Kind() {
		case frames.Chunk, frames.Huge, frames.HugeInterior:
			fail(ErrWrongHeap, op, user, "zmm: %s(0x%x): the block belongs to another heap", op, user)
		}
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: not a block of this heap", op, user)
	}
	switch f.Kind() {
	case frames.Huge:
		if off != 0 {
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the huge block at 0x%x", op, user, addr-off+s.hdr)
		}
		return block{kind: kindHuge, huge: f.Aux(), size: s.huge.at(f.Aux()).size}
	case frames.HugeInterior:
		start := addr - off - uintptr(f.Aux())*chunk.Size
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the huge block at 0x%x", op, user, start+s.hdr)
	case frames.FreedHuge, frames.CachedHuge:
		if off == 0 {
			fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: the huge block was already freed", op, user)
		}
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside a freed huge block", op, user)
	case frames.FreedChunk, frames.CachedChunk:
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: its chunk was released (by Reset, GC or a free); the block is gone", op, user)
	case frames.Chunk:
	default:
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer (frame %v)", op, user, f)
	}
	c := hdr(addr - off)
	page := uint32(off >> chunk.PageShift)
	e := c.Map[page&(chunk.Pages-1)]
	switch e & chunk.MapKindMask {
	case chunk.MapFree:
		if c.Used(page) { // a later page of a large run
			start, _ := c.LargeRunStart(page)
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the large block at 0x%x", op, user,
				c.Base()+uintptr(start)<<chunk.PageShift+s.hdr)
		}
		if off&(chunk.PageSize-1) == 0 {
			fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: no block here, the page is free", op, user)
		}
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside a free page", op, user)
	case chunk.MapLarge:
		if page == 0 {
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside a chunk header", op, user)
		}
		if off&(chunk.PageSize-1) != 0 {
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the large block at 0x%x", op, user, addr&^(chunk.PageSize-1)+s.hdr)
		}
		n := chunk.EntryPages(e)
		return block{kind: kindLarge, c: c, page: page, pages: n, size: uintptr(n) * chunk.PageSize}
	}
	bin := chunk.EntryBin(e)
	within := uint32(off&(chunk.PageSize-1)) + chunk.EntryIndex(e)<<chunk.PageShift
	idx, exact := bins.ElementIndex(bin, within)
	if !exact {
		start := addr - uintptr(within-idx*bins.Size[bin&31])
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the %d-byte block at 0x%x", op, user, bins.Size[bin&31], start+s.hdr)
	}
	if idx >= bins.Elements[bin&31] {
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: in the unused tail of a run", op, user)
	}
	if s.uncarved(bin, addr) {
		fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: the %d-byte block is free (never handed out)", op, user, bins.Size[bin&31])
	}
	if s.isFreeSlot(addr) {
		if s.debug {
			r := debugheader.At(ptr(addr))
			fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: block 0x%x (%d bytes, allocated at %v) is already free",
				op, user, user, r.Size, resolveSite(uintptr(r.Site)))
		}
		fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: the %d-byte block is already free", op, user, bins.Size[bin&31])
	}
	return block{kind: kindSmall, c: c, page: page, bin: bin, size: uintptr(bins.Size[bin&31])}
}

// BlockSize returns the usable size of the block at p: its size class,
// which is at least the size asked for (zend_mem_block_size). A bad pointer
// panics as in Free.
//
// In debug, system and guard modes BlockSize is the requested size, so that
// a write past it is caught.
func (h *Heap) BlockSize(p unsafe.Pointer) uintptr {
	addr := uintptr(p)
	s := h.st
	s.checkOpen("BlockSize")
	if s.special != 0 {
		return h.blockSizeSpecial(addr)
	}
	return s.lookup("BlockSize", addr).size
}

// pushFree puts a small block that lookup accepted onto its bin's free
// list (the slow-path twin of Free's fast path).
func (s *heapState) pushFree(slot uintptr, bin uint32) {
	bin &= 31
	l := s.lists()
	s.setLink(slot, l[bin])
	l[bin] = slot
	s.size -= uintptr(bins.Size[bin])
}

// Owns reports whether p points into memory the heap holds now: a live
// chunk or huge block of this heap (for a system or guard heap, a live
// block). It answers from the frame table without reading p, so any value
// is safe to ask about, and it does not say whether p starts a live block:
// Free still checks that. Code that manages several heaps uses it to route
// a pointer to its heap, or to report which heap a stray pointer came from.
func (h *Heap) Owns(p unsafe.Pointer) bool {
	addr := uintptr(p)
	s := h.st
	if s.closed != 0 || addr == 0 {
		return false
	}
	if s.mode != ModeChunks {
		return h.dbg.sys[addr] != nil
	}
	f := frames.Lookup(addr)
	switch f.Kind() {
	case frames.Chunk, frames.Huge, frames.HugeInterior:
		return f.Owner() == s.id
	}
	return false
}
