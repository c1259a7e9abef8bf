// Package wraptest is a package that wraps zmm, for the tests of
// zmm.MarkHelperPackage: its functions must not be reported as sites.
package wraptest

import (
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

func init() { zmm.MarkHelperPackage("github.com/gozmm/zmm/zmm/internal/wraptest") }

// Alloc allocates through a wrapper, as an adapter does.
func Alloc(h *zmm.Heap, n uintptr) unsafe.Pointer { return allocDeeper(h, n) }

//go:noinline
func allocDeeper(h *zmm.Heap, n uintptr) unsafe.Pointer { return h.Alloc(n) }
