//go:build goexperiment.arenas

package peers

import (
	"arena"
	"fmt"
	"runtime"
	"time"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
)

// ArenaMaxBlock is the largest block Arena replays; a larger one is
// refused with an error (Go's out-of-memory is fatal, not a panic).
var ArenaMaxBlock uint64 = 1 << 34

// Arena replays t with one arena per request (see the package doc):
// alloc is arena.MakeSlice, realloc reslices within the capacity or makes
// a new slice in the arena and copies, free drops the reference (the
// bytes stay until the request ends), and a request end frees the arena
// and starts a new one. A last request without a request end has its
// arena freed after the timed loop. Blocks the runtime deems too large
// for an arena chunk (above 2 MiB) come from the Go heap: the arena
// package decides that, not the replayer.
func Arena(t *trace.Trace, progress func(done, total int)) (res replay.Result, err error) {
	recs := t.Records
	ix := replay.NewIndex(recs)
	live := make([][]byte, ix.Len()) // nil: not live
	var touched []int32              // the slots allocated in this request
	res.Requests = replay.CountRequests(recs)

	a := arena.NewArena()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("replay: %v", r)
		}
		clear(live)
		a.Free()
	}()
	for i := range recs {
		r := &recs[i]
		if progress != nil && i%progressEvery == 0 && i > 0 {
			progress(i, len(recs))
		}
		if r.Op == trace.OpRequestEnd {
			for _, k := range touched {
				live[k] = nil // no reference may outlive the arena
			}
			touched = touched[:0]
			a.Free()
			a = arena.NewArena()
			continue
		}
		k, ok := ix.Slot(i, r.ID)
		if !ok {
			return res, fmt.Errorf("replay: record %d (%v): id out of range", i, *r)
		}
		b := &live[k]
		switch r.Op {
		case trace.OpAlloc, trace.OpRealloc:
			if r.Op == trace.OpAlloc && *b != nil {
				return res, fmt.Errorf("replay: record %d (%v): id %d is already live", i, *r, r.ID)
			}
			if r.Op == trace.OpRealloc && *b == nil {
				return res, fmt.Errorf("replay: record %d (%v): id %d is not live", i, *r, r.ID)
			}
			if r.Size > ArenaMaxBlock {
				return res, fmt.Errorf("replay: record %d (%v): a block above %d bytes is not replayed in an arena", i, *r, ArenaMaxBlock)
			}
			if r.Op == trace.OpRealloc && r.Size <= uint64(cap(*b)) {
				*b = (*b)[:r.Size]
			} else {
				// MakeSlice of length 0 returns a nil slice: keep a
				// non-nil one, which marks the block live.
				nb := arena.MakeSlice[byte](a, int(r.Size), max(int(r.Size), 1))
				copy(nb, *b)
				if r.Op == trace.OpAlloc {
					touched = append(touched, k)
				}
				*b = nb
			}
			markBytes(*b, r.ID)
		case trace.OpFree:
			if *b == nil {
				return res, fmt.Errorf("replay: record %d (%v): id %d is not live", i, *r, r.ID)
			}
			if len(*b) >= 8 && loadID(*b) != replay.Stamp(r.ID, uint64(len(*b))) {
				res.Mismatches++
			}
			*b = nil
		default:
			return res, fmt.Errorf("replay: record %d: unknown op %d", i, uint8(r.Op))
		}
	}
	res.Duration = time.Since(start)
	replay.Finish(&res, &before, len(recs), progress)
	return res, nil
}
