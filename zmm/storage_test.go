package zmm_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/childtest"
	"github.com/gozmm/zmm/storage"
	"github.com/gozmm/zmm/zmm"
)

const mib uintptr = 1 << 20

// newRegion makes a region of n 2 MiB slots over memory mapped for the
// test. The memory is unmapped when the test ends, after the heaps made
// over it later (cleanups run last first).
func newRegion(t *testing.T, n uintptr, opts ...storage.RegionOption) *storage.Region {
	t.Helper()
	size := n * chunk.Size
	p, err := chunk.Map(size, chunk.Size)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, chunk.Unmap(p, size)) })
	r, err := storage.NewRegion(uintptr(p), size, opts...)
	require.NoError(t, err)
	return r
}

func inRegion(r *storage.Region, p unsafe.Pointer, n uintptr) bool {
	a := uintptr(p)
	return a >= r.Addr() && a+n <= r.Addr()+r.Size()
}

// fillUntilOOM allocates blocks of size until the heap runs out of memory
// and returns them with the error.
func fillUntilOOM(t *testing.T, h *zmm.Heap, size uintptr) ([]unsafe.Pointer, *zmm.Error) {
	t.Helper()
	var blocks []unsafe.Pointer
	for i := 0; i < 1<<20; i++ {
		var p unsafe.Pointer
		if err := zmm.Try(func() { p = h.Alloc(size) }); err != nil {
			var ze *zmm.Error
			require.ErrorAs(t, err, &ze)
			return blocks, ze
		}
		blocks = append(blocks, p)
	}
	require.FailNow(t, "the heap never ran out of memory", "%d blocks of %d bytes", len(blocks), size)
	return nil, nil
}

func TestRegionHeapNeverGrowsPastTheRegion(t *testing.T) {
	r := newRegion(t, 4) // 8 MiB: the main chunk and 3 slots
	h := newHeap(t, layout(zmm.WithStorage(r))...)
	assert.Equal(t, storage.Storage(r), h.Storage())
	assert.Equal(t, r.Size()-chunk.Size, r.Free(), "the main chunk is in the region")

	sizes := []uintptr{3 * mib, 100 << 10, 1000} // huge, large, small
	round := func() []int {
		var counts []int
		var all []unsafe.Pointer
		for _, size := range sizes {
			blocks, err := fillUntilOOM(t, h, size)
			require.ErrorIs(t, err, zmm.ErrOutOfMemory)
			assert.Regexp(t, `^Out of memory \(allocated \d+ bytes\) \(tried to allocate \d+ bytes\): `, err.Msg)
			assert.True(t, strings.HasSuffix(err.Msg, ": "+r.String()+" is full") ||
				strings.Contains(err.Msg, ": "+r.String()+" is full: "), "the message names the region: %s", err.Msg)
			for _, p := range blocks {
				require.True(t, inRegion(r, p, size), "block %p of %d bytes is outside %v", p, size, r)
			}
			counts = append(counts, len(blocks))
			all = append(all, blocks...)
		}
		assert.LessOrEqual(t, h.RealUsage(), r.Size())
		assert.LessOrEqual(t, h.RealPeakUsage(), r.Size())
		assert.Zero(t, r.Free())
		for _, p := range all {
			h.Free(p)
		}
		assert.Zero(t, h.Usage())
		return counts
	}
	first := round()
	t.Logf("blocks that fit: %d huge, %d large, %d small", first[0], first[1], first[2])
	assert.Equal(t, 1, first[0], "one 3 MiB block fits beside the main chunk")
	assert.Greater(t, first[1], 20, "large runs fill the main chunk and the last slot")
	assert.Positive(t, first[2], "small blocks fill what the large runs left")
	assert.Equal(t, first, round(), "freed memory is reused: the same blocks fit again")

	// Reset keeps the main chunk; what it caches is given back when a
	// mapping needs the room.
	h.Alloc(3 * mib)
	h.Alloc(100)
	h.Reset()
	p := h.Alloc(r.Size() - chunk.Size)
	assert.Equal(t, r.Addr()+chunk.Size, uintptr(p), "one huge block over every slot but the main chunk's")
	h.Free(p)

	h.Close()
	assert.Equal(t, r.Size(), r.Free(), "Close gives every slot back")
	assert.Zero(t, r.Mappings())

	h2 := newHeap(t, layout(zmm.WithStorage(r))...)
	p = h2.Alloc(r.Size() - chunk.Size)
	assert.True(t, inRegion(r, p, r.Size()-chunk.Size))
	fill(p, r.Size()-chunk.Size, 3)
	assert.True(t, holds(p, r.Size()-chunk.Size, 3))
	h2.Free(p)
}

