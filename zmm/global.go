package zmm

import (
	"sync"
	"unsafe"
)

// The package-level functions serve two process-wide heaps, each behind its
// own mutex, so they are safe for concurrent use:
//   - the default heap, for request memory (emalloc and friends), which
//     Reset releases at once;
//   - the persistent heap (pemalloc with persistent = 1), which Reset does
//     not touch: memory that must outlive a request.
//
// Code that owns a goroutine's work should prefer a Heap of its own (New):
// it needs no lock.

type lockedHeap struct {
	mu sync.Mutex
	h  *Heap
}

var defaultHeap, persistentHeap lockedHeap

func (l *lockedHeap) lock() *Heap {
	l.mu.Lock()
	if l.h == nil {
		h, err := New()
		if err != nil {
			l.mu.Unlock()
			panic(err)
		}
		l.h = h
	}
	return l.h
}

// Alloc allocates from the default heap (emalloc).
func Alloc(size uintptr) unsafe.Pointer {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.Alloc(size)
}

// Calloc allocates a zeroed, overflow-checked n*size block from the
// default heap (ecalloc).
func Calloc(n, size uintptr) unsafe.Pointer {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.Calloc(n, size)
}

// SafeAlloc allocates n*size+offset bytes, checked, from the default heap
// (safe_emalloc).
func SafeAlloc(n, size, offset uintptr) unsafe.Pointer {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.SafeAlloc(n, size, offset)
}

// Realloc resizes a block of the default heap (erealloc).
func Realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.Realloc(p, size)
}

// Free frees a block of the default heap (efree).
func Free(p unsafe.Pointer) {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	h.Free(p)
}

// Strdup copies s, NUL-terminated, into the default heap (estrdup).
func Strdup(s string) unsafe.Pointer {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.Strdup(s)
}

// Strndup copies at most n bytes of s, NUL-terminated, into the default
// heap (estrndup).
func Strndup(s string, n uintptr) unsafe.Pointer {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.Strndup(s, n)
}

// BlockSize returns the usable size of a block of the default heap.
func BlockSize(p unsafe.Pointer) uintptr {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.BlockSize(p)
}

// Reset ends a request on the default heap: every block of it is released.
// The persistent heap is untouched.
func Reset() {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	h.Reset()
}

// GC collects the default and the persistent heap (gc_mem_caches) and
// returns the bytes given back.
func GC() uintptr {
	n := func() uintptr {
		h := defaultHeap.lock()
		defer defaultHeap.mu.Unlock()
		return h.GC()
	}()
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	return n + h.GC()
}

// SetLimit sets the memory limit of the default heap (memory_limit).
func SetLimit(limit uintptr) error {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.SetLimit(limit)
}

// ReadStats returns the statistics of the default heap.
func ReadStats() Stats {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	return h.Stats()
}

// PAlloc allocates persistent memory (pemalloc(size, 1)): it survives Reset.
func PAlloc(size uintptr) unsafe.Pointer {
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	return h.Alloc(size)
}

// PCalloc allocates zeroed persistent memory (pecalloc).
func PCalloc(n, size uintptr) unsafe.Pointer {
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	return h.Calloc(n, size)
}

// PRealloc resizes persistent memory (perealloc).
func PRealloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	return h.Realloc(p, size)
}

// PFree frees persistent memory (pefree).
func PFree(p unsafe.Pointer) {
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	h.Free(p)
}

// PStrdup copies s, NUL-terminated, into persistent memory (pestrdup).
func PStrdup(s string) unsafe.Pointer {
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	return h.Strdup(s)
}

// ReadPersistentStats returns the statistics of the persistent heap.
func ReadPersistentStats() Stats {
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	return h.Stats()
}

// DefaultSnapshot takes a snapshot of the default heap under its lock.
func DefaultSnapshot() *Snapshot {
	h := defaultHeap.lock()
	defer defaultHeap.mu.Unlock()
	s := h.Snapshot()
	s.Name = "default"
	return s
}

// PersistentSnapshot takes a snapshot of the persistent heap under its lock.
func PersistentSnapshot() *Snapshot {
	h := persistentHeap.lock()
	defer persistentHeap.mu.Unlock()
	s := h.Snapshot()
	s.Name = "persistent"
	return s
}
