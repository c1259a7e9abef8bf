package zmmhttp

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/gozmm/zmm/zmm"
)

// A Pool keeps heaps for requests: Get hands out an idle heap or makes a
// new one, Put resets a heap and keeps it for the next Get. Idle heaps keep
// their main chunk and, after Reset, about as many cached chunks as recent
// requests needed, so a reused heap seldom maps memory; each idle heap holds
// at least one 2 MiB chunk mapped, and the pages its requests touched stay
// resident.
//
// A Pool is safe for concurrent use. Each heap it hands out is used by one
// request at a time.
//
// The hooks are optional; set them before the pool is first used.
type Pool struct {
	// OnOpen, if not nil, is called with each heap the pool makes, before
	// the heap serves its first request, and with the lock that the pool
	// holds whenever the heap serves a request (from Get to the end of Put).
	// The lock is what inspect.Register asks for:
	//
	//	pool.OnOpen = func(h *zmm.Heap, mu sync.Locker) {
	//		inspect.Register(name(h), h, mu)
	//	}
	//
	// An inspection of the heap therefore waits for the request in progress,
	// if any, to end, and shows the heap between requests: the memory it
	// keeps mapped for the next one.
	OnOpen func(h *zmm.Heap, mu sync.Locker)

	// OnClose, if not nil, is called before the pool closes a heap or
	// drops a broken one (it is where to call inspect.Unregister).
	OnClose func(h *zmm.Heap)

	// OnRequestEnd, if not nil, is called by Middleware after the handler
	// returned or panicked, before the heap is reset: h.PeakUsage() is then
	// the request's peak (Reset restarts the peaks), and h.Stats() is
	// available (a walk of the heap, in proportion to its size).
	OnRequestEnd func(r *http.Request, h *zmm.Heap)

	opts    []zmm.Option
	maxIdle int

	mu     sync.Mutex
	idle   []*pooled // a stack: the most recently used heap goes out first
	out    map[*zmm.Heap]*pooled
	closed bool
	stats  PoolStats
}

// pooled is a heap of the pool and the lock held while it serves a request.
type pooled struct {
	h  *zmm.Heap
	mu sync.Mutex
}

// PoolStats counts a pool's heaps.
type PoolStats struct {
	Idle   int // heaps waiting for a request
	InUse  int // heaps handed out by Get and not yet Put
	Opened int // heaps the pool made, in all
	Closed int // heaps the pool closed or dropped, in all
}

// NewPool returns a pool that makes its heaps with zmm.New(opts...) and keeps
// up to maxIdle of them between requests; a heap put back when maxIdle
// heaps are idle is closed. maxIdle is the number of requests the server
// usually serves at once (0 keeps none: every request makes and closes its
// heap). NewPool makes and closes one heap, so that a bad option or ZMM_*
// environment variable is reported here and not at the first request.
//
// With zmm.WithLeakReport every heap of the pool writes its leak report to
// the same writer, from the goroutines that reset them: the writer must be
// safe for concurrent use (os.Stderr is; a bytes.Buffer is not).
func NewPool(maxIdle int, opts ...zmm.Option) (*Pool, error) {
	if maxIdle < 0 {
		return nil, fmt.Errorf("zmmhttp: NewPool(%d): the number of idle heaps must not be negative", maxIdle)
	}
	h, err := zmm.New(opts...)
	if err != nil {
		return nil, err
	}
	h.Close()
	return &Pool{
		opts:    opts,
		maxIdle: maxIdle,
		out:     map[*zmm.Heap]*pooled{},
	}, nil
}

// Get returns a heap for one request: an idle heap of the pool if there is
// one, else a new heap. Give it back with Put. An error comes from zmm.New
// (the OS refused memory). After Close, Get still makes heaps, which Put
// then closes, so that requests in flight during a shutdown complete.
func (p *Pool) Get() (*zmm.Heap, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		e := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.out[e.h] = e
		p.mu.Unlock()
		e.mu.Lock()
		return e.h, nil
	}
	p.mu.Unlock()

	h, err := zmm.New(p.opts...)
	if err != nil {
		return nil, err
	}
	e := &pooled{h: h}
	e.mu.Lock()
	p.mu.Lock()
	p.out[h] = e
	p.stats.Opened++
	p.mu.Unlock()
	if p.OnOpen != nil {
		p.OnOpen(h, &e.mu)
	}
	return h, nil
}

// Put ends the request that h served: it resets h (which writes the leak
// report of a debug heap) and keeps it for the next Get, or closes it if
// maxIdle heaps are idle already or the pool is closed. h must come from
// this pool's Get and must not be used afterwards; a heap put twice, or
// not from Get, makes Put panic.
//
// A heap that the handler closed is dropped. A heap whose Reset fails in
// another way (in debug mode: another goroutine is still using it) is
// dropped without being closed, since that goroutine may still touch its
// memory, and Put panics with the error: it is a bug in the handler.
func (p *Pool) Put(h *zmm.Heap) {
	e := p.take(h, "Put")
	switch v := reset(h); {
	case v == nil:
		p.mu.Lock()
		keep := !p.closed && len(p.idle) < p.maxIdle
		if keep {
			p.idle = append(p.idle, e)
		}
		p.mu.Unlock()
		if !keep {
			p.drop(e, true)
		}
		e.mu.Unlock()
	case isKind(v, zmm.ErrClosed):
		p.drop(e, false)
		e.mu.Unlock()
	default:
		p.drop(e, false)
		e.mu.Unlock()
		panic(v)
	}
}

// reset resets h and returns what it panicked with, if anything.
func reset(h *zmm.Heap) (v any) {
	defer func() { v = recover() }()
	h.Reset()
	return nil
}

// isKind reports whether v, a panic value, is a *zmm.Error of that kind.
func isKind(v any, kind error) bool {
	err, ok := v.(*zmm.Error)
	return ok && errors.Is(err, kind)
}

// Discard closes h, which came from this pool's Get, instead of putting it
// back: for a heap that reported corruption (zmm.ErrCorrupted), which
// should not serve another request. Middleware discards such heaps itself.
func (p *Pool) Discard(h *zmm.Heap) {
	e := p.take(h, "Discard")
	p.drop(e, true)
	e.mu.Unlock()
}

// take removes h from the heaps handed out.
func (p *Pool) take(h *zmm.Heap, op string) *pooled {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.out[h]
	if e == nil {
		panic(fmt.Sprintf("zmmhttp: %s of a heap that is not out of this pool (given back twice, or not from Get)", op))
	}
	delete(p.out, h)
	return e
}

// drop forgets a heap and, if close is set, closes it. The heap's lock is
// held. A panic of Close (a damaged debug heap's leak walk) is dropped with
// the heap: the heap is not reused either way.
func (p *Pool) drop(e *pooled, close bool) {
	p.mu.Lock()
	p.stats.Closed++
	p.mu.Unlock()
	if p.OnClose != nil {
		p.OnClose(e.h)
	}
	if close {
		_ = zmm.Try(e.h.Close)
	}
}

// Close closes the idle heaps, and makes Put close the heaps still out
// when they come back. Close the pool after the server has shut down
// (http.Server.Shutdown), or let Put close the stragglers.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, e := range idle {
		e.mu.Lock() // an inspection may hold it
		p.drop(e, true)
		e.mu.Unlock()
	}
}

// Stats returns the pool's counts.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Idle = len(p.idle)
	s.InUse = len(p.out)
	return s
}
