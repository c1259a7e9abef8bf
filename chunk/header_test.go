package chunk_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
)

// header returns an empty header with the given runs taken ([start, n]).
func header(t *testing.T, runs ...[2]uint32) *chunk.Header {
	t.Helper()
	c := new(chunk.Header) // only integers: it may live anywhere for a test
	c.Init(0, 1, 0)
	for _, r := range runs {
		require.True(t, c.RangeFree(r[0], r[1]), "run %v overlaps", r)
		c.Take(r[0], r[1])
		c.SetLargeRun(r[0], r[1])
	}
	return c
}

func TestInitLeavesOnlyTheHeaderUsed(t *testing.T) {
	c := header(t)
	assert.True(t, c.Empty())
	assert.Equal(t, uint32(chunk.Pages-chunk.FirstPage), c.FreePages)
	assert.Equal(t, chunk.LargeEntry(1), c.Map[0])
	assert.False(t, c.RangeFree(0, 1))
	assert.True(t, c.RangeFree(1, chunk.Pages-1))
	assert.False(t, c.RangeFree(1, chunk.Pages), "past the end of the chunk")
}

func TestFindRunIsBestFit(t *testing.T) {
	// Layout after the runs below (x = used, . = free):
	// page 0 x | 1..9 free (9) | 10 x | 11..13 free (3) | 14 x | 15..16 free (2) | 17..511 x except 300..399 free (100)
	used := [][2]uint32{{10, 1}, {14, 1}, {17, 283}, {400, 112}}
	cases := []struct {
		n         uint32
		wantStart uint32
	}{
		{1, 15},   // smallest gap that holds 1 page: the 2-page gap
		{2, 15},   // exact fit
		{3, 11},   // exact fit
		{4, 1},    // the 9-page gap beats the 100-page gap
		{9, 1},    // exact fit
		{10, 300}, // only the 100-page gap holds it
		{100, 300},
	}
	for _, tc := range cases {
		c := header(t, used...)
		start, ok := c.FindRun(tc.n)
		require.True(t, ok, "n=%d", tc.n)
		assert.Equal(t, tc.wantStart, start, "n=%d", tc.n)
	}
	c := header(t, used...)
	_, ok := c.FindRun(101)
	assert.False(t, ok, "no gap of 101 pages")
}

func TestFindRunPrefersTheLowestAmongEqualGaps(t *testing.T) {
	c := header(t, [2]uint32{5, 1}, [2]uint32{9, 1}, [2]uint32{13, 499})
	// Gaps: 1..4 (4), 6..8 (3), 10..12 (3)
	start, ok := c.FindRun(2)
	require.True(t, ok)
	assert.Equal(t, uint32(6), start)
}

func TestGapsCrossWordBoundaries(t *testing.T) {
	c := header(t, [2]uint32{1, 60}, [2]uint32{70, 100}, [2]uint32{200, 312})
	var gaps [][2]uint32
	c.Gaps(func(s, e uint32) { gaps = append(gaps, [2]uint32{s, e}) })
	assert.Equal(t, [][2]uint32{{61, 70}, {170, 200}}, gaps)
	start, ok := c.FindRun(30)
	require.True(t, ok)
	assert.Equal(t, uint32(170), start)
}

func TestTakeAndReleaseKeepTheInvariant(t *testing.T) {
	c := header(t)
	c.Take(63, 70) // spans three bitmap words
	c.SetLargeRun(63, 70)
	assert.Equal(t, uint32(chunk.Pages-1-70), c.FreePages)
	assert.Equal(t, chunk.LargeEntry(70), c.Map[63])
	assert.False(t, c.RangeFree(62, 2))
	assert.True(t, c.RangeFree(133, 10))
	for i := uint32(0); i < chunk.Pages; i++ {
		inRun := i >= 63 && i < 133
		assert.Equal(t, i == 0 || inRun, c.Used(i), "page %d: bitmap", i)
		assert.Equal(t, i == 0 || i == 63, c.Map[i] != 0, "page %d: only a run's first page has an entry", i)
		if inRun && i > 63 {
			start, ok := c.LargeRunStart(i)
			assert.True(t, ok)
			assert.Equal(t, uint32(63), start, "page %d belongs to the run at 63", i)
		}
	}
	_, ok := c.LargeRunStart(200)
	assert.False(t, ok, "a free page belongs to no run")
	c.ReleaseLarge(123, 10) // shrink the run in place to 60 pages
	c.Map[63] = chunk.LargeEntry(60)
	assert.True(t, c.RangeFree(123, 10))
	assert.False(t, c.Used(123))
	c.ReleaseLarge(63, 60)
	assert.True(t, c.Empty())
	assert.True(t, c.RangeFree(1, chunk.Pages-1))
	assert.Zero(t, c.Map[100])
}

