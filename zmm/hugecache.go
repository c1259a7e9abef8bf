package zmm

import (
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// Freed huge blocks. Unlike the Zend MM, a freed huge mapping may be kept
// in a small cache and handed out again (trimmed in place if it is
// larger): mapping and faulting in megabytes per request is what makes
// huge-block churn slow. The cache is bounded (hugeCacheSlots mappings,
// hugeCacheMaxBytes), counted in the real usage like cached chunks, and
// emptied by GC and Close.
//
// Cached mappings keep their pages while those that do hold at most 1/8 of
// the heap's real usage; past that the oldest are purged (MADV_DONTNEED;
// the mapping stays, its pages go back to the OS and read as zeros when
// touched again). The newest always keeps its pages. So the cache saves the
// map and unmap calls of every reuse and, for blocks of a few MiB churning
// (a request building the same big buffers again, a heap of 1-2 MiB blocks
// freed and allocated at random), the page faults too, while the freed
// memory it keeps resident stays a bounded share of the heap, not up to
// hugeCacheMaxBytes of pages nobody may touch again. Purging every mapping
// but the newest, as zmm first did, cost 12% more time on issue 20's large
// mix (bench/c/bigheap.sh), in madvise calls and faults; a bound of 16 MiB
// and 1/16 of the heap, as it did next, still cost 30% more than 1/8 there.
// A small heap keeps little: its real usage is small. (A heap over a
// storage that cannot release pages, such as a Region made without
// WithRelease, keeps them all: releasePages does nothing there.)
//
// A cached mapping at most a quarter larger than the request is handed out
// whole, its slack part of the block (BlockSize and Usage show it, as they
// show a huge block's rounding to the OS page): trimming it would cost an
// munmap call on most reuses and lose the tail's resident pages, and with
// blocks of random sizes the cache's mappings would shrink toward the
// smallest requests. A larger one is trimmed, so a small request does not
// pin a big mapping.

// setHugeFrames records a live huge block in the frame table: its first
// frame carries the table index, later frames their distance to the first.
func (s *heapState) setHugeFrames(addr, size uintptr, idx uint32, from uintptr) {
	if from == 0 {
		frames.Set(addr, frames.Make(frames.Huge, s.id, idx))
		from = 1
	}
	for i, n := from, frameCount(size); i < n; i++ {
		frames.Set(addr+i<<chunk.Shift, frames.Make(frames.HugeInterior, s.id, uint32(i)))
	}
}

// freeHuge frees the block at index idx (zend_mm_free_huge).
func (s *heapState) freeHuge(idx uint32) {
	r := s.dropHuge(idx)
	s.retireHuge(r)
}

// dropHuge takes the block at index idx out of the huge table and the
// usage, and returns it; its mapping is the caller's to retire.
func (s *heapState) dropHuge(idx uint32) hugeRec {
	t := &s.huge
	r := *t.at(idx)
	last := t.n - 1
	if idx != last {
		moved := *t.at(last)
		*t.at(idx) = moved
		frames.Set(moved.addr, frames.Make(frames.Huge, s.id, idx))
	}
	t.n--
	s.size -= r.size
	return r
}

// retireHuge caches a freed huge mapping, or unmaps it.
func (s *heapState) retireHuge(r hugeRec) {
	t := &s.huge
	if r.size <= hugeCacheMaxBytes {
		for t.cacheN == hugeCacheSlots || t.cacheBytes+r.size > hugeCacheMaxBytes {
			s.unmapHuge(t.cache()[0])
			t.removeCached(0)
		}
		t.cache()[t.cacheN] = r
		t.resident |= 1 << t.cacheN
		t.cacheN++
		t.cacheBytes += r.size
		frames.SetRange(r.addr, frameCount(r.size), frames.Make(frames.CachedHuge, s.id, 0))
		s.purgeCachedHuge()
		return
	}
	s.unmapHuge(r)
}

// purgeCachedHuge purges the oldest resident cached mappings until those
// left resident hold at most residentBound or are the newest alone.
func (s *heapState) purgeCachedHuge() {
	t := &s.huge
	bound := s.realSize / hugeCacheResidentShare
	cache := t.cache()
	for i := range t.cacheN - 1 { // the newest is never purged
		if t.residentBytes() <= bound {
			return
		}
		if t.resident&(1<<i) != 0 {
			s.releasePages(cache[i].addr, cache[i].size)
			t.resident &^= 1 << i
		}
	}
}

// residentBytes is the size of the cached mappings that have their pages.
func (t *hugeTable) residentBytes() uintptr {
	var n uintptr
	for i, r := range t.cached() {
		if t.resident&(1<<i) != 0 {
			n += r.size
		}
	}
	return n
}

// removeCached takes cache[i] out of the cache, keeping the order of the
// others and their resident bits.
func (t *hugeTable) removeCached(i uint32) {
	cache := t.cache()
	t.cacheBytes -= cache[i].size
	copy(cache[i:], cache[i+1:t.cacheN])
	t.cacheN--
	below := t.resident & (1<<i - 1)
	t.resident = below | t.resident>>(i+1)<<i
}

// unmapHuge unmaps a huge mapping and tombstones its frames.
func (s *heapState) unmapHuge(r hugeRec) {
	frames.SetRange(r.addr, frameCount(r.size), frames.Make(frames.FreedHuge, s.id, 0))
	if err := s.unmapChunks(r.addr, r.size); err != nil {
		fail(ErrCorrupted, "munmap", r.addr, "zmm: munmap of huge block 0x%x failed: %v", r.addr, err)
	}
	s.unmapped(r.size)
}

// takeCachedHuge returns a cached mapping for a block of size bytes and
// the mapping's size, or 0, 0. It takes the smallest mapping that fits, the
// newest of equals (it may still have its pages), and cuts it down to size
// unless its slack is within 1/hugeReuseSlack of it.
func (s *heapState) takeCachedHuge(size uintptr) (addr, mapped uintptr) {
	t := &s.huge
	cache := t.cached()
	best := -1
	for i := range cache {
		if c := cache[i].size; c >= size && (best < 0 || c <= cache[best].size) {
			best = i
		}
	}
	if best < 0 {
		return 0, 0
	}
	r := cache[best]
	t.removeCached(uint32(best))
	if r.size-size > r.size/hugeReuseSlack {
		// Clear the tail's frames before the tail is given back: from then
		// on another heap may map it and record its own frames there.
		tail := frameCount(size)
		frames.SetRange(r.addr+tail<<chunk.Shift, frameCount(r.size)-tail, frames.Make(frames.None, 0, 0))
		if err := s.truncateChunks(r.addr, r.size, size); err != nil {
			s.unmapHuge(r)
			return 0, 0
		}
		s.unmapped(r.size - size)
		r.size = size
	}
	return r.addr, r.size
}

// dropHugeCache unmaps every cached huge mapping and returns the bytes.
func (s *heapState) dropHugeCache() uintptr {
	t := &s.huge
	n := t.cacheBytes
	for _, r := range t.cached() {
		s.unmapHuge(r)
	}
	t.cacheN, t.cacheBytes, t.resident = 0, 0, 0
	return n
}

// freeAllHuge retires every live huge block (request end or Close).
func (s *heapState) freeAllHuge() {
	t := &s.huge
	for t.n > 0 {
		t.n--
		r := *t.at(t.n)
		s.size -= r.size
		s.retireHuge(r)
	}
}
