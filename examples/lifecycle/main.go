// Command lifecycle is a small HTTP server that runs PHP's lifecycle on zmm
// heaps with package lifecycle: two components, each request handed to one
// of the driver's workers, request memory released at each request's end,
// and every heap visible at /debug/zmm/.
//
//	go run ./examples/lifecycle                     # serve on 127.0.0.1:8081
//	curl 'http://127.0.0.1:8081/page?sid=7'
//	curl 'http://127.0.0.1:8081/page?sid=7&leak=1'  # render leaks: the leak report names the request
//	curl 'http://127.0.0.1:8081/debug/lifecycle'     # the info page (phpinfo): components, heaps
//	go run ./cmd/zmmstat show 'http://127.0.0.1:8081/debug/zmm/?heap=worker-0'
//
//	go run ./examples/lifecycle -selftest 20        # serve on a free port, run 20 requests, print the reports, exit
//	go run ./examples/lifecycle -selftest 20 -trace /tmp/tr   # also record each worker heap's traffic
//	go run ./cmd/zmmstat replay /tmp/tr/worker-0-gen-0.ztrace.gz        # replay a recorded trace
//
// Every worker heap carries a hooks.Counter, entered around each component's
// hooks, so /debug/components shows each component's allocations; with
// -trace DIR a hooks.Tracer records each worker heap (one file per worker
// and generation) in the trace format that bench/ replays against every
// allocator.
//
// The components:
//
//   - session keeps a persistent secret from module startup to module
//     shutdown and, on each worker, a persistent session table from worker
//     start to worker end; each request's session id is copied into request
//     memory at request start and freed at request end.
//   - render builds each page in request memory, a buffer that grows with
//     Realloc, and copies it out before the request ends. With -leak (or
//     ?leak=1) it forgets to free a fragment, and in debug mode the request
//     leak report names the request and the line that leaked.
package main

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/hooks"
	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/lifecycle"
	"github.com/gozmm/zmm/zmm"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// persistentHeapName is the persistent heap's name at /debug/zmm/
// ("persistent" is zmm's own process-wide persistent heap).
const persistentHeapName = "lifecycle-persistent"

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lifecycle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8081", "address to serve on (loopback; port 0 picks a free one)")
	workers := fs.Int("workers", 2, "workers (1: requests one after another, as PHP-FPM's worker; more: in parallel, as ZTS threads)")
	maxRequests := fs.Int("max-requests", 50, "recycle a worker after this many requests (0: never), as pm.max_requests")
	debug := fs.Bool("debug", true, "debug heaps: allocation sites, guards, and a leak report at each request end")
	leak := fs.Bool("leak", false, "make the render component leak request memory on every request")
	selftest := fs.Int("selftest", 0, "serve on a free loopback port, run this many requests against it, print the reports and exit")
	traceDir := fs.String("trace", "", "record each worker heap's allocations as DIR/worker-N-gen-G.ztrace.gz")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *workers < 1 || *maxRequests < 0 {
		fmt.Fprintln(stderr, "lifecycle: -workers must be at least 1 and -max-requests at least 0")
		return 2
	}
	listen := *addr
	if *selftest > 0 {
		listen = "127.0.0.1:0"
	}
	if err := serve(options{listen, *workers, *maxRequests, *debug, *leak, *selftest, *traceDir}, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "lifecycle:", err)
		return 1
	}
	return 0
}

type options struct {
	addr        string
	workers     int
	maxRequests int
	debug       bool
	leak        bool
	selftest    int
	traceDir    string
}

// httpRequest is the key of the *http.Request in a request's context: the
// components read the request from there, as PHP extensions read
// SG(request_info).
type httpRequest struct{}

