package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/lifecycle"
	"github.com/gozmm/zmm/zmm"
)

// heapLog keeps the heaps the driver made and closed, in order.
type heapLog struct {
	mu      sync.Mutex
	made    []lifecycle.WorkerHeap
	closing []lifecycle.WorkerHeap
	closed  map[*zmm.Heap]bool
}

func (l *heapLog) option() lifecycle.Option {
	return lifecycle.WithWorkerHeapHooks(
		func(h lifecycle.WorkerHeap) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.made = append(l.made, h)
		},
		func(h lifecycle.WorkerHeap) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.closing = append(l.closing, h)
		})
}

func (l *heapLog) snapshot() (made, closing []lifecycle.WorkerHeap) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]lifecycle.WorkerHeap(nil), l.made...), append([]lifecycle.WorkerHeap(nil), l.closing...)
}

// The thread-like model: several workers serve requests at the same time,
// each on a heap of its own.
func TestThreadModelWorkersRunInParallelOnTheirOwnHeaps(t *testing.T) {
	const workers = 4
	log := &heapLog{}
	d, _ := start(t, nil, lifecycle.WithWorkers(workers), lifecycle.WithDebug(true), log.option())
	require.Equal(t, workers, d.Workers())

	var arrived sync.WaitGroup
	arrived.Add(workers)
	var mu sync.Mutex
	heapOf := map[int]*zmm.Heap{}
	var requests sync.WaitGroup
	for i := range workers {
		requests.Go(func() {
			assert.NoError(t, do(d, fmt.Sprint("GET /", i), func(c *lifecycle.Context) error {
				p := c.Alloc(1000) // each heap is used by its own worker, at the same time as the others
				arrived.Done()
				waitAll(t, &arrived, "every worker inside a request at once")
				c.Free(p)
				mu.Lock()
				defer mu.Unlock()
				heapOf[c.Worker()] = c.Heap()
				return nil
			}))
		})
	}
	requests.Wait()
	require.Len(t, heapOf, workers, "every worker served one of the requests")

	made, _ := log.snapshot()
	require.Len(t, made, workers)
	distinct := map[*zmm.Heap]bool{}
	for _, m := range made {
		assert.Equal(t, 0, m.Generation)
		assert.Same(t, m.Heap, heapOf[m.Worker], "worker %d's requests run on the heap made for it", m.Worker)
		distinct[m.Heap] = true
	}
	assert.Len(t, distinct, workers, "one heap per worker")
}

