package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// The chunk heap's operations below the entry points: what Alloc, Free,
// Realloc and BlockSize do on their slow paths for a heap in chunk mode
// (with or without custom handlers), and what a moving realloc does inside
// the heap. The Heap's methods enter the heap (owner.go) and call these;
// these never call back into the Heap's methods, so one call is one entry.

// alloc serves a request of size bytes from the lists the slow paths work
// on, a page run, or a huge block.
func (s *heapState) alloc(size uintptr, op string) unsafe.Pointer {
	if isSmall(size) {
		return s.allocSmall(smallBin(size), op)
	}
	return s.allocBig(size, op)
}

// allocBig serves sizes above the small bins: a page run, or a huge block.
// A new block above MaxLargeSize is always huge: as a run it could take a
// chunk of its own and leave it half empty (see MaxLargeSize).
func (s *heapState) allocBig(size uintptr, op string) unsafe.Pointer {
	if kindOf(size) == kindLarge {
		return s.allocLarge(size, op)
	}
	return s.allocHuge(size, op)
}

// freeBlock frees a block that lookup accepted.
func (s *heapState) freeBlock(b blockInfo, addr uintptr) {
	switch b.kind {
	case kindSmall:
		s.addOwn(b.c.Base())
		s.pushFree(addr, b.bin)
	case kindLarge:
		s.freeLarge(b.c, b.page, b.pages)
	case kindHuge:
		s.freeHuge(b.huge)
	}
}

// blockSize is the class size of the block at addr (zend_mem_block_size).
func (s *heapState) blockSize(op string, addr uintptr) uintptr {
	return s.lookup(op, addr).size
}

// realloc changes the size of the block at addr, in place where it can
// (zend_mm_realloc_heap): a small block whose new size is in its bin, a
// page run that shrinks or has free pages after it, a huge block the OS
// can resize or move; otherwise it moves the block.
func (s *heapState) realloc(addr, size uintptr) unsafe.Pointer {
	if addr == 0 {
		return s.alloc(size, "Realloc")
	}
	b := s.lookup("Realloc", addr)
	switch b.kind {
	case kindSmall:
		if fitsBin(size, b.bin) {
			return ptr(addr)
		}
	case kindLarge:
		// A page run grows in place past MaxLargeSize when the pages after
		// it are free: that takes no memory another run could use, and
		// saves the copy to a huge block. Only a new block of that size is
		// huge (see MaxLargeSize).
		if size > bins.MaxSize && size <= chunk.MaxRunSize && s.resizeLarge(b, size) {
			return ptr(addr)
		}
	case kindHuge:
		if kindOf(size) == kindHuge {
			if q := s.reallocHuge(b.huge, size); q != nil {
				return q
			}
		}
	}
	return s.reallocMove(addr, b, size)
}

// reallocSmall moves a handed-out small block of bin (Realloc's fast test
// has validated it) to a block of size bytes.
func (s *heapState) reallocSmall(addr uintptr, bin uint32, size uintptr) unsafe.Pointer {
	b := blockInfo{kind: kindSmall, c: hdr(addr &^ (chunk.Size - 1)), bin: bin, size: uintptr(bins.Size[bin&31])}
	return s.reallocMove(addr, b, size)
}

// reallocMove allocates, copies and frees the block b at addr. The peak is
// not raised by the moment both blocks exist (zend_mm_realloc_slow). If the
// new block cannot be had, nothing changes.
func (s *heapState) reallocMove(addr uintptr, b blockInfo, size uintptr) unsafe.Pointer {
	peak := s.peak
	q := s.alloc(size, "Realloc")
	n := min(b.size, size)
	copy(unsafe.Slice((*byte)(q), n), unsafe.Slice((*byte)(ptr(addr)), n))
	s.freeBlock(b, addr)
	s.peak = max(peak, s.size)
	return q
}