func serve(o options, stdout, stderr io.Writer) error {
	sess := &session{}
	rend := &render{leakAlways: o.leak}
	obs := &observers{traceDir: o.traceDir, counters: map[int]*hooks.Counter{}, tracers: map[int]*tracedHeap{}}
	if o.traceDir != "" {
		if err := os.MkdirAll(o.traceDir, 0o755); err != nil {
			return err
		}
	}
	d := lifecycle.New(
		lifecycle.WithName("lifecycle-example"),
		lifecycle.WithWorkers(o.workers),
		lifecycle.WithMaxRequests(o.maxRequests),
		lifecycle.WithDebug(o.debug),
		lifecycle.WithReport(stderr),
		lifecycle.WithHeapOptions(zmm.WithLimit(64<<20)), // memory_limit per request heap
		lifecycle.WithWorkerHeapHooks(
			func(h lifecycle.WorkerHeap) {
				// The worker holds h.Lock whenever it uses the heap; the
				// handler takes it between requests for a snapshot.
				inspect.Register(workerHeapName(h.Worker), h.Heap, h.Lock)
				obs.attach(h, stderr)
			},
			func(h lifecycle.WorkerHeap) {
				obs.detach(h, stderr)
				inspect.Unregister(workerHeapName(h.Worker))
			},
		),
		lifecycle.WithHookObserver(obs.enter),
	)
	for _, c := range []lifecycle.Component{sess.component(), rend.component()} {
		if err := d.Register(c); err != nil {
			return err
		}
	}
	if err := d.Start(context.Background()); err != nil {
		return err
	}
	ph, lock := d.PersistentHeap()
	inspect.Register(persistentHeapName, ph, lock)

	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		ctx := context.WithValue(r.Context(), httpRequest{}, r)
		err := d.Do(ctx, lifecycle.Request{
			Name: r.Method + " " + r.URL.RequestURI(),
			Handle: func(c *lifecycle.Context) error {
				body = rend.page(c, sess.current(c), r.URL.Query().Has("leak"))
				return nil
			},
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/debug/lifecycle", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := d.Info(w); err != nil {
			fmt.Fprintln(w, "error:", err)
		}
	})
	mux.HandleFunc("/debug/components", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		obs.write(w)
	})
	mux.Handle("/debug/zmm/", inspect.Handler())

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return errors.Join(err, stop(d))
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()

	var runErr error
	if o.selftest > 0 {
		runErr = selftest(base, o.selftest, stdout)
	} else {
		fmt.Fprintf(stdout, "serving %s/page?sid=N (add &leak=1 to leak)\n", base)
		fmt.Fprintf(stdout, "  info:  %s/debug/lifecycle\n  heaps: %s/debug/zmm/\n", base, base)
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
		select {
		case <-ctx.Done():
		case runErr = <-served:
		}
		cancel()
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		runErr = errors.Join(runErr, err)
	}
	err = errors.Join(runErr, stop(d))
	if o.selftest > 0 {
		printReport(d.Report(), stdout)
		fmt.Fprintln(stdout)
		obs.write(stdout)
	}
	return err
}

func workerHeapName(worker int) string { return "worker-" + strconv.Itoa(worker) }

// stop shuts the driver down, after taking its persistent heap off the
// handler (Shutdown closes it).
func stop(d *lifecycle.Driver) error {
	inspect.Unregister(persistentHeapName)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.Shutdown(ctx)
}

// selftest runs n requests against the server, the last one with a leak,
// then reads the heap list and the info page.
func selftest(base string, n int, stdout io.Writer) error {
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (string, error) {
		resp, err := client.Get(base + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
		}
		return string(body), err
	}
	for i := 1; i <= n; i++ {
		path := fmt.Sprintf("/page?sid=%d", i%3)
		if i == n {
			path += "&leak=1"
		}
		body, err := get(path)
		if err != nil {
			return err
		}
		if i == 1 || i == n {
			fmt.Fprintf(stdout, "GET %s:\n%s", path, body)
		}
	}
	index, err := get("/debug/zmm/")
	if err != nil {
		return err
	}
	var heaps []string
	for _, name := range inspect.Heaps() {
		if strings.Contains(index, name) {
			heaps = append(heaps, name)
		}
	}
	fmt.Fprintf(stdout, "\nheaps at /debug/zmm/: %s\n", strings.Join(heaps, ", "))
	info, err := get("/debug/lifecycle")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s", info)
	return nil
}

// printReport sums up what the driver found.
func printReport(r lifecycle.Report, stdout io.Writer) {
	fmt.Fprintf(stdout, "\nviolations: %d, failed hooks: %d, requests that leaked: %d\n",
		len(r.Violations), len(r.Failures), len(r.RequestLeaks))
	for _, l := range r.RequestLeaks {
		first := l.Leaks[0].Site
		fmt.Fprintf(stdout, "  request %q (worker %d) leaked %d block(s), the first allocated in %s at %s:%d\n",
			l.Request, l.Worker, len(l.Leaks), first.Function, first.File, first.Line)
	}
}

// session is the component that knows who is asking. Its state:
//   - a secret, persistent, from module startup to module shutdown;
//   - per worker, a persistent table of 64 session slots (the component's
//     globals), from worker start to worker end;
//   - per request, the session id copied into request memory.
type session struct {
	secret unsafe.Pointer // persistent, written at module startup only
	opened atomic.Int64   // sessions seen, all workers
}