func TestRegionHeapHugeRealloc(t *testing.T) {
	r := newRegion(t, 12) // main chunk in slot 0, then 11 free slots
	h := newHeap(t, layout(zmm.WithStorage(r))...)
	base := r.Addr()

	a := h.Alloc(3 * mib) // slots 1-2
	require.Equal(t, base+chunk.Size, uintptr(a))
	fill(a, 3*mib, 1)

	// Grows in place: slot 3 is free.
	a2 := h.Realloc(a, 5*mib)
	assert.Equal(t, a, a2, "extended in place")
	assert.True(t, holds(a2, 3*mib, 1))
	assert.Equal(t, uintptr(5*mib), h.BlockSize(a2))
	assert.Equal(t, chunk.Size+5*mib, h.RealUsage())
	fill(a2, 5*mib, 2)

	b := h.Alloc(3 * mib) // slots 4-5: in the way of a2's growth
	require.Equal(t, base+4*chunk.Size, uintptr(b))

	// Cannot grow in place: copied to slots 6-9.
	a3 := h.Realloc(a2, 7*mib)
	assert.Equal(t, base+6*chunk.Size, uintptr(a3), "moved, first fit")
	assert.True(t, holds(a3, 5*mib, 2), "contents copied")
	assert.Equal(t, uintptr(7*mib), h.BlockSize(a3))
	e := catch(t, func() { h.Free(a2) })
	assert.ErrorIs(t, e, zmm.ErrDoubleFree, "the old block is gone: %v", e)

	// Shrinks in place, and the slots it leaves are free.
	real, free := h.RealUsage(), r.Free()
	a4 := h.Realloc(a3, hugeSize(5*mib/2))
	assert.Equal(t, a3, a4, "truncated in place")
	assert.True(t, holds(a4, hugeSize(5*mib/2), 2))
	assert.Equal(t, real-(7*mib-hugeSize(5*mib/2)), h.RealUsage())
	assert.Equal(t, free+2*chunk.Size, r.Free(), "slots 8 and 9 are free again")

	// The old 5 MiB mapping of a2 is in the huge cache: a 3 MiB block
	// takes it, cut down in place (its slack is more than a quarter).
	c := h.Alloc(3 * mib)
	assert.Equal(t, base+chunk.Size, uintptr(c))
	assert.Equal(t, free+3*chunk.Size, r.Free(), "and slot 3 is free too")

	for _, p := range []unsafe.Pointer{a4, b, c} {
		assert.True(t, inRegion(r, p, h.BlockSize(p)))
		h.Free(p)
	}
}

// minimalStorage can only map and unmap: no truncate, extend or release.
type minimalStorage struct {
	r    *storage.Region
	fail bool
}

func (m *minimalStorage) Map(size uintptr) (uintptr, error) {
	if m.fail {
		return 0, errors.New("refused")
	}
	return m.r.Map(size)
}
func (m *minimalStorage) Unmap(addr, size uintptr) error { return m.r.Unmap(addr, size) }
func (m *minimalStorage) String() string                 { return "minimal" }

func TestStorageWithoutResizeCopiesHugeBlocks(t *testing.T) {
	m := &minimalStorage{r: newRegion(t, 8)}
	h := newHeap(t, layout(zmm.WithStorage(m))...) // a debug heap unmaps a freed huge block at once
	a := h.Alloc(3 * mib)
	fill(a, 3*mib, 4)
	b := h.Realloc(a, 5*mib)
	assert.NotEqual(t, a, b, "no Extend: copied")
	assert.True(t, holds(b, 3*mib, 4))
	c := h.Realloc(b, 3*mib)
	assert.NotEqual(t, b, c, "no Truncate: copied")
	assert.True(t, holds(c, 3*mib, 4))
	h.Free(c)
	assert.Positive(t, h.GC(), "GC works without Release")

	m.fail = true
	e := catch(t, func() { h.Alloc(3 * mib) })
	assert.ErrorIs(t, e, zmm.ErrOutOfMemory)
	assert.True(t, strings.HasSuffix(e.Msg, ": minimal: refused"), "the message names the storage: %s", e.Msg)

	_, err := zmm.New(zmm.WithStorage(m))
	require.Error(t, err)
	assert.ErrorIs(t, err, zmm.ErrOutOfMemory)
	assert.Equal(t, "Can't initialize heap: minimal: refused", err.Error())
}

