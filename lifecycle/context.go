package lifecycle

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// Context is what a hook or a request handler is given: where it runs
// (phase, component, worker, request) and the allocators its phase allows.
//
//   - Request memory (Alloc, Calloc, Realloc, Free, Heap: the emalloc
//     family) comes from the worker's request heap. It exists only inside
//     a request: from the request start hooks through the handler to the
//     request end hooks. Anywhere else — module, worker, post-request and
//     info hooks, or a request Context kept after its request ended — the
//     call panics with a *Violation wrapping ErrOutsideRequest.
//   - Persistent memory (PAlloc, PCalloc, PRealloc, PFree: the pemalloc
//     family) comes from the driver's persistent heap, behind a mutex, and
//     is allowed in every phase. It lives until PFree; what is still live
//     after module shutdown is reported as a leak, and what was allocated
//     during a request is reported as such.
//   - Each family frees only its own blocks: Free given persistent memory,
//     or PFree given request memory, panics with a *Violation wrapping
//     ErrWrongFree that names both heaps and, in debug mode, the block's
//     allocation site.
//
// A panic from a Context call (a *Violation, or a *zmm.Error such as the
// memory limit) ends the hook, which fails with it; the driver catches it.
//
// A Context belongs to the goroutine that runs its hook, like the worker's
// heap. A request Context stays valid until its request ends (so one kept
// from a request start hook works in the handler); any other Context until
// its hook returns.
type Context struct {
	d     *Driver
	ctx   context.Context
	phase Phase
	comp  int     // index of the component; -1 for the request handler and module-wide work
	w     *worker // nil in module phases and Info
	req   *request
	done  atomic.Bool // set when the hook returns (non-request phases)
}

// request is one request's state, shared by the Contexts of its hooks.
type request struct {
	name  string
	ended atomic.Bool // set after the request end hooks, before the reset
}

// Context returns the context.Context of the call that runs the hook: Do's
// for request phases, Start's for module startup, Shutdown's for module
// shutdown; worker hooks get Start's without its cancellation.
func (c *Context) Context() context.Context { return c.ctx }

// Phase returns the phase the hook runs in.
func (c *Context) Phase() Phase { return c.phase }

// Component returns the name of the component whose hook this is, or ""
// for a request handler.
func (c *Context) Component() string {
	if c.comp < 0 {
		return ""
	}
	return c.d.components[c.comp].Name
}

// Worker returns the worker's number (0 to Workers−1, kept across
// recycles), or −1 in module phases and Info.
func (c *Context) Worker() int {
	if c.w == nil {
		return -1
	}
	return c.w.slot.id
}

// Request returns the request's name in request phases and post-request
// end (the request that just ended), "" elsewhere.
func (c *Context) Request() string {
	if c.req == nil {
		return ""
	}
	return c.req.name
}

// Debug reports whether the driver's heaps are in debug mode (sites,
// guards, leak reports).
func (c *Context) Debug() bool { return c.d.pdebug }

// Globals returns the value the component stored with SetGlobals on this
// worker (its module globals under ZTS), or nil. A request handler has no
// component: it uses GlobalsOf.
func (c *Context) Globals() any {
	if c.comp < 0 {
		return nil
	}
	return c.GlobalsOf(c.d.components[c.comp].Name)
}

// GlobalsOf returns the value the named component stored with SetGlobals
// on this worker, or nil (also in module phases and Info, which run on no
// worker).
func (c *Context) GlobalsOf(component string) any {
	if c.w == nil {
		return nil
	}
	if i, ok := c.d.index[component]; ok {
		return c.w.globals[i]
	}
	return nil
}

// SetGlobals stores the component's per-worker value: one value per
// component per worker, typically set in WorkerStart and read in request
// hooks. It is dropped when the worker ends; persistent memory it refers
// to must be freed in WorkerEnd. SetGlobals panics in module phases,
// Info and request handlers, which have no worker or no component.
func (c *Context) SetGlobals(v any) {
	if c.w == nil || c.comp < 0 {
		panic(fmt.Sprintf("lifecycle: SetGlobals in %s: globals belong to a component on a worker; set them in a worker start hook",
			c.where()))
	}
	c.w.globals[c.comp] = v
}

