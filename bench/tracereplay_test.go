package bench

// BenchmarkReplay replays each committed trace (bench/traces/*.ztrace.gz,
// made by bench/gen) on each allocator with the semantics of
// docs/TRACE_FORMAT.md (trace/replay for zmm and Go, bench/peers for the
// others):
//
//	go test ./bench -run XXX -bench Replay -count 10 -results=$PWD/replay.jsonl
//
// Each iteration replays the whole trace on a fresh allocator (a new
// zmm.Heap, a new modernc Allocator; for Go the same runtime), as the C
// harness replays each trace in a fresh process, so every replay starts
// cold. Metrics:
//
//	ns/op           per trace record: the timed replay loops' time divided
//	                by the records replayed (the default, per replay, is
//	                replaced)
//	cpu-ns/op       process CPU per trace record, over whole iterations
//	                (setup and release included), collector included
//	gc-cycles       Go collections during the whole run (zmm: 0)
//	gc-pause-ns/op  their pause per trace record
//	peak-rss-MiB    the process's VmHWM, reset before the first replay
//	real-peak-MiB   zmm only: the heap's own peak of mapped memory
//
// -results=FILE appends a JSON line per sub-benchmark run to FILE:
// {"allocator", "trace", "ns_per_op", "peak_rss_bytes", ...}, the fields
// bench/chart reads, named as the C harness (bench/c) names them; "trace"
// is the file's base name (small.ztrace.gz), as there. go test runs in
// bench/, so give FILE as an absolute path.

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"modernc.org/memory"

	"github.com/gozmm/zmm/bench/peers"
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
	"github.com/gozmm/zmm/zmm"
)

var resultsPath = flag.String("results", "", "append a JSON line per BenchmarkReplay run to this file (for bench/chart)")

// tracesGlob finds the committed traces, from bench/ (go test's directory).
const tracesGlob = "traces/*.ztrace.gz"

type namedTrace struct {
	name string // the file name without .ztrace.gz
	file string // the file name, as the C harness names a trace
	t    *trace.Trace
}

var (
	tracesOnce sync.Once
	tracesList []namedTrace
	tracesErr  error
)

// committedTraces loads the committed traces once, sorted by name.
func committedTraces(tb testing.TB) []namedTrace {
	tb.Helper()
	tracesOnce.Do(func() {
		files, err := filepath.Glob(tracesGlob)
		if err != nil {
			tracesErr = err
			return
		}
		slices.Sort(files)
		for _, f := range files {
			t, err := trace.ReadFile(f)
			if err != nil {
				tracesErr = err
				return
			}
			base := filepath.Base(f)
			tracesList = append(tracesList, namedTrace{strings.TrimSuffix(base, ".ztrace.gz"), base, t})
		}
	})
	if tracesErr != nil {
		tb.Fatal(tracesErr)
	}
	if len(tracesList) == 0 {
		tb.Fatalf("no traces match %s", tracesGlob)
	}
	return tracesList
}

// replayPeer replays a trace on a fresh allocator; release frees what the
// replay left (blocks of a last request without a request end) and is
// called after the measurement of the replay.
type replayPeer struct {
	name string
	// requestOK: only for traces with request ends (the arena, which
	// cannot free a block before the end of its request).
	requestOK bool
	run       func(t *trace.Trace) (res replay.Result, release func(), err error)
}