func TestSmallRunEntries(t *testing.T) {
	c := header(t)
	c.Take(1, 5)
	c.SetSmallRun(1, 5, 16)
	for i := uint32(0); i < 5; i++ {
		e := c.Map[1+i]
		assert.Equal(t, chunk.MapSmall, e&chunk.MapKindMask)
		assert.Equal(t, uint32(16), chunk.EntryBin(e))
		assert.Equal(t, i, chunk.EntryIndex(e))
	}
	e := chunk.WithCounter(c.Map[1], 37)
	assert.Equal(t, uint32(37), chunk.EntryCounter(e))
	assert.Equal(t, uint32(16), chunk.EntryBin(e), "the counter leaves the bin alone")
	assert.Zero(t, chunk.EntryIndex(e), "and the page index")
}

func TestFullChunkHasNoRun(t *testing.T) {
	c := header(t, [2]uint32{1, chunk.Pages - 1})
	_, ok := c.FindRun(1)
	assert.False(t, ok)
	assert.Zero(t, c.FreePages)
}

// naiveFindRun is FindRun's contract written the slow way: the lowest exact
// fit, else the lowest of the smallest gaps that hold n pages.
func naiveFindRun(c *chunk.Header, n uint32) (uint32, bool) {
	best, bestLen := uint32(0), uint32(chunk.Pages+1)
	for s := uint32(0); s < chunk.Pages; {
		if c.Used(s) {
			s++
			continue
		}
		e := s
		for e < chunk.Pages && !c.Used(e) {
			e++
		}
		if l := e - s; l == n {
			return s, true
		} else if l > n && l < bestLen {
			best, bestLen = s, l
		}
		s = e
	}
	return best, bestLen <= chunk.Pages
}

// TestFindRunMatchesTheNaiveSearch takes and frees runs at random (large
// runs, freed whole or in part, and small runs) and checks after every step
// that FindRun agrees with the naive search for several lengths, and that
// no page from FreeTail on is in use: the free-tail hint never lies.
func TestFindRunMatchesTheNaiveSearch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	c := header(t)
	type run struct{ start, n uint32 }
	var runs []run
	for step := 0; step < 20000; step++ {
		if len(runs) > 0 && (r.IntN(2) == 0 || c.FreePages < 8) {
			i := r.IntN(len(runs))
			rn := runs[i]
			switch {
			case rn.n > 1 && r.IntN(3) == 0: // shrink in place: free the tail part
				k := 1 + r.Uint32N(rn.n-1)
				c.ReleaseLarge(rn.start+rn.n-k, k)
				runs[i].n -= k
			case r.IntN(2) == 0:
				c.ReleaseLarge(rn.start, rn.n)
				runs = append(runs[:i], runs[i+1:]...)
			default:
				c.Release(rn.start, rn.n)
				runs = append(runs[:i], runs[i+1:]...)
			}
		} else {
			n := 1 + r.Uint32N(8)
			if r.IntN(4) == 0 {
				n = 1 + r.Uint32N(64)
			}
			want, wantOK := naiveFindRun(c, n)
			got, ok := c.FindRun(n)
			require.Equal(t, wantOK, ok, "step %d, n=%d", step, n)
			if ok {
				require.Equal(t, want, got, "step %d, n=%d", step, n)
				c.Take(got, n)
				runs = append(runs, run{got, n})
			}
		}
		for _, n := range []uint32{1, 3, 17} {
			want, wantOK := naiveFindRun(c, n)
			got, ok := c.FindRun(n)
			require.Equal(t, wantOK, ok, "step %d, n=%d", step, n)
			require.Equal(t, want, got, "step %d, n=%d", step, n)
		}
		require.LessOrEqual(t, c.FreeTail, uint32(chunk.Pages))
		require.True(t, c.FreeTail == chunk.Pages || c.RangeFree(c.FreeTail, chunk.Pages-c.FreeTail),
			"step %d: a page at or above FreeTail %d is in use", step, c.FreeTail)
	}
}

func TestGapAroundMatchesTheBitmap(t *testing.T) {
	var c chunk.Header
	c.Init(0, 1, 0)
	rng := rand.New(rand.NewPCG(7, 8))
	for step := 0; step < 2000; step++ {
		// Take a random free run, or free one page in use.
		start := uint32(1 + rng.IntN(chunk.Pages-1))
		n := uint32(1 + rng.IntN(int(min(chunk.Pages-start, 40))))
		switch {
		case c.RangeFree(start, n):
			c.Take(start, n)
		case c.Used(start):
			c.Release(start, 1)
		}
		for p := uint32(chunk.FirstPage); p < chunk.Pages; p++ {
			if c.Used(p) {
				continue
			}
			s, e := c.GapAround(p)
			naiveS, naiveE := p, p
			for naiveS > 0 && !c.Used(naiveS-1) {
				naiveS--
			}
			for naiveE < chunk.Pages && !c.Used(naiveE) {
				naiveE++
			}
			require.Equal(t, [2]uint32{naiveS, naiveE}, [2]uint32{s, e}, "step %d, page %d", step, p)
		}
	}
}
