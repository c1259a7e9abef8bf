package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gozmm/zmm/zmm"
)

// A worker is the Go analog of a PHP process (FPM, CLI) or of a thread
// under ZTS: a goroutine that owns a request heap, made at worker start and
// closed at worker end, and serves requests one after another on it.
//
// A slot is a worker's place in the driver. Its number stays when the
// worker is recycled (after MaxRequests requests): the worker ends, its
// heap is closed, and a new worker with a new heap starts in the slot.

// slot is one of the driver's Workers places.
type slot struct {
	id int
	// mu serializes every use of the current worker's heap: the worker
	// holds it while it starts, serves a request and ends; a heap viewer
	// (inspect) takes it between requests. It is WorkerHeap.Lock.
	mu sync.Mutex

	statMu sync.Mutex // guards stats
	stats  slotStats
}

// slotStats is what Info shows of a slot, updated by the worker at the end
// of each request, so that Info never waits for a worker.
type slotStats struct {
	live        bool
	generation  int     // of the current (or last) worker, from 0
	served      int     // requests served by all the slot's workers
	servedGen   int     // by the current worker
	lastRequest string  // of any of the slot's workers
	lastPeak    uintptr // the last request's peak usage
	realUsage   uintptr // the current heap's RealUsage, at worker start or after the last reset: kept chunks
	usage       uintptr // its Usage then: 0 unless something is wrong
}

// worker is one generation of a slot: its heap, its components' globals.
// Only the worker's goroutine touches it, under slot.mu.
type worker struct {
	slot     *slot
	gen      int
	heap     *zmm.Heap
	heapName string
	globals  []any // per component (Context.SetGlobals)
	served   int   // requests served by this worker
}

// WorkerHeap describes a worker's request heap to WithWorkerHeapHooks.
type WorkerHeap struct {
	Worker     int // the slot, 0 to Workers−1
	Generation int // 0 for the slot's first worker, one more at each recycle
	Heap       *zmm.Heap
	// Lock serializes every use of Heap. The worker holds it while it runs
	// hooks and requests, and while it calls the WorkerHeap hooks: those
	// must not take it. Register the heap with inspect under it.
	Lock sync.Locker
}

func (w *worker) describe() WorkerHeap {
	return WorkerHeap{Worker: w.slot.id, Generation: w.gen, Heap: w.heap, Lock: &w.slot.mu}
}

// siteOf returns the allocation site and requested size of a live request
// block, as far as debug mode knows them (zero values otherwise).
func (w *worker) siteOf(p uintptr) (zmm.Site, uintptr) {
	if !w.heap.Debug() {
		return zmm.Site{}, 0
	}
	for _, l := range w.heap.Leaks() {
		if l.Addr == p {
			return l.Site, l.Size
		}
	}
	return zmm.Site{}, 0
}

// runSlot is the goroutine of a slot: it starts a worker, serves requests
// until the worker is due for recycling or the driver stops, ends it, and
// starts the next. The first worker's start result goes to ready.
func (d *Driver) runSlot(ctx context.Context, s *slot, ready chan<- error) {
	defer d.wg.Done()
	defer func() {
		if d.liveWorkers.Add(-1) == 0 {
			close(d.noWorkers)
		}
	}()
	for gen := 0; ; gen++ {
		w, err := d.startWorker(ctx, s, gen)
		if ready != nil {
			ready <- err
			ready = nil
		}
		if err != nil {
			return // reported and recorded by startWorker
		}
		recycle := d.serveRequests(w)
		d.endWorker(ctx, w, len(d.components), !recycle)
		if !recycle {
			return
		}
		select {
		case <-d.stopping:
			return
		default:
		}
	}
}

// startWorker makes a worker: its heap, then the worker start hooks in
// registration order. If one fails, the components before it get their
// worker end hooks, the heap is closed, and the error is returned.
func (d *Driver) startWorker(ctx context.Context, s *slot, gen int) (*worker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := fmt.Sprintf("%s worker %d", d.cfg.name, s.id)
	h, err := zmm.New(d.heapOptions(name, true)...)
	if err != nil {
		he := &HookError{Phase: PhaseWorkerStart, Worker: s.id, Err: fmt.Errorf("making the request heap: %w", err)}
		d.failure(he)
		return nil, he
	}
	w := &worker{slot: s, gen: gen, heap: h, heapName: name, globals: make([]any, len(d.components))}
	s.statMu.Lock()
	s.stats.live, s.stats.generation, s.stats.servedGen = true, gen, 0
	s.stats.realUsage, s.stats.usage = h.RealUsage(), h.Usage()
	s.statMu.Unlock()
	if d.cfg.heapMade != nil {
		d.cfg.heapMade(w.describe())
	}
	for i := range d.components {
		if err := d.runHook(ctx, PhaseWorkerStart, i, w, nil); err != nil {
			d.endWorkerLocked(ctx, w, i, false)
			return nil, err
		}
	}
	return w, nil
}

