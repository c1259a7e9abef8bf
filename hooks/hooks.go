// Package hooks ships ready-made custom handlers for zmm heaps (see
// zmm.Heap.SetHandlers, the analog of zend_mm_set_custom_handlers): a
// Tracer that records a heap's traffic as an allocation trace that bench/
// replays against every allocator, a FaultInjector that fails chosen
// allocations the way the memory limit does, and a Counter that keeps
// per-component statistics.
//
// Each of them attaches to one heap at a time and chains to whatever
// handlers the heap had, so they stack: attach a Counter, then a Tracer,
// and both see every call. Detach restores the handlers that were there
// before, so detach in the reverse order of attaching. Like the heap, they
// are used by the heap's owner goroutine only, but for the read-only
// accessors noted as safe for concurrent use.
package hooks

import "github.com/gozmm/zmm/zmm"

// link is what an attached hook keeps of the heap: the handlers to pass
// calls to, and those to put back when it detaches.
type link struct {
	heap    *zmm.Heap
	next    zmm.Handlers
	prev    zmm.Handlers
	hadPrev bool
}

// attach chains hs in front of the heap's current handlers. In hs, the
// functions receive the next handlers through the link.
func (l *link) attach(h *zmm.Heap, make func(next zmm.Handlers) zmm.Handlers) {
	if l.heap != nil {
		panic("zmm/hooks: already attached to a heap; Detach first")
	}
	builtin := h.Builtin()
	prev, had := h.CustomHandlers()
	next := builtin
	if had {
		next = prev
		if next.Alloc == nil {
			next.Alloc = builtin.Alloc
		}
		if next.Free == nil {
			next.Free = builtin.Free
		}
		if next.Realloc == nil {
			next.Realloc = builtin.Realloc
		}
	}
	*l = link{heap: h, next: next, prev: prev, hadPrev: had}
	hs := make(next)
	if prevReset := prev.Reset; prevReset != nil {
		own := hs.Reset
		hs.Reset = func() {
			if own != nil {
				own()
			}
			prevReset()
		}
	}
	h.SetHandlers(hs)
}

// detach puts back the handlers the heap had before attach.
func (l *link) detach() {
	h := l.heap
	if h == nil {
		return
	}
	if l.hadPrev {
		// A closed heap refuses new handlers, and needs none.
		_ = zmm.Try(func() { h.SetHandlers(l.prev) })
	} else {
		h.RestoreHandlers()
	}
	*l = link{}
}
