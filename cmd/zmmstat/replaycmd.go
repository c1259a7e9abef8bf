package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
	"github.com/gozmm/zmm/zmm"
)

func cmdReplay(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the result and the snapshot as JSON")
	pos, err := parse(fs, args, 1, "TRACE")
	if err != nil {
		return err
	}
	path := pos[0]
	t, err := trace.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: no such file", path)
		}
		return fmt.Errorf("bad trace: %w", err)
	}
	name := filepath.Base(path)
	h, err := zmm.New(zmm.WithName(name), zmm.WithLeakReport(nil))
	if err != nil {
		return err
	}
	defer h.Close()

	var snap *zmm.Snapshot
	hooks := replay.Hooks{AtRequestEnd: func(request int, last bool) {
		if last {
			snap = h.Snapshot()
		}
	}}
	var bar *progressBar
	if isTerminal(stderr) {
		bar = &progressBar{w: stderr, what: name}
		hooks.Progress = bar.update
	}
	res, err := replay.ZmmHooks(h, t, hooks)
	bar.done()
	if err != nil {
		return err
	}
	if snap == nil { // the trace's last request has no request end
		snap = h.Snapshot()
	}
	if *asJSON {
		return writeJSON(stdout, struct {
			Trace    traceInfo     `json:"trace"`
			Replay   replay.Result `json:"replay"`
			Snapshot *zmm.Snapshot `json:"snapshot"`
		}{traceInfoOf(t), res, snap})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "replay of %s: %s: %s, %s, %s, %s\n", name, count(len(t.Records), "record"),
		count(t.Allocs, "alloc"), count(t.Frees, "free"), count(t.Reallocs, "realloc"), count(res.Requests, "request"))
	fmt.Fprintf(&b, "  time        %v, %.1f ns a record\n", res.Duration.Round(time.Microsecond), res.NsPerOp)
	fmt.Fprintf(&b, "  peak usage  %s, real peak %s (highest over the requests)\n", inspect.FormatBytes(res.PeakUsage), inspect.FormatBytes(res.RealPeakUsage))
	fmt.Fprintf(&b, "  mismatches  %d (freed blocks that lost the id written into them)\n", res.Mismatches)
	fmt.Fprintf(&b, "  Go GC       %s, %v of pauses during the replay\n\n", count(int(res.GCCycles), "cycle"), time.Duration(res.GCPauseNs))
	rule(&b, "the heap at the end of the trace's last request, before its Reset")
	writeShow(&b, &inspect.Summary{Snapshot: snap})
	_, err = io.WriteString(stdout, b.String())
	return err
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

// progressBar draws a replay's progress on a terminal.
type progressBar struct {
	w     io.Writer
	what  string
	last  time.Time
	drawn bool
}

func (p *progressBar) update(done, total int) {
	now := time.Now()
	if done < total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	const width = 40
	n, pct := 0, 100
	if total > 0 {
		n, pct = done*width/total, done*100/total
	}
	fmt.Fprintf(p.w, "\rreplaying %s [%s%s] %3d%% %d/%d records", p.what, strings.Repeat("=", n), strings.Repeat(" ", width-n),
		pct, done, total)
	p.drawn = true
}

// done erases the bar.
func (p *progressBar) done() {
	if p != nil && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
