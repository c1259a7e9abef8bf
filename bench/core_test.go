package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/zmm"
)

// ---------------------------------------------------------------------------
// Shared helpers

// seed makes every pre-generated workload the same from run to run.
const seed = 0x5a6d6d // "zmm"

func newHeap(tb testing.TB, opts ...zmm.Option) *zmm.Heap {
	tb.Helper()
	h, err := zmm.New(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// gcMeter counts the Go garbage collections, and their stop-the-world
// pause time, during a benchmark's loop. ReadMemStats stops the world, so
// it is read once before the loop (whose first b.Loop call resets the
// timer) and once after it (when the timer has stopped).
type gcMeter struct {
	numGC uint32
	pause uint64
}

func startGC() gcMeter {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return gcMeter{m.NumGC, m.PauseTotalNs}
}

// report adds "gc-cycles" (collections during the whole run, all
// iterations) and "gc-pause-ns/op" (their pause time per iteration).
func (g gcMeter) report(b *testing.B) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	b.ReportMetric(float64(m.NumGC-g.numGC), "gc-cycles")
	b.ReportMetric(float64(m.PauseTotalNs-g.pause)/float64(max(b.N, 1)), "gc-pause-ns/op")
}

// sizeName prints a byte count the way the sub-benchmarks are named.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprint(n)
}

// sinkRing keeps the last Go allocations reachable so that the Go pair
// benchmarks give the collector real work, as live data would.
var sinkRing [1024][]byte

// ringFor is the number of ring slots kept for Go blocks of size bytes: the
// whole ring for small blocks, fewer for big ones so that the ring holds at
// most about 64 MiB.
func ringFor(size int) int {
	return max(1, min(len(sinkRing), (64<<20)/size))
}

// ---------------------------------------------------------------------------
// Pairs: Alloc immediately followed by Free, one size per sub-benchmark.

// smallBins lists the bins the small pair benchmarks cover. Bin 0 (8 bytes)
// is skipped: zmm's smallest slot is 16 bytes, so sizes below 16 use bin 1.
func smallBins() []int {
	var bs []int
	for bin := 1; bin < bins.NumBins; bin++ {
		bs = append(bs, bin)
	}
	return bs
}

var (
	largeSizes = []int{4 << 10, 64 << 10, 1 << 20}
	hugeSizes  = []int{4 << 20, 16 << 20}
)

func zmmPair(b *testing.B, size int, opts ...zmm.Option) {
	h := newHeap(b, opts...)
	defer h.Close()
	h.Free(h.Alloc(uintptr(size))) // warm: map the run or the huge block once
	b.ReportAllocs()
	g := startGC()
	for b.Loop() {
		h.Free(h.Alloc(uintptr(size)))
	}
	g.report(b)
}

func goPair(b *testing.B, size int) {
	mask := ringFor(size)
	b.ReportAllocs()
	g := startGC()
	i := 0
	for b.Loop() {
		sinkRing[i%mask] = make([]byte, size)
		i++
	}
	g.report(b)
	clear(sinkRing[:])
}

// BenchmarkModes runs a 64-byte alloc+free pair in every mode: what debug
// mode (site capture, guards, free fill), system mode (a Go allocation per
// block) and guard mode (a mapping and a guard page per block) cost next to
// the normal heap.
func BenchmarkModes(b *testing.B) {
	modes := []struct {
		name string
		opts []zmm.Option
	}{
		{"normal", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks)}},
		{"debug", []zmm.Option{zmm.WithDebug(true), zmm.WithLeakReport(nil)}},
		{"system", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeSystem)}},
		{"guard", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard)}},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) { zmmPair(b, 64, m.opts...) })
	}
}

func BenchmarkSmallPair(b *testing.B) {
	for _, bin := range smallBins() {
		size := int(bins.Size[bin])
		b.Run(fmt.Sprintf("bin=%d_size=%d", bin, size), func(b *testing.B) { zmmPair(b, size) })
	}
}

