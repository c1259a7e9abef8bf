package gen

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/trace"
)

func mustTrace(t *testing.T, p Params) *trace.Trace {
	t.Helper()
	tr, err := Trace(p)
	require.NoError(t, err)
	return tr
}

func sizes(tr *trace.Trace, ops ...trace.Op) []uint64 {
	var s []uint64
	for _, r := range tr.Records {
		for _, op := range ops {
			if r.Op == op {
				s = append(s, r.Size)
			}
		}
	}
	return s
}

func TestKinds(t *testing.T) {
	const n = 3000
	for _, k := range Kinds {
		t.Run(string(k), func(t *testing.T) {
			p := Params{Kind: k, N: n, Seed: 7}
			if k == LargeMix {
				p.Live = 100 // the default, 4000, is more than n
			}
			tr := mustTrace(t, p)
			assert.Equal(t, n, tr.Allocs)
			assert.Positive(t, tr.Reallocs)
			assert.Equal(t, tr, mustTrace(t, p), "same params, same trace")
			other := mustTrace(t, Params{Kind: k, N: n, Seed: 8})
			assert.NotEqual(t, tr.Records, other.Records, "another seed, another trace")
			assert.Less(t, tr.IDs, n, "ids are reused")

			all := sizes(tr, trace.OpAlloc, trace.OpRealloc)
			allocs := sizes(tr, trace.OpAlloc)
			switch k {
			case Small:
				assert.Equal(t, n, tr.Frees, "every block is freed")
				assert.Zero(t, tr.Requests)
				for _, s := range all {
					require.True(t, s >= 1 && s <= smallMax, "size %d", s)
				}
				assert.Less(t, tr.MaxLive, n/4, "most blocks are short-lived")
			case Large:
				assert.Equal(t, n, tr.Frees)
				for _, s := range all {
					require.True(t, s >= largeMin && s <= largeMax, "size %d", s)
				}
				assert.InDelta(t, DefaultLiveLarge, tr.MaxLive, DefaultLiveLarge)
			case Huge:
				assert.Equal(t, n, tr.Frees)
				huge := 0
				for _, s := range all {
					require.True(t, s >= largeMin && s <= hugeMax, "size %d", s)
				}
				for _, s := range allocs {
					if s > largeMax {
						huge++
					}
				}
				assert.InDelta(t, 0.4, float64(huge)/n, 0.05, "40%% huge blocks")
				assert.InDelta(t, DefaultLiveHuge, tr.MaxLive, DefaultLiveHuge)
			case Request:
				// Requests have 0.5 to 1.5 times DefaultPerRequest allocations.
				assert.True(t, tr.Requests >= n*2/(3*DefaultPerRequest) && tr.Requests <= n*2/DefaultPerRequest+1, "%d requests", tr.Requests)
				assert.Equal(t, trace.OpRequestEnd, tr.Records[len(tr.Records)-1].Op)
				share := float64(tr.Frees) / n
				assert.True(t, share > 0.6 && share < 0.85, "%.0f%% freed during the requests", 100*share)
				small := 0
				for _, s := range allocs {
					if s <= smallMax {
						small++
					}
				}
				assert.Greater(t, float64(small)/n, 0.95, "mostly small blocks")
			case LargeMix:
				assert.Equal(t, n, tr.Frees)
				assert.Equal(t, 100, tr.MaxLive)
			}
		})
	}
}

// TestLogUniform: about as many large blocks per octave at both ends.
func TestLogUniform(t *testing.T) {
	tr := mustTrace(t, Params{Kind: Large, N: 20000, Seed: 1})
	var low, high int
	for _, s := range sizes(tr, trace.OpAlloc) {
		switch {
		case s >= 4<<10 && s < 8<<10:
			low++
		case s >= 1<<20 && s < 2<<20-4<<10:
			high++
		}
	}
	assert.InDelta(t, 1, float64(low)/float64(high), 0.2, "%d blocks of 4..8 KiB, %d of 1..2 MiB", low, high)
}

