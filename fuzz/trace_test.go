package fuzz

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gozmm/zmm/trace"
)

// trTestdata is where package trace keeps its committed traces.
const trTestdata = "../trace/testdata"

// FuzzTraceReader feeds arbitrary bytes to trace.Read: it must return a
// *trace.FormatError (or, for input that starts with the gzip magic, an
// error of the gzip stream) or a valid trace, never panic; a valid trace
// must write back to the same bytes (the encoding is canonical) and read
// back to an equal trace.
func FuzzTraceReader(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(trTestdata, "*.ztrace*"))
	if len(paths) == 0 {
		f.Fatalf("no traces in %s", trTestdata)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		// The committed traces as they are, and the small plain ones
		// compressed too. (Not the big ones decompressed: minimizing a
		// 40 KB input takes the fuzzer a minute.)
		f.Add(b)
		if !strings.HasSuffix(p, ".gz") {
			f.Add(trGzip(b))
		}
	}
	for _, s := range trSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(trCheck)
}

func trCheck(t *testing.T, data []byte) {
	isGzip := len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b
	tr, err := trace.Read(bytes.NewReader(data))
	if err != nil {
		if tr != nil {
			t.Fatalf("Read returned a trace and an error: %v", err)
		}
		var fe *trace.FormatError
		switch {
		case errors.As(err, &fe):
			if fe.Index < -1 || fe.Msg == "" {
				t.Fatalf("malformed FormatError %#v", fe)
			}
			if !isGzip && fe.Index >= 0 && len(data) <= trace.HeaderSize+trace.RecordSize*fe.Index {
				t.Fatalf("%v: the input has only %d bytes, no record %d", err, len(data), fe.Index)
			}
		case !isGzip:
			t.Fatalf("plain input: error %v is not a *trace.FormatError", err)
		case !strings.Contains(err.Error(), "gzip"):
			t.Fatalf("gzip input: error %q does not say gzip", err)
		}
		return
	}
	if !isGzip && len(data) != trace.HeaderSize+trace.RecordSize*len(tr.Records) {
		t.Fatalf("%d bytes read as %d records", len(data), len(tr.Records))
	}
	again := &trace.Trace{Records: tr.Records}
	if err := again.Analyze(); err != nil {
		t.Fatalf("Read accepted a trace that Analyze rejects: %v", err)
	}
	if !reflect.DeepEqual(again, tr) {
		t.Fatalf("derived facts differ: Read %+v, Analyze %+v", *tr, *again)
	}
	var buf bytes.Buffer
	if err := trace.Write(&buf, tr); err != nil {
		t.Fatalf("Write of a trace Read accepted: %v", err)
	}
	decoded := data
	if isGzip {
		if decoded, err = trGunzip(data); err != nil {
			t.Fatalf("Read accepted gzip input that compress/gzip rejects: %v", err)
		}
	}
	if !bytes.Equal(buf.Bytes(), decoded) {
		t.Fatalf("Write does not give back the bytes read (%d vs %d bytes)", buf.Len(), len(decoded))
	}
	back, err := trace.Read(&buf)
	if err != nil {
		t.Fatalf("Read of what Write wrote: %v", err)
	}
	if !reflect.DeepEqual(back, tr) {
		t.Fatalf("round trip changed the trace")
	}
}

func trGzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func trGunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func trRec(op trace.Op, id uint32, size uint64) trace.Record {
	return trace.Record{Op: op, ID: id, Size: size}
}

func trEncode(recs ...trace.Record) []byte {
	b := trace.AppendHeader(nil)
	for _, r := range recs {
		b = trace.AppendRecord(b, r)
	}
	return b
}

type trSeed struct {
	name string
	data []byte
}

