package bench

// The peer benchmarks run each workload of core_test.go on zmm and on the
// alternatives a Go programmer has, as sub-benchmarks named alloc=NAME, so
// that one run compares them side by side and benchstat can put the
// allocators in columns:
//
//	go test ./bench -run XXX -bench Peers -count 10 > peers.txt
//	benchstat -col /alloc peers.txt
//
// The allocators:
//
//	zmm      a zmm.Heap (Alloc, Free, Realloc, Reset)
//	go       Go's allocator: make, the block dropped for the collector
//	pool     a sync.Pool per size class (the pairs and the small mix,
//	         where every block has a class)
//	modernc  modernc.org/memory's Allocator (UnsafeMalloc, UnsafeFree,
//	         UnsafeRealloc): pure Go, mmap'd, not thread-safe; it has no
//	         request lifecycle, so a request's survivors are freed one by
//	         one at its end
//	arena    Go's arena experiment (arena_test.go, built only with
//	         GOEXPERIMENT=arenas): an arena per request or per growth,
//	         arena.MakeSlice per block, arena.Free at the end; there is no
//	         per-block free, so it has no pair or mix variant
//
// Every benchmark reports the meter's metrics (measure_test.go): gc-cycles
// (zmm's must be 0), gc-pause-ns/op, cpu-ns/op (the whole process's CPU,
// the collector's included: the "total CPU" of the request workload),
// gc-cpu-ns/op and peak-rss-MiB.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"

	"modernc.org/memory"

	"github.com/gozmm/zmm/bins"
)

// arenaPeers holds the arena variants of the workloads; arena_test.go sets
// them when the arena experiment is built in, and they are nil otherwise.
var arenaPeers struct {
	request func(p *requestPlan, live [][]byte)
	growth  func()
}

// ---------------------------------------------------------------------------
// Pairs: Alloc immediately followed by Free, one size per sub-benchmark.

type pairPeer struct {
	name string
	run  func(b *testing.B, size int)
}

var pairPeers = []pairPeer{
	{"zmm", zmmPairMetered},
	{"go", goPairMetered},
	{"pool", poolPair},
	{"modernc", moderncPair},
}

func runPairs(b *testing.B, sizes []int, name func(int) string) {
	for _, size := range sizes {
		b.Run(name(size), func(b *testing.B) {
			for _, p := range pairPeers {
				b.Run("alloc="+p.name, func(b *testing.B) { p.run(b, size) })
			}
		})
	}
}

func smallPairSizes() []int {
	var s []int
	for _, bin := range smallBins() {
		s = append(s, int(bins.Size[bin]))
	}
	return s
}

func BenchmarkPeersSmallPair(b *testing.B) {
	runPairs(b, smallPairSizes(), func(n int) string { return fmt.Sprintf("size=%d", n) })
}

func BenchmarkPeersLargePair(b *testing.B) {
	runPairs(b, largeSizes, func(n int) string { return "size=" + sizeName(n) })
}

func BenchmarkPeersHugePair(b *testing.B) {
	runPairs(b, hugeSizes, func(n int) string { return "size=" + sizeName(n) })
}

// zmmPairMetered is core_test.go's zmmPair with the full meter.
func zmmPairMetered(b *testing.B, size int) {
	h := newHeap(b)
	defer h.Close()
	h.Free(h.Alloc(uintptr(size))) // warm: map the run or the huge block once
	b.ReportAllocs()
	m := startMeter()
	for b.Loop() {
		h.Free(h.Alloc(uintptr(size)))
	}
	m.report(b)
}

// goPairMetered is core_test.go's goPair with the full meter: the block
// goes into a ring of recent blocks, so that the collector has live data
// to mark, as it would in a program.
func goPairMetered(b *testing.B, size int) {
	mask := ringFor(size)
	b.ReportAllocs()
	m := startMeter()
	i := 0
	for b.Loop() {
		sinkRing[i%mask] = make([]byte, size)
		i++
	}
	m.report(b)
	clear(sinkRing[:])
}

