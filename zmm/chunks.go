package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// A heap's chunks: the ring of live chunks anchored at the main chunk, the
// cache of empty ones, and the page search over them. Mapping new memory
// (which may need a collection first, to stay under the limit) is limit.go.

// The own set (heapState.own) caches which chunks are live for Free's
// fast path; it changes exactly when a chunk joins or leaves the ring.

func ownSlot(addr uintptr) uintptr { return addr >> chunk.Shift & 63 }

// ownEmpty marks a free slot of the own set: it is odd, so no chunk base
// (2 MiB aligned) and no pointer rounded down to one equals it.
const ownEmpty uintptr = 1

// clearOwn empties the own set.
func (s *heapState) clearOwn() {
	for i := range s.own {
		s.own[i] = ownEmpty
	}
}

// addOwn puts a live chunk in the own set if its slot is free. Special
// heaps keep the set empty, so that Free's fast path never serves them.
func (s *heapState) addOwn(base uintptr) {
	if i := ownSlot(base); s.own[i] == ownEmpty && s.special == 0 {
		s.own[i] = base
	}
}

// dropOwn takes a chunk that stops being live out of the own set.
func (s *heapState) dropOwn(base uintptr) {
	if i := ownSlot(base); s.own[i] == base {
		s.own[i] = ownEmpty
	}
}

// fillOwn puts every live chunk in the own set (SetHandlers undone).
func (s *heapState) fillOwn() {
	main := hdr(s.main)
	for c := main; ; {
		s.addOwn(c.Base())
		if c = hdr(c.Next); c == main {
			return
		}
	}
}

// fastFrame is the fast paths' test for a chunk the own set does not hold:
// it reports whether slot's frame is a live chunk of this heap and the heap
// is not special (debug, system, guard and hooked heaps are served by the
// slow paths only).
func (s *heapState) fastFrame(slot uintptr) bool {
	return s.special == 0 && frames.Lookup(slot) == s.frame
}

// overLimit reports whether mapping need more bytes would pass the limit.
func (s *heapState) overLimit(need uintptr) bool {
	return s.realSize > s.limit || need > s.limit-s.realSize
}

// linkChunk makes a chunk, fresh or from the cache, a live chunk of the
// heap: its header initialised, indexed (the caller has reserved its slot),
// its frame recorded, and linked at the end of the ring.
func (s *heapState) linkChunk(c *chunk.Header) {
	c.Init(uintptr(unsafe.Pointer(s)), s.id, s.nextNum)
	s.indexChunk(c)
	s.nextNum++
	frames.Set(c.Base(), s.frame)
	s.addOwn(c.Base())
	s.chunks++
	s.peakChunks = max(s.peakChunks, s.chunks)
	main := hdr(s.main)
	c.Next, c.Prev = s.main, main.Prev
	hdr(main.Prev).Next = c.Base()
	main.Prev = c.Base()
}

// takeCachedChunk returns a chunk from the cache, or nil.
func (s *heapState) takeCachedChunk() *chunk.Header {
	if s.cached == 0 {
		return nil
	}
	c := hdr(s.cached)
	s.cached = c.Next
	s.cachedChunks--
	return c
}

// unlink takes c out of the ring, checking that its neighbours agree: a
// broken ring means the header page was overwritten.
func (s *heapState) unlink(c *chunk.Header) {
	next, prev := hdr(c.Next), hdr(c.Prev)
	if next.Prev != c.Base() || prev.Next != c.Base() {
		fail(ErrCorrupted, "unlink", c.Base(), "zmm: heap corrupted: chunk list broken at chunk 0x%x", c.Base())
	}
	prev.Next = c.Next
	next.Prev = c.Prev
}

func (s *heapState) moveToFront(c *chunk.Header) {
	main := hdr(s.main)
	if main.Next == c.Base() {
		return
	}
	s.unlink(c)
	c.Prev, c.Next = s.main, main.Next
	hdr(main.Next).Prev = c.Base()
	main.Next = c.Base()
}

