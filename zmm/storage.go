package zmm

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
	"github.com/gozmm/zmm/storage"
)

// Every mapping of a heap's chunks and huge blocks goes through the helpers
// in this file, so that a heap made WithStorage asks its storage and any
// other heap the OS, exactly as before storages existed (the huge table's
// own array and guard-mode blocks always come from the OS).
//
// The heap state lives in mapped memory and holds only integers, so it
// cannot hold the Storage interface: it holds a flag (hasStorage), and the
// storage sits in a process-wide registry under the heap's id until Close.
// A heap without a storage never looks at the registry.

// storages maps a heap id (uint32) to the storage.Storage of a heap made
// WithStorage.
var storages sync.Map

// store returns the heap's storage from the registry.
func (s *heapState) store() storage.Storage {
	st, ok := storages.Load(s.id)
	if !ok {
		fail(ErrCorrupted, "storage", 0, "zmm: heap %d is marked as made WithStorage but has no storage registered (heap state overwritten?)", s.id)
	}
	return st.(storage.Storage)
}

// mapMain maps a new heap's main chunk from st, or from the OS if st is
// nil. New reports its error as the Zend MM's "Can't initialize heap".
func mapMain(st storage.Storage) (unsafe.Pointer, error) {
	if st == nil {
		base, err := chunk.Map(chunk.Size, chunk.Size)
		if err != nil {
			return nil, err
		}
		if !frames.Addressable(uintptr(base), chunk.Size) {
			_ = chunk.Unmap(base, chunk.Size)
			return nil, fmt.Errorf("address beyond 2^%d", frames.AddressBits)
		}
		return base, nil
	}
	addr, err := mapFrom(st, chunk.Size)
	if err != nil {
		return nil, err
	}
	return ptr(addr), nil
}

// mapFrom maps size bytes from st and checks what st returned: an
// unaligned address or one beyond the frame table is given back and
// reported. Errors name the storage.
func mapFrom(st storage.Storage, size uintptr) (uintptr, error) {
	addr, err := st.Map(size)
	if err != nil {
		return 0, storageError(st, err)
	}
	if addr&(chunk.Size-1) != 0 || !frames.Addressable(addr, size) {
		_ = st.Unmap(addr, size)
		return 0, fmt.Errorf("%v handed out %#x+%d, which is not 2 MiB-aligned below 2^%d", st, addr, size, frames.AddressBits)
	}
	return addr, nil
}

// storageError makes sure an error of st names it.
func storageError(st storage.Storage, err error) error {
	if name := st.String(); !strings.Contains(err.Error(), name) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return err
}

// mapChunks maps size bytes aligned to a chunk for a chunk or a huge
// block. From the OS, the caller checks frames.Addressable.
func (s *heapState) mapChunks(size uintptr) (uintptr, error) {
	if !s.hasStorage {
		p, err := chunk.Map(size, chunk.Size)
		return uintptr(p), err
	}
	return mapFrom(s.store(), size)
}

// oom reports that a mapping failed (the Zend MM's message). A heap over a
// storage says which storage and why.
func (s *heapState) oom(op string, tried uintptr, err error) {
	if !s.hasStorage {
		outOfMemory(op, s.realSize, tried)
	}
	fail(ErrOutOfMemory, op, 0, "Out of memory (allocated %d bytes) (tried to allocate %d bytes): %v", s.realSize, tried, err)
}

// unmapChunks gives back a mapping made by mapChunks (at its current
// size).
func (s *heapState) unmapChunks(addr, size uintptr) error {
	if !s.hasStorage {
		return chunk.Unmap(ptr(addr), size)
	}
	return s.store().Unmap(addr, size)
}

// errNoResize: the heap's storage cannot resize a mapping that way. The
// callers of the resize helpers fall back (copy or unmap) on any error.
var errNoResize error = sentinel("zmm: the storage cannot resize mappings this way")

// truncateChunks shrinks a mapping in place.
func (s *heapState) truncateChunks(addr, oldSize, newSize uintptr) error {
	if !s.hasStorage {
		return chunk.Truncate(ptr(addr), oldSize, newSize)
	}
	st := s.store()
	if t, ok := st.(storage.Truncater); ok {
		return t.Truncate(addr, oldSize, newSize)
	}
	return errNoResize
}

// extendChunks grows a mapping in place.
func (s *heapState) extendChunks(addr, oldSize, newSize uintptr) error {
	if !s.hasStorage {
		return chunk.Extend(ptr(addr), oldSize, newSize)
	}
	st := s.store()
	if e, ok := st.(storage.Extender); ok {
		return e.Extend(addr, oldSize, newSize)
	}
	return errNoResize
}

// moveChunks moves a mapping's pages to a new aligned mapping of newSize
// bytes without copying them (mremap). Only the OS can: a storage's memory
// is not anonymous memory of its own, so the caller copies instead.
func (s *heapState) moveChunks(addr, oldSize, newSize uintptr) (uintptr, error) {
	if s.hasStorage {
		return 0, errNoResize
	}
	q, err := chunk.Move(ptr(addr), oldSize, newSize, chunk.Size)
	return uintptr(q), err
}

// releasePages drops the contents of free pages in a live chunk, if the
// heap's storage can.
func (s *heapState) releasePages(addr, size uintptr) {
	if !s.hasStorage {
		chunk.Release(ptr(addr), size)
		return
	}
	if r, ok := s.store().(storage.Releaser); ok {
		r.Release(addr, size)
	}
}
