// Command httpserver is a net/http server that gives each request a zmm
// heap of its own (zmmhttp.Middleware): the PHP request lifecycle, where a
// request's memory is released at once when it ends and the heap's chunks
// stay mapped for the next request.
//
//	go run ./examples/httpserver                  # serves on 127.0.0.1:8080 until Ctrl-C
//	curl 'http://127.0.0.1:8080/records?n=3'      # the response, built in the request's heap
//	curl 'http://127.0.0.1:8080/go/records?n=3'   # the same bytes, built on the Go heap
//	curl 'http://127.0.0.1:8080/stats'            # requests, peaks, pool, Go GC
//	go run ./cmd/zmmstat watch 'http://127.0.0.1:8080/debug/zmm/?heap=request-1'
//	go run ./examples/httpserver -selftest        # serve, send requests, print, exit
//
// /records builds a JSON list of n records (default 2000, about 160 KiB):
// rows in a zmm slice, their strings in a zmm byte arena, the output in a
// zmm buffer grown with zmm.GrowSlice and encoded by hand with
// strconv.Append*. /go/records does the same with Go slices and strings,
// which become garbage for Go's collector at the end of each request.
//
// Each heap of the pool is registered with inspect as request-N, with the
// lock the pool holds while the heap serves a request, so zmmstat shows it
// between requests: the memory it keeps mapped for the next one. With
// -debug the heaps are debug heaps, and /records?leak=1 leaks its output
// buffer: the leak report at the end of the request names it
// ("script=GET /records").
//
// -live-mb keeps a Go-heap cache of that many MiB of small linked objects,
// as a service with a big live heap does; Go's collector marks all of it at
// each cycle, so the per-request garbage of /go/records costs more with it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/internal/records"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmhttp"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	addr     string
	selftest bool
	debug    bool
	maxIdle  int
	liveMB   int
	requests int
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to serve on (-selftest: a free port on 127.0.0.1)")
	fs.BoolVar(&c.selftest, "selftest", false, "serve, send requests to both paths, print what happened and exit")
	fs.BoolVar(&c.debug, "debug", false, "debug heaps: allocation sites, guards, and a leak report naming the request")
	fs.IntVar(&c.maxIdle, "max-idle", 2*runtime.GOMAXPROCS(0), "heaps the pool keeps between requests")
	fs.IntVar(&c.liveMB, "live-mb", 0, "MiB of long-lived Go objects to keep, as a cache would")
	fs.IntVar(&c.requests, "requests", 400, "-selftest: requests to send to each path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.selftest {
		c.addr = "127.0.0.1:0"
	}

	s, err := newServer(c, stderr)
	if err != nil {
		return err
	}
	defer s.close()
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()

	if c.selftest {
		err = selftest(base, c, stdout)
	} else {
		fmt.Fprintf(stdout, "serving %s\n", base)
		fmt.Fprintf(stdout, "  curl '%s/records?n=3'\n", base)
		fmt.Fprintf(stdout, "  curl '%s/go/records?n=3'\n", base)
		fmt.Fprintf(stdout, "  curl '%s/stats'\n", base)
		fmt.Fprintf(stdout, "  go run ./cmd/zmmstat watch '%s/debug/zmm/?heap=request-1'\n", base)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		select {
		case <-ctx.Done():
		case err = <-served:
		}
		stop()
	}
	// Shut the server down before the pool: requests still running give
	// their heaps back first.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(ctx); err == nil {
		err = serr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// server is the example's state: the pool of request heaps, the live cache
// and the counters /stats shows.
type server struct {
	pool  *zmmhttp.Pool
	mux   *http.ServeMux
	cache []*cacheEntry

	heaps    atomic.Int64 // heaps made, for their inspect names
	names    sync.Map     // *zmm.Heap -> inspect name
	requests atomic.Int64 // requests served by the pool's heaps
	maxPeak  atomic.Uint64
	sumPeak  atomic.Uint64
}

func newServer(c config, stderr io.Writer) (*server, error) {
	// The leak report is written by the heaps of several requests at once:
	// the writer must be safe for concurrent use.
	pool, err := zmmhttp.NewPool(c.maxIdle,
		zmm.WithDebug(c.debug), zmm.WithLeakReport(&lockedWriter{w: stderr}), zmm.WithLimit(128<<20))
	if err != nil {
		return nil, err
	}
	s := &server{pool: pool, mux: http.NewServeMux(), cache: makeCache(c.liveMB)}
	pool.OnOpen = func(h *zmm.Heap, mu sync.Locker) {
		name := fmt.Sprintf("request-%d", s.heaps.Add(1))
		s.names.Store(h, name)
		inspect.Register(name, h, mu)
	}
	pool.OnClose = func(h *zmm.Heap) {
		if name, ok := s.names.LoadAndDelete(h); ok {
			inspect.Unregister(name.(string))
		}
	}
	pool.OnRequestEnd = func(r *http.Request, h *zmm.Heap) {
		peak := uint64(h.PeakUsage())
		s.requests.Add(1)
		s.sumPeak.Add(peak)
		for old := s.maxPeak.Load(); peak > old && !s.maxPeak.CompareAndSwap(old, peak); old = s.maxPeak.Load() {
		}
	}

	s.mux.Handle("/records", zmmhttp.Middleware(pool)(http.HandlerFunc(zmmRecords)))
	s.mux.HandleFunc("/go/records", goRecords)
	s.mux.Handle("/debug/zmm/", inspect.Handler())
	s.mux.HandleFunc("/stats", s.serveStats)
	s.mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "/records?n=N  /go/records?n=N  /stats  /debug/zmm/\n")
	})
	return s, nil
}

