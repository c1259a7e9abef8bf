// Package gen makes synthetic allocation traces (package trace, format
// version 1) for the replay benchmarks: the same seed and parameters give
// the same records on every machine and Go version.
//
// Four kinds:
//
//   - small: PHP-like small blocks (1 byte to 3 KiB, mostly 16 to 256
//     bytes), most of them short-lived, a few reallocs (strings growing);
//     no request ends, every block freed explicitly by the end.
//   - large: runs of 3 KiB to 2 MiB (zmm's and the Zend MM's "large"
//     class) churning around a small live set, with reallocs.
//   - huge: 3 KiB to 8 MiB blocks, 40% of them above 2 MiB (mapped one by
//     one by the Zend MM), churning around a small live set: the kind of
//     trace on which the Zend MM is known to be slow (see
//     reference/beyond-zend.md).
//   - request: many PHP-like requests; in each, many allocations of the
//     small mix with a tail of large and rare huge blocks, most freed
//     during the request and the rest dropped by its request end.
//   - large-mix: a big heap of large blocks (uniform from 3 KiB to
//     1.5 MiB, 3% huge ones of 2 to 8 MiB): Live blocks are allocated
//     first, then each step frees a random live block and allocates one in
//     its place, with 2% reallocs. Its Live knob sets the heap's size
//     (about 0.9 MB per block: 400 blocks make 0.36 GB, 12,000 about
//     11 GB), so that a placement whose cost grows with the number of
//     chunks shows.
//
// N counts allocations (alloc records), not records: a trace has about
// 2·N records (an alloc and a free or a request end per block, plus the
// reallocs and request ends).
package gen

import (
	"container/heap"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/gozmm/zmm/trace"
)

// Kind is the kind of trace to make.
type Kind string

// The kinds Generate knows.
const (
	Small    Kind = "small"
	Large    Kind = "large"
	Huge     Kind = "huge"
	Request  Kind = "request"
	LargeMix Kind = "large-mix"
)

// Kinds lists every kind, in the order the documentation gives them.
var Kinds = []Kind{Small, Large, Huge, Request, LargeMix}

// ParseKind returns the kind named s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return "", fmt.Errorf("gen: unknown kind %q (want %s)", s, strings.Join(names, ", "))
}

// Params say what trace to make. The zero values of the optional fields
// pick the defaults below.
type Params struct {
	Kind Kind
	// N is the number of allocations (alloc records).
	N int
	// Seed picks the random stream; the same Params give the same trace.
	Seed uint64
	// PerRequest is the mean number of allocations per request (request
	// kind only; default 2000). Each request has between half and one and
	// a half times as many.
	PerRequest int
	// Live is the mean number of blocks live at a time (large and huge
	// kinds; defaults 64 and 16), or the number always live (large-mix;
	// default 4000).
	Live int
}

// Defaults of the optional Params fields.
const (
	DefaultPerRequest   = 2000
	DefaultLiveLarge    = 64
	DefaultLiveHuge     = 16
	DefaultLiveLargeMix = 4000
)

// MaxN bounds Params.N, so that a trace stays within trace.MaxRecords.
const MaxN = trace.MaxRecords / 3

const (
	kib = 1 << 10
	mib = 1 << 20

	// smallMax is the largest small block (the largest bin).
	smallMax = 3 * kib
	// largeMin and largeMax bound the large blocks: above a bin, below a
	// huge block (2 MiB minus the 4 KiB page of a chunk's header).
	largeMin = smallMax + 1
	largeMax = 2*mib - 4*kib
	hugeMax  = 8 * mib

	// mixLargeMax and mixHugeMin bound the large-mix's sizes: its large
	// blocks end below 1.5 MiB, its huge ones start at 2 MiB.
	mixLargeMax = 3 * mib / 2
	mixHugeMin  = 2 * mib
)

func (p Params) withDefaults() (Params, error) {
	if _, err := ParseKind(string(p.Kind)); err != nil {
		return p, err
	}
	if p.N < 0 || p.N > MaxN {
		return p, fmt.Errorf("gen: N = %d, want 0..%d", p.N, MaxN)
	}
	if p.PerRequest < 0 || p.Live < 0 {
		return p, fmt.Errorf("gen: negative PerRequest (%d) or Live (%d)", p.PerRequest, p.Live)
	}
	if p.PerRequest == 0 {
		p.PerRequest = DefaultPerRequest
	}
	if p.Live == 0 {
		switch p.Kind {
		case Huge:
			p.Live = DefaultLiveHuge
		case LargeMix:
			p.Live = DefaultLiveLargeMix
		default:
			p.Live = DefaultLiveLarge
		}
	}
	return p, nil
}

