package storage

import _ "unsafe" // for go:linkname

// A Region over Go heap memory would be written by heaps the garbage
// collector cannot see, and freed or reused by the collector under them.
// The runtime alone knows which addresses are its heap: it keeps, for every
// 8 KiB page of its arenas that ever held a span, a pointer to that span.
// reflect.verifyNotInHeapPtr reads that table (spanOf(p) == nil, plus a
// check for the compiler's clobber-dead pattern); the runtime defines it
// under reflect's name with a push linkname (runtime/mbitmap.go), which is
// what lets the linker's -checklinkname accept this pull. It is a few loads,
// never faults and never throws, whatever the address: unlike
// runtime.findObject, which throws on an address inside a free span.
//
// It answers true for mmap'd memory, globals (the data and bss segments)
// and unmapped addresses, and false for every page of a Go allocation,
// live or freed, goroutine stacks included: a page once in the heap stays
// in the table.
//
// Checked (Go 1.26): it links by default, with -race, with
// GOEXPERIMENT=cgocheck2, for linux/arm64 and darwin/arm64, and go vet is
// silent. Should a Go release rename it, the build fails at link time
// ("relocation target reflect.verifyNotInHeapPtr not defined"), never
// silently.
//
//go:linkname verifyNotInHeapPtr reflect.verifyNotInHeapPtr
func verifyNotInHeapPtr(p uintptr) bool

// inGoHeap reports whether addr is in the Go heap: in a page of the
// runtime's arenas that holds or held a Go allocation or a goroutine stack.
func inGoHeap(addr uintptr) bool { return !verifyNotInHeapPtr(addr) }