func TestNewFailsWhenTheRegionIsFull(t *testing.T) {
	r := newRegion(t, 1)
	newHeap(t, zmm.WithStorage(r))
	_, err := zmm.New(zmm.WithStorage(r))
	require.ErrorIs(t, err, zmm.ErrOutOfMemory)
	assert.Equal(t, "Can't initialize heap: "+r.String()+" is full", err.Error())
}

func TestStorageNeedsChunksMode(t *testing.T) {
	r := newRegion(t, 2)
	for _, m := range []zmm.AllocMode{zmm.ModeSystem, zmm.ModeGuard} {
		h, err := zmm.New(zmm.WithStorage(r), zmm.WithAllocMode(m))
		assert.Nil(t, h)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "needs chunks mode, not "+m.String()+" mode")
		assert.Contains(t, err.Error(), r.String())
	}
	assert.Equal(t, r.Size(), r.Free(), "nothing was mapped")

	// The OS storage is the default, which every mode uses.
	h := newHeap(t, zmm.WithStorage(storage.OS), zmm.WithAllocMode(zmm.ModeGuard), zmm.WithLeakReport(nil))
	assert.Equal(t, zmm.ModeGuard, h.Mode())
	assert.Equal(t, storage.Storage(storage.OS), h.Storage())
}

func TestDefaultHeapUsesTheOS(t *testing.T) {
	h := newHeap(t)
	assert.Equal(t, storage.Storage(storage.OS), h.Storage())
	assert.Empty(t, h.Snapshot().Storage)

	r := newRegion(t, 2)
	h = newHeap(t, zmm.WithStorage(r))
	assert.Equal(t, r.String(), h.Snapshot().Storage)
}

func TestDebugHeapOverRegion(t *testing.T) {
	r := newRegion(t, 4)
	var report bytes.Buffer
	h, err := zmm.New(zmm.WithStorage(r), zmm.WithDebug(true), zmm.WithLeakReport(&report), zmm.WithName("region-req"))
	require.NoError(t, err)
	small := h.Alloc(100)
	large := h.Alloc(10000)
	huge := h.Alloc(3 * mib)
	for _, p := range []unsafe.Pointer{small, large, huge} {
		assert.True(t, inRegion(r, p, h.BlockSize(p)))
	}
	h.Free(large)
	leaks := h.Leaks()
	require.Len(t, leaks, 2)
	assert.ElementsMatch(t, []uintptr{uintptr(small), uintptr(huge)}, []uintptr{leaks[0].Addr, leaks[1].Addr})

	zmm.Bytes(small, 101)[100] = 'x' // one byte past the end
	e := catch(t, func() { h.Free(small) })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	zmm.Bytes(small, 101)[100] = 0

	h.Close()
	out := report.String()
	assert.Contains(t, out, "script=region-req")
	assert.Contains(t, out, fmt.Sprintf("Freeing 0x%016x (100 bytes)", uintptr(small)))
	assert.Contains(t, out, fmt.Sprintf("Freeing 0x%016x (%d bytes)", uintptr(huge), 3*mib))
	assert.Contains(t, out, "=== Total 2 memory leaks detected ===")
	assert.Equal(t, r.Size(), r.Free())
}

func TestGCReleasesThroughTheStorage(t *testing.T) {
	var mu sync.Mutex
	var released uintptr
	var r *storage.Region
	r = newRegion(t, 2, storage.WithRelease(func(addr, size uintptr) {
		mu.Lock()
		defer mu.Unlock()
		if addr < r.Addr() || addr+size > r.Addr()+r.Size() {
			panic("release outside the region")
		}
		released += size
		storage.DontNeed(addr, size)
	}))
	h := newHeap(t, layout(zmm.WithStorage(r))...)
	p := h.Alloc(200 << 10)
	fill(p, 200<<10, 5)
	h.Free(p)
	h.GC()
	mu.Lock()
	defer mu.Unlock()
	assert.GreaterOrEqual(t, released, uintptr(200<<10)&^(chunk.OSPageSize()-1)-chunk.OSPageSize(), "the free pages were released")
}