// The process-like model: one worker, requests one after another on one
// heap, however many goroutines call Do.
func TestProcessModelRunsRequestsOneAfterAnother(t *testing.T) {
	d, _ := start(t, nil)
	var inside, most atomic.Int32
	var mu sync.Mutex
	heaps := map[*zmm.Heap]bool{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				assert.NoError(t, do(d, fmt.Sprintf("GET /%d/%d", g, i), func(c *lifecycle.Context) error {
					n := inside.Add(1)
					defer inside.Add(-1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					c.Free(c.Alloc(64))
					time.Sleep(100 * time.Microsecond)
					assert.Equal(t, 0, c.Worker())
					mu.Lock()
					heaps[c.Heap()] = true
					mu.Unlock()
					return nil
				}))
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int32(1), most.Load(), "never two requests at once")
	assert.Len(t, heaps, 1)
}

// Request memory is released at request end: usage back to 0 when the
// post-request end hooks run, and the chunks the request needed stay
// mapped (cached) for the next one.
func TestRequestMemoryIsReleasedAtRequestEndAndChunksAreKept(t *testing.T) {
	var heap *zmm.Heap // the worker's: used only on the worker's goroutine, in hooks
	var during, after zmm.Stats
	comp := lifecycle.Component{
		Name:           "probe",
		WorkerStart:    func(c *lifecycle.Context) error { return nil },
		PostRequestEnd: func(c *lifecycle.Context) error { after = heap.Stats(); return nil },
	}
	made := lifecycle.WithWorkerHeapHooks(func(h lifecycle.WorkerHeap) { heap = h.Heap }, nil)
	chunks := lifecycle.WithHeapOptions(zmm.WithAllocMode(zmm.ModeChunks)) // whatever ZMM_ALLOC says: chunks are what is kept
	d, _ := start(t, []lifecycle.Component{comp}, made, chunks, lifecycle.WithDebug(false))
	require.NoError(t, do(d, "GET /big", func(c *lifecycle.Context) error {
		for range 4 {
			c.Alloc(1000 << 10) // large runs, more than one chunk holds
		}
		for range 1000 {
			c.Alloc(100)
		}
		during = c.Heap().Stats()
		return nil // not freed: the request's end releases it
	}))
	require.Greater(t, during.Usage, uintptr(3<<20))
	require.Greater(t, during.Chunks, 1)

	assert.Zero(t, after.Usage, "request memory is gone at request end")
	assert.Equal(t, 1, after.Chunks, "only the main chunk is live")
	assert.GreaterOrEqual(t, after.CachedChunks, 1, "chunks are kept for the next request")
	assert.Greater(t, after.RealUsage, uintptr(2<<20), "real usage counts the cached chunks")

	// The next request reuses the cached chunk: no new mapping.
	var realBefore, realDuring uintptr
	require.NoError(t, do(d, "GET /again", func(c *lifecycle.Context) error {
		realBefore = c.Heap().RealUsage()
		c.Alloc(1000 << 10)
		c.Alloc(1000 << 10)
		realDuring = c.Heap().RealUsage()
		return nil
	}))
	assert.Equal(t, realBefore, realDuring)
}

// A worker is recycled after MaxRequests requests: worker end, heap closed,
// a new heap, worker start again.
func TestWorkerIsRecycledAfterMaxRequests(t *testing.T) {
	rec := &recorder{}
	log := &heapLog{}
	type globals struct{ served int }
	counter := lifecycle.Component{
		Name:        "counter",
		WorkerStart: func(c *lifecycle.Context) error { rec.add("GINIT"); c.SetGlobals(&globals{}); return nil },
		WorkerEnd: func(c *lifecycle.Context) error {
			rec.add(fmt.Sprint("GSHUTDOWN after ", c.Globals().(*globals).served))
			return nil
		},
		RequestStart: func(c *lifecycle.Context) error { c.Globals().(*globals).served++; return nil },
	}
	d, _ := start(t, []lifecycle.Component{counter}, lifecycle.WithMaxRequests(3), log.option())

	var heaps []*zmm.Heap
	for i := range 7 {
		require.NoError(t, do(d, fmt.Sprint("GET /", i), func(c *lifecycle.Context) error {
			heaps = append(heaps, c.Heap())
			return nil
		}))
	}
	require.NoError(t, d.Shutdown(context.Background()))

	assert.Equal(t, []string{
		"GINIT", "GSHUTDOWN after 3",
		"GINIT", "GSHUTDOWN after 3",
		"GINIT", "GSHUTDOWN after 1",
	}, rec.take())
	made, closing := log.snapshot()
	require.Len(t, made, 3)
	require.Len(t, closing, 3)
	for gen := range 3 {
		assert.Equal(t, gen, made[gen].Generation)
		assert.Equal(t, 0, made[gen].Worker)
		assert.Same(t, made[gen].Heap, closing[gen].Heap, "the heap closed is the one made")
	}
	assert.NotSame(t, made[0].Heap, made[1].Heap, "the heap is remade")
	assert.NotSame(t, made[1].Heap, made[2].Heap, "the heap is remade")
	assert.Equal(t, []*zmm.Heap{
		made[0].Heap, made[0].Heap, made[0].Heap,
		made[1].Heap, made[1].Heap, made[1].Heap,
		made[2].Heap,
	}, heaps)
	// A closed heap refuses to serve.
	assert.ErrorIs(t, zmm.Try(func() { made[0].Heap.Alloc(8) }), zmm.ErrClosed)
}

func TestRecyclingWithSeveralWorkers(t *testing.T) {
	log := &heapLog{}
	d, _ := start(t, nil, lifecycle.WithWorkers(3), lifecycle.WithMaxRequests(2), log.option())
	var mu sync.Mutex
	perHeap := map[*zmm.Heap]int{}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			assert.NoError(t, do(d, fmt.Sprint("GET /", i), func(c *lifecycle.Context) error {
				mu.Lock()
				defer mu.Unlock()
				perHeap[c.Heap()]++
				return nil
			}))
		})
	}
	wg.Wait()
	require.NoError(t, d.Shutdown(context.Background()))

	made, closing := log.snapshot()
	assert.Len(t, closing, len(made), "every worker started was ended")
	total := 0
	for h, n := range perHeap {
		assert.LessOrEqual(t, n, 2, "no heap serves more than MaxRequests requests (%p)", h)
		total += n
	}
	assert.Equal(t, 20, total)
	assert.GreaterOrEqual(t, len(made), 10, "20 requests at 2 per worker need 10 workers")
	gens := map[int]int{}
	for _, m := range made {
		assert.Equal(t, gens[m.Worker], m.Generation, "worker %d's generations count up", m.Worker)
		gens[m.Worker]++
	}
}

