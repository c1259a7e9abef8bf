package trace

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---------------------------------------------------------------------------
// Helpers

func rec(op Op, id uint32, size uint64) Record { return Record{Op: op, ID: id, Size: size} }

// encode builds a plain trace from records without validating them.
func encode(recs ...Record) []byte {
	b := AppendHeader(nil)
	for _, r := range recs {
		b = AppendRecord(b, r)
	}
	return b
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func writeBytes(t testing.TB, tr *Trace) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, Write(&buf, tr))
	return buf.Bytes()
}

// sample is a small valid trace that uses every op.
func sample() *Trace {
	return &Trace{Records: []Record{
		rec(OpAlloc, 0, 100),
		rec(OpAlloc, 1, 5000),
		rec(OpRealloc, 0, 200),
		rec(OpAlloc, 2, 0),
		rec(OpFree, 1, 0),
		rec(OpAlloc, 1, 3<<20),
		rec(OpRealloc, 1, 16),
		rec(OpRequestEnd, 0, 0),
		rec(OpAlloc, 0, MaxSize),
		rec(OpAlloc, 7, 8),
		rec(OpFree, 0, 0),
	}}
}

// ---------------------------------------------------------------------------
// Valid traces

func TestOpString(t *testing.T) {
	assert.Equal(t, "alloc", OpAlloc.String())
	assert.Equal(t, "free", OpFree.String())
	assert.Equal(t, "realloc", OpRealloc.String())
	assert.Equal(t, "request-end", OpRequestEnd.String())
	assert.Equal(t, "Op(0)", Op(0).String())
	assert.Equal(t, "Op(200)", Op(200).String())
	assert.Equal(t, "alloc id=3 size=10", rec(OpAlloc, 3, 10).String())
	assert.Equal(t, "free id=3", rec(OpFree, 3, 0).String())
	assert.Equal(t, "request-end", rec(OpRequestEnd, 0, 0).String())
}

func TestEncoding(t *testing.T) {
	b := encode(rec(OpRealloc, 0x01020304, 0x0102030405060708))
	want := []byte("ZMMTRACE\x01\x00\x00\x00\x00\x00\x00\x00" +
		"\x03\x00\x00\x00\x04\x03\x02\x01\x08\x07\x06\x05\x04\x03\x02\x01")
	assert.Equal(t, want, b)
}

func TestAnalyze(t *testing.T) {
	tr := sample()
	require.NoError(t, tr.Analyze())
	assert.Equal(t, 8, tr.IDs)
	assert.Equal(t, 3, tr.MaxLive)
	assert.Equal(t, 6, tr.Allocs)
	assert.Equal(t, 2, tr.Frees)
	assert.Equal(t, 2, tr.Reallocs)
	assert.Equal(t, 1, tr.Requests)

	empty := &Trace{}
	require.NoError(t, empty.Analyze())
	assert.Equal(t, Trace{}, *empty)

	bad := &Trace{Records: []Record{rec(OpAlloc, 0, 1), rec(OpFree, 1, 0)}}
	err := bad.Analyze()
	var fe *FormatError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, 1, fe.Index)
	assert.Equal(t, 0, bad.IDs, "an invalid trace leaves the derived fields alone")
}

