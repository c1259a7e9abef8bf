package zmmarrow_test

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

// A debug heap shows what Arrow's own allocator hides: a read after
// Release sees the free fill instead of the old bytes, and a buffer never
// released is listed with the line that allocated it.
func Example_debugHeap() {
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(nil))
	if err != nil {
		panic(err)
	}
	defer h.Close()
	mem := zmmarrow.New(h)

	b := array.NewStringBuilder(mem)
	defer b.Release()
	b.Append("kept")
	arr := b.NewStringArray()
	s := arr.Value(0) // shares arr's buffer, no copy
	arr.Release()
	fmt.Printf("read after Release: %q\n", s) // "kept" on memory.GoAllocator

	ib := array.NewInt64Builder(mem)
	defer ib.Release()
	ib.AppendValues([]int64{1, 2, 3}, nil)
	_ = ib.NewInt64Array() // never released
	leaks := h.Leaks()
	slices.SortFunc(leaks, func(a, b zmm.Leak) int { return a.Site.Line - b.Site.Line })
	for _, l := range leaks {
		fmt.Printf("leak: %d bytes allocated at %s:%d\n",
			l.Size-zmmarrow.Overhead, filepath.Base(l.Site.File), l.Site.Line)
	}
	// Output:
	// read after Release: "\xdf\xdf\xdf\xdf"
	// leak: 64 bytes allocated at example_debug_test.go:35
	// leak: 64 bytes allocated at example_debug_test.go:36
}
