package zmm_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
)

func newShared(t testing.TB, opts ...zmm.Option) *zmm.Shared {
	t.Helper()
	a, err := zmm.NewShared(layout(opts...)...)
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return a
}

func TestSharedAPI(t *testing.T) {
	a := newShared(t, zmm.WithName("api"))
	assert.Equal(t, "api", a.Name())
	for _, size := range []uintptr{0, 1, 16, 100, 3072, 3073, 65536, zmm.MaxLargeSize, zmm.MaxLargeSize + 1, 5 << 20} {
		p := a.Alloc(size)
		require.NotNil(t, p)
		bs := a.BlockSize(p)
		assert.GreaterOrEqual(t, bs, size)
		assert.True(t, a.Owns(p))
		fill(p, size, 7)
		q := a.Realloc(p, size*2+10)
		assert.True(t, holds(q, size, 7), "size %d: Realloc kept the bytes", size)
		a.Free(q)
	}
	c := (*[64]byte)(a.Calloc(8, 8))
	assert.Equal(t, [64]byte{}, *c)
	a.Free(unsafe.Pointer(c))
	s := a.Strdup("hello")
	assert.Equal(t, "hello\x00", string(zmm.Bytes(s, 6)))
	a.Free(s)
	s = a.Strndup("hello", 3)
	assert.Equal(t, "hel\x00", string(zmm.Bytes(s, 4)))
	a.Free(s)
	b := a.AllocBytes(100)
	assert.Len(t, b, 100)
	assert.GreaterOrEqual(t, cap(b), 100)
	a.FreeBytes(b)
	a.Free(nil)
	assert.Equal(t, a.Realloc(nil, 10) != nil, true)

	e := catch(t, func() { a.SafeAlloc(1<<62, 8, 0) })
	assert.ErrorIs(t, e, zmm.ErrOverflow)
	require.NoError(t, a.Check())
	assert.GreaterOrEqual(t, a.PeakUsage(), a.Usage())
	assert.GreaterOrEqual(t, a.RealPeakUsage(), a.RealUsage())
	assert.NotZero(t, a.RealUsage())
	assert.NotZero(t, a.SharedStats().Heaps)
}

func TestSharedBadPointers(t *testing.T) {
	a := newShared(t)
	other := newHeap(t, layout()...)
	p := a.Alloc(64)
	big := a.Alloc(8192)
	huge := a.Alloc(3 << 20)
	var goMem [64]byte
	cases := []struct {
		name string
		p    unsafe.Pointer
		kind error
	}{
		{"Go memory", unsafe.Pointer(&goMem[8]), zmm.ErrInvalidPointer},
		{"small interior", unsafe.Add(p, 8), zmm.ErrInvalidPointer},
		{"large interior", unsafe.Add(big, 4096), zmm.ErrInvalidPointer},
		{"huge interior", unsafe.Add(huge, 4096), zmm.ErrInvalidPointer},
		{"another heap's block", other.Alloc(64), zmm.ErrWrongHeap},
		{"a small address", unsafe.Add(nil, 4096), zmm.ErrInvalidPointer},
	}
	for _, c := range cases {
		for op, f := range map[string]func(){
			"Free":      func() { a.Free(c.p) },
			"Realloc":   func() { a.Realloc(c.p, 100) },
			"BlockSize": func() { a.BlockSize(c.p) },
		} {
			e := catch(t, f)
			assert.ErrorIs(t, e, c.kind, "%s, %s: %v", c.name, op, e)
		}
	}
	for _, q := range []unsafe.Pointer{p, big, huge} {
		a.Free(q)
		e := catch(t, func() { a.Free(q) })
		assert.ErrorIs(t, e, zmm.ErrDoubleFree, "%v", e)
	}
	require.NoError(t, a.Check())
	assert.Zero(t, a.Usage())
}

func TestSharedOptionsAndClose(t *testing.T) {
	a, err := zmm.NewShared(append(layout(), zmm.WithStorage(newRegion(t, 8)))...)
	assert.Nil(t, a)
	assert.ErrorIs(t, err, zmm.ErrConfig)
	assert.ErrorContains(t, err, "not support")
	a, err = zmm.NewShared(layout()...)
	require.NoError(t, err)
	p := a.Alloc(100)
	a.Close()
	a.Close()
	for op, f := range map[string]func(){
		"Alloc":     func() { a.Alloc(10) },
		"Alloc big": func() { a.Alloc(1 << 20) },
		"Free":      func() { a.Free(p) },
		"GC":        func() { a.GC() },
		"Check":     func() { _ = a.Check() },
	} {
		e := catch(t, f)
		assert.ErrorIs(t, e, zmm.ErrClosed, op)
	}
	assert.False(t, a.Owns(p))
}

