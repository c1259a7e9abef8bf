// Package peers replays allocation traces (bench/trace) on the allocators
// a Go programmer could pick instead of zmm, with the semantics of
// bench/replay and TRACE_FORMAT.md, returning the same replay.Result:
//
//   - Modernc: modernc.org/memory, a pure-Go mmap allocator (the one behind
//     modernc.org/sqlite): malloc, free and realloc, no request lifecycle,
//     so a request end frees the live blocks one by one.
//   - Arena (built with GOEXPERIMENT=arenas only): Go's arena experiment,
//     one arena per request: alloc is arena.MakeSlice, free drops the
//     reference (the memory stays until the request ends), a request end
//     frees the arena.
//
// As in bench/replay, alloc and realloc write the id into the block's first
// 8 bytes (when it has 8) and 0xAB into its last byte, free checks the id
// and counts Mismatches, and only the replay loop is timed.
package peers

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"modernc.org/memory"

	"github.com/gozmm/zmm/bench/replay"
	"github.com/gozmm/zmm/bench/trace"
)

// progressEvery is how many records pass between progress calls at most.
const progressEvery = 1 << 14

// mblock is a slot of the live table: the block is live when gen is the
// current request's generation.
type mblock struct {
	p    unsafe.Pointer
	size uint64
	gen  uint32
}

// Modernc replays t on a (see the package doc); progress may be nil. A
// request end frees every block still live, one by one, inside the timed
// loop. Blocks of a last request without a request end stay live in a:
// a.Close releases them. On an error the replay stops, and the error
// names the record.
func Modernc(a *memory.Allocator, t *trace.Trace, progress func(done, total int)) (res replay.Result, err error) {
	recs := t.Records
	ix := newIndex(recs)
	live := make([]mblock, ix.n)
	var touched []int32 // the slots allocated in this request
	gen := uint32(1)
	res.Requests = countRequests(recs)

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := range recs {
		r := &recs[i]
		if progress != nil && i%progressEvery == 0 && i > 0 {
			progress(i, len(recs))
		}
		if r.Op == trace.OpRequestEnd {
			for _, k := range touched {
				if b := &live[k]; b.gen == gen {
					if b.size >= 8 && *(*uint64)(b.p) != stamp(ix.idOf(k), b.size) {
						res.Mismatches++
					}
					if err := a.UnsafeFree(b.p); err != nil {
						return res, fmt.Errorf("replay: record %d (%v): %w", i, *r, err)
					}
					b.gen = 0
				}
			}
			touched = touched[:0]
			gen++
			continue
		}
		k, ok := ix.slot(i, r.ID)
		if !ok {
			return res, fmt.Errorf("replay: record %d (%v): id out of range", i, *r)
		}
		if r.Size > maxInt {
			return res, fmt.Errorf("replay: record %d (%v): size above the largest int", i, *r)
		}
		b := &live[k]
		switch r.Op {
		case trace.OpAlloc:
			if b.gen == gen {
				return res, fmt.Errorf("replay: record %d (%v): id %d is already live", i, *r, r.ID)
			}
			p, err := a.UnsafeMalloc(int(r.Size))
			if err != nil {
				return res, fmt.Errorf("replay: record %d (%v): %w", i, *r, err)
			}
			b.p, b.size, b.gen = p, r.Size, gen
			mark(p, r.Size, r.ID)
			touched = append(touched, k)
		case trace.OpFree:
			if b.gen != gen {
				return res, fmt.Errorf("replay: record %d (%v): id %d is not live", i, *r, r.ID)
			}
			if b.size >= 8 && *(*uint64)(b.p) != stamp(r.ID, b.size) {
				res.Mismatches++
			}
			if err := a.UnsafeFree(b.p); err != nil {
				return res, fmt.Errorf("replay: record %d (%v): %w", i, *r, err)
			}
			b.gen = 0
		case trace.OpRealloc:
			if b.gen != gen {
				return res, fmt.Errorf("replay: record %d (%v): id %d is not live", i, *r, r.ID)
			}
			// UnsafeRealloc of size 0 frees the block and returns nil, and
			// of a nil block (size 0 before) allocates: both are what the
			// trace means.
			p, err := a.UnsafeRealloc(b.p, int(r.Size))
			if err != nil {
				return res, fmt.Errorf("replay: record %d (%v): %w", i, *r, err)
			}
			b.p, b.size = p, r.Size
			mark(p, r.Size, r.ID)
		default:
			return res, fmt.Errorf("replay: record %d: unknown op %d", i, uint8(r.Op))
		}
	}
	res.Duration = time.Since(start)
	finish(&res, &before, len(recs), progress)
	return res, nil
}

const maxInt = uint64(^uint(0) >> 1)

// mark writes the id into the first 8 bytes and 0xAB into the last byte,
// as bench/replay does.
func mark(p unsafe.Pointer, size uint64, id uint32) {
	if size >= 8 {
		*(*uint64)(p) = uint64(id)
	}
	if size > 0 {
		*(*byte)(unsafe.Add(p, size-1)) = 0xAB
	}
}

// markBytes is mark for a Go slice of the block's length.
func markBytes(b []byte, id uint32) {
	if len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, uint64(id))
	}
	if len(b) > 0 {
		b[len(b)-1] = 0xAB
	}
}

// loadID reads what markBytes wrote into the first 8 bytes.
func loadID(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// stamp is what the first 8 bytes of a block of size >= 8 hold after mark:
// in a block of exactly 8 bytes the last byte is the id's top byte.
func stamp(id uint32, size uint64) uint64 {
	if size == 8 {
		return uint64(id) | 0xAB<<56
	}
	return uint64(id)
}

func finish(res *replay.Result, before *runtime.MemStats, n int, progress func(done, total int)) {
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

func countRequests(recs []trace.Record) int {
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

// index maps ids to slots of the live table, as bench/replay's does: ids
// are their own slots when dense, and are renumbered before the timed loop
// when sparse.
type index struct {
	n     int
	remap []int32  // per record, its slot; nil when ids are slots
	ids   []uint32 // per slot, its id, when remapped
}

func newIndex(recs []trace.Record) *index {
	maxID := -1
	for _, r := range recs {
		if r.Op != trace.OpRequestEnd {
			maxID = max(maxID, int(r.ID))
		}
	}
	if maxID < 2*len(recs)+1024 {
		return &index{n: maxID + 1}
	}
	ix := &index{remap: make([]int32, len(recs))}
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

func (ix *index) slot(i int, id uint32) (int32, bool) {
	if ix.remap != nil {
		return ix.remap[i], true
	}
	return int32(id), int(id) < ix.n
}

func (ix *index) idOf(k int32) uint32 {
	if ix.remap != nil {
		return ix.ids[k]
	}
	return uint32(k)
}
