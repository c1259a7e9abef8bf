package zmm

import (
	"errors"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestShared(t testing.TB) *Shared {
	t.Helper()
	a, err := NewShared(WithDebug(false), WithAllocMode(ModeChunks))
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return a
}

// TestSharedRemoteFree drives the remote path itself, which a test of the
// API cannot choose: a block pushed onto its heap's inbox counts until its
// heap collects it, and every way of freeing it again is a double free.
func TestSharedRemoteFree(t *testing.T) {
	a := newTestShared(t)
	for _, size := range []uintptr{16, 100, 3072, 5000, MaxLargeSize, MaxLargeSize + 1, 3 << 20} {
		p := a.Alloc(size)
		addr := uintptr(p)
		class := a.BlockSize(p)
		o := a.ownerOf("Free", addr)
		s := o.s
		usage := a.Usage()
		collected := a.SharedStats().Collected

		a.pushRemote("Free", o, addr)
		require.Equal(t, uint64(1), inboxLen(s), "size %d", size)
		assert.Equal(t, usage, a.Usage(), "a pending block counts until collected")

		for name, f := range map[string]func(){
			"remote":    func() { a.pushRemote("Free", o, addr) },
			"Free":      func() { a.Free(p) },
			"Realloc":   func() { a.Realloc(p, size*2) },
			"BlockSize": func() { a.BlockSize(p) },
		} {
			err := Try(f)
			assert.ErrorIs(t, err, ErrDoubleFree, "size %d, %s: %v", size, name, err)
		}
		require.Equal(t, uint64(1), inboxLen(s), "the failed calls changed nothing")

		require.NoError(t, a.Check()) // collects
		assert.Zero(t, inboxLen(s))
		assert.Equal(t, usage-class, a.Usage(), "size %d", size)
		assert.Equal(t, collected+1, a.SharedStats().Collected)
		assert.ErrorIs(t, Try(func() { a.Free(p) }), ErrDoubleFree, "freed for good")
	}
	assert.Zero(t, a.Usage())
}

// TestSharedRemoteFreeOfUncarvedSlot: a slot that was never handed out
// passes the remote checks (they cannot see the owner's carving), so its
// heap finds it when collecting, and Check reports it.
func TestSharedRemoteFreeOfUncarvedSlot(t *testing.T) {
	a := newTestShared(t)
	p := a.Alloc(64)
	addr := uintptr(p)
	o := a.ownerOf("Free", addr)
	s := o.s
	bin := smallBin(64)
	require.NotZero(t, s.carveLeft[bin], "the run has uncarved slots")
	never := s.carveNext[bin] + s.carveLeft[bin] - 64
	a.pushRemote("Free", o, never)
	err := a.Check()
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrDoubleFree)
	assert.Contains(t, err.Error(), "never handed out")
	require.NoError(t, a.Check(), "reported once")
	a.Free(p) // remote or not: Check's stop left no heap in a slot
	require.NoError(t, a.Check())
	assert.Zero(t, a.Usage())
}

// TestSharedRacingFrees: goroutines free the same blocks at once, through
// the remote path; exactly one free of each block succeeds.
func TestSharedRacingFrees(t *testing.T) {
	a := newTestShared(t)
	const blocks, racers = 2000, 4
	sizes := []uintptr{16, 48, 512, 3000, 8192}
	addrs := make([]uintptr, blocks)
	for i := range addrs {
		addrs[i] = uintptr(a.Alloc(sizes[i%len(sizes)]))
	}
	var ok, doubles [racers]int
	var wg sync.WaitGroup
	for r := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, addr := range addrs {
				o := a.ownerOf("Free", addr)
				switch err := Try(func() { a.pushRemote("Free", o, addr) }); {
				case err == nil:
					ok[r]++
				case errors.Is(err, ErrDoubleFree):
					doubles[r]++
				default:
					t.Errorf("free of 0x%x: %v", addr, err)
				}
			}
		}()
	}
	wg.Wait()
	total, totalDoubles := 0, 0
	for r := range racers {
		total += ok[r]
		totalDoubles += doubles[r]
	}
	assert.Equal(t, blocks, total, "each block freed once")
	assert.Equal(t, blocks*(racers-1), totalDoubles)
	require.NoError(t, a.Check())
	assert.Zero(t, a.Usage())
	// Every block comes back once: a fresh allocation of them all gets
	// distinct addresses.
	seen := map[uintptr]bool{}
	for i := range addrs {
		q := uintptr(a.Alloc(sizes[i%len(sizes)]))
		require.False(t, seen[q], "0x%x handed out twice", q)
		seen[q] = true
	}
}