func BenchmarkGoSmallPair(b *testing.B) {
	for _, bin := range smallBins() {
		size := int(bins.Size[bin])
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) { goPair(b, size) })
	}
}

func BenchmarkLargePair(b *testing.B) {
	for _, size := range largeSizes {
		b.Run("size="+sizeName(size), func(b *testing.B) { zmmPair(b, size) })
	}
}

func BenchmarkGoLargePair(b *testing.B) {
	for _, size := range largeSizes {
		b.Run("size="+sizeName(size), func(b *testing.B) { goPair(b, size) })
	}
}

func BenchmarkHugePair(b *testing.B) {
	for _, size := range hugeSizes {
		b.Run("size="+sizeName(size), func(b *testing.B) { zmmPair(b, size) })
	}
}

func BenchmarkGoHugePair(b *testing.B) {
	for _, size := range hugeSizes {
		b.Run("size="+sizeName(size), func(b *testing.B) { goPair(b, size) })
	}
}

// ---------------------------------------------------------------------------
// FreeAcrossChunks: free and re-allocate small blocks spread over a heap of
// many chunks, in random order. Free's fast path knows up to 64 chunks from
// a set in the heap's state and the others from the frame table, so
// chunks=256 should cost about what chunks=16 does; before the frame-table
// fallback every free outside the set took the slow path. Each chunk holds
// an untouched large block and one page of 48-byte slots: the heap maps
// 512 MiB but touches about 1 MiB, so the caches stay warm and this counts
// instructions, not memory latency (GCPressure measures that).

func BenchmarkFreeAcrossChunks(b *testing.B) {
	for _, chunks := range []int{16, 256} {
		b.Run(fmt.Sprintf("chunks=%d", chunks), func(b *testing.B) {
			h := newHeap(b)
			defer h.Close()
			blocks := spreadBlocks(b, h, chunks, 48)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := blocks[i]
				h.Free(p)
				if h.Alloc(48) != p { // LIFO: the slot just freed
					b.Fatal("Alloc did not return the slot just freed")
				}
				if i++; i == len(blocks) {
					i = 0
				}
			}
		})
	}
}

// spreadBlocks fills a heap with chunks chunks, each two large blocks of
// all its pages but one (a page run is half a chunk at most) and, in that
// page, a run of size-byte slots, and returns every slot, shuffled.
func spreadBlocks(b *testing.B, h *zmm.Heap, chunks int, size uintptr) []unsafe.Pointer {
	var blocks []unsafe.Pointer
	chunkOf := func(p unsafe.Pointer) uintptr { return uintptr(p) &^ (chunk.Size - 1) }
	for range chunks {
		large := h.Alloc(zmm.MaxLargeSize)
		h.Alloc((chunk.Pages-2)*chunk.PageSize - zmm.MaxLargeSize)
		for {
			p := h.Alloc(size)
			blocks = append(blocks, p)
			if chunkOf(p) == chunkOf(large) {
				break
			}
		}
	}
	if got := h.Stats().Chunks; got != chunks {
		b.Fatalf("%d chunks, want %d", got, chunks)
	}
	r := rand.New(rand.NewPCG(seed, uint64(chunks)))
	r.Shuffle(len(blocks), func(i, j int) { blocks[i], blocks[j] = blocks[j], blocks[i] })
	return blocks
}

// ---------------------------------------------------------------------------
// Request: a PHP-like request, a stream of allocations most of which are
// freed during the request; Reset drops the rest at its end.

// requestPlan is a pre-generated request: sizes[i] is the size of block i,
// and ops is the order of events: v >= 0 allocates block v, v < 0 frees
// block ^v.
type requestPlan struct {
	sizes []uint32
	ops   []int32
	frees int // blocks freed during the request
	bytes int // bytes asked for in all
}

