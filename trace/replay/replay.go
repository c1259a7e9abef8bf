// Package replay replays allocation traces (package
// github.com/gozmm/zmm/trace) on zmm and on Go's allocator with the replay
// rules of the format's specification, [docs/TRACE_FORMAT.md], so that
// results compare across allocators:
//
//   - the trace is in memory before the replay starts; only the replay loop
//     is timed;
//   - alloc and realloc write the block's id into its first 8 bytes (when it
//     has 8) and 0xAB into its last byte; free checks the id and counts the
//     blocks that lost it (Mismatches: a correct allocator has none);
//   - a request end releases every live block: zmm resets its heap in one
//     call, Go drops its references.
//
// A replayer never crashes on a bad trace: Read has validated the traces it
// returns, and the replay checks every id again, returning an error naming
// the record.
//
// [docs/TRACE_FORMAT.md]: https://github.com/gozmm/zmm/blob/main/docs/TRACE_FORMAT.md
package replay

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/zmm"
)

// Result is what a replay measured.
type Result struct {
	// Ops is the number of records replayed, request ends included.
	Ops int `json:"ops"`
	// Duration is the time of the replay loop (hooks excluded).
	Duration time.Duration `json:"duration_ns"`
	NsPerOp  float64       `json:"ns_per_op"`
	// Mismatches counts the freed blocks whose first 8 bytes no longer
	// held their id.
	Mismatches int `json:"mismatches"`
	// PeakUsage and RealPeakUsage are the allocator's own peaks, the
	// highest over the requests (zmm only; 0 for Go).
	PeakUsage     uint64 `json:"peak_usage"`
	RealPeakUsage uint64 `json:"real_peak_usage"`
	// Requests is the number of requests: the request ends, plus one if
	// records follow the last of them.
	Requests int `json:"requests"`
	// GCCycles and GCPauseNs are the Go garbage collections during the
	// replay and their total stop-the-world pause.
	GCCycles  uint32 `json:"gc_cycles"`
	GCPauseNs uint64 `json:"gc_pause_ns"`
}

func (r Result) String() string {
	return fmt.Sprintf("%d ops in %v (%.1f ns/op), %d requests, peak %d B, real peak %d B, %d mismatches, %d GC cycles (%v pause)",
		r.Ops, r.Duration.Round(time.Microsecond), r.NsPerOp, r.Requests, r.PeakUsage, r.RealPeakUsage,
		r.Mismatches, r.GCCycles, time.Duration(r.GCPauseNs))
}

// Hooks are optional calls into a replay.
type Hooks struct {
	// Progress is called now and then with the records done and the
	// total, and once at the end.
	Progress func(done, total int)
	// AtRequestEnd is called at each request end before the heap is reset,
	// with the request's number (from 1) and whether it is the trace's
	// last record. A caller uses it to look at the heap (a snapshot, the
	// statistics); its time is not counted.
	AtRequestEnd func(request int, last bool)
	// FreeAtEnd makes each request end free the trace's live blocks one
	// by one (checking them) before the reset, so that a debug heap's
	// leak report at Reset lists only blocks the trace does not own.
	FreeAtEnd bool
}

// progressEvery is how many records pass between progress calls at most.
const progressEvery = 1 << 14

// Zmm replays t on h (see the package doc); progress may be nil. At the
// end, blocks of a last request without a request end are still live in
// h. On an error (a bad record, or a *zmm.Error such as the memory limit)
// the replay stops, and the error names the record; h may hold live blocks
// then, which h.Reset releases.
func Zmm(h *zmm.Heap, t *trace.Trace, progress func(done, total int)) (Result, error) {
	return ZmmHooks(h, t, Hooks{Progress: progress})
}

// zblock is a slot of the live table: the block is live when gen is the
// current request's generation, so that a request end clears nothing. The
// address is a uintptr: zmm's blocks are not Go memory, and a uintptr field
// is stored without the write barrier an unsafe.Pointer field would need.
// The id is kept with the block (it fills what would be padding) so that
// marking a block after a call into zmm needs nothing but the slot.
type zblock struct {
	p    uintptr
	size uint64
	gen  uint32
	id   uint32
}

