package peers

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"modernc.org/memory"

	"github.com/gozmm/zmm/bench/gen"
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
)

func rec(op trace.Op, id uint32, size uint64) trace.Record {
	return trace.Record{Op: op, ID: id, Size: size}
}

var (
	alloc   = func(id uint32, size uint64) trace.Record { return rec(trace.OpAlloc, id, size) }
	free    = func(id uint32) trace.Record { return rec(trace.OpFree, id, 0) }
	realloc = func(id uint32, size uint64) trace.Record { return rec(trace.OpRealloc, id, size) }
	end     = rec(trace.OpRequestEnd, 0, 0)
)

// twoRequests is a small trace of every op and kind of block, sizes 0 and
// 8 included.
func twoRequests() *trace.Trace {
	return &trace.Trace{Records: []trace.Record{
		alloc(0, 100), alloc(1, 5000), alloc(2, 4), alloc(3, 0),
		realloc(0, 200), realloc(2, 3000), free(1),
		alloc(1, 3<<20), // huge
		realloc(1, 5<<20),
		realloc(3, 8), realloc(3, 0),
		free(3),
		end, // 0, 1 and 2 are released by the request end
		alloc(0, 64), alloc(1, 64), free(0), alloc(0, 8), free(1), free(0),
		alloc(5, 40),
		end,
		alloc(7, 24), // a last request without an end
	}}
}

// peer is a replayer under test, with what it must release after.
type peer struct {
	name string
	run  func(t *trace.Trace) (replay.Result, error)
}

func peersToTest() []peer {
	ps := []peer{{"modernc", func(tr *trace.Trace) (replay.Result, error) {
		var a memory.Allocator
		defer a.Close()
		return Modernc(&a, tr, nil)
	}}}
	return append(ps, arenaPeers...)
}

// arenaPeers is set by arena_test.go when arenas are built in.
var arenaPeers []peer

func TestReplay(t *testing.T) {
	tr := twoRequests()
	for _, p := range peersToTest() {
		t.Run(p.name, func(t *testing.T) {
			res, err := p.run(tr)
			require.NoError(t, err)
			assert.Equal(t, len(tr.Records), res.Ops)
			assert.Equal(t, 3, res.Requests)
			assert.Zero(t, res.Mismatches)
			assert.Positive(t, res.Duration)
		})
	}
}

// TestGenerated replays a trace of every kind, small, on every peer.
func TestGenerated(t *testing.T) {
	for _, k := range gen.Kinds {
		tr, err := gen.Trace(gen.Params{Kind: k, N: 300, Seed: 2, PerRequest: 50, Live: 8})
		require.NoError(t, err)
		for _, p := range peersToTest() {
			res, err := p.run(tr)
			require.NoError(t, err, "%s on %s", p.name, k)
			assert.Zero(t, res.Mismatches, "%s on %s", p.name, k)
			assert.Equal(t, len(tr.Records), res.Ops)
		}
	}
}

// TestBadTrace: an unvalidated trace is refused with an error naming the
// record, never a crash.
func TestBadTrace(t *testing.T) {
	for _, recs := range [][]trace.Record{
		{free(0)},
		{alloc(0, 8), alloc(0, 8)},
		{realloc(3, 8)},
		{alloc(0, 8), end, free(0)},
		{{Op: 9}},
		{alloc(0, 1<<62)},
	} {
		for _, p := range peersToTest() {
			_, err := p.run(&trace.Trace{Records: recs})
			assert.ErrorContains(t, err, "record", "%s on %v", p.name, recs)
		}
	}
}

// TestMismatch: a block whose id was overwritten is counted.
func TestMismatch(t *testing.T) {
	assert.Equal(t, uint64(5)|0xAB<<56, replay.Stamp(5, 8))
	assert.Equal(t, uint64(5), replay.Stamp(5, 9))
	b := make([]byte, 8)
	markBytes(b, 5)
	assert.Equal(t, replay.Stamp(5, 8), loadID(b))
}

func TestSparseIDs(t *testing.T) {
	tr := &trace.Trace{Records: []trace.Record{alloc(1<<25, 16), alloc(3, 16), free(1 << 25), end}}
	for _, p := range peersToTest() {
		res, err := p.run(tr)
		require.NoError(t, err, p.name)
		assert.Zero(t, res.Mismatches)
	}
}
