package inspect

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/google/pprof/profile"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/zmm"
)

func newHeap(t *testing.T, opts ...zmm.Option) *zmm.Heap {
	t.Helper()
	h, err := zmm.New(append([]zmm.Option{zmm.WithLeakReport(nil)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

// site is where a test allocated a block.
type site struct {
	fn, file string
	line     int
}

func here(skip int) site {
	pc, file, line, _ := runtime.Caller(skip + 1)
	return site{runtime.FuncForPC(pc).Name(), file, line}
}

// fill allocates small, large and huge blocks, and a reallocated one, and
// returns the sites of the allocations (found from the line of here()).
func fill(h *zmm.Heap) (small, large, huge, grown, orig site) {
	for range 10 {
		h.Alloc(100)
	}
	small = here(0)
	small.line -= 2
	for range 3 {
		h.Alloc(20000)
	}
	large = here(0)
	large.line -= 2
	h.Alloc(3 << 20)
	huge = here(0)
	huge.line--
	p := h.Alloc(50)
	orig = here(0)
	orig.line--
	h.Realloc(p, 700)
	grown = here(0)
	grown.line--
	return
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, debug := range []bool{false, true} {
		h := newHeap(t, zmm.WithDebug(debug), zmm.WithName("round-trip"))
		fill(h)
		h.Free(h.Alloc(5 << 20)) // a cached huge mapping
		s := h.Snapshot()
		if debug {
			require.NotEmpty(t, s.Blocks)
		}
		data, err := json.Marshal(s)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "snap.json")
		require.NoError(t, os.WriteFile(path, data, 0o644))
		got, err := Load(path)
		require.NoError(t, err)
		require.True(t, s.Time.Equal(got.Time))
		got.Time = s.Time
		require.Equal(t, s, got)

		// Gzipped, too.
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write(data)
		require.NoError(t, zw.Close())
		require.NoError(t, os.WriteFile(path+".gz", gz.Bytes(), 0o644))
		got, err = Load(path + ".gz")
		require.NoError(t, err)
		got.Time = s.Time
		require.Equal(t, s, got)
	}
}

// TestSnapshotConsistent checks that the parts of a snapshot agree: the
// blocks with the bins and the runs, the runs with the bins.
func TestSnapshotConsistent(t *testing.T) {
	h := newHeap(t, zmm.WithDebug(true))
	fill(h)
	var ps []unsafe.Pointer
	for i := range 500 {
		ps = append(ps, h.Alloc(uintptr(16+i*7%3000)))
	}
	for i := 0; i < len(ps); i += 3 {
		h.Free(ps[i])
	}
	s := h.Snapshot()
	require.NoError(t, Validate(s))
	kinds := map[string]int{}
	for _, b := range s.Blocks {
		kinds[b.Kind]++
	}
	usedByBin := map[int]int{}
	largeRuns := 0
	for _, c := range s.Chunks {
		for _, r := range c.Runs {
			switch r.Kind {
			case "small":
				usedByBin[r.Bin] += r.Used
			case "large":
				largeRuns++
			}
		}
	}
	used := 0
	for _, b := range s.Bins {
		assert.Equal(t, b.Used, usedByBin[b.Bin], "bin %d: used in the bins table and in the runs", b.Bin)
		used += b.Used
	}
	assert.Equal(t, used, kinds["small"], "small blocks vs used bin slots")
	assert.Equal(t, largeRuns, kinds["large"], "large blocks vs large runs")
	assert.Equal(t, len(s.Huge), kinds["huge"], "huge blocks")
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	good, err := json.Marshal(newHeap(t).Snapshot())
	require.NoError(t, err)
	badRuns := strings.Replace(string(good), `"start":1,`, `"start":2,`, 1)
	require.NotEqual(t, string(good), badRuns)

	cases := []struct {
		name, src, want string
	}{
		{"missing", filepath.Join(dir, "nope.json"), "nope.json: no such file"},
		{"bad json", write("bad.json", `{"version": 1, "stats": `), "not a snapshot: bad JSON: line 1, column"},
		{"not an object", write("array.json", ` [{"version": 1}]`), "not a snapshot: a heap snapshot is a JSON object, and this is an array"},
		{"a string", write("string.json", `"snapshot"`), "not a snapshot: a heap snapshot is a JSON object, and this is a string"},
		{"null", write("null.json", "null\n"), "not a snapshot: a heap snapshot is a JSON object, and this is null"},
		{"bad array", write("badarray.json", `[1, 2`), "not a snapshot: bad JSON: line 1, column"},
		{"version type", write("vtype.json", `{"version": "1"}`), `not a snapshot: field "version" is a JSON string, where a snapshot has a number`},
		{"no version", write("noversion.json", `{"name": "x"}`), `not a snapshot: no "version" field`},
		{"version 2", write("v2.json", `{"version": 2}`), "unsupported snapshot version 2 (this program reads version 1)"},
		{"wrong type", write("type.json", `{"version": 1, "stats": {"usage": "lots"}}`), `bad snapshot: field "stats.usage" is a JSON string, where a snapshot has a number`},
		{"out of range", write("range.json", `{"version": 1, "stats": {"chunks": 1e30}}`), `bad snapshot: field "stats.chunks" holds 1e30, out of its range`},
		{"wrong object", write("obj.json", `{"version": 1, "bins": {}}`), `bad snapshot: field "bins" is a JSON object, where a snapshot has an array`},
		{"no geometry", write("geom.json", `{"version": 1}`), "bad snapshot: page size 0 and chunk size 0 do not fit"},
		{"runs", write("runs.json", badRuns), "bad snapshot: chunk 0x"},
		{"empty", write("empty.json", " \n"), "not a snapshot: empty"},
		{"trace", write("x.ztrace", trace.Magic+"\x01\x00\x00\x00\x00\x00\x00\x00"), "x.ztrace: an allocation trace, not a heap snapshot"},
		{"gzipped trace", write("x.ztrace.gz", gzipped(trace.Magic+"\x01\x00\x00\x00\x00\x00\x00\x00")), "x.ztrace.gz: an allocation trace, not a heap snapshot"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load(c.src)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.NotContains(t, err.Error(), "\n")
			assert.NotContains(t, err.Error(), "Go ", "no Go types in the message")
			assert.Equal(t, strings.HasPrefix(c.name, "trace") || strings.HasPrefix(c.name, "gzipped trace"), errors.Is(err, ErrTrace))
		})
	}
}

func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return b.String()
}

func TestLoadURL(t *testing.T) {
	srv := httptest.NewServer(serveMux())
	defer srv.Close()
	for _, u := range []string{
		srv.URL + "/debug/zmm/",
		srv.URL + "/debug/zmm/?heap=persistent",
		srv.URL + "/debug/zmm",
		srv.URL + "/debug/zmm/snapshot",
		srv.URL + "/debug/zmm/profile?heap=persistent",
		srv.URL,
	} {
		s, err := Load(u)
		require.NoError(t, err, u)
		want := Default
		if strings.Contains(u, "persistent") {
			want = Persistent
		}
		assert.Equal(t, want, s.Name, u)
	}

	_, err := Load(srv.URL + "/debug/zmm/?heap=nope")
	require.ErrorContains(t, err, `404 Not Found: inspect: unknown heap "nope"`)

	fail := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broken\nsecond line", http.StatusInternalServerError)
	}))
	defer fail.Close()
	_, err = Load(fail.URL + "/debug/zmm/")
	require.EqualError(t, err, fail.URL+"/debug/zmm/snapshot: 500 Internal Server Error: broken")

	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>hello</html>")
	}))
	defer notJSON.Close()
	_, err = Load(notJSON.URL + "/snapshot")
	require.ErrorContains(t, err, "not a snapshot: bad JSON")

	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	_, err = Load("http://" + addr + "/debug/zmm/")
	require.ErrorContains(t, err, "unreachable")
	require.ErrorContains(t, err, "connection refused")

	_, err = Load("http://")
	require.ErrorContains(t, err, "no host")
}

func TestSnapshotURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:1":                              "http://h:1/debug/zmm/snapshot",
		"http://h:1/":                             "http://h:1/snapshot",
		"http://h:1/debug/zmm/":                   "http://h:1/debug/zmm/snapshot",
		"http://h:1/debug/zmm/?heap=a":            "http://h:1/debug/zmm/snapshot?heap=a",
		"http://h:1/debug/zmm":                    "http://h:1/debug/zmm/snapshot",
		"https://h/x/snapshot?heap=b":             "https://h/x/snapshot?heap=b",
		"http://h/debug/zmm/profile?heap=b&x=1":   "http://h/debug/zmm/snapshot?heap=b&x=1",
		"http://h/mounted/elsewhere/zmm?heap=c":   "http://h/mounted/elsewhere/zmm/snapshot?heap=c",
		"http://h/debug/zmm/snapshot?blocks=0":    "http://h/debug/zmm/snapshot?blocks=0",
		"http://127.0.0.1:6060/debug/zmm/profile": "http://127.0.0.1:6060/debug/zmm/snapshot",
	} {
		got, err := SnapshotURL(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
}

func serveMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/debug/zmm/", Handler())
	mux.Handle("/", Handler()) // for the URL forms that skip the prefix
	return mux
}

// countingLock is a mutex that counts how often it was taken.
type countingLock struct {
	sync.Mutex
	n atomic.Int32
}

