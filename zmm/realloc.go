package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// Realloc changes the size of the block at p to size bytes and returns the
// block, which may have moved (erealloc). The contents are kept up to the
// smaller of the old and new sizes. As in the Zend MM:
//   - a small block whose new size falls in the same bin stays where it is;
//   - a large run shrinks in place, and grows in place when the pages after
//     it are free;
//   - a huge block shrinks or grows in place where the OS allows (mremap);
//     where it does not, zmm moves its pages to a new mapping without
//     copying them;
//   - otherwise a new block is allocated, the bytes copied and p freed.
//
// Realloc(nil, size) is Alloc(size). A bad p panics as in Free; if the new
// block cannot be had (memory limit), Realloc panics and p stays valid.
func (h *Heap) Realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	addr := uintptr(p) // see Free: untrusted pointers stay integers
	s := h.st
	if s.special != 0 {
		return h.reallocSpecial(addr, size)
	}
	return h.reallocChunks(addr, size)
}

// reallocChunks is Realloc for a chunk heap that is not in debug mode
// (with or without custom handlers).
func (h *Heap) reallocChunks(addr uintptr, size uintptr) unsafe.Pointer {
	s := h.st
	// A small block that passes Free's fast-path test (zend_mm_realloc_heap's
	// small case) stays if the new size is in its bin, and moves otherwise.
	bin, small := s.handedOut(addr)
	if small && size <= bins.MaxSize && smallBin(size) == bin {
		return ptr(addr)
	}
	s.checkOpen("Realloc")
	h.enter(opRealloc)
	defer h.exit()
	if small {
		b := block{kind: kindSmall, c: hdr(addr &^ (chunk.Size - 1)), bin: bin, size: uintptr(bins.Size[bin&31])}
		return s.reallocMove(addr, b, size)
	}
	if addr == 0 {
		return s.alloc(size, "Realloc")
	}
	b := s.lookup("Realloc", addr)
	switch b.kind {
	case kindSmall:
		if size <= bins.MaxSize && smallBin(size) == b.bin {
			return ptr(addr)
		}
	case kindLarge:
		if size > bins.MaxSize && size <= chunk.MaxLargeSize && s.resizeLarge(b, size) {
			return ptr(addr)
		}
	case kindHuge:
		if size > chunk.MaxLargeSize {
			if q := s.reallocHuge(b.huge, size); q != nil {
				return q
			}
		}
	}
	return s.reallocMove(addr, b, size)
}

// resizeLarge resizes a page run in place if it can (zend_mm_realloc_heap,
// large case).
func (s *heapState) resizeLarge(b block, size uintptr) bool {
	n := uint32((size + chunk.PageSize - 1) >> chunk.PageShift)
	c, page, old := b.c, b.page, b.pages
	switch {
	case n == old:
		return true
	case n < old:
		c.ReleaseLarge(page+n, old-n)
		c.Map[page] = chunk.LargeEntry(n)
		s.size -= uintptr(old-n) * chunk.PageSize
		return true
	case c.RangeFree(page+old, n-old):
		c.Take(page+old, n-old)
		c.SetLargeRun(page, n)
		s.size += uintptr(n-old) * chunk.PageSize
		s.peak = max(s.peak, s.size)
		return true
	}
	return false
}

// reallocMove allocates, copies and frees the block b at addr. The peak is
// not raised by the moment both blocks exist (zend_mm_realloc_slow).
func (s *heapState) reallocMove(addr uintptr, b block, size uintptr) unsafe.Pointer {
	peak := s.peak
	q := s.alloc(size, "Realloc")
	n := min(b.size, size)
	copy(unsafe.Slice((*byte)(q), n), unsafe.Slice((*byte)(ptr(addr)), n))
	s.freeBlock(b, addr)
	s.peak = max(peak, s.size)
	return q
}
