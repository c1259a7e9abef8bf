package zmmhttp_test

// BenchmarkServer: a real net/http server on loopback (httptest.NewServer)
// answers a JSON list of 2000 records (about 215 KiB) built by hand, driven
// by benchClients client goroutines with keep-alive connections, each
// reading every response to the end. One op is one request.
//
// alloc=zmm builds the response in the request's heap (zmmhttp.Middleware):
// rows in a zmm slice, their strings in a zmm arena, the output in a zmm
// buffer grown with zmm.GrowSlice; nothing is freed, Reset releases it
// all. alloc=go builds the same bytes with Go slices and strings, as plain
// Go code does (served without the middleware): about 1.5 MiB of garbage in
// 12,000 allocations per request, from append growth, the rows and their
// strings. The client goroutines run in the same process, so the Go-heap
// figures include their allocations (about 10 KiB per request, net/http's
// on both ends, the same on both sides).
//
// live=NMB keeps N MiB of small linked Go objects alive during the run, as
// a cache would: Go's collector marks all of them at each cycle, so each
// cycle costs more, while the number of cycles depends on the garbage.
// -live-mb sets the big size (default 256).
//
// Besides ns/op (wall time per request, with benchClients in flight), B/op
// and allocs/op (Go heap, whole process), it reports:
//
//	req/s            requests per second
//	gc-cycles/op     Go collections per request
//	gc-pause-us/op   their stop-the-world pauses, per request, in µs
//	gc-pause-max-us  the longest pause (upper bound of its histogram bucket)
//	gc-cpu-us/op     the collector's CPU time per request (runtime estimate)
//	cpu-ns/op        the process's CPU time per request (getrusage)
//
// (The GC figures are in µs, not ns, because benchstat shows a column of
// zeros in ns apart from the same metric in seconds.)
//
//	go test ./zmmhttp -run XXX -bench . -count 5
//	go test ./zmmhttp -run XXX -bench 'Server/live=256MB' -benchtime 5s -count 5
//
// With 256 MiB live, Go's collector runs about once per 280 requests of
// alloc=go: a run of -benchtime 1s sees one or two cycles, so use 5s to
// see the steady state.

import (
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gozmm/zmm/internal/records"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmhttp"
)

var benchLiveMB = flag.Int("live-mb", 256, "MiB of live Go objects BenchmarkServer keeps in its live=N runs")

const (
	benchClients = 4
	benchRecords = 2000
)

