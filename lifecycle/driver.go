package lifecycle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozmm/zmm/zmm"
)

// Option configures a Driver made by New.
type Option func(*config)

type config struct {
	name        string
	workers     int
	maxRequests int
	debug       *bool
	report      io.Writer
	heapOpts    []zmm.Option
	heapMade    func(WorkerHeap)
	heapClosing func(WorkerHeap)
	observer    func(c *Context) (leave func())
}

// WithName names the driver in its heaps' names and in Info ("lifecycle"
// by default).
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithWorkers sets the number of workers. 1, the default, is the
// process-like model of PHP-CLI and of one FPM worker: requests one after
// another on one heap. More is the thread-like model of ZTS: that many
// requests in parallel, each worker with its own heap. It panics below 1.
func WithWorkers(n int) Option {
	if n < 1 {
		panic(fmt.Sprintf("lifecycle: WithWorkers(%d): need at least one worker", n))
	}
	return func(c *config) { c.workers = n }
}

// WithMaxRequests recycles a worker after it served n requests (PHP-FPM's
// pm.max_requests): it ends, its heap is closed, and a new worker with a
// new heap starts in its place, with the worker start hooks. 0, the
// default, never recycles. It panics below 0.
func WithMaxRequests(n int) Option {
	if n < 0 {
		panic(fmt.Sprintf("lifecycle: WithMaxRequests(%d): need 0 (never recycle) or more", n))
	}
	return func(c *config) { c.maxRequests = n }
}

// WithDebug puts the driver's heaps in debug mode, or out of it, whatever
// ZMM_DEBUG says: allocation sites, guards, and leak reports at each
// request end that name the request.
func WithDebug(on bool) Option { return func(c *config) { c.debug = &on } }

// WithReport sets where the driver writes what it finds — rule
// violations, failed hooks, request leak reports, persistent leaks at
// module shutdown — os.Stderr by default; nil silences it. Report returns
// the same findings as values.
func WithReport(w io.Writer) Option { return func(c *config) { c.report = w } }

// WithHeapOptions adds options for the workers' request heaps, zmm.WithLimit
// (memory_limit) or zmm.WithAllocMode for example. The driver's own
// choices come after them: its debug setting (if WithDebug was given),
// the heap's name, and no zmm leak report (the driver writes it).
func WithHeapOptions(opts ...zmm.Option) Option {
	return func(c *config) { c.heapOpts = append(c.heapOpts, opts...) }
}

// WithWorkerHeapHooks calls made when a worker's request heap is made,
// before the worker start hooks, and closing after the worker end hooks,
// right before the heap is closed: where to register the heap with inspect,
// or attach a tracer. Both run on the worker's goroutine with
// WorkerHeap.Lock held. Either may be nil.
func WithWorkerHeapHooks(made, closing func(WorkerHeap)) Option {
	return func(c *config) { c.heapMade, c.heapClosing = made, closing }
}

// WithHookObserver calls enter before each component hook (and each
// request handler, whose Component is ""), on the goroutine that runs it,
// with the hook's Context (Component, Phase, Worker, Request); the
// function enter returns, if not nil, is called when the hook returns or
// panics. For accounting per component: a hooks.Counter attached to each
// worker's heap, entered here (see examples/lifecycle).
func WithHookObserver(enter func(c *Context) (leave func())) Option {
	return func(c *config) { c.observer = enter }
}

// Driver runs the PHP lifecycle for a Go program: module startup and
// shutdown once, worker start and end for each worker, request start and
// end around each request, and the memory rules of each phase (see the
// package documentation).
//
// The order of use is New, Register (any number), Start, Do (from any
// number of goroutines), Shutdown. Info and Report may be called at any
// time from any goroutine.
type Driver struct {
	cfg        config
	components []*Component
	index      map[string]int // component name → index; fixed at Start

	mu    sync.Mutex // guards state
	state driverState

	// The persistent heap (pemalloc), shared by every phase and worker.
	pmu     sync.Mutex // serializes every use of pheap and pblocks
	pheap   *zmm.Heap
	pdebug  bool              // pheap is a debug heap; set at Start
	pclosed bool              // pheap was closed by module shutdown
	pblocks map[uintptr]block // every live persistent block: where it came from

	jobs        chan *job
	stopping    chan struct{} // closed when Shutdown begins (or Start fails)
	stopOnce    sync.Once
	noWorkers   chan struct{} // closed when every worker goroutine has exited
	liveWorkers atomic.Int32
	wg          sync.WaitGroup
	slots       []*slot
	workerCtx   context.Context

	endMu   sync.Mutex
	endErrs []error // worker end failures at shutdown

	shutdownOnce sync.Once
	shutdownErr  error

	repMu  sync.Mutex // guards report
	report Report
	outMu  sync.Mutex // serializes writes to cfg.report
}

