package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
)

// refill is the slow path of a small allocation whose list is empty: it
// takes the next batch of slots from the bin's newest run, or a new run
// when that one is used up, threads the batch but its first slot onto the
// free list, and returns the first (zend_mm_alloc_small_slow, which
// threads the whole run at once; see freelist.go for the batches). Special
// heaps take whole runs; in debug mode the slots threaded carry the free
// fill, which is checked when they are handed out.
func (s *heapState) refill(bin uint32) unsafe.Pointer {
	s.checkOpen("Alloc")
	bin &= 31
	size := uintptr(bins.Size[bin])
	runBytes := uintptr(bins.Elements[bin]) * size
	if s.carveLeft[bin] == 0 {
		n := bins.Pages[bin]
		c, start := s.takePages(n, "Alloc", uintptr(n)*chunk.PageSize)
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
		for p := first + size; p < end; p += size {
			debugheader.Fill(ptr(p), size)
		}
	}
	if end-first > size {
		s.pushSlots(bin, first+size, end, size)
	}
	// The pages may be recycled (a run GC emptied, a cached chunk) and
	// still hold an old free slot's link and check word.
	markHandedOut(first, s.linkOff)
	s.size += size
	s.peak = max(s.peak, s.size)
	return ptr(first)
}

// allocSmall serves a small request from the bin's list on the slow paths
// (the fast path pops inline): a heap with handlers, a debug heap's own
// lists, a realloc that moves. A broken link is reported and its list
// abandoned (freelist.go).
func (s *heapState) allocSmall(bin uint32, op string) unsafe.Pointer {
	bin &= 31
	if s.lists()[bin] == 0 {
		return s.refill(bin)
	}
	slot, ok := s.popFree(bin)
	if !ok {
		s.corruptSlot(op, bin, slot)
	}
	s.size += uintptr(bins.Size[bin])
	s.peak = max(s.peak, s.size)
	return ptr(slot)
}
