package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/zmm"
)

var (
	update          = flag.Bool("update", false, "rewrite the golden files of testdata from the snapshots there")
	updateSnapshots = flag.Bool("update-snapshots", false, "regenerate the snapshots of testdata (then run with -update)")
)

// zmmstat runs the command and returns its exit code, stdout and stderr.
func zmmstat(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// The snapshots of testdata, made by the workloads below.
var testSnapshots = map[string]func(t *testing.T) *zmm.Snapshot{
	"debug": debugSnapshot,
	"plain": plainSnapshot,
}

var fixedTime = time.Date(2026, 11, 21, 19, 36, 52, 0, time.UTC)

// debugSnapshot is a debug heap with two chunks, a huge block, blocks
// from a few sites and a reallocated one.
func debugSnapshot(t *testing.T) *zmm.Snapshot {
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithName("golden"), zmm.WithLeakReport(nil))
	require.NoError(t, err)
	defer h.Close()
	var keep []unsafe.Pointer
	for i := range 300 {
		keep = append(keep, h.Alloc(uintptr(16+i*37%900)))
	}
	for i := 0; i < len(keep); i += 2 {
		h.Free(keep[i])
	}
	parseTemplate(h)
	h.Alloc(1000 << 10)
	h.Alloc(1000 << 10)
	h.Alloc(1000 << 10) // the second chunk
	h.Alloc(3 << 20)
	s := h.Snapshot()
	s.Time = fixedTime
	return s
}

func parseTemplate(h *zmm.Heap) {
	for range 20 {
		p := h.Alloc(40)
		h.Realloc(p, 2000)
	}
}

// plainSnapshot is a normal heap (no sites) with a cached chunk and a
// cached huge mapping.
func plainSnapshot(t *testing.T) *zmm.Snapshot {
	h, err := zmm.New(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLimit(64<<20))
	require.NoError(t, err)
	defer h.Close()
	for i := range 2000 {
		p := h.Alloc(uintptr(8 + i%3000))
		if i%3 == 0 {
			h.Free(p)
		}
	}
	big := h.Alloc(1000 << 10) // page runs: a second chunk, cached when they go
	big2 := h.Alloc(1000 << 10)
	h.Free(big)
	h.Free(big2)
	h.Free(h.Alloc(4 << 20))
	s := h.Snapshot()
	s.Time = fixedTime
	return s
}

func TestShowGolden(t *testing.T) {
	for name, make := range testSnapshots {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name+".json")
			if *updateSnapshots {
				var b bytes.Buffer
				require.NoError(t, writeJSON(&b, make(t)))
				require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644))
			}
			code, out, errOut := zmmstat(t, "show", path)
			require.Equal(t, 0, code, errOut)
			golden := filepath.Join("testdata", name+".show.golden")
			if *update || *updateSnapshots {
				require.NoError(t, os.WriteFile(golden, []byte(out), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			assert.Equal(t, string(want), out, "zmmstat show %s differs from %s (run go test -update if the change is right)", path, golden)
		})
	}
}

func TestShowJSON(t *testing.T) {
	path := filepath.Join("testdata", "debug.json")
	code, out, errOut := zmmstat(t, "show", "--json", path)
	require.Equal(t, 0, code, errOut)
	got, err := inspect.Decode(strings.NewReader(out))
	require.NoError(t, err)
	want, err := inspect.Load(path)
	require.NoError(t, err)
	require.Equal(t, want, got)

	// Flags may follow the argument.
	code, out2, _ := zmmstat(t, "show", path, "-json")
	require.Equal(t, 0, code)
	assert.Equal(t, out, out2)
}

func TestShowParts(t *testing.T) {
	_, out, _ := zmmstat(t, "show", filepath.Join("testdata", "debug.json"))
	for _, want := range []string{
		`heap "golden" (chunks mode, debug)`,
		"bins:", "utilization",
		"fragmentation:",
		"chunk 0 (main) at 0x", "chunk 1 at 0x", "  0 #",
		"huge blocks (a mapping each): 1, 3.0 MiB",
		"top allocation sites",
		"zmmstat.parseTemplate", "reallocated; first allocated in zmmstat.parseTemplate",
	} {
		assert.Contains(t, out, want)
	}
	// Each page map has 8 rows of 64 pages.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "    0 #") {
			assert.Len(t, line, 6+64, line)
		}
	}
	_, out, _ = zmmstat(t, "show", filepath.Join("testdata", "plain.json"))
	assert.NotContains(t, out, "top allocation sites")
	assert.Contains(t, out, "cached chunks (empty, kept for reuse): 0x")
	assert.Contains(t, out, "cached huge mappings: 1, 4.0 MiB")
	assert.Contains(t, out, "limit       64.0 MiB")
}