// phpSize draws a request size with roughly the shape of a PHP request:
// mostly zvals, hash buckets and short strings (16..256 bytes), some
// bigger strings and arrays up to the largest bin, and a few large blocks.
func phpSize(r *rand.Rand) uint32 {
	switch x := r.IntN(1000); {
	case x < 600:
		return 16 + r.Uint32N(64-16+1) // 16..64
	case x < 880:
		return 65 + r.Uint32N(256-65+1) // 65..256
	case x < 990:
		return 257 + r.Uint32N(bins.MaxSize-257+1) // 257..3072
	default:
		return 4096 + r.Uint32N(60<<10+1) // 4 KiB..64 KiB
	}
}

// smallSize draws a size from the 16..256-byte part of the PHP-like mix.
func smallSize(r *rand.Rand) uint32 {
	if r.IntN(1000) < 682 { // 600/880 of the mix's 16..256 part
		return 16 + r.Uint32N(64-16+1)
	}
	return 65 + r.Uint32N(256-65+1)
}

func newRequestPlan(n int) *requestPlan {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	p := &requestPlan{sizes: make([]uint32, n)}
	die := make([]int32, n) // step after which block i is freed, -1: never
	count := make([]int32, n+1)
	for i := range n {
		p.sizes[i] = phpSize(r)
		p.bytes += int(p.sizes[i])
		die[i] = -1
		if r.IntN(100) >= 80 { // ~20% live until the end of the request
			continue
		}
		var life int
		switch q := r.IntN(100); {
		case q < 70:
			life = 1 + r.IntN(16) // temporaries
		case q < 95:
			life = 1 + r.IntN(1024)
		default:
			life = 1 + r.IntN(n)
		}
		d := min(i+life, n-1)
		die[i] = int32(d)
		count[d+1]++
		p.frees++
	}
	// Bucket the frees by step (a counting sort): start[t] is where the
	// blocks dying at step t begin in order.
	for t := 1; t <= n; t++ {
		count[t] += count[t-1]
	}
	order := make([]int32, p.frees)
	fill := count[:n]
	for i, d := range die {
		if d >= 0 {
			order[fill[d]] = int32(i)
			fill[d]++
		}
	}
	// fill[t] is now the end of step t's bucket, which is the start of
	// step t+1's.
	p.ops = make([]int32, 0, n+p.frees)
	start := int32(0)
	for t := range n {
		p.ops = append(p.ops, int32(t))
		for _, j := range order[start:fill[t]] {
			p.ops = append(p.ops, ^j)
		}
		start = fill[t]
	}
	return p
}

var planCache = map[int]*requestPlan{}

func planFor(n int) *requestPlan {
	if p := planCache[n]; p != nil {
		return p
	}
	p := newRequestPlan(n)
	planCache[n] = p
	return p
}

// zmmRequest runs one request on h; ptrs has a slot per block.
func zmmRequest(h *zmm.Heap, p *requestPlan, ptrs []unsafe.Pointer) {
	sizes := p.sizes
	for _, v := range p.ops {
		if v >= 0 {
			ptrs[v] = h.Alloc(uintptr(sizes[v]))
		} else {
			h.Free(ptrs[^v])
		}
	}
	h.Reset()
}

// goRequest runs the same request with Go's allocator: a freed block is
// dropped from live, and live is cleared at the end of the request.
func goRequest(p *requestPlan, live [][]byte) {
	sizes := p.sizes
	for _, v := range p.ops {
		if v >= 0 {
			live[v] = make([]byte, sizes[v])
		} else {
			live[^v] = nil
		}
	}
	clear(live)
}

var requestSizes = []struct {
	name string
	n    int
}{{"1e3", 1e3}, {"1e4", 1e4}, {"1e6", 1e6}}