// poolPair takes a block from a sync.Pool of blocks of the size and puts
// it back. The pool holds *[]byte so that Put does not allocate.
func poolPair(b *testing.B, size int) {
	pool := sync.Pool{New: func() any {
		s := make([]byte, size)
		return &s
	}}
	pool.Put(pool.Get())
	b.ReportAllocs()
	m := startMeter()
	for b.Loop() {
		pool.Put(pool.Get())
	}
	m.report(b)
}

func moderncPair(b *testing.B, size int) {
	var a memory.Allocator
	defer a.Close()
	p, err := a.UnsafeMalloc(size)
	if err != nil {
		b.Fatal(err)
	}
	_ = a.UnsafeFree(p)
	b.ReportAllocs()
	m := startMeter()
	for b.Loop() {
		p, err := a.UnsafeMalloc(size)
		if err != nil {
			b.Fatal(err)
		}
		_ = a.UnsafeFree(p)
	}
	m.report(b)
}

// ---------------------------------------------------------------------------
// SmallMix: a window of live small blocks of random sizes (the PHP-like
// mix of core_test.go without its large tail, 16 to 3072 bytes); each
// operation frees the block in a random slot and allocates one of the
// next size in its place, writing 8 bytes into it.

const mixOps = 1 << 16 // the pre-generated operations, replayed in a loop

var mixLives = []int{1 << 10, 1 << 16}

type mixPlan struct {
	sizes []uint32 // per operation: the new block's size
	bins  []uint8  // and its bin (for the pools)
	slots []uint32 // and the slot it goes to
	first []uint32 // the sizes of the blocks the window starts with
}

func mixSize(r *rand.Rand) uint32 {
	for {
		if s := phpSize(r); s <= bins.MaxSize {
			return s
		}
	}
}

var mixCache = map[int]*mixPlan{}

func mixPlanFor(live int) *mixPlan {
	if p := mixCache[live]; p != nil {
		return p
	}
	r := rand.New(rand.NewPCG(seed, uint64(live)+7))
	p := &mixPlan{
		sizes: make([]uint32, mixOps),
		bins:  make([]uint8, mixOps),
		slots: make([]uint32, mixOps),
		first: make([]uint32, live),
	}
	for i := range p.first {
		p.first[i] = mixSize(r)
	}
	for i := range mixOps {
		p.sizes[i] = mixSize(r)
		p.bins[i] = uint8(bins.SizeToBin(uintptr(p.sizes[i])))
		p.slots[i] = r.Uint32N(uint32(live))
	}
	mixCache[live] = p
	return p
}

type mixPeer struct {
	name string
	run  func(b *testing.B, p *mixPlan)
}

var mixPeers = []mixPeer{
	{"zmm", zmmMix},
	{"go", goMix},
	{"pool", poolMix},
	{"modernc", moderncMix},
}

func BenchmarkPeersSmallMix(b *testing.B) {
	for _, live := range mixLives {
		b.Run(fmt.Sprintf("live=%d", live), func(b *testing.B) {
			p := mixPlanFor(live)
			for _, peer := range mixPeers {
				b.Run("alloc="+peer.name, func(b *testing.B) { peer.run(b, p) })
			}
		})
	}
}

func zmmMix(b *testing.B, p *mixPlan) {
	h := newHeap(b)
	defer h.Close()
	live := make([]unsafe.Pointer, len(p.first))
	for i, s := range p.first {
		live[i] = h.Alloc(uintptr(s))
	}
	b.ReportAllocs()
	m := startMeter()
	i := 0
	for b.Loop() {
		k := i & (mixOps - 1)
		s := p.slots[k]
		h.Free(live[s])
		q := h.Alloc(uintptr(p.sizes[k]))
		*(*uint64)(q) = uint64(i)
		live[s] = q
		i++
	}
	m.report(b)
}

func goMix(b *testing.B, p *mixPlan) {
	live := make([][]byte, len(p.first))
	for i, s := range p.first {
		live[i] = make([]byte, s)
	}
	b.ReportAllocs()
	m := startMeter()
	i := 0
	for b.Loop() {
		k := i & (mixOps - 1)
		q := make([]byte, p.sizes[k])
		binary.LittleEndian.PutUint64(q, uint64(i))
		live[p.slots[k]] = q
		i++
	}
	m.report(b)
}