func TestPprof(t *testing.T) {
	out := filepath.Join(t.TempDir(), "heap.pb.gz")
	code, stdout, errOut := zmmstat(t, "pprof", filepath.Join("testdata", "debug.json"), "-o", out)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, stdout, "wrote "+out)
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	p, err := profile.Parse(f)
	require.NoError(t, err)
	require.NoError(t, p.CheckValid())
	var fns []string
	for _, fn := range p.Function {
		fns = append(fns, fn.Name)
		if fn.Name == "github.com/gozmm/zmm/cmd/zmmstat.parseTemplate" || fn.Name == "main.parseTemplate" {
			assert.True(t, strings.HasSuffix(fn.Filename, "cmd/zmmstat/main_test.go"), fn.Filename)
		}
	}
	assert.Contains(t, strings.Join(fns, " "), "parseTemplate")

	// A heap without sites: bins and kinds.
	code, stdout, _ = zmmstat(t, "pprof", "-o", out, filepath.Join("testdata", "plain.json"))
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "by bins and kinds")
}

func TestMapSVG(t *testing.T) {
	out := filepath.Join(t.TempDir(), "chunks.svg")
	code, stdout, errOut := zmmstat(t, "map", filepath.Join("testdata", "debug.json"), "-o", out)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, "wrote "+out+": 2 chunks\n", stdout)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	dec := xml.NewDecoder(bytes.NewReader(data))
	rects, texts := 0, []string{}
	var inText bool
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		switch tok := tok.(type) {
		case xml.StartElement:
			switch tok.Name.Local {
			case "rect":
				rects++
			case "text":
				inText = true
			}
			if tok.Name.Local == "svg" {
				assert.Equal(t, "http://www.w3.org/2000/svg", tok.Name.Space)
			}
		case xml.EndElement:
			inText = false
		case xml.CharData:
			if inText {
				texts = append(texts, string(tok))
			}
		}
	}
	assert.Greater(t, rects, 2*512, "a cell per page of each chunk, and the runs")
	all := strings.Join(texts, "\n")
	assert.Contains(t, all, `zmm heap "golden"`)
	assert.Contains(t, all, "chunk 1 at 0x")
	assert.Contains(t, all, "large run")
	assert.Contains(t, all, "bin 27  2048 B")
}

func TestMapPNG(t *testing.T) {
	out := filepath.Join(t.TempDir(), "chunks.png")
	code, _, errOut := zmmstat(t, "map", "-o", out, filepath.Join("testdata", "plain.json"))
	require.Equal(t, 0, code, errOut)
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	b := img.Bounds()
	assert.Greater(t, b.Dx(), mapCols*cellPitch)
	assert.Greater(t, b.Dy(), 8*cellPitch)
	// The first chunk's header page is drawn in the header colour.
	s, err := inspect.Load(filepath.Join("testdata", "plain.json"))
	require.NoError(t, err)
	d := layoutMap(s)
	var header *mapRect
	for i := range d.rects {
		if d.rects[i].c == colHeader {
			header = &d.rects[i]
			break
		}
	}
	require.NotNil(t, header)
	r, g, bl, _ := img.At(header.x+1, header.y+1).RGBA()
	assert.Equal(t, [3]uint32{uint32(colHeader.R), uint32(colHeader.G), uint32(colHeader.B)}, [3]uint32{r >> 8, g >> 8, bl >> 8})
}

