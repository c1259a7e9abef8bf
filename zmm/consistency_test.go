package zmm_test

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/zmm"
)

// A reported error must leave the heap as consistent as it was before the
// call: the walks over free lists (GC, Stats, Snapshot, Check) stop at a
// broken link, and whatever they had counted by then must not survive
// into a later call.

// corruptOneFreeSlot fills one run of the 64-byte bin, frees 40 of its
// slots and overwrites the link of one of them, as a write after free
// would. It returns the run's blocks still live.
func corruptOneFreeSlot(t *testing.T, h *zmm.Heap) []unsafe.Pointer {
	t.Helper()
	const size = 64
	bin := bins.Bin(size)
	n := int(bins.Elements[bin])
	blocks := make([]unsafe.Pointer, n)
	for i := range blocks {
		blocks[i] = h.Alloc(size)
	}
	for _, p := range blocks[:40] {
		h.Free(p)
	}
	// The slot freed last heads the list: the first one freed is its
	// tail, reached after the walk has counted the 39 others.
	*(*uintptr)(blocks[0]) = 0x4141414141414141
	return blocks[40:]
}

func TestGCAfterReportedCorruptionKeepsLiveBlocks(t *testing.T) {
	h := newHeap(t, layout()...)
	live := corruptOneFreeSlot(t, h)

	e := catch(t, func() { h.GC() })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Equal(t, "GC", e.Op)

	// Allocate until the bin's list is used up: the broken link is
	// reported when it is reached, and its list abandoned.
	var more []unsafe.Pointer
	for i := 0; i < 200; i++ {
		var p unsafe.Pointer
		if err := zmm.Try(func() { p = h.Alloc(64) }); err != nil {
			require.ErrorIs(t, err, zmm.ErrCorrupted)
			continue
		}
		more = append(more, p)
	}
	// Free all but one live block, then collect: the run that still holds
	// it must stay.
	keep := live[0]
	for _, p := range live[1:] {
		h.Free(p)
	}
	for _, p := range more {
		h.Free(p)
	}
	fill(keep, 64, 7)
	require.NoError(t, zmm.Try(func() { h.GC() }))
	assert.Equal(t, uintptr(64), h.BlockSize(keep), "the live block survives GC")
	assert.True(t, holds(keep, 64, 7))
	for i := 0; i < 200; i++ {
		p := h.Alloc(64)
		require.NotEqual(t, keep, p, "a live block was handed out again")
	}
}

func TestGCAfterReportedCorruptionDoesNotReportFalseDuplicates(t *testing.T) {
	h := newHeap(t, layout()...)
	corruptOneFreeSlot(t, h)
	small := h.Alloc(16)
	defer h.Free(small)
	require.ErrorIs(t, zmm.Try(func() { h.GC() }), zmm.ErrCorrupted)

	// Take the damaged list out of the way (its head is reported when
	// reached), then every later GC must succeed.
	for i := 0; i < 100; i++ {
		_ = zmm.Try(func() { h.Alloc(64) })
	}
	for i := 0; i < 3; i++ {
		assert.NoError(t, zmm.Try(func() { h.GC() }), "GC %d", i)
	}
}

func TestWalksNameTheirOperation(t *testing.T) {
	for _, tc := range []struct {
		op   string
		call func(h *zmm.Heap)
	}{
		{"GC", func(h *zmm.Heap) { h.GC() }},
		{"Stats", func(h *zmm.Heap) { h.Stats() }},
		{"Snapshot", func(h *zmm.Heap) { h.Snapshot() }},
	} {
		t.Run(tc.op, func(t *testing.T) {
			h := newHeap(t, layout()...)
			corruptOneFreeSlot(t, h)
			before := h.Usage()
			e := catch(t, func() { tc.call(h) })
			assert.ErrorIs(t, e, zmm.ErrCorrupted)
			assert.Equal(t, tc.op, e.Op)
			assert.Contains(t, e.Error(), "broken link")
			assert.Equal(t, before, h.Usage())
			// A second walk reports the same damage, not a consequence
			// of the first.
			e = catch(t, func() { tc.call(h) })
			assert.Contains(t, e.Error(), "broken link")
		})
	}
}

func TestGCReportsABrokenChunkRingBeforeChangingAnything(t *testing.T) {
	h := newHeap(t, layout()...)
	// Three chunks: large blocks fill most of each.
	var blocks []unsafe.Pointer
	for range 3 {
		blocks = append(blocks, fillChunk(h)...)
	}
	// A run of the 64-byte bin whose slots are all free: GC's work.
	run := make([]unsafe.Pointer, bins.Elements[bins.Bin(64)])
	for i := range run {
		run[i] = h.Alloc(64)
	}
	for _, p := range run {
		h.Free(p)
	}
	runs := h.Stats().Bins[bins.Bin(64)].Runs
	require.NotZero(t, runs)
	c := chunk.Of(blocks[1])
	saved := c.Next
	c.Next = 0x4141414141400000 // a header overwritten: the link leads nowhere
	real := h.RealUsage()
	e := catch(t, func() { h.GC() })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Contains(t, e.Error(), "chunk list broken")
	assert.Equal(t, real, h.RealUsage(), "nothing was unmapped")
	c.Next = saved
	assert.Equal(t, runs, h.Stats().Bins[bins.Bin(64)].Runs, "no run was given back")
	assert.NotZero(t, h.GC())
}