func (l *countingLock) Lock() { l.Mutex.Lock(); l.n.Add(1) }

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

func TestHandler(t *testing.T) {
	h := newHeap(t, zmm.WithDebug(true), zmm.WithName("work"))
	var mu countingLock
	small, large, huge, grown, orig := fill(h)
	Register("work", h, &mu)
	defer Unregister("work")
	srv := httptest.NewServer(serveMux())
	defer srv.Close()
	base := srv.URL + "/debug/zmm/"

	resp, body := get(t, base)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	for _, want := range []string{"default", "persistent", "work", `href="snapshot?heap=work"`, `href="profile?heap=work"`, "chunks, debug"} {
		assert.Contains(t, string(body), want)
	}
	assert.Equal(t, []string{Default, Persistent, "work"}, Heaps())

	n := mu.n.Load()
	resp, body = get(t, base+"snapshot?heap=work")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, n+1, mu.n.Load(), "the handler takes the heap's lock")
	s, err := Decode(bytes.NewReader(body))
	require.NoError(t, err)
	assert.Equal(t, "work", s.Name)
	assert.Len(t, s.Blocks, 10+3+1+1)

	_, body = get(t, base+"snapshot?heap=work&blocks=0")
	s, err = Decode(bytes.NewReader(body))
	require.NoError(t, err)
	assert.Empty(t, s.Blocks)
	sum, err := DecodeSummary(bytes.NewReader(body))
	require.NoError(t, err)
	assert.Empty(t, sum.Blocks)
	want := BlockTotals{Count: 10 + 3 + 1 + 1, Bytes: 10*100 + 3*20000 + 3<<20 + 700}
	assert.Equal(t, &want, sum.BlocksLeftOut, "the blocks left out are counted")
	assert.Equal(t, want, sum.LiveBlocks())
	_, err = DecodeSummary(strings.NewReader(strings.Replace(string(body), `"blocks_left_out"`, `"blocks": [{"size": 1}], "blocks_left_out"`, 1)))
	assert.EqualError(t, err, "bad snapshot: it lists its blocks and says it left them out")

	_, body = get(t, base+"snapshot")
	s, err = Decode(bytes.NewReader(body))
	require.NoError(t, err)
	assert.Equal(t, Default, s.Name)

	resp, body = get(t, base+"profile?heap=work")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
	p, err := profile.Parse(bytes.NewReader(body))
	require.NoError(t, err)
	require.NoError(t, p.CheckValid())
	checkSiteProfile(t, p, small, large, huge, grown, orig)

	for _, c := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "snapshot?heap=nope", 404, `unknown heap "nope" (heaps: default, persistent, work)`},
		{"GET", "profile?heap=nope", 404, `unknown heap "nope"`},
		{"GET", "nope", 404, `no such page "nope"`},
		{"POST", "snapshot", 405, "method POST not allowed"},
		{"DELETE", "", 405, "method DELETE not allowed"},
		{"HEAD", "snapshot", 200, ""},
	} {
		req, err := http.NewRequest(c.method, base+c.path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, c.code, resp.StatusCode, "%s %s", c.method, c.path)
		assert.Contains(t, string(body), c.want, "%s %s", c.method, c.path)
		if c.code == 405 {
			assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
		}
	}

	Unregister("work")
	resp, _ = get(t, base+"snapshot?heap=work")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// TestHandlerLocks serves a heap that a goroutine is using under its lock:
// a debug heap panics with ErrConcurrentUse if the handler ever takes a
// snapshot without the lock.
func TestHandlerLocks(t *testing.T) {
	h := newHeap(t, zmm.WithDebug(true))
	var mu sync.Mutex
	Register("busy", h, &mu)
	defer Unregister("busy")
	srv := httptest.NewServer(serveMux())
	defer srv.Close()

	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		var live []unsafe.Pointer
		err := zmm.Try(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				live = append(live, h.Alloc(uintptr(16+i%2000)))
				if len(live) > 200 {
					h.Free(live[0])
					live = live[1:]
				}
				mu.Unlock()
				runtime.Gosched() // let the handler have the lock now and then
			}
		})
		done <- err
	}()
	for range 10 {
		resp, body := get(t, srv.URL+"/debug/zmm/snapshot?heap=busy")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		resp, body = get(t, srv.URL+"/debug/zmm/profile?heap=busy")
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	}
	close(stop)
	require.NoError(t, <-done)
}

func TestHandlerClosedHeap(t *testing.T) {
	h, err := zmm.New()
	require.NoError(t, err)
	var mu sync.Mutex
	Register("closed", h, &mu)
	defer Unregister("closed")
	h.Close()
	srv := httptest.NewServer(serveMux())
	defer srv.Close()
	resp, body := get(t, srv.URL+"/debug/zmm/snapshot?heap=closed")
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	assert.Contains(t, string(body), "closed")
	resp, body = get(t, srv.URL+"/debug/zmm/")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "closed heap")
}

func TestRegisterPanics(t *testing.T) {
	h := newHeap(t)
	var mu sync.Mutex
	assert.PanicsWithValue(t, `inspect: Register("default"): the name is reserved for zmm's own heap`, func() { Register(Default, h, &mu) })
	assert.Panics(t, func() { Register(Persistent, h, &mu) })
	assert.Panics(t, func() { Register("", h, &mu) })
	assert.Panics(t, func() { Register("x", nil, &mu) })
	assert.Panics(t, func() { Register("x", h, nil) })
	_, err := Snapshot("x")
	assert.True(t, errors.Is(err, ErrUnknownHeap))
}

func findLoc(p *profile.Profile, s site) *profile.Location {
	for _, l := range p.Location {
		for _, ln := range l.Line {
			if ln.Function.Name == s.fn && ln.Function.Filename == s.file && ln.Line == int64(s.line) {
				return l
			}
		}
	}
	return nil
}

func checkSiteProfile(t *testing.T, p *profile.Profile, small, large, huge, grown, orig site) {
	t.Helper()
	require.Len(t, p.SampleType, 2)
	assert.Equal(t, "inuse_objects", p.SampleType[0].Type)
	assert.Equal(t, "count", p.SampleType[0].Unit)
	assert.Equal(t, "inuse_space", p.SampleType[1].Type)
	assert.Equal(t, "bytes", p.SampleType[1].Unit)
	assert.Equal(t, "inuse_space", p.DefaultSampleType)
	assert.Contains(t, small.fn, "inspect.fill")

	type want struct {
		s      site
		kind   string
		size   int64
		blocks int64
	}
	for _, w := range []want{{small, "small", 100, 10}, {large, "large", 20000, 3}, {huge, "huge", 3 << 20, 1}, {grown, "small", 700, 1}} {
		loc := findLoc(p, w.s)
		require.NotNil(t, loc, "no location for %v", w.s)
		found := false
		for _, smp := range p.Sample {
			if smp.Location[0] != loc {
				continue
			}
			found = true
			assert.Equal(t, []string{w.kind}, smp.Label["kind"], "%v", w.s)
			assert.Equal(t, []int64{w.size}, smp.NumLabel["bytes"], "%v", w.s)
			assert.Equal(t, []int64{w.blocks, w.blocks * w.size}, smp.Value, "%v", w.s)
			if w.s == grown {
				require.Len(t, smp.Location, 2, "a reallocated block has its first site as caller")
				assert.Equal(t, findLoc(p, orig), smp.Location[1])
			} else {
				assert.Len(t, smp.Location, 1)
			}
		}
		assert.True(t, found, "no sample for %v", w.s)
	}
	// One function per site function: fill allocated everything.
	names := map[string]int{}
	for _, f := range p.Function {
		names[f.Name]++
	}
	assert.Equal(t, 1, names[small.fn])
}