type driverState uint8

const (
	stateNew driverState = iota
	stateStarting
	stateRunning
	stateStopping
	stateClosed
)

// block is a live persistent block: where it was allocated.
type block struct {
	size      uintptr
	phase     Phase
	component string
	worker    int
	request   string
	site      uintptr // debug mode: the last allocation's program counter
	orig      uintptr // debug mode: the first allocation's, if reallocated
}

// New makes a driver. Nothing runs and no memory is mapped until Start.
func New(opts ...Option) *Driver {
	cfg := config{name: "lifecycle", workers: 1, report: os.Stderr}
	for _, o := range opts {
		o(&cfg)
	}
	return &Driver{
		cfg:       cfg,
		index:     map[string]int{},
		jobs:      make(chan *job),
		stopping:  make(chan struct{}),
		noWorkers: make(chan struct{}),
		pblocks:   map[uintptr]block{},
	}
}

// Register adds a component. Components run in registration order at
// startup and in reverse order at shutdown. Register fails after Start,
// for a component without a name, and for a name already registered.
func (d *Driver) Register(c Component) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.state != stateNew:
		return fmt.Errorf("%w: Register(%q) must come before Start", ErrStarted, c.Name)
	case c.Name == "":
		return errors.New("lifecycle: Register: the component has no name")
	}
	if _, dup := d.index[c.Name]; dup {
		return fmt.Errorf("lifecycle: Register: a component named %q is already registered", c.Name)
	}
	d.index[c.Name] = len(d.components)
	d.components = append(d.components, &c)
	return nil
}

// Start runs module startup: it makes the persistent heap, runs every
// component's module startup hook in registration order, then starts the
// workers, each of which makes its request heap and runs the worker start
// hooks in registration order.
//
// If a hook fails, startup stops there, and the driver unwinds as PHP does
// when an extension's MINIT fails: the components that had started get
// their shutdown hooks (worker end, module shutdown) in reverse order; the
// failing component and those after it get none. Start then returns a
// *HookError naming the phase and the component, joined with any error of
// the unwinding, and the driver is closed.
func (d *Driver) Start(ctx context.Context) error {
	d.mu.Lock()
	if d.state != stateNew {
		d.mu.Unlock()
		return fmt.Errorf("%w: Start called twice", ErrStarted)
	}
	d.state = stateStarting
	d.mu.Unlock()

	ph, err := zmm.New(d.heapOptions(d.cfg.name+" persistent", false)...)
	if err != nil {
		d.setState(stateClosed)
		return fmt.Errorf("lifecycle: making the persistent heap: %w", err)
	}
	d.pheap, d.pdebug = ph, ph.Debug()

	for i := range d.components {
		if err := d.runHook(ctx, PhaseModuleStartup, i, nil, nil); err != nil {
			err = errors.Join(err, d.moduleShutdown(ctx, i))
			d.stop()
			d.setState(stateClosed)
			return err
		}
	}

	d.workerCtx = context.WithoutCancel(ctx)
	d.slots = make([]*slot, d.cfg.workers)
	ready := make(chan error, d.cfg.workers)
	for i := range d.slots {
		d.slots[i] = &slot{id: i}
		d.wg.Add(1)
		d.liveWorkers.Add(1)
		go d.runSlot(d.workerCtx, d.slots[i], ready)
	}
	var errs []error
	for range d.slots {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		d.stop()
		d.wg.Wait()
		errs = append(errs, d.takeEndErrs()...)
		errs = append(errs, d.moduleShutdown(ctx, len(d.components)))
		d.setState(stateClosed)
		return errors.Join(errs...)
	}
	d.setState(stateRunning)
	return nil
}

