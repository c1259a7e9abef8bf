//go:build linux && (amd64 || arm64)

package chunk

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// osPageSize is the kernel's page size, read once: 4 KiB on amd64 and 4, 16
// or 64 KiB on arm64. Every length handed to mmap, munmap, mremap and madvise
// is a multiple of it.
var osPageSize = uintptr(unix.Getpagesize())

// vmaName is the NUL-terminated name given to every zmm mapping, so that it
// shows up as [anon:zmm] in /proc/<pid>/maps (Zend names its "zend_alloc").
var vmaName = [...]byte{'z', 'm', 'm', 0}

// namingFailed is set when the kernel refused to name a mapping (no
// CONFIG_ANON_VMA_NAME, before 5.17): it will refuse every time, so later
// mappings skip the call.
var namingFailed atomic.Bool

// hugePages is read once from the environment: ZMM_HUGE_PAGES=1 is the
// analog of USE_ZEND_ALLOC_HUGE_PAGES=1.
var hugePages = sync.OnceValue(func() bool {
	return os.Getenv("ZMM_HUGE_PAGES") == "1"
})

// OSPageSize returns the kernel's page size. It is never smaller than
// PageSize and never larger than Size.
func OSPageSize() uintptr { return osPageSize }

// HugePages reports whether the environment asked for transparent huge
// pages (ZMM_HUGE_PAGES=1). When it did, every mapping made by Map is advised
// with MADV_HUGEPAGE.
func HugePages() bool { return hugePages() }

// Map returns an anonymous, private, read/write mapping of size bytes whose
// address is a multiple of align. size must be a positive multiple of
// OSPageSize and align a power of two no smaller than OSPageSize.
//
// Like zend_mm_chunk_alloc_int it first maps exactly size bytes and keeps
// them if they happen to be aligned. Otherwise it unmaps them, maps
// size+align-OSPageSize bytes, which must contain an aligned range of size
// bytes, and unmaps the unaligned head and the excess tail. It never maps
// with MAP_FIXED. A size that is not a multiple of align skips the first
// try: Linux places a new mapping right below the previous one, so after an
// aligned mapping of such a size the next one is almost never aligned, and
// the try would cost an mmap and a munmap for nothing.
func Map(size, align uintptr) (unsafe.Pointer, error) {
	return mapAligned(size, align, HugePages())
}

func mapAligned(size, align uintptr, huge bool) (unsafe.Pointer, error) {
	ps := osPageSize
	if size == 0 || size&(ps-1) != 0 {
		return nil, fmt.Errorf("zmm: mmap size %d is not a positive multiple of the OS page size %d", size, ps)
	}
	if align < ps || align&(align-1) != 0 {
		return nil, fmt.Errorf("zmm: mmap alignment %#x is not a power of two of at least the OS page size %d", align, ps)
	}
	var p unsafe.Pointer
	var err error
	if size&(align-1) == 0 {
		if p, err = mmap(size); err != nil {
			return nil, err
		}
		if uintptr(p)&(align-1) != 0 {
			if err := munmap(p, size); err != nil {
				return nil, err
			}
			p = nil
		}
	}
	if p == nil {
		if p, err = mapAlignedSlow(size, align); err != nil {
			return nil, err
		}
	}
	// Naming fails on kernels without CONFIG_ANON_VMA_NAME (before 5.17):
	// the name is only a help for people reading /proc/<pid>/maps.
	if !namingFailed.Load() {
		if unix.PrctlArg5Ptr(unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, uintptr(p), size, unsafe.Pointer(&vmaName[0])) != nil {
			namingFailed.Store(true)
		}
	}
	if huge {
		// Fails when the kernel has no transparent huge pages: the advice
		// is an optimisation, not a requirement.
		_ = madvise(p, size, unix.MADV_HUGEPAGE)
	}
	return p, nil
}

// mapAlignedSlow maps size+align-OSPageSize bytes and trims them to the
// aligned range of size bytes inside.
func mapAlignedSlow(size, align uintptr) (unsafe.Pointer, error) {
	slack := align - osPageSize
	if size > ^uintptr(0)-slack {
		return nil, fmt.Errorf("zmm: mmap of %d bytes aligned to %#x overflows the address space", size, align)
	}
	p, err := mmap(size + slack)
	if err != nil {
		return nil, err
	}
	head := -uintptr(p) & (align - 1)
	tail := slack - head
	if head != 0 {
		if err := munmap(p, head); err != nil {
			_ = munmap(p, size+slack)
			return nil, err
		}
		p = unsafe.Add(p, head)
	}
	if tail != 0 {
		if err := munmap(unsafe.Add(p, size), tail); err != nil {
			_ = munmap(p, size+tail)
			return nil, err
		}
	}
	return p, nil
}

// Unmap unmaps [p, p+size). size is rounded up to the OS page by the kernel.
func Unmap(p unsafe.Pointer, size uintptr) error {
	return munmap(p, size)
}