func (c *Context) where() string {
	return where(c.phase, c.Component(), c.Worker(), c.Request())
}

// live reports whether the Context may still touch its worker: a request
// Context until its request ends, any other until its hook returns.
func (c *Context) live() bool {
	if c.phase.inRequest() {
		return !c.req.ended.Load()
	}
	return !c.done.Load()
}

// requestWorker returns the worker whose request heap a request-memory call
// may use, or panics with ErrOutsideRequest.
func (c *Context) requestWorker(op string, ptr uintptr) *worker {
	if c.phase.inRequest() && !c.req.ended.Load() {
		return c.w
	}
	var why string
	switch {
	case c.phase.inRequest():
		why = fmt.Sprintf("%s of request memory through the Context of request %q (worker %d), which has ended: "+
			"request memory exists only inside a request, and its end released it", op, c.req.name, c.Worker())
	case c.phase == PhasePostRequestEnd:
		why = fmt.Sprintf("%s of request memory in %s: the request heap was reset before the post-request end hooks; "+
			"use PAlloc (persistent memory) here", op, c.where())
	default:
		why = fmt.Sprintf("%s of request memory in %s: request memory exists only inside a request "+
			"(request start, handler, request end); use PAlloc (persistent memory) here", op, c.where())
	}
	panic(c.d.violation(&Violation{
		Kind: ErrOutsideRequest, Op: op, Ptr: ptr,
		Phase: c.phase, Component: c.Component(), Worker: c.Worker(), Request: c.Request(),
		Msg: "lifecycle: " + why,
	}))
}

// callerPC returns, in debug mode, the program counter of the call to the
// Context method that called callerPC: the allocation site to report.
// Both stay out of line so that the frame count is fixed.
//
//go:noinline
func callerPC(debug bool) uintptr {
	if !debug {
		return 0
	}
	var pc [1]uintptr
	runtime.Callers(3, pc[:]) // 0: Callers, 1: callerPC, 2: the Context method, 3: its caller
	return pc[0]
}

// resolve turns a recorded program counter into a zmm.Site.
func resolve(pc uintptr) zmm.Site {
	if pc == 0 {
		return zmm.Site{}
	}
	f, _ := runtime.CallersFrames([]uintptr{pc}).Next()
	return zmm.Site{PC: pc, Function: f.Function, File: f.File, Line: f.Line}
}

// Heap returns the worker's request heap, for zmm's own calls and typed
// helpers (zmm.AllocOf, zmm.MakeSlice, zmm.CopyString, ...). It panics
// with ErrOutsideRequest outside a request. The heap is valid until the
// request ends and must not be kept beyond it: unlike the Context's own
// calls, a kept heap cannot tell that its request is over. A block of the
// persistent heap given to its Free is reported as ErrWrongFree too.
func (c *Context) Heap() *zmm.Heap { return c.requestWorker("Heap", 0).heap }

// Alloc allocates request memory (emalloc): released at request end.
func (c *Context) Alloc(size uintptr) unsafe.Pointer {
	w := c.requestWorker("Alloc", 0)
	return w.heap.Alloc(size)
}

// Calloc allocates zeroed request memory for n elements of size bytes,
// overflow-checked (ecalloc).
func (c *Context) Calloc(n, size uintptr) unsafe.Pointer {
	w := c.requestWorker("Calloc", 0)
	return w.heap.Calloc(n, size)
}

// Realloc resizes a block of request memory (erealloc); Realloc(nil, n) is
// Alloc(n). A persistent block panics with ErrWrongFree: use PRealloc.
func (c *Context) Realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	w := c.requestWorker("Realloc", uintptr(p))
	if p != nil && !w.heap.Owns(p) {
		c.d.checkNotPersistent(c, "Realloc", uintptr(p))
	}
	return w.heap.Realloc(p, size)
}

// Free frees a block of request memory (efree). A persistent block panics
// with ErrWrongFree: use PFree.
func (c *Context) Free(p unsafe.Pointer) {
	w := c.requestWorker("Free", uintptr(p))
	if p == nil {
		return
	}
	if !w.heap.Owns(p) {
		c.d.checkNotPersistent(c, "Free", uintptr(p))
	}
	w.heap.Free(p)
}