// Do runs a request on a free worker and returns when it is done: the
// request start hooks, r.Handle, the request end hooks, the reset of the
// worker's request heap and the post-request end hooks have run.
//
// It returns r.Handle's error as is, joined with the *HookError of every
// hook that failed (a failed request start hook means the handler did not
// run). A panic of the handler — a *Violation, a *zmm.Error such as the
// memory limit, or any other — is a *HookError for PhaseRequest. Before a
// worker takes the request, Do gives up when ctx is done (ctx.Err()) or
// when the driver stops (ErrNotRunning); once a worker has it, Do waits
// for it to finish, and the hooks see ctx through Context.Context.
//
// Do must not be called from a hook or a handler: a request that waits for
// another request can wait for its own worker forever.
func (d *Driver) Do(ctx context.Context, r Request) error {
	d.mu.Lock()
	running := d.state == stateRunning
	d.mu.Unlock()
	if !running {
		return ErrNotRunning
	}
	j := &job{ctx: ctx, req: r, done: make(chan error, 1)}
	select {
	case d.jobs <- j:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stopping:
		return ErrNotRunning
	case <-d.noWorkers:
		return ErrNoWorkers
	}
	return <-j.done
}

// Shutdown stops the driver: workers finish the request they run, then
// each runs the worker end hooks in reverse registration order and closes
// its heap; then the module shutdown hooks run in reverse registration
// order, persistent memory still live is reported as leaks, and the
// persistent heap is closed.
//
// It returns the errors of the failed shutdown hooks and, if persistent
// memory was never freed, a *LeakError (errors.Is ErrPersistentLeak). If
// ctx is done before the workers have stopped, Shutdown returns ctx.Err()
// and module shutdown has not run yet; call Shutdown again to wait for it.
// Calls after the first completed one return its result.
func (d *Driver) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	switch d.state {
	case stateNew:
		d.state = stateClosed
		d.mu.Unlock()
		return nil
	case stateStarting:
		d.mu.Unlock()
		return fmt.Errorf("%w: Shutdown during Start", ErrNotRunning)
	case stateClosed:
		d.mu.Unlock()
		return d.shutdownErr
	}
	d.state = stateStopping
	d.mu.Unlock()
	d.stop()

	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("lifecycle: Shutdown: waiting for the workers: %w", ctx.Err())
	}
	d.shutdownOnce.Do(func() {
		errs := d.takeEndErrs()
		errs = append(errs, d.moduleShutdown(ctx, len(d.components)))
		err := errors.Join(errs...)
		d.mu.Lock()
		d.shutdownErr, d.state = err, stateClosed
		d.mu.Unlock()
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shutdownErr
}

func (d *Driver) setState(s driverState) {
	d.mu.Lock()
	d.state = s
	d.mu.Unlock()
}

func (d *Driver) stop() { d.stopOnce.Do(func() { close(d.stopping) }) }

func (d *Driver) takeEndErrs() []error {
	d.endMu.Lock()
	defer d.endMu.Unlock()
	errs := d.endErrs
	d.endErrs = nil
	return errs
}

// moduleShutdown runs the module shutdown hooks of the first reached
// components in reverse order, reports persistent memory still live as
// leaks, and closes the persistent heap.
func (d *Driver) moduleShutdown(ctx context.Context, reached int) error {
	var errs []error
	for i := reached - 1; i >= 0; i-- {
		if err := d.runHook(ctx, PhaseModuleShutdown, i, nil, nil); err != nil {
			errs = append(errs, err)
		}
	}
	d.pmu.Lock()
	defer d.pmu.Unlock()
	if err := d.persistentLeaks(); err != nil {
		errs = append(errs, err)
	}
	d.pheap.Close()
	d.pclosed = true
	clear(d.pblocks)
	return errors.Join(errs...)
}

// persistentLeaks reports the live persistent blocks after module
// shutdown: a line that counts them, then, for each place that allocated
// some (grouped by phase, component, worker and request), a line that
// says where — "during request X" for the ones a request allocated — and
// the Zend MM leak report of its blocks. Called with d.pmu held.
func (d *Driver) persistentLeaks() error {
	if len(d.pblocks) == 0 {
		return nil
	}
	leaks := make([]PersistentLeak, 0, len(d.pblocks))
	for addr, b := range d.pblocks {
		leaks = append(leaks, PersistentLeak{
			Leak:  zmm.Leak{Addr: addr, Size: b.size, Site: resolve(b.site), Orig: resolve(b.orig)},
			Phase: b.phase, Component: b.component, Worker: b.worker, Request: b.request,
		})
	}
	slices.SortFunc(leaks, func(a, b PersistentLeak) int { return cmp.Compare(a.Addr, b.Addr) })
	lerr := &LeakError{Leaks: leaks}
	d.record(func(r *Report) bool {
		n := min(len(leaks), maxRecorded-len(r.PersistentLeaks))
		if n <= 0 {
			return false
		}
		r.PersistentLeaks = append(r.PersistentLeaks, leaks[:n]...)
		r.Dropped += len(leaks) - n
		return true
	})

	type origin struct {
		phase     Phase
		component string
		worker    int
		request   string
	}
	var order []origin
	groups := map[origin][]zmm.Leak{}
	for _, l := range leaks {
		o := origin{l.Phase, l.Component, l.Worker, l.Request}
		if _, seen := groups[o]; !seen {
			order = append(order, o)
		}
		groups[o] = append(groups[o], l.Leak)
	}
	now := time.Now()
	d.writeReport(func(out *reportWriter) {
		out.line(lerr.Error())
		for _, o := range order {
			script := o.request
			if o.phase.inRequest() {
				out.line(fmt.Sprintf("lifecycle: persistent memory allocated during request %q (%s, worker %d) and never freed:",
					o.request, where(o.phase, o.component, -1, ""), o.worker))
			} else {
				out.line(fmt.Sprintf("lifecycle: persistent memory allocated in %s and never freed:", where(o.phase, o.component, o.worker, o.request)))
				script = o.phase.String()
				if o.component != "" {
					script += " of " + o.component
				}
			}
			out.leaks(groups[o], script, now)
		}
	})
	return lerr
}

// heapOptions are the options of a heap the driver makes: the user's (for
// request heaps), then the driver's.
func (d *Driver) heapOptions(name string, request bool) []zmm.Option {
	var opts []zmm.Option
	if request {
		opts = append(opts, d.cfg.heapOpts...)
	}
	if d.cfg.debug != nil {
		opts = append(opts, zmm.WithDebug(*d.cfg.debug))
	}
	return append(opts, zmm.WithName(name), zmm.WithLeakReport(nil))
}

// runHook runs component i's hook for the phase, if it has one, and returns
// its failure as a reported and recorded *HookError.
func (d *Driver) runHook(ctx context.Context, p Phase, i int, w *worker, req *request) error {
	comp := d.components[i]
	hook := comp.hook(p)
	if hook == nil {
		return nil
	}
	c := &Context{d: d, ctx: ctx, phase: p, comp: i, w: w, req: req}
	err := d.call(c, func() error { return hook(c) })
	if err == nil {
		return nil
	}
	he := &HookError{Phase: p, Component: comp.Name, Worker: c.Worker(), Request: c.Request(), Err: err}
	d.failure(he)
	return he
}

// runHandler runs a request's handler. An error it returns is the
// request's own, returned as is; a panic becomes a reported *HookError.
func (d *Driver) runHandler(ctx context.Context, handle Hook, w *worker, req *request) error {
	c := &Context{d: d, ctx: ctx, phase: PhaseRequest, comp: -1, w: w, req: req}
	panicked := false
	err := d.call(c, func() error {
		panicked = true
		err := handle(c)
		panicked = false
		return err
	})
	if err == nil || !panicked {
		return err
	}
	he := &HookError{Phase: PhaseRequest, Worker: c.Worker(), Request: c.Request(), Err: err}
	d.failure(he)
	return he
}

// call runs f for the Context's hook, inside the observer's enter and
// leave, and turns a panic into an error: a *Violation or *zmm.Error is
// the hook's bailout, anything else a *PanicError with the stack.
func (d *Driver) call(c *Context, f func() error) (err error) {
	if d.cfg.observer != nil {
		if leave := d.cfg.observer(c); leave != nil {
			defer leave()
		}
	}
	defer func() {
		c.done.Store(true)
		if r := recover(); r != nil {
			err = d.recovered(c, r)
		}
	}()
	return f()
}

func (d *Driver) recovered(c *Context, r any) error {
	switch v := r.(type) {
	case *Violation:
		return v // reported when found
	case *zmm.Error:
		// A request heap's own Free or Realloc (through Context.Heap) given
		// a persistent block: zmm says "another heap" (or, in system and
		// guard modes, which keep no frame table, "invalid pointer"); say
		// which heap.
		foreign := errors.Is(v, zmm.ErrWrongHeap) || errors.Is(v, zmm.ErrInvalidPointer)
		if foreign && c.w != nil && (v.Op == "Free" || v.Op == "Realloc") {
			d.pmu.Lock()
			b, ok := d.pblocks[v.Ptr]
			d.pmu.Unlock()
			if ok {
				return d.violation(d.persistentAsRequest(c, "Heap()."+v.Op, v.Op, v.Ptr, b, v))
			}
		}
		return v
	}
	return &PanicError{Value: r, Stack: debug.Stack()}
}

// checkNotPersistent panics with ErrWrongFree if p is a persistent block.
// It is called for a pointer the request heap does not own.
func (d *Driver) checkNotPersistent(c *Context, op string, p uintptr) {
	d.pmu.Lock()
	b, ok := d.pblocks[p]
	d.pmu.Unlock()
	if ok {
		panic(d.violation(d.persistentAsRequest(c, op, op, p, b, nil)))
	}
}

func (d *Driver) persistentAsRequest(c *Context, call, op string, p uintptr, b block, cause error) *Violation {
	site := resolve(b.site)
	at := ""
	if site.File != "" {
		at = fmt.Sprintf("at %v ", site)
	}
	return &Violation{
		Kind: ErrWrongFree, Op: op, Ptr: p, Cause: cause,
		Phase: c.phase, Component: c.Component(), Worker: c.Worker(), Request: c.Request(), Site: site,
		Msg: fmt.Sprintf("lifecycle: %s of persistent memory in %s: block 0x%x (%d bytes, allocated %sin %s) belongs to the persistent heap, "+
			"not to the request heap of worker %d; free it with PFree (pefree)",
			familyOp(call), c.where(), p, b.size, at, where(b.phase, b.component, b.worker, b.request), c.Worker()),
	}
}

func (d *Driver) newPBlock(c *Context, size, pc uintptr) block {
	return block{size: size, phase: c.phase, component: c.Component(), worker: c.Worker(), request: c.Request(), site: pc}
}

// violation reports and records v, and returns it for the panic.
func (d *Driver) violation(v *Violation) *Violation {
	d.record(func(r *Report) bool {
		if len(r.Violations) >= maxRecorded {
			return false
		}
		r.Violations = append(r.Violations, v)
		return true
	})
	d.writeReport(func(out *reportWriter) { out.line(v.Msg) })
	return v
}

// failure reports and records a failed hook. A violation was reported
// when it was found, a panic is reported with its stack.
func (d *Driver) failure(he *HookError) {
	d.record(func(r *Report) bool {
		if len(r.Failures) >= maxRecorded {
			return false
		}
		r.Failures = append(r.Failures, he)
		return true
	})
	if _, ok := he.Err.(*Violation); ok {
		return
	}
	d.writeReport(func(out *reportWriter) {
		out.line(he.Error())
		if pe, ok := he.Err.(*PanicError); ok {
			out.raw(pe.Stack)
		}
	})
}

// record adds to the report under its lock; add returns false when its
// list is full, which counts as dropped.
func (d *Driver) record(add func(r *Report) bool) {
	d.repMu.Lock()
	defer d.repMu.Unlock()
	if !add(&d.report) {
		d.report.Dropped++
	}
}

// Report returns a copy of what the driver found so far: rule violations,
// failed hooks, request leaks (debug mode) and, after module shutdown,
// persistent leaks.
func (d *Driver) Report() Report {
	d.repMu.Lock()
	defer d.repMu.Unlock()
	r := d.report
	r.Violations = slices.Clone(r.Violations)
	r.Failures = slices.Clone(r.Failures)
	r.RequestLeaks = slices.Clone(r.RequestLeaks)
	r.PersistentLeaks = slices.Clone(r.PersistentLeaks)
	return r
}

// reportWriter writes to the report writer; write errors are ignored (the
// findings stay in Report).
type reportWriter struct{ w io.Writer }

func (o *reportWriter) line(s string) { _, _ = io.WriteString(o.w, s+"\n") }
func (o *reportWriter) raw(b []byte)  { _, _ = o.w.Write(b) }
func (o *reportWriter) leaks(l []zmm.Leak, script string, now time.Time) {
	_ = zmm.WriteLeakReport(o.w, l, script, now)
}

func (d *Driver) writeReport(f func(out *reportWriter)) {
	if d.cfg.report == nil {
		return
	}
	d.outMu.Lock()
	defer d.outMu.Unlock()
	f(&reportWriter{d.cfg.report})
}

// PersistentHeap returns the persistent heap and the lock that serializes
// its use, to register it with inspect. It is nil before Start. It is for
// looking at: allocate and free through Context.PAlloc and PFree, which
// keep the books the rules need. Unregister it before Shutdown, which
// closes it.
func (d *Driver) PersistentHeap() (*zmm.Heap, sync.Locker) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == stateNew {
		return nil, &d.pmu
	}
	return d.pheap, &d.pmu
}

