// Command inspect serves its zmm heaps on http://127.0.0.1:6060/debug/zmm/
// while it runs a workload, so that you can look at them live:
//
//	go run ./examples/inspect --duration 2m &
//	go tool pprof -top 'http://127.0.0.1:6060/debug/zmm/profile?heap=worker'
//	go run ./cmd/zmmstat watch 'http://127.0.0.1:6060/debug/zmm/?heap=worker'
//	go run ./cmd/zmmstat show 'http://127.0.0.1:6060/debug/zmm/?heap=worker'
//
// The worker heap is a debug heap (its profile shows the functions below
// as allocation sites), used by one goroutine under a mutex that it
// registers with inspect; the default heap (zmm.Alloc) gets some traffic
// too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/zmm"
)

func main() {
	port := flag.Int("port", 6060, "port to serve /debug/zmm/ on, on 127.0.0.1")
	duration := flag.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	debug := flag.Bool("debug", true, "make the worker heap a debug heap, which knows allocation sites")
	flag.Parse()
	if err := serve(*port, *duration, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "inspect:", err)
		os.Exit(1)
	}
}

func serve(port int, duration time.Duration, debug bool) error {
	h, err := zmm.New(zmm.WithDebug(debug), zmm.WithName("worker"), zmm.WithLeakReport(nil))
	if err != nil {
		return err
	}
	defer h.Close()
	var mu sync.Mutex // serializes every use of h: the worker's and the handler's
	inspect.Register("worker", h, &mu)
	defer inspect.Unregister("worker")

	mux := http.NewServeMux()
	mux.Handle("/debug/zmm/", inspect.Handler())
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "inspect:", err)
		}
	}()
	defer srv.Close()

	base := "http://" + ln.Addr().String() + "/debug/zmm/"
	fmt.Printf("serving %s (heaps: %v)\n", base, inspect.Heaps())
	fmt.Printf("  go tool pprof -top '%sprofile?heap=worker'\n", base)
	fmt.Printf("  go run ./cmd/zmmstat watch '%s?heap=worker'\n", base)
	fmt.Printf("  go run ./cmd/zmmstat show '%s?heap=worker'\n", base)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	w := &worker{h: h, rng: rand.New(rand.NewPCG(1, 2)), cache: map[int]unsafe.Pointer{}}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	requests := 0
	for {
		select {
		case <-ctx.Done():
			mu.Lock()
			st := h.Stats()
			mu.Unlock()
			fmt.Printf("stopped after %d requests: worker heap usage %d bytes, %d chunks\n", requests, st.Usage, st.Chunks)
			return nil
		case <-tick.C:
		}
		mu.Lock()
		err := zmm.Try(w.request)
		mu.Unlock()
		if err != nil {
			return err
		}
		// The default heap takes its own lock.
		buf := zmm.Alloc(uintptr(1000 + w.rng.IntN(20000)))
		zmm.Free(buf)
		requests++
	}
}

// worker is a long-lived service: each request parses input, builds a
// response and caches some results, up to a bound.
type worker struct {
	h     *zmm.Heap
	rng   *rand.Rand
	cache map[int]unsafe.Pointer
}

func (w *worker) request() {
	tmp := w.parseRequest()
	resp := w.buildResponse()
	w.cacheResult()
	for _, p := range tmp {
		w.h.Free(p)
	}
	w.h.Free(resp)
}

// parseRequest allocates short-lived tokens.
func (w *worker) parseRequest() []unsafe.Pointer {
	var tmp []unsafe.Pointer
	for range 200 {
		tmp = append(tmp, w.h.Alloc(uintptr(16+w.rng.IntN(200))))
	}
	return tmp
}

// buildResponse grows a buffer as the response gets longer.
func (w *worker) buildResponse() unsafe.Pointer {
	p := w.h.Alloc(512)
	for size := uintptr(1024); size <= uintptr(4096<<w.rng.IntN(4)); size *= 2 {
		p = w.h.Realloc(p, size)
	}
	return p
}

// cacheResult keeps results across requests, evicting at random beyond
// 20000 entries: the memory a profile of this heap shows.
func (w *worker) cacheResult() {
	for range 50 {
		k := w.rng.IntN(40000)
		if p, ok := w.cache[k]; ok {
			w.h.Free(p)
		}
		w.cache[k] = w.h.Alloc(uintptr(32 + w.rng.IntN(1500)))
	}
	for len(w.cache) > 20000 {
		for k, p := range w.cache {
			w.h.Free(p)
			delete(w.cache, k)
			break
		}
	}
}
