package hooks

import (
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// FaultInjector makes chosen allocations of a heap fail the way the memory
// limit makes them fail: a panic with the *zmm.Error of kind
// zmm.ErrMemoryLimit and Zend's message, so that tests can check that code
// survives "Allowed memory size exhausted" at the worst moment. Alloc and
// Realloc count as allocations (Calloc, Strdup and the typed helpers go
// through Alloc); Free is never failed.
//
// Set the fields before Attach. Both rules may be on at once.
type FaultInjector struct {
	// FailNth fails the Nth allocation after Attach (1 is the first); 0
	// turns the rule off. Only that one allocation fails.
	FailNth int
	// FailAbove fails every allocation of more than FailAbove bytes; 0
	// turns the rule off.
	FailAbove uintptr

	link
	calls, failures int
}

// Attach starts injecting faults into h's allocations: the injector goes
// on top of the hooks attached to h (see the package doc). It panics if
// the injector is attached already.
func (f *FaultInjector) Attach(h *zmm.Heap) {
	f.calls, f.failures = 0, 0
	f.attach(h, "FaultInjector", zmm.Handlers{Alloc: f.alloc, Realloc: f.realloc})
}

func (f *FaultInjector) alloc(size uintptr) unsafe.Pointer {
	f.check("Alloc", size)
	return f.next.Alloc(size)
}

func (f *FaultInjector) realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	f.check("Realloc", size)
	return f.next.Realloc(p, size)
}

func (f *FaultInjector) check(op string, size uintptr) {
	f.calls++
	if f.calls == f.FailNth || (f.FailAbove != 0 && size > f.FailAbove) {
		f.failures++
		panic(zmm.LimitError(op, f.heap().Limit(), size))
	}
}

// Detach stops injecting faults and takes the injector out of the heap's
// hooks, wherever it stands among them; it does nothing if the injector is
// not attached.
func (f *FaultInjector) Detach() { f.detach() }

// Allocations returns how many allocations the injector has seen since
// Attach, failed ones included.
func (f *FaultInjector) Allocations() int { return f.calls }

// Failures returns how many allocations it has failed since Attach.
func (f *FaultInjector) Failures() int { return f.failures }
