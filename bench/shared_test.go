package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// The shared allocator (issue 18) against what a concurrent Go program has
// without it: a single-owner Heap per goroutine (where the workload allows:
// only where no block crosses goroutines), one Heap behind a sync.Mutex
// (alloc=mutex: what the package-level functions were before they were
// served by a Shared), and Go's own allocator (garbage collection
// included); and the package-level functions as they are (alloc=package:
// zmm.Alloc and zmm.Free, the process-wide default Shared, made with the
// environment's options, so that ZMM_DEBUG or ZMM_ALLOC make it serial).
// alloc=shared is a Shared of its own (chunk mode, debug off). Run with
// -cpu 1,2,4,... for the scaling: every benchmark below uses GOMAXPROCS
// goroutines at once.
//
//	go test ./bench -run XXX -bench 'Shared' -cpu 1,2 -count 10

// sharedAlloc is one way of allocating from many goroutines, any of which
// may free a block another one allocated.
type sharedAlloc struct {
	name  string
	alloc func(size uintptr) unsafe.Pointer
	free  func(p unsafe.Pointer)
	done  func()
}

func sharedAllocs(b *testing.B) []func() sharedAlloc {
	return []func() sharedAlloc{
		func() sharedAlloc {
			a, err := zmm.NewShared(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
			if err != nil {
				b.Fatal(err)
			}
			return sharedAlloc{"shared", a.Alloc, a.Free, a.Close}
		},
		func() sharedAlloc {
			return sharedAlloc{"package", zmm.Alloc, zmm.Free, func() {}}
		},
		func() sharedAlloc { return mutexHeap(b) },
	}
}

// mutexHeap is one Heap (chunk mode, debug off) behind a sync.Mutex, which
// every call of every goroutine takes.
func mutexHeap(tb testing.TB) sharedAlloc {
	h := newHeap(tb, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	var mu sync.Mutex
	return sharedAlloc{"mutex",
		func(size uintptr) unsafe.Pointer {
			mu.Lock()
			p := h.Alloc(size)
			mu.Unlock()
			return p
		},
		func(p unsafe.Pointer) {
			mu.Lock()
			h.Free(p)
			mu.Unlock()
		},
		h.Close}
}

// goAlloc allocates from Go's heap: the block escapes through its result.
// There is no free: the garbage collector takes the blocks dropped.
func goAlloc(size uintptr) unsafe.Pointer {
	return unsafe.Pointer(unsafe.SliceData(make([]byte, size)))
}

// BenchmarkSharedPair is the local alloc+free pair of one goroutine: the
// shared allocator's fast paths against a single-owner Heap's (target:
// at most 1.3x); the package-level functions and the mutex heap for
// reference.
func BenchmarkSharedPair(b *testing.B) {
	for _, size := range []uintptr{64, 5000} {
		b.Run(fmt.Sprintf("size=%d/alloc=heap", size), func(b *testing.B) {
			h := newHeap(b, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
			defer h.Close()
			h.Free(h.Alloc(size))
			b.ReportAllocs()
			for b.Loop() {
				h.Free(h.Alloc(size))
			}
		})
		b.Run(fmt.Sprintf("size=%d/alloc=shared", size), func(b *testing.B) {
			a := newShared(b)
			defer a.Close()
			a.Free(a.Alloc(size))
			b.ReportAllocs()
			for b.Loop() {
				a.Free(a.Alloc(size))
			}
		})
		b.Run(fmt.Sprintf("size=%d/alloc=package", size), func(b *testing.B) {
			zmm.Free(zmm.Alloc(size))
			b.ReportAllocs()
			for b.Loop() {
				zmm.Free(zmm.Alloc(size))
			}
		})
		b.Run(fmt.Sprintf("size=%d/alloc=mutex", size), func(b *testing.B) {
			m := mutexHeap(b)
			defer m.done()
			m.free(m.alloc(size))
			b.ReportAllocs()
			for b.Loop() {
				m.free(m.alloc(size))
			}
		})
	}
}

func newShared(tb testing.TB) *zmm.Shared {
	tb.Helper()
	a, err := zmm.NewShared(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// churnSizes are the block sizes of the churn benchmarks: 16 B to 3 KiB.
func churnSizes() []uintptr {
	r := rand.New(rand.NewPCG(seed, 18))
	s := make([]uintptr, 1024)
	for i := range s {
		s[i] = uintptr(16 + r.IntN(3072-16+1))
	}
	return s
}

// BenchmarkSharedLocalChurn: every goroutine allocates and frees its own
// blocks (a ring of 64 live ones). ns/op is per alloc+free pair, over all
// goroutines: perfect scaling keeps it at 1/GOMAXPROCS of the one-goroutine
// figure.
func BenchmarkSharedLocalChurn(b *testing.B) {
	sizes := churnSizes()
	run := func(b *testing.B, alloc func(uintptr) unsafe.Pointer, free func(unsafe.Pointer)) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var ring [64]unsafe.Pointer
			i := 0
			for pb.Next() {
				slot := &ring[i&63]
				if *slot != nil {
					free(*slot)
				}
				*slot = alloc(sizes[i&1023])
				i++
			}
			for _, p := range ring {
				if p != nil {
					free(p)
				}
			}
		})
	}
	b.Run("alloc=shared", func(b *testing.B) {
		a := newShared(b)
		defer a.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) { // run's loop, with direct calls
			var ring [64]unsafe.Pointer
			i := 0
			for pb.Next() {
				slot := &ring[i&63]
				if *slot != nil {
					a.Free(*slot)
				}
				*slot = a.Alloc(sizes[i&1023])
				i++
			}
			for _, p := range ring {
				if p != nil {
					a.Free(p)
				}
			}
		})
	})
	b.Run("alloc=package", func(b *testing.B) { run(b, zmm.Alloc, zmm.Free) })
	b.Run("alloc=mutex", func(b *testing.B) {
		m := mutexHeap(b)
		defer m.done()
		run(b, m.alloc, m.free)
	})
	b.Run("alloc=heap-per-goroutine", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			h := newHeap(b, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
			defer h.Close()
			var ring [64]unsafe.Pointer
			i := 0
			for pb.Next() {
				slot := &ring[i&63]
				if *slot != nil {
					h.Free(*slot)
				}
				*slot = h.Alloc(sizes[i&1023])
				i++
			}
		})
	})
	b.Run("alloc=go", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var ring [64][]byte
			i := 0
			for pb.Next() {
				ring[i&63] = make([]byte, sizes[i&1023])
				i++
			}
		})
	})
}

