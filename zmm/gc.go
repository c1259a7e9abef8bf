package zmm

import (
	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// gc gives memory the heap holds but does not use back to the OS and
// returns how many bytes (zend_mm_gc): bin runs whose slots are all free go
// back to their chunk, chunks left empty and every cached chunk and huge
// mapping are unmapped, and, when release is set (GC, not the memory
// limit's retry), the free pages of the chunks that stay are released with
// madvise. The count is the bytes of emptied runs in chunks that stay, plus
// the bytes unmapped. op names the call that collects, for the errors of
// the walk.
//
// A damaged free list or chunk ring is reported before anything is
// changed: the ring is checked first, and pass 1, which counts free slots
// in the runs' map entries, clears every count again if it stops at a
// broken link, so that a later GC does not start from stale counts (which
// would make a run with live blocks look empty).
func (s *heapState) gc(op string, release bool) uintptr {
	var freed uintptr
	s.checkRing(op)
	s.flushCarve()
	binsWithEmptyRuns := s.countFreeSlots(op)
	// Pass 2: unlink the slots of runs that are entirely free.
	lists := s.lists()
	for bin := uint32(0); bin < bins.NumBins; bin++ {
		if binsWithEmptyRuns&(1<<bin) == 0 {
			continue
		}
		var prev uintptr
		for slot := lists[bin]; slot != 0; {
			next, _ := readLink(slot, s.key, s.linkOff) // checked by pass 1
			c, first := s.runOf(slot)
			if chunk.EntryCounter(c.Map[first]) == bins.Elements[bin] {
				if prev == 0 {
					lists[bin] = next
				} else {
					s.setLink(prev, next)
				}
			} else {
				prev = slot
			}
			slot = next
		}
	}
	// Pass 3: give the empty runs' pages back to their chunks, clear the
	// counters, and retire chunks left empty.
	main := hdr(s.main)
	for addr := main.Next; ; {
		c := hdr(addr)
		next := c.Next
		var runs uintptr
		for i := uint32(chunk.FirstPage); i < chunk.Pages; {
			e := c.Map[i]
			switch e & chunk.MapKindMask {
			case chunk.MapSmall:
				bin := chunk.EntryBin(e)
				n := bins.Pages[bin&31]
				if chunk.EntryCounter(e) == bins.Elements[bin&31] {
					s.release(c, i, n, false)
					runs += uintptr(n) * chunk.PageSize
				} else {
					c.Map[i] = chunk.WithCounter(e, 0)
				}
				i += n
			case chunk.MapLarge:
				i += chunk.EntryPages(e)
			default:
				i++
			}
		}
		if c.Empty() && c != main {
			s.unindexChunk(c)
			s.unlink(c)
			s.chunks--
			s.unmapped(chunk.Size)
			s.unmapChunk(c.Base())
			freed += chunk.Size
		} else {
			freed += runs
			if release {
				c.Gaps(func(start, end uint32) {
					s.releasePages(uintptr(c.Page(start)), uintptr(end-start)*chunk.PageSize)
				})
			}
		}
		if c == main {
			break
		}
		addr = next
	}
	if release && s.debug {
		// The free pages just released read back as zeros: their fill
		// is gone (poison.go).
		debugStateOf(s.id).forgetRuns()
	}
	freed += s.dropCache()
	freed += s.dropHugeCache()
	return freed
}

// countFreeSlots is GC's pass 1: it counts the free slots of every run in
// its first page's map entry and returns the bins that have a run whose
// slots are all free. If a list is damaged it clears every count, then
// reports (ErrCorrupted naming op).
func (s *heapState) countFreeSlots(op string) (binsWithEmptyRuns uint32) {
	counted := false
	defer func() {
		if !counted {
			s.clearFreeCounts()
		}
	}()
	s.eachFree(op, func(bin uint32, slot uintptr) {
		c, first := s.runOf(slot)
		e := c.Map[first]
		n := chunk.EntryCounter(e) + 1
		if n > bins.Elements[bin] {
			fail(ErrCorrupted, op, slot, "zmm: heap corrupted: free list of bin %d (%d bytes) holds slot 0x%x twice", bin, bins.Size[bin], slot)
		}
		c.Map[first] = chunk.WithCounter(e, n)
		if n == bins.Elements[bin] {
			binsWithEmptyRuns |= 1 << bin
		}
	})
	counted = true
	return binsWithEmptyRuns
}

// clearFreeCounts zeroes pass 1's count in every small run's entry.
func (s *heapState) clearFreeCounts() {
	main := hdr(s.main)
	for c := main; ; {
		for i := uint32(chunk.FirstPage); i < chunk.Pages; i++ {
			if e := c.Map[i]; e&chunk.MapKindMask == chunk.MapSmall {
				c.Map[i] = chunk.WithCounter(e, 0)
			}
		}
		if c = hdr(c.Next); c == main {
			return
		}
	}
}
