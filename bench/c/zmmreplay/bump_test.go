package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The root module's test traces, read through the repository (these tests
// run in a checkout, not from the module cache).
const (
	requestsTrace = "../../../trace/testdata/requests.ztrace.gz"
	singleTrace   = "../../../trace/testdata/single-request.ztrace"
)

func runJSON(t *testing.T, args ...string) (Result, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	require.NoError(t, run(args, &out, &errOut))
	var r Result
	require.NoError(t, json.Unmarshal(out.Bytes(), &r), "%s", out.Bytes())
	return r, errOut.String()
}

func TestBumpReplay(t *testing.T) {
	bump, verbose := runJSON(t, "-alloc", "bump", "-verbose", singleTrace)
	zmm, _ := runJSON(t, singleTrace)

	assert.Equal(t, "bump-go", bump.Allocator)
	assert.Equal(t, "go", bump.Loop)
	assert.Equal(t, uint64(bumpArenaSize), bump.ArenaBytes)
	require.NotNil(t, bump.Wraps)
	assert.Zero(t, *bump.Wraps, "the trace's blocks fit in the arena")
	assert.Zero(t, bump.Mismatches, "every block keeps its stamp in an arena that does not wrap")
	assert.Contains(t, verbose, "bump arena")
	// The same trace, the same loop: the same counts as on zmm.
	assert.Equal(t, zmm.Ops, bump.Ops)
	assert.Equal(t, zmm.Requests, bump.Requests)
	assert.Equal(t, "go", zmm.Loop)
	assert.Nil(t, zmm.Wraps, "zmm has no arena")
}

func TestBumpWraps(t *testing.T) {
	// The requests trace moves 20 MB through a request, in blocks of up
	// to 6 MB: the arena is its largest block, and the pointer comes round,
	// overwriting blocks whose stamps then do not match.
	r, _ := runJSON(t, "-alloc", "bump", requestsTrace)
	require.NotNil(t, r.Wraps)
	assert.Positive(t, *r.Wraps)
	assert.Positive(t, r.Mismatches)
	assert.Equal(t, uint64(6262784), r.ArenaBytes, "the largest block, rounded to pages")

	t.Setenv("ZMM_BUMP_ARENA", "100000000")
	r, _ = runJSON(t, "-alloc", "bump", requestsTrace)
	assert.Equal(t, uint64(100003840), r.ArenaBytes)
	require.NotNil(t, r.Wraps)
	assert.Zero(t, *r.Wraps, "ZMM_BUMP_ARENA above a request's traffic")
	assert.Zero(t, r.Mismatches)
}

func TestBumpBadInput(t *testing.T) {
	err := run([]string{"-alloc", "slab", requestsTrace}, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-alloc slab: want zmm or bump")

	t.Setenv("ZMM_BUMP_ARENA", "lots")
	err = run([]string{"-alloc", "bump", requestsTrace}, &bytes.Buffer{}, &bytes.Buffer{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `ZMM_BUMP_ARENA wants a size in bytes, not "lots"`)
}

func TestTableAllocatorOnly(t *testing.T) {
	var rs []Result
	add := func(alloc, loop string, rep int, ns float64) {
		rs = append(rs, Result{Allocator: alloc, Trace: "w", Loop: loop, Rep: rep, NsPerOp: ns})
	}
	// Four repetitions. zmm's raw ratio to the Zend MM is 1.5 each time;
	// taking off the floors (Go 4, C 6 in rep 1) leaves (30-4)/(20-6).
	for rep, f := range []struct{ zmm, zend, mi, goFloor, cFloor float64 }{
		{30, 20, 16, 4, 6},
		{30, 20, 16, 5, 5},
		{30, 20, 16, 6, 4},
		{30, 20, 16, 5, 5},
	} {
		add("zmm", "go", rep+1, f.zmm)
		add("zend", "c", rep+1, f.zend)
		add("mimalloc", "", rep+1, f.mi) // no loop field: an older result, the C loop
		add("bump-go", "go", rep+1, f.goFloor)
		add("bump-c", "c", rep+1, f.cFloor)
	}
	lines := strings.Split(strings.TrimSpace(Table(rs)), "\n")
	require.Len(t, lines, 2+5)
	assert.Contains(t, lines[0], "| allocator-only ×Zend (IQR) |")
	cells := func(line string) []string { return strings.Split(line, " | ") }
	// zmm: (30-4)/14 = 1.857, (30-5)/15 = 1.667, (30-6)/16 = 1.5, 1.667.
	assert.Equal(t, "zmm", cells(lines[2])[1])
	assert.Equal(t, "1.50 (1.50–1.50)", cells(lines[2])[4])
	assert.Equal(t, "1.67 (1.62–1.71)", cells(lines[2])[5])
	assert.Equal(t, "1.00 (1.00–1.00)", cells(lines[3])[5], "the Zend MM against itself")
	// mimalloc, on the C loop: (16-6)/14, (16-5)/15, (16-4)/16, (16-5)/15.
	assert.Equal(t, "mimalloc", cells(lines[4])[1])
	assert.Equal(t, "0.73 (0.73–0.74)", cells(lines[4])[5])
	// The floors get no ratio of their own.
	assert.Equal(t, "bump-go", cells(lines[5])[1])
	assert.Equal(t, "–", cells(lines[5])[5])
	assert.Equal(t, "bump-c", cells(lines[6])[1])
	assert.Equal(t, "–", cells(lines[6])[5])
}
