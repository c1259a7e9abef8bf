package zmm

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
)

// The run index against a naive search, on random operations: every gap it
// finds is the smallest free gap of at least n pages in the whole heap (the
// naive global best fit, never worse than the Zend MM's best fit in the
// first chunk with room), and after every operation the index says exactly
// what the chunks' bitmaps say.

// naiveGaps returns, for every live chunk, its free gaps' lengths.
func naiveGaps(s *heapState) map[*chunk.Header][]uint32 {
	gaps := map[*chunk.Header][]uint32{}
	main := hdr(s.main)
	for c := main; ; {
		c.Gaps(func(start, end uint32) { gaps[c] = append(gaps[c], end-start) })
		if c = hdr(c.Next); c == main {
			return gaps
		}
	}
}

// naiveBest is the smallest free gap of at least n pages in the heap, or 0.
func naiveBest(s *heapState, n uint32) uint32 {
	best := uint32(0)
	for _, ls := range naiveGaps(s) {
		for _, l := range ls {
			if l >= n && (best == 0 || l < best) {
				best = l
			}
		}
	}
	return best
}

// checkRunIndex compares the index with the chunks, in full.
func checkRunIndex(t *testing.T, s *heapState, step int) {
	t.Helper()
	x := &s.runs
	gaps := naiveGaps(s)
	var withLen [runLengths]uint32
	for c, ls := range gaps {
		require.Equal(t, c.Base(), *x.base(c.Slot), "step %d: chunk 0x%x's slot", step, c.Base())
		var want [runLengths]uint16
		for _, l := range ls {
			want[l]++
		}
		for l := uint32(1); l < runLengths; l++ {
			require.Equal(t, want[l], *x.count(c.Slot, l), "step %d: chunk 0x%x, gaps of %d pages", step, c.Base(), l)
			w := uintptr(c.Slot) / 64
			bit := *x.word(l, w)&(1<<(c.Slot%64)) != 0
			require.Equal(t, want[l] != 0, bit, "step %d: the bit of chunk 0x%x for length %d", step, c.Base(), l)
			if bit {
				require.NotZero(t, *x.sum(l, w/64)&(1<<(w%64)), "step %d: summary of length %d", step, l)
				withLen[l]++
			}
		}
	}
	for l := uint32(1); l < runLengths; l++ {
		require.Equal(t, withLen[l], *x.nChunks(l), "step %d: chunks with a gap of %d pages", step, l)
		require.Equal(t, withLen[l] != 0, x.any[l/64]&(1<<(l%64)) != 0, "step %d: any bit of length %d", step, l)
	}
}

func TestRunIndexIsGlobalBestFit(t *testing.T) {
	h, err := New(WithDebug(false), WithAllocMode(ModeChunks))
	require.NoError(t, err)
	defer h.Close()
	s := h.st
	rng := rand.New(rand.NewPCG(11, 12))
	var live []unsafe.Pointer
	wasOn := false
	for step := 0; step < 1000; step++ {
		// Before each allocation: what the index finds is the naive best.
		n := uint32(1 + rng.IntN(80))
		if rng.IntN(10) == 0 {
			n = uint32(100 + rng.IntN(MaxLargeSize/chunk.PageSize-99))
		}
		if !s.runs.on {
			// A heap of a few chunks places runs as the Zend MM does.
			require.LessOrEqual(t, s.chunks, uint32(runIndexFrom), "step %d", step)
		}
		want := naiveBest(s, n)
		c, l := s.runs.findGap(n)
		switch {
		case !s.runs.on:
			require.Nil(t, c, "step %d: an index that is off finds nothing", step)
		case want == 0:
			require.Nil(t, c, "step %d: no gap of %d pages, yet the index found one", step, n)
		default:
			wasOn = true
			require.NotNil(t, c, "step %d: the index missed a gap of %d pages for %d", step, want, n)
			require.Equal(t, want, l, "step %d: %d pages", step, n)
			start, ok := c.FindRun(n)
			require.True(t, ok)
			gs, ge := c.GapAround(start)
			require.Equal(t, want, ge-gs, "step %d: the gap FindRun took in the index's chunk", step)
		}
		switch op := rng.IntN(10); {
		case op < 5 || len(live) == 0:
			live = append(live, h.Alloc(uintptr(n)*chunk.PageSize))
		case op < 8:
			i := rng.IntN(len(live))
			h.Free(live[i])
			live = append(live[:i], live[i+1:]...)
		case op < 9:
			i := rng.IntN(len(live))
			live[i] = h.Realloc(live[i], uintptr(1+rng.IntN(MaxLargeSize/chunk.PageSize))*chunk.PageSize)
		default:
			// Small blocks take one-page runs from the same index.
			for range 50 {
				live = append(live, h.Alloc(uintptr(16+rng.IntN(3000))))
			}
		}
		if step%10 == 0 && s.runs.on {
			checkRunIndex(t, s, step)
		}
		if step%250 == 249 {
			for _, p := range live[:len(live)/2] {
				h.Free(p)
			}
			live = live[len(live)/2:]
			h.GC()
			if s.runs.on {
				checkRunIndex(t, s, step)
			}
		}
	}
	require.True(t, wasOn, "the heap never grew past %d chunks: the index was not tested", runIndexFrom)
	h.Reset()
	require.False(t, s.runs.on, "Reset drops the index")
	require.Equal(t, uint32(1), s.chunks)
	// It comes back, whole, when the heap grows again.
	for range 6 * runIndexFrom {
		live = append(live, h.Alloc(MaxLargeSize))
	}
	require.True(t, s.runs.on)
	checkRunIndex(t, s, -1)
}

func TestRunIndexGrows(t *testing.T) {
	h, err := New(WithDebug(false), WithAllocMode(ModeChunks))
	require.NoError(t, err)
	defer h.Close()
	// More chunks than a first table holds: two of the largest runs fill
	// one.
	var ps []unsafe.Pointer
	for range 6 * runIndexInit {
		ps = append(ps, h.Alloc(MaxLargeSize))
	}
	require.Greater(t, h.st.runs.cap, uint32(runIndexInit))
	checkRunIndex(t, h.st, 0)
	for i := 0; i < len(ps); i += 2 {
		h.Free(ps[i])
	}
	checkRunIndex(t, h.st, 1)
}
