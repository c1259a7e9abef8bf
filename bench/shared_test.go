package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// The shared allocator (issue 18) against what a concurrent Go program has
// without it: a single-owner Heap per goroutine (where the workload allows),
// the package-level functions (one heap behind a mutex), and Go's own
// allocator (garbage collection included). Run with -cpu 1,2,4,... for
// the scaling: every benchmark below uses GOMAXPROCS goroutines.
//
//	go test ./bench -run XXX -bench 'Shared' -cpu 1,2 -count 10

// sharedAlloc is one way of allocating from many goroutines.
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
			return sharedAlloc{"mutex", zmm.Alloc, zmm.Free, func() {}}
		},
	}
}

// BenchmarkSharedPair is the local alloc+free pair of one goroutine: the
// shared allocator's fast paths against a single-owner Heap's (target:
// at most 1.3x).
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
		b.Run(fmt.Sprintf("size=%d/alloc=mutex", size), func(b *testing.B) {
			zmm.Free(zmm.Alloc(size))
			b.ReportAllocs()
			for b.Loop() {
				zmm.Free(zmm.Alloc(size))
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
	b.Run("alloc=mutex", func(b *testing.B) { run(b, zmm.Alloc, zmm.Free) })
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
	var sink []byte
	b.Run("alloc=go", func(b *testing.B) {
		run(b, func(size uintptr) unsafe.Pointer {
			sink = make([]byte, size)
			return unsafe.Pointer(unsafe.SliceData(sink))
		}, nil)
	})
}