// PAlloc allocates persistent memory (pemalloc(size, 1)): it outlives
// requests and workers, until PFree.
//
//go:noinline
func (c *Context) PAlloc(size uintptr) unsafe.Pointer {
	pc := callerPC(c.d.pdebug)
	d := c.d
	d.pmu.Lock()
	defer d.pmu.Unlock()
	p := d.pheap.Alloc(size)
	d.pblocks[uintptr(p)] = d.newPBlock(c, size, pc)
	return p
}

// PCalloc allocates zeroed persistent memory for n elements of size bytes,
// overflow-checked (pecalloc).
//
//go:noinline
func (c *Context) PCalloc(n, size uintptr) unsafe.Pointer {
	pc := callerPC(c.d.pdebug)
	d := c.d
	d.pmu.Lock()
	defer d.pmu.Unlock()
	p := d.pheap.Calloc(n, size)
	d.pblocks[uintptr(p)] = d.newPBlock(c, n*size, pc) // Calloc checked the product
	return p
}

// PRealloc resizes a block of persistent memory (perealloc); PRealloc(nil,
// n) is PAlloc(n). The block keeps the phase, component and request that
// first allocated it. A request block panics with ErrWrongFree.
//
//go:noinline
func (c *Context) PRealloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	pc := callerPC(c.d.pdebug)
	d := c.d
	d.pmu.Lock()
	defer d.pmu.Unlock()
	old, ok := d.pblocks[uintptr(p)]
	if p != nil && !ok {
		c.checkNotRequest("PRealloc", uintptr(p))
	}
	np := d.pheap.Realloc(p, size)
	if !ok {
		d.pblocks[uintptr(np)] = d.newPBlock(c, size, pc)
		return np
	}
	delete(d.pblocks, uintptr(p))
	if old.orig == 0 {
		old.orig = old.site
	}
	old.size, old.site = size, pc
	d.pblocks[uintptr(np)] = old
	return np
}

// PFree frees a block of persistent memory (pefree). A request block
// panics with ErrWrongFree: use Free, or let the request's end release it.
//
//go:noinline
func (c *Context) PFree(p unsafe.Pointer) {
	if p == nil {
		return
	}
	d := c.d
	d.pmu.Lock()
	defer d.pmu.Unlock()
	if _, ok := d.pblocks[uintptr(p)]; !ok {
		c.checkNotRequest("PFree", uintptr(p))
	}
	d.pheap.Free(p) // panics with zmm's error for a pointer that is no block at all
	delete(d.pblocks, uintptr(p))
}

// checkNotRequest panics with ErrWrongFree if p is a block of the Context's
// request heap. Called with d.pmu held, for a pointer that is no persistent
// block.
func (c *Context) checkNotRequest(op string, p uintptr) {
	w := c.w
	if w == nil || !c.live() || !w.heap.Owns(unsafe.Add(nil, p)) {
		return
	}
	site, size := w.siteOf(p)
	block := fmt.Sprintf("block 0x%x", p)
	switch {
	case site.File != "" && size != 0:
		block += fmt.Sprintf(" (%d bytes, allocated at %v)", size, site)
	case site.File != "":
		block += fmt.Sprintf(" (allocated at %v)", site)
	}
	panic(c.d.violation(&Violation{
		Kind: ErrWrongFree, Op: op, Ptr: p,
		Phase: c.phase, Component: c.Component(), Worker: c.Worker(), Request: c.Request(), Site: site,
		Msg: fmt.Sprintf("lifecycle: %s of request memory in %s: %s belongs to the request heap of worker %d, not to the persistent heap; "+
			"free it with Free (efree), or let the request's end release it", familyOp(op), c.where(), block, w.slot.id),
	}))
}

// familyOp names a Context call with its Zend MM counterpart.
func familyOp(op string) string {
	switch op {
	case "Free":
		return "Free (efree)"
	case "Realloc":
		return "Realloc (erealloc)"
	case "PFree":
		return "PFree (pefree)"
	case "PRealloc":
		return "PRealloc (perealloc)"
	}
	return op
}

// The methods of Context allocate for their callers: debug heaps record
// the caller's line as the site, in zmm's own reports, errors and
// profiles too.
func init() { zmm.MarkHelperPackage("github.com/gozmm/zmm/lifecycle") }