// Heaps over one region in goroutines of their own: each keeps to its
// slots, and a huge block shrinking in one heap (its tail slots go back to
// the region, where another heap may take them at once) never disturbs the
// frames another heap records there.
func TestHeapsShareARegion(t *testing.T) {
	r := newRegion(t, 16)
	var heaps []*zmm.Heap
	for range 3 { // made first: each takes its main chunk
		h, err := zmm.New(layout(zmm.WithStorage(r))...)
		require.NoError(t, err)
		heaps = append(heaps, h)
	}
	var wg sync.WaitGroup
	for g, h := range heaps {
		wg.Go(func() {
			defer h.Close()
			var live []unsafe.Pointer
			for i := range 400 {
				size := []uintptr{64, 5000, 3 * mib, 6 * mib}[i%4]
				var p unsafe.Pointer
				if err := zmm.Try(func() { p = h.Alloc(size) }); err != nil {
					assert.ErrorIs(t, err, zmm.ErrOutOfMemory)
					continue
				}
				if size == 6*mib {
					p = h.Realloc(p, hugeSize(5*mib/2)) // truncated in place
					size = hugeSize(5 * mib / 2)
				}
				if !assert.True(t, inRegion(r, p, size)) {
					return
				}
				fill(p, min(size, 4096), byte(g))
				live = append(live, p)
				if len(live) > 4 {
					q := live[0]
					live = live[1:]
					assert.NoError(t, zmm.Try(func() {
						assert.True(t, holds(q, min(h.BlockSize(q), 4096), byte(g)), "another heap wrote into this heap's block")
						h.Free(q)
					}))
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, r.Size(), r.Free())
}

// hookStorage runs a function right after a successful Truncate, while
// the heap that truncated is still inside Realloc or Alloc.
type hookStorage struct {
	*storage.Region
	afterTruncate func()
	failTruncate  bool
}

func (s *hookStorage) Truncate(addr, oldSize, newSize uintptr) error {
	if s.failTruncate {
		return errors.New("no truncate today")
	}
	err := s.Region.Truncate(addr, oldSize, newSize)
	if f := s.afterTruncate; err == nil && f != nil {
		s.afterTruncate = nil
		f()
	}
	return err
}

// Slots a heap gives back by shrinking a huge block may be taken by
// another heap at once; the first heap must be done with their frames by
// then, or it would erase the other heap's and the other heap's blocks
// would turn into invalid pointers.
func TestShrunkHugeBlockSlotsGoToAnotherHeapAtOnce(t *testing.T) {
	r := newRegion(t, 10)
	hs := &hookStorage{Region: r}
	a := newHeap(t, layout(zmm.WithStorage(hs))...) // slot 0
	b := newHeap(t, layout(zmm.WithStorage(r))...)  // slot 1
	// Both heaps map their huge tables now, so that the hook below maps
	// nothing from the OS while a is inside Realloc.
	for _, h := range []*zmm.Heap{a, b} {
		h.Free(h.Alloc(3 * mib))
		h.GC()
	}
	var q unsafe.Pointer
	takeTail := func() { q = b.Alloc(3 * mib) }

	t.Run("Realloc", func(t *testing.T) {
		p := a.Alloc(6 * mib) // slots 2-4
		hs.afterTruncate = takeTail
		p2 := a.Realloc(p, hugeSize(5*mib/2))
		require.Equal(t, p, p2)
		require.NotNil(t, q, "the hook ran")
		assert.Equal(t, uintptr(p)+2*chunk.Size, uintptr(q), "b got the slot a gave back")
		assert.NoError(t, zmm.Try(func() {
			assert.Equal(t, 3*mib, b.BlockSize(q))
			b.Free(q)
		}))
		a.Free(p2)
	})
	t.Run("from the huge cache", func(t *testing.T) {
		a.GC()
		b.GC()
		q = nil
		a.Free(a.Alloc(6 * mib)) // cached
		hs.afterTruncate = takeTail
		p := a.Alloc(hugeSize(5 * mib / 2)) // the cached mapping, cut down
		require.NotNil(t, q, "the hook ran")
		assert.Equal(t, uintptr(p)+2*chunk.Size, uintptr(q))
		assert.NoError(t, zmm.Try(func() {
			assert.Equal(t, 3*mib, b.BlockSize(q))
			b.Free(q)
		}))
		a.Free(p)
	})
	t.Run("a failed truncate leaves the block whole", func(t *testing.T) {
		a.GC()
		p := a.Alloc(6 * mib)
		fill(p, 6*mib, 8)
		hs.failTruncate = true
		defer func() { hs.failTruncate = false }()
		p2 := a.Realloc(p, hugeSize(5*mib/2))
		assert.NotEqual(t, p, p2, "copied instead")
		assert.True(t, holds(p2, hugeSize(5*mib/2), 8))
		a.Free(p2)
	})
}

// The child process of TestSharedHeapAcrossProcesses. ZMM_SHARED_HEAP_CHILD
// holds where to attach ("fd" for descriptor 3, or a path) and the offsets
// of the message and of the reply block.
const sharedChildEnv = "ZMM_SHARED_HEAP_CHILD"

func TestSharedChild(t *testing.T) {
	spec := os.Getenv(sharedChildEnv)
	if spec == "" {
		t.Skip("run by TestSharedHeapAcrossProcesses in a subprocess")
	}
	var where string
	var msgOff, msgLen, replyOff, replyLen uintptr
	_, err := fmt.Sscanf(spec, "%s %d %d %d %d", &where, &msgOff, &msgLen, &replyOff, &replyLen)
	require.NoError(t, err)
	var s *storage.Shared
	if where == "fd" {
		s, err = storage.AttachFile(os.NewFile(3, "memfd"))
	} else {
		s, err = storage.AttachShared(where)
	}
	require.NoError(t, err)
	defer s.Close()
	msg := s.Bytes(msgOff, msgLen)
	copy(s.Bytes(replyOff, replyLen), "reply to: "+strings.ToUpper(string(msg)))
}

// runSharedChild runs TestSharedChild in a child process and checks that
// it passed.
func runSharedChild(t *testing.T, env string, files []*os.File) {
	t.Helper()
	out, err := childtest.Run(t, "TestSharedChild", []string{sharedChildEnv + "=" + env}, files)
	require.NoError(t, err, "child output:\n%s", out)
	require.Contains(t, string(out), "--- PASS: TestSharedChild", "child output:\n%s", out)
}

func TestSharedHeapAcrossProcesses(t *testing.T) {
	for _, kind := range []string{"memfd", "dev-shm"} {
		t.Run(kind, func(t *testing.T) {
			var s *storage.Shared
			var err error
			where, files := "fd", []*os.File(nil)
			if kind == "memfd" {
				s, err = storage.NewMemfd("zmm-heap-test", 8*mib)
				require.NoError(t, err)
				files = []*os.File{s.File()}
			} else {
				if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
					t.Skip("no /dev/shm on this system")
				}
				where = filepath.Join("/dev/shm", fmt.Sprintf("zmm-heap-test-%d", os.Getpid()))
				_ = os.Remove(where)
				t.Cleanup(func() { _ = os.Remove(where) })
				s, err = storage.CreateShared(where, 8*mib)
				require.NoError(t, err)
			}
			t.Cleanup(func() { assert.NoError(t, s.Close()) }) // after the heap's Close
			h := newHeap(t, zmm.WithStorage(s))
			assert.Contains(t, h.Storage().String(), "shared ")

			msg := "hello from the heap"
			p := h.Alloc(uintptr(len(msg)))
			copy(zmm.Bytes(p, len(msg)), msg)
			const replyLen = 5000 // a large block
			reply := h.Calloc(1, replyLen)
			big := h.Alloc(3 * mib) // a huge block in the same memory
			fill(big, 3*mib, 9)

			runSharedChild(t, fmt.Sprintf("%s %d %d %d %d", where, s.Offset(uintptr(p)), len(msg), s.Offset(uintptr(reply)), replyLen), files)

			got := zmm.Bytes(reply, replyLen)
			got = got[:bytes.IndexByte(got, 0)]
			assert.Equal(t, "reply to: HELLO FROM THE HEAP", string(got))
			assert.True(t, holds(big, 3*mib, 9))
			for _, q := range []unsafe.Pointer{p, reply, big} {
				h.Free(q)
			}
		})
	}
}
