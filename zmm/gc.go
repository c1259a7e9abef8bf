package zmm

import (
	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// GC gives memory the heap holds but does not use back to the OS and
// returns how many bytes (zend_mm_gc, gc_mem_caches): bin runs whose slots
// are all free go back to their chunk, chunks left empty and every cached
// chunk and huge mapping are unmapped, and the free pages of the chunks
// that stay are released with madvise (in whole OS pages; they stay mapped
// and count in RealUsage until their chunk is unmapped). The count is the
// bytes of emptied runs in chunks that stay, plus the bytes unmapped.
func (h *Heap) GC() uintptr {
	s := h.st
	s.checkOpen("GC")
	h.enter(opGC)
	defer h.exit()
	return s.gc("GC", true)
}

// gc is the collection behind GC and behind the memory limit's retry; only
// GC asks for free pages to be released with madvise. op names the call
// that collects, for the errors of the walk.
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
	lists := s.lists()
	binsWithEmptyRuns := s.countFreeSlots(op, lists)
	// Pass 2: unlink the slots of runs that are entirely free.
	for bin := uint32(0); bin < bins.NumBins; bin++ {
		if binsWithEmptyRuns&(1<<bin) == 0 {
			continue
		}
		var prev uintptr
		for slot := lists[bin]; slot != 0; {
			next := s.nextFree(op, bin, slot)
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
					c.Release(i, n)
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
			s.unlink(c)
			s.chunks--
			s.realSize -= chunk.Size
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
	if release && s.debug && s.mode == ModeChunks {
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
// reports.
func (s *heapState) countFreeSlots(op string, lists *[32]uintptr) (binsWithEmptyRuns uint32) {
	counted := false
	defer func() {
		if !counted {
			s.clearFreeCounts()
		}
	}()
	for bin := uint32(0); bin < bins.NumBins; bin++ {
		for slot := lists[bin]; slot != 0; slot = s.nextFree(op, bin, slot) {
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
		}
	}
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

// checkRing walks the ring of live chunks and reports a broken one before
// a collection starts to change it: every link must lead to a live chunk
// of this heap (by the frame table, so a garbage link is never followed)
// whose back link agrees, and the ring must close within the chunk count.
func (s *heapState) checkRing(op string) {
	c := hdr(s.main)
	for n := uint32(0); ; n++ {
		next := c.Next
		if n >= s.chunks || frames.Lookup(next) != s.frame || next&(chunk.Size-1) != 0 || hdr(next).Prev != c.Base() {
			fail(ErrCorrupted, op, c.Base(), "zmm: heap corrupted: chunk list broken at chunk 0x%x", c.Base())
		}
		if next == s.main {
			return
		}
		c = hdr(next)
	}
}

// nextFree returns the link of a free slot after checking its check word.
// op names the walk that follows the list.
func (s *heapState) nextFree(op string, bin uint32, slot uintptr) uintptr {
	if !s.isFreeSlot(slot) {
		fail(ErrCorrupted, op, slot, "zmm: heap corrupted: free slot 0x%x of bin %d (%d bytes) has a broken link", slot, bin, bins.Size[bin&31])
	}
	return *(*uintptr)(ptr(slot + s.linkOff))
}

// runOf returns the chunk and first page of the run holding a slot.
func (s *heapState) runOf(slot uintptr) (*chunk.Header, uint32) {
	c := hdr(slot &^ (chunk.Size - 1))
	page := uint32(slot&(chunk.Size-1)) >> chunk.PageShift
	return c, page - chunk.EntryIndex(c.Map[page&(chunk.Pages-1)])
}
