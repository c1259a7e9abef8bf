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

// Attach starts injecting faults into h's allocations.
func (f *FaultInjector) Attach(h *zmm.Heap) {
	f.calls, f.failures = 0, 0
	f.attach(h, func(next zmm.Handlers) zmm.Handlers {
		return zmm.Handlers{
			Alloc: func(size uintptr) unsafe.Pointer {
				f.check("Alloc", size)
				return next.Alloc(size)
			},
			Realloc: func(p unsafe.Pointer, size uintptr) unsafe.Pointer {
				f.check("Realloc", size)
				return next.Realloc(p, size)
			},
			Free: next.Free,
		}
	})
}

func (f *FaultInjector) check(op string, size uintptr) {
	f.calls++
	if f.calls == f.FailNth || (f.FailAbove != 0 && size > f.FailAbove) {
		f.failures++
		panic(zmm.LimitError(op, f.heap.Limit(), size))
	}
}

// Detach stops injecting faults and puts back the heap's previous handlers.
func (f *FaultInjector) Detach() { f.detach() }

// Allocations returns how many allocations the injector has seen since
// Attach, failed ones included.
func (f *FaultInjector) Allocations() int { return f.calls }

// Failures returns how many allocations it has failed since Attach.
func (f *FaultInjector) Failures() int { return f.failures }
