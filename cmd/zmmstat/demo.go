package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/zmm"
)

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
			Workload   workloadStats `json:"workload"`
			Snapshot   *zmm.Snapshot `json:"snapshot"`
			LeakReport string        `json:"leak_report"`
		}{d.stats, d.snap, d.leaks})
	}
	var b bytes.Buffer
	st := d.stats
	fmt.Fprintf(&b, "zmmstat demo: a PHP-like workload of %s (%s, %s, %s)\n",
		count(st.Requests, "request"), count(st.Allocs, "alloc"), count(st.Frees, "free"), count(st.Reallocs, "realloc"))
	fmt.Fprintf(&b, "on a debug heap (zmm.WithDebug(true)), each kind of memory allocated by a function\n")
	fmt.Fprintf(&b, "named for it (cmd/zmmstat/workload.go). The last request has a planted bug:\n")
	fmt.Fprintf(&b, "cacheSessionKeys and growResponseBuffer allocate %s and never free them.\n\n", count(plantedLeaks, "block"))
	ns := 0.0
	if n := st.calls(); n > 0 {
		ns = float64(st.Duration.Nanoseconds()) / float64(n)
	}
	fmt.Fprintf(&b, "%s in %v: %.0f ns each on a debug heap, the workload's own work included\n",
		count(st.calls(), "heap call"), st.Duration.Round(100*time.Microsecond), ns)
	fmt.Fprintf(&b, "peak usage %s, real peak %s\n\n", inspect.FormatBytes(st.PeakUsage), inspect.FormatBytes(st.RealPeakUsage))
	rule(&b, "the heap at the end of the last request, before its Reset (zmmstat show)")
	writeShow(&b, &inspect.Summary{Snapshot: d.snap})
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

type demoRun struct {
	stats workloadStats
	snap  *zmm.Snapshot
	leaks string
}

// runDemo runs the workload on a fresh debug heap, plants the leaks in
// its last request and takes the snapshot there.
func runDemo() (*demoRun, error) {
	var leaks bytes.Buffer
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithName("demo"), zmm.WithLeakReport(&leaks))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	d := &demoRun{}
	d.stats = runWorkload(h, func(request int, last bool) {
		if last {
			cacheSessionKeys(h)
			growResponseBuffer(h)
			d.snap = h.Snapshot()
		}
	})
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
