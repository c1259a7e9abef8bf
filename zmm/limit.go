package zmm

import (
	"fmt"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// New memory for the heap, under its limit. The limit is checked as the
// Zend MM checks it: against the bytes mapped (RealUsage), when a chunk or
// a huge block is to be mapped, after a collection that may give back
// cached and empty memory (gc-and-retry). tried is the size reported when
// the limit or the OS refuses.

// takePages takes n contiguous free pages for a run: in a heap of up to
// runIndexFrom chunks, the best fit in the first chunk that has room, as
// the Zend MM does (zend_mm_alloc_pages); in a larger one, the smallest free
// gap of at least n pages in the whole heap, found by the run index; else a
// cached chunk, else a new chunk. In debug mode the freed runs those pages
// overlap are checked first (poison.go).
func (s *heapState) takePages(n uint32, op string, tried uintptr) (*chunk.Header, uint32) {
	retried := false
	for {
		if s.runs.on {
			if c, start, ok := s.takeFromIndex(op, n); ok {
				return c, start
			}
		} else {
			// The Zend MM's search: the best fit in the first chunk of the
			// ring that has room; a chunk found more than two steps down
			// moves to the ring's front for small runs.
			c := hdr(s.main)
			for steps := uint32(0); ; steps++ {
				if steps >= s.chunks {
					// More chunks than the heap has: the ring is broken
					// into a loop that misses the main chunk.
					fail(ErrCorrupted, op, c.Base(), "zmm: heap corrupted: chunk list broken at chunk 0x%x", c.Base())
				}
				if start, ok := c.FindRun(n); ok {
					if steps > 2 && n < 8 {
						s.moveToFront(c)
					}
					if s.debug {
						debugStateOf(s.id).checkFreedPages(s, op, c, start, n)
					}
					c.Take(start, n)
					return c, start
				}
				if c.Next == s.main {
					break
				}
				c = hdr(c.Next)
			}
		}
		// A chunk from the cache, or a new mapping; its slot in the run
		// index first, so that a chunk is never mapped without one.
		s.reserveSlot(op)
		if s.cached == 0 && !s.admit(chunk.Size) {
			// Give back what is cached or empty, then look again: the
			// collection may have emptied pages in the chunks we have.
			if !retried && s.gc(op, false) > 0 {
				retried = true
				continue
			}
			limitError(op, s.currentLimit(), tried)
		}
		c := s.takeCachedChunk()
		if c == nil {
			c = chunk.At(s.mapMemory(chunk.Size, op, tried))
			s.realSize += chunk.Size
			s.realPeak = max(s.realPeak, s.realSize)
		}
		s.linkChunk(c)
		s.take(c, chunk.FirstPage, n)
		return c, chunk.FirstPage
	}
}

// reserve admits need bytes about to be mapped, collecting cached and
// empty memory first if that helps (the Zend MM's gc-and-retry), or
// reports the limit.
func (s *heapState) reserve(need uintptr, op string, tried uintptr) {
	if !s.admit(need) {
		s.gc(op, false)
		if !s.admit(need) {
			limitError(op, s.currentLimit(), tried)
		}
	}
}

// admit reports whether the limit allows need more bytes to be mapped. A
// heap of a Shared allocator takes them from the allocator's budget there
// and then, atomically, so that heaps mapping at the same moment cannot
// pass the limit together; every path that admitted bytes and does not map
// them gives them back (unadmit), and every unmapping goes through
// unmapped. Any other heap only checks its own limit.
func (s *heapState) admit(need uintptr) bool {
	if s.budget == 0 {
		return !s.overLimit(need)
	}
	return budgetAt(s.budget).take(need)
}

// unadmit gives back bytes admitted and not mapped.
func (s *heapState) unadmit(n uintptr) {
	if s.budget != 0 {
		budgetAt(s.budget).give(n)
	}
}

// unmapped accounts for n bytes given back to the OS.
func (s *heapState) unmapped(n uintptr) {
	s.realSize -= n
	s.unadmit(n)
}

// currentLimit is the limit the heap maps under: its own, or its shared
// allocator's.
func (s *heapState) currentLimit() uintptr {
	if s.budget == 0 {
		return s.limit
	}
	return budgetAt(s.budget).limitNow()
}

// mapMemory maps size admitted bytes aligned to a chunk, retrying once
// after a collection, and reports the Zend MM's out-of-memory error on
// failure (giving the admitted bytes back). A heap over a storage names
// the storage and its reason in the message.
func (s *heapState) mapMemory(size uintptr, op string, tried uintptr) unsafe.Pointer {
	p, err := s.mapChunks(size)
	if err != nil {
		s.gc(op, false)
		p, err = s.mapChunks(size)
		if err != nil {
			s.unadmit(size)
			s.oom(op, tried, err)
		}
	}
	if !frames.Addressable(p, size) {
		_ = s.unmapChunks(p, size)
		s.unadmit(size)
		s.oom(op, tried, fmt.Errorf("address %#x beyond 2^%d", p, frames.AddressBits))
	}
	return ptr(p)
}
