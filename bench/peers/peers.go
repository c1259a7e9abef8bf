// Package peers replays allocation traces (package trace) on the allocators
// a Go programmer could pick instead of zmm, with the semantics of
// trace/replay and docs/TRACE_FORMAT.md, returning the same replay.Result:
//
//   - Modernc: modernc.org/memory, a pure-Go mmap allocator (the one behind
//     modernc.org/sqlite): malloc, free and realloc, no request lifecycle,
//     so a request end frees the live blocks one by one.
//   - Arena (built with GOEXPERIMENT=arenas only): Go's arena experiment,
//     one arena per request: alloc is arena.MakeSlice, free drops the
//     reference (the memory stays until the request ends), a request end
//     frees the arena.
//
// As in trace/replay, alloc and realloc write the id into the block's first
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

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
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
	ix := replay.NewIndex(recs)
	live := make([]mblock, ix.Len())
	var touched []int32 // the slots allocated in this request
	gen := uint32(1)
	res.Requests = replay.CountRequests(recs)

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
					if b.size >= 8 && *(*uint64)(b.p) != replay.Stamp(ix.IDOf(k), b.size) {
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
		k, ok := ix.Slot(i, r.ID)
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
			if b.size >= 8 && *(*uint64)(b.p) != replay.Stamp(r.ID, b.size) {
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
	replay.Finish(&res, &before, len(recs), progress)
	return res, nil
}

const maxInt = uint64(^uint(0) >> 1)

// mark writes the id into the first 8 bytes and 0xAB into the last byte,
// as trace/replay does.
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