func (s *server) close() {
	s.pool.Close()
	s.cache = nil
}

// lockedWriter serializes the writes of the pool's heaps.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// serveStats prints the counters: requests served from the pool's heaps and
// their peak usage, the pool, and Go's collector.
func (s *server) serveStats(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Load()
	avg := uint64(0)
	if n > 0 {
		avg = s.sumPeak.Load() / uint64(n)
	}
	ps := s.pool.Stats()
	g := readGC()
	fmt.Fprintf(w, "zmm requests %d, peak usage avg %s max %s\n", n, inspect.FormatBytes(avg), inspect.FormatBytes(s.maxPeak.Load()))
	fmt.Fprintf(w, "pool idle %d, in use %d, opened %d, closed %d\n", ps.Idle, ps.InUse, ps.Opened, ps.Closed)
	fmt.Fprintf(w, "go gc cycles %d, pause total %v, heap allocated %s in all, live cache %d objects\n",
		g.cycles, g.pause, inspect.FormatBytes(g.allocBytes), len(s.cache))
}

// gcReading is what the runtime says about its collector so far.
type gcReading struct {
	cycles     uint64
	pause      time.Duration
	allocBytes uint64
}

var gcSamples = []metrics.Sample{
	{Name: "/gc/cycles/total:gc-cycles"},
	{Name: "/gc/heap/allocs:bytes"},
}

func readGC() gcReading {
	metrics.Read(gcSamples)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return gcReading{
		cycles:     gcSamples[0].Value.Uint64(),
		allocBytes: gcSamples[1].Value.Uint64(),
		pause:      time.Duration(ms.PauseTotalNs),
	}
}

// count is the n parameter: records to return (default 2000, at most 1e6).
func count(r *http.Request) (int, error) {
	v := r.URL.Query().Get("n")
	if v == "" {
		return 2000, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1_000_000 {
		return 0, fmt.Errorf("n=%q: want a count from 0 to 1000000", v)
	}
	return n, nil
}

// The records come from internal/records: both handlers, and zmmhttp's
// benchmark, make the same values and the same bytes.

// zrow is a record in the request's heap. Its strings are spans of the
// request's text arena: a zmm block may hold no Go pointer, so no string.
type zrow struct {
	id          int64
	score       float64
	name, email span
	city        uint32
	active      bool
}

type span struct{ off, n uint32 }

// reserve returns s with room for n more elements, grown (zmm.GrowSlice,
// erealloc) to twice its size if need be: appends within the capacity stay
// in the heap.
func reserve[T any](h *zmm.Heap, s []T, n int) []T {
	if cap(s)-len(s) < n {
		s = zmm.GrowSlice(h, s, max(2*cap(s), len(s)+n))
	}
	return s
}

// zmmRecords serves /records from the request's heap.
func zmmRecords(w http.ResponseWriter, r *http.Request) {
	n, err := count(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := zmmhttp.Heap(r)

	// Load the rows, as from a database: a slice of rows and an arena of
	// their strings.
	rows := zmm.MakeSlice[zrow](h, 0, n)
	text := zmm.MakeSlice[byte](h, 0, 1024)
	for i := range n {
		text = reserve(h, text, 64)
		start := len(text)
		text = records.AppendName(text, i)
		mid := len(text)
		text = records.AppendEmail(text, i)
		rows = append(rows, zrow{
			id:     records.ID(i),
			score:  records.Score(i),
			name:   span{uint32(start), uint32(mid - start)},
			email:  span{uint32(mid), uint32(len(text) - mid)},
			city:   uint32(records.CityIndex(i)),
			active: records.Active(i),
		})
	}

	// Encode them.
	out := zmm.MakeSlice[byte](h, 0, 4096)
	out = append(out, `{"count":`...)
	out = strconv.AppendInt(out, int64(n), 10)
	out = append(out, `,"records":[`...)
	for i, row := range rows {
		out = reserve(h, out, records.MaxLen(int(row.name.n+row.email.n))+2)
		if i > 0 {
			out = append(out, ',')
		}
		out = records.AppendRecord(out, row.id,
			text[row.name.off:row.name.off+row.name.n], text[row.email.off:row.email.off+row.email.n],
			row.score, row.active, records.Cities[row.city])
	}
	out = reserve(h, out, 3)
	out = append(out, "]}\n"...)

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.Write(out) // copied: out may go with the request

	// Free what we allocated, as PHP code frees its values; Reset at the end
	// of the request would release it anyway, but a debug heap reports
	// what was not freed as a leak. ?leak=1 shows such a report.
	zmm.FreeSlice(h, rows)
	zmm.FreeSlice(h, text)
	if r.URL.Query().Get("leak") != "1" {
		zmm.FreeSlice(h, out)
	}
}

// goRecords serves /go/records, the same response made with Go's allocator.
func goRecords(w http.ResponseWriter, r *http.Request) {
	n, err := count(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	records.ServeGo(w, n)
}

// cacheEntry is a long-lived Go object: 64 bytes with a pointer, so the
// collector marks each one at every cycle.
type cacheEntry struct {
	next *cacheEntry
	key  uint64
	val  [48]byte
}

// makeCache makes mb MiB of cache entries.
func makeCache(mb int) []*cacheEntry {
	n := mb << 20 / 64
	cache := make([]*cacheEntry, n)
	var prev *cacheEntry
	for i := range cache {
		e := &cacheEntry{next: prev, key: uint64(i)}
		cache[i], prev = e, e
	}
	return cache
}
