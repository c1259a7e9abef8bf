// Package hooks ships ready-made custom handlers for zmm heaps (see
// zmm.Heap.SetHandlers, the analog of zend_mm_set_custom_handlers): a
// Tracer that records a heap's traffic as an allocation trace that bench/
// replays against every allocator, a FaultInjector that fails chosen
// allocations the way the memory limit does, and a Counter that keeps
// per-component statistics.
//
// Each of them attaches to one heap at a time. The hooks attached to a heap
// form a chain: the heap calls the last one attached, which passes each
// call on to the one attached before it, down to the handlers the heap had
// before the first hook (the heap's own code, or handlers installed with
// SetHandlers). So they stack: attach a Counter, then a Tracer, and both
// see every call. A hook detaches in any order: Detach (or Tracer.Close)
// takes it out of the chain wherever it stands, and the hooks above and
// below it carry on; once the last one is gone, the heap has the handlers
// it had before the first hook, or, if it had none, none at all and its
// fast paths back. While hooks are attached, leave the heap's handlers to
// them: SetHandlers or RestoreHandlers in between would be overwritten at
// the next Attach or Detach.
//
// Like the heap, hooks are used by the heap's owner goroutine only, but for
// the read-only accessors noted as safe for concurrent use.
package hooks
