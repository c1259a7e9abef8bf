package zmm

import (
	"sync"
	"unsafe"
)

// The package-level functions serve two process-wide shared allocators
// (NewShared), made on first use, so they are safe from any goroutine and
// a block may be freed by another goroutine than the one that allocated
// it:
//   - the default allocator, for request memory (emalloc and friends),
//     which Reset releases at once;
//   - the persistent allocator (pemalloc with persistent = 1), which Reset
//     does not touch: memory that must outlive a request.
//
// Both honour ZMM_DEBUG and ZMM_ALLOC as New does (debug mode makes them
// serial: see Shared). Code that owns a goroutine's work may prefer a Heap
// of its own (New): its calls need not find their P's heap.

type globalAllocator struct {
	once sync.Once
	a    *Shared
	err  error
}

var defaultAlloc, persistentAlloc globalAllocator

// get returns the allocator, made on the first call; a configuration
// error (a bad ZMM_DEBUG, say) panics on every call.
func (g *globalAllocator) get() *Shared {
	g.once.Do(func() { g.a, g.err = NewShared() })
	if g.err != nil {
		panic(g.err)
	}
	return g.a
}

// Alloc allocates from the default allocator (emalloc).
func Alloc(size uintptr) unsafe.Pointer {
	return defaultAlloc.get().Alloc(size)
}

// Calloc allocates a zeroed, overflow-checked n*size block from the
// default allocator (ecalloc).
func Calloc(n, size uintptr) unsafe.Pointer {
	return defaultAlloc.get().Calloc(n, size)
}

// SafeAlloc allocates n*size+offset bytes, checked, from the default allocator
// (safe_emalloc).
func SafeAlloc(n, size, offset uintptr) unsafe.Pointer {
	return defaultAlloc.get().SafeAlloc(n, size, offset)
}

// Realloc resizes a block of the default allocator (erealloc).
func Realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	return defaultAlloc.get().Realloc(p, size)
}

// Free frees a block of the default allocator (efree).
func Free(p unsafe.Pointer) {
	defaultAlloc.get().Free(p)
}

// Strdup copies s, NUL-terminated, into the default allocator (estrdup).
func Strdup(s string) unsafe.Pointer {
	return defaultAlloc.get().Strdup(s)
}

// Strndup copies at most n bytes of s, NUL-terminated, into the default
// heap (estrndup).
func Strndup(s string, n uintptr) unsafe.Pointer {
	return defaultAlloc.get().Strndup(s, n)
}

// BlockSize returns the usable size of a block of the default allocator.
func BlockSize(p unsafe.Pointer) uintptr {
	return defaultAlloc.get().BlockSize(p)
}

// Reset ends a request on the default allocator: every block of it is
// released (see Shared.Reset). The persistent allocator is untouched.
func Reset() {
	defaultAlloc.get().Reset()
}

// GC collects the default and the persistent allocator (gc_mem_caches)
// and returns the bytes given back.
func GC() uintptr {
	return defaultAlloc.get().GC() + persistentAlloc.get().GC()
}

// SetLimit sets the memory limit of the default allocator (memory_limit).
func SetLimit(limit uintptr) error {
	return defaultAlloc.get().SetLimit(limit)
}

// ReadStats returns the statistics of the default allocator.
func ReadStats() Stats {
	return defaultAlloc.get().Stats()
}

// PAlloc allocates persistent memory (pemalloc(size, 1)): it survives Reset.
func PAlloc(size uintptr) unsafe.Pointer {
	return persistentAlloc.get().Alloc(size)
}

// PCalloc allocates zeroed persistent memory (pecalloc).
func PCalloc(n, size uintptr) unsafe.Pointer {
	return persistentAlloc.get().Calloc(n, size)
}

// PRealloc resizes persistent memory (perealloc).
func PRealloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	return persistentAlloc.get().Realloc(p, size)
}

// PFree frees persistent memory (pefree).
func PFree(p unsafe.Pointer) {
	persistentAlloc.get().Free(p)
}

// PStrdup copies s, NUL-terminated, into persistent memory (pestrdup).
func PStrdup(s string) unsafe.Pointer {
	return persistentAlloc.get().Strdup(s)
}

// ReadPersistentStats returns the statistics of the persistent allocator.
func ReadPersistentStats() Stats {
	return persistentAlloc.get().Stats()
}

// DefaultSnapshot takes a snapshot of the default allocator (see
// Shared.Snapshot).
func DefaultSnapshot() *Snapshot {
	s := defaultAlloc.get().Snapshot()
	s.Name = "default"
	return s
}

// PersistentSnapshot takes a snapshot of the persistent allocator.
func PersistentSnapshot() *Snapshot {
	s := persistentAlloc.get().Snapshot()
	s.Name = "persistent"
	return s
}