// checkRing walks the ring of live chunks and reports a broken one before
// a walk that changes it (GC, Reset, Close) starts: every link must lead to
// a live chunk of this heap (by the frame table, so a garbage link is never
// followed) whose back link agrees, and the ring must close within the
// chunk count.
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

// deleteChunk retires an empty chunk other than the main one: it is cached
// for reuse or unmapped, by the Zend MM's policy (zend_mm_delete_chunk),
// which keeps about as many chunks as requests have been using and stops
// mmap/munmap thrashing around a chunk boundary (bug #75368), and beyond
// it while the cache holds fewer than a quarter of the live chunks, at
// most chunkCacheMax.
//
// The Zend MM's policy alone learns from request ends: a heap that never
// calls Reset (a Go service's long-lived heap) would unmap every chunk
// that empties and map a fresh one, unfaulted, the next moment. On issue
// 20's large mix at 400 live blocks that was 1,100 chunk mappings and half
// the page faults; keeping a quarter of the live chunks cached took 40%
// off the time per operation, for real usage still below the Zend MM's.
func (s *heapState) deleteChunk(c *chunk.Header) {
	s.unindexChunk(c)
	s.unlink(c)
	s.chunks--
	if float64(s.chunks+s.cachedChunks) < s.avgChunks+0.1 ||
		s.cachedChunks < min(s.chunks/chunkCacheShare, chunkCacheMax) ||
		(s.chunks == s.deleteBoundary && s.deleteCount >= 4) {
		s.cacheChunk(c)
		return
	}
	s.unmapped(chunk.Size)
	if s.cached == 0 {
		if s.chunks != s.deleteBoundary {
			s.deleteBoundary, s.deleteCount = s.chunks, 0
		} else {
			s.deleteCount++
		}
	}
	if s.cached == 0 || c.Num > hdr(s.cached).Num {
		s.unmapChunk(c.Base())
		return
	}
	// Keep the older chunk: it replaces the head of the cache.
	old := s.cached
	c.Next = hdr(old).Next
	s.cached = c.Base()
	s.dropOwn(c.Base())
	frames.Set(c.Base(), frames.Make(frames.CachedChunk, s.id, 0))
	s.unmapChunk(old)
}

const (
	// chunkCacheShare and chunkCacheMax bound the empty chunks a heap keeps
	// cached beyond the Zend MM's policy: a quarter of its live chunks, at
	// most 64 (128 MiB).
	chunkCacheShare = 4
	chunkCacheMax   = 64
)

// cacheChunk puts a chunk that left the ring into the cache.
func (s *heapState) cacheChunk(c *chunk.Header) {
	s.dropOwn(c.Base())
	c.Next = s.cached
	s.cached = c.Base()
	s.cachedChunks++
	frames.Set(c.Base(), frames.Make(frames.CachedChunk, s.id, 0))
}

// unmapChunk gives a chunk back to the OS and leaves a tombstone in the
// frame table, so that a stale pointer into it is reported as such.
func (s *heapState) unmapChunk(addr uintptr) {
	s.dropOwn(addr)
	frames.Set(addr, frames.Make(frames.FreedChunk, s.id, 0))
	if err := s.unmapChunks(addr, chunk.Size); err != nil {
		fail(ErrCorrupted, "munmap", addr, "zmm: munmap of chunk 0x%x failed: %v", addr, err)
	}
}

// unmapCachedChunk unmaps the chunk at the head of the cache.
func (s *heapState) unmapCachedChunk() {
	addr := s.cached
	s.cached = hdr(addr).Next
	s.cachedChunks--
	s.unmapped(chunk.Size)
	s.unmapChunk(addr)
}

// dropCache unmaps every cached chunk and returns the bytes unmapped.
func (s *heapState) dropCache() uintptr {
	n := uintptr(s.cachedChunks) * chunk.Size
	for s.cached != 0 {
		s.unmapCachedChunk()
	}
	return n
}

// cachedBytes is what dropping every cache would unmap: cached chunks
// and cached huge mappings.
func (s *heapState) cachedBytes() uintptr {
	return uintptr(s.cachedChunks)*chunk.Size + s.huge.cacheBytes
}
