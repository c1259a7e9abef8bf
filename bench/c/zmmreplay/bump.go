package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
)

// The floor of the Go loop (-alloc bump, allocator "bump-go"): the replay
// loop of trace/replay.ZmmHooks, statement for statement, with a bump
// allocator where zmm's heap was. bump-c (replay.c built with ALLOC_BUMP)
// is the same allocator under the C loop, and replay.c says why it is made
// as it is. What a run of either costs is what its loop costs (reading
// records, the live table, marking and checking blocks, one call per
// operation) with an allocator that does next to nothing, so a table can
// take it off the allocators' times.
//
// The allocator: a pointer bumped round a small arena that stays in the
// cache (bumpArena bytes, or ZMM_BUMP_ARENA, or the largest block if
// larger), mapped and faulted in before the timed loop; a block is 16-byte
// aligned and at least 16 bytes; when the next block does not fit, the
// pointer goes back to the start (a wrap: the blocks there are overwritten
// and their stamps lost, mismatches that are expected of the floor); a
// request end resets it; free does nothing; realloc takes a new block and
// copies nothing. Each is a call (noinline), as a call into zmm is one.

// bumpArenaSize is the arena's size unless a block is larger, as
// BUMP_ARENA in replay.c.
const bumpArenaSize = 4 << 20

type bumpArena struct {
	mem             []byte // the mapping
	base, next, end uintptr
	wraps           uint64
}

// bumpSize is the room a block of size bytes takes.
func bumpSize(size uint64) uint64 {
	if size == 0 {
		return 16
	}
	return (size + 15) &^ 15
}

// newBumpArena maps the arena for t, never smaller than its largest block.
func newBumpArena(t *trace.Trace) (*bumpArena, error) {
	size := uint64(bumpArenaSize)
	if env := os.Getenv("ZMM_BUMP_ARENA"); env != "" {
		v, err := strconv.ParseUint(env, 10, 64)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("ZMM_BUMP_ARENA wants a size in bytes, not %q", env)
		}
		size = v
	}
	for _, r := range t.Records {
		if r.Op == trace.OpAlloc || r.Op == trace.OpRealloc {
			size = max(size, bumpSize(r.Size))
		}
	}
	size = (size + 4095) &^ 4095
	mem, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE|syscall.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mapping the bump arena (%d bytes): %w", size, err)
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	return &bumpArena{mem: mem, base: base, next: base, end: base + uintptr(size)}, nil
}

func (a *bumpArena) close() { _ = syscall.Munmap(a.mem) }

//go:noinline
func (a *bumpArena) alloc(size uintptr) uintptr {
	m := uintptr(bumpSize(uint64(size)))
	if a.end-a.next < m {
		a.next = a.base
		a.wraps++
	}
	p := a.next
	a.next += m
	return p
}

//go:noinline
func (a *bumpArena) free(p uintptr) {}

//go:noinline
func (a *bumpArena) realloc(p uintptr, size uintptr) uintptr { return a.alloc(size) }

func (a *bumpArena) reset() { a.next = a.base }

// addr turns an arena address into a pointer; the arena is not Go memory.
func addr(p uintptr) unsafe.Pointer { return unsafe.Add(nil, p) }

// bumpBlock is replay's zblock: a slot of the live table.
type bumpBlock struct {
	p    uintptr
	size uint64
	gen  uint32
	id   uint32
}

// bumpRun mirrors replay's zmmRun.
type bumpRun struct {
	a        *bumpArena
	recs     []trace.Record
	hooks    replay.Hooks
	ix       *replay.Index
	live     []bumpBlock
	gen      uint32
	i        int
	ended    int
	bad      error
	hookTime time.Duration
	res      replay.Result
}

// progressEvery is trace/replay's: the records between two progress calls.
const progressEvery = 1 << 14

// replayBump replays t on a, as replay.ZmmHooks replays a trace on a heap.
func replayBump(a *bumpArena, t *trace.Trace, hooks replay.Hooks) (replay.Result, error) {
	z := &bumpRun{a: a, recs: t.Records, hooks: hooks, gen: 1}
	z.ix = replay.NewIndex(z.recs)
	z.live = make([]bumpBlock, z.ix.Len())
	z.res.Requests = replay.CountRequests(z.recs)

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	z.loop()
	z.res.Duration = time.Since(start) - z.hookTime
	if z.bad != nil {
		return z.res, z.bad
	}
	replay.Finish(&z.res, &before, len(z.recs), hooks.Progress)
	return z.res, nil
}

func (z *bumpRun) loop() {
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

// segment is replay's zmmRun.segment with the arena's calls for the heap's.
func (z *bumpRun) segment(end int) bool {
	recs := z.recs[:end]
	ix := z.ix
	live := z.live
	for i := uint(z.i); i < uint(len(recs)); i++ {
		z.i = int(i)
		r := &recs[i]
		if r.Op == trace.OpRequestEnd {
			z.ended++
			z.requestEnd(z.ended, int(i) == len(z.recs)-1)
			continue
		}
		k32, _ := ix.Slot(int(i), r.ID)
		k := int(k32)
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
			b.p = z.a.alloc(uintptr(b.size))
			mark(b.p, b.size, b.id)
		case trace.OpFree:
			if b.gen != z.gen {
				return z.stop(r, "is not live")
			}
			if b.size >= 8 && *(*uint64)(addr(b.p)) != replay.Stamp(b.id, b.size) {
				z.res.Mismatches++
			}
			b.gen = 0
			z.a.free(b.p)
		case trace.OpRealloc:
			if b.gen != z.gen {
				return z.stop(r, "is not live")
			}
			b.size = r.Size
			b.p = z.a.realloc(b.p, uintptr(b.size))
			mark(b.p, b.size, b.id)
		default:
			return z.stop(r, "unknown op")
		}
	}
	z.i = end
	return true
}

//go:noinline
func (z *bumpRun) stop(r *trace.Record, why string) bool {
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

func (z *bumpRun) requestEnd(request int, last bool) {
	if z.hooks.AtRequestEnd != nil {
		t0 := time.Now()
		z.hooks.AtRequestEnd(request, last)
		z.hookTime += time.Since(t0)
	}
	z.a.reset()
	z.gen++
}

// mark is replay's: the id into the first 8 bytes, 0xAB into the last.
func mark(p uintptr, size uint64, id uint32) {
	if size >= 8 {
		*(*uint64)(addr(p)) = uint64(id)
	}
	if size > 0 {
		*(*byte)(addr(p + uintptr(size) - 1)) = 0xAB
	}
}
