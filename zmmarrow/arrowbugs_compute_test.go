//go:build arrowcompute

package zmmarrow_test

// This file needs arrow-go's compute package, whose build takes about a
// minute on two cores, for every build configuration CI tests zmmarrow in
// (plain, race, cgocheck2, arm64); so it builds only with the arrowcompute
// tag, and CI runs it once: go test -tags arrowcompute -run ArrowBug .

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/compute/exec"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmmarrow"
)

// Four string-cast kernels of arrow-go's compute (numericToStringCastExec,
// boolToStringCastExec, timeToStringCastExec, castTimestampToString) leak
// in two ways. Each builds the result in an array, hands its data to the
// output with TakeOwnership, which retains the buffers, and never releases
// the array. And they are registered with exec.NullComputedNoPrealloc but
// the default exec.MemPrealloc, so the executor allocates the output's
// offsets (or views) buffer first, which TakeOwnership then replaces
// without releasing it. Adding `defer arr.Release()` to the kernels and
// `k.MemAlloc = exec.MemNoPrealloc` to their registration (as the
// binary-to-string kernels have) leaves nothing behind; either alone does
// not.
func TestArrowBugStringCastsLeak(t *testing.T) {
	for _, c := range []struct {
		kernel string
		build  func(memory.Allocator) arrow.Array
		to     arrow.DataType
		blocks int // each of Arrow's 64-byte minimum
	}{
		{"numericToStringCastExec", int32s, arrow.BinaryTypes.String, 4},
		{"numericToStringCastExec", int32s, arrow.BinaryTypes.StringView, 3},
		{"boolToStringCastExec", func(mem memory.Allocator) arrow.Array {
			b := array.NewBooleanBuilder(mem)
			defer b.Release()
			b.AppendValues([]bool{true, false}, nil)
			return b.NewArray()
		}, arrow.BinaryTypes.String, 4},
		{"timeToStringCastExec", func(mem memory.Allocator) arrow.Array {
			b := array.NewTime32Builder(mem, &arrow.Time32Type{Unit: arrow.Second})
			defer b.Release()
			b.AppendValues([]arrow.Time32{1, 2}, nil)
			return b.NewArray()
		}, arrow.BinaryTypes.String, 4},
		{"castTimestampToString", func(mem memory.Allocator) arrow.Array {
			b := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Second})
			defer b.Release()
			b.AppendValues([]arrow.Timestamp{1, 2}, nil)
			return b.NewArray()
		}, arrow.BinaryTypes.String, 4},
	} {
		t.Run(c.kernel+" to "+c.to.String(), func(t *testing.T) {
			h := debugHeap(t)
			mem := zmmarrow.New(h)
			in := c.build(mem)
			out, err := compute.CastArray(exec.WithAllocator(context.Background(), mem), in, compute.SafeCastOptions(c.to))
			require.NoError(t, err)
			assert.Equal(t, 2, out.Len())
			in.Release()
			out.Release() // everything the test holds is released

			leaks := h.Leaks()
			require.Len(t, leaks, c.blocks, "what is left: %v", leaks)
			prealloc, inKernel := 0, false
			for _, l := range leaks {
				assert.Equal(t, uintptr(64), l.Size-zmmarrow.Overhead, "zmm's sizes include zmmarrow's overhead")
				switch {
				case strings.HasSuffix(l.Site.Function, "exec.(*KernelCtx).Allocate"):
					prealloc++ // the executor's output buffer
				case assert.True(t, strings.HasSuffix(l.Site.File, "/compute/internal/kernels/string_casts.go"),
					"the site is the kernel's line: %s (%s)", l.Site, l.Site.Function):
					inKernel = inKernel || strings.Contains(l.Site.Function, c.kernel)
				}
			}
			assert.Equal(t, 1, prealloc, "the preallocated output buffer")
			assert.True(t, inKernel, "a site in %s", c.kernel)
		})
	}
}

func int32s(mem memory.Allocator) arrow.Array {
	b := array.NewInt32Builder(mem)
	defer b.Release()
	b.AppendValues([]int32{1, 2}, nil)
	return b.NewArray()
}

// Arrow's checked allocator sees the same 256 bytes, in the tests that wrap
// their allocator in one and assert its size; arrow-go's cast tests do not.
func TestArrowBugStringCastsLeakCheckedAllocator(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	in := int32s(mem)
	out, err := compute.CastArray(exec.WithAllocator(context.Background(), mem), in, compute.SafeCastOptions(arrow.BinaryTypes.String))
	require.NoError(t, err)
	in.Release()
	out.Release()
	assert.Equal(t, 256, mem.CurrentAlloc())
}
