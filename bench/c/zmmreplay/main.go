// Command zmmreplay is the zmm side of the C comparison in bench/c: it
// replays a trace on a zmm heap with trace/replay and prints one JSON object
// with the same fields as the C harness (bench/c/replay.c), peak RSS
// measured the same way: VmRSS from /proc/self/statm, sampled at each
// request end before the reset, every 16384 records and after the replay,
// the highest sample, with the sampling time taken out of the replay time.
// VmSize is sampled at the same moments (peak_vm_bytes): the address space
// the heap has mapped, touched or not.
//
//	zmmreplay [-verbose] [-alloc zmm|bump] TRACE
//	zmmreplay -table RESULTS.jsonl...
//
// -alloc bump replays on a bump allocator instead (allocator "bump-go"),
// with the same loop: the floor of the Go loop (bump.go).
//
// With -table it reads JSON lines written by run.sh (zmmreplay and the C
// binaries) and prints a Markdown table: for each trace and allocator the
// median ns/op and peak RSS over the runs, and their ratios to the Zend MM,
// the median of ns/op over the Zend MM's in the same repetition, and that
// ratio once each side's loop floor is taken off (Table).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
	"github.com/gozmm/zmm/zmm"
)

// Result is one run, as the C harness prints it; fields a side does not
// have are left out.
type Result struct {
	Allocator string `json:"allocator"`
	Trace     string `json:"trace"`
	// Loop is the replay loop that ran, "go" or "c" (results written
	// before the field existed: "go" for zmm, "c" for the others).
	Loop       string  `json:"loop,omitempty"`
	Ops        int     `json:"ops"`
	DurationNs int64   `json:"duration_ns"`
	NsPerOp    float64 `json:"ns_per_op"`
	CPUNs      int64   `json:"cpu_ns"`
	PeakRSS    uint64  `json:"peak_rss_bytes"`
	BaseRSS    uint64  `json:"base_rss_bytes"`
	MaxRSS     uint64  `json:"maxrss_bytes"`
	// PeakVM and BaseVM: VmSize, sampled as the RSS (0 in results written
	// before the fields existed).
	PeakVM        uint64  `json:"peak_vm_bytes,omitempty"`
	BaseVM        uint64  `json:"base_vm_bytes,omitempty"`
	Mismatches    int     `json:"mismatches"`
	Requests      int     `json:"requests"`
	Allocs        int     `json:"allocs"`
	Frees         int     `json:"frees"`
	Reallocs      int     `json:"reallocs"`
	MaxLive       int     `json:"max_live"`
	PeakUsage     uint64  `json:"peak_usage,omitempty"`
	RealPeakUsage uint64  `json:"real_peak_usage,omitempty"`
	GCCycles      *uint32 `json:"gc_cycles,omitempty"`
	GCPauseNs     *uint64 `json:"gc_pause_ns,omitempty"`
	GoVersion     string  `json:"go_version,omitempty"`
	// ArenaBytes and Wraps: the bump floors only (bump.go).
	ArenaBytes uint64  `json:"arena_bytes,omitempty"`
	Wraps      *uint64 `json:"wraps,omitempty"`
	Rep        int     `json:"rep,omitempty"`
}