// A worker that cannot start again after a recycle leaves its slot; with
// no worker left, Do says so.
func TestRecycledWorkerThatFailsToStart(t *testing.T) {
	starts := 0 // only the slot's goroutine touches it
	comp := lifecycle.Component{
		Name: "flaky",
		WorkerStart: func(*lifecycle.Context) error {
			starts++
			if starts > 1 {
				return errors.New("out of file descriptors")
			}
			return nil
		},
	}
	d, out := start(t, []lifecycle.Component{comp}, lifecycle.WithMaxRequests(1))
	require.NoError(t, do(d, "GET /1", nil))
	assert.ErrorIs(t, do(d, "GET /2", nil), lifecycle.ErrNoWorkers)
	require.Len(t, d.Report().Failures, 1)
	assert.Equal(t, lifecycle.PhaseWorkerStart, d.Report().Failures[0].Phase)
	assert.Contains(t, out.String(), `worker start hook of component "flaky" (worker 0) failed: out of file descriptors`)
	assert.NoError(t, d.Shutdown(context.Background()))
}

// Many requests on several workers, with request and persistent memory
// used in parallel: for go test -race.
func TestParallelRequestsAndPersistentMemory(t *testing.T) {
	cache := lifecycle.Component{
		Name: "cache",
		WorkerStart: func(c *lifecycle.Context) error {
			c.SetGlobals(c.PAlloc(256))
			return nil
		},
		RequestStart: func(c *lifecycle.Context) error {
			p := c.PRealloc(c.Globals().(unsafe.Pointer), 256+uintptr(c.Worker())*8)
			c.SetGlobals(p)
			return nil
		},
		WorkerEnd: func(c *lifecycle.Context) error {
			c.PFree(c.Globals().(unsafe.Pointer))
			return nil
		},
	}
	d, out := start(t, []lifecycle.Component{cache}, lifecycle.WithWorkers(4), lifecycle.WithMaxRequests(7), lifecycle.WithDebug(true))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				assert.NoError(t, do(d, fmt.Sprintf("GET /%d/%d", g, i), func(c *lifecycle.Context) error {
					buf := zmm.Bytes(c.Alloc(512), 512)
					buf[0] = byte(i)
					s := zmm.MakeSlice[int64](c.Heap(), 0, 16)
					s = append(s, int64(g))
					zmm.FreeSlice(c.Heap(), s)
					p := c.PAlloc(32)
					c.PFree(p)
					c.Free(unsafe.Pointer(&buf[0]))
					return nil
				}))
			}
		})
	}
	wg.Wait()
	require.NoError(t, d.Shutdown(context.Background()))
	assert.Empty(t, out.String())
}