const sessionSlots = 64

// slotEntry is a session slot in the persistent table: plain integers, no
// Go pointers, as everything stored in zmm memory.
type slotEntry struct {
	id   uint64
	hits uint64
}

// sessionGlobals are the component's per-worker globals.
type sessionGlobals struct {
	table []slotEntry // a view of the persistent table
	cur   visit       // the request being served
}

// visit is what the session component knows of the current request.
type visit struct {
	id   string // in request memory: valid until the request ends
	hits uint64
}

func (s *session) component() lifecycle.Component {
	return lifecycle.Component{
		Name: "session",
		ModuleStartup: func(c *lifecycle.Context) error {
			s.secret = c.PAlloc(32)
			_, err := rand.Read(zmm.Bytes(s.secret, 32))
			return err
		},
		ModuleShutdown: func(c *lifecycle.Context) error {
			c.PFree(s.secret)
			return nil
		},
		WorkerStart: func(c *lifecycle.Context) error {
			p := c.PCalloc(sessionSlots, uintptr(unsafe.Sizeof(slotEntry{})))
			c.SetGlobals(&sessionGlobals{table: unsafe.Slice((*slotEntry)(p), sessionSlots)})
			return nil
		},
		WorkerEnd: func(c *lifecycle.Context) error {
			g := c.Globals().(*sessionGlobals)
			c.PFree(unsafe.Pointer(&g.table[0]))
			return nil
		},
		RequestStart: func(c *lifecycle.Context) error {
			g := c.Globals().(*sessionGlobals)
			r, _ := c.Context().Value(httpRequest{}).(*http.Request)
			id := "anonymous"
			if r != nil && r.URL.Query().Get("sid") != "" {
				id = r.URL.Query().Get("sid")
			}
			g.cur = visit{id: zmm.CopyString(c.Heap(), id)}
			n, _ := strconv.ParseUint(id, 10, 64)
			e := &g.table[n%sessionSlots]
			if e.id != n || e.hits == 0 {
				*e = slotEntry{id: n}
				s.opened.Add(1)
			}
			e.hits++
			g.cur.hits = e.hits
			return nil
		},
		RequestEnd: func(c *lifecycle.Context) error {
			g := c.Globals().(*sessionGlobals)
			zmm.FreeString(c.Heap(), g.cur.id)
			g.cur = visit{}
			return nil
		},
		Info: func(c *lifecycle.Context, w io.Writer) error {
			_, err := fmt.Fprintf(w, "sessions opened: %d\nslots per worker: %d\n", s.opened.Load(), sessionSlots)
			return err
		},
	}
}

// current returns the request's session, for the handler.
func (s *session) current(c *lifecycle.Context) visit {
	return c.GlobalsOf("session").(*sessionGlobals).cur
}

// render is the component that builds pages in request memory.
type render struct {
	leakAlways bool
	pages      atomic.Int64
	leaked     atomic.Int64
}

func (r *render) component() lifecycle.Component {
	return lifecycle.Component{
		Name: "render",
		PostRequestEnd: func(c *lifecycle.Context) error {
			r.pages.Add(1)
			return nil
		},
		Info: func(c *lifecycle.Context, w io.Writer) error {
			_, err := fmt.Fprintf(w, "pages rendered: %d\nfragments leaked: %d (leak on every request: %v)\n",
				r.pages.Load(), r.leaked.Load(), r.leakAlways)
			return err
		},
	}
}

// page renders the page in request memory and returns a Go copy of it,
// which outlives the request. With leak it forgets to free a fragment.
func (r *render) page(c *lifecycle.Context, v visit, leak bool) []byte {
	b := builder{c: c}
	b.add(fmt.Sprintf("hello, session %s (visit %d)\n", v.id, v.hits))
	b.add(fmt.Sprintf("served by worker %d for %q\n", c.Worker(), c.Request()))
	b.add(r.fragment(c, leak || r.leakAlways))
	out := append([]byte(nil), b.bytes()...)
	b.free()
	return out
}

// fragment renders a footer through a scratch block of request memory;
// when leak is set, the scratch block is never freed.
func (r *render) fragment(c *lifecycle.Context, leak bool) string {
	const footer = "-- rendered by zmm\n"
	scratch := c.Alloc(uintptr(len(footer)))
	copy(zmm.Bytes(scratch, len(footer)), footer)
	s := string(zmm.Bytes(scratch, len(footer)))
	if leak {
		r.leaked.Add(1)
		return s // the bug: scratch is not freed; the request's end releases it and reports it
	}
	c.Free(scratch)
	return s
}