// Workers returns the number of workers.
func (d *Driver) Workers() int { return d.cfg.workers }

// Info writes the driver's information page (phpinfo): each component's
// section from its Info hook (MINFO) in registration order, then the
// persistent heap and each worker's request heap as of its last request.
// The Info hooks run while the driver is running only. Info never waits
// for a worker, so it may be called from anywhere, a hook included. It
// returns the errors of the Info hooks that failed and of the writer.
func (d *Driver) Info(w io.Writer) error {
	d.mu.Lock()
	state := d.state
	d.mu.Unlock()
	ew := &errWriter{w: w}
	maxReq := "unlimited"
	if d.cfg.maxRequests > 0 {
		maxReq = fmt.Sprint(d.cfg.maxRequests)
	}
	fmt.Fprintf(ew, "%s: %d worker(s), max requests per worker %s, debug %v, %s\n",
		d.cfg.name, d.cfg.workers, maxReq, d.pdebug, [...]string{"not started", "starting", "running", "stopping", "stopped"}[state])
	var errs []error
	for i, comp := range d.components {
		fmt.Fprintf(ew, "\n[%s]\n", comp.Name)
		if comp.Info == nil || state != stateRunning {
			continue
		}
		c := &Context{d: d, ctx: context.Background(), phase: PhaseInfo, comp: i}
		if err := d.call(c, func() error { return comp.Info(c, ew) }); err != nil {
			he := &HookError{Phase: PhaseInfo, Component: comp.Name, Worker: -1, Err: err}
			d.failure(he)
			errs = append(errs, he)
		}
	}
	d.pmu.Lock()
	if d.pheap != nil && !d.pclosed {
		st := d.pheap.Stats()
		live, during := len(d.pblocks), 0
		for _, b := range d.pblocks {
			if b.phase.inRequest() {
				during++
			}
		}
		fmt.Fprintf(ew, "\n[persistent memory]\nusage %d, peak %d, real usage %d; %d block(s) live, %d of them allocated during a request\n",
			st.Usage, st.PeakUsage, st.RealUsage, live, during)
	}
	d.pmu.Unlock()
	if len(d.slots) > 0 {
		fmt.Fprintf(ew, "\n[workers]\n")
	}
	for _, s := range d.slots {
		s.statMu.Lock()
		st := s.stats
		s.statMu.Unlock()
		status := "ended"
		if st.live {
			status = "live"
		}
		fmt.Fprintf(ew, "worker %d: generation %d (%s), %d request(s) served, %d by this generation; "+
			"heap usage %d, real usage %d between requests",
			s.id, st.generation, status, st.served, st.servedGen, st.usage, st.realUsage)
		if st.lastRequest != "" {
			fmt.Fprintf(ew, "; last request %q, peak usage %d", st.lastRequest, st.lastPeak)
		}
		fmt.Fprintln(ew)
	}
	if ew.err != nil {
		errs = append(errs, ew.err)
	}
	return errors.Join(errs...)
}

// errWriter keeps the first write error and drops later writes.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return len(p), nil
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, nil
}
