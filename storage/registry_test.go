package storage_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/storage"
	"github.com/gozmm/zmm/zmm"
)

// closeRegion closes r when the test ends, before the memory under it is
// unmapped (cleanups run last first).
func closeRegion(t *testing.T, r *storage.Region) {
	t.Cleanup(func() { assert.NoError(t, r.Close()) })
}

// rangeName is how a region names the range it was given (sizes in whole
// MiB or KiB here).
func rangeName(addr, size uintptr) string {
	if size%(1<<20) == 0 {
		return fmt.Sprintf("region %#x+%d MiB", addr, size>>20)
	}
	return fmt.Sprintf("region %#x+%d KiB", addr, size>>10)
}

func TestRegionOverAnOpenRegionIsRefused(t *testing.T) {
	base := mapAligned(t, 8*slot)
	first, err := storage.NewRegion(base+2*slot, 3*slot) // slots 2..4
	require.NoError(t, err)
	closeRegion(t, first)
	ps := chunk.OSPageSize()

	for _, c := range []struct {
		name       string
		addr, size uintptr
		shared     string // the slots both cover, as the message writes them
	}{
		{"same range", base + 2*slot, 3 * slot, fmt.Sprintf("%#x..%#x", base+2*slot, base+5*slot)},
		{"over its head", base, 3 * slot, fmt.Sprintf("%#x..%#x", base+2*slot, base+3*slot)},
		{"over its tail", base + 4*slot, 3 * slot, fmt.Sprintf("%#x..%#x", base+4*slot, base+5*slot)},
		{"inside it", base + 3*slot, slot, fmt.Sprintf("%#x..%#x", base+3*slot, base+4*slot)},
		{"around it", base, 8 * slot, fmt.Sprintf("%#x..%#x", base+2*slot, base+5*slot)},
		{"unaligned, one slot in common", base + ps, 3*slot - ps, fmt.Sprintf("%#x..%#x", base+2*slot, base+3*slot)},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := storage.NewRegion(c.addr, c.size)
			assert.Nil(t, r)
			require.ErrorIs(t, err, storage.ErrOverlap)
			assert.NotErrorIs(t, err, storage.ErrFull)
			assert.Equal(t, "storage: "+rangeName(c.addr, c.size)+" overlaps "+first.String()+" at "+c.shared+
				", which is still open (no two regions may cover the same memory: close that one first)", err.Error())
		})
	}
	runtime.KeepAlive(first)

	t.Run("adjacent ranges", func(t *testing.T) {
		below, err := storage.NewRegion(base, 2*slot)
		require.NoError(t, err, "slots 0..1 end where the open region starts")
		closeRegion(t, below)
		// Its unaligned tail reaches into slot 5, which it never hands out.
		above, err := storage.NewRegion(base+5*slot, 3*slot-ps)
		require.NoError(t, err, "slots 5..6 start where the open region ends")
		closeRegion(t, above)
		assert.Equal(t, 2*slot, above.Size())
		tail, err := storage.NewRegion(base+7*slot, slot)
		require.NoError(t, err, "slot 7: the unaligned tail of the region before does not count")
		closeRegion(t, tail)
	})
}

func TestRegionCloseFreesItsRange(t *testing.T) {
	base := mapAligned(t, 4*slot)
	r, err := storage.NewRegion(base, 4*slot)
	require.NoError(t, err)
	a := mustMap(t, r, slot)

	err = r.Close()
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.Equal(t, "storage: "+r.String()+": cannot close: 1 mapping(s) of it are still in use (close the heaps over it first)", err.Error())
	assert.Equal(t, a+slot, mustMap(t, r, slot), "a refused Close changes nothing")
	_, err = storage.NewRegion(base, 4*slot)
	require.ErrorIs(t, err, storage.ErrOverlap, "still open after a refused Close")

	require.NoError(t, r.Unmap(a, slot))
	require.NoError(t, r.Unmap(a+slot, slot))
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "closing twice does nothing")
	_, err = r.Map(slot)
	require.ErrorIs(t, err, storage.ErrClosed)
	assert.Equal(t, "storage: "+r.String()+" is closed", err.Error())

	again, err := storage.NewRegion(base, 4*slot)
	require.NoError(t, err, "a closed region's memory may be a new region")
	closeRegion(t, again)
	b := mustMap(t, again, slot)
	assert.Equal(t, base, b)
	require.NoError(t, again.Unmap(b, slot))
	runtime.KeepAlive(r)
}

func TestRegionCloseIsRefusedWhileAHeapIsOpen(t *testing.T) {
	base := mapAligned(t, 4*slot)
	r, err := storage.NewRegion(base, 4*slot)
	require.NoError(t, err)
	h, err := zmm.New(zmm.WithStorage(r), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithDebug(false), zmm.WithLeakReport(nil))
	require.NoError(t, err)
	p := h.Alloc(64)
	copy(zmm.Bytes(p, 5), "first")

	err = r.Close()
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.Contains(t, err.Error(), "1 mapping(s) of it are still in use (close the heaps over it first)", "the heap's main chunk")

	// A second region over the same memory would give a second heap the
	// first heap's main chunk.
	second, err := storage.NewRegion(base, 4*slot)
	assert.Nil(t, second)
	require.ErrorIs(t, err, storage.ErrOverlap)
	assert.Contains(t, err.Error(), "overlaps "+r.String())
	assert.Equal(t, "first", string(zmm.Bytes(p, 5)))

	h.Close()
	require.NoError(t, r.Close())
	second, err = storage.NewRegion(base, 4*slot)
	require.NoError(t, err)
	closeRegion(t, second)
}

