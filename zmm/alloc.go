package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/bins"
)

// Alloc returns a block of at least size bytes (emalloc). Blocks of up to
// 3072 bytes come from size-class bins and are 8-byte aligned (16-byte
// for sizes that are multiples of 16); larger blocks are page runs, 4 KiB
// aligned; blocks above MaxLargeSize (1020 KiB) are huge blocks of their
// own mapping, 2 MiB aligned. Alloc(0) returns a valid minimal block. The
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
	if !isSmall(size) {
		return h.allocSlow(size)
	}
	s := h.st
	bin := smallBin(size) & 31
	slot := s.free[bin]
	if slot == 0 {
		return h.allocSlow(size)
	}
	next, ok := readLink(slot, s.key, 0)
	if !ok {
		s.corruptSlot("Alloc", bin, slot)
	}
	markHandedOut(slot, 0)
	s.free[bin] = next
	s.size += uintptr(bins.Size[bin])
	s.peak = max(s.peak, s.size)
	return ptr(slot)
}

// Calloc returns a zeroed block of n*size bytes (ecalloc). The product is
// checked: if it wraps, Calloc panics with ErrOverflow.
func (h *Heap) Calloc(n, size uintptr) unsafe.Pointer { return callocFrom(h, n, size) }

// blockAllocator is what the helpers built on Alloc need: a *Heap or a
// *Shared.
type blockAllocator interface {
	Alloc(size uintptr) unsafe.Pointer
	BlockSize(p unsafe.Pointer) uintptr
}

// callocFrom is Calloc on a.
func callocFrom[A blockAllocator](a A, n, size uintptr) unsafe.Pointer {
	total := safeSize("Calloc", n, size, 0)
	p := a.Alloc(total)
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

// Strdup copies s into a new block followed by a NUL byte (estrdup) and
// returns the block.
func (h *Heap) Strdup(s string) unsafe.Pointer {
	return copyStringTo(h, "Strdup", s)
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
	return copyStringTo(h, "Strndup", s)
}

// copyStringTo copies s and a NUL byte into a new block of a.
func copyStringTo[A blockAllocator](a A, op string, s string) unsafe.Pointer {
	n := uintptr(len(s))
	if n+1 < n {
		overflowError(op, 1, n, 1)
	}
	p := a.Alloc(n + 1)
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
func (h *Heap) AllocBytes(n int) []byte { return allocBytesFrom(h, n) }

// allocBytesFrom is AllocBytes on a.
func allocBytesFrom[A blockAllocator](a A, n int) []byte {
	if n < 0 {
		fail(ErrOverflow, "AllocBytes", 0, "zmm: AllocBytes of negative size %d", n)
	}
	p := a.Alloc(uintptr(n))
	return unsafe.Slice((*byte)(p), a.BlockSize(p))[:n]
}

// FreeBytes frees a slice that AllocBytes (or Bytes of a block) returned.
// The slice must start at the start of the block.
func (h *Heap) FreeBytes(b []byte) {
	if cap(b) == 0 {
		return
	}
	h.Free(unsafe.Pointer(unsafe.SliceData(b)))
}
