package arrowtests

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

func newHeap(t *testing.T, mode string) *zmm.Shared {
	t.Helper()
	opts, err := options(mode)
	require.NoError(t, err)
	h, err := zmm.NewShared(opts...)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

func TestOptionsRejectsUnknownMode(t *testing.T) {
	_, err := options("fast")
	require.Error(t, err)
	assert.Contains(t, err.Error(), ModeEnv)
	assert.Contains(t, err.Error(), `"fast"`)
	for _, m := range Modes {
		_, err := options(m)
		assert.NoError(t, err, m)
	}
}

// leak allocates three buffers on mem, two at one line and one at
// another, and frees none.
func leak(mem *zmmarrow.Allocator) {
	for range 2 {
		mem.Allocate(100)
	}
	mem.Allocate(1000)
}

func TestReportTracksLeaksBySite(t *testing.T) {
	for _, mode := range []string{"debug", "guard"} {
		t.Run(mode, func(t *testing.T) {
			h := newHeap(t, mode)
			leak(zmmarrow.NewShared(h))
			r := report(h, mode)
			assert.Equal(t, mode, r.Mode)
			assert.Empty(t, r.Check)
			assert.True(t, r.Tracked)
			assert.Equal(t, 3, r.LiveBlocks)
			assert.Equal(t, uint64(1200), r.LiveBytes, "Arrow's buffer sizes, without zmmarrow's alignment pad")
			require.Len(t, r.Sites, 2)
			assert.Equal(t, SiteTotal{Site: r.Sites[0].Site, Function: r.Sites[0].Function, Blocks: 1, Bytes: 1000}, r.Sites[0])
			assert.Equal(t, SiteTotal{Site: r.Sites[1].Site, Function: r.Sites[1].Function, Blocks: 2, Bytes: 200}, r.Sites[1])
			for _, s := range r.Sites {
				assert.Contains(t, s.Function, ".leak", "the site is the caller of the allocator")
				assert.Contains(t, s.Site, "arrowtests_test.go:")
			}
		})
	}
}

func TestReportOnNormalHeapCountsUsage(t *testing.T) {
	h := newHeap(t, "normal")
	leak(zmmarrow.NewShared(h))
	r := report(h, "normal")
	assert.False(t, r.Tracked, "a normal heap keeps no sites")
	assert.Zero(t, r.LiveBlocks)
	assert.Empty(t, r.Sites)
	assert.Equal(t, uint64(h.Usage()), r.LiveBytes)
	assert.Positive(t, r.LiveBytes)
	assert.Empty(t, r.Check)
}

func TestReportCatchesWriteAfterRelease(t *testing.T) {
	h := newHeap(t, "debug")
	mem := zmmarrow.NewShared(h)
	buf := mem.Allocate(64)
	p := unsafe.Pointer(unsafe.SliceData(buf))
	mem.Free(buf)
	*(*byte)(p) = 1 // a write into the freed buffer
	r := report(h, "debug")
	assert.Contains(t, r.Check, "written after it was freed")
}

func TestBySiteOrdersByBytesThenBlocks(t *testing.T) {
	site := func(line int) zmm.Site { return zmm.Site{File: "/a/x.go", Line: line, Function: "pkg.f"} }
	pad := uintptr(zmmarrow.Overhead)
	got := BySite([]zmm.Leak{
		{Size: 64 + pad, Site: site(1)},
		{Size: 64 + pad, Site: site(2)},
		{Size: 64 + pad, Site: site(2)},
		{Size: 128 + pad, Site: site(3)},
		{Size: 1024 + pad, Site: site(4)},
	})
	assert.Equal(t, []SiteTotal{
		{Site: "/a/x.go:4", Function: "pkg.f", Blocks: 1, Bytes: 1024},
		{Site: "/a/x.go:2", Function: "pkg.f", Blocks: 2, Bytes: 128},
		{Site: "/a/x.go:3", Function: "pkg.f", Blocks: 1, Bytes: 128},
		{Site: "/a/x.go:1", Function: "pkg.f", Blocks: 1, Bytes: 64},
	}, got)
}