// TestErrors checks every error path: a one-line message and exit code 1
// for a failure; the message and the usage text and exit code 2 for a
// usage error.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return p
	}
	badSnap := write("bad.json", []byte(`{"version": 1, "bins": [`))
	oldSnap := write("v7.json", []byte(`{"version": 7}`))
	var tb bytes.Buffer
	tb.WriteString("ZMMTRACE")
	tb.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	tb.Write(trace.AppendRecord(nil, trace.Record{Op: trace.OpFree, ID: 3}))
	badTrace := write("bad.ztrace", tb.Bytes())
	goodTrace := writeTrace(t, "good.ztrace", trace.Record{Op: trace.OpAlloc, ID: 0, Size: 10})
	goodTraceGz := writeTrace(t, "good.ztrace.gz", trace.Record{Op: trace.OpAlloc, ID: 0, Size: 10})
	array := write("array.json", []byte(`[{"version": 1}]`))
	notTrace := write("not.ztrace", []byte("hello"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadURL := "http://" + l.Addr().String() + "/debug/zmm/"
	l.Close()
	missing := filepath.Join(dir, "missing.json")
	out := filepath.Join(dir, "out")

	failures := []struct {
		args []string
		want string
	}{
		{[]string{"show", missing}, "zmmstat: " + missing + ": no such file"},
		{[]string{"show", badSnap}, "not a snapshot: bad JSON"},
		{[]string{"show", oldSnap}, "unsupported snapshot version 7"},
		{[]string{"show", array}, array + ": not a snapshot: a heap snapshot is a JSON object, and this is an array"},
		{[]string{"show", goodTrace}, goodTrace + ": an allocation trace, not a heap snapshot: replay it with zmmstat replay " + goodTrace},
		{[]string{"show", goodTraceGz}, goodTraceGz + ": an allocation trace, not a heap snapshot: replay it with zmmstat replay " + goodTraceGz},
		{[]string{"pprof", goodTraceGz, "-o", out + ".pb.gz"}, "an allocation trace, not a heap snapshot: replay it with zmmstat replay"},
		{[]string{"map", goodTrace, "-o", out + ".svg"}, "an allocation trace, not a heap snapshot: replay it with zmmstat replay"},
		{[]string{"show", deadURL}, "unreachable"},
		{[]string{"pprof", missing, "-o", out + ".pb.gz"}, "no such file"},
		{[]string{"pprof", badSnap, "-o", out + ".pb.gz"}, "bad JSON"},
		{[]string{"pprof", deadURL, "-o", out + ".pb.gz"}, "unreachable"},
		{[]string{"pprof", "testdata/debug.json", "-o", filepath.Join(dir, "no", "such", "dir.pb.gz")}, "no such file or directory"},
		{[]string{"map", missing, "-o", out + ".svg"}, "no such file"},
		{[]string{"map", badSnap, "-o", out + ".png"}, "bad JSON"},
		{[]string{"map", deadURL, "-o", out + ".svg"}, "unreachable"},
		{[]string{"replay", missing}, "no such file"},
		{[]string{"replay", badTrace}, "bad trace: " + badTrace + ": trace: record 0: free of id 3, which is not live"},
		{[]string{"replay", notTrace}, "bad trace: " + notTrace + ": trace: header: truncated header"},
		{[]string{"replay", badSnap}, "bad trace"},
		{[]string{"watch", deadURL, "--count", "1"}, "unreachable"},
	}
	for _, f := range failures {
		code, stdout, stderr := zmmstat(t, f.args...)
		assert.Equal(t, 1, code, "%v: %s", f.args, stderr)
		assert.Contains(t, stderr, f.want, "%v", f.args)
		assert.True(t, strings.HasPrefix(stderr, "zmmstat: "), "%v: %q", f.args, stderr)
		assert.Equal(t, 1, strings.Count(stderr, "\n"), "%v: one line: %q", f.args, stderr)
		assert.Empty(t, stdout, "%v", f.args)
		assert.NotContains(t, stderr, "struct {", "%v: no Go types", f.args)
		assert.NotContains(t, stderr, "invalid character", "%v", f.args)
	}

	usages := []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"show"}, "show: missing FILE or URL"},
		{[]string{"show", "a", "b"}, "show: too many arguments: b"},
		{[]string{"show", "--bogus", "x"}, "show: flag provided but not defined: -bogus"},
		{[]string{"pprof", "testdata/debug.json"}, "pprof: missing -o OUT.pb.gz"},
		{[]string{"map", "testdata/debug.json"}, "map: missing -o OUT.svg or OUT.png"},
		{[]string{"map", "testdata/debug.json", "-o", "x.jpg"}, "must end in .svg or .png"},
		{[]string{"replay"}, "replay: missing TRACE"},
		{[]string{"demo", "extra"}, "demo takes no arguments"},
		{[]string{"watch"}, "watch: missing URL"},
		{[]string{"watch", "testdata/debug.json"}, "is not an http(s) URL"},
		{[]string{"watch", "http://x/", "--interval", "0s"}, "--interval must be positive"},
		{[]string{"watch", "http://x/", "--interval", "soon"}, "invalid value"},
	}
	for _, u := range usages {
		code, stdout, stderr := zmmstat(t, u.args...)
		assert.Equal(t, 2, code, "%v: %s", u.args, stderr)
		assert.Contains(t, stderr, u.want, "%v", u.args)
		assert.Contains(t, stderr, "usage:\n  zmmstat demo", "%v", u.args)
		assert.Empty(t, stdout, "%v", u.args)
	}

	for _, args := range [][]string{{"help"}, {"--help"}, {"show", "-h"}} {
		code, stdout, stderr := zmmstat(t, args...)
		assert.Equal(t, 0, code, "%v", args)
		assert.Contains(t, stdout, "usage:", "%v", args)
		assert.Empty(t, stderr, "%v", args)
	}
}

