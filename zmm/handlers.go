package zmm

import (
	"unsafe"
)

// Custom handlers (zend_mm_set_custom_handlers): the Handlers type and the
// way calls reach them are in heap.go and dispatch.go; this is how they are
// installed and removed.

// SetHandlers installs custom handlers on the heap, replacing any installed
// before. A heap with handlers leaves its inlined fast paths: every call
// reaches the handler, which costs a function call and a few branches per
// call; the heap's own code behind it (Builtin) is unchanged. Blocks
// allocated before and after stay interchangeable: the handlers decide
// what to do with a block, the heap still owns every block it handed out.
func (h *Heap) SetHandlers(hs Handlers) {
	s := h.st
	s.checkOpen("SetHandlers")
	h.enter(opSetHandlers)
	defer h.exit()
	if s.special == 0 {
		// Leave the fast paths: their free lists move to the slow paths'
		// lists and the own set empties, so Alloc and Free always miss.
		s.flushCarve()
		s.dfree, s.free = s.free, [32]uintptr{}
		s.clearOwn()
	}
	s.special |= specialHooked
	h.hooks = &hookState{Handlers: hs}
}

// RestoreHandlers removes custom handlers: the heap serves every call
// itself again, with its fast paths (zend_mm_set_custom_handlers with
// NULLs). It does nothing on a heap without handlers.
func (h *Heap) RestoreHandlers() {
	s := h.st
	if h.hooks == nil || s.closed != 0 {
		h.hooks = nil
		return
	}
	h.enter(opSetHandlers)
	defer h.exit()
	h.hooks = nil
	s.special &^= specialHooked
	if s.special == 0 {
		s.free, s.dfree = s.dfree, [32]uintptr{}
		s.fillOwn()
	}
}

// CustomHandlers returns the installed handlers and true, or false if the
// heap has none (zend_mm_get_custom_handlers).
func (h *Heap) CustomHandlers() (Handlers, bool) {
	if h.hooks == nil {
		return Handlers{}, false
	}
	return h.hooks.Handlers, true
}

// Builtin returns the heap's own allocation code, which bypasses custom
// handlers: what an observing handler calls to do the work it observes.
// The functions are bound to h and valid as long as h is; calling them
// after Close panics with ErrClosed, as the heap's methods do. Reset is
// nil: the heap resets itself after telling the handler.
func (h *Heap) Builtin() Handlers {
	return Handlers{
		Alloc:   func(size uintptr) unsafe.Pointer { return h.builtinAlloc(size, "Alloc") },
		Free:    func(p unsafe.Pointer) { h.builtinFree(uintptr(p)) },
		Realloc: func(p unsafe.Pointer, size uintptr) unsafe.Pointer { return h.builtinRealloc(uintptr(p), size) },
	}
}