// Generate makes the trace p describes and writes it to w, a record at a
// time (w validates each; an error from it stops the generation). It does
// not flush w.
func Generate(w *trace.Writer, p Params) error {
	return generate(p, w.Write)
}

// Write makes the trace p describes and writes it to w as a plain
// (uncompressed) trace.
func Write(w io.Writer, p Params) error {
	tw, err := trace.NewWriter(w)
	if err != nil {
		return err
	}
	if err := Generate(tw, p); err != nil {
		return err
	}
	return tw.Flush()
}

// Trace makes the trace p describes in memory, validated and analyzed.
func Trace(p Params) (*trace.Trace, error) {
	t := &trace.Trace{}
	err := generate(p, func(r trace.Record) error {
		t.Records = append(t.Records, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := t.Analyze(); err != nil {
		return nil, fmt.Errorf("gen: made an invalid trace: %w", err)
	}
	return t, nil
}

func generate(p Params, emit func(trace.Record) error) error {
	p, err := p.withDefaults()
	if err != nil {
		return err
	}
	// The kind is mixed into the stream so that two kinds with one seed
	// do not share their random numbers.
	var salt uint64
	for _, c := range []byte(p.Kind) {
		salt = salt*131 + uint64(c)
	}
	g := &gen{r: rand.New(rand.NewPCG(p.Seed, salt)), emit: emit}
	switch p.Kind {
	case Small:
		g.small(p)
	case Large:
		g.churn(p, largeSize, 0.10)
	case Huge:
		g.churn(p, hugeMixSize, 0.10)
	case Request:
		g.requests(p)
	case LargeMix:
		g.largeMix(p)
	}
	return g.err
}

// gen holds the state of one generation: the live blocks and the free ids.
type gen struct {
	r    *rand.Rand
	emit func(trace.Record) error
	err  error // the first error of emit; later records are dropped

	// freeIDs is a stack of ids free for reuse, so that ids stay small
	// and dense; nextID is the next never-used one.
	freeIDs []uint32
	nextID  uint32
	// live lists the live ids in no order; pos[id] is id's index in live
	// (for removal in O(1)); size[id] is its block's size.
	live []uint32
	pos  []int32
	size []uint64
}

func (g *gen) put(r trace.Record) {
	if g.err == nil {
		g.err = g.emit(r)
	}
}

func (g *gen) alloc(size uint64) uint32 {
	var id uint32
	if n := len(g.freeIDs); n > 0 {
		id = g.freeIDs[n-1]
		g.freeIDs = g.freeIDs[:n-1]
	} else {
		id = g.nextID
		g.nextID++
		g.pos = append(g.pos, -1)
		g.size = append(g.size, 0)
	}
	g.pos[id] = int32(len(g.live))
	g.live = append(g.live, id)
	g.size[id] = size
	g.put(trace.Record{Op: trace.OpAlloc, ID: id, Size: size})
	return id
}

func (g *gen) free(id uint32) {
	i := g.pos[id]
	last := g.live[len(g.live)-1]
	g.live[i] = last
	g.pos[last] = i
	g.live = g.live[:len(g.live)-1]
	g.pos[id] = -1
	g.freeIDs = append(g.freeIDs, id)
	g.put(trace.Record{Op: trace.OpFree, ID: id})
}

func (g *gen) realloc(id uint32, size uint64) {
	g.size[id] = size
	g.put(trace.Record{Op: trace.OpRealloc, ID: id, Size: size})
}

// requestEnd drops every live block; the ids start from 0 again.
func (g *gen) requestEnd() {
	g.put(trace.Record{Op: trace.OpRequestEnd})
	g.live = g.live[:0]
	g.freeIDs = g.freeIDs[:0]
	for id := int(g.nextID) - 1; id >= 0; id-- { // so that 0 comes first
		g.pos[id] = -1
		g.freeIDs = append(g.freeIDs, uint32(id))
	}
}

// randomLive returns a live id chosen uniformly; there must be one.
func (g *gen) randomLive() uint32 { return g.live[g.r.IntN(len(g.live))] }

// freeAll frees the live blocks in a random order.
func (g *gen) freeAll() {
	for len(g.live) > 0 {
		g.free(g.randomLive())
	}
}

// ---------------------------------------------------------------------------
// Sizes

// between draws uniformly from lo..hi.
func between(r *rand.Rand, lo, hi uint64) uint64 { return lo + r.Uint64N(hi-lo+1) }

// logUniform draws from lo..hi (lo >= 1) with an about uniform
// logarithm: an octave [2^k, 2^(k+1)) is picked uniformly, then a size in
// it, redrawn until it is in range, so that there are as many blocks of 4
// to 8 KiB as of 1 to 2 MiB. Integer arithmetic only, so that every
// platform draws the same sizes.
func logUniform(r *rand.Rand, lo, hi uint64) uint64 {
	kLo, kHi := bits.Len64(lo)-1, bits.Len64(hi)-1
	for {
		k := kLo + r.IntN(kHi-kLo+1)
		if v := between(r, 1<<k, 1<<(k+1)-1); v >= lo && v <= hi {
			return v
		}
	}
}

// phpSmall draws a small size with roughly the shape of a PHP request's:
// mostly zvals, hash buckets and short strings, some longer strings and
// arrays up to the largest bin.
func phpSmall(r *rand.Rand) uint64 {
	switch x := r.IntN(1000); {
	case x < 40:
		return between(r, 1, 15)
	case x < 620:
		return between(r, 16, 64)
	case x < 890:
		return between(r, 65, 256)
	default:
		return between(r, 257, smallMax)
	}
}

// phpRequestSize is phpSmall with a tail: 1% large blocks of up to 64 KiB
// and one in 5000 a huge one of 2.5 to 4 MiB (a big array or file read).
func phpRequestSize(r *rand.Rand) uint64 {
	switch x := r.IntN(5000); {
	case x == 0:
		return between(r, 5*mib/2, 4*mib)
	case x <= 50:
		return between(r, largeMin, 64*kib)
	}
	return phpSmall(r)
}

func largeSize(r *rand.Rand) uint64 { return logUniform(r, largeMin, largeMax) }

// hugeMixSize draws 60% large runs (log-uniform 3 KiB..2 MiB) and 40% huge
// blocks (uniform 2..8 MiB).
func hugeMixSize(r *rand.Rand) uint64 {
	if r.IntN(10) < 6 {
		return largeSize(r)
	}
	return between(r, largeMax+1, hugeMax)
}

// largeMixSize draws a size of the large mix: 97% uniform from 3 KiB to
// 1.5 MiB, 3% uniform from 2 to 8 MiB. Uniform, not log-uniform, so that
// most of the heap is in blocks of hundreds of KiB, the runs whose
// placement is costly.
func largeMixSize(r *rand.Rand) uint64 {
	if r.IntN(100) < 3 {
		return between(r, mixHugeMin, hugeMax)
	}
	return between(r, largeMin, mixLargeMax)
}

// grow is a realloc's new size: three times in four a growth by 1.25 to 2
// times (a string or an array growing), otherwise a shrink to between half
// and all of it; the result is kept within lo..hi.
func grow(r *rand.Rand, old, lo, hi uint64) uint64 {
	var v uint64
	if r.IntN(4) == 0 {
		v = old/2 + r.Uint64N(old/2+1)
	} else {
		v = old + old/4 + r.Uint64N(old*3/4+1)
	}
	return min(max(v, lo, 1), hi)
}

// ---------------------------------------------------------------------------
// Lifetimes

// deaths is a min-heap of (step, id): the block id dies after step.
type deaths []death

type death struct {
	step int
	id   uint32
}

func (d deaths) Len() int { return len(d) }
func (d deaths) Less(i, j int) bool {
	if d[i].step != d[j].step {
		return d[i].step < d[j].step
	}
	return d[i].id < d[j].id
}
func (d deaths) Swap(i, j int) { d[i], d[j] = d[j], d[i] }
func (d *deaths) Push(x any)   { *d = append(*d, x.(death)) }
func (d *deaths) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// lifetime draws how many allocations a block outlives: 70% temporaries
// (1..16), 25% medium (1..1024), 5% long (1..long).
func lifetime(r *rand.Rand, long int) int {
	switch q := r.IntN(100); {
	case q < 70:
		return 1 + r.IntN(16)
	case q < 95:
		return 1 + r.IntN(1024)
	}
	return 1 + r.IntN(max(long, 1))
}

// scheduled runs a stream of n allocations whose blocks die on schedule:
// with probability keep a block lives to the end of the stream, otherwise
// for lifetime(n) allocations; with probability reallocP a random live
// block is reallocated after each allocation. size draws the sizes, and
// lo and hi bound the reallocs. It returns with the kept blocks (and the
// long-lived ones not yet dead) still live.
func (g *gen) scheduled(n int, keep, reallocP float64, size func(*rand.Rand) uint64, lo, hi uint64) {
	var due deaths
	for t := range n {
		id := g.alloc(size(g.r))
		if g.r.Float64() >= keep {
			heap.Push(&due, death{t + lifetime(g.r, n), id})
		}
		if g.r.Float64() < reallocP {
			v := g.randomLive()
			g.realloc(v, grow(g.r, g.size[v], lo, hi))
		}
		for len(due) > 0 && due[0].step <= t {
			g.free(heap.Pop(&due).(death).id)
		}
		if g.err != nil {
			return
		}
	}
}

// ---------------------------------------------------------------------------
// The kinds

// small: the PHP-like small mix, 5% reallocs, nothing kept on purpose;
// what is still live at the end is freed in a random order.
func (g *gen) small(p Params) {
	g.scheduled(p.N, 0, 0.05, phpSmall, 1, smallMax)
	g.freeAll()
}

// churn keeps about p.Live blocks live: each step allocates while fewer
// than the target are live (the target wanders between a half and one
// and a half times p.Live), otherwise frees a random one; with probability
// reallocP it also reallocs one. Everything is freed at the end.
func (g *gen) churn(p Params, size func(*rand.Rand) uint64, reallocP float64) {
	lo, hi := uint64(largeMin), uint64(largeMax)
	if p.Kind == Huge {
		hi = hugeMax
	}
	target := p.Live
	for allocs := 0; allocs < p.N && g.err == nil; {
		if g.r.IntN(256) == 0 {
			target = p.Live/2 + g.r.IntN(p.Live+1)
		}
		// Below the target allocate more often than free, above it less.
		pAlloc := 0.5
		switch {
		case len(g.live) < target:
			pAlloc = 0.7
		case len(g.live) > target:
			pAlloc = 0.3
		}
		if len(g.live) == 0 || g.r.Float64() < pAlloc {
			g.alloc(size(g.r))
			allocs++
		} else {
			g.free(g.randomLive())
		}
		if len(g.live) > 0 && g.r.Float64() < reallocP {
			v := g.randomLive()
			g.realloc(v, grow(g.r, g.size[v], lo, hi))
		}
	}
	g.freeAll()
}

// largeMix allocates p.Live blocks (or p.N, if fewer), then replaces a
// random live block at each further allocation; one step in fifty also
// reallocs a random live block, within its own range (large or huge).
// Everything is freed at the end. Reallocs are rare on purpose: a moving
// realloc of a 1 MiB block copies it into pages never touched before, and
// with one in ten the page faults and the copy were three quarters of every
// allocator's time, hiding the placement this kind is meant to measure.
func (g *gen) largeMix(p Params) {
	allocs := 0
	for ; allocs < min(p.Live, p.N) && g.err == nil; allocs++ {
		g.alloc(largeMixSize(g.r))
	}
	for ; allocs < p.N && g.err == nil; allocs++ {
		g.free(g.randomLive())
		g.alloc(largeMixSize(g.r))
		if g.r.IntN(50) == 0 {
			v := g.randomLive()
			lo, hi := uint64(largeMin), uint64(mixLargeMax)
			if g.size[v] >= mixHugeMin {
				lo, hi = mixHugeMin, hugeMax
			}
			g.realloc(v, grow(g.r, g.size[v], lo, hi))
		}
	}
	g.freeAll()
}

// requests: requests of PerRequest allocations on average, each like the
// core benchmarks' request: about 20% of the blocks live to the request
// end, 3% reallocs.
func (g *gen) requests(p Params) {
	left := p.N
	for left > 0 && g.err == nil {
		n := min(left, p.PerRequest/2+g.r.IntN(p.PerRequest+1))
		n = max(n, 1)
		g.scheduled(n, 0.2, 0.03, phpRequestSize, 1, 64*kib)
		g.requestEnd()
		left -= n
	}
}

// Describe returns a one-line summary of a trace: records by op, peak live
// blocks, requests and the size range.
func Describe(t *trace.Trace) string {
	lo, hi := uint64(math.MaxUint64), uint64(0)
	var bytes uint64
	for _, r := range t.Records {
		if r.Op == trace.OpAlloc || r.Op == trace.OpRealloc {
			lo, hi = min(lo, r.Size), max(hi, r.Size)
			bytes += r.Size
		}
	}
	if hi == 0 {
		lo = 0
	}
	return fmt.Sprintf("%d records: %d allocs, %d frees, %d reallocs, %d request ends; at most %d live; sizes %d..%d; %d bytes asked",
		len(t.Records), t.Allocs, t.Frees, t.Reallocs, t.Requests, t.MaxLive, lo, hi, bytes)
}

// sortedKinds is Kinds as strings, for flag help.
func sortedKinds() []string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	slices.Sort(s)
	return s
}

// KindNames returns the kind names, sorted, joined by "|".
func KindNames() string { return strings.Join(sortedKinds(), "|") }