// trSeeds: small valid traces and one of each invalid case the format
// lists, plain and gzip-compressed, and broken gzip streams.
func trSeeds() []trSeed {
	hdr := trace.AppendHeader(nil)
	header := func(off int, v uint32) []byte {
		b := bytes.Clone(hdr)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	valid := trEncode(trRec(trace.OpAlloc, 0, 100), trRec(trace.OpAlloc, 1, 5000), trRec(trace.OpRealloc, 0, 3<<20),
		trRec(trace.OpFree, 1, 0), trRec(trace.OpRequestEnd, 0, 0), trRec(trace.OpAlloc, 1, trace.MaxSize))
	padded := bytes.Clone(valid)
	padded[trace.HeaderSize+trace.RecordSize+2] = 1
	seeds := []trSeed{
		{"valid", valid},
		{"empty-trace", hdr},
		{"max-id", trEncode(trRec(trace.OpAlloc, trace.MaxIDs-1, 1), trRec(trace.OpRequestEnd, 0, 0))},
		{"empty-file", nil},
		{"short-header", hdr[:9]},
		{"bad-magic", append([]byte("ZMMTRACX"), hdr[8:]...)},
		{"version-0", header(8, 0)},
		{"version-2", header(8, 2)},
		{"reserved", header(12, 1)},
		{"truncated-record", valid[:len(valid)-3]},
		{"one-byte-record", valid[:trace.HeaderSize+1]},
		{"op-0", trEncode(trRec(0, 0, 0))},
		{"op-5", trEncode(trRec(trace.OpAlloc, 0, 1), trRec(5, 0, 0))},
		{"padding", padded},
		{"free-not-live", trEncode(trRec(trace.OpFree, 3, 0))},
		{"double-free", trEncode(trRec(trace.OpAlloc, 3, 8), trRec(trace.OpFree, 3, 0), trRec(trace.OpFree, 3, 0))},
		{"realloc-not-live", trEncode(trRec(trace.OpRealloc, 0, 8))},
		{"realloc-after-request-end", trEncode(trRec(trace.OpAlloc, 0, 8), trRec(trace.OpRequestEnd, 0, 0), trRec(trace.OpRealloc, 0, 8))},
		{"alloc-live", trEncode(trRec(trace.OpAlloc, 2, 8), trRec(trace.OpAlloc, 2, 8))},
		{"alloc-size-2^48+1", trEncode(trRec(trace.OpAlloc, 0, trace.MaxSize+1))},
		{"realloc-size-max", trEncode(trRec(trace.OpAlloc, 0, 1), trRec(trace.OpRealloc, 0, 1<<64-1))},
		{"free-with-size", trEncode(trRec(trace.OpAlloc, 0, 1), trRec(trace.OpFree, 0, 16))},
		{"request-end-with-id", trEncode(trRec(trace.OpRequestEnd, 1, 0))},
		{"request-end-with-size", trEncode(trRec(trace.OpRequestEnd, 0, 1))},
		{"id-too-large", trEncode(trRec(trace.OpAlloc, trace.MaxIDs, 1))},
		{"id-2^32-1", trEncode(trRec(trace.OpAlloc, 1<<32-1, 1))},
	}
	n := len(seeds)
	for _, s := range seeds[:n] {
		seeds = append(seeds, trSeed{s.name + ".gz", trGzip(s.data)})
	}
	gz := trGzip(valid)
	seeds = append(seeds,
		trSeed{"gzip-magic-only", gz[:2]},
		trSeed{"gzip-truncated", gz[:len(gz)-4]},
		trSeed{"gzip-bad-crc", append(bytes.Clone(gz[:len(gz)-8]), 1, 2, 3, 4, 5, 6, 7, 8)},
		trSeed{"gzip-trailing-garbage", append(bytes.Clone(gz), 0x1f, 0x8b, 0)},
		trSeed{"gzip-two-members", append(trGzip(valid[:trace.HeaderSize+trace.RecordSize]), trGzip(valid[trace.HeaderSize+trace.RecordSize:])...)},
	)
	return seeds
}

// TestTraceReaderSeeds writes trSeeds to testdata/fuzz/FuzzTraceReader
// with ZMM_WRITE_SEEDS=1.
func TestTraceReaderSeeds(t *testing.T) {
	var files []smCorpusFile
	for _, s := range trSeeds() {
		files = append(files, smCorpusFile{s.name, []any{s.data}})
	}
	smWriteCorpus(t, "FuzzTraceReader", files)
}