func BenchmarkRequest(b *testing.B) {
	for _, rs := range requestSizes {
		b.Run("N="+rs.name, func(b *testing.B) {
			p := planFor(rs.n)
			ptrs := make([]unsafe.Pointer, rs.n)
			h := newHeap(b)
			defer h.Close()
			zmmRequest(h, p, ptrs) // warm: map the chunks once
			b.ReportAllocs()
			g := startGC()
			for b.Loop() {
				zmmRequest(h, p, ptrs)
			}
			g.report(b)
			b.ReportMetric(float64(h.RealPeakUsage())/(1<<20), "peak-MiB")
		})
	}
}

func BenchmarkGoRequest(b *testing.B) {
	for _, rs := range requestSizes {
		b.Run("N="+rs.name, func(b *testing.B) {
			p := planFor(rs.n)
			live := make([][]byte, rs.n)
			b.ReportAllocs()
			g := startGC()
			for b.Loop() {
				goRequest(p, live)
			}
			g.report(b)
		})
	}
}

// ---------------------------------------------------------------------------
// ResetOnly: the time of Reset alone on a heap holding many small blocks.
// Reset never visits blocks, so it should cost about the same for 1e6
// blocks as for one (the target is ≤ 1 ms).

func smallSizes(n int) []uint32 {
	r := rand.New(rand.NewPCG(seed, 1))
	s := make([]uint32, n)
	for i := range s {
		s[i] = smallSize(r)
	}
	return s
}

// fill allocates a block of each size and leaves them all live.
func fill(h *zmm.Heap, sizes []uint32) {
	for _, s := range sizes {
		h.Alloc(uintptr(s))
	}
}

// resetBlocks is the number of live blocks BenchmarkResetOnly resets.
const resetBlocks = 1e6

// resetWarm is how many fill+Reset cycles run before the measurement. Reset
// keeps about as many cached chunks as recent requests needed (a running
// average that halves its distance to the peak at each Reset), so the first
// few Resets of a heap also unmap chunks; after these cycles the heap is in
// the steady state of a server repeating the same request.
const resetWarm = 12

// BenchmarkResetOnly times Reset alone: each iteration refills the heap
// with resetBlocks small blocks, then Resets it, and only the Reset is
// timed. The refill costs hundreds of times what the Reset does, so
// stopping the benchmark timer around it (b.StopTimer) would make the
// testing package, which sizes b.N by the timed time alone, ask for tens of
// thousands of iterations: minutes under the default -benchtime=1s.
// Instead the timer runs over whole iterations (so b.N stays small) and
// the Reset alone is timed with the monotonic clock and reported as ns/op,
// which overrides the built-in figure. max-ns is the slowest Reset.
func BenchmarkResetOnly(b *testing.B) {
	b.Run("blocks=1e6", func(b *testing.B) {
		sizes := smallSizes(resetBlocks)
		h := newHeap(b)
		defer h.Close()
		for range resetWarm {
			fill(h, sizes)
			h.Reset()
		}
		b.ReportAllocs()
		g := startGC()
		var total, slowest time.Duration
		for b.Loop() {
			fill(h, sizes)
			t0 := time.Now()
			h.Reset()
			d := time.Since(t0)
			total += d
			slowest = max(slowest, d)
		}
		g.report(b)
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
		b.ReportMetric(float64(slowest.Nanoseconds()), "max-ns")
	})
}

// ---------------------------------------------------------------------------
// ShortRequest: a request that takes a few blocks of every bin and ends.
// Each of its first allocations in a bin starts a new run (Reset gave all
// runs back), so it measures what a new run costs: threading its free
// slots onto the free list, whose first write to each line misses the
// cache. PHP requests are mostly short, so this is their common case.

func BenchmarkShortRequest(b *testing.B) {
	for _, perBin := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("perBin=%d", perBin), func(b *testing.B) {
			h := newHeap(b)
			defer h.Close()
			request := func() {
				for bin := uint32(1); bin < bins.NumBins; bin++ {
					for range perBin {
						h.Alloc(uintptr(bins.Size[bin]))
					}
				}
				h.Reset()
			}
			request() // warm: map the chunk once
			b.ReportAllocs()
			g := startGC()
			for b.Loop() {
				request()
			}
			g.report(b)
		})
	}
}

