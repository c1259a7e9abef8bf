package zmm

import (
	"unsafe"
)

// Handlers replace or observe a heap's allocation calls, the analog of the
// Zend MM's zend_mm_set_custom_handlers. Alloc serves Alloc and everything
// built on it (Calloc, SafeAlloc, Strdup, AllocBytes, the typed helpers),
// Free serves Free and FreeBytes, and Realloc serves Realloc. A nil field
// keeps the heap's own code for that call. Reset, if set, is told at the
// start of every Reset (before the heap drops its blocks), so that an
// observer can close its books on the request.
//
// A handler that observes calls the heap's own code through the Handlers
// that Builtin returns, never through the heap's methods: those would call
// the handler again, without end.
//
// Handlers run on the heap owner's goroutine, inside the call they serve;
// a heap with handlers is as single-owner as any other.
type Handlers struct {
	Alloc   func(size uintptr) unsafe.Pointer
	Free    func(p unsafe.Pointer)
	Realloc func(p unsafe.Pointer, size uintptr) unsafe.Pointer
	Reset   func()
}

// hookState is the Go-side state of a heap with handlers.
type hookState struct {
	Handlers
	// site is the allocation site of the call a handler is serving, taken
	// on entry (debug heaps only): below the handler, the first frame
	// outside zmm is the handler's own code, not the program's.
	site uintptr
}

// The two kinds of special heap, as bits of heapState.special.
const (
	// specialMode: a debug, system or guard heap (h.dbg is set).
	specialMode = 1 << iota
	// specialHooked: a heap with custom handlers (h.hooks is set).
	specialHooked
)

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
		main := hdr(s.main)
		for c := main; ; {
			s.addOwn(c.Base())
			if c = hdr(c.Next); c == main {
				break
			}
		}
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
		Alloc:   func(size uintptr) unsafe.Pointer { return h.allocBuiltin(size, "Alloc") },
		Free:    func(p unsafe.Pointer) { h.freeBuiltin(uintptr(p)) },
		Realloc: func(p unsafe.Pointer, size uintptr) unsafe.Pointer { return h.reallocBuiltin(uintptr(p), size) },
	}
}

// enterHook records the allocation site for the builtin code below a
// handler, on a debug heap: below the handler, the first frame outside zmm
// is the handler's own code. It returns whether the caller must clear the
// site when the handler returns (handlers may nest: the outermost call's
// site is the program's).
func (h *Heap) enterHook(hk *hookState) bool {
	if hk.site == 0 && h.st.debug {
		hk.site = h.dbg.callerSite()
		return true
	}
	return false
}

func (hk *hookState) leave(entered bool) {
	if entered {
		hk.site = 0
	}
}

// allocSpecial serves Alloc (and everything built on it) for a special
// heap: the Alloc handler if one is installed, the heap's own code
// otherwise.
func (h *Heap) allocSpecial(size uintptr, op string) unsafe.Pointer {
	if hk := h.hooks; hk != nil && hk.Alloc != nil {
		if !h.st.debug {
			return hk.Alloc(size)
		}
		defer hk.leave(h.enterHook(hk))
		return hk.Alloc(size)
	}
	return h.allocBuiltin(size, op)
}

// freeSpecial is Free for a special heap.
func (h *Heap) freeSpecial(addr uintptr) {
	if hk := h.hooks; hk != nil && hk.Free != nil {
		if !h.st.debug {
			hk.Free(userPtr(addr))
			return
		}
		defer hk.leave(h.enterHook(hk))
		hk.Free(userPtr(addr))
		return
	}
	h.freeBuiltin(addr)
}

// reallocSpecial is Realloc for a special heap.
func (h *Heap) reallocSpecial(addr uintptr, size uintptr) unsafe.Pointer {
	if hk := h.hooks; hk != nil && hk.Realloc != nil {
		if !h.st.debug {
			return hk.Realloc(userPtr(addr), size)
		}
		defer hk.leave(h.enterHook(hk))
		return hk.Realloc(userPtr(addr), size)
	}
	return h.reallocBuiltin(addr, size)
}

// allocBuiltin is the heap's own Alloc below any handler.
func (h *Heap) allocBuiltin(size uintptr, op string) unsafe.Pointer {
	s := h.st
	if s.special&specialMode != 0 {
		return h.allocDebug(size, op)
	}
	s.checkOpen(op)
	if s.special == 0 { // no handlers: the fast path serves the lists
		return h.Alloc(size)
	}
	h.enter(opAlloc)
	defer h.exit()
	return s.alloc(size, op)
}

// freeBuiltin is the heap's own Free below any handler.
func (h *Heap) freeBuiltin(addr uintptr) {
	s := h.st
	if s.special&specialMode != 0 {
		h.freeDebug(addr)
		return
	}
	if s.special == 0 {
		h.Free(userPtr(addr))
		return
	}
	if addr == 0 {
		return
	}
	s.checkOpen("Free")
	h.enter(opFree)
	defer h.exit()
	s.freeBlock(s.lookup("Free", addr), addr)
}

// reallocBuiltin is the heap's own Realloc below any handler.
func (h *Heap) reallocBuiltin(addr uintptr, size uintptr) unsafe.Pointer {
	if h.st.special&specialMode != 0 {
		return h.reallocDebug(addr, size)
	}
	return h.reallocChunks(addr, size)
}

// userPtr turns the address a caller passed back into the pointer it was,
// to hand it to a handler. The address may be anything the caller had in
// an unsafe.Pointer, Go memory included, which checkptr would reject as
// arithmetic on nil: the conversion is not arithmetic, it undoes one.
//
//go:nocheckptr
func userPtr(addr uintptr) unsafe.Pointer { return unsafe.Add(nil, addr) }