// loop is r.Loop, or for results without it, the loop its allocator has.
func (r Result) loop() string {
	if r.Loop != "" {
		return r.Loop
	}
	if r.Allocator == "zmm" || r.Allocator == "bump-go" {
		return "go"
	}
	return "c"
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "zmmreplay:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("zmmreplay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("verbose", false, "print the heap's own figures at the end of the first request (stderr)")
	alloc := fs.String("alloc", "zmm", "what to replay on: zmm, or bump (the Go loop's floor)")
	table := fs.Bool("table", false, "summarize JSON-lines result files as a Markdown table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *table {
		if fs.NArg() == 0 {
			return errors.New("-table needs result files")
		}
		var all []Result
		for _, path := range fs.Args() {
			rs, err := readResults(path)
			if err != nil {
				return err
			}
			all = append(all, rs...)
		}
		_, err := io.WriteString(stdout, Table(all))
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: zmmreplay [-verbose] [-alloc zmm|bump] TRACE | zmmreplay -table RESULTS.jsonl...")
	}
	res, err := replayFile(fs.Arg(0), *alloc, *verbose, stderr)
	if err != nil {
		return err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// statm reads VmSize and VmRSS from /proc/self/statm, as the C harness
// does.
type statm struct {
	f    *os.File
	page uint64
	buf  [128]byte
}

func openStatm() *statm {
	f, err := os.Open("/proc/self/statm")
	if err != nil {
		return &statm{}
	}
	return &statm{f: f, page: uint64(os.Getpagesize())}
}

// sample returns VmSize and VmRSS in bytes, both 0 when statm cannot be
// read.
func (s *statm) sample() (vm, rss uint64) {
	if s.f == nil {
		return 0, 0
	}
	n, err := s.f.ReadAt(s.buf[:], 0)
	if n == 0 && err != nil {
		return 0, 0
	}
	fields := bytes.Fields(s.buf[:n])
	if len(fields) < 2 {
		return 0, 0
	}
	v, err1 := strconv.ParseUint(string(fields[0]), 10, 64)
	r, err2 := strconv.ParseUint(string(fields[1]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return v * s.page, r * s.page
}

// peaks keeps the highest samples.
type peaks struct{ vm, rss uint64 }

func (p *peaks) note(sm *statm) {
	vm, rss := sm.sample()
	p.vm, p.rss = max(p.vm, vm), max(p.rss, rss)
}

func replayFile(path, alloc string, verbose bool, stderr io.Writer) (Result, error) {
	if alloc != "zmm" && alloc != "bump" {
		return Result{}, fmt.Errorf("-alloc %s: want zmm or bump", alloc)
	}
	t, err := trace.ReadFile(path) // untimed
	if err != nil {
		return Result{}, err
	}
	name := filepath.Base(path)
	// replayer runs the timed replay; firstEnd prints the allocator's
	// figures at the end of the first request (-verbose).
	var replayer func(replay.Hooks) (replay.Result, error)
	var firstEnd func()
	allocator := "zmm"
	var arena *bumpArena
	if alloc == "bump" {
		allocator = "bump-go"
		if arena, err = newBumpArena(t); err != nil { // faulted in, untimed
			return Result{}, err
		}
		defer arena.close()
		replayer = func(hooks replay.Hooks) (replay.Result, error) { return replayBump(arena, t, hooks) }
		firstEnd = func() {
			fmt.Fprintf(stderr, "zmmreplay: at the end of request 1: bump arena %d bytes, %d bumped, %d wraps\n",
				arena.end-arena.base, arena.next-arena.base, arena.wraps)
		}
	} else {
		h, err := zmm.New(zmm.WithName(name), zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(nil))
		if err != nil {
			return Result{}, err
		}
		defer h.Close()
		replayer = func(hooks replay.Hooks) (replay.Result, error) { return replay.ZmmHooks(h, t, hooks) }
		firstEnd = func() {
			fmt.Fprintf(stderr, "zmmreplay: at the end of request 1: zmm heap usage %d bytes, real %d; peak %d, real peak %d\n",
				h.Usage(), h.RealUsage(), h.PeakUsage(), h.RealPeakUsage())
		}
	}

	sm := openStatm()
	// The garbage of reading the trace goes back to the OS first, so the
	// base RSS is the trace and the runtime, as in the C harness.
	runtime.GC()
	debug.FreeOSMemory()
	baseVM, base := sm.sample()
	peak := peaks{vm: baseVM, rss: base}
	var sampleTime time.Duration // in Progress: counted by the replay, taken out below
	hooks := replay.Hooks{
		AtRequestEnd: func(request int, last bool) { // not counted by the replay
			peak.note(sm)
			if verbose && request == 1 {
				firstEnd()
			}
		},
		Progress: func(done, total int) {
			if done < total {
				t0 := time.Now()
				peak.note(sm)
				sampleTime += time.Since(t0)
			}
		},
	}
	cpu0 := cpuTime()
	res, err := replayer(hooks)
	cpu := cpuTime() - cpu0
	if err != nil {
		return Result{}, err
	}
	peak.note(sm) // the last request, when it has no request end
	res.Duration -= sampleTime
	if res.Ops > 0 {
		res.NsPerOp = float64(res.Duration.Nanoseconds()) / float64(res.Ops)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	r := Result{
		Allocator:     allocator,
		Trace:         name,
		Loop:          "go",
		Ops:           res.Ops,
		DurationNs:    res.Duration.Nanoseconds(),
		NsPerOp:       res.NsPerOp,
		CPUNs:         cpu.Nanoseconds(),
		PeakRSS:       peak.rss,
		BaseRSS:       base,
		PeakVM:        peak.vm,
		BaseVM:        baseVM,
		MaxRSS:        uint64(ru.Maxrss) * 1024,
		Mismatches:    res.Mismatches,
		Requests:      res.Requests,
		Allocs:        t.Allocs,
		Frees:         t.Frees,
		Reallocs:      t.Reallocs,
		MaxLive:       t.MaxLive,
		PeakUsage:     res.PeakUsage,
		RealPeakUsage: res.RealPeakUsage,
		GCCycles:      &res.GCCycles,
		GCPauseNs:     &res.GCPauseNs,
		GoVersion:     runtime.Version(),
	}
	if arena != nil {
		r.ArenaBytes = uint64(arena.end - arena.base)
		r.Wraps = &arena.wraps
	}
	return r, nil
}

// cpuTime is the process's CPU time, user and system (getrusage), as in the
// C harness.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func readResults(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rs []Result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(text), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		rs = append(rs, r)
	}
	return rs, sc.Err()
}

// allocOrder is the order of the table's rows within a trace.
var allocOrder = []string{"zmm", "zend", "glibc", "jemalloc", "mimalloc", "bump-go", "bump-c"}

// isFloor says whether a is one of the loops' floors (bump.go).
func isFloor(a string) bool { return a == "bump-go" || a == "bump-c" }

func rank(a string) int {
	if i := slices.Index(allocOrder, a); i >= 0 {
		return i
	}
	return len(allocOrder)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

type row struct {
	trace, alloc    string
	runs            int
	ns, rss, growth float64   // medians
	mapped          float64   // median of peak − base VmSize; -1: not measured
	paired          []float64 // ns/op over the Zend MM's in the same repetition
	allocOnly       []float64 // the same, each side's loop floor taken off
	mismatches      int       // the most of any run
}

// quantile returns the q-quantile of sorted xs, interpolating linearly.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (pos-float64(i))*(sorted[i+1]-sorted[i])
}

// pairedCell prints the median of the paired ratios and, from four pairs
// on, their interquartile range.
func pairedCell(ratios []float64) string {
	if len(ratios) == 0 {
		return "–"
	}
	s := slices.Clone(ratios)
	slices.Sort(s)
	if len(s) < 4 {
		return fmt.Sprintf("%.2f", quantile(s, 0.5))
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", quantile(s, 0.5), quantile(s, 0.25), quantile(s, 0.75))
}

// Table summarizes results: per trace and allocator the medians over the
// runs of ns/op, peak RSS and RSS growth (peak − base), and where the
// results have it the mapped growth (peak − base VmSize), each with its
// ratio to the Zend MM's median on the same trace.
//
// The paired column divides each run's ns/op by that of the Zend MM's run
// of the same repetition (run.sh runs the allocators in turn inside a
// repetition, so the two saw the same state of the machine) and gives the
// median of those ratios with their interquartile range: on a noisy
// machine it moves less than the ratio of medians.
//
// The allocator-only column does the same after taking off each side's
// floor: the ns/op of the bump allocator replayed by the same loop in the
// same repetition (bump-go under zmmreplay's Go loop, bump-c under the C
// loop). (ns − floor of its loop) / (Zend's ns − floor of the C loop) is
// the ratio of what the allocators themselves cost, the replay loops'
// own work (records, live table, marking) taken out. It needs the floors'
// runs (run.sh's "bump" entry) and is "–" without them.
func Table(rs []Result) string {
	type key struct{ trace, alloc string }
	type repKey struct {
		trace string
		rep   int
	}
	zendRep := map[repKey]float64{}
	floorRep := map[repKey]map[string]float64{} // loop -> the floor's ns/op
	for _, r := range rs {
		if r.Rep <= 0 || r.NsPerOp <= 0 {
			continue
		}
		k := repKey{r.Trace, r.Rep}
		switch {
		case r.Allocator == "zend":
			zendRep[k] = r.NsPerOp
		case isFloor(r.Allocator):
			if floorRep[k] == nil {
				floorRep[k] = map[string]float64{}
			}
			floorRep[k][r.loop()] = r.NsPerOp
		}
	}
	groups := map[key][]Result{}
	var keys []key
	for _, r := range rs {
		k := key{r.Trace, r.Allocator}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.trace, b.trace); c != 0 {
			return c
		}
		if c := rank(a.alloc) - rank(b.alloc); c != 0 {
			return c
		}
		return strings.Compare(a.alloc, b.alloc)
	})
	rows := make([]row, 0, len(keys))
	zend := map[string]row{}
	withMapped := false
	for _, k := range keys {
		g := groups[k]
		var ns, rss, growth, mapped, paired, allocOnly []float64
		mism := 0
		for _, r := range g {
			rk := repKey{r.Trace, r.Rep}
			if z, ok := zendRep[rk]; ok && r.Rep > 0 {
				paired = append(paired, r.NsPerOp/z)
				own, okOwn := floorRep[rk][r.loop()]
				zf, okZ := floorRep[rk]["c"]
				if okOwn && okZ && !isFloor(r.Allocator) && z > zf {
					allocOnly = append(allocOnly, (r.NsPerOp-own)/(z-zf))
				}
			}
			ns = append(ns, r.NsPerOp)
			rss = append(rss, float64(r.PeakRSS))
			growth = append(growth, float64(r.PeakRSS)-float64(r.BaseRSS))
			if r.PeakVM > 0 {
				mapped = append(mapped, float64(r.PeakVM)-float64(r.BaseVM))
			}
			mism = max(mism, r.Mismatches)
		}
		rw := row{trace: k.trace, alloc: k.alloc, runs: len(g), ns: median(ns), rss: median(rss), growth: median(growth),
			mapped: -1, paired: paired, allocOnly: allocOnly, mismatches: mism}
		if len(mapped) > 0 {
			rw.mapped = median(mapped)
			withMapped = true
		}
		rows = append(rows, rw)
		if k.alloc == "zend" {
			zend[k.trace] = rw
		}
	}
	var b strings.Builder
	b.WriteString("| trace | allocator | ns/op | ×Zend | paired ×Zend (IQR) | allocator-only ×Zend (IQR) | peak RSS | ×Zend | RSS growth | ×Zend |")
	if withMapped {
		b.WriteString(" mapped growth | ×Zend |")
	}
	b.WriteString(" mismatches | runs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	if withMapped {
		b.WriteString("---:|---:|")
	}
	b.WriteString("---:|---:|\n")
	for _, r := range rows {
		z, ok := zend[r.trace]
		ratio := func(x, y float64) string {
			if !ok || y <= 0 || x < 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f", x/y)
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s |",
			r.trace, r.alloc, r.ns, ratio(r.ns, z.ns), pairedCell(r.paired), pairedCell(r.allocOnly), mib(r.rss), ratio(r.rss, z.rss),
			mib(r.growth), ratio(r.growth, z.growth))
		if withMapped {
			m := "–"
			if r.mapped >= 0 {
				m = mib(r.mapped)
			}
			fmt.Fprintf(&b, " %s | %s |", m, ratio(r.mapped, z.mapped))
		}
		fmt.Fprintf(&b, " %d | %d |\n", r.mismatches, r.runs)
	}
	return b.String()
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
