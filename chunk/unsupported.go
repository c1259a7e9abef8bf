//go:build !(linux && (amd64 || arm64))

// zmm runs only on linux/amd64 and linux/arm64: it relies on Linux's mmap,
// mremap and madvise semantics and on a 48-bit user address space (the frame
// table). On any other platform this file makes the build fail on purpose,
// with an error that names the undefined identifier below, for example:
//
//	chunk/unsupported.go:17:9: undefined: zmm_supports_only_linux_amd64_and_linux_arm64
//
// The stubs below only declare the OS layer of os_linux.go, so that the rest
// of the package type-checks and the identifier is the only error reported.

package chunk

import "unsafe"

var _ = zmm_supports_only_linux_amd64_and_linux_arm64

func OSPageSize() uintptr                                       { panic("unsupported") }
func HugePages() bool                                           { panic("unsupported") }
func Map(size, align uintptr) (unsafe.Pointer, error)           { panic("unsupported") }
func Unmap(p unsafe.Pointer, size uintptr) error                { panic("unsupported") }
func Release(p unsafe.Pointer, size uintptr) uintptr            { panic("unsupported") }
func Truncate(p unsafe.Pointer, oldSize, newSize uintptr) error { panic("unsupported") }
func Extend(p unsafe.Pointer, oldSize, newSize uintptr) error   { panic("unsupported") }
func Move(p unsafe.Pointer, oldSize, newSize, align uintptr) (unsafe.Pointer, error) {
	panic("unsupported")
}
func Protect(p unsafe.Pointer, size uintptr) error { panic("unsupported") }