// ZmmHooks is Zmm with hooks.
func ZmmHooks(h *zmm.Heap, t *trace.Trace, hooks Hooks) (Result, error) {
	z := &zmmRun{h: h, recs: t.Records, hooks: hooks, gen: 1}
	z.ix = NewIndex(z.recs)
	z.live = make([]zblock, z.ix.n)
	z.res.Requests = CountRequests(z.recs)

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	err := zmm.Try(z.loop)
	z.res.Duration = time.Since(start) - z.hookTime
	if z.bad != nil {
		return z.res, z.bad
	}
	if err != nil {
		if z.i < len(z.recs) {
			err = fmt.Errorf("replay: record %d (%v): %w", z.i, z.recs[z.i], err)
		}
		return z.res, err
	}
	z.res.PeakUsage = max(z.res.PeakUsage, uint64(h.PeakUsage()))
	z.res.RealPeakUsage = max(z.res.RealPeakUsage, uint64(h.RealPeakUsage()))
	Finish(&z.res, &before, len(z.recs), hooks.Progress)
	return z.res, nil
}

// zmmRun is the state of a replay on a zmm heap. Its loop is a method of
// its own so that a debug heap names it as the allocation site of the
// trace's blocks.
type zmmRun struct {
	h        *zmm.Heap
	recs     []trace.Record
	hooks    Hooks
	ix       *Index
	live     []zblock
	liveIDs  []int32 // for FreeAtEnd: the slots allocated in this request
	gen      uint32
	i        int // the record being replayed
	ended    int // the request ends replayed
	bad      error
	hookTime time.Duration
	res      Result
}

func (z *zmmRun) loop() {
	// The records go in segments that end where the progress hook is due,
	// so that the loop over a segment has no hook test.
	n := len(z.recs)
	for z.i < n {
		end := min(n, (z.i/progressEvery+1)*progressEvery)
		if !z.segment(end) || end == n {
			return
		}
		if z.hooks.Progress != nil {
			z.hooks.Progress(end, n)
		}
	}
}

// segment replays records z.i up to end. It reports false when it stopped
// at a bad record (z.bad). It is written for the code the compiler makes:
// Go keeps no register across a call, so every value still needed after a
// call into zmm is spilled before it and loaded again after it. The slot
// is therefore filled before the call (its size, id and generation, and
// for a free its cleared generation), and after the call only the slot
// itself is needed, to store the address and mark the block. The tables
// are resliced to what the segment reads, so that indexing them needs no
// bounds check, and z.i is kept current so that a panic names its record.
func (z *zmmRun) segment(end int) bool {
	recs := z.recs[:end]
	remap := z.ix.remap
	if remap != nil {
		remap = remap[:end]
	}
	live := z.live
	for i := uint(z.i); i < uint(len(recs)); i++ {
		z.i = int(i)
		r := &recs[i]
		if r.Op == trace.OpRequestEnd {
			z.ended++
			z.requestEnd(z.ended, int(i) == len(z.recs)-1)
			continue
		}
		k := int(r.ID)
		if remap != nil {
			k = int(remap[i])
		}
		if uint(k) >= uint(len(live)) {
			return z.stop(r, "id out of range")
		}
		b := &live[k]
		switch r.Op {
		case trace.OpAlloc:
			if b.gen == z.gen {
				return z.stop(r, "is already live")
			}
			b.size, b.id, b.gen = r.Size, r.ID, z.gen
			if z.hooks.FreeAtEnd {
				z.liveIDs = append(z.liveIDs, int32(k))
			}
			b.p = uintptr(z.h.Alloc(uintptr(b.size)))
			mark(b.p, b.size, b.id)
		case trace.OpFree:
			if b.gen != z.gen {
				return z.stop(r, "is not live")
			}
			if b.size >= 8 && *(*uint64)(addr(b.p)) != Stamp(b.id, b.size) {
				z.res.Mismatches++
			}
			b.gen = 0
			z.h.Free(addr(b.p))
		case trace.OpRealloc:
			if b.gen != z.gen {
				return z.stop(r, "is not live")
			}
			b.size = r.Size
			b.p = uintptr(z.h.Realloc(addr(b.p), uintptr(b.size)))
			mark(b.p, b.size, b.id)
		default:
			return z.stop(r, "unknown op")
		}
	}
	z.i = end
	return true
}

// stop records why the replay stopped at record z.i and returns false.
//
//go:noinline
func (z *zmmRun) stop(r *trace.Record, why string) bool {
	switch why {
	case "unknown op":
		z.bad = fmt.Errorf("replay: record %d: unknown op %d", z.i, uint8(r.Op))
	case "id out of range":
		z.bad = fmt.Errorf("replay: record %d (%v): id out of range", z.i, *r)
	default:
		z.bad = fmt.Errorf("replay: record %d (%v): id %d %s", z.i, *r, r.ID, why)
	}
	return false
}