func TestWriteReads(t *testing.T) {
	p := Params{Kind: Request, N: 500, Seed: 3, PerRequest: 100}
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, p))
	got, err := trace.Read(&buf)
	require.NoError(t, err)
	assert.Equal(t, mustTrace(t, p), got)
	assert.True(t, got.Requests >= 3 && got.Requests <= 11, "%d requests", got.Requests)
}

func TestBadParams(t *testing.T) {
	for _, p := range []Params{
		{Kind: "tiny", N: 10},
		{Kind: Small, N: -1},
		{Kind: Small, N: MaxN + 1},
		{Kind: Request, N: 10, PerRequest: -1},
	} {
		_, err := Trace(p)
		assert.Error(t, err, "%+v", p)
	}
	k, err := ParseKind("huge")
	require.NoError(t, err)
	assert.Equal(t, Huge, k)
	assert.Equal(t, "huge|large|large-mix|request|small", KindNames())
}

func TestEmpty(t *testing.T) {
	for _, k := range Kinds {
		tr := mustTrace(t, Params{Kind: k})
		assert.Empty(t, tr.Records, "%s", k)
	}
}

// Committed lists the traces in bench/traces and how bench/traces/make.sh
// made them; TestCommitted checks that they are what the generator makes.
var Committed = []struct {
	File string
	P    Params
}{
	{"small.ztrace.gz", Params{Kind: Small, N: 30000, Seed: 1}},
	{"large.ztrace.gz", Params{Kind: Large, N: 20000, Seed: 1}},
	{"huge.ztrace.gz", Params{Kind: Huge, N: 8000, Seed: 1}},
	{"request.ztrace.gz", Params{Kind: Request, N: 30000, Seed: 1, PerRequest: 1000}},
}

func TestCommitted(t *testing.T) {
	for _, c := range Committed {
		t.Run(c.File, func(t *testing.T) {
			path := filepath.Join("..", "traces", c.File)
			got, err := trace.ReadFile(path)
			require.NoError(t, err)
			want := mustTrace(t, c.P)
			if !assert.Equal(t, len(want.Records), len(got.Records)) {
				return
			}
			for i := range want.Records {
				if want.Records[i] != got.Records[i] {
					t.Fatalf("record %d is %v, the generator makes %v: regenerate with bench/traces/make.sh", i, got.Records[i], want.Records[i])
				}
			}
		})
	}
}

// TestLargeMix: the live set stays at Live after the fill, the sizes are
// in their two ranges, about 3% huge, and reallocs keep a block in its
// range.
func TestLargeMix(t *testing.T) {
	const live, n = 500, 20000
	tr := mustTrace(t, Params{Kind: LargeMix, N: n, Seed: 3, Live: live})
	assert.Equal(t, n, tr.Allocs)
	assert.Equal(t, n, tr.Frees)
	assert.Equal(t, live, tr.MaxLive)
	assert.InDelta(t, (n-live)/50, tr.Reallocs, float64(n)/200, "one step in fifty reallocs")
	huge := 0
	for _, s := range sizes(tr, trace.OpAlloc, trace.OpRealloc) {
		require.True(t, (s >= largeMin && s <= mixLargeMax) || (s >= mixHugeMin && s <= hugeMax), "size %d", s)
	}
	for _, s := range sizes(tr, trace.OpAlloc) {
		if s >= mixHugeMin {
			huge++
		}
	}
	assert.InDelta(t, 0.03, float64(huge)/n, 0.005, "3%% huge blocks")
	// Live sets the heap's size: the default's is about 3.6 GB.
	big := mustTrace(t, Params{Kind: LargeMix, N: DefaultLiveLargeMix, Seed: 1})
	var bytes uint64
	for _, s := range sizes(big, trace.OpAlloc) {
		bytes += s
	}
	assert.InDelta(t, 3.6e9, float64(bytes), 0.3e9)
}