// replayPeers lists the allocators; arena_test.go adds the arena.
var replayPeers = []replayPeer{
	{name: "zmm", run: func(t *trace.Trace) (replay.Result, func(), error) {
		h, err := zmm.New(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
		if err != nil {
			return replay.Result{}, func() {}, err
		}
		res, err := replay.Zmm(h, t, nil)
		return res, h.Close, err
	}},
	{name: "go", run: func(t *trace.Trace) (replay.Result, func(), error) {
		res, err := replay.Go(t, nil)
		return res, func() {}, err
	}},
	{name: "modernc", run: func(t *trace.Trace) (replay.Result, func(), error) {
		a := new(memory.Allocator)
		res, err := peers.Modernc(a, t, nil)
		return res, func() { _ = a.Close() }, err
	}},
}

// replayLine is one JSON line of -results.
type replayLine struct {
	Allocator    string  `json:"allocator"`
	Trace        string  `json:"trace"`
	NsPerOp      float64 `json:"ns_per_op"`
	PeakRSSBytes uint64  `json:"peak_rss_bytes"`
	// BaseRSSBytes is the process's RSS before the first replay: the Go
	// runtime, the test binary and the loaded traces.
	BaseRSSBytes  uint64  `json:"base_rss_bytes"`
	RealPeakBytes uint64  `json:"real_peak_bytes,omitempty"`
	Ops           int     `json:"ops"`
	Replays       int     `json:"replays"`
	CPUNsPerOp    float64 `json:"cpu_ns_per_op"`
	GCCycles      uint32  `json:"gc_cycles"`
	GCPauseNs     uint64  `json:"gc_pause_ns"`
	Mismatches    int     `json:"mismatches"`
	Source        string  `json:"source"`
	GoVersion     string  `json:"go_version"`
	Time          string  `json:"time"`
}

var resultsMu sync.Mutex

// appendResult appends l to path as a JSON line.
func appendResult(path string, l replayLine) error {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// replaySum adds up the replays of one sub-benchmark.
type replaySum struct {
	replays    int
	ops        int
	dur        time.Duration
	gcCycles   uint32
	gcPause    uint64
	mismatches int
	realPeak   uint64
}

func (s *replaySum) add(r replay.Result) {
	s.replays++
	s.ops += r.Ops
	s.dur += r.Duration
	s.gcCycles += r.GCCycles
	s.gcPause += r.GCPauseNs
	s.mismatches += r.Mismatches
	s.realPeak = max(s.realPeak, r.RealPeakUsage)
}

func BenchmarkReplay(b *testing.B) {
	for _, nt := range committedTraces(b) {
		b.Run("trace="+nt.name, func(b *testing.B) {
			for _, p := range replayPeers {
				if p.requestOK && nt.t.Requests == 0 {
					continue
				}
				b.Run("alloc="+p.name, func(b *testing.B) { benchReplay(b, nt, p) })
			}
		})
	}
}

func benchReplay(b *testing.B, nt namedTrace, p replayPeer) {
	m := startMeter()
	_, baseline := procRSS()
	var sum replaySum
	for b.Loop() {
		res, release, err := p.run(nt.t)
		release()
		if err != nil {
			b.Fatal(err)
		}
		sum.add(res)
	}
	r := m.read()
	if sum.mismatches > 0 {
		b.Errorf("%d freed blocks lost their id", sum.mismatches)
	}
	ops := float64(max(sum.ops, 1))
	nsPerOp := float64(sum.dur.Nanoseconds()) / ops
	b.ReportMetric(nsPerOp, "ns/op")
	b.ReportMetric(float64(r.cpu.Nanoseconds())/ops, "cpu-ns/op")
	b.ReportMetric(float64(r.gcCycles), "gc-cycles")
	b.ReportMetric(float64(r.pauseNs)/ops, "gc-pause-ns/op")
	if r.peakRSS > 0 {
		b.ReportMetric(float64(r.peakRSS)/(1<<20), "peak-rss-MiB")
	}
	if sum.realPeak > 0 {
		b.ReportMetric(float64(sum.realPeak)/(1<<20), "real-peak-MiB")
	}
	if *resultsPath != "" {
		err := appendResult(*resultsPath, replayLine{
			Allocator:     p.name,
			Trace:         nt.file,
			NsPerOp:       nsPerOp,
			PeakRSSBytes:  r.peakRSS,
			BaseRSSBytes:  baseline,
			RealPeakBytes: sum.realPeak,
			Ops:           len(nt.t.Records),
			Replays:       sum.replays,
			CPUNsPerOp:    float64(r.cpu.Nanoseconds()) / ops,
			GCCycles:      r.gcCycles,
			GCPauseNs:     r.pauseNs,
			Mismatches:    sum.mismatches,
			Source:        "go test -bench Replay",
			GoVersion:     runtime.Version(),
			Time:          time.Now().UTC().Format(time.RFC3339),
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestReplayTraces checks the committed traces (present, small, valid)
// and replays the first records of each on every allocator.
func TestReplayTraces(t *testing.T) {
	traces := committedTraces(t)
	var names []string
	for _, nt := range traces {
		names = append(names, nt.name)
	}
	for _, want := range []string{"huge", "large", "request", "small"} {
		if !slices.Contains(names, want) {
			t.Errorf("no trace %q in %s (have %q)", want, tracesGlob, names)
		}
	}
	files, _ := filepath.Glob(tracesGlob)
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Size() >= 200<<10 {
			t.Errorf("%s: %v, %d bytes (at most 200 KiB)", f, err, st.Size())
		}
	}
	for _, nt := range traces {
		// A prefix of a valid trace is valid: up to 3000 records (the
		// request trace's first request end is within them) or 256 MiB
		// asked for (the huge trace's blocks average 2 MiB).
		n, bytes := 0, uint64(0)
		for n < min(3000, len(nt.t.Records)) && bytes < 256<<20 {
			bytes += nt.t.Records[n].Size
			n++
		}
		pre := &trace.Trace{Records: nt.t.Records[:n]}
		if err := pre.Analyze(); err != nil {
			t.Fatal(err)
		}
		for _, p := range replayPeers {
			if p.requestOK && pre.Requests == 0 {
				continue
			}
			res, release, err := p.run(pre)
			release()
			if err != nil {
				t.Fatalf("%s on %s: %v", p.name, nt.name, err)
			}
			if res.Mismatches != 0 || res.Ops != len(pre.Records) {
				t.Errorf("%s on %s: %v", p.name, nt.name, res)
			}
		}
	}
}

func TestAppendResult(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.jsonl")
	for _, a := range []string{"zmm", "go"} {
		if err := appendResult(path, replayLine{Allocator: a, Trace: "small", NsPerOp: 12.5, PeakRSSBytes: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), b)
	}
	var l map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &l); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"allocator": "go", "trace": "small", "ns_per_op": 12.5, "peak_rss_bytes": float64(1 << 20)} {
		if l[k] != want {
			t.Errorf("%s = %v, want %v", k, l[k], want)
		}
	}
}
