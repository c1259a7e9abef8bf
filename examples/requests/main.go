// Command requests runs a few PHP-like requests on a zmm heap and prints
// what the heap did: usage, peaks, mapped memory, the chunk cache across
// requests, a memory-limit error caught with zmm.Try, and a bad free
// reported instead of crashing.
package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

func main() {
	h, err := zmm.New(zmm.WithLimit(64 << 20))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer h.Close()

	rng := rand.New(rand.NewPCG(1, 2))
	fmt.Printf("%-8s %10s %12s %12s %10s %8s\n", "request", "blocks", "peak", "real peak", "real after", "cached")
	for req := 1; req <= 5; req++ {
		live := make([]unsafe.Pointer, 0, 1024)
		blocks := 50_000 * req
		for range blocks {
			size := uintptr(16 + rng.IntN(240))
			if rng.IntN(100) == 0 {
				size = uintptr(4096 + rng.IntN(60_000))
			}
			p := h.Alloc(size)
			zmm.Bytes(p, 1)[0] = byte(req)
			live = append(live, p)
			if rng.IntN(10) < 8 { // most blocks die young
				i := rng.IntN(len(live))
				h.Free(live[i])
				live[i] = live[len(live)-1]
				live = live[:len(live)-1]
			}
		}
		peak, realPeak := h.PeakUsage(), h.RealPeakUsage()
		h.Reset() // the request ends: everything still live goes at once
		fmt.Printf("%-8d %10d %12d %12d %10d %8d\n", req, blocks, peak, realPeak, h.RealUsage(), h.Stats().CachedChunks)
	}

	err = zmm.Try(func() { h.Alloc(100 << 20) })
	fmt.Println("over the limit:", err)

	var onTheGoHeap int
	err = zmm.Try(func() { h.Free(unsafe.Pointer(&onTheGoHeap)) })
	fmt.Println("bad free:      ", err)
}
