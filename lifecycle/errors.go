package lifecycle

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gozmm/zmm/zmm"
)

// Sentinel errors, for errors.Is. Every *Violation wraps one of the first
// two; a *LeakError wraps ErrPersistentLeak.
var (
	// ErrOutsideRequest: request memory (Alloc, Calloc, Realloc, Free,
	// Heap) was used where there is no request: in a module, worker,
	// post-request or info hook, or through the Context of a request that
	// has ended.
	ErrOutsideRequest = errors.New("lifecycle: request memory used outside a request")
	// ErrWrongFree: a block was freed (or reallocated) with the other
	// family's call: persistent memory with Free (efree), or request
	// memory with PFree (pefree).
	ErrWrongFree = errors.New("lifecycle: block freed with the wrong family")
	// ErrPersistentLeak: persistent memory was still live after module
	// shutdown.
	ErrPersistentLeak = errors.New("lifecycle: persistent memory never freed")

	// ErrStarted: Register or Start after Start.
	ErrStarted = errors.New("lifecycle: driver already started")
	// ErrNotRunning: Do before Start, or after Shutdown began.
	ErrNotRunning = errors.New("lifecycle: driver is not running")
	// ErrNoWorkers: every worker failed to restart after a recycle, so no
	// worker is left to serve requests.
	ErrNoWorkers = errors.New("lifecycle: no worker left to serve requests")
)

// Violation is a breach of the memory rules of a phase. The Context call
// that finds it panics with it (as zmm bails out with a *zmm.Error); the
// driver reports it to the report writer when it is found, records it in
// Report, and turns the panic into the failing hook's error.
type Violation struct {
	// Kind is ErrOutsideRequest or ErrWrongFree.
	Kind error
	// Op is the Context call: "Alloc", "Free", "PFree", "Heap", ...
	Op string
	// Ptr is the block the call was given, if any.
	Ptr uintptr
	// Where the call was made: the Context's phase, component ("" for the
	// request handler), worker (-1 outside workers) and request ("" if
	// none).
	Phase     Phase
	Component string
	Worker    int
	Request   string
	// Site is where the block was allocated, for ErrWrongFree in debug
	// mode (zero otherwise).
	Site zmm.Site
	// Cause is zmm's own error when zmm found the misuse first (a request
	// heap's Free given a persistent block reports zmm.ErrWrongHeap).
	Cause error
	// Msg is the full message.
	Msg string
}

func (v *Violation) Error() string { return v.Msg }

// Unwrap returns the kind and, if there is one, zmm's error, so that
// errors.Is matches either.
func (v *Violation) Unwrap() []error {
	if v.Cause != nil {
		return []error{v.Kind, v.Cause}
	}
	return []error{v.Kind}
}

// HookError is the error of a hook (or a request handler) that failed:
// it returned an error or panicked. Its message names the phase and the
// component.
type HookError struct {
	Phase     Phase
	Component string // "" for the request handler
	Worker    int    // -1 for module hooks and Info
	Request   string // the request, in request phases
	Err       error  // what the hook returned, a *Violation, a *zmm.Error, or a *PanicError
}

func (e *HookError) Error() string {
	return "lifecycle: " + where(e.Phase, e.Component, e.Worker, e.Request) + " failed: " + e.Err.Error()
}

func (e *HookError) Unwrap() error { return e.Err }

// PanicError is a panic of a hook or handler that was neither a *Violation
// nor a *zmm.Error, with the stack where it happened.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic's value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// PersistentLeak is a block of persistent memory still live after module
// shutdown, with where it was allocated.
type PersistentLeak struct {
	zmm.Leak // address, requested size; allocation site in debug mode

	Phase     Phase  // the phase that allocated it
	Component string // "" for the request handler
	Worker    int    // -1 for module phases
	Request   string // the request it was allocated during, if any
}

// DuringRequest reports whether the block was allocated during a request
// (request start, handler or request end).
func (l PersistentLeak) DuringRequest() bool { return l.Phase.inRequest() }

// LeakError is the error Shutdown returns when persistent memory was never
// freed. It wraps ErrPersistentLeak.
type LeakError struct {
	Leaks []PersistentLeak
}

func (e *LeakError) Error() string {
	var bytes uintptr
	during := 0
	for _, l := range e.Leaks {
		bytes += l.Size
		if l.DuringRequest() {
			during++
		}
	}
	return fmt.Sprintf("lifecycle: module shutdown: %d block(s) of persistent memory (%d bytes) never freed, %d of them allocated during a request",
		len(e.Leaks), bytes, during)
}

func (e *LeakError) Unwrap() error { return ErrPersistentLeak }

// RequestLeak is the request memory a request left live at its end, found
// in debug mode before the request heap was reset.
type RequestLeak struct {
	Request string
	Worker  int
	Leaks   []zmm.Leak
}

// Report is what the driver found, for programs and tests that check
// without parsing the report writer's text. Each list keeps its first
// maxRecorded entries; Dropped counts the ones left out.
type Report struct {
	Violations      []*Violation     // every rule violation, in the order found
	Failures        []*HookError     // every hook that failed (request handlers' returned errors excluded)
	RequestLeaks    []RequestLeak    // debug mode: requests that left request memory live
	PersistentLeaks []PersistentLeak // persistent memory live after module shutdown
	Dropped         int
}

// maxRecorded bounds each list of a Report, so that a server whose
// component leaks on every request does not grow without end.
const maxRecorded = 1000

// where describes a place in the lifecycle for messages:
//
//	module startup hook of component "db"
//	worker start hook of component "db" (worker 1)
//	request handler (request "GET /x", worker 0)
//	post-request end hook of component "db" (after request "GET /x", worker 0)
func where(p Phase, component string, worker int, request string) string {
	var b strings.Builder
	if component == "" {
		b.WriteString(p.String())
	} else {
		fmt.Fprintf(&b, "%s hook of component %q", p, component)
	}
	switch {
	case request != "" && p == PhasePostRequestEnd:
		fmt.Fprintf(&b, " (after request %q, worker %d)", request, worker)
	case request != "":
		fmt.Fprintf(&b, " (request %q, worker %d)", request, worker)
	case worker >= 0:
		fmt.Fprintf(&b, " (worker %d)", worker)
	}
	return b.String()
}