func TestRegionDroppedWithoutCloseStopsCounting(t *testing.T) {
	base := mapAligned(t, 2*slot)
	func() {
		r, err := storage.NewRegion(base, 2*slot)
		require.NoError(t, err)
		mustMap(t, r, slot)
		// r is dropped here, open and with a mapping, as a program that
		// forgot Close would.
	}()
	r, err := storage.NewRegion(base, 2*slot)
	require.NoError(t, err, "no heap can use a region nothing reaches: NewRegion collects before refusing")
	closeRegion(t, r)
}

func TestRegionOverSharedMemoryIsRefused(t *testing.T) {
	s := newMemfd(t, 4*slot)
	r, err := storage.NewRegion(s.Addr()+slot, 2*slot)
	assert.Nil(t, r)
	require.ErrorIs(t, err, storage.ErrOverlap)
	assert.Contains(t, err.Error(), "overlaps "+s.String())
	assert.Contains(t, err.Error(), "shared memfd:zmm-test 0x")

	// A Shared's Close refuses like a Region's, and keeps it registered.
	a := mustMap(t, s, slot)
	err = s.Close()
	require.ErrorIs(t, err, storage.ErrInUse)
	_, err = storage.NewRegion(s.Addr(), slot)
	require.ErrorIs(t, err, storage.ErrOverlap)
	require.NoError(t, s.Unmap(a, slot))
}

func TestSharedCloseFreesItsRange(t *testing.T) {
	s, err := storage.NewMemfd("zmm-test", 2*slot)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	// The range is unmapped now; NewRegion does not touch memory, so this
	// only asks the registry whether the Shared left it.
	r, err := storage.NewRegion(s.Addr(), s.Size())
	require.NoError(t, err)
	require.NoError(t, r.Close())
	runtime.KeepAlive(s) // open or not, it must not be collected before the check
}

func TestRegionOverGoMemoryIsRefused(t *testing.T) {
	mem := make([]byte, 8<<20)
	addr := uintptr(unsafe.Pointer(&mem[0]))
	r, err := storage.NewRegion(addr, uintptr(len(mem)))
	assert.Nil(t, r)
	require.ErrorIs(t, err, storage.ErrGoMemory)
	assert.Regexp(t, `^storage: region 0x[0-9a-f]+\+8 MiB is Go heap memory at 0x[0-9a-f]+: `+
		`the garbage collector may free or reuse it under the heaps and cannot see their blocks; `+
		`map the memory instead \(unix\.Mmap, chunk\.Map\)$`, err.Error())
	runtime.KeepAlive(mem)

}

// TestRegionRegistryConcurrentUse opens and closes regions over random
// slot ranges of one mapping from several goroutines, each holding one
// region open while it opens the next: a region that opens must cover no
// slot of another open one, and a refusal must be an overlap.
func TestRegionRegistryConcurrentUse(t *testing.T) {
	const slots = 16
	base := mapAligned(t, slots*slot)
	var owner [slots]atomic.Int32
	var opened, refused atomic.Int32
	type held struct {
		r           *storage.Region
		first, last uintptr
	}
	release := func(h held) {
		for i := h.first; i <= h.last; i++ {
			owner[i].Store(0)
		}
		assert.NoError(t, h.r.Close())
	}
	var wg sync.WaitGroup
	for g := int32(1); g <= 4; g++ {
		wg.Go(func() {
			var cur held
			seed := uint32(g) * 2654435761
			for range 100 {
				seed = seed*1664525 + 1013904223
				first := uintptr(seed>>8) % slots
				n := 1 + uintptr(seed>>16)%min(slots-first, 4)
				r, err := storage.NewRegion(base+first*slot, n*slot)
				if err != nil {
					assert.ErrorIs(t, err, storage.ErrOverlap)
					refused.Add(1)
					continue
				}
				opened.Add(1)
				for i := first; i < first+n; i++ {
					assert.True(t, owner[i].CompareAndSwap(0, g), "slot %d is in two open regions", i)
				}
				if cur.r != nil {
					release(cur)
				}
				cur = held{r, first, first + n - 1}
			}
			if cur.r != nil {
				release(cur)
			}
		})
	}
	wg.Wait()
	assert.Positive(t, opened.Load())
	assert.Positive(t, refused.Load())
	t.Logf("%d regions opened, %d refused", opened.Load(), refused.Load())
	r, err := storage.NewRegion(base, slots*slot)
	require.NoError(t, err, "every region was closed")
	closeRegion(t, r)
}