// TestSharedAllocFreeAllocatesNothing: the shared paths put nothing on
// the Go heap.
func TestSharedAllocFreeAllocatesNothing(t *testing.T) {
	a := newShared(t)
	for _, size := range []uintptr{32, 5000, 3 << 20} {
		n := testing.AllocsPerRun(100, func() { a.Free(a.Alloc(size)) })
		assert.Zero(t, n, "size %d", size)
	}
}

// sharedBlock is a block of the stress test: its bytes hold its id.
type sharedBlock struct {
	p    unsafe.Pointer
	size uintptr
	id   byte
}

func (b sharedBlock) fill()      { fill(b.p, min(b.size, 4096), b.id) }
func (b sharedBlock) good() bool { return holds(b.p, min(b.size, 4096), b.id) }

// TestSharedStress: goroutines allocate, fill, hand blocks to each other,
// verify and free them, reallocate, while GOMAXPROCS changes, goroutines
// come and go, and GC and Check stop the heaps now and then. Every block
// keeps its bytes (no block is handed out twice, no overlap), every live
// address is distinct, and in the end the usage is zero and Check clean.
func TestSharedStress(t *testing.T) {
	a := newShared(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var (
		mu      sync.Mutex
		live    = map[uintptr]bool{}
		handoff = make(chan sharedBlock, 256)
		nextID  atomic.Uint32
		failed  atomic.Bool
	)
	claim := func(b sharedBlock) {
		mu.Lock()
		defer mu.Unlock()
		if live[uintptr(b.p)] {
			failed.Store(true)
			t.Errorf("0x%x handed out while live", b.p)
		}
		live[uintptr(b.p)] = true
	}
	release := func(b sharedBlock) {
		if !b.good() {
			failed.Store(true)
			t.Errorf("block 0x%x (%d bytes, id %d) lost its bytes", b.p, b.size, b.id)
		}
		mu.Lock()
		delete(live, uintptr(b.p))
		mu.Unlock()
	}
	size := func(r *rand.Rand) uintptr {
		switch x := r.IntN(1000); {
		case x < 900:
			return uintptr(1 + r.IntN(3072))
		case x < 995:
			return uintptr(3073 + r.IntN(200_000))
		default:
			return uintptr(zmm.MaxLargeSize + 1 + r.IntN(3<<20))
		}
	}
	worker := func(seed uint64, ops int) {
		r := rand.New(rand.NewPCG(seed, 1))
		var mine []sharedBlock
		for i := 0; i < ops && !failed.Load(); i++ {
			switch x := r.IntN(10); {
			case x < 4:
				b := sharedBlock{size: size(r), id: byte(nextID.Add(1))}
				b.p = a.Alloc(b.size)
				claim(b)
				b.fill()
				mine = append(mine, b)
			case x < 6 && len(mine) > 0: // hand one to whoever takes it
				j := r.IntN(len(mine))
				select {
				case handoff <- mine[j]:
					mine[j] = mine[len(mine)-1]
					mine = mine[:len(mine)-1]
				default:
				}
			case x < 8: // free one handed over (most likely another's)
				select {
				case b := <-handoff:
					release(b)
					a.Free(b.p)
				default:
				}
			case x < 9 && len(mine) > 0:
				j := r.IntN(len(mine))
				b := mine[j]
				release(b)
				n := size(r)
				q := a.Realloc(b.p, n)
				nb := sharedBlock{p: q, size: n, id: b.id}
				if !holds(q, min(b.size, n, 4096), b.id) {
					failed.Store(true)
					t.Errorf("Realloc lost the bytes of 0x%x", b.p)
				}
				claim(nb)
				nb.fill()
				mine[j] = nb
			case len(mine) > 0:
				j := r.IntN(len(mine))
				release(mine[j])
				a.Free(mine[j].p)
				mine[j] = mine[len(mine)-1]
				mine = mine[:len(mine)-1]
			}
		}
		for _, b := range mine {
			release(b)
			a.Free(b.p)
		}
	}

	const rounds = 6
	ops := 20_000
	if testing.Short() {
		ops = 4000
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// The disturbances: GOMAXPROCS up and down, GC and Check.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.GOMAXPROCS(1 + i%4)
			switch i % 8 {
			case 3:
				a.GC()
			case 7:
				if err := a.Check(); err != nil {
					failed.Store(true)
					t.Errorf("Check: %v", err)
				}
			}
		}
	}()
	// Goroutines come and go: each round starts new workers.
	for round := range rounds {
		var ws sync.WaitGroup
		for w := range 4 {
			ws.Add(1)
			go func() {
				defer ws.Done()
				worker(uint64(round*10+w), ops/rounds)
			}()
		}
		ws.Wait()
	}
	close(stop)
	wg.Wait()
	for {
		select {
		case b := <-handoff:
			release(b)
			a.Free(b.p)
			continue
		default:
		}
		break
	}
	require.False(t, failed.Load())
	require.NoError(t, a.Check())
	assert.Empty(t, live)
	assert.Zero(t, a.Usage(), "every block freed and collected")
	t.Logf("%+v", a.SharedStats())
	assert.Positive(t, a.GC()+1)
}

