package zmmhttp

import (
	"context"
	"net/http"

	"github.com/gozmm/zmm/zmm"
)

// heapKey is the context key of the request's heap.
type heapKey struct{}

// Middleware returns a middleware that runs each request with a heap of
// its own from p: it takes a heap (Pool.Get), puts it in the request's
// context (HeapFrom, Heap), runs the handler, and gives the heap back
// (Pool.Put, which resets it) when the handler returns.
//
// When the handler panics the heap is given back all the same, and the
// panic goes on with the same value, for net/http to log it and abort the
// response (http.ErrAbortHandler included). A heap that panicked with
// zmm.ErrCorrupted is closed rather than reused; one that panicked with
// zmm.ErrConcurrentUse (debug mode: a goroutine of the handler was in the
// heap at the same time) is dropped without being closed.
//
// In debug mode the heap is named "METHOD /path" for the request's leak
// report (Heap.SetName). If the pool cannot make a heap (zmm.New fails),
// the request is answered 503 Service Unavailable without running the
// handler.
func Middleware(p *Pool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h, err := p.Get()
			if err != nil {
				http.Error(w, "zmmhttp: no heap for the request: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			if h.Debug() {
				h.SetName(r.Method + " " + r.URL.Path)
			}
			r = r.WithContext(context.WithValue(r.Context(), heapKey{}, h))
			returned := false
			defer func() {
				var v any
				if !returned {
					v = recover() // nil after runtime.Goexit
				}
				p.end(r, h, v)
				if v != nil {
					panic(v)
				}
			}()
			next.ServeHTTP(w, r)
			returned = true
		})
	}
}

// end gives h back after the request r, whose handler panicked with v (nil
// if it returned).
func (p *Pool) end(r *http.Request, h *zmm.Heap, v any) {
	defer func() {
		switch {
		case isKind(v, zmm.ErrCorrupted):
			p.Discard(h)
		case isKind(v, zmm.ErrConcurrentUse):
			e := p.take(h, "Put")
			p.drop(e, false)
			e.mu.Unlock()
		default:
			p.Put(h)
		}
	}()
	if p.OnRequestEnd != nil {
		p.OnRequestEnd(r, h)
	}
}

// HeapFrom returns the heap of the request whose context is ctx (or a
// context derived from it), or nil if the request did not go through
// Middleware.
func HeapFrom(ctx context.Context) *zmm.Heap {
	h, _ := ctx.Value(heapKey{}).(*zmm.Heap)
	return h
}

// Heap returns r's heap. It panics if r did not go through Middleware: a
// handler that calls it cannot work without one, and the panic says why.
// Use HeapFrom where a heap is optional.
func Heap(r *http.Request) *zmm.Heap {
	h := HeapFrom(r.Context())
	if h == nil {
		panic("zmmhttp: no heap in the request's context: the handler of " + r.Method + " " + r.URL.Path + " is not behind zmmhttp.Middleware")
	}
	return h
}
