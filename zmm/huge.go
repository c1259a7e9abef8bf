package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// Huge blocks are mappings of their own, 2 MiB aligned, rounded up to the
// OS page. The Zend MM finds them by walking an unsorted list; zmm keeps
// them in a table (an array in mapped memory) and writes each block's index
// into the frame table entry of its first frame, so every lookup is O(1).
//
// Unlike the Zend MM, a freed huge mapping may be kept in a small cache and
// handed out again (trimmed in place if it is larger): mapping and faulting
// in megabytes per request is what makes huge-block churn slow. The cache
// is bounded, counted in the real usage like cached chunks, and emptied by
// GC and Close.
//
// Only the newest cached mapping keeps its pages: when another mapping
// joins the cache, the one before it is purged (MADV_DONTNEED; the mapping
// stays, its pages go back to the OS and read as zeros when touched again).
// So the cache saves the map and unmap calls of every reuse and the page
// faults of the most recent one (a request building the same big buffer
// again), while the resident memory it holds is at most one block, not
// up to hugeCacheMaxBytes of pages nobody may touch again. (A heap over a
// storage that cannot release pages, such as a Region made without
// WithRelease, keeps them all: releasePages does nothing there.)

type hugeRec struct {
	addr, size uintptr
}

const (
	hugeCacheSlots = 4
	// hugeCacheMaxBytes bounds the bytes kept in the huge cache.
	hugeCacheMaxBytes = 64 << 20
	hugeRecSize       = unsafe.Sizeof(hugeRec{})
)

type hugeTable struct {
	recs   uintptr // mapped array of hugeRec
	n, cap uint32
	cacheN uint32
	// newestResident is set when the newest cached mapping,
	// cache[cacheN-1], still has its pages; every other one is purged.
	newestResident bool
	cache          [hugeCacheSlots]hugeRec
	cacheBytes     uintptr
}

func (t *hugeTable) at(i uint32) *hugeRec {
	return (*hugeRec)(ptr(t.recs + uintptr(i)*hugeRecSize))
}

// add records a huge block and returns its index.
func (t *hugeTable) add(addr, size uintptr) uint32 {
	if t.n == t.cap {
		t.grow()
	}
	i := t.n
	*t.at(i) = hugeRec{addr, size}
	t.n++
	return i
}

func (t *hugeTable) grow() {
	newCap := max(2*t.cap, uint32(chunk.OSPageSize()/hugeRecSize))
	bytes := uintptr(newCap) * hugeRecSize
	p, err := chunk.Map(bytes, chunk.OSPageSize())
	if err != nil {
		fail(ErrOutOfMemory, "Alloc", 0, "Out of memory (huge block table of %d bytes: %v)", bytes, err)
	}
	if t.recs != 0 {
		old := uintptr(t.cap) * hugeRecSize
		copy(unsafe.Slice((*byte)(p), old), unsafe.Slice((*byte)(ptr(t.recs)), old))
		_ = chunk.Unmap(ptr(t.recs), old)
	}
	t.recs, t.cap = uintptr(p), newCap
}

// release unmaps the table itself.
func (t *hugeTable) release() {
	if t.recs != 0 {
		_ = chunk.Unmap(ptr(t.recs), uintptr(t.cap)*hugeRecSize)
		t.recs, t.n, t.cap = 0, 0, 0
	}
}

// frames is the number of 2 MiB frames a mapping of size bytes covers.
func frameCount(size uintptr) uintptr { return (size + chunk.Size - 1) >> chunk.Shift }

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

// roundHuge rounds a huge request to the OS page (zend_mm_alloc_huge).
func roundHuge(op string, size uintptr) uintptr {
	page := chunk.OSPageSize()
	if size+page-1 < size {
		fail(ErrOverflow, op, 0, "Possible integer overflow in memory allocation (%d + %d)", size, page-1)
	}
	return (size + page - 1) &^ (page - 1)
}

func (s *heapState) allocHuge(size uintptr, op string) unsafe.Pointer {
	s.checkOpen(op)
	newSize := roundHuge(op, size)
	if t := &s.huge; t.n == t.cap {
		// Grow the table first: if that fails, no mapping is lost.
		t.grow()
	}
	addr := s.takeCachedHuge(newSize)
	if addr == 0 {
		s.reserve(newSize, op, size)
		addr = uintptr(s.mapMemory(newSize, op, size))
		s.realSize += newSize
		s.realPeak = max(s.realPeak, s.realSize)
	}
	idx := s.huge.add(addr, newSize)
	s.setHugeFrames(addr, newSize, idx, 0)
	s.size += newSize
	s.peak = max(s.peak, s.size)
	return ptr(addr)
}