func TestDemo(t *testing.T) {
	save := filepath.Join(t.TempDir(), "demo.json")
	code, out, errOut := zmmstat(t, "demo", "--save", save)
	require.Equal(t, 0, code, errOut)
	assert.Empty(t, errOut)
	for _, want := range []string{
		"zmmstat demo: a PHP-like workload of 5 requests (",
		" ns each on a debug heap",
		`heap "demo" (chunks mode, debug)`,
		"chunk 0 (main) at 0x",
		"top allocation sites",
		"readFileWhole  ",
		"growResponseBuffer  ",
		"reallocated; first allocated in ",
		"Script:  'demo'",
		"cmd/zmmstat/demo.go(",
		":  Freeing 0x",
		"(14 bytes), script=demo",
		"Last leak repeated 2 times",
		"(6000 bytes), script=demo",
		"Actual location (location was relayed)",
		"=== Total 4 memory leaks detected ===",
	} {
		assert.Contains(t, out, want)
	}
	assert.Regexp(t, `\n +2\.\d KiB +\d+  2 more sites: (main|zmmstat)\.parseRequest, (main|zmmstat)\.cacheSessionKeys\n`, out,
		"the sites after the top 10 are named")
	s, err := inspect.Load(save)
	require.NoError(t, err)
	assert.Equal(t, "demo", s.Name)
	require.NotEmpty(t, s.Blocks)

	// Every block is charged to a function of the demo named for what it
	// allocated, none to an engine in between.
	bytesBy := map[string]uint64{}
	for _, b := range s.Blocks {
		require.True(t, strings.HasSuffix(b.Site.File, "cmd/zmmstat/workload.go") || strings.HasSuffix(b.Site.File, "cmd/zmmstat/demo.go"),
			"%s allocated in %s", shortFunc(b.Site.Function), b.Site.File)
		bytesBy[shortFunc(b.Site.Function)] += b.Size
	}
	for _, fn := range []string{"parseRequest", "concatStrings", "newHashTable", "newArray", "newObject", "renderRow",
		"compileTemplate", "streamBuffer", "appendToArray", "readFileWhole", "cacheSessionKeys", "growResponseBuffer"} {
		assert.NotZero(t, bytesBy["zmmstat."+fn]+bytesBy["main."+fn], "%s has live blocks", fn)
	}

	code, out, errOut = zmmstat(t, "demo", "--json")
	require.Equal(t, 0, code, errOut)
	var v struct {
		Workload   workloadStats `json:"workload"`
		Snapshot   *zmm.Snapshot `json:"snapshot"`
		LeakReport string        `json:"leak_report"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, 5, v.Workload.Requests)
	assert.Equal(t, v.Workload.Allocs, v.Workload.Frees, "the workload frees all it allocates")
	assert.NotZero(t, v.Workload.Reallocs)
	assert.Contains(t, v.LeakReport, "=== Total 4 memory leaks detected ===")
	require.NotNil(t, v.Snapshot)
	assert.Equal(t, zmm.SnapshotVersion, v.Snapshot.Version)
	assert.Len(t, v.Snapshot.Blocks, len(s.Blocks), "the workload is the same at every run")
}

func writeTrace(t *testing.T, name string, recs ...trace.Record) string {
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, trace.WriteFile(path, &trace.Trace{Records: recs}))
	return path
}

func TestReplay(t *testing.T) {
	a := func(id uint32, size uint64) trace.Record { return trace.Record{Op: trace.OpAlloc, ID: id, Size: size} }
	f := func(id uint32) trace.Record { return trace.Record{Op: trace.OpFree, ID: id} }
	end := trace.Record{Op: trace.OpRequestEnd}
	path := writeTrace(t, "small.ztrace.gz",
		a(0, 100), a(1, 5000), f(0), end,
		a(0, 64), a(1, 64), a(2, 3<<20), a(3, 200), f(1), end)
	code, out, errOut := zmmstat(t, "replay", path)
	require.Equal(t, 0, code, errOut)
	assert.Empty(t, errOut, "no progress bar when stderr is not a terminal")
	for _, want := range []string{
		"replay of small.ztrace.gz: 10 records: 6 allocs, 2 frees, 0 reallocs, 2 requests",
		"mismatches  0",
		"the heap at the end of the trace's last request, before its Reset",
		`heap "small.ztrace.gz"`,
		"huge blocks (a mapping each): 1, 3.0 MiB",
	} {
		assert.Contains(t, out, want)
	}
	// The snapshot is of the last request: 64, 3 MiB and 200 bytes live.
	assert.Contains(t, out, "usage       3.0 MiB")

	code, out, errOut = zmmstat(t, "replay", "--json", path)
	require.Equal(t, 0, code, errOut)
	var v struct {
		Trace    traceInfo `json:"trace"`
		Replay   struct{ Ops, Requests, Mismatches int }
		Snapshot *zmm.Snapshot `json:"snapshot"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, 10, v.Replay.Ops)
	assert.Equal(t, 2, v.Replay.Requests)
	assert.Equal(t, 6, v.Trace.Allocs)
	assert.Len(t, v.Snapshot.Huge, 1)

	// Without a final request end, the report is of the heap at the end.
	path = writeTrace(t, "open.ztrace", a(0, 100), end, a(0, 3000))
	code, out, errOut = zmmstat(t, "replay", path)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "2 requests")
	assert.Contains(t, out, "usage       3.0 KiB")

	// One of each, said in the singular.
	path = writeTrace(t, "one.ztrace", a(0, 100))
	code, out, errOut = zmmstat(t, "replay", path)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "replay of one.ztrace: 1 record: 1 alloc, 0 frees, 0 reallocs, 1 request\n")
	assert.Contains(t, out, "bins: 1 of 30 holds runs\n")
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	p := &progressBar{w: &b, what: "x"}
	p.update(10, 100)
	p.update(20, 100) // too soon: skipped
	p.update(100, 100)
	p.done()
	assert.Equal(t, "\rreplaying x [====                                    ]  10% 10/100 records"+
		"\rreplaying x [========================================] 100% 100/100 records\r\x1b[K", b.String())
	var nilBar *progressBar
	nilBar.done()
	assert.False(t, isTerminal(&b))
}

