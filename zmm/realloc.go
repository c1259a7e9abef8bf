package zmm

import (
	"unsafe"
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
	// A small block that passes Free's fast-path test (zend_mm_realloc_heap's
	// small case) stays if the new size is in its bin.
	bin, small := s.handedOut(addr)
	if small && fitsBin(size, bin) {
		return ptr(addr)
	}
	return h.reallocSlow(addr, size, bin, small)
}