// requestEnd reads the peaks, calls the hook, and releases the request's
// blocks: one by one first with FreeAtEnd, then with one Reset.
func (z *zmmRun) requestEnd(request int, last bool) {
	h := z.h
	z.res.PeakUsage = max(z.res.PeakUsage, uint64(h.PeakUsage()))
	z.res.RealPeakUsage = max(z.res.RealPeakUsage, uint64(h.RealPeakUsage()))
	if z.hooks.AtRequestEnd != nil {
		t0 := time.Now()
		z.hooks.AtRequestEnd(request, last)
		z.hookTime += time.Since(t0)
	}
	if z.hooks.FreeAtEnd {
		for _, k := range z.liveIDs {
			if b := &z.live[k]; b.gen == z.gen {
				if b.size >= 8 && *(*uint64)(addr(b.p)) != Stamp(b.id, b.size) {
					z.res.Mismatches++
				}
				h.Free(addr(b.p))
				b.gen = 0
			}
		}
		z.liveIDs = z.liveIDs[:0]
	}
	h.Reset()
	z.gen++
}

// mark writes the id into the first 8 bytes and 0xAB into the last byte.
// zmm's blocks are 8-byte aligned.
//
// In a block of exactly 8 bytes the last byte is the id's top byte, so
// the first 8 bytes then hold Stamp(id, 8), not the id: that is what free
// checks for.
func mark(p uintptr, size uint64, id uint32) {
	if size >= 8 {
		*(*uint64)(addr(p)) = uint64(id)
	}
	if size > 0 {
		*(*byte)(addr(p + uintptr(size) - 1)) = 0xAB
	}
}

// addr turns a block address back into a pointer (unsafe.Add keeps go vet
// content: the memory is zmm's, not Go's, so the conversion is sound).
func addr(p uintptr) unsafe.Pointer { return unsafe.Add(nil, p) }

// Stamp is what a replayer writes into the first 8 bytes of block id of
// size bytes (and checks at free): the id, with the 0xAB of the last byte
// on top when the block is 8 bytes long and the two overlap.
func Stamp(id uint32, size uint64) uint64 {
	if size == 8 {
		return uint64(id) | 0xAB<<56
	}
	return uint64(id)
}

// Finish fills the result's op count, ns/op and GC figures after a replay
// loop of n records, and reports the end to progress.
func Finish(res *Result, before *runtime.MemStats, n int, progress func(done, total int)) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	res.Ops = n
	if n > 0 {
		res.NsPerOp = float64(res.Duration.Nanoseconds()) / float64(n)
	}
	res.GCCycles = after.NumGC - before.NumGC
	res.GCPauseNs = after.PauseTotalNs - before.PauseTotalNs
	if progress != nil {
		progress(n, n)
	}
}

// CountRequests is the number of requests in recs: one per request end,
// plus a last one not ended.
func CountRequests(recs []trace.Record) int {
	n := 0
	for _, r := range recs {
		if r.Op == trace.OpRequestEnd {
			n++
		}
	}
	if len(recs) > 0 && recs[len(recs)-1].Op != trace.OpRequestEnd {
		n++
	}
	return n
}

// Index maps trace ids to slots of a replayer's live table: ids are their
// own slots when dense, and are renumbered before the timed loop when
// sparse. Every replayer (here and in bench/peers) uses it.
type Index struct {
	n     int
	remap []int32  // per record, its slot; nil when ids are slots
	ids   []uint32 // per slot, its id, when remapped
}

// NewIndex builds the index of a trace's records.
func NewIndex(recs []trace.Record) *Index {
	maxID := -1
	for _, r := range recs {
		if r.Op != trace.OpRequestEnd {
			maxID = max(maxID, int(r.ID))
		}
	}
	if maxID < 2*len(recs)+1024 {
		return &Index{n: maxID + 1}
	}
	ix := &Index{remap: make([]int32, len(recs))}
	slots := map[uint32]int32{}
	for i, r := range recs {
		if r.Op == trace.OpRequestEnd {
			continue
		}
		k, ok := slots[r.ID]
		if !ok {
			k = int32(len(ix.ids))
			slots[r.ID] = k
			ix.ids = append(ix.ids, r.ID)
		}
		ix.remap[i] = k
	}
	ix.n = len(ix.ids)
	return ix
}

// Slot returns the slot of record i with id, and whether it is in range.
func (ix *Index) Slot(i int, id uint32) (int32, bool) {
	if ix.remap != nil {
		return ix.remap[i], true
	}
	return int32(id), int(id) < ix.n
}

// Len is the number of slots a replayer's live table needs.
func (ix *Index) Len() int { return ix.n }

// IDOf returns the id that lives in slot k.
func (ix *Index) IDOf(k int32) uint32 {
	if ix.remap != nil {
		return ix.ids[k]
	}
	return uint32(k)
}