// poolMix keeps a sync.Pool per bin; a block is taken from its size's bin
// and put back into it when its slot is reused.
func poolMix(b *testing.B, p *mixPlan) {
	var pools [bins.NumBins]sync.Pool
	for bin := range pools {
		size := bins.Size[bin]
		pools[bin].New = func() any {
			s := make([]byte, size)
			return &s
		}
	}
	type slot struct {
		buf *[]byte
		bin uint8
	}
	live := make([]slot, len(p.first))
	for i, s := range p.first {
		bin := uint8(bins.SizeToBin(uintptr(s)))
		live[i] = slot{pools[bin].Get().(*[]byte), bin}
	}
	b.ReportAllocs()
	m := startMeter()
	i := 0
	for b.Loop() {
		k := i & (mixOps - 1)
		s := &live[p.slots[k]]
		pools[s.bin].Put(s.buf)
		bin := p.bins[k]
		buf := pools[bin].Get().(*[]byte)
		binary.LittleEndian.PutUint64(*buf, uint64(i))
		*s = slot{buf, bin}
		i++
	}
	m.report(b)
}

func moderncMix(b *testing.B, p *mixPlan) {
	var a memory.Allocator
	defer a.Close()
	live := make([]unsafe.Pointer, len(p.first))
	for i, s := range p.first {
		q, err := a.UnsafeMalloc(int(s))
		if err != nil {
			b.Fatal(err)
		}
		live[i] = q
	}
	b.ReportAllocs()
	m := startMeter()
	i := 0
	for b.Loop() {
		k := i & (mixOps - 1)
		s := p.slots[k]
		_ = a.UnsafeFree(live[s])
		q, err := a.UnsafeMalloc(int(p.sizes[k]))
		if err != nil {
			b.Fatal(err)
		}
		*(*uint64)(q) = uint64(i)
		live[s] = q
		i++
	}
	m.report(b)
}

// ---------------------------------------------------------------------------
// Request: core_test.go's PHP-like request. cpu-ns/op is the total CPU per
// request, the collector's work included.

var survivorCache = map[*requestPlan][]int32{}

// survivors lists the blocks of p that live to the end of the request.
func survivors(p *requestPlan) []int32 {
	if s, ok := survivorCache[p]; ok {
		return s
	}
	freed := make([]bool, len(p.sizes))
	for _, v := range p.ops {
		if v < 0 {
			freed[^v] = true
		}
	}
	s := []int32{}
	for i, f := range freed {
		if !f {
			s = append(s, int32(i))
		}
	}
	survivorCache[p] = s
	return s
}

// moderncRequest runs one request on a; the survivors are freed one by one
// at its end.
func moderncRequest(a *memory.Allocator, p *requestPlan, surv []int32, ptrs []unsafe.Pointer) error {
	sizes := p.sizes
	for _, v := range p.ops {
		if v >= 0 {
			q, err := a.UnsafeMalloc(int(sizes[v]))
			if err != nil {
				return err
			}
			ptrs[v] = q
		} else {
			_ = a.UnsafeFree(ptrs[^v])
		}
	}
	for _, j := range surv {
		_ = a.UnsafeFree(ptrs[j])
	}
	return nil
}

func BenchmarkPeersRequest(b *testing.B) {
	for _, rs := range requestSizes {
		b.Run("N="+rs.name, func(b *testing.B) {
			p := planFor(rs.n)
			b.Run("alloc=zmm", func(b *testing.B) {
				ptrs := make([]unsafe.Pointer, rs.n)
				h := newHeap(b)
				defer h.Close()
				zmmRequest(h, p, ptrs) // warm: map the chunks once
				b.ReportAllocs()
				m := startMeter()
				for b.Loop() {
					zmmRequest(h, p, ptrs)
				}
				m.report(b)
			})
			b.Run("alloc=go", func(b *testing.B) {
				live := make([][]byte, rs.n)
				b.ReportAllocs()
				m := startMeter()
				for b.Loop() {
					goRequest(p, live)
				}
				m.report(b)
			})
			b.Run("alloc=modernc", func(b *testing.B) {
				var a memory.Allocator
				defer a.Close()
				ptrs := make([]unsafe.Pointer, rs.n)
				surv := survivors(p)
				if err := moderncRequest(&a, p, surv, ptrs); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				m := startMeter()
				for b.Loop() {
					if err := moderncRequest(&a, p, surv, ptrs); err != nil {
						b.Fatal(err)
					}
				}
				m.report(b)
			})
			if arenaPeers.request != nil {
				b.Run("alloc=arena", func(b *testing.B) {
					live := make([][]byte, rs.n)
					b.ReportAllocs()
					m := startMeter()
					for b.Loop() {
						arenaPeers.request(p, live)
					}
					m.report(b)
				})
			}
		})
	}
}

