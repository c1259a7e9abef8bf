package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// BenchmarkLargeMix is issue 20's large-block mix with a growing live set:
// live blocks of 3 KiB to 1.5 MiB (log-uniform) and 3% huge ones of 2 to 8
// MiB; each op frees a random live block and allocates one in its place.
// Its cost should not grow with the heap: the page search of the Zend MM
// (and of zmm before its run index) walks every chunk. The blocks are never
// touched, so a live set of many gigabytes costs address space, not RSS.
// It reports the heap's RealUsage at the end (real-MiB).
func BenchmarkLargeMix(b *testing.B) {
	for _, live := range []int{400, 4000, 16000} {
		b.Run(fmt.Sprintf("live=%d", live), func(b *testing.B) {
			h := newHeap(b)
			defer h.Close()
			r := rand.New(rand.NewPCG(seed, uint64(live)))
			sizes := make([]uintptr, 1<<14)
			for i := range sizes {
				sizes[i] = largeMixSize(r)
			}
			blocks := make([]unsafe.Pointer, live)
			for i := range blocks {
				blocks[i] = h.Alloc(sizes[i%len(sizes)])
			}
			picks := make([]int, 1<<14)
			for i := range picks {
				picks[i] = r.IntN(live)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := picks[i%len(picks)]
				h.Free(blocks[k])
				blocks[k] = h.Alloc(sizes[i%len(sizes)])
				i++
			}
			b.ReportMetric(float64(h.RealUsage())/(1<<20), "real-MiB")
		})
	}
}

// largeMixSize draws a size of the large mix.
func largeMixSize(r *rand.Rand) uintptr {
	if r.IntN(100) < 3 {
		return uintptr(2<<20 + r.IntN(6<<20))
	}
	lo, hi := math.Log(3<<10), math.Log(1536<<10)
	return uintptr(math.Exp(lo + r.Float64()*(hi-lo)))
}