func TestInfo(t *testing.T) {
	var served atomic.Int64
	a := lifecycle.Component{
		Name:         "sessions",
		RequestStart: func(*lifecycle.Context) error { served.Add(1); return nil },
		Info: func(c *lifecycle.Context, w io.Writer) error {
			_, err := fmt.Fprintf(w, "sessions opened: %d\n", served.Load())
			return err
		},
	}
	b := lifecycle.Component{Name: "render"}
	broken := lifecycle.Component{
		Name: "broken",
		Info: func(c *lifecycle.Context, w io.Writer) error { c.Alloc(1); return nil },
	}
	d, _ := start(t, []lifecycle.Component{a, b, broken}, lifecycle.WithWorkers(2), lifecycle.WithMaxRequests(10),
		lifecycle.WithName("shop"), lifecycle.WithDebug(true))
	for range 3 {
		require.NoError(t, do(d, "GET /cart", func(c *lifecycle.Context) error { c.PFree(c.PAlloc(10)); c.Alloc(5000); return nil }))
	}
	var sb strings.Builder
	err := d.Info(&sb)
	assert.ErrorIs(t, err, lifecycle.ErrOutsideRequest, "an Info hook has no request memory")
	info := sb.String()
	assert.Contains(t, info, "shop: 2 worker(s), max requests per worker 10, debug true, running\n")
	assert.Contains(t, info, "\n[sessions]\nsessions opened: 3\n\n[render]\n\n[broken]\n")
	assert.Contains(t, info, "\n[persistent memory]\nusage 0, peak ")
	assert.Contains(t, info, "0 block(s) live, 0 of them allocated during a request")
	assert.Contains(t, info, "worker 0: generation 0 (live)")
	assert.Contains(t, info, "worker 1: generation 0 (live)")
	assert.Contains(t, info, `; last request "GET /cart", peak usage `)
	assert.Contains(t, info, "; heap usage 0, real usage 2097152 between requests")
	total := 0
	for _, m := range regexp.MustCompile(`(\d+) request\(s\) served`).FindAllStringSubmatch(info, -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	assert.Equal(t, 3, total, "the workers' counts add up to the requests served")
}

// Info works before Start, from inside a request, and after Shutdown.
func TestInfoInEveryState(t *testing.T) {
	called := 0
	comp := lifecycle.Component{Name: "a", Info: func(*lifecycle.Context, io.Writer) error { called++; return nil }}
	d := lifecycle.New(lifecycle.WithReport(nil))
	require.NoError(t, d.Register(comp))
	var sb strings.Builder
	require.NoError(t, d.Info(&sb))
	assert.Contains(t, sb.String(), "not started")
	require.NoError(t, d.Start(context.Background()))
	require.NoError(t, do(d, "GET /info", func(c *lifecycle.Context) error {
		sb.Reset()
		return d.Info(&sb)
	}))
	assert.Contains(t, sb.String(), "[persistent memory]")
	assert.Contains(t, sb.String(), "worker 0: generation 0 (live)")
	require.NoError(t, d.Shutdown(context.Background()))
	sb.Reset()
	require.NoError(t, d.Info(&sb))
	assert.Contains(t, sb.String(), "stopped")
	assert.Contains(t, sb.String(), "worker 0: generation 0 (ended), 1 request(s) served")
	assert.NotContains(t, sb.String(), "[persistent memory]")
	assert.Equal(t, 1, called, "Info hooks run while the driver runs only")
}

// The persistent heap is there for viewers (inspect) from Start to
// Shutdown, under its lock, and counts the blocks of every phase.
func TestPersistentHeapForViewers(t *testing.T) {
	d := lifecycle.New(lifecycle.WithReport(nil), lifecycle.WithDebug(true))
	h, _ := d.PersistentHeap()
	assert.Nil(t, h, "no heap before Start")
	var p unsafe.Pointer
	require.NoError(t, d.Register(lifecycle.Component{
		Name: "a",
		ModuleStartup: func(c *lifecycle.Context) error {
			assert.True(t, c.Debug())
			p = c.PAlloc(1000)
			return nil
		},
		ModuleShutdown: func(c *lifecycle.Context) error { c.PFree(p); return nil },
	}))
	require.NoError(t, d.Start(context.Background()))
	h, lock := d.PersistentHeap()
	require.NotNil(t, h)
	lock.Lock()
	assert.True(t, h.Debug())
	assert.GreaterOrEqual(t, h.Usage(), uintptr(1000))
	assert.Len(t, h.Snapshot().Blocks, 1)
	lock.Unlock()
	require.NoError(t, d.Shutdown(context.Background()))
}