// BenchmarkSharedProducerConsumer (xmalloc-test): half the goroutines
// (at least one) only allocate, in batches of 256 blocks of 16 B-3 KiB,
// and hand each batch to a consumer, which only frees: every free is a
// remote free. ns/op is per block. Go's allocator drops the batch and
// collects.
func BenchmarkSharedProducerConsumer(b *testing.B) {
	sizes := churnSizes()
	const batch = 256
	run := func(b *testing.B, alloc func(uintptr) unsafe.Pointer, free func(unsafe.Pointer)) {
		pairs := max(runtime.GOMAXPROCS(0)/2, 1)
		batches := b.N/batch + 1
		ch := make(chan *[batch]unsafe.Pointer, 4*pairs)
		pool := sync.Pool{New: func() any { return new([batch]unsafe.Pointer) }}
		b.ReportAllocs()
		b.ResetTimer()
		var producers, consumers sync.WaitGroup
		for p := range pairs {
			n := batches / pairs
			if p < batches%pairs {
				n++
			}
			producers.Add(1)
			go func() {
				defer producers.Done()
				i := p * 97
				for range n {
					bp := pool.Get().(*[batch]unsafe.Pointer)
					for j := range bp {
						bp[j] = alloc(sizes[i&1023])
						i++
					}
					ch <- bp
				}
			}()
			consumers.Add(1)
			go func() {
				defer consumers.Done()
				for bp := range ch {
					if free != nil {
						for _, q := range bp {
							free(q)
						}
					}
					*bp = [batch]unsafe.Pointer{}
					pool.Put(bp)
				}
			}()
		}
		producers.Wait()
		close(ch)
		consumers.Wait()
	}
	for _, mk := range sharedAllocs(b) {
		a := mk()
		b.Run("alloc="+a.name, func(b *testing.B) { run(b, a.alloc, a.free) })
		a.done()
	}
	b.Run("alloc=go", func(b *testing.B) { run(b, goAlloc, nil) })
}

// The cache-scratch and mstress benchmarks below are bench/c/threads.c's
// workloads of those names, with its constants.
const (
	scratchSize   = 8    // cache-scratch: block size
	scratchWrites = 32   // cache-scratch: increments of each byte per op
	mstressBatch  = 1000 // mstress: steps (blocks allocated) of a goroutine
	transfers     = 1000 // mstress: slots of the transfer array
	mstressStream = 2000 // + round * GOMAXPROCS + the goroutine's index
)