// serveRequests serves requests until the worker has served MaxRequests
// (it returns true: recycle) or the driver stops (false).
func (d *Driver) serveRequests(w *worker) (recycle bool) {
	for {
		select {
		case <-d.stopping:
			return false
		case j := <-d.jobs:
			j.done <- d.serve(w, j)
			if d.cfg.maxRequests > 0 && w.served >= d.cfg.maxRequests {
				return true
			}
		}
	}
}

// endWorker runs the worker end hooks of the first reached components in
// reverse order and closes the worker's heap. Errors are reported and, at
// shutdown, kept for Shutdown to return.
func (d *Driver) endWorker(ctx context.Context, w *worker, reached int, atShutdown bool) {
	w.slot.mu.Lock()
	defer w.slot.mu.Unlock()
	d.endWorkerLocked(ctx, w, reached, atShutdown)
}

func (d *Driver) endWorkerLocked(ctx context.Context, w *worker, reached int, atShutdown bool) {
	for i := reached - 1; i >= 0; i-- {
		if err := d.runHook(ctx, PhaseWorkerEnd, i, w, nil); err != nil && atShutdown {
			d.endMu.Lock()
			d.endErrs = append(d.endErrs, err)
			d.endMu.Unlock()
		}
	}
	if d.cfg.heapClosing != nil {
		d.cfg.heapClosing(w.describe())
	}
	w.heap.Close() // empty: every request's end reset it, and worker hooks have no request memory
	clear(w.globals)
	s := w.slot
	s.statMu.Lock()
	s.stats.live = false
	s.statMu.Unlock()
}

// job is a request on its way to a worker.
type job struct {
	ctx  context.Context
	req  Request
	done chan error // buffered: the worker never waits for Do
}

// serve runs one request on the worker: request start hooks in
// registration order, the handler, request end hooks in reverse order,
// the leak report (debug mode), the heap reset, and post-request end hooks
// in reverse order. If a request start hook fails, the handler does not
// run and only the components before it get their request end hooks.
func (d *Driver) serve(w *worker, j *job) error {
	s := w.slot
	s.mu.Lock()
	defer s.mu.Unlock()
	name := j.req.Name
	if name == "" {
		name = "-"
	}
	req := &request{name: name}
	h := w.heap
	h.SetName(name)

	var errs []error
	reached := len(d.components)
	for i := range d.components {
		if err := d.runHook(j.ctx, PhaseRequestStart, i, w, req); err != nil {
			errs = append(errs, err)
			reached = i
			break
		}
	}
	if reached == len(d.components) && j.req.Handle != nil {
		if err := d.runHandler(j.ctx, j.req.Handle, w, req); err != nil {
			errs = append(errs, err)
		}
	}
	for i := reached - 1; i >= 0; i-- {
		if err := d.runHook(j.ctx, PhaseRequestEnd, i, w, req); err != nil {
			errs = append(errs, err)
		}
	}
	req.ended.Store(true)

	peak := h.PeakUsage()
	d.endRequest(w, req)

	for i := len(d.components) - 1; i >= 0; i-- {
		if err := d.runHook(j.ctx, PhasePostRequestEnd, i, w, req); err != nil {
			errs = append(errs, err)
		}
	}
	w.served++
	s.statMu.Lock()
	s.stats.served++
	s.stats.servedGen = w.served
	s.stats.lastRequest, s.stats.lastPeak = name, peak
	s.stats.realUsage, s.stats.usage = h.RealUsage(), h.Usage()
	s.statMu.Unlock()
	if len(errs) == 1 {
		return errs[0] // the handler's own error stays comparable with ==
	}
	return errors.Join(errs...)
}

// endRequest releases the request's memory: in debug mode it first
// reports what is still live as the request's leaks, in the Zend MM's
// format, naming the request; then it resets the heap, which keeps cached
// chunks for the next request.
func (d *Driver) endRequest(w *worker, req *request) {
	h := w.heap
	if h.Debug() {
		if leaks := h.Leaks(); len(leaks) > 0 {
			d.record(func(r *Report) bool {
				if len(r.RequestLeaks) >= maxRecorded {
					return false
				}
				r.RequestLeaks = append(r.RequestLeaks, RequestLeak{Request: req.name, Worker: w.slot.id, Leaks: leaks})
				return true
			})
			d.writeReport(func(out *reportWriter) { out.leaks(leaks, req.name, time.Now()) })
		}
	}
	h.Reset() // its own report is off (WithLeakReport(nil)): the driver wrote it
	h.SetName(w.heapName)
}