// freeHuge frees the block at index idx (zend_mm_free_huge).
func (s *heapState) freeHuge(idx uint32) {
	s.retireHuge(s.dropHuge(idx))
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
			s.unmapHuge(t.cache[0])
			t.cacheBytes -= t.cache[0].size
			copy(t.cache[:], t.cache[1:t.cacheN])
			t.cacheN--
		}
		if t.cacheN > 0 && t.newestResident {
			old := t.cache[t.cacheN-1]
			s.releasePages(old.addr, old.size)
		}
		t.cache[t.cacheN] = r
		t.cacheN++
		t.newestResident = true
		t.cacheBytes += r.size
		frames.SetRange(r.addr, frameCount(r.size), frames.Make(frames.CachedHuge, s.id, 0))
		return
	}
	s.unmapHuge(r)
}

// unmapHuge unmaps a huge mapping and tombstones its frames.
func (s *heapState) unmapHuge(r hugeRec) {
	frames.SetRange(r.addr, frameCount(r.size), frames.Make(frames.FreedHuge, s.id, 0))
	if err := s.unmapChunks(r.addr, r.size); err != nil {
		fail(ErrCorrupted, "munmap", r.addr, "zmm: munmap of huge block 0x%x failed: %v", r.addr, err)
	}
	s.realSize -= r.size
}

// takeCachedHuge returns a cached mapping for a block of size bytes, cut
// down to size, or 0. It takes the smallest mapping that fits, the newest
// of equals (it may still have its pages).
func (s *heapState) takeCachedHuge(size uintptr) uintptr {
	t := &s.huge
	best := -1
	for i := range t.cache[:t.cacheN] {
		if c := t.cache[i].size; c >= size && (best < 0 || c <= t.cache[best].size) {
			best = i
		}
	}
	if best < 0 {
		return 0
	}
	r := t.cache[best]
	if best == int(t.cacheN)-1 {
		t.newestResident = false // the new newest was purged when r came
	}
	copy(t.cache[best:], t.cache[best+1:t.cacheN])
	t.cacheN--
	t.cacheBytes -= r.size
	if r.size > size {
		// Clear the tail's frames before the tail is given back: from then
		// on another heap may map it and record its own frames there.
		tail := frameCount(size)
		frames.SetRange(r.addr+tail<<chunk.Shift, frameCount(r.size)-tail, frames.Make(frames.None, 0, 0))
		if err := s.truncateChunks(r.addr, r.size, size); err != nil {
			s.unmapHuge(r)
			return 0
		}
		s.realSize -= r.size - size
	}
	return r.addr
}

// dropHugeCache unmaps every cached huge mapping and returns the bytes.
func (s *heapState) dropHugeCache() uintptr {
	t := &s.huge
	n := t.cacheBytes
	for _, r := range t.cache[:t.cacheN] {
		s.unmapHuge(r)
	}
	t.cacheN, t.cacheBytes, t.newestResident = 0, 0, false
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

// reallocHuge resizes a huge block in place, or by moving its pages
// without copying them (mremap, only for memory from the OS), and returns
// the block; it returns nil when neither works and the caller must copy.
func (s *heapState) reallocHuge(idx uint32, size uintptr) unsafe.Pointer {
	r := s.huge.at(idx)
	newSize := roundHuge("Realloc", size)
	switch {
	case newSize == r.size:
		return ptr(r.addr)
	case newSize < r.size:
		// Frames are cleared before the tail is given back (see
		// takeCachedHuge) and restored if it is not.
		keep := frameCount(newSize)
		frames.SetRange(r.addr+keep<<chunk.Shift, frameCount(r.size)-keep, frames.Make(frames.None, 0, 0))
		if s.truncateChunks(r.addr, r.size, newSize) != nil {
			s.setHugeFrames(r.addr, r.size, idx, keep)
			return nil
		}
		d := r.size - newSize
		s.realSize -= d
		s.size -= d
		r.size = newSize
		return ptr(r.addr)
	}
	delta := newSize - r.size
	s.reserve(delta, "Realloc", size)
	if s.extendChunks(r.addr, r.size, newSize) == nil {
		s.setHugeFrames(r.addr, newSize, idx, frameCount(r.size))
	} else {
		// Tombstone the old range before it is unmapped, as unmapHuge
		// does; restore it if the pages stay.
		frames.SetRange(r.addr, frameCount(r.size), frames.Make(frames.FreedHuge, s.id, 0))
		q, err := s.moveChunks(r.addr, r.size, newSize)
		if err != nil {
			s.setHugeFrames(r.addr, r.size, idx, 0)
			return nil
		}
		r.addr = q
		s.setHugeFrames(r.addr, newSize, idx, 0)
	}
	r.size = newSize
	s.realSize += delta
	s.realPeak = max(s.realPeak, s.realSize)
	s.size += delta
	s.peak = max(s.peak, s.size)
	return ptr(r.addr)
}