// BenchmarkSharedCacheScratch (Hoard's cache-scratch): the benchmark's
// goroutine allocates one 8-byte block per worker goroutine, one after the
// other, and hands each worker one; a worker frees the block it was given,
// then, per op, allocates an 8-byte block, increments each of its bytes 32
// times over and frees it. An allocator that gives a worker back the block
// it freed, on one cache line with the other workers' (passive false
// sharing), scales badly. ns/op is per alloc+writes+free, over all
// goroutines. No heap per goroutine (the given blocks cross goroutines);
// Go's allocator drops the blocks (and 8-byte ones come from its tiny
// allocator, 16 bytes per P at a time).
func BenchmarkSharedCacheScratch(b *testing.B) {
	run := func(b *testing.B, alloc func(uintptr) unsafe.Pointer, free func(unsafe.Pointer)) {
		given := make(chan unsafe.Pointer, runtime.GOMAXPROCS(0)) // RunParallel's goroutines
		for range cap(given) {
			given <- alloc(scratchSize)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			if p := <-given; free != nil {
				free(p)
			}
			for pb.Next() {
				p := (*[scratchSize]byte)(alloc(scratchSize))
				for range scratchWrites {
					for k := range p {
						p[k]++
					}
				}
				if free != nil {
					free(unsafe.Pointer(p))
				}
			}
		})
	}
	for _, mk := range sharedAllocs(b) {
		a := mk()
		b.Run("alloc="+a.name, func(b *testing.B) { run(b, a.alloc, a.free) })
		a.done()
	}
	b.Run("alloc=go", func(b *testing.B) { run(b, goAlloc, nil) })
}

// BenchmarkSharedMstress (mimalloc-bench's mstress): goroutines come and
// go while their blocks outlive them. The benchmark runs rounds of
// GOMAXPROCS fresh goroutines, waiting for each round to end. A goroutine
// makes 1000 steps; step i allocates a block of 16 B-3 KiB into slot i of
// its local array, then with chance 1/2 frees the block of a random slot
// 0..i (if it holds one), and with chance 1/4 moves the block of a random
// slot 0..i (if it holds one) into a random slot of a transfer array of
// 1000 shared by all goroutines (an atomic swap) and frees the block that
// was there (if any), left by a goroutine of this round or an earlier one.
// At its end it frees what is left in its array; the transfer array's last
// blocks are freed after the clock. ns/op is per block allocated (a step),
// over all goroutines; the last round's goroutines make fewer steps where
// b.N is not a whole number of rounds. No heap per goroutine (blocks cross
// and outlive goroutines); Go's allocator drops the blocks.
func BenchmarkSharedMstress(b *testing.B) {
	sizes := churnSizes()
	run := func(b *testing.B, alloc func(uintptr) unsafe.Pointer, free func(unsafe.Pointer)) {
		procs := runtime.GOMAXPROCS(0)
		perRound := procs * mstressBatch
		rounds := (b.N + perRound - 1) / perRound
		var transfer [transfers]unsafe.Pointer
		locals := make([][mstressBatch]unsafe.Pointer, procs) // reused round after round
		pick := func(bits32, n uint64) uint64 { return (bits32 * n) >> 32 }
		worker := func(round, t, steps int) {
			r := rand.NewPCG(seed, uint64(mstressStream+round*procs+t))
			data := &locals[t]
			for i := range uint64(steps) {
				x := r.Uint64()
				data[i] = alloc(sizes[x&1023])
				if x>>10&1 != 0 { // chance 1/2: free a local block
					if j := pick(x>>32, i+1); data[j] != nil {
						if free != nil {
							free(data[j])
						}
						data[j] = nil
					}
				}
				if x>>11&3 == 0 { // chance 1/4: swap one into the transfer array
					y := r.Uint64()
					if j := pick(y>>32, i+1); data[j] != nil {
						q := atomic.SwapPointer(&transfer[pick(y&math.MaxUint32, transfers)], data[j])
						data[j] = nil
						if q != nil && free != nil {
							free(q)
						}
					}
				}
			}
			for i, p := range data {
				if p != nil && free != nil {
					free(p)
				}
				data[i] = nil
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		var wg sync.WaitGroup
		for round := range rounds {
			left := b.N - round*perRound
			for t := range procs {
				steps := mstressBatch
				if left < perRound { // the last round: b.N's remainder
					steps = left / procs
					if t < left%procs {
						steps++
					}
				}
				wg.Go(func() { worker(round, t, steps) })
			}
			wg.Wait()
		}
		b.StopTimer()
		for _, p := range transfer {
			if p != nil && free != nil {
				free(p)
			}
		}
	}
	for _, mk := range sharedAllocs(b) {
		a := mk()
		b.Run("alloc="+a.name, func(b *testing.B) { run(b, a.alloc, a.free) })
		a.done()
	}
	b.Run("alloc=go", func(b *testing.B) { run(b, goAlloc, nil) })
}