func BenchmarkServer(b *testing.B) {
	lives := []int{0}
	if *benchLiveMB > 0 {
		lives = append(lives, *benchLiveMB)
	}
	for _, mb := range lives {
		b.Run(fmt.Sprintf("live=%dMB", mb), func(b *testing.B) {
			cache := makeBenchCache(mb)
			defer runtime.KeepAlive(cache)

			b.Run("alloc=zmm", func(b *testing.B) {
				p := newPool(b, benchClients, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
				benchServe(b, zmmhttp.Middleware(p)(http.HandlerFunc(zmmRecordsHandler)))
			})
			b.Run("alloc=go", func(b *testing.B) {
				benchServe(b, http.HandlerFunc(goRecordsHandler))
			})
		})
	}
}

// TestRecordHandlersAgree checks that both benchmark handlers answer the
// same bytes, and valid JSON.
func TestRecordHandlersAgree(t *testing.T) {
	p := newPool(t, 1)
	for _, n := range []string{"0", "1", "2000"} {
		target := "/?n=" + n
		z := httptest.NewRecorder()
		zmmhttp.Middleware(p)(http.HandlerFunc(zmmRecordsHandler)).ServeHTTP(z, httptest.NewRequest("GET", target, nil))
		g := httptest.NewRecorder()
		goRecordsHandler(g, httptest.NewRequest("GET", target, nil))
		if z.Body.String() != g.Body.String() {
			t.Fatalf("n=%s: the handlers differ:\n%.300s\n%.300s", n, z.Body, g.Body)
		}
		if n == "2000" && (z.Body.Len() < 150<<10 || z.Body.Len() > 300<<10) {
			t.Errorf("n=2000: %d bytes, want about 215 KiB", z.Body.Len())
		}
	}
}

// benchServe serves handler on loopback and sends it b.N requests from
// benchClients goroutines.
func benchServe(b *testing.B, handler http.Handler) {
	srv := httptest.NewServer(handler)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConns: benchClients, MaxIdleConnsPerHost: benchClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := srv.URL + "/?n=" + strconv.Itoa(benchRecords)
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	// Open the connections and warm the pool before the clock starts.
	var wg sync.WaitGroup
	for range benchClients {
		wg.Go(func() {
			if err := get(); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()

	b.ReportAllocs()
	runtime.GC()
	m := startGCMeter()
	b.ResetTimer()
	var next atomic.Int64
	for range benchClients {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := get(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	m.report(b)
}

// gcMeter reads the Go collector's counters around a run.
type gcMeter struct {
	numGC  uint32
	pause  uint64
	gcCPU  float64
	cpu    time.Duration
	pauses *metrics.Float64Histogram
}

var gcMetrics = []metrics.Sample{
	{Name: "/sched/pauses/total/gc:seconds"},
	{Name: "/cpu/classes/gc/total:cpu-seconds"},
}

func readGCMetrics() (*metrics.Float64Histogram, float64) {
	metrics.Read(gcMetrics)
	h := gcMetrics[0].Value.Float64Histogram()
	// The histogram's slices are reused by the next Read: copy them.
	c := &metrics.Float64Histogram{Counts: append([]uint64(nil), h.Counts...), Buckets: h.Buckets}
	return c, gcMetrics[1].Value.Float64()
}

func startGCMeter() gcMeter {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pauses, gcCPU := readGCMetrics()
	return gcMeter{numGC: ms.NumGC, pause: ms.PauseTotalNs, gcCPU: gcCPU, cpu: processCPU(), pauses: pauses}
}

func (m gcMeter) report(b *testing.B) {
	cpu := processCPU() - m.cpu
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pauses, gcCPU := readGCMetrics()
	maxPause := 0.0
	for i := len(pauses.Counts) - 1; i >= 0; i-- {
		if pauses.Counts[i] > m.pauses.Counts[i] {
			maxPause = pauses.Buckets[i+1]
			if math.IsInf(maxPause, 1) {
				maxPause = pauses.Buckets[i]
			}
			break
		}
	}
	n := float64(max(b.N, 1))
	b.ReportMetric(n/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(ms.NumGC-m.numGC)/n, "gc-cycles/op")
	b.ReportMetric(float64(ms.PauseTotalNs-m.pause)/1e3/n, "gc-pause-us/op")
	b.ReportMetric(maxPause*1e6, "gc-pause-max-us")
	b.ReportMetric((gcCPU-m.gcCPU)*1e6/n, "gc-cpu-us/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/op")
}

// processCPU is the process's CPU time so far, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchEntry is a long-lived Go object of 64 bytes with a pointer, which
// the collector marks at every cycle.
type benchEntry struct {
	next *benchEntry
	key  uint64
	val  [48]byte
}

// makeBenchCache makes mb MiB of linked entries.
func makeBenchCache(mb int) []*benchEntry {
	cache := make([]*benchEntry, mb<<20/64)
	var prev *benchEntry
	for i := range cache {
		e := &benchEntry{next: prev, key: uint64(i)}
		cache[i], prev = e, e
	}
	return cache
}

// The records come from internal/records, as examples/httpserver's do.

func benchCount(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 0 || n > 1_000_000 {
		return 0
	}
	return n
}

// benchRow is a record in a zmm heap: its strings are spans of an arena.
type benchRow struct {
	id                 int64
	score              float64
	nameOff, nameLen   uint32
	emailOff, emailLen uint32
	city               uint32
	active             bool
}

// reserveBench returns s with room for n more elements, grown with
// zmm.GrowSlice (to twice its capacity at least) if need be.
func reserveBench[T any](h *zmm.Heap, s []T, n int) []T {
	if cap(s)-len(s) < n {
		s = zmm.GrowSlice(h, s, max(2*cap(s), len(s)+n))
	}
	return s
}

func zmmRecordsHandler(w http.ResponseWriter, r *http.Request) {
	n := benchCount(r)
	h := zmmhttp.Heap(r)
	rows := zmm.MakeSlice[benchRow](h, 0, n)
	text := zmm.MakeSlice[byte](h, 0, 1024)
	for i := range n {
		text = reserveBench(h, text, 64)
		start := len(text)
		text = records.AppendName(text, i)
		mid := len(text)
		text = records.AppendEmail(text, i)
		rows = append(rows, benchRow{
			id: records.ID(i), score: records.Score(i),
			nameOff: uint32(start), nameLen: uint32(mid - start),
			emailOff: uint32(mid), emailLen: uint32(len(text) - mid),
			city: uint32(records.CityIndex(i)), active: records.Active(i),
		})
	}
	out := zmm.MakeSlice[byte](h, 0, 4096)
	out = append(out, `{"count":`...)
	out = strconv.AppendInt(out, int64(n), 10)
	out = append(out, `,"records":[`...)
	for i, row := range rows {
		out = reserveBench(h, out, records.MaxLen(int(row.nameLen+row.emailLen))+2)
		if i > 0 {
			out = append(out, ',')
		}
		out = records.AppendRecord(out, row.id,
			text[row.nameOff:row.nameOff+row.nameLen], text[row.emailOff:row.emailOff+row.emailLen],
			row.score, row.active, records.Cities[row.city])
	}
	out = reserveBench(h, out, 3)
	out = append(out, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.Write(out)
	// No frees: Reset releases everything when the handler returns.
}

func goRecordsHandler(w http.ResponseWriter, r *http.Request) {
	records.ServeGo(w, benchCount(r))
}
