package storage_test

import (
	"errors"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
	"github.com/gozmm/zmm/storage"
)

const slot uintptr = chunk.Size

// mapAligned maps size bytes aligned to 2 MiB for a test, unmapped when it
// ends.
func mapAligned(t *testing.T, size uintptr) uintptr {
	t.Helper()
	p, err := chunk.Map(size, chunk.Size)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, chunk.Unmap(p, size)) })
	return uintptr(p)
}

// newRegion makes a region of n 2 MiB slots over fresh memory.
func newRegion(t *testing.T, n uintptr, opts ...storage.RegionOption) *storage.Region {
	t.Helper()
	base := mapAligned(t, n*slot)
	r, err := storage.NewRegion(base, n*slot, opts...)
	require.NoError(t, err)
	require.Equal(t, base, r.Addr())
	require.Equal(t, n*slot, r.Size())
	return r
}

func bytesAt(addr, n uintptr) []byte { return unsafe.Slice((*byte)(unsafe.Add(nil, addr)), n) }

func mustMap(t *testing.T, r storage.Storage, size uintptr) uintptr {
	t.Helper()
	addr, err := r.Map(size)
	require.NoError(t, err)
	return addr
}

func TestRegionUsesTheAlignedPart(t *testing.T) {
	base := mapAligned(t, 4*slot)
	// From one OS page past a slot boundary to the end: slots 1..3.
	ps := chunk.OSPageSize()
	r, err := storage.NewRegion(base+ps, 4*slot-ps)
	require.NoError(t, err)
	assert.Equal(t, base+slot, r.Addr())
	assert.Equal(t, 3*slot, r.Size())
	assert.Equal(t, 3*slot, r.Free())
	assert.Contains(t, r.String(), "region 0x")
	require.NoError(t, r.Close())

	// Ending one page short of a boundary: slots 1 and 2.
	r, err = storage.NewRegion(base+ps, 4*slot-2*ps)
	require.NoError(t, err)
	closeRegion(t, r)
	assert.Equal(t, base+slot, r.Addr())
	assert.Equal(t, 2*slot, r.Size())
}

