package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
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
	// heapState.handedOut is the same test as a function, for Realloc.
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
	key := s.key
	if e&chunk.MapKindMask == chunk.MapSmall && exact && idx < bins.Elements[bin] &&
		!s.uncarved(bin, slot) && !isFree(slot, key, 0) {
		writeLink(slot, s.free[bin], key, 0)
		s.free[bin] = slot
		s.size -= uintptr(bins.Size[bin])
		return
	}
	h.freeSlow(slot)
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
	if s.special != 0 {
		return h.blockSizeSpecial(addr)
	}
	s.checkOpen("BlockSize")
	return s.blockSize("BlockSize", addr)
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
	if sp := h.sp; sp != nil && sp.sys != nil {
		return sp.sys.owns(addr)
	}
	f := frames.Lookup(addr)
	switch f.Kind() {
	case frames.Chunk, frames.Huge, frames.HugeInterior:
		return f.Owner() == s.id
	}
	return false
}