// builder is a growing byte buffer in request memory.
type builder struct {
	c   *lifecycle.Context
	p   unsafe.Pointer
	n   int
	cap int
}

func (b *builder) add(s string) {
	if b.n+len(s) > b.cap {
		b.cap = max(64, 2*b.cap, b.n+len(s))
		b.p = b.c.Realloc(b.p, uintptr(b.cap))
	}
	copy(zmm.Bytes(b.p, b.cap)[b.n:], s)
	b.n += len(s)
}

func (b *builder) bytes() []byte { return zmm.Bytes(b.p, b.n) }

func (b *builder) free() {
	b.c.Free(b.p)
	*b = builder{c: b.c}
}

// observers are the custom handlers on the worker heaps: a hooks.Counter
// on each, entered around each component's hooks, and with -trace a
// hooks.Tracer per worker generation. The made and closing hooks run on
// the worker's goroutine, and the observer on the goroutine of the hook it
// wraps, so each counter and tracer is used by its heap's owner only; the
// maps are shared, hence the mutex.
type observers struct {
	traceDir string
	mu       sync.Mutex
	counters map[int]*hooks.Counter // by worker slot, kept across recycles
	tracers  map[int]*tracedHeap
	traces   []string // trace files written
}

type tracedHeap struct {
	tracer *hooks.Tracer
	gz     *gzip.Writer
	file   *os.File
}

func (o *observers) attach(h lifecycle.WorkerHeap, stderr io.Writer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.counters[h.Worker]
	if c == nil {
		c = hooks.NewCounter()
		o.counters[h.Worker] = c
	}
	c.Attach(h.Heap)
	if o.traceDir == "" {
		return
	}
	path := filepath.Join(o.traceDir, fmt.Sprintf("worker-%d-gen-%d.ztrace.gz", h.Worker, h.Generation))
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "lifecycle: trace:", err)
		return
	}
	gz := gzip.NewWriter(f)
	tr, err := hooks.NewTracer(gz)
	if err != nil {
		fmt.Fprintln(stderr, "lifecycle: trace:", err)
		_ = f.Close()
		return
	}
	tr.Attach(h.Heap) // above the counter: detached first
	o.tracers[h.Worker] = &tracedHeap{tr, gz, f}
	o.traces = append(o.traces, path)
}

func (o *observers) detach(h lifecycle.WorkerHeap, stderr io.Writer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t := o.tracers[h.Worker]; t != nil {
		delete(o.tracers, h.Worker)
		if err := errors.Join(t.tracer.Close(), t.gz.Close(), t.file.Close()); err != nil {
			fmt.Fprintln(stderr, "lifecycle: trace:", err)
		}
	}
	if c := o.counters[h.Worker]; c != nil {
		c.Detach()
	}
}

// enter counts a hook's allocations for its component ("handler" for the
// request handler). Module hooks run on no worker and use the persistent
// heap only, which has no counter.
func (o *observers) enter(c *lifecycle.Context) func() {
	if c.Worker() < 0 {
		return nil
	}
	o.mu.Lock()
	counter := o.counters[c.Worker()]
	o.mu.Unlock()
	if counter == nil {
		return nil
	}
	name := c.Component()
	if name == "" {
		name = "handler"
	}
	return counter.Enter(name)
}

// write prints each component's request-heap traffic, all workers summed,
// and the traces recorded.
func (o *observers) write(w io.Writer) {
	o.mu.Lock()
	defer o.mu.Unlock()
	total := map[string]hooks.Counts{}
	for _, c := range o.counters {
		for name, k := range c.Stats() {
			t := total[name]
			t.Allocs += k.Allocs
			t.Frees += k.Frees
			t.Reallocs += k.Reallocs
			t.Bytes += k.Bytes
			t.Live += k.Live
			t.PeakLive = max(t.PeakLive, k.PeakLive)
			total[name] = t
		}
	}
	names := make([]string, 0, len(total))
	for name := range total {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "request heap traffic by component (all workers):")
	for _, name := range names {
		k := total[name]
		if k.Allocs+k.Frees+k.Reallocs == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-8s allocs %d, frees %d, reallocs %d, bytes %d, peak live bytes %d\n",
			name, k.Allocs, k.Frees, k.Reallocs, k.Bytes, k.PeakLive)
	}
	for _, path := range o.traces {
		fmt.Fprintf(w, "trace: %s\n", path)
	}
}