func TestProfileSites(t *testing.T) {
	for _, mode := range []zmm.AllocMode{zmm.ModeChunks, zmm.ModeSystem, zmm.ModeGuard} {
		h := newHeap(t, zmm.WithDebug(true), zmm.WithAllocMode(mode))
		small, large, huge, grown, orig := fill(h)
		p, err := Profile(h.Snapshot())
		require.NoError(t, err, mode)
		// Through the encoding, as go tool pprof sees it.
		var b bytes.Buffer
		require.NoError(t, p.Write(&b))
		p, err = profile.Parse(&b)
		require.NoError(t, err)
		checkSiteProfile(t, p, small, large, huge, grown, orig)
	}
}

func TestProfileClasses(t *testing.T) {
	h := newHeap(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	fill(h)
	s := h.Snapshot()
	require.Empty(t, s.Blocks)
	p, err := Profile(s)
	require.NoError(t, err)
	var b bytes.Buffer
	require.NoError(t, p.Write(&b))
	p, err = profile.Parse(&b)
	require.NoError(t, err)

	// The samples account for the heap's usage exactly (class sizes).
	var space int64
	leaves := map[string][2]int64{}
	for _, smp := range p.Sample {
		space += smp.Value[1]
		leaves[smp.Location[0].Line[0].Function.Name] = [2]int64{smp.Value[0], smp.Value[1]}
		require.Len(t, smp.Location, 2)
		assert.Equal(t, "zmm."+smp.Label["kind"][0], smp.Location[1].Line[0].Function.Name)
	}
	assert.Equal(t, int64(s.Stats.Usage), space)
	assert.Equal(t, [2]int64{10, 1120}, leaves["zmm.bin[10] 112B"], "10 blocks of 100 bytes in the 112-byte bin")
	assert.Equal(t, [2]int64{3, 3 * 20480}, leaves["zmm.large[5 pages] 20KiB"])
	assert.Equal(t, [2]int64{1, 768}, leaves["zmm.bin[21] 768B"], "the 700-byte realloc")
	assert.Contains(t, leaves, "zmm.huge 3MiB")
}

func TestProfileEmpty(t *testing.T) {
	p, err := Profile(newHeap(t).Snapshot())
	require.NoError(t, err)
	assert.Empty(t, p.Sample)
	_, err = Profile(nil)
	assert.Error(t, err)
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 2 << 20: "2.0 MiB", 3 << 30: "3.0 GiB"} {
		assert.Equal(t, want, FormatBytes(n))
	}
	for n, want := range map[uint64]string{64: "64B", 4100: "4100B", 12288: "12KiB", 4 << 20: "4MiB"} {
		assert.Equal(t, want, shortSize(n))
	}
}

// TestRegisterShared: a shared allocator's heaps are served as name/i,
// each snapshot taken with its inbox collected, while goroutines keep
// allocating.
func TestRegisterShared(t *testing.T) {
	a, err := zmm.NewShared(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithName("pool"))
	require.NoError(t, err)
	defer a.Close()
	RegisterShared("pool", a)
	defer Unregister("pool")

	var blocks []unsafe.Pointer
	for range 100 {
		blocks = append(blocks, a.Alloc(200))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // another goroutine keeps using the allocator
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				a.Free(a.Alloc(64))
			}
		}
	}()
	names := Heaps()
	require.Contains(t, names, "pool/0")
	require.Contains(t, names, "pool")
	var usage uint64
	for _, name := range names {
		if !strings.HasPrefix(name, "pool/") {
			continue
		}
		s, err := Snapshot(name)
		require.NoError(t, err, name)
		assert.Equal(t, name, s.Name)
		require.NoError(t, Validate(s))
		usage += s.Stats.Usage
	}
	whole, err := Snapshot("pool")
	require.NoError(t, err)
	require.NoError(t, Validate(whole))
	assert.Equal(t, "pool", whole.Name)
	close(stop)
	wg.Wait()
	assert.GreaterOrEqual(t, usage, uint64(100*bins200()), "the 100 blocks are in the snapshots")
	assert.GreaterOrEqual(t, whole.Stats.Usage, uint64(100*bins200()), "and in the whole's")

	_, err = Snapshot("pool/99")
	assert.Error(t, err)
	_, err = Snapshot("nosuch/0")
	assert.ErrorIs(t, err, ErrUnknownHeap)
	for _, p := range blocks {
		a.Free(p)
	}
}

// bins200 is the class size of a 200-byte block.
func bins200() uintptr {
	h, _ := zmm.New(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	defer h.Close()
	return h.BlockSize(h.Alloc(200))
}