// ---------------------------------------------------------------------------
// ReallocGrowth: a buffer doubling from 16 bytes to 1 MiB.

func moderncGrowth(a *memory.Allocator) error {
	p, err := a.UnsafeMalloc(16)
	if err != nil {
		return err
	}
	for size := 32; size <= growthMax; size *= 2 {
		if p, err = a.UnsafeRealloc(p, size); err != nil {
			return err
		}
	}
	return a.UnsafeFree(p)
}

func BenchmarkPeersReallocGrowth(b *testing.B) {
	b.Run("alloc=zmm", func(b *testing.B) {
		h := newHeap(b)
		defer h.Close()
		zmmGrowth(h)
		b.ReportAllocs()
		m := startMeter()
		for b.Loop() {
			zmmGrowth(h)
		}
		m.report(b)
	})
	for _, v := range []struct {
		name string
		f    func()
	}{{"go-copy", goGrowthCopy}, {"go-append", goGrowthAppend}, {"arena", arenaPeers.growth}} {
		if v.f == nil {
			continue
		}
		b.Run("alloc="+v.name, func(b *testing.B) {
			b.ReportAllocs()
			m := startMeter()
			for b.Loop() {
				v.f()
			}
			m.report(b)
			growthSink = nil
		})
	}
	b.Run("alloc=modernc", func(b *testing.B) {
		var a memory.Allocator
		defer a.Close()
		if err := moderncGrowth(&a); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		m := startMeter()
		for b.Loop() {
			if err := moderncGrowth(&a); err != nil {
				b.Fatal(err)
			}
		}
		m.report(b)
	})
}

// ---------------------------------------------------------------------------

// TestPeersRun runs every peer workload once at a small size, so that the
// benchmarks keep working when they are not run.
func TestPeersRun(t *testing.T) {
	var a memory.Allocator
	defer a.Close()
	for _, size := range append(smallPairSizes(), largeSizes...) {
		q, err := a.UnsafeMalloc(size)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.UnsafeFree(q); err != nil {
			t.Fatal(err)
		}
	}

	p := newRequestPlan(2000)
	surv := survivors(p)
	if want := len(p.sizes) - p.frees; len(surv) != want {
		t.Fatalf("%d survivors, want %d", len(surv), want)
	}
	if err := moderncRequest(&a, p, surv, make([]unsafe.Pointer, len(p.sizes))); err != nil {
		t.Fatal(err)
	}
	if arenaPeers.request != nil {
		arenaPeers.request(p, make([][]byte, len(p.sizes)))
	}
	if err := moderncGrowth(&a); err != nil {
		t.Fatal(err)
	}
	if arenaPeers.growth != nil {
		arenaPeers.growth()
		growthSink = nil
	}

	mp := mixPlanFor(mixLives[0])
	for i := range mixOps {
		if s := mp.sizes[i]; s < 16 || s > bins.MaxSize || bins.Size[mp.bins[i]] < s || int(mp.slots[i]) >= mixLives[0] {
			t.Fatalf("mix op %d: size %d bin %d slot %d", i, s, mp.bins[i], mp.slots[i])
		}
	}

	m := startMeter()
	r := m.read()
	if r.cpu < 0 || r.wall <= 0 {
		t.Fatalf("meter reading %+v", r)
	}
	if hwm, rss := procRSS(); hwm == 0 || rss == 0 {
		t.Errorf("VmHWM %d, VmRSS %d: /proc/self/status not read", hwm, rss)
	}
}