func TestRegionRejectsBadRanges(t *testing.T) {
	base := mapAligned(t, 2*slot)
	ps := chunk.OSPageSize()
	for _, c := range []struct {
		name       string
		addr, size uintptr
		msg        string
	}{
		{"nil address", 0, 4 * slot, "non-nil address"},
		{"empty", base, 0, "positive size"},
		{"smaller than a slot", base, slot - ps, "no 2 MiB-aligned 2 MiB slot"},
		{"unaligned, no whole slot inside", base + ps, 2*slot - 2*ps, "no 2 MiB-aligned 2 MiB slot"},
		{"beyond 2^48", 1<<48 - slot, 4 * slot, "beyond 2^48"},
		{"wraps", ^uintptr(0) - slot, 4 * slot, "beyond 2^48"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := storage.NewRegion(c.addr, c.size)
			assert.Nil(t, r)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
}

func TestRegionMapIsFirstFitAndAligned(t *testing.T) {
	r := newRegion(t, 4)
	ps := chunk.OSPageSize()
	a := mustMap(t, r, ps)      // slot 0
	b := mustMap(t, r, slot+ps) // slots 1-2
	c := mustMap(t, r, slot)    // slot 3
	for _, addr := range []uintptr{a, b, c} {
		assert.Zero(t, addr%chunk.Size, "%#x is not 2 MiB-aligned", addr)
	}
	assert.Equal(t, r.Addr(), a)
	assert.Equal(t, r.Addr()+slot, b)
	assert.Equal(t, r.Addr()+3*slot, c)
	assert.Zero(t, r.Free())
	assert.Equal(t, 3, r.Mappings())

	// The memory is usable.
	bytesAt(b, slot+ps)[slot+ps-1] = 7

	_, err := r.Map(ps)
	require.ErrorIs(t, err, storage.ErrFull)
	assert.Equal(t, r.String()+" is full", err.Error())

	// Freed slots are reused first fit; a run needs contiguous slots.
	require.NoError(t, r.Unmap(b, slot+ps))
	require.NoError(t, r.Unmap(a, ps))
	assert.Equal(t, 3*slot, r.Free())
	assert.Equal(t, a, mustMap(t, r, slot), "first fit takes slot 0")
	require.NoError(t, r.Unmap(a, slot))
	d := mustMap(t, r, 3*slot-ps)
	assert.Equal(t, a, d, "slots 0-2 are free in a row")
	require.NoError(t, r.Unmap(d, 3*slot-ps))

	e := mustMap(t, r, slot) // slot 0
	f := mustMap(t, r, slot) // slot 1
	require.NoError(t, r.Unmap(e, slot))
	_, err = r.Map(2 * slot) // slots 0 and 2 are free, not in a row
	require.ErrorIs(t, err, storage.ErrFull)
	assert.Contains(t, err.Error(), "need 2 free 2 MiB slots in a row; 2 of 4 slots are free")
	assert.Equal(t, r.Addr(), mustMap(t, r, slot), "one slot fits first in slot 0")
	assert.Equal(t, r.Addr()+2*slot, mustMap(t, r, slot))
	assert.Equal(t, r.Addr()+slot, f)

	_, err = r.Map(5 * slot)
	require.ErrorIs(t, err, storage.ErrFull)
	assert.Contains(t, err.Error(), "cannot hold")
}

func TestRegionRejectsBadSizes(t *testing.T) {
	r := newRegion(t, 2)
	for _, size := range []uintptr{0, chunk.OSPageSize() + 1, 100} {
		_, err := r.Map(size)
		require.Error(t, err, "Map(%d)", size)
		assert.NotErrorIs(t, err, storage.ErrFull)
		assert.Contains(t, err.Error(), "not a positive multiple of the OS page size")
	}
	assert.Equal(t, r.Size(), r.Free())
}

func TestRegionUnmapErrorsChangeNothing(t *testing.T) {
	r := newRegion(t, 4)
	a := mustMap(t, r, 2*slot)
	ps := chunk.OSPageSize()
	for _, c := range []struct {
		name       string
		addr, size uintptr
		msg        string
	}{
		{"below the region", r.Addr() - slot, slot, "not in the region"},
		{"after the region", r.Addr() + r.Size(), slot, "not in the region"},
		{"inside a mapping", a + ps, slot, "no mapping starts there"},
		{"second slot of a mapping", a + slot, slot, "no mapping starts there"},
		{"free slot", r.Addr() + 3*slot, slot, "no mapping starts there"},
		{"wrong size", a, slot, "the mapping there is 4194304 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := r.Unmap(c.addr, c.size)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
			assert.Contains(t, err.Error(), r.String())
			assert.Equal(t, 2*slot, r.Free())
			assert.Equal(t, 1, r.Mappings())
		})
	}

	require.NoError(t, r.Unmap(a, 2*slot))
	err := r.Unmap(a, 2*slot)
	require.Error(t, err, "double unmap")
	assert.Contains(t, err.Error(), "unmapped already")
	assert.Equal(t, r.Size(), r.Free())

	// A double unmap after the slots were handed out again does not take
	// them from their new owner.
	b := mustMap(t, r, slot)
	require.Equal(t, a, b)
	require.Error(t, r.Unmap(a, 2*slot))
	assert.Equal(t, 3*slot, r.Free())
	require.NoError(t, r.Unmap(b, slot))
}

func TestRegionTruncate(t *testing.T) {
	r := newRegion(t, 4)
	ps := chunk.OSPageSize()
	a := mustMap(t, r, 3*slot)
	require.NoError(t, r.Truncate(a, 3*slot, 3*slot-ps), "within its last slot")
	assert.Equal(t, slot, r.Free())
	require.NoError(t, r.Truncate(a, 3*slot-ps, slot+ps), "frees the third slot")
	assert.Equal(t, 2*slot, r.Free())
	assert.Equal(t, a+2*slot, mustMap(t, r, slot), "the freed slot is handed out")

	err := r.Truncate(a, slot+ps, 2*slot)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "that is growing")
	require.Error(t, r.Truncate(a, 3*slot, slot), "old size must be the current one")
	require.Error(t, r.Truncate(a, slot+ps, 0))
	require.Error(t, r.Truncate(a+slot, slot, ps), "not a mapping")

	require.Error(t, r.Unmap(a, 3*slot), "unmap with the size before truncating")
	require.NoError(t, r.Unmap(a, slot+ps))
}

func TestRegionExtend(t *testing.T) {
	r := newRegion(t, 4)
	ps := chunk.OSPageSize()
	a := mustMap(t, r, slot)
	b := mustMap(t, r, slot)
	require.NoError(t, r.Extend(a, slot, slot), "same size")

	err := r.Extend(a, slot, slot+ps)
	require.ErrorIs(t, err, storage.ErrFull)
	assert.Contains(t, err.Error(), "the slots after it are taken")

	require.NoError(t, r.Unmap(b, slot))
	require.NoError(t, r.Extend(a, slot, 2*slot+ps), "slots 1 and 2 are free")
	assert.Equal(t, slot, r.Free())
	bytesAt(a, 2*slot+ps)[2*slot+ps-1] = 1

	err = r.Extend(a, 2*slot+ps, 5*slot)
	require.ErrorIs(t, err, storage.ErrFull)
	assert.Contains(t, err.Error(), "the region ends first")
	require.Error(t, r.Extend(a, 2*slot+ps, slot), "shrinking")
	require.NoError(t, r.Extend(a, 2*slot+ps, 4*slot), "to the end of the region")
	assert.Zero(t, r.Free())
	require.NoError(t, r.Unmap(a, 4*slot))
	assert.Equal(t, r.Size(), r.Free())
}

