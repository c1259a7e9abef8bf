package replay

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"time"

	"github.com/gozmm/zmm/trace"
)

// GoMaxBlock is the largest block Go replays: a larger one is refused with
// an error, because the Go runtime's out-of-memory is fatal, not a panic.
var GoMaxBlock uint64 = 1 << 34

// Go replays t with Go's allocator: alloc is make([]byte, size), realloc
// reslices within the capacity or makes a new slice and copies, free and
// request end drop the references (the garbage collector frees the
// blocks). progress may be nil. PeakUsage and RealPeakUsage stay 0; the GC
// figures are the point.
func Go(t *trace.Trace, progress func(done, total int)) (res Result, err error) {
	recs := t.Records
	ix := NewIndex(recs)
	live := make([][]byte, ix.n) // nil: not live (make never returns nil)
	var touched []int32          // the slots allocated in this request
	res.Requests = CountRequests(recs)

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	defer func() {
		// make can still panic (a size out of range); report it.
		if r := recover(); r != nil {
			err = fmt.Errorf("replay: %v", r)
		}
	}()
	for i := range recs {
		r := &recs[i]
		if progress != nil && i%progressEvery == 0 && i > 0 {
			progress(i, len(recs))
		}
		if r.Op == trace.OpRequestEnd {
			for _, k := range touched {
				live[k] = nil // the block is garbage from here on
			}
			touched = touched[:0]
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
			if r.Size > GoMaxBlock {
				return res, fmt.Errorf("replay: record %d (%v): a block above %d bytes is not replayed on Go's heap", i, *r, GoMaxBlock)
			}
			if r.Op == trace.OpRealloc && r.Size <= uint64(cap(*b)) {
				*b = (*b)[:r.Size]
			} else {
				nb := make([]byte, r.Size)
				copy(nb, *b)
				if r.Op == trace.OpAlloc {
					touched = append(touched, k)
				}
				*b = nb
			}
			if r.Size >= 8 {
				binary.LittleEndian.PutUint64(*b, uint64(r.ID))
			}
			if r.Size > 0 {
				(*b)[r.Size-1] = 0xAB
			}
		case trace.OpFree:
			if *b == nil {
				return res, fmt.Errorf("replay: record %d (%v): id %d is not live", i, *r, r.ID)
			}
			if len(*b) >= 8 && binary.LittleEndian.Uint64(*b) != Stamp(r.ID, uint64(len(*b))) {
				res.Mismatches++
			}
			*b = nil
		default:
			return res, fmt.Errorf("replay: record %d: unknown op %d", i, uint8(r.Op))
		}
	}
	res.Duration = time.Since(start)
	Finish(&res, &before, len(recs), progress)
	return res, nil
}