func TestWatch(t *testing.T) {
	h, err := zmm.New(zmm.WithLeakReport(nil))
	require.NoError(t, err)
	defer h.Close()
	var mu sync.Mutex
	inspect.Register("watched", h, &mu)
	defer inspect.Unregister("watched")
	var paths []string
	var pathsMu sync.Mutex
	mux := http.NewServeMux()
	mux.Handle("/debug/zmm/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pathsMu.Lock()
		paths = append(paths, r.URL.String())
		pathsMu.Unlock()
		mu.Lock()
		h.Alloc(100000) // the heap grows between refreshes
		mu.Unlock()
		inspect.Handler().ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	url := srv.URL + "/debug/zmm/?heap=watched"
	code, out, errOut := zmmstat(t, "watch", url, "--interval", "10ms", "--count", "3")
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, 3, strings.Count(out, "zmmstat watch "+url))
	assert.Equal(t, 3, strings.Count(out, `heap "watched"`))
	assert.Equal(t, 2, strings.Count(out, "change      usage +100.0 KiB"))
	assert.Contains(t, out, "3 of 3")
	assert.NotContains(t, out, "\x1b[2J", "no screen clearing when stdout is not a terminal")
	assert.Contains(t, paths[0], "/debug/zmm/snapshot?")
	assert.Contains(t, paths[0], "blocks=0")
	assert.Contains(t, paths[0], "heap=watched")

	code, out, errOut = zmmstat(t, "watch", url, "--interval", "10ms", "--count", "2", "--json")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	for _, line := range lines {
		s, err := inspect.Decode(strings.NewReader(line))
		require.NoError(t, err)
		assert.Equal(t, "watched", s.Name)
	}
}