// ExampleShared hands blocks from one goroutine to another, which frees
// them: remote frees, collected by the heap that made the blocks.
func ExampleShared() {
	a, err := zmm.NewShared(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	if err != nil {
		panic(err)
	}
	defer a.Close()

	ch := make(chan unsafe.Pointer)
	done := make(chan struct{})
	go func() {
		for p := range ch {
			a.Free(p)
		}
		close(done)
	}()
	for i := range 1000 {
		p := a.Alloc(512)
		zmm.Bytes(p, 512)[0] = byte(i)
		ch <- p
	}
	close(ch)
	<-done
	if err := a.Check(); err != nil { // collects what is pending
		panic(err)
	}
	fmt.Println("in use:", a.Usage())
	// Output: in use: 0
}

func TestSharedHeapSnapshot(t *testing.T) {
	a := newShared(t, zmm.WithName("snap"))
	p := a.Alloc(100)
	s, err := a.HeapSnapshot(0)
	require.NoError(t, err)
	assert.Equal(t, "snap/0", s.Name)
	assert.Equal(t, uint64(a.BlockSize(p)), s.Stats.Usage)
	_, err = a.HeapSnapshot(1)
	assert.ErrorIs(t, err, zmm.ErrConfig)
	a.Free(p)
	a.Close()
	_, err = a.HeapSnapshot(0)
	assert.ErrorIs(t, err, zmm.ErrClosed)
}

// TestSharedStatsAndSnapshotCoverEveryHeap: Stats and Snapshot of the
// whole allocator add up its heaps, whichever goroutines made the blocks,
// and Reset empties every heap.
func TestSharedStatsAndSnapshotCoverEveryHeap(t *testing.T) {
	a := newShared(t, zmm.WithName("whole"))
	var mu sync.Mutex
	var live []unsafe.Pointer
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			var mine []unsafe.Pointer
			for i := range 400 {
				mine = append(mine, a.Alloc(uintptr(8+(w*400+i)%3000)))
				if i%100 == 0 {
					mine = append(mine, a.Alloc(5000), a.Alloc(3<<20))
				}
				runtime.Gosched()
			}
			mu.Lock()
			live = append(live, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	// Free a third of them from here: remote frees for most.
	for _, p := range live[:len(live)/3] {
		a.Free(p)
	}
	live = live[len(live)/3:]

	st := a.Stats() // collects every inbox first
	var want uintptr
	small := 0
	for _, p := range live {
		want += a.BlockSize(p)
		if a.BlockSize(p) <= 3072 {
			small++
		}
	}
	assert.Equal(t, want, st.Usage)
	assert.Equal(t, a.Usage(), st.Usage)
	assert.Equal(t, a.RealUsage(), st.RealUsage)
	used := 0
	for _, b := range st.Bins {
		used += b.Used
	}
	assert.Equal(t, small, used, "every live small block in its bin's count")

	snap := a.Snapshot()
	assert.Equal(t, "whole", snap.Name)
	assert.Equal(t, uint64(st.Usage), snap.Stats.Usage)
	assert.Equal(t, uint64(st.RealUsage), snap.Stats.RealUsage)
	assert.Len(t, snap.Chunks, st.Chunks)
	assert.Len(t, snap.Huge, st.HugeBlocks)
	var heapsUsage uint64
	for i := range a.SharedStats().Heaps {
		hs, err := a.HeapSnapshot(i)
		require.NoError(t, err)
		heapsUsage += hs.Stats.Usage
	}
	assert.Equal(t, snap.Stats.Usage, heapsUsage)
	assert.Nil(t, a.Leaks(), "a normal allocator keeps no sites")

	a.Reset()
	assert.Zero(t, a.Usage())
	require.NoError(t, a.Check())
	assert.Zero(t, a.Stats().HugeBlocks)
	a.Free(a.Alloc(100)) // serves the next request
	require.NoError(t, a.Check())
}

// TestSharedTypedHelpers: the typed helpers take a Shared as they take a
// Heap.
func TestSharedTypedHelpers(t *testing.T) {
	a := newShared(t)
	type point struct{ X, Y int64 }
	p := zmm.AllocOf[point](a)
	p.X = 3
	s := zmm.MakeSlice[point](a, 2, 4)
	s = append(s, *p)
	s = zmm.GrowSlice(a, s, 100)
	assert.Equal(t, int64(3), s[2].X)
	str := zmm.CopyString(a, "shared")
	b := zmm.CopyBytes(a, []byte("bytes"))
	assert.Equal(t, "shared", str)
	assert.Equal(t, "bytes", string(b))
	e := catch(t, func() { zmm.AllocOf[struct{ P *int }](a) })
	assert.ErrorIs(t, e, zmm.ErrGoPointer)
	zmm.FreeOf(a, p)
	zmm.FreeSlice(a, s)
	zmm.FreeString(a, str)
	a.FreeBytes(b)
	assert.Zero(t, a.Usage())
	assert.Zero(t, testing.AllocsPerRun(100, func() { zmm.FreeOf(a, zmm.AllocOf[point](a)) }))
}

// TestSharedLimit: the limit holds for the whole allocator, exactly, with
// Zend's message, and a failed call changes nothing.
func TestSharedLimit(t *testing.T) {
	_, err := zmm.NewShared(layout(zmm.WithLimit(1 << 20))...)
	assert.ErrorIs(t, err, zmm.ErrMemoryLimit)

	const limit = 24 << 20
	a := newShared(t, zmm.WithLimit(limit))
	assert.Equal(t, uintptr(limit), a.Limit())
	var blocks []unsafe.Pointer
	var e *zmm.Error
	for {
		var p unsafe.Pointer
		if err := zmm.Try(func() { p = a.Alloc(3 << 20) }); err != nil {
			require.ErrorAs(t, err, &e)
			break
		}
		blocks = append(blocks, p)
	}
	assert.ErrorIs(t, e, zmm.ErrMemoryLimit)
	assert.Equal(t, fmt.Sprintf("Allowed memory size of %d bytes exhausted (tried to allocate %d bytes)", limit, 3<<20), e.Msg)
	assert.LessOrEqual(t, a.RealUsage(), uintptr(limit))
	assert.LessOrEqual(t, a.RealPeakUsage(), uintptr(limit))
	assert.NotEmpty(t, blocks)

	// A realloc past the limit fails and keeps the block.
	fill(blocks[0], 4096, 3)
	re := catch(t, func() { a.Realloc(blocks[0], 20<<20) })
	assert.ErrorIs(t, re, zmm.ErrMemoryLimit)
	assert.True(t, holds(blocks[0], 4096, 3))

	// Lowering the limit below what is live is refused, and changes nothing.
	err = a.SetLimit(4 << 20)
	assert.ErrorIs(t, err, zmm.ErrMemoryLimit)
	assert.ErrorContains(t, err, "Failed to set memory limit to 4194304 bytes (Current memory usage is")
	assert.Equal(t, uintptr(limit), a.Limit())

	for _, p := range blocks {
		a.Free(p)
	}
	require.NoError(t, a.Check())
	// Now what is mapped is cache: a lower limit is accepted after the
	// collection.
	require.NoError(t, a.SetLimit(8<<20))
	assert.LessOrEqual(t, a.RealUsage(), uintptr(8<<20))
	a.Free(a.Alloc(3 << 20))
	assert.Zero(t, a.Usage())
}

// TestSharedLimitIsExactUnderConcurrency: goroutines on every P map at
// once; the budget never lets them pass the limit together.
func TestSharedLimitIsExactUnderConcurrency(t *testing.T) {
	const limit = 64 << 20
	a := newShared(t, zmm.WithLimit(limit))
	var wg sync.WaitGroup
	var refused atomic.Int64
	blocks := make([][]unsafe.Pointer, 4)
	for g := range blocks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				size := uintptr(64<<10 + (g*7+i)%5*(300<<10))
				if i%3 == 0 {
					size = 2<<20 + uintptr(i%4)<<20
				}
				var p unsafe.Pointer
				if err := zmm.Try(func() { p = a.Alloc(size) }); err != nil {
					if !errors.Is(err, zmm.ErrMemoryLimit) {
						t.Errorf("Alloc(%d): %v", size, err)
					}
					refused.Add(1)
					continue
				}
				blocks[g] = append(blocks[g], p)
			}
		}()
	}
	wg.Wait()
	assert.Positive(t, refused.Load(), "the limit was reached")
	assert.LessOrEqual(t, a.RealPeakUsage(), uintptr(limit), "never above the limit, even for a moment")
	for _, bs := range blocks {
		for _, p := range bs {
			a.Free(p)
		}
	}
	require.NoError(t, a.Check())
	assert.Zero(t, a.Usage())
}