// ---------------------------------------------------------------------------
// ReallocGrowth: a buffer doubling from 16 bytes to 1 MiB.

const growthMax = 1 << 20

func zmmGrowth(h *zmm.Heap) {
	p := h.Alloc(16)
	for size := uintptr(32); size <= growthMax; size *= 2 {
		p = h.Realloc(p, size)
	}
	h.Free(p)
}

var growthSink []byte

// goGrowthCopy mirrors Realloc: a new slice of twice the size, the old
// contents copied over.
func goGrowthCopy() {
	buf := make([]byte, 16)
	for size := 32; size <= growthMax; size *= 2 {
		nb := make([]byte, size)
		copy(nb, buf)
		buf = nb
	}
	growthSink = buf
}

// goGrowthAppend lets append's growth policy decide (slices.Grow).
func goGrowthAppend() {
	buf := make([]byte, 16)
	for size := 32; size <= growthMax; size *= 2 {
		buf = slices.Grow(buf, size-len(buf))[:size]
	}
	growthSink = buf
}

func BenchmarkReallocGrowth(b *testing.B) {
	h := newHeap(b)
	defer h.Close()
	zmmGrowth(h)
	b.ReportAllocs()
	g := startGC()
	for b.Loop() {
		zmmGrowth(h)
	}
	g.report(b)
}

func BenchmarkGoReallocGrowth(b *testing.B) {
	for _, v := range []struct {
		name string
		f    func()
	}{{"copy", goGrowthCopy}, {"append", goGrowthAppend}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			g := startGC()
			for b.Loop() {
				v.f()
			}
			g.report(b)
			growthSink = nil
		})
	}
}

// ---------------------------------------------------------------------------

// TestWorkloadsRun runs every workload once at a small size, so that the
// benchmarks keep working when they are not run.
func TestWorkloadsRun(t *testing.T) {
	h := newHeap(t)
	defer h.Close()
	for _, bin := range smallBins() {
		size := uintptr(bins.Size[bin])
		h.Free(h.Alloc(size))
		sinkRing[0] = make([]byte, size)
	}
	for _, size := range slices.Concat(largeSizes, hugeSizes) {
		h.Free(h.Alloc(uintptr(size)))
	}
	if u := h.Usage(); u != 0 {
		t.Fatalf("Usage after the pairs = %d, want 0", u)
	}
	clear(sinkRing[:])

	const n = 2000
	p := newRequestPlan(n)
	if len(p.ops) != n+p.frees {
		t.Fatalf("plan has %d ops, want %d", len(p.ops), n+p.frees)
	}
	if share := float64(p.frees) / n; share < 0.7 || share > 0.9 {
		t.Errorf("plan frees %.0f%% of its blocks, want about 80%%", 100*share)
	}
	freed := make([]bool, n)
	allocated := make([]bool, n)
	for _, v := range p.ops {
		if v >= 0 {
			allocated[v] = true
			continue
		}
		if !allocated[^v] || freed[^v] {
			t.Fatalf("plan frees block %d before allocating it or twice", ^v)
		}
		freed[^v] = true
	}
	zmmRequest(h, p, make([]unsafe.Pointer, n))
	if u := h.Usage(); u != 0 {
		t.Fatalf("Usage after Reset = %d, want 0", u)
	}
	goRequest(p, make([][]byte, n))

	fill(h, smallSizes(1000))
	h.Reset()

	zmmGrowth(h)
	goGrowthCopy()
	goGrowthAppend()
	if len(growthSink) != growthMax {
		t.Fatalf("growth ends at %d bytes, want %d", len(growthSink), growthMax)
	}
	growthSink = nil
	if u := h.Usage(); u != 0 {
		t.Fatalf("Usage after the growth = %d, want 0", u)
	}
}