// Release gives the physical memory behind the whole OS pages inside
// [p, p+size) back to the OS with MADV_DONTNEED and returns how many bytes
// that was. The start is rounded up and the end rounded down to the OS page,
// so with OS pages larger than zmm's 4 KiB page a short run may contain no
// whole OS page, and then nothing is released. The range stays mapped and
// reads back as zeros.
func Release(p unsafe.Pointer, size uintptr) (released uintptr) {
	ps := osPageSize
	head := -uintptr(p) & (ps - 1)
	if size <= head {
		return 0
	}
	n := (size - head) &^ (ps - 1)
	if n == 0 {
		return 0
	}
	if madvise(unsafe.Add(p, head), n, unix.MADV_DONTNEED) != nil {
		return 0
	}
	return n
}

// Truncate shrinks the mapping [p, p+oldSize) to [p, p+newSize) in place by
// unmapping its tail. Both sizes must be multiples of OSPageSize, and newSize
// must not exceed oldSize.
func Truncate(p unsafe.Pointer, oldSize, newSize uintptr) error {
	if err := checkResize("truncate", oldSize, newSize); err != nil {
		return err
	}
	if newSize > oldSize {
		return fmt.Errorf("zmm: cannot truncate mapping at %p from %d to %d bytes: that is growing", p, oldSize, newSize)
	}
	if newSize == oldSize {
		return nil
	}
	return munmap(unsafe.Add(p, newSize), oldSize-newSize)
}

// Extend grows the mapping [p, p+oldSize) to [p, p+newSize) without moving
// it (mremap without MREMAP_MAYMOVE). It fails when the address range after
// the mapping is taken. Both sizes must be multiples of OSPageSize, and
// newSize must not be smaller than oldSize.
func Extend(p unsafe.Pointer, oldSize, newSize uintptr) error {
	if err := checkResize("extend", oldSize, newSize); err != nil {
		return err
	}
	if newSize < oldSize {
		return fmt.Errorf("zmm: cannot extend mapping at %p from %d to %d bytes: that is shrinking", p, oldSize, newSize)
	}
	if newSize == oldSize {
		return nil
	}
	q, err := unix.MremapPtr(p, oldSize, nil, newSize, 0)
	if err != nil {
		return fmt.Errorf("zmm: mremap of %d bytes at %p to %d bytes in place failed: %w", oldSize, p, newSize, err)
	}
	if q != p {
		// The kernel never moves a mapping without MREMAP_MAYMOVE.
		panic(fmt.Sprintf("zmm: mremap without MREMAP_MAYMOVE moved %p to %p", p, q))
	}
	return nil
}

// Move grows (or shrinks) the mapping [p, p+oldSize) to newSize bytes at a
// new address aligned to align, moving its pages rather than copying bytes:
// it reserves an aligned range with Map and then mremaps the old pages over
// it with MREMAP_MAYMOVE|MREMAP_FIXED. On success the old range is gone. On
// failure the reservation is unmapped and the old mapping is untouched.
func Move(p unsafe.Pointer, oldSize, newSize, align uintptr) (unsafe.Pointer, error) {
	if err := checkResize("move", oldSize, newSize); err != nil {
		return nil, err
	}
	dst, err := Map(newSize, align)
	if err != nil {
		return nil, err
	}
	q, err := unix.MremapPtr(p, oldSize, dst, newSize, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED)
	if err != nil {
		_ = munmap(dst, newSize)
		return nil, fmt.Errorf("zmm: mremap of %d bytes at %p to %d bytes at %p failed: %w", oldSize, p, newSize, dst, err)
	}
	if q != dst {
		panic(fmt.Sprintf("zmm: mremap with MREMAP_FIXED to %p returned %p", dst, q))
	}
	return dst, nil
}

func checkResize(op string, oldSize, newSize uintptr) error {
	ps := osPageSize
	if oldSize == 0 || newSize == 0 || oldSize&(ps-1) != 0 || newSize&(ps-1) != 0 {
		return fmt.Errorf("zmm: cannot %s mapping from %d to %d bytes: sizes must be positive multiples of the OS page size %d", op, oldSize, newSize, ps)
	}
	return nil
}

func mmap(size uintptr) (unsafe.Pointer, error) {
	p, err := unix.MmapPtr(-1, 0, nil, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("zmm: mmap of %d bytes failed: %w", size, err)
	}
	return p, nil
}

func munmap(p unsafe.Pointer, size uintptr) error {
	if err := unix.MunmapPtr(p, size); err != nil {
		return fmt.Errorf("zmm: munmap of %d bytes at %p failed: %w", size, p, err)
	}
	return nil
}

func madvise(p unsafe.Pointer, size uintptr, advice int) error {
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(p), size, uintptr(advice))
	if errno != 0 {
		return fmt.Errorf("zmm: madvise(%d) of %d bytes at %p failed: %w", advice, size, p, errno)
	}
	return nil
}

// Protect makes [p, p+size) inaccessible (PROT_NONE): any access faults.
// Guard mode puts such a page right after each block. size and p must be
// OS-page aligned.
func Protect(p unsafe.Pointer, size uintptr) error {
	if err := unix.Mprotect(unsafe.Slice((*byte)(p), size), unix.PROT_NONE); err != nil {
		return fmt.Errorf("zmm: mprotect of %d bytes at %p failed: %w", size, p, err)
	}
	return nil
}
