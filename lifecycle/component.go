package lifecycle

import (
	"io"
	"strconv"
)

// Phase is a step of the lifecycle. Each hook runs in one phase, and its
// Context allows what the phase allows (see the package documentation for
// the rules).
type Phase uint8

const (
	// PhaseModuleStartup runs once per process, at Start (MINIT).
	PhaseModuleStartup Phase = iota + 1
	// PhaseWorkerStart runs once per worker, on the worker's goroutine,
	// after its request heap is made (GINIT under ZTS).
	PhaseWorkerStart
	// PhaseRequestStart runs before each request's handler (RINIT).
	PhaseRequestStart
	// PhaseRequest is the request's own handler (the script).
	PhaseRequest
	// PhaseRequestEnd runs after each request's handler, while the request
	// memory is still there (RSHUTDOWN).
	PhaseRequestEnd
	// PhasePostRequestEnd runs after the request heap was reset: request
	// memory is gone (zend_post_deactivate).
	PhasePostRequestEnd
	// PhaseWorkerEnd runs once per worker, before its request heap is
	// closed: at Shutdown and when the worker is recycled (GSHUTDOWN).
	PhaseWorkerEnd
	// PhaseModuleShutdown runs once per process, at Shutdown, after every
	// worker has ended (MSHUTDOWN).
	PhaseModuleShutdown
	// PhaseInfo is Driver.Info asking each component for its section (MINFO).
	PhaseInfo
)

var phaseNames = [...]string{
	PhaseModuleStartup:  "module startup",
	PhaseWorkerStart:    "worker start",
	PhaseRequestStart:   "request start",
	PhaseRequest:        "request handler",
	PhaseRequestEnd:     "request end",
	PhasePostRequestEnd: "post-request end",
	PhaseWorkerEnd:      "worker end",
	PhaseModuleShutdown: "module shutdown",
	PhaseInfo:           "info",
}

func (p Phase) String() string {
	if int(p) < len(phaseNames) && phaseNames[p] != "" {
		return phaseNames[p]
	}
	return "phase(" + strconv.Itoa(int(p)) + ")"
}

// inRequest reports whether request memory exists in the phase: from
// request start to request end, both included.
func (p Phase) inRequest() bool {
	return p == PhaseRequestStart || p == PhaseRequest || p == PhaseRequestEnd
}

// A Hook is a component's code for one phase. An error it returns, or a
// panic, fails the hook; the driver reports it as a *HookError that names
// the phase and the component.
type Hook func(c *Context) error

// Component is the analog of a PHP extension: a named set of optional
// hooks, one per phase. Register components before Start; every hook left
// nil is skipped.
//
// Startup hooks (ModuleStartup, WorkerStart, RequestStart) run in
// registration order; shutdown hooks (RequestEnd, PostRequestEnd,
// WorkerEnd, ModuleShutdown) run in the reverse order, so a component can
// use the components registered before it from start to end.
type Component struct {
	// Name names the component in reports and errors. It is required and
	// unique within a driver.
	Name string

	// ModuleStartup runs once, at Start (MINIT). Persistent memory only.
	ModuleStartup Hook
	// ModuleShutdown runs once, at Shutdown, after every worker has ended
	// (MSHUTDOWN). Persistent memory still live after it is a leak.
	ModuleShutdown Hook

	// WorkerStart runs on each worker's goroutine when the worker is made,
	// at Start and after each recycle (GINIT). Persistent memory only; the
	// component's per-worker state goes in Context.SetGlobals.
	WorkerStart Hook
	// WorkerEnd runs on each worker's goroutine before the worker's heap is
	// closed (GSHUTDOWN).
	WorkerEnd Hook

	// RequestStart runs before each request's handler (RINIT). Request
	// and persistent memory.
	RequestStart Hook
	// RequestEnd runs after each request's handler, before the request
	// heap is reset (RSHUTDOWN). Request and persistent memory.
	RequestEnd Hook
	// PostRequestEnd runs after the request heap was reset
	// (zend_post_deactivate): the request's memory is gone, persistent
	// memory only.
	PostRequestEnd Hook

	// Info writes the component's section of Driver.Info (MINFO). It runs
	// on the goroutine that called Info, with persistent memory only.
	Info func(c *Context, w io.Writer) error
}

// hook returns the component's hook for a phase (nil if it has none).
func (c *Component) hook(p Phase) Hook {
	switch p {
	case PhaseModuleStartup:
		return c.ModuleStartup
	case PhaseModuleShutdown:
		return c.ModuleShutdown
	case PhaseWorkerStart:
		return c.WorkerStart
	case PhaseWorkerEnd:
		return c.WorkerEnd
	case PhaseRequestStart:
		return c.RequestStart
	case PhaseRequestEnd:
		return c.RequestEnd
	case PhasePostRequestEnd:
		return c.PostRequestEnd
	}
	return nil
}

// Request is one unit of work, run by a worker between the request start
// and request end hooks.
type Request struct {
	// Name names the request in reports, as PHP names the script: the
	// request leak report's "Script:" and "script=" say it. For example
	// "GET /cart". Empty is reported as "-".
	Name string
	// Handle does the request's work (the script). It runs on the
	// worker's goroutine; request memory it allocates is released when the
	// request ends, so copy out what must outlive the request (into Go
	// memory, or persistent memory). Nil runs the hooks only.
	Handle Hook
}