func TestRoundTrip(t *testing.T) {
	want := sample()
	require.NoError(t, want.Analyze())
	plain := writeBytes(t, want)
	assert.Len(t, plain, HeaderSize+RecordSize*len(want.Records))
	for name, b := range map[string][]byte{"plain": plain, "gzip": gzipBytes(t, plain)} {
		t.Run(name, func(t *testing.T) {
			got, err := Read(bytes.NewReader(b))
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestRoundTripEmpty(t *testing.T) {
	b := writeBytes(t, &Trace{})
	assert.Equal(t, AppendHeader(nil), b)
	got, err := Read(bytes.NewReader(b))
	require.NoError(t, err)
	assert.Equal(t, &Trace{}, got)
}

func TestFiles(t *testing.T) {
	want := sample()
	require.NoError(t, want.Analyze())
	dir := t.TempDir()
	for _, name := range []string{"t.ztrace", "t.ztrace.gz"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			require.NoError(t, WriteFile(path, want))
			raw, err := os.ReadFile(path)
			require.NoError(t, err)
			if strings.HasSuffix(name, ".gz") {
				assert.Equal(t, []byte{0x1f, 0x8b}, raw[:2])
			} else {
				assert.Equal(t, Magic, string(raw[:8]))
			}
			got, err := ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestWriteFileRefusesInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.ztrace.gz")
	err := WriteFile(path, &Trace{Records: []Record{rec(OpFree, 3, 0)}})
	var fe *FormatError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, &FormatError{Index: 0, Msg: "free of id 3, which is not live"}, fe)
	_, statErr := os.Stat(path)
	assert.True(t, os.IsNotExist(statErr), "no file is left behind")
}

func TestReadFileErrorNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.ztrace")
	require.NoError(t, os.WriteFile(path, []byte("NOTATRACE......."), 0o644))
	_, err := ReadFile(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	fe, ok := IsFormatError(err)
	require.True(t, ok)
	assert.Equal(t, -1, fe.Index)

	_, err = ReadFile(filepath.Join(t.TempDir(), "missing"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestWriterRefusesAndContinues(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	require.NoError(t, err)
	require.NoError(t, w.Write(rec(OpAlloc, 0, 10)))
	err = w.Write(rec(OpAlloc, 0, 10))
	assert.Equal(t, &FormatError{Index: 1, Msg: "alloc of id 0, which is already live"}, err)
	err = w.Write(rec(9, 0, 0))
	assert.Equal(t, &FormatError{Index: 1, Msg: "unknown op 9"}, err)
	require.NoError(t, w.Write(rec(OpFree, 0, 0)))
	assert.Equal(t, 2, w.Records())
	require.NoError(t, w.Flush())
	got, err := Read(&buf)
	require.NoError(t, err)
	assert.Equal(t, []Record{rec(OpAlloc, 0, 10), rec(OpFree, 0, 0)}, got.Records)
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriteError(t *testing.T) {
	big := &Trace{}
	for i := range 10000 {
		big.Records = append(big.Records, rec(OpAlloc, uint32(i), 1))
	}
	err := Write(&failWriter{n: 1000}, big)
	assert.EqualError(t, err, "disk full")
}

func TestReaderStreams(t *testing.T) {
	b := encode(rec(OpAlloc, 0, 1), rec(OpFree, 0, 0), rec(OpFree, 0, 0))
	r, err := NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	got, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, rec(OpAlloc, 0, 1), got)
	_, err = r.Next()
	require.NoError(t, err)
	_, err = r.Next()
	want := &FormatError{Index: 2, Msg: "free of id 0, which is not live"}
	assert.Equal(t, want, err)
	_, err = r.Next()
	assert.Equal(t, want, err, "errors are sticky")

	r, err = NewReader(bytes.NewReader(encode()))
	require.NoError(t, err)
	_, err = r.Next()
	assert.Equal(t, io.EOF, err)
}

func TestRequestEndReleasesEveryID(t *testing.T) {
	// Reuse after a request end is fine; use of a block from before it is
	// not, whether few or many blocks were live (two ways of clearing).
	for _, n := range []int{3, 5000} {
		var recs []Record
		for i := range n {
			recs = append(recs, rec(OpAlloc, uint32(i), 8))
		}
		recs = append(recs, rec(OpFree, 1, 0), rec(OpRequestEnd, 0, 0),
			rec(OpAlloc, 0, 16), rec(OpAlloc, 1, 16), rec(OpRealloc, uint32(n-1), 4))
		_, err := Read(bytes.NewReader(encode(recs...)))
		assert.Equal(t, &FormatError{Index: n + 4, Msg: "realloc of id " + strconv.Itoa(n-1) + ", which is not live"}, err, "n=%d", n)

		tr, err := Read(bytes.NewReader(encode(recs[:n+4]...)))
		require.NoError(t, err)
		assert.Equal(t, n, tr.IDs)
		assert.Equal(t, n, tr.MaxLive)
		assert.Equal(t, 1, tr.Requests)
	}
}

func TestLargeIDs(t *testing.T) {
	tr, err := Read(bytes.NewReader(encode(rec(OpAlloc, MaxIDs-1, 1), rec(OpFree, MaxIDs-1, 0))))
	require.NoError(t, err)
	assert.Equal(t, MaxIDs, tr.IDs)
}

// ---------------------------------------------------------------------------
// Invalid traces

type invalidCase struct {
	name  string
	data  []byte
	index int
	msg   string
}

func withPadding(b []byte, rec int, pad [3]byte) []byte {
	b = bytes.Clone(b)
	copy(b[HeaderSize+rec*RecordSize+1:], pad[:])
	return b
}

func invalidCases() []invalidCase {
	hdr := AppendHeader(nil)
	version := func(v uint32) []byte {
		b := bytes.Clone(hdr)
		binary.LittleEndian.PutUint32(b[8:], v)
		return b
	}
	reserved := bytes.Clone(hdr)
	binary.LittleEndian.PutUint32(reserved[12:], 0x100)
	two := encode(rec(OpAlloc, 0, 10), rec(OpFree, 0, 0))
	return []invalidCase{
		{"empty", nil, -1, "truncated header: 0 of 16 bytes"},
		{"short header", hdr[:15], -1, "truncated header: 15 of 16 bytes"},
		{"bad magic", append([]byte("ZMMTRACF"), hdr[8:]...), -1, `bad magic "ZMMTRACF" (want "ZMMTRACE")`},
		{"text", []byte("hello, world, this is not a trace"), -1, `bad magic "hello, w" (want "ZMMTRACE")`},
		{"version 0", version(0), -1, "unsupported version 0 (want 1)"},
		{"version 2", version(2), -1, "unsupported version 2 (want 1)"},
		{"big-endian version", version(1 << 24), -1, "unsupported version 16777216 (want 1)"},
		{"reserved", reserved, -1, "reserved field is 0x100 (must be 0)"},
		{"truncated record 1", two[:HeaderSize+1], 0, "truncated record: 1 of 16 bytes (a trace is 16 + 16·k bytes long)"},
		{"truncated record 15", two[:len(two)-1], 1, "truncated record: 15 of 16 bytes (a trace is 16 + 16·k bytes long)"},
		{"op 0", encode(rec(OpAlloc, 0, 1), rec(0, 0, 0)), 1, "unknown op 0"},
		{"op 5", encode(rec(5, 0, 0)), 0, "unknown op 5"},
		{"op 255", encode(rec(255, 1, 1)), 0, "unknown op 255"},
		{"padding byte 1", withPadding(two, 0, [3]byte{1, 0, 0}), 0, "alloc: padding bytes 1..3 are 01 00 00 (must be 0)"},
		{"padding byte 3", withPadding(two, 1, [3]byte{0, 0, 0x80}), 1, "free: padding bytes 1..3 are 00 00 80 (must be 0)"},
		{"free of unknown id", encode(rec(OpFree, 0, 0)), 0, "free of id 0, which is not live"},
		{"double free", encode(rec(OpAlloc, 4, 1), rec(OpFree, 4, 0), rec(OpFree, 4, 0)), 2, "free of id 4, which is not live"},
		{"free after request end", encode(rec(OpAlloc, 4, 1), rec(OpRequestEnd, 0, 0), rec(OpFree, 4, 0)), 2, "free of id 4, which is not live"},
		{"realloc of unknown id", encode(rec(OpAlloc, 0, 1), rec(OpRealloc, 1, 10)), 1, "realloc of id 1, which is not live"},
		{"realloc after free", encode(rec(OpAlloc, 0, 1), rec(OpFree, 0, 0), rec(OpRealloc, 0, 10)), 2, "realloc of id 0, which is not live"},
		{"alloc of live id", encode(rec(OpAlloc, 9, 1), rec(OpRealloc, 9, 2), rec(OpAlloc, 9, 3)), 2, "alloc of id 9, which is already live"},
		{"alloc size above 2^48", encode(rec(OpAlloc, 0, MaxSize+1)), 0, "alloc of id 0 with size 281474976710657, above 2^48"},
		{"alloc size 2^64-1", encode(rec(OpAlloc, 0, 1<<64-1)), 0, "alloc of id 0 with size 18446744073709551615, above 2^48"},
		{"realloc size above 2^48", encode(rec(OpAlloc, 0, 1), rec(OpRealloc, 0, 1<<63)), 1, "realloc of id 0 with size 9223372036854775808, above 2^48"},
		{"free with size", encode(rec(OpAlloc, 0, 1), rec(OpFree, 0, 1)), 1, "free of id 0 with size 1 (must be 0)"},
		{"request end with id", encode(rec(OpRequestEnd, 1, 0)), 0, "request end with id 1 (must be 0)"},
		{"request end with size", encode(rec(OpRequestEnd, 0, 7)), 0, "request end with size 7 (must be 0)"},
		{"id at the cap", encode(rec(OpAlloc, MaxIDs, 1)), 0, "alloc of id 67108864: ids must be below 67108864"},
		{"id 2^32-1", encode(rec(OpAlloc, 0, 1), rec(OpFree, 1<<32-1, 0)), 1, "free of id 4294967295: ids must be below 67108864"},
	}
}

func TestInvalid(t *testing.T) {
	for _, c := range invalidCases() {
		t.Run(c.name, func(t *testing.T) {
			want := &FormatError{Index: c.index, Msg: c.msg}
			for kind, b := range map[string][]byte{"plain": c.data, "gzip": gzipBytes(t, c.data)} {
				tr, err := Read(bytes.NewReader(b))
				assert.Nil(t, tr, kind)
				assert.Equal(t, want, err, kind)
			}
		})
	}
}

func TestFormatErrorText(t *testing.T) {
	assert.EqualError(t, &FormatError{Index: -1, Msg: "bad"}, "trace: header: bad")
	assert.EqualError(t, &FormatError{Index: 12, Msg: "bad"}, "trace: record 12: bad")
	_, ok := IsFormatError(errors.New("x"))
	assert.False(t, ok)
}

func TestGzipErrors(t *testing.T) {
	good := gzipBytes(t, encode(rec(OpAlloc, 0, 1), rec(OpFree, 0, 0)))
	cases := map[string][]byte{
		"magic only":      good[:2],
		"truncated":       good[:len(good)-5],
		"bad checksum":    append(bytes.Clone(good[:len(good)-8]), 0, 0, 0, 0, 0, 0, 0, 0),
		"trailing junk":   append(bytes.Clone(good), 0x1f, 0x8b, 1, 2, 3),
		"corrupt deflate": append(bytes.Clone(good[:10]), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			tr, err := Read(bytes.NewReader(b))
			require.Error(t, err)
			assert.Nil(t, tr)
			_, isFormat := IsFormatError(err)
			assert.False(t, isFormat, "%v", err)
			assert.Contains(t, err.Error(), "gzip")
		})
	}
}

// A reader that fails is reported as such, not as a format problem.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := Read(&errReader{data: encode(rec(OpAlloc, 0, 1))[:20], err: boom})
	assert.ErrorIs(t, err, boom)
	assert.EqualError(t, err, "trace: record 0: read: boom")
	_, err = Read(&errReader{data: []byte("ZMM"), err: boom})
	assert.EqualError(t, err, "trace: header: read: boom")
}

// ---------------------------------------------------------------------------
// Committed synthetic traces (testdata). Regenerate them with
//
//	ZMM_WRITE_TRACES=1 go test ./trace -run TestWriteTestdata

// splitmix64: a fixed generator, so that the traces do not depend on the
// math/rand version.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func (s *splitmix) intn(n int) int { return int(s.next() % uint64(n)) }

// logUniform returns a size in [lo, hi], uniform in log scale.
func (s *splitmix) logUniform(lo, hi uint64) uint64 {
	for {
		e := bits.Len64(lo) - 1 + s.intn(bits.Len64(hi)-bits.Len64(lo)+1)
		v := 1<<e + s.next()%(1<<e)
		if v >= lo && v <= hi {
			return v
		}
	}
}

// size draws a block size: mostly small-bin sizes, some page runs, rarely
// a huge block, as a PHP request would.
func (s *splitmix) size() uint64 {
	switch r := s.intn(1000); {
	case r < 30:
		return uint64(s.intn(8)) // tiny, including 0
	case r < 800:
		return s.logUniform(8, 3072)
	case r < 990:
		return s.logUniform(3073, 2<<20-4096)
	default:
		return s.logUniform(2<<20, 6<<20)
	}
}

type genSpec struct {
	seed     uint64
	records  int // about this many records
	perReq   int // ops per request (0: no request ends)
	liveGoal int // blocks live at the peak of a request
}

// generate makes a valid synthetic trace: allocs, frees and reallocs of
// random live blocks with dense, reused ids; ended by request ends (perReq
// > 0) or by freeing what is left.
func generate(g genSpec) *Trace {
	rng := splitmix(g.seed)
	var recs []Record
	var live []uint32    // live ids
	var freeIDs []uint32 // ids free for reuse (LIFO)
	next := uint32(0)
	inReq := 0
	alloc := func() {
		var id uint32
		if n := len(freeIDs); n > 0 {
			id, freeIDs = freeIDs[n-1], freeIDs[:n-1]
		} else {
			id, next = next, next+1
		}
		live = append(live, id)
		recs = append(recs, rec(OpAlloc, id, rng.size()))
	}
	free := func(i int) {
		id := live[i]
		live[i] = live[len(live)-1]
		live = live[:len(live)-1]
		freeIDs = append(freeIDs, id)
		recs = append(recs, rec(OpFree, id, 0))
	}
	for len(recs) < g.records {
		if g.perReq > 0 && inReq >= g.perReq {
			recs = append(recs, rec(OpRequestEnd, 0, 0))
			live, freeIDs, next, inReq = live[:0], freeIDs[:0], 0, 0
			continue
		}
		inReq++
		// Grow towards liveGoal in the first half of a request (or of the
		// whole trace), shrink in the second.
		span := g.perReq
		if span == 0 {
			span = g.records
		}
		pAlloc := 60
		if inReq > span/2 {
			pAlloc = 35
		}
		if len(live) > g.liveGoal {
			pAlloc = 20
		}
		switch r := rng.intn(100); {
		case len(live) == 0 || r < pAlloc:
			alloc()
		case r < 88:
			free(rng.intn(len(live)))
		default:
			id := live[rng.intn(len(live))]
			recs = append(recs, rec(OpRealloc, id, rng.size()))
		}
	}
	if g.perReq > 0 {
		if recs[len(recs)-1].Op != OpRequestEnd {
			recs = append(recs, rec(OpRequestEnd, 0, 0))
		}
	} else {
		for len(live) > 0 {
			free(len(live) - 1)
		}
	}
	t := &Trace{Records: recs}
	if err := t.Analyze(); err != nil {
		panic(err)
	}
	return t
}

// testdataTraces are the committed traces and how they were made.
var testdataTraces = map[string]genSpec{
	"tiny.ztrace":           {seed: 1, records: 40, perReq: 16, liveGoal: 6},
	"small-mix.ztrace.gz":   {seed: 2, records: 1900, liveGoal: 150},
	"requests.ztrace.gz":    {seed: 3, records: 2500, perReq: 240, liveGoal: 80},
	"single-request.ztrace": {seed: 5, records: 60, perReq: 59, liveGoal: 20},
}

func TestWriteTestdata(t *testing.T) {
	if os.Getenv("ZMM_WRITE_TRACES") != "1" {
		t.Skip("set ZMM_WRITE_TRACES=1 to regenerate trace/testdata")
	}
	require.NoError(t, os.MkdirAll("testdata", 0o755))
	for name, g := range testdataTraces {
		require.NoError(t, WriteFile(filepath.Join("testdata", name), generate(g)))
	}
}

func TestTestdata(t *testing.T) {
	for name, g := range testdataTraces {
		t.Run(name, func(t *testing.T) {
			got, err := ReadFile(filepath.Join("testdata", name))
			require.NoError(t, err, "regenerate with ZMM_WRITE_TRACES=1 go test ./trace -run TestWriteTestdata")
			want := generate(g)
			require.Equal(t, want, got, "testdata/%s is stale: regenerate with ZMM_WRITE_TRACES=1", name)
			assert.GreaterOrEqual(t, len(got.Records), g.records)
			assert.Greater(t, got.Frees, 0)
			assert.Greater(t, got.Reallocs, 0)
			if g.perReq > 0 {
				assert.Equal(t, OpRequestEnd, got.Records[len(got.Records)-1].Op)
				assert.GreaterOrEqual(t, got.Requests, len(got.Records)/(g.perReq+1))
			} else {
				assert.Equal(t, 0, got.Requests)
				assert.Equal(t, got.Allocs, got.Frees, "every block is freed")
			}
			raw, err := os.ReadFile(filepath.Join("testdata", name))
			require.NoError(t, err)
			if strings.HasSuffix(name, ".gz") {
				assert.Equal(t, []byte{0x1f, 0x8b}, raw[:2])
			} else {
				assert.Len(t, raw, HeaderSize+RecordSize*len(got.Records))
			}
		})
	}
}

func TestGeneratedSizes(t *testing.T) {
	// The synthetic mix covers small, large and huge sizes.
	tr := generate(testdataTraces["small-mix.ztrace.gz"])
	var small, large, huge int
	for _, r := range tr.Records {
		if r.Op != OpAlloc && r.Op != OpRealloc {
			continue
		}
		switch {
		case r.Size <= 3072:
			small++
		case r.Size <= 2<<20-4096:
			large++
		default:
			huge++
		}
	}
	assert.Greater(t, small, 500)
	assert.Greater(t, large, 50)
	assert.Greater(t, huge, 0)
}
