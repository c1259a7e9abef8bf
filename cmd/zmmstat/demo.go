package main

import (
	"bytes"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
	"github.com/gozmm/zmm/zmm"
)

// demoTrace is a PHP-like workload: a few requests of strings, arrays,
// objects, growing buffers and a file read whole, recorded in the trace
// format. demo_gen_test.go generates it:
//
//go:generate go test -run TestDemoTrace -update-demo
//go:embed demo.ztrace.gz
var demoTrace []byte

func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the results as JSON")
	save := fs.String("save", "", "write the snapshot's JSON to this file")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	d, err := runDemo()
	if err != nil {
		return err
	}
	if *save != "" {
		var b bytes.Buffer
		if err := writeJSON(&b, d.snap); err != nil {
			return err
		}
		if err := os.WriteFile(*save, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		return writeJSON(stdout, struct {
			Trace      traceInfo     `json:"trace"`
			Replay     replay.Result `json:"replay"`
			Snapshot   *zmm.Snapshot `json:"snapshot"`
			LeakReport string        `json:"leak_report"`
		}{traceInfoOf(d.trace), d.res, d.snap, d.leaks})
	}
	var b bytes.Buffer
	t := d.trace
	fmt.Fprintf(&b, "zmmstat demo: a PHP-like workload of %d requests (%d allocs, %d frees, %d reallocs)\n",
		t.Requests, t.Allocs, t.Frees, t.Reallocs)
	fmt.Fprintf(&b, "replayed on a debug heap (zmm.WithDebug(true)). The last request has a planted bug:\n")
	fmt.Fprintf(&b, "the demo's own code allocates %d blocks there and never frees them.\n\n", plantedLeaks)
	fmt.Fprintf(&b, "replayed %d calls in %v (%.0f ns a call in debug mode), %d mismatches;\n",
		d.res.Ops, d.res.Duration.Round(100*time.Microsecond), d.res.NsPerOp, d.res.Mismatches)
	fmt.Fprintf(&b, "peak usage %s, real peak %s\n\n", inspect.FormatBytes(d.res.PeakUsage), inspect.FormatBytes(d.res.RealPeakUsage))
	rule(&b, "the heap at the end of the last request, before its Reset (zmmstat show)")
	writeShow(&b, d.snap)
	fmt.Fprintln(&b)
	rule(&b, "the leak report the debug heap wrote at that Reset (the Zend MM's format)")
	b.WriteString(d.leaks)
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "next: zmmstat demo --save demo.json, then zmmstat show, map or pprof demo.json;")
	fmt.Fprintln(&b, "      mount inspect.Handler() to look at a running program's heaps (README).")
	_, err = stdout.Write(b.Bytes())
	return err
}

func rule(w io.Writer, title string) {
	fmt.Fprintf(w, "== %s %s\n", title, strings.Repeat("=", max(3, 76-len(title))))
}

type traceInfo struct {
	Records  int `json:"records"`
	Requests int `json:"requests"`
	Allocs   int `json:"allocs"`
	Frees    int `json:"frees"`
	Reallocs int `json:"reallocs"`
	MaxLive  int `json:"max_live"`
}

func traceInfoOf(t *trace.Trace) traceInfo {
	return traceInfo{len(t.Records), t.Requests, t.Allocs, t.Frees, t.Reallocs, t.MaxLive}
}

type demoRun struct {
	trace *trace.Trace
	res   replay.Result
	snap  *zmm.Snapshot
	leaks string
}

// runDemo replays the embedded trace on a fresh debug heap. Each request
// end frees the trace's live blocks one by one and resets the heap, so the
// leak report at a Reset lists only blocks the trace does not own: the
// ones the last request's planted bug leaks.
func runDemo() (*demoRun, error) {
	t, err := trace.Read(bytes.NewReader(demoTrace))
	if err != nil {
		return nil, fmt.Errorf("the embedded demo trace: %w", err)
	}
	var leaks bytes.Buffer
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithName("demo"), zmm.WithLeakReport(&leaks))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	d := &demoRun{trace: t}
	d.res, err = replay.ZmmHooks(h, t, replay.Hooks{
		FreeAtEnd: true,
		AtRequestEnd: func(request int, last bool) {
			if last {
				cacheSessionKeys(h)
				growResponseBuffer(h)
				d.snap = h.Snapshot()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if d.snap == nil {
		return nil, fmt.Errorf("the embedded demo trace does not end with a request end")
	}
	d.leaks = leaks.String()
	return d, nil
}

// plantedLeaks is how many blocks the two functions below leak.
const plantedLeaks = 4

// cacheSessionKeys is the demo's planted bug: it copies three session keys
// into the request's heap and never frees them.
func cacheSessionKeys(h *zmm.Heap) {
	for i := range 3 {
		h.Strdup(fmt.Sprintf("session-key-%d", i)) // leaked
	}
}

// growResponseBuffer grows a buffer with Realloc and forgets to free it:
// the leak report names the Realloc and, as its "actual location", the
// Alloc.
func growResponseBuffer(h *zmm.Heap) {
	buf := h.Alloc(1000)
	buf = h.Realloc(buf, 6000)
	copy(zmm.Bytes(buf, 6000), "HTTP/1.1 200 OK")
}
