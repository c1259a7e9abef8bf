// Package storage says where a zmm heap's memory comes from: the analog of
// the Zend MM's zend_mm_storage. A Storage hands out chunk-aligned mappings
// (a heap's 2 MiB chunks and its huge blocks) and takes them back; a heap
// made with zmm.WithStorage asks it, instead of the OS, for every chunk and
// huge block.
//
// Three storages ship with the package:
//   - OS, the default: anonymous private mmap, as a heap without a storage
//     does. It grows until the heap's memory limit.
//   - Region (NewRegion): a fixed range of memory the caller mapped. Heaps
//     over it never grow past it; it gives pages back only if asked to. No
//     two open Regions cover the same memory; Close frees the range.
//   - Shared (NewMemfd, CreateShared): a region over a MAP_SHARED mapping of
//     a memfd or a file, which other processes map with AttachFile or
//     AttachShared and read and write by offset.
//
// Addresses are uintptrs: the memory a storage hands out is not Go memory,
// and an address a caller gives back may be wrong, so it stays an integer
// until it is checked. The bookkeeping of a Region lives in Go memory and
// holds no pointer into the memory it manages.
package storage

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// Storage provides a heap's chunks and huge mappings.
//
// Map returns size bytes whose address is a multiple of chunk.Size (2 MiB);
// size is a positive multiple of chunk.OSPageSize(). Unmap gives back a
// whole mapping that Map returned (after any Truncate or Extend, with its
// current size); an address that is not such a mapping must be reported as
// an error, not acted on. Map's error should name the storage: zmm puts it
// at the end of its out-of-memory message.
//
// A Storage may be used by several heaps at once, each from its own
// goroutine, so its methods must be safe for concurrent use.
type Storage interface {
	Map(size uintptr) (uintptr, error)
	Unmap(addr, size uintptr) error
	// String describes the storage for error messages and zmmstat.
	String() string
}

// Truncater is a Storage that can shrink a mapping in place, keeping
// [addr, addr+newSize). Sizes are multiples of chunk.OSPageSize().
type Truncater interface {
	Truncate(addr, oldSize, newSize uintptr) error
}

// Extender is a Storage that can grow a mapping in place: on success
// [addr, addr+newSize) is the mapping; it never moves. It fails when the
// memory after the mapping is taken.
type Extender interface {
	Extend(addr, oldSize, newSize uintptr) error
}

// Releaser is a Storage that can drop the contents of pages a heap holds
// but does not use (madvise), keeping them mapped. It acts on the whole OS
// pages inside [addr, addr+size) only.
type Releaser interface {
	Release(addr, size uintptr)
}

// ErrFull is what the errors of a Region's Map and Extend are (errors.Is)
// when the region has no room. Their messages name the region.
var ErrFull = errors.New("storage: no room")

// ErrOverlap is what NewRegion's error is (errors.Is) when the range
// overlaps a Region that is still open or memory a zmm heap holds. The
// message names both.
var ErrOverlap = errors.New("storage: memory in use by zmm")

// ErrGoMemory is what NewRegion's error is (errors.Is) when the range is Go
// heap memory (a []byte from make, for example).
var ErrGoMemory = errors.New("storage: Go heap memory")

// ErrInUse is what a Region's Close returns (errors.Is) while heaps still
// hold mappings of it.
var ErrInUse = errors.New("storage: region in use")

// ErrClosed is what a closed Region's Map returns (errors.Is).
var ErrClosed = errors.New("storage: region closed")

// kindError is an error with its own message that errors.Is matches to one
// of the sentinels above.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

func errorOf(kind error, format string, args ...any) error {
	return &kindError{fmt.Sprintf(format, args...), kind}
}

// full is a no-room error. Its message does not start with "storage:":
// zmm puts it at the end of its out-of-memory message.
func full(format string, args ...any) error { return errorOf(ErrFull, format, args...) }

// OSStorage is the default storage: anonymous, private mappings from the
// OS (chunk.Map), aligned to 2 MiB. It can truncate, extend in place and
// release; a heap over it behaves exactly as a heap made without a
// storage, which is what zmm.WithStorage(storage.OS) makes.
type OSStorage struct{}

// OS is the default storage.
var OS OSStorage

// Map maps size bytes aligned to chunk.Size.
func (OSStorage) Map(size uintptr) (uintptr, error) {
	p, err := chunk.Map(size, chunk.Size)
	return uintptr(p), err
}

// Unmap unmaps [addr, addr+size).
func (OSStorage) Unmap(addr, size uintptr) error { return chunk.Unmap(ptr(addr), size) }

// Truncate unmaps the tail of a mapping.
func (OSStorage) Truncate(addr, oldSize, newSize uintptr) error {
	return chunk.Truncate(ptr(addr), oldSize, newSize)
}

// Extend grows a mapping in place (mremap without MREMAP_MAYMOVE).
func (OSStorage) Extend(addr, oldSize, newSize uintptr) error {
	return chunk.Extend(ptr(addr), oldSize, newSize)
}

// Release drops the contents of the whole OS pages inside the range
// (MADV_DONTNEED).
func (OSStorage) Release(addr, size uintptr) { chunk.Release(ptr(addr), size) }

func (OSStorage) String() string { return "os" }

// ptr turns an address of mapped memory into a pointer (see DESIGN.md,
// off-heap rules).
func ptr(addr uintptr) unsafe.Pointer { return unsafe.Add(nil, addr) }

// unsafeBytes is the n bytes of mapped memory at addr.
func unsafeBytes(addr, n uintptr) []byte { return unsafe.Slice((*byte)(ptr(addr)), n) }

// formatSize writes a byte count the way people size regions: in whole
// GiB, MiB or KiB when it is one, in bytes otherwise.
func formatSize(n uintptr) string {
	switch {
	case n >= 1<<30 && n&(1<<30-1) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n&(1<<20-1) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n&(1<<10-1) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// checkSize validates a size given to Map, Truncate or Extend.
func checkSize(op string, size uintptr) error {
	if ps := chunk.OSPageSize(); size == 0 || size&(ps-1) != 0 {
		return fmt.Errorf("storage: %s: size %d is not a positive multiple of the OS page size %d", op, size, ps)
	}
	return nil
}
