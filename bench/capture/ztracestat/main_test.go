package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/trace"
)

// writeTrace writes recs to dir/name as a raw trace file, without the
// writer's validation, so that a test can write invalid traces too.
func writeTrace(t *testing.T, dir, name string, recs []trace.Record) string {
	t.Helper()
	b := trace.AppendHeader(nil)
	for _, r := range recs {
		b = trace.AppendRecord(b, r)
	}
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return path
}

// shape is a trace with every op, a request end that drops a block, and a
// size in each of the classes the table counts.
var shape = []trace.Record{
	{Op: trace.OpAlloc, ID: 0, Size: 10},
	{Op: trace.OpAlloc, ID: 1, Size: 100},
	{Op: trace.OpRealloc, ID: 0, Size: 5000}, // grows: 5100 live
	{Op: trace.OpRealloc, ID: 1, Size: 50},   // shrinks: 5050 live
	{Op: trace.OpFree, ID: 0},
	{Op: trace.OpRequestEnd}, // drops id 1
	{Op: trace.OpAlloc, ID: 1, Size: 3 << 20},
	{Op: trace.OpAlloc, ID: 0, Size: 2000},
	{Op: trace.OpFree, ID: 1},
}

func TestStats(t *testing.T) {
	path := writeTrace(t, t.TempDir(), "shape.ztrace", shape)
	var out bytes.Buffer
	require.NoError(t, run([]string{"-json", path}, &out, &bytes.Buffer{}))
	var s Stats
	require.NoError(t, json.Unmarshal(out.Bytes(), &s))
	assert.Equal(t, Stats{
		Trace:   "shape.ztrace",
		Records: 9, Allocs: 4, Frees: 2, Reallocs: 2, RequestEnds: 1,
		MaxLive:       2,
		PeakLiveBytes: 3<<20 + 2000, // the second request's, above the first's 5100
		Bytes:         10 + 100 + 5000 + 50 + 3<<20 + 2000,
		Dropped:       1,
		// ≤16, ≤64, ≤256, ≤1K, ≤3K, large, huge
		Sizes: []int{1, 1, 1, 0, 1, 1, 1},
		Grows: 1, Shrinks: 1,
	}, s)
}

func TestTable(t *testing.T) {
	path := writeTrace(t, t.TempDir(), "shape.ztrace", shape)
	var out bytes.Buffer
	require.NoError(t, run([]string{path}, &out, &bytes.Buffer{}))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	assert.Contains(t, lines[0], "| trace | records | allocs | frees | reallocs (grow/shrink) |")
	assert.NotContains(t, lines[0], "replayed peak", "no peak columns without -work")
	assert.Equal(t, "| shape.ztrace | 9 | 4 | 2 | 2 (1/1) | 1 | 1 | 2 | 3.0 MiB | 3.0 MiB | "+
		"16.7% | 16.7% | 16.7% | 0.0% | 16.7% | 16.7% | 16.7% |", lines[2])
}

func TestInvalidTrace(t *testing.T) {
	dir := t.TempDir()
	good := writeTrace(t, dir, "good.ztrace", shape)
	bad := writeTrace(t, dir, "bad.ztrace", []trace.Record{
		{Op: trace.OpAlloc, ID: 0, Size: 8},
		{Op: trace.OpFree, ID: 1},
	})
	err := run([]string{good, bad}, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bad.ztrace: trace: record 1: free of id 1, which is not live")
	fe, ok := trace.IsFormatError(err)
	require.True(t, ok, "a *trace.FormatError: %v", err)
	assert.Equal(t, 1, fe.Index)
}

func TestUsage(t *testing.T) {
	err := run(nil, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "usage")
}

func TestWorkPeaks(t *testing.T) {
	dir := t.TempDir()
	path := writeTrace(t, dir, "prog.ztrace", shape)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prog.zend.json"),
		[]byte(`{"mode":"zend-peaks","peak_usage":[4000,8000,6000]}`), 0o644))

	err := run([]string{"-work", dir, path}, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err, "the replay's figures are missing")
	assert.Contains(t, err.Error(), "prog.replay-zend.json")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "prog.replay-zend.json"),
		[]byte(`{"allocator":"zend","peak_usage":8160}`), 0o644))
	var out bytes.Buffer
	require.NoError(t, run([]string{"-work", dir, path}, &out, &bytes.Buffer{}))
	assert.Contains(t, out.String(), "| PHP's peak | replayed peak | ratio |")
	assert.Contains(t, out.String(), "| 7.8 KiB | 8.0 KiB | 1.020 |", "the highest request's peak, and the ratio")

	out.Reset()
	require.NoError(t, run([]string{"-json", "-work", dir, path}, &out, &bytes.Buffer{}))
	var s Stats
	require.NoError(t, json.Unmarshal(out.Bytes(), &s))
	assert.Equal(t, uint64(8000), s.ProgramPeak)
	assert.Equal(t, uint64(8160), s.ReplayedPeak)
}