// TestSharedAdoptsStrandedHeaps: a heap left in the slot of a P that no
// longer exists (GOMAXPROCS went down) is adopted when a heap is needed,
// instead of a new one being made, and the blocks freed into it meanwhile
// are collected.
func TestSharedAdoptsStrandedHeaps(t *testing.T) {
	a := newTestShared(t)
	p := a.Alloc(64)
	class := a.BlockSize(p)
	hs := a.stop()
	require.Len(t, hs, 1)
	stranded := sharedSlots - 1 // no P has this id here
	a.slot(stranded).st = uintptr(unsafe.Pointer(hs[0].st))
	hs[0].st.held = 0
	a.resume(nil)

	a.Free(p) // its heap is in no slot of ours: a remote free
	require.Equal(t, uint64(1), inboxLen(hs[0].st))
	assert.Equal(t, class, a.Usage())

	q := a.Alloc(1 << 20) // a slow path with nothing idle: adopts
	assert.Equal(t, 1, a.SharedStats().Heaps, "no new heap was made")
	assert.Zero(t, a.slot(stranded).st)
	assert.Equal(t, a.BlockSize(q), a.Usage(), "the remote free was collected")
	a.Free(q)
	require.NoError(t, a.Check())
	assert.Zero(t, a.Usage())

	// The whole allocator's snapshot shows a stranded heap and its pending
	// remote frees (and collects them).
	p = a.Alloc(64)
	hs = a.stop()
	a.slot(stranded).st = uintptr(unsafe.Pointer(hs[0].st))
	hs[0].st.held = 0
	a.resume(nil)
	a.Free(p)
	snap := a.Snapshot()
	require.NotNil(t, snap.Shared)
	sh := snap.Shared
	assert.Equal(t, 1, sh.Stranded)
	assert.Equal(t, uint64(1), sh.Adopted)
	assert.Equal(t, uint64(1), sh.Pending)
	assert.Equal(t, uint64(2), sh.Collected)
	require.Len(t, sh.Heaps, 1)
	assert.Equal(t, SharedHeapSnapshot{Index: 0, P: stranded, RealUsage: snap.Stats.RealUsage, Chunks: 1, Pending: 1, Collected: 2}, sh.Heaps[0])
	assert.Zero(t, snap.Stats.Usage)
	assert.Equal(t, 1, a.Snapshot().Shared.Idle, "resumed heaps wait in idle")
}

// TestSharedRemoteChecksOfFreedBlocks: BlockSize and Realloc of a block
// whose heap the calling goroutine does not hold (the remote paths, taken
// here on purpose: the heaps are stopped into idle first) find a block
// waiting in an inbox and a block already free.
func TestSharedRemoteChecksOfFreedBlocks(t *testing.T) {
	a := newTestShared(t)
	for _, size := range []uintptr{16, 100, 5000, MaxLargeSize + 1} {
		p := a.Alloc(size)
		q := a.Alloc(size)
		addr := uintptr(p)
		o := a.ownerOf("Free", addr)
		a.resume(a.stop()) // every heap idle: no slot holds p's heap
		a.pushRemote("Free", o, addr)
		for name, f := range map[string]func(){
			"BlockSize": func() { a.BlockSize(p) },
			"Realloc":   func() { a.Realloc(p, size*2) },
		} {
			a.resume(a.stop())
			assert.ErrorIs(t, Try(f), ErrDoubleFree, "size %d, %s of a block in the inbox", size, name)
		}
		require.NoError(t, a.Check()) // collects p: now free in its heap
		if size <= 3072 {
			a.resume(a.stop())
			assert.ErrorIs(t, Try(func() { a.BlockSize(p) }), ErrDoubleFree, "size %d, BlockSize of a free slot", size)
		}
		a.Free(q)
	}
	require.NoError(t, a.Check())
	assert.Zero(t, a.Usage())
}

// TestSharedResetDropsInboxesAndRenewsKeys: Reset releases the blocks
// waiting in inboxes with the rest, and remote frees after it use the
// heaps' new keys (with the old ones, the collection would find no remote
// mark and Check would say so).
func TestSharedResetDropsInboxesAndRenewsKeys(t *testing.T) {
	a := newTestShared(t)
	for _, size := range []uintptr{16, 5000, 3 << 20} {
		p := a.Alloc(size)
		a.pushRemote("Free", a.ownerOf("Free", uintptr(p)), uintptr(p))
	}
	kept := a.Alloc(100)
	require.NotZero(t, a.Usage())
	a.Reset()
	assert.Zero(t, a.Usage())
	for _, h := range a.heaps.Load().hs {
		assert.Zero(t, inboxLen(h.st), "the inbox went with the request")
	}
	assert.ErrorIs(t, Try(func() { a.Free(kept) }), ErrDoubleFree, "a block of the last request is gone")
	require.NoError(t, a.Check())

	collected := a.SharedStats().Collected
	for _, size := range []uintptr{16, 5000, 3 << 20} {
		p := a.Alloc(size)
		a.pushRemote("Free", a.ownerOf("Free", uintptr(p)), uintptr(p))
	}
	require.NoError(t, a.Check(), "remote frees after Reset carry the new key")
	assert.Equal(t, collected+3, a.SharedStats().Collected)
	assert.Zero(t, a.Usage())
}
