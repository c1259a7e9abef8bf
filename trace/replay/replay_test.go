package replay

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/zmm"
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

// twoRequests is a small trace of every op and kind of block.
func twoRequests() *trace.Trace {
	return &trace.Trace{Records: []trace.Record{
		alloc(0, 100), alloc(1, 5000), alloc(2, 4), alloc(3, 0),
		realloc(0, 200), realloc(2, 3000), free(1),
		alloc(1, 3<<20), // huge
		realloc(1, 5<<20),
		free(3),
		end, // 0, 1 and 2 are released by the request end
		alloc(0, 64), alloc(1, 64), free(0), alloc(0, 8), free(1), free(0),
		alloc(5, 40),
		end,
	}}
}

func newHeap(t *testing.T, opts ...zmm.Option) *zmm.Heap {
	t.Helper()
	h, err := zmm.New(append([]zmm.Option{zmm.WithLeakReport(nil)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

func TestZmm(t *testing.T) {
	tr := twoRequests()
	for _, debug := range []bool{false, true} {
		h := newHeap(t, zmm.WithDebug(debug))
		var calls [][2]int
		res, err := Zmm(h, tr, func(done, total int) { calls = append(calls, [2]int{done, total}) })
		require.NoError(t, err)
		assert.Equal(t, len(tr.Records), res.Ops)
		assert.Equal(t, 2, res.Requests)
		assert.Zero(t, res.Mismatches)
		assert.GreaterOrEqual(t, res.PeakUsage, uint64(5<<20), "the huge block is in the first request's peak")
		assert.GreaterOrEqual(t, res.RealPeakUsage, uint64(5<<20+2<<20))
		assert.Positive(t, res.Duration)
		assert.Positive(t, res.NsPerOp)
		assert.Equal(t, [][2]int{{len(tr.Records), len(tr.Records)}}, calls)
		assert.Zero(t, h.Usage(), "the last request end reset the heap")
		assert.Contains(t, res.String(), "19 ops")
	}
}

func TestZmmHooks(t *testing.T) {
	tr := twoRequests()
	h := newHeap(t, zmm.WithDebug(true))
	var ends []int
	var lasts []bool
	var live []int
	res, err := ZmmHooks(h, tr, Hooks{AtRequestEnd: func(request int, last bool) {
		ends = append(ends, request)
		lasts = append(lasts, last)
		live = append(live, len(h.Leaks()))
	}})
	require.NoError(t, err)
	assert.Equal(t, []int{1, 2}, ends)
	assert.Equal(t, []bool{false, true}, lasts)
	assert.Equal(t, []int{3, 1}, live, "the hook sees the request's live blocks")
	assert.Zero(t, res.Mismatches)

	// A trace whose last request has no request end leaves it live.
	tr.Records = tr.Records[:len(tr.Records)-1]
	lasts = nil
	res, err = ZmmHooks(h, tr, Hooks{AtRequestEnd: func(request int, last bool) { lasts = append(lasts, last) }})
	require.NoError(t, err)
	assert.Equal(t, []bool{false}, lasts)
	assert.Equal(t, 2, res.Requests)
	assert.Len(t, h.Leaks(), 1, "block 5 is still live")
	h.Reset()
}

// TestFreeAtEnd checks that FreeAtEnd frees the trace's blocks before the
// reset, so a debug heap's leak report lists only other blocks, and that
// it checks their ids: the hook overwrites one block's id.
func TestFreeAtEnd(t *testing.T) {
	var report bytes.Buffer
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(&report), zmm.WithName("t"))
	require.NoError(t, err)
	defer h.Close()
	tr := twoRequests()
	res, err := ZmmHooks(h, tr, Hooks{FreeAtEnd: true, AtRequestEnd: func(request int, last bool) {
		if last {
			h.Alloc(33) // not the trace's: a leak
			return
		}
		// Overwrite the id of the first request's 100→200-byte block.
		for _, b := range h.Snapshot().Blocks {
			if b.Size == 200 {
				*(*uint64)(unsafe.Add(nil, uintptr(b.Addr))) = 999
			}
		}
	}})
	require.NoError(t, err)
	assert.Equal(t, 1, res.Mismatches)
	assert.Contains(t, report.String(), "(33 bytes), script=t")
	assert.Contains(t, report.String(), "=== Total 1 memory leaks detected ===")
}

func TestMismatchOnFree(t *testing.T) {
	// Ids are written into blocks of 8 bytes and more only, and checked
	// at free: a block realloc'd down below 8 bytes is not checked.
	tr := &trace.Trace{Records: []trace.Record{alloc(7, 8), realloc(7, 7), free(7), alloc(7, 9), free(7), end}}
	res, err := Zmm(newHeap(t), tr, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Mismatches)
	res, err = Go(tr, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Mismatches)
}

func TestGo(t *testing.T) {
	tr := twoRequests()
	var calls int
	res, err := Go(tr, func(done, total int) { calls++ })
	require.NoError(t, err)
	assert.Equal(t, len(tr.Records), res.Ops)
	assert.Equal(t, 2, res.Requests)
	assert.Zero(t, res.Mismatches)
	assert.Zero(t, res.PeakUsage)
	assert.Equal(t, 1, calls)
}

// TestBadTraces replays traces that trace.Read would refuse: the replay
// must report them, never crash.
func TestBadTraces(t *testing.T) {
	cases := []struct {
		name string
		recs []trace.Record
		want string
	}{
		{"free of a dead id", []trace.Record{alloc(0, 8), free(1)}, "record 1 (free id=1): id 1 is not live"},
		{"free twice", []trace.Record{alloc(0, 8), free(0), free(0)}, "record 2 (free id=0): id 0 is not live"},
		{"alloc of a live id", []trace.Record{alloc(0, 8), alloc(0, 8)}, "record 1 (alloc id=0 size=8): id 0 is already live"},
		{"realloc of a dead id", []trace.Record{realloc(3, 8)}, "record 0 (realloc id=3 size=8): id 3 is not live"},
		{"free after the request end", []trace.Record{alloc(0, 8), end, free(0)}, "record 2 (free id=0): id 0 is not live"},
		{"unknown op", []trace.Record{alloc(0, 8), rec(9, 0, 8)}, "record 1: unknown op 9"},
		{"sparse ids", []trace.Record{alloc(1<<31, 8), free(1 << 30)}, "record 1 (free id=1073741824): id 1073741824 is not live"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := &trace.Trace{Records: c.recs}
			h := newHeap(t)
			_, err := Zmm(h, tr, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			h.Reset()
			_, err = Go(tr, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestSparseIDs(t *testing.T) {
	tr := &trace.Trace{Records: []trace.Record{alloc(1<<31, 64), alloc(5, 16), free(1 << 31), realloc(5, 100), end, alloc(1<<31, 8), free(1 << 31)}}
	res, err := Zmm(newHeap(t), tr, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Mismatches)
	res, err = Go(tr, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Mismatches)
}

func TestZmmErrors(t *testing.T) {
	// The memory limit: a *zmm.Error, reported with the record.
	h := newHeap(t, zmm.WithLimit(4<<20))
	tr := &trace.Trace{Records: []trace.Record{alloc(0, 100), alloc(1, 8<<20)}}
	_, err := Zmm(h, tr, nil)
	require.Error(t, err)
	assert.True(t, errors.Is(err, zmm.ErrMemoryLimit), "%v", err)
	assert.Contains(t, err.Error(), "replay: record 1 (alloc id=1 size=8388608): Allowed memory size of 4194304 bytes exhausted")
	h.Reset()

	// A size no allocator can serve.
	tr = &trace.Trace{Records: []trace.Record{alloc(0, trace.MaxSize)}}
	_, err = Zmm(h, tr, nil)
	require.Error(t, err)
	h.Reset()
	_, err = Go(tr, nil)
	require.ErrorContains(t, err, "is not replayed on Go's heap")
}

// TestReadTrace replays a trace through the file format.
func TestReadTrace(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, trace.Write(&b, twoRequests()))
	tr, err := trace.Read(&b)
	require.NoError(t, err)
	res, err := Zmm(newHeap(t), tr, nil)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Requests)
	assert.Zero(t, res.Mismatches)
}

func BenchmarkZmm(b *testing.B) {
	tr := benchTrace()
	h, err := zmm.New()
	require.NoError(b, err)
	defer h.Close()
	for b.Loop() {
		if _, err := Zmm(h, tr, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(tr.Records)), "ns/record")
}

func BenchmarkGo(b *testing.B) {
	tr := benchTrace()
	for b.Loop() {
		if _, err := Go(tr, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(tr.Records)), "ns/record")
}

// benchTrace is ten requests of small blocks, most freed young.
func benchTrace() *trace.Trace {
	var recs []trace.Record
	for range 10 {
		for i := range uint32(10000) {
			recs = append(recs, alloc(i, uint64(16+i%500)))
			if i%4 != 0 {
				recs = append(recs, free(i))
			}
		}
		recs = append(recs, end)
	}
	return &trace.Trace{Records: recs}
}

// TestProgressAcrossSegments replays a trace longer than two progress
// intervals: the hook comes at each interval and at the end, the request
// ends inside every segment are counted, and an error in a later segment
// and a panic from zmm both name their record.
func TestProgressAcrossSegments(t *testing.T) {
	const n = 2*progressEvery + 100
	recs := make([]trace.Record, 0, n)
	for len(recs) < n-4 {
		recs = append(recs, alloc(0, 48), alloc(1, 5000), free(0), free(1))
		if len(recs)%1000 == 0 {
			recs = append(recs, alloc(2, 24), end) // 2 is released by the end
		}
	}
	for len(recs) < n {
		recs = append(recs, end)
	}
	tr := &trace.Trace{Records: recs}
	var calls [][2]int
	ends := 0
	res, err := ZmmHooks(newHeap(t), tr, Hooks{
		Progress:     func(done, total int) { calls = append(calls, [2]int{done, total}) },
		AtRequestEnd: func(int, bool) { ends++ },
	})
	require.NoError(t, err)
	assert.Equal(t, [][2]int{{progressEvery, n}, {2 * progressEvery, n}, {n, n}}, calls)
	assert.Equal(t, CountRequests(recs), ends)
	assert.Equal(t, ends, res.Requests)
	assert.Equal(t, n, res.Ops)

	// A bad record after the first segment.
	bad := 2*progressEvery + 7
	recs[bad] = free(7)
	_, err = Zmm(newHeap(t), tr, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "replay: record 32775 (free id=7): id 7 is not live")

	// A panic from zmm (a memory limit) in a later segment.
	recs[bad] = alloc(7, 8<<20)
	_, err = Zmm(newHeap(t, zmm.WithLimit(4<<20)), tr, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "replay: record 32775 (alloc id=7 size=8388608): Allowed memory size")
}