func TestRegionReleasesOnlyWhenAsked(t *testing.T) {
	ps := chunk.OSPageSize()
	t.Run("plain region keeps the bytes", func(t *testing.T) {
		r := newRegion(t, 2)
		a := mustMap(t, r, slot)
		bytesAt(a, slot)[0] = 0x5a
		r.Release(a, slot)
		assert.Equal(t, byte(0x5a), bytesAt(a, slot)[0])
		require.NoError(t, r.Unmap(a, slot))
		assert.Equal(t, byte(0x5a), bytesAt(a, slot)[0], "unmap from a region leaves the memory alone")
	})
	t.Run("WithRelease(DontNeed)", func(t *testing.T) {
		var calls [][2]uintptr
		r := newRegion(t, 2, storage.WithRelease(func(addr, size uintptr) {
			calls = append(calls, [2]uintptr{addr, size})
			storage.DontNeed(addr, size)
		}))
		a := mustMap(t, r, 2*slot)
		b := bytesAt(a, 2*slot)
		for _, off := range []uintptr{0, ps, 2 * ps, slot, 2*slot - 1} {
			b[off] = 0x5a
		}
		r.Release(a+1, 2*ps) // whole OS pages only: page 1
		assert.Equal(t, [][2]uintptr{{a + ps, ps}}, calls)
		assert.Equal(t, byte(0x5a), b[0])
		assert.Zero(t, b[ps])
		assert.Equal(t, byte(0x5a), b[2*ps])

		require.NoError(t, r.Truncate(a, 2*slot, slot))
		assert.Equal(t, [2]uintptr{a + slot, slot}, calls[len(calls)-1])
		assert.Zero(t, b[2*slot-1], "a truncated tail is released")
		require.NoError(t, r.Unmap(a, slot))
		assert.Zero(t, b[0], "an unmapped mapping is released")

		r.Release(r.Addr()+r.Size(), ps) // outside: ignored
		assert.Len(t, calls, 3)
	})
}

func TestRegionConcurrentUse(t *testing.T) {
	r := newRegion(t, 16)
	ps := chunk.OSPageSize()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				size := uintptr(1+(g+i)%3) * slot / 2
				size = (size + ps - 1) &^ (ps - 1)
				addr, err := r.Map(size)
				if errors.Is(err, storage.ErrFull) {
					continue
				}
				if !assert.NoError(t, err) {
					return
				}
				bytesAt(addr, size)[0] = byte(g)
				if i%4 == 0 {
					if !assert.NoError(t, r.Extend(addr, size, size)) {
						return
					}
				}
				assert.Equal(t, byte(g), bytesAt(addr, size)[0], "another goroutine got the same slot")
				assert.NoError(t, r.Unmap(addr, size))
			}
		})
	}
	wg.Wait()
	assert.Equal(t, r.Size(), r.Free())
	assert.Zero(t, r.Mappings())
}

func TestOSStorage(t *testing.T) {
	var st storage.Storage = storage.OS
	assert.Equal(t, "os", st.String())
	size := uintptr(3 * slot)
	a := mustMap(t, st, size)
	assert.Zero(t, a%chunk.Size)
	b := bytesAt(a, size)
	b[size-1] = 1
	require.NoError(t, st.(storage.Truncater).Truncate(a, size, slot))
	if err := st.(storage.Extender).Extend(a, slot, 2*slot); err == nil {
		bytesAt(a, 2*slot)[2*slot-1] = 2
		size = 2 * slot
	} else {
		size = slot
	}
	b[0] = 9
	st.(storage.Releaser).Release(a, chunk.OSPageSize())
	assert.Zero(t, b[0], "released anonymous memory reads back as zeros")
	require.NoError(t, st.Unmap(a, size))
}

func TestRegionOverAHeapIsRefused(t *testing.T) {
	base := mapAligned(t, 2*slot)
	// Pretend a heap holds the second slot, as the frame table would say.
	frames.Set(base+slot, frames.Make(frames.Chunk, 1<<31, 0))
	t.Cleanup(func() { frames.Set(base+slot, 0) })
	_, err := storage.NewRegion(base, 2*slot)
	require.ErrorIs(t, err, storage.ErrOverlap)
	assert.Contains(t, err.Error(), "overlaps memory of a zmm heap")

	frames.Set(base+slot, frames.Make(frames.FreedChunk, 1<<31, 0))
	r, err := storage.NewRegion(base, 2*slot)
	require.NoError(t, err, "a tombstone of memory a heap gave back is no obstacle")
	closeRegion(t, r)
}
