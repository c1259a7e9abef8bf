package zmm

import (
	"fmt"
)

// sentinel is the type of the Err* values: a constant message.
type sentinel string

func (e sentinel) Error() string { return string(e) }

// Sentinel errors. Every *Error wraps exactly one of them, so callers test
// the kind of failure with errors.Is.
var (
	// ErrMemoryLimit: the heap's memory limit would be exceeded.
	ErrMemoryLimit error = sentinel("zmm: memory limit exhausted")
	// ErrOutOfMemory: the OS, or the heap's storage (WithStorage), refused
	// to map memory; for a storage, the message ends with its reason.
	ErrOutOfMemory error = sentinel("zmm: out of memory")
	// ErrOverflow: a size computation (n*size+offset, rounding) wraps.
	ErrOverflow error = sentinel("zmm: integer overflow in allocation size")
	// ErrInvalidPointer: a pointer this heap did not hand out, or a pointer
	// inside a block rather than at its start.
	ErrInvalidPointer error = sentinel("zmm: invalid pointer")
	// ErrWrongHeap: a block of another heap was handed to this one.
	ErrWrongHeap error = sentinel("zmm: block belongs to another heap")
	// ErrDoubleFree: a block that is already free was freed or used again.
	ErrDoubleFree error = sentinel("zmm: double free")
	// ErrCorrupted: the heap's own bookkeeping was overwritten, typically by
	// a write past the end of a block or after a free.
	ErrCorrupted error = sentinel("zmm: heap corrupted")
	// ErrClosed: the heap was used after Close.
	ErrClosed error = sentinel("zmm: heap is closed")
	// ErrConcurrentUse: two goroutines used a single-owner heap at once
	// (detected on the slow paths: see Heap).
	ErrConcurrentUse error = sentinel("zmm: concurrent use of a single-owner heap")
	// ErrConfig: a heap cannot be made as configured: an environment
	// variable (ZMM_DEBUG, ZMM_ALLOC, ZMM_GUARD_ALIGN) with a value zmm does not
	// accept, or options that do not go together.
	ErrConfig error = sentinel("zmm: invalid heap configuration")
	// ErrGoPointer: a typed helper (AllocOf, MakeSlice, GrowSlice) was
	// given a type that holds Go pointers, which must not live in zmm
	// memory.
	ErrGoPointer error = sentinel("zmm: type holds Go pointers")
)

// Error is the error zmm panics with when an allocation cannot be served
// or a call is given a bad pointer: the Zend MM "bails out" in the same
// places. Use Try to turn the panic back into an error value.
type Error struct {
	// Kind is one of the Err* sentinels.
	Kind error
	// Op is the operation that failed: "Alloc", "Free", "Realloc", ...
	Op string
	// Ptr is the pointer the operation was given, when there is one.
	Ptr uintptr
	// Msg is the full message. For the memory limit, out of memory and
	// overflow it is the Zend MM's message, word for word.
	Msg string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the sentinel, so errors.Is(err, zmm.ErrMemoryLimit) works.
func (e *Error) Unwrap() error { return e.Kind }

// Try runs f and returns the *Error that f panicked with, or nil (the
// analog of zend_try). Panics that are not a *Error propagate unchanged.
func Try(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if ze, ok := r.(*Error); ok {
				err = ze
				return
			}
			panic(r)
		}
	}()
	f()
	return nil
}

// fail panics with a *Error. It is kept out of line so that the callers'
// fast paths stay small.
//
//go:noinline
func fail(kind error, op string, ptr uintptr, format string, args ...any) {
	panic(&Error{Kind: kind, Op: op, Ptr: ptr, Msg: fmt.Sprintf(format, args...)})
}

func limitError(op string, limit, tried uintptr) {
	panic(LimitError(op, limit, tried))
}

func outOfMemory(op string, allocated, tried uintptr) {
	fail(ErrOutOfMemory, op, 0, "Out of memory (allocated %d bytes) (tried to allocate %d bytes)", allocated, tried)
}

func overflowError(op string, n, size, offset uintptr) {
	fail(ErrOverflow, op, 0, "Possible integer overflow in memory allocation (%d * %d + %d)", n, size, offset)
}

// LimitError returns the error a heap panics with when its memory limit
// stops an allocation of size bytes (Zend's "Allowed memory size of N bytes
// exhausted (tried to allocate M bytes)"), for code that must fail the way
// the heap does: fault injectors, wrappers with limits of their own.
func LimitError(op string, limit, size uintptr) *Error {
	return &Error{Kind: ErrMemoryLimit, Op: op,
		Msg: fmt.Sprintf("Allowed memory size of %d bytes exhausted (tried to allocate %d bytes)", limit, size)}
}

// failedLimitMsg is Zend's message for a limit that cannot be set.
func failedLimitMsg(limit, usage uintptr) string {
	return fmt.Sprintf("Failed to set memory limit to %d bytes (Current memory usage is %d bytes)", limit, usage)
}
