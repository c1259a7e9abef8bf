package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// Large blocks: runs of whole pages inside a chunk, from 3073 bytes to
// MaxLargeSize (1020 KiB). Only a run's first page carries a map entry, so a run
// costs one map write whatever its length.

// allocLarge takes a run of whole pages inside a chunk (zend_mm_alloc_large).
func (s *heapState) allocLarge(size uintptr, op string) unsafe.Pointer {
	s.checkOpen(op)
	n := largePages(size)
	c, start := s.takePages(n, op, uintptr(n)*chunk.PageSize)
	c.SetLargeRun(start, n)
	s.size += uintptr(n) * chunk.PageSize
	s.peak = max(s.peak, s.size)
	return c.Page(start)
}

// freeLarge gives a page run back to its chunk and retires the chunk when
// it is empty (zend_mm_free_large).
func (s *heapState) freeLarge(c *chunk.Header, page, n uint32) {
	c.ReleaseLarge(page, n) // s.release, spelled out: this is the hot one
	if s.runs.on {
		s.releaseIndexed(c, page, n)
	}
	s.size -= uintptr(n) * chunk.PageSize
	if c.Empty() && c.Base() != s.main {
		s.deleteChunk(c)
	}
}

// resizeLarge resizes a page run in place if it can (zend_mm_realloc_heap,
// large case): it shrinks always, and grows when the pages after it are
// free.
func (s *heapState) resizeLarge(b blockInfo, size uintptr) bool {
	n := largePages(size)
	c, page, old := b.c, b.page, b.pages
	switch {
	case n == old:
		return true
	case n < old:
		s.release(c, page+n, old-n, true)
		c.Map[page] = chunk.LargeEntry(n)
		s.size -= uintptr(old-n) * chunk.PageSize
		return true
	case c.RangeFree(page+old, n-old):
		s.take(c, page+old, n-old)
		c.SetLargeRun(page, n)
		s.size += uintptr(n-old) * chunk.PageSize
		s.peak = max(s.peak, s.size)
		return true
	}
	return false
}
