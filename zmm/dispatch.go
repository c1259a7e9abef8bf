package zmm

import "unsafe"

// Every call that leaves a fast path comes here: the slow halves of the
// entry points, and the one door for special heaps. A heap is special (heapState.special)
// when it was made in debug, system or guard mode, or has custom handlers:
// its fast paths always miss, and every Alloc, Free, Realloc and BlockSize
// comes here, to one dispatcher per entry point, which serves the call in
// one fixed order: the custom handler if one is installed for it, else the
// heap's own code (builtin*), which enters the heap once (owner.go) and
// hands the call to the backend New chose:
//
//	h.sp == nil        chunk mode (with handlers, or Builtin's)  heapState (backend.go)
//	h.sp.dbg != nil    debug mode on chunks       debugState (debugchunks.go)
//	h.sp.sys != nil    system or guard mode       sysHeap (sysheap.go)

// The slow halves of the entry points: what Alloc, Free and Realloc call
// when their inlined fast paths miss. A normal heap enters itself here
// (owner.go) and hands the call to heapState; a special heap goes through
// its door below.

// allocSlow is Alloc's slow path: the bin's free list is empty, the size
// is above the bins, or the heap is special and serves every block
// through its door.
//
//go:noinline
func (h *Heap) allocSlow(size uintptr) unsafe.Pointer {
	s := h.st
	if s.special != 0 {
		return h.allocSpecial(size)
	}
	s.checkOpen("Alloc")
	h.enter(opAlloc)
	defer h.exit()
	if isSmall(size) {
		return s.refill(smallBin(size))
	}
	return s.allocBig(size, "Alloc")
}

// freeSlow is Free for everything the fast path does not serve: large and
// huge blocks, a chunk the fast path cannot vouch for, a special heap, and
// every bad pointer, which lookup names.
//
//go:noinline
func (h *Heap) freeSlow(addr uintptr) {
	if addr == 0 {
		return
	}
	s := h.st
	s.checkOpen("Free")
	if s.special != 0 {
		h.freeSpecial(addr)
		return
	}
	h.enter(opFree)
	defer h.exit()
	s.freeBlock(s.lookup("Free", addr), addr)
}

// reallocSlow is Realloc when the block may move or is not a small block
// the fast test vouched for.
//
//go:noinline
func (h *Heap) reallocSlow(addr, size uintptr, bin uint32, small bool) unsafe.Pointer {
	s := h.st
	s.checkOpen("Realloc")
	h.enter(opRealloc)
	defer h.exit()
	if small {
		return s.reallocSmall(addr, bin, size)
	}
	return s.realloc(addr, size)
}

// allocSpecial is Alloc (and everything built on it) for a special heap.
func (h *Heap) allocSpecial(size uintptr) unsafe.Pointer {
	if hk := h.hooks; hk != nil && hk.Alloc != nil {
		if h.sp == nil { // no sites to keep: no deferred call either
			return hk.Alloc(size)
		}
		defer hk.leave(h.enterHook(hk))
		return hk.Alloc(size)
	}
	return h.builtinAlloc(size, "Alloc")
}

// freeSpecial is Free for a special heap.
func (h *Heap) freeSpecial(addr uintptr) {
	if hk := h.hooks; hk != nil && hk.Free != nil {
		if h.sp == nil {
			hk.Free(userPtr(addr))
			return
		}
		defer hk.leave(h.enterHook(hk))
		hk.Free(userPtr(addr))
		return
	}
	h.builtinFree(addr)
}

// reallocSpecial is Realloc for a special heap.
func (h *Heap) reallocSpecial(addr uintptr, size uintptr) unsafe.Pointer {
	if hk := h.hooks; hk != nil && hk.Realloc != nil {
		if h.sp == nil {
			return hk.Realloc(userPtr(addr), size)
		}
		defer hk.leave(h.enterHook(hk))
		return hk.Realloc(userPtr(addr), size)
	}
	return h.builtinRealloc(addr, size)
}

// blockSizeSpecial is BlockSize for a special heap: a heap that keeps sites
// answers the requested size, so that a write past it is caught. Handlers
// do not serve BlockSize (zend_mm_set_custom_handlers has no such hook).
func (h *Heap) blockSizeSpecial(addr uintptr) uintptr {
	s := h.st
	s.checkOpen("BlockSize")
	sp := h.sp
	if sp == nil {
		return s.blockSize("BlockSize", addr)
	}
	h.enter(opBlockSize)
	defer h.exit()
	if sp.sys != nil {
		return sp.sys.blockSize(s, addr)
	}
	return sp.dbg.blockSize(s, addr)
}

// builtinAlloc is the heap's own Alloc, below any handler.
func (h *Heap) builtinAlloc(size uintptr, op string) unsafe.Pointer {
	s := h.st
	s.checkOpen(op)
	h.enter(opAlloc)
	defer h.exit()
	switch sp := h.sp; {
	case sp == nil:
		return s.alloc(size, op)
	case sp.sys != nil:
		return sp.sys.alloc(s, size, op, h.site(), 0)
	default:
		return sp.dbg.alloc(s, size, op, h.site(), 0)
	}
}

// builtinFree is the heap's own Free, below any handler.
func (h *Heap) builtinFree(addr uintptr) {
	s := h.st
	if addr == 0 {
		return
	}
	s.checkOpen("Free")
	h.enter(opFree)
	defer h.exit()
	switch sp := h.sp; {
	case sp == nil:
		s.freeBlock(s.lookup("Free", addr), addr)
	case sp.sys != nil:
		sp.sys.free(s, addr, "Free")
	default:
		sp.dbg.free(s, addr)
	}
}

// builtinRealloc is the heap's own Realloc, below any handler.
func (h *Heap) builtinRealloc(addr uintptr, size uintptr) unsafe.Pointer {
	s := h.st
	s.checkOpen("Realloc")
	h.enter(opRealloc)
	defer h.exit()
	switch sp := h.sp; {
	case sp == nil:
		return s.realloc(addr, size)
	case sp.sys != nil:
		return sp.sys.realloc(s, addr, size, h.site())
	default:
		return sp.dbg.realloc(s, addr, size, h.site())
	}
}

// site is the allocation site of the call being served: the first caller
// outside zmm or, below a custom handler, the handler's caller, taken when
// the handler was entered.
func (h *Heap) site() uintptr {
	if hk := h.hooks; hk != nil && hk.site != 0 {
		return hk.site
	}
	return h.sp.sites.callerSite()
}

// enterHook records the allocation site for the builtin code below a
// handler, on a heap that keeps sites: below the handler, the first frame
// outside zmm is the handler's own code. It returns whether the caller must
// clear the site when the handler returns (handlers may nest: the outermost
// call's site is the program's).
func (h *Heap) enterHook(hk *hookState) bool {
	if hk.site == 0 {
		hk.site = h.sp.sites.callerSite()
		return true
	}
	return false
}

func (hk *hookState) leave(entered bool) {
	if entered {
		hk.site = 0
	}
}