func TestCount(t *testing.T) {
	for want, got := range map[string]string{
		"0 requests":     count(0, "request"),
		"1 request":      count(1, "request"),
		"2 requests":     count(2, "request"),
		"1 mismatch":     count(1, "mismatch"),
		"3 mismatches":   count(3, "mismatch"),
		"2 live blocks":  count(2, "live block"),
		"1 huge mapping": count(1, "huge mapping"),
	} {
		assert.Equal(t, want, got)
	}
}

func TestHuman(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1000: "1000 B", 1024: "1.0 KiB", 5 << 19: "2.5 MiB"} {
		assert.Equal(t, want, inspect.FormatBytes(n))
	}
	assert.Equal(t, "[#####.....]", bar(50, 10))
	assert.Equal(t, "[#.........]", bar(1, 10))
	assert.Equal(t, "[..........]", bar(0, 10))
	assert.Equal(t, "+1.0 KiB", delta(1024, 2048))
	assert.Equal(t, "-1.0 KiB", delta(2048, 1024))
}

func TestShowNamesTheStorage(t *testing.T) {
	s := &inspect.Summary{Snapshot: plainSnapshot(t)}
	var b bytes.Buffer
	writeSummary(&b, s)
	assert.NotContains(t, b.String(), "storage", "a heap over the OS has no storage line")

	s.Storage = "region 0x7f0000000000+8 MiB"
	b.Reset()
	writeSummary(&b, s)
	assert.Contains(t, b.String(), "\n  storage     region 0x7f0000000000+8 MiB\n")
}

// TestWatchCountsTheBlocksOfADebugHeap checks the live-block line of watch,
// which fetches snapshots without their block lists, against a debug heap
// served by the inspect handler.
func TestWatchCountsTheBlocksOfADebugHeap(t *testing.T) {
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(nil))
	require.NoError(t, err)
	defer h.Close()
	for range 20000 {
		h.Alloc(100)
	}
	var mu sync.Mutex
	inspect.Register("debug-watched", h, &mu)
	defer inspect.Unregister("debug-watched")
	srv := httptest.NewServer(inspect.Handler())
	defer srv.Close()
	url := srv.URL + "/debug/zmm/?heap=debug-watched"

	const want = "  live blocks 20000, 1.9 MiB requested\n"
	code, out, errOut := zmmstat(t, "show", url)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, want, "show, with the blocks")
	code, out, errOut = zmmstat(t, "watch", url, "--count", "1")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, want, "watch, without the blocks")
	code, out, errOut = zmmstat(t, "show", url+"&blocks=0")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, want, "show, told to leave the blocks out")
	assert.NotContains(t, out, "top allocation sites")

	code, out, errOut = zmmstat(t, "watch", url, "--count", "1", "--json")
	require.Equal(t, 0, code, errOut)
	var v struct {
		Blocks        []zmm.BlockSnapshot  `json:"blocks"`
		BlocksLeftOut *inspect.BlockTotals `json:"blocks_left_out"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Empty(t, v.Blocks)
	assert.Equal(t, &inspect.BlockTotals{Count: 20000, Bytes: 20000 * 100}, v.BlocksLeftOut)
}

// TestShowSharedAllocator: show of a whole shared allocator's snapshot
// lists its heaps, where each was, and their remote frees.
func TestShowSharedAllocator(t *testing.T) {
	a, err := zmm.NewShared(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithName("pool"))
	require.NoError(t, err)
	defer a.Close()
	p := a.Alloc(100)
	s := &inspect.Summary{Snapshot: a.Snapshot()}
	require.NotNil(t, s.Shared)
	var b bytes.Buffer
	writeShow(&b, s)
	out := b.String()
	assert.Contains(t, out, `heap "pool" (chunks mode)`)
	assert.Contains(t, out, "shared allocator (per-P heaps): 1 heap, 0 idle, 0 stranded (their P went away), 0 adopted\n")
	assert.Contains(t, out, "remote frees: 0 pending when the snapshot was taken (it collected them), 0 collected in all\n")
	assert.Regexp(t, `\n\s+0\s+\d+\s+\d+ B\s+2\.0 MiB\s+1\s+0\s+0\n`, out)
	a.Free(p)
}
