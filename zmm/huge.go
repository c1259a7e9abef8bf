package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// Huge blocks are mappings of their own, 2 MiB aligned, rounded up to the
// OS page (above MaxLargeSize). Their start is at offset 0 of a 2 MiB
// frame, which no small or large block can be (page 0 is the header). The
// table that finds them is hugetable.go, their cache hugecache.go.

func (s *heapState) allocHuge(size uintptr, op string) unsafe.Pointer {
	s.checkOpen(op)
	newSize := roundHuge(op, size)
	if t := &s.huge; t.n == t.cap {
		// Grow the table first: if that fails, no mapping is lost.
		t.grow()
	}
	addr, mapped := s.takeCachedHuge(newSize)
	if addr == 0 {
		s.reserve(newSize, op, size)
		addr = uintptr(s.mapMemory(newSize, op, size))
		s.realSize += newSize
		s.realPeak = max(s.realPeak, s.realSize)
	} else {
		newSize = mapped
	}
	idx := s.huge.add(addr, newSize)
	s.setHugeFrames(addr, newSize, idx, 0)
	s.size += newSize
	s.peak = max(s.peak, s.size)
	return ptr(addr)
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
		s.unmapped(d)
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
			s.unadmit(delta)
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
