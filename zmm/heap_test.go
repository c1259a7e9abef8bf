package zmm_test

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/zmm"
)

// layout returns opts plus the options of a heap in chunk mode with debug
// off, for the tests of exact block sizes, addresses, usage and limits,
// which ZMM_DEBUG and ZMM_ALLOC change (a debug block is the size asked for
// plus its record, and it moves on every Realloc). The rest of the suite
// runs in whatever mode the environment asks for; CI runs it with
// ZMM_DEBUG=1 as well.
func layout(opts ...zmm.Option) []zmm.Option {
	return append([]zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks)}, opts...)
}

// newHeap makes a heap closed at the end of the test. Its leak report, when
// ZMM_DEBUG=1 makes it a debug heap, is silenced (tests leave blocks to
// Close); a test's own WithLeakReport comes later and wins.
func newHeap(t testing.TB, opts ...zmm.Option) *zmm.Heap {
	t.Helper()
	h, err := zmm.New(append([]zmm.Option{zmm.WithLeakReport(nil)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

// catch runs f and returns the *zmm.Error it panicked with.
func catch(t testing.TB, f func()) *zmm.Error {
	t.Helper()
	err := zmm.Try(f)
	require.Error(t, err, "expected a zmm panic")
	var ze *zmm.Error
	require.ErrorAs(t, err, &ze)
	return ze
}

func fill(p unsafe.Pointer, n uintptr, b byte) {
	s := zmm.Bytes(p, int(n))
	for i := range s {
		s[i] = b + byte(i)
	}
}

func holds(p unsafe.Pointer, n uintptr, b byte) bool {
	s := zmm.Bytes(p, int(n))
	for i := range s {
		if s[i] != b+byte(i) {
			return false
		}
	}
	return true
}

func hugeSize(n uintptr) uintptr {
	pg := chunk.OSPageSize()
	return (n + pg - 1) &^ (pg - 1)
}

// mapped reports whether addr lies in a mapping of this process.
func mapped(t testing.TB, addr uintptr) bool {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var lo, hi uintptr
		if _, err := fmt.Sscanf(strings.Fields(sc.Text())[0], "%x-%x", &lo, &hi); err == nil && lo <= addr && addr < hi {
			return true
		}
	}
	return false
}

// stillOurs reports whether addr is still mapped and still holds marker.
// Another mapping of the process may reuse the address at any moment, so
// "mapped" alone does not prove the old mapping survived; reading through
// /proc/self/mem fails with EIO, rather than faulting, where nothing is
// mapped.
func stillOurs(t testing.TB, addr uintptr, marker uint64) bool {
	t.Helper()
	if !mapped(t, addr) {
		return false
	}
	f, err := os.Open("/proc/self/mem")
	require.NoError(t, err)
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr)); err != nil {
		return false
	}
	return *(*uint64)(unsafe.Pointer(&b)) == marker
}

// fillChunk fills the rest of the chunk it lands in with two large blocks of
// 255 pages (the largest run), leaving one page free: a test that calls it
// on a heap whose chunks are all full gets a chunk of its own.
func fillChunk(h *zmm.Heap) []unsafe.Pointer {
	return []unsafe.Pointer{h.Alloc(zmm.MaxLargeSize), h.Alloc(zmm.MaxLargeSize)}
}

func TestEveryBinSizeAndNext(t *testing.T) {
	h := newHeap(t, layout()...)
	for b := 1; b < bins.NumBins; b++ {
		size := uintptr(bins.Size[b])
		p := h.Alloc(size)
		assert.Equal(t, size, h.BlockSize(p), "bin %d size", b)
		assert.Zero(t, uintptr(p)%8, "small blocks are 8-byte aligned")
		q := h.Alloc(size + 1)
		want := uintptr(chunk.PageSize)
		if b+1 < bins.NumBins {
			want = uintptr(bins.Size[b+1])
		}
		assert.Equal(t, want, h.BlockSize(q), "size %d", size+1)
		h.Free(p)
		h.Free(q)
	}
	assert.Zero(t, h.Usage())
}

func TestTinySizesGetTheSmallestSlot(t *testing.T) {
	h := newHeap(t, layout()...)
	for size := uintptr(0); size <= 16; size++ {
		p := h.Alloc(size)
		require.NotNil(t, p)
		assert.Equal(t, uintptr(16), h.BlockSize(p), "Alloc(%d)", size)
	}
	assert.Equal(t, uintptr(17*16), h.Usage())
}

func TestClassBoundaries(t *testing.T) {
	h := newHeap(t, layout()...)
	small := h.Alloc(bins.MaxSize)
	assert.Equal(t, uintptr(bins.MaxSize), h.BlockSize(small))

	large := h.Alloc(bins.MaxSize + 1)
	assert.Equal(t, uintptr(chunk.PageSize), h.BlockSize(large))
	assert.Zero(t, uintptr(large)%chunk.PageSize, "large blocks are page-aligned")

	maxLarge := h.Alloc(zmm.MaxLargeSize)
	assert.Equal(t, uintptr(zmm.MaxLargeSize), h.BlockSize(maxLarge))
	assert.Zero(t, uintptr(maxLarge)%chunk.PageSize)
	assert.NotZero(t, uintptr(maxLarge)%chunk.Size, "a large block is never at a chunk's start")

	huge := h.Alloc(zmm.MaxLargeSize + 1)
	assert.Equal(t, hugeSize(zmm.MaxLargeSize+1), h.BlockSize(huge))
	assert.Zero(t, uintptr(huge)%chunk.Size, "huge blocks are chunk-aligned")

	for _, p := range []unsafe.Pointer{small, large, maxLarge, huge} {
		h.Free(p)
	}
	assert.Zero(t, h.Usage())
}

// Blocks of 1 MiB use the memory they take: a run of pages is half a chunk
// at most, so a 1 MiB block is a mapping of its own, and a 64 MiB limit
// holds 62 of them next to the main chunk. With runs up to the whole chunk
// (the Zend MM) each took a chunk, and the limit held 31 (php-src #13599).
func TestOneMiBBlocksUseTheirMemory(t *testing.T) {
	h := newHeap(t, layout(zmm.WithLimit(64<<20))...)
	n := 0
	for zmm.Try(func() { h.Alloc(1 << 20) }) == nil {
		n++
	}
	assert.Equal(t, 62, n, "1 MiB blocks under a 64 MiB limit")
	assert.Equal(t, 62, h.Stats().HugeBlocks)

	// Two runs of MaxLargeSize share a chunk.
	h2 := newHeap(t, layout()...)
	a, b := h2.Alloc(zmm.MaxLargeSize), h2.Alloc(zmm.MaxLargeSize)
	c := h2.Alloc(zmm.MaxLargeSize)
	d := h2.Alloc(zmm.MaxLargeSize)
	chunkOf := func(p unsafe.Pointer) uintptr { return uintptr(p) &^ (chunk.Size - 1) }
	assert.Equal(t, chunkOf(c), chunkOf(d), "two of the largest runs share a chunk")
	assert.Equal(t, 2, h2.Stats().Chunks, "four of the largest runs take two chunks")
	for _, p := range []unsafe.Pointer{a, b, c, d} {
		h2.Free(p)
	}
}

// A page run that grows past MaxLargeSize stays where it is when the pages
// after it are free: growing takes no memory another run could use, and
// saves the copy to a huge block. A new block of that size is huge.
func TestRunGrowsInPlacePastMaxLargeSize(t *testing.T) {
	h := newHeap(t, layout()...)
	p := h.Alloc(200 * chunk.PageSize)
	fill(p, 200*chunk.PageSize, 7)
	q := h.Realloc(p, 3<<19) // 1.5 MiB: 384 pages
	require.Equal(t, p, q, "the run grows in place")
	assert.Equal(t, uintptr(384*chunk.PageSize), h.BlockSize(q))
	assert.Equal(t, uintptr(384*chunk.PageSize), h.Usage())
	assert.Zero(t, h.Stats().HugeBlocks)
	s := zmm.Bytes(q, 200*chunk.PageSize)
	for i := range s {
		if s[i] != 7+byte(i) {
			t.Fatalf("byte %d changed", i)
		}
	}
	// Up to the whole chunk, and back down.
	q = h.Realloc(q, chunk.MaxRunSize-chunk.PageSize)
	assert.Equal(t, p, q)
	q = h.Realloc(q, 100*chunk.PageSize)
	assert.Equal(t, p, q, "a run shrinks in place")
	assert.Equal(t, uintptr(100*chunk.PageSize), h.BlockSize(q))

	fresh := h.Alloc(3 << 19)
	assert.Zero(t, uintptr(fresh)%chunk.Size, "a new block past MaxLargeSize is huge")
	assert.Equal(t, 1, h.Stats().HugeBlocks)

	// Blocked by a block after it: moved to a huge block.
	r := h.Alloc(300 * chunk.PageSize)
	assert.Zero(t, uintptr(r)%chunk.Size, "300 pages are huge")
	h.Free(r)
	small := h.Alloc(100 * chunk.PageSize) // right after q
	q2 := h.Realloc(q, 3<<19)
	assert.NotEqual(t, q, q2, "no room after the run: it moves")
	assert.Zero(t, uintptr(q2)%chunk.Size)
	h.Free(q2)
	h.Free(small)
	h.Free(fresh)
	assert.Zero(t, h.Usage())
	assert.NoError(t, h.Check())
}

func TestExactStatistics(t *testing.T) {
	h := newHeap(t, layout()...)
	assert.Zero(t, h.Usage())
	assert.Equal(t, uintptr(chunk.Size), h.RealUsage(), "the main chunk is mapped from the start")

	a := h.Alloc(100) // bin 112
	b := h.Alloc(5000)
	assert.Equal(t, uintptr(112+2*4096), h.Usage())
	c := h.Alloc(3 << 20)
	assert.Equal(t, uintptr(112+2*4096)+hugeSize(3<<20), h.Usage())
	assert.Equal(t, chunk.Size+hugeSize(3<<20), h.RealUsage())
	peak := h.Usage()

	h.Free(c)
	h.Free(b)
	assert.Equal(t, uintptr(112), h.Usage())
	assert.Equal(t, peak, h.PeakUsage())
	assert.Equal(t, chunk.Size+hugeSize(3<<20), h.RealPeakUsage())

	h.ResetPeak()
	assert.Equal(t, uintptr(112), h.PeakUsage())
	assert.Equal(t, h.RealUsage(), h.RealPeakUsage())
	h.Free(a)

	st := h.Stats()
	assert.Zero(t, st.Usage)
	assert.Equal(t, 1, st.Chunks)
	assert.Equal(t, 1, st.Bins[bins.SizeToBin(112)].Runs)
	assert.Equal(t, 0, st.Bins[bins.SizeToBin(112)].Used)
	assert.Equal(t, int(bins.Elements[bins.SizeToBin(112)]), st.Bins[bins.SizeToBin(112)].Free)
}

func TestStatsCountBlocksPerBin(t *testing.T) {
	h := newHeap(t, layout()...)
	bin := bins.SizeToBin(48)
	var ps []unsafe.Pointer
	for range int(bins.Elements[bin]) + 3 {
		ps = append(ps, h.Alloc(48))
	}
	h.Free(ps[0])
	st := h.Stats().Bins[bin]
	assert.Equal(t, 2, st.Runs)
	assert.Equal(t, len(ps)-1, st.Used)
	assert.Equal(t, 2*int(bins.Elements[bin])-len(ps)+1, st.Free)
}

func TestCallocZeroesReusedMemory(t *testing.T) {
	h := newHeap(t)
	for _, size := range []uintptr{24, 3000, 50000, 3 << 20} {
		p := h.Alloc(size)
		fill(p, size, 0xA5)
		h.Free(p)
		q := h.Calloc(size/8, 8)
		assert.Equal(t, make([]byte, size/8*8), zmm.Bytes(q, int(size/8*8)), "Calloc(%d) not zero", size)
		h.Free(q)
	}
}

func TestSizeOverflowIsReported(t *testing.T) {
	h := newHeap(t, layout()...)
	e := catch(t, func() { h.Calloc(math.MaxUint64/2, 3) })
	assert.ErrorIs(t, e, zmm.ErrOverflow)
	assert.Equal(t, fmt.Sprintf("Possible integer overflow in memory allocation (%d * 3 + 0)", uint64(math.MaxUint64/2)), e.Error())

	e = catch(t, func() { h.SafeAlloc(1<<32, 1<<32, 0) })
	assert.ErrorIs(t, e, zmm.ErrOverflow)
	e = catch(t, func() { h.SafeAlloc(1, math.MaxUint64, 1) })
	assert.ErrorIs(t, e, zmm.ErrOverflow, "the offset's carry counts")
	assert.Equal(t, fmt.Sprintf("Possible integer overflow in memory allocation (1 * %d + 1)", uint64(math.MaxUint64)), e.Error())

	e = catch(t, func() { h.Alloc(math.MaxUint64 - 10) })
	assert.ErrorIs(t, e, zmm.ErrOverflow, "rounding a huge size up must not wrap")

	p := h.SafeAlloc(10, 100, 7)
	assert.Equal(t, uintptr(1024), h.BlockSize(p))
	n, ok := zmm.SafeSize(3, 5, 1)
	assert.True(t, ok)
	assert.Equal(t, uintptr(16), n)
	assert.Zero(t, h.Usage()-1024, "failed calls took nothing")
}

func TestStrdupAndStrndup(t *testing.T) {
	h := newHeap(t)
	p := h.Strdup("hello")
	assert.Equal(t, []byte("hello\x00"), zmm.Bytes(p, 6))
	q := h.Strndup("hello, world", 5)
	assert.Equal(t, []byte("hello\x00"), zmm.Bytes(q, 6))
	r := h.Strndup("hi", 10)
	assert.Equal(t, []byte("hi\x00"), zmm.Bytes(r, 3))
	e := h.Strdup("")
	assert.Equal(t, []byte{0}, zmm.Bytes(e, 1))
}

func TestAllocBytes(t *testing.T) {
	h := newHeap(t, layout()...)
	b := h.AllocBytes(100)
	assert.Len(t, b, 100)
	assert.Equal(t, 112, cap(b))
	b = append(b, 1, 2, 3)
	h.FreeBytes(b)
	assert.Zero(t, h.Usage())
	z := h.AllocBytes(0)
	assert.Equal(t, 16, cap(z))
	h.FreeBytes(z)
	h.FreeBytes(nil)
	assert.Zero(t, h.Usage())
}

func TestReallocSmall(t *testing.T) {
	h := newHeap(t, layout()...)
	p := h.Alloc(40)
	fill(p, 40, 1)
	assert.Equal(t, p, h.Realloc(p, 33), "same bin keeps the pointer")
	assert.Equal(t, p, h.Realloc(p, 40))
	q := h.Realloc(p, 20)
	assert.NotEqual(t, p, q, "a smaller bin moves")
	assert.True(t, holds(q, 20, 1))
	r := h.Realloc(q, 3000)
	assert.True(t, holds(r, 20, 1))
	assert.Equal(t, uintptr(3072), h.Usage())
	assert.Equal(t, uintptr(3072), h.PeakUsage(), "a moving realloc never counts both blocks")
}

func TestReallocLargeInPlace(t *testing.T) {
	h := newHeap(t, layout()...)
	p := h.Alloc(3 * chunk.PageSize)
	fill(p, 3*chunk.PageSize, 7)
	assert.Equal(t, p, h.Realloc(p, 10*chunk.PageSize), "the pages after it are free: grow in place")
	assert.Equal(t, uintptr(10*chunk.PageSize), h.BlockSize(p))
	assert.True(t, holds(p, 3*chunk.PageSize, 7))
	assert.Equal(t, p, h.Realloc(p, 2*chunk.PageSize), "shrink in place")
	assert.Equal(t, uintptr(2*chunk.PageSize), h.Usage())

	blocker := h.Alloc(chunk.PageSize) // lands right after p
	require.Equal(t, unsafe.Add(p, 2*chunk.PageSize), blocker)
	q := h.Realloc(p, 4*chunk.PageSize)
	assert.NotEqual(t, p, q, "blocked: the run moves")
	assert.True(t, holds(q, 2*chunk.PageSize, 7))
	assert.Equal(t, uintptr(5*chunk.PageSize), h.Usage())
	// The freed pages are reusable.
	assert.Equal(t, p, h.Alloc(2*chunk.PageSize))
}

func TestReallocAcrossKindsKeepsContents(t *testing.T) {
	h := newHeap(t)
	sizes := []uintptr{16, 3072, 3073, 100_000, zmm.MaxLargeSize, zmm.MaxLargeSize + 1, 6 << 20, 20 << 20, 5 << 20, 1 << 20, 2000, 8}
	p := h.Alloc(sizes[0])
	fill(p, sizes[0], 3)
	prev := sizes[0]
	for _, size := range sizes[1:] {
		p = h.Realloc(p, size)
		keep := min(prev, size)
		require.True(t, holds(p, keep, 3), "contents lost growing/shrinking %d -> %d", prev, size)
		fill(p, size, 3)
		prev = size
		assert.GreaterOrEqual(t, h.BlockSize(p), size)
	}
	h.Free(p)
	assert.Zero(t, h.Usage())
}

func TestReallocHugeInPlaceOrByMovingPages(t *testing.T) {
	h := newHeap(t, layout()...)
	p := h.Alloc(4 << 20)
	fill(p, 4<<20, 9)
	q := h.Realloc(p, 3<<20)
	assert.Equal(t, p, q, "huge blocks shrink in place")
	assert.Equal(t, hugeSize(3<<20), h.Usage())
	assert.Equal(t, chunk.Size+hugeSize(3<<20), h.RealUsage())
	r := h.Realloc(q, 64<<20)
	assert.True(t, holds(r, 3<<20, 9))
	assert.Zero(t, uintptr(r)%chunk.Size)
	assert.Equal(t, hugeSize(64<<20), h.BlockSize(r))
	assert.Equal(t, chunk.Size+hugeSize(64<<20), h.RealUsage())
	h.Free(r)
}

func TestReallocNilAllocates(t *testing.T) {
	h := newHeap(t, layout()...)
	p := h.Realloc(nil, 100)
	assert.Equal(t, uintptr(112), h.BlockSize(p))
}

func TestMemoryLimit(t *testing.T) {
	_, err := zmm.New(zmm.WithLimit(1 << 20))
	require.Error(t, err)
	assert.ErrorIs(t, err, zmm.ErrMemoryLimit)
	assert.Equal(t, "Failed to set memory limit to 1048576 bytes (Current memory usage is 2097152 bytes)", err.Error())

	h := newHeap(t, layout(zmm.WithLimit(4<<20))...)
	e := catch(t, func() { h.Alloc(3 << 20) })
	assert.ErrorIs(t, e, zmm.ErrMemoryLimit)
	assert.Equal(t, "Allowed memory size of 4194304 bytes exhausted (tried to allocate 3145728 bytes)", e.Error())
	// Still usable, and a block that fits the limit is served.
	p := h.Alloc(1 << 20)
	h.Free(p)
	q := h.Alloc(2 << 20)
	h.Free(q)
}

func TestMemoryLimitWorksInChunks(t *testing.T) {
	h := newHeap(t, layout()...)
	require.NoError(t, h.SetLimit(chunk.Size))
	var ps []unsafe.Pointer
	for range chunk.Pages - chunk.FirstPage {
		ps = append(ps, h.Alloc(chunk.PageSize))
	}
	e := catch(t, func() { h.Alloc(chunk.PageSize) })
	assert.Equal(t, "Allowed memory size of 2097152 bytes exhausted (tried to allocate 4096 bytes)", e.Error())
	e = catch(t, func() { h.Alloc(64) })
	assert.Equal(t, "Allowed memory size of 2097152 bytes exhausted (tried to allocate 4096 bytes)", e.Error(), "a bin refill asks for its run's pages")
	h.Free(ps[0])
	assert.NotNil(t, h.Alloc(64), "freed pages are served again under the limit")

	require.NoError(t, h.SetLimit(zmm.Unlimited))
	big := h.Alloc(chunk.PageSize)
	assert.Equal(t, 2*uintptr(chunk.Size), h.RealUsage())
	h.Free(big)
	err := h.SetLimit(3 << 20)
	require.NoError(t, err, "an empty chunk is cached; dropping it makes room")
	assert.Equal(t, uintptr(chunk.Size), h.RealUsage())
	e = catch(t, func() { h.Alloc(6 << 20) })
	assert.Equal(t, "Allowed memory size of 3145728 bytes exhausted (tried to allocate 6291456 bytes)", e.Error())
}

func TestSetLimitBelowUsageFails(t *testing.T) {
	h := newHeap(t)
	p := h.Alloc(5 << 20)
	err := h.SetLimit(3 << 20)
	require.Error(t, err)
	assert.ErrorIs(t, err, zmm.ErrMemoryLimit)
	assert.Equal(t, fmt.Sprintf("Failed to set memory limit to 3145728 bytes (Current memory usage is %d bytes)", h.RealUsage()), err.Error())
	assert.Equal(t, zmm.Unlimited, h.Limit(), "the old limit stays")
	h.Free(p)
}

func TestLimitCollectsCachedMemoryBeforeFailing(t *testing.T) {
	h := newHeap(t, layout(zmm.WithLimit(8<<20))...)
	p := h.Alloc(5 << 20)
	h.Free(p) // kept in the huge cache, still counted in RealUsage
	require.Equal(t, chunk.Size+hugeSize(5<<20), h.RealUsage())
	q := h.Alloc(6 << 20)
	assert.Equal(t, chunk.Size+hugeSize(6<<20), h.RealUsage(), "the cached mapping was given back to make room")
	h.Free(q)
}

func TestHugeMappingIsReused(t *testing.T) {
	h := newHeap(t, layout()...)
	p := h.Alloc(8 << 20)
	h.Free(p)
	real := h.RealUsage()
	q := h.Alloc(8 << 20)
	assert.Equal(t, p, q, "a freed huge mapping is handed out again")
	assert.Equal(t, real, h.RealUsage())
	h.Free(q)
	r := h.Alloc(4 << 20)
	assert.Equal(t, p, r, "a larger cached mapping is trimmed in place")
	assert.Equal(t, chunk.Size+hugeSize(4<<20), h.RealUsage())
	*(*uint64)(r) = 0x4755474755474755
	h.Free(r)
	assert.Equal(t, hugeSize(4<<20), h.GC())
	assert.Equal(t, uintptr(chunk.Size), h.RealUsage())
	assert.False(t, stillOurs(t, uintptr(p), 0x4755474755474755), "GC unmapped the cached huge mapping")
}

// dontNeedDropsPages reports whether MADV_DONTNEED gives a private page
// back, so that it reads as zeros (qemu-user may ignore the advice).
func dontNeedDropsPages(t *testing.T) bool {
	ps := os.Getpagesize()
	m, err := unix.Mmap(-1, 0, ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	require.NoError(t, err)
	defer func() { require.NoError(t, unix.Munmap(m)) }()
	m[0] = 1
	return unix.Madvise(m, unix.MADV_DONTNEED) == nil && m[0] == 0
}

// TestHugeCacheKeepsRecentPagesResident: freed huge mappings keep their
// pages while the cached ones that do hold at most 1/8 of the heap's real
// usage; past that the oldest are purged, stay mapped, and read as zeros
// when reused.
func TestHugeCacheKeepsRecentPagesResident(t *testing.T) {
	if !dontNeedDropsPages(t) {
		t.Skip("MADV_DONTNEED does not drop pages here")
	}
	h := newHeap(t, layout()...) // a debug heap never caches a freed huge block
	// 200 MiB live, never touched, and the main chunk: with the three
	// blocks the bound is (202+42)/8 = 30.5 MiB.
	ballast := h.Alloc(200 << 20)
	defer h.Free(ballast)
	const size = 14 << 20
	a, b, c := h.Alloc(size), h.Alloc(size), h.Alloc(size)
	fill(a, size, 0xa1)
	fill(b, size, 0xb2)
	fill(c, size, 0xc3)
	h.Free(a)
	h.Free(b) // 28 MiB cached and resident: within the bound
	h.Free(c) // 42 MiB: the oldest, a, is purged
	real := h.RealUsage()

	assert.Equal(t, c, h.Alloc(size), "of equal cached mappings, the newest is reused")
	assert.True(t, holds(c, size, 0xc3), "the newest cached mapping kept its pages")
	assert.Equal(t, b, h.Alloc(size))
	assert.True(t, holds(b, size, 0xb2), "a cached mapping within the bound kept its pages")
	assert.Equal(t, a, h.Alloc(size), "the purged mapping is reused too: it stayed mapped")
	assert.Equal(t, size, strings.Count(string(zmm.Bytes(a, size)), "\x00"),
		"the oldest cached mapping gave its pages back: they read as zeros")
	assert.Equal(t, real, h.RealUsage(), "purged pages still count as mapped")
}

// TestHugeCacheSmallHeapKeepsOnlyTheNewest: in a small heap the resident
// bound is 1/8 of the real usage, so an older cached mapping is purged as
// soon as a newer one joins.
func TestHugeCacheSmallHeapKeepsOnlyTheNewest(t *testing.T) {
	if !dontNeedDropsPages(t) {
		t.Skip("MADV_DONTNEED does not drop pages here")
	}
	h := newHeap(t, layout()...)
	const size = 3 << 20
	a, b := h.Alloc(size), h.Alloc(size)
	fill(a, size, 0xa1)
	fill(b, size, 0xb2)
	h.Free(a)
	h.Free(b) // 8 MiB of real usage: a bound of 1 MiB, only b stays
	assert.Equal(t, b, h.Alloc(size))
	assert.True(t, holds(b, size, 0xb2), "the newest cached mapping kept its pages")
	assert.Equal(t, a, h.Alloc(size))
	assert.Equal(t, size, strings.Count(string(zmm.Bytes(a, size)), "\x00"), "a was purged")
}

// TestHugeCacheNewestStaysResident: a cached mapping above the resident
// bound keeps its pages while it is the newest.
func TestHugeCacheNewestStaysResident(t *testing.T) {
	if !dontNeedDropsPages(t) {
		t.Skip("MADV_DONTNEED does not drop pages here")
	}
	h := newHeap(t, layout()...)
	const big, small = 20 << 20, 3 << 20
	a := h.Alloc(big)
	fill(a, big, 0xa1)
	h.Free(a)
	assert.Equal(t, a, h.Alloc(big))
	assert.True(t, holds(a, big, 0xa1), "alone in the cache, the mapping kept its pages")
	b := h.Alloc(small)
	fill(b, small, 0xb2)
	h.Free(a)
	h.Free(b) // a is no longer the newest, and 23 MiB is past the bound
	assert.Equal(t, b, h.Alloc(small))
	assert.True(t, holds(b, small, 0xb2))
	assert.Equal(t, a, h.Alloc(big))
	assert.Equal(t, big, strings.Count(string(zmm.Bytes(a, big)), "\x00"), "a was purged")
}

// TestHugeCacheHandsOutCloseFitsWhole: a cached mapping at most a quarter
// larger than the request is handed out whole, slack included; a larger one
// is cut down to the request.
func TestHugeCacheHandsOutCloseFitsWhole(t *testing.T) {
	h := newHeap(t, layout()...)
	a := h.Alloc(5 * mib)
	h.Free(a)
	real := h.RealUsage()
	b := h.Alloc(4 * mib) // slack 1 MiB of 5: whole
	assert.Equal(t, a, b)
	assert.Equal(t, uintptr(5*mib), h.BlockSize(b), "the slack is part of the block")
	assert.Equal(t, uintptr(5*mib), h.Usage(), "and of the usage")
	assert.Equal(t, real, h.RealUsage(), "nothing was unmapped")
	fill(b, 5*mib, 0xb1)
	h.Free(b)
	c := h.Alloc(3 * mib) // slack 2 MiB of 5: trimmed
	assert.Equal(t, a, c)
	assert.Equal(t, uintptr(3*mib), h.BlockSize(c))
	assert.Equal(t, real-2*mib, h.RealUsage(), "the tail was unmapped")
	h.Free(c)
	assert.NoError(t, h.Check())
}

// TestHugeTableGrows: the huge table and its cache share one mapping that
// doubles as blocks come; every block stays findable through the moves.
func TestHugeTableGrows(t *testing.T) {
	h := newHeap(t, layout()...)
	const n = 1100 // past 224, 480 and 992: three moves from a 4 KiB page
	ps := make([]unsafe.Pointer, n)
	for i := range ps {
		ps[i] = h.Alloc(zmm.MaxLargeSize + 1)
		*(*int)(ps[i]) = i
	}
	assert.Equal(t, n, h.Stats().HugeBlocks)
	require.NoError(t, h.Check())
	for i, p := range ps {
		assert.Equal(t, i, *(*int)(p))
		h.Free(p)
	}
	st := h.Stats()
	assert.Zero(t, st.HugeBlocks)
	assert.Equal(t, 32, st.CachedHuge, "the cache is full")
	require.NoError(t, h.Check())
}

func TestGCReturnsEmptyRunsAndChunks(t *testing.T) {
	h := newHeap(t)
	var ps []unsafe.Pointer
	for range 100_000 {
		ps = append(ps, h.Alloc(64))
	}
	chunks := h.Stats().Chunks
	require.Greater(t, chunks, 2)
	for _, p := range ps {
		h.Free(p)
	}
	freed := h.GC()
	assert.GreaterOrEqual(t, freed, uintptr(chunks-1)*chunk.Size)
	st := h.Stats()
	assert.Equal(t, 1, st.Chunks)
	assert.Zero(t, st.Bins[bins.SizeToBin(64)].Runs, "every empty run went back")
	assert.Equal(t, uintptr(chunk.Size), h.RealUsage())
	// The heap works as before.
	p := h.Alloc(64)
	h.Free(p)
	assert.Zero(t, h.GC()-chunk.PageSize, "one run emptied again")
}

func TestGCKeepsRunsInUse(t *testing.T) {
	h := newHeap(t)
	var ps []unsafe.Pointer
	for range 1000 {
		ps = append(ps, h.Alloc(256))
	}
	for i, p := range ps {
		if i%16 != 0 { // keep one block of every run (16 per run)
			h.Free(p)
		}
	}
	assert.Zero(t, h.GC()%chunk.PageSize)
	for i, p := range ps {
		if i%16 == 0 {
			fill(p, 256, 1)
			h.Free(p)
		}
	}
	assert.Zero(t, h.Usage())
}

func TestResetReleasesEverythingAndKeepsChunks(t *testing.T) {
	h := newHeap(t)
	var ps []unsafe.Pointer
	for range 200_000 {
		ps = append(ps, h.Alloc(40))
	}
	huge := h.Alloc(70 << 20) // above the huge cache's bound: unmapped at Reset
	*(*uint64)(huge) = 0x4755474755474755
	require.Greater(t, h.Stats().Chunks, 3)
	h.Reset()
	assert.Zero(t, h.Usage())
	assert.Zero(t, h.PeakUsage())
	st := h.Stats()
	assert.Equal(t, 1, st.Chunks)
	assert.Equal(t, uintptr(1+st.CachedChunks)*chunk.Size, h.RealUsage())
	assert.Equal(t, h.RealUsage(), h.RealPeakUsage())
	assert.False(t, stillOurs(t, uintptr(huge), 0x4755474755474755), "live huge blocks are unmapped at Reset")

	e := catch(t, func() { h.Free(ps[len(ps)-1]) })
	assert.ErrorIs(t, e, zmm.ErrInvalidPointer, "blocks do not survive Reset")

	// The next request gets fresh blocks.
	p := h.Alloc(40)
	h.Free(p)
	assert.Zero(t, h.Usage())
}

func TestResetCachePolicyFollowsTheZendMM(t *testing.T) {
	h := newHeap(t, layout()...)
	// A request that peaks at 5 chunks: avg = (1+5)/2 = 3, so Reset keeps
	// cached chunks while cached+0.9 <= 3: two of them.
	for range 5 { // one fills the main chunk, each other one a chunk of its own
		fillChunk(h)
	}
	require.Equal(t, 5, h.Stats().Chunks)
	h.Reset()
	assert.Equal(t, 2, h.Stats().CachedChunks)
	assert.Equal(t, 3*uintptr(chunk.Size), h.RealUsage())
}

func TestCloseUnmapsEverything(t *testing.T) {
	h, err := zmm.New()
	require.NoError(t, err)
	small := h.Alloc(100)
	large := h.Alloc(zmm.MaxLargeSize)
	huge := h.Alloc(10 << 20)
	h.Free(h.Alloc(3 << 20))          // cached huge
	const marker = 0x5a4d4d5f434c4f53 // "ZMM_CLOS"
	for _, p := range []unsafe.Pointer{small, large, huge} {
		require.True(t, mapped(t, uintptr(p)))
		*(*uint64)(p) = marker
	}
	h.Close()
	for _, p := range []unsafe.Pointer{small, large, huge} {
		assert.False(t, stillOurs(t, uintptr(p), marker), "0x%x still mapped after Close", p)
	}
	e := catch(t, func() { h.Alloc(10) })
	assert.ErrorIs(t, e, zmm.ErrClosed)
	e = catch(t, func() { h.Free(small) })
	assert.ErrorIs(t, e, zmm.ErrClosed)
	// A pointer in the first 2 MiB rounds down to chunk base 0, which the
	// fast path must not take for a chunk of the (empty) own set.
	e = catch(t, func() { h.Free(unsafe.Add(nil, 0x10000)) })
	assert.ErrorIs(t, e, zmm.ErrClosed)
	h.Close() // a second Close does nothing
}

func TestBadPointersAreReported(t *testing.T) {
	h := newHeap(t, layout()...)
	other := newHeap(t)
	small := h.Alloc(48)
	large := h.Alloc(3 * chunk.PageSize)
	huge := h.Alloc(3 << 20)
	base := unsafe.Add(small, -int(uintptr(small)&(chunk.Size-1)))
	goValue := new([64]byte)
	var stackValue [16]byte

	freedSmall := h.Alloc(48)
	h.Free(freedSmall)
	freedLarge := h.Alloc(5 * chunk.PageSize)
	h.Free(freedLarge)
	freedHuge := h.Alloc(100 << 20) // too big for the huge cache: unmapped
	h.Free(freedHuge)
	cachedHuge := h.Alloc(4 << 20)
	h.Free(cachedHuge)

	cases := []struct {
		name string
		p    unsafe.Pointer
		kind error
	}{
		{"random address", unsafe.Add(nil, 0x7_1234_5000), zmm.ErrInvalidPointer},
		{"address above 2^48", unsafe.Add(nil, uintptr(1)<<50), zmm.ErrInvalidPointer},
		{"address in the first 2 MiB", unsafe.Add(nil, 0x10000), zmm.ErrInvalidPointer},
		{"Go heap memory", unsafe.Pointer(goValue), zmm.ErrInvalidPointer},
		{"Go stack memory", unsafe.Pointer(&stackValue), zmm.ErrInvalidPointer},
		{"inside a small block", unsafe.Add(small, 8), zmm.ErrInvalidPointer},
		{"inside a large block", unsafe.Add(large, 1), zmm.ErrInvalidPointer},
		{"page inside a large block", unsafe.Add(large, chunk.PageSize), zmm.ErrInvalidPointer},
		{"inside a huge block", unsafe.Add(huge, chunk.PageSize), zmm.ErrInvalidPointer},
		{"second frame of a huge block", unsafe.Add(huge, chunk.Size), zmm.ErrInvalidPointer},
		{"chunk header", base, zmm.ErrInvalidPointer},
		{"inside a chunk header", unsafe.Add(base, 64), zmm.ErrInvalidPointer},
		{"free page", unsafe.Add(base, 400*chunk.PageSize), zmm.ErrDoubleFree},
		{"freed small block", freedSmall, zmm.ErrDoubleFree},
		// small and freedSmall are the first two 48-byte slots of their run;
		// the run is threaded onto the free list a batch at a time.
		{"small slot never handed out, threaded", unsafe.Add(small, 5*48), zmm.ErrDoubleFree},
		{"small slot never handed out, not yet threaded", unsafe.Add(small, 80*48), zmm.ErrDoubleFree},
		// The 48-byte run is one page of 85 slots and a 16-byte tail,
		// whose start is where an 86th slot would be.
		{"unused tail of a run", unsafe.Add(small, bins.Elements[bins.Bin(48)]*48), zmm.ErrInvalidPointer},
		{"freed large block", freedLarge, zmm.ErrDoubleFree},
		{"freed huge block", freedHuge, zmm.ErrDoubleFree},
		{"freed cached huge block", cachedHuge, zmm.ErrDoubleFree},
		{"small block of another heap", other.Alloc(48), zmm.ErrWrongHeap},
		{"large block of another heap", other.Alloc(5000), zmm.ErrWrongHeap},
		{"huge block of another heap", other.Alloc(3 << 20), zmm.ErrWrongHeap},
	}
	usage := h.Usage()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := fmt.Sprintf("0x%x", uintptr(tc.p))
			for op, f := range map[string]func(){
				"Free":      func() { h.Free(tc.p) },
				"Realloc":   func() { h.Realloc(tc.p, 100) },
				"BlockSize": func() { h.BlockSize(tc.p) },
			} {
				e := catch(t, f)
				assert.ErrorIs(t, e, tc.kind, "%s: %v", op, e)
				assert.Contains(t, e.Error(), addr, "the message names the pointer")
				assert.Equal(t, uintptr(tc.p), e.Ptr)
				assert.Equal(t, op, e.Op)
			}
		})
	}
	assert.Equal(t, usage, h.Usage(), "nothing was freed")
	// The heap and its blocks are intact.
	fill(small, 48, 1)
	assert.True(t, holds(small, 48, 1))
	h.Free(small)
	h.Free(large)
	h.Free(huge)
	for range 1000 {
		h.Free(h.Alloc(48))
	}
}

// TestBadPointersAreReportedInEveryChunk: Free's fast path finds most of a
// heap's chunks in a 64-entry set and the others through the frame table,
// so a heap of more chunks than that runs the same checks on both kinds.
// Each chunk here is a large block and one page of 48-byte slots.
func TestBadPointersAreReportedInEveryChunk(t *testing.T) {
	const chunks, size = 80, 48
	h := newHeap(t, layout()...)
	chunkOf := func(p unsafe.Pointer) uintptr { return uintptr(p) &^ (chunk.Size - 1) }
	var larges, smalls, fillers []unsafe.Pointer
	for range chunks {
		fill := fillChunk(h) // leaves one page of its chunk free
		large := fill[0]
		for tries := 0; ; tries++ {
			require.Less(t, tries, 200, "a 48-byte run should start in the newest chunk")
			p := h.Alloc(size)
			if chunkOf(p) == chunkOf(large) {
				smalls = append(smalls, p)
				break
			}
			fillers = append(fillers, p) // the rest of the previous chunk's run
		}
		larges = append(larges, fill...)
	}
	for _, p := range fillers {
		h.Free(p)
	}
	require.Equal(t, chunks, h.Stats().Chunks)
	slots := uintptr(bins.Elements[bins.Bin(size)])
	usage := h.Usage()
	// p is the first slot of its chunk's run and the only one in use; the
	// last run's other slots were never handed out, the others' are free.
	for i, p := range smalls {
		for _, tc := range []struct {
			name string
			p    unsafe.Pointer
			kind error
		}{
			{"inside a small block", unsafe.Add(p, 8), zmm.ErrInvalidPointer},
			{"free slot of the run, threaded", unsafe.Add(p, 5*size), zmm.ErrDoubleFree},
			{"free slot of the run, in the newest run not yet threaded", unsafe.Add(p, 80*size), zmm.ErrDoubleFree},
			{"unused tail of a run", unsafe.Add(p, slots*size), zmm.ErrInvalidPointer},
			{"chunk header", unsafe.Add(p, -int(uintptr(p)&(chunk.Size-1))), zmm.ErrInvalidPointer},
		} {
			for op, f := range map[string]func(){
				"Free":      func() { h.Free(tc.p) },
				"Realloc":   func() { h.Realloc(tc.p, 100) },
				"BlockSize": func() { h.BlockSize(tc.p) },
			} {
				assert.ErrorIs(t, zmm.Try(f), tc.kind, "chunk %d: %s: %s", i, tc.name, op)
			}
		}
	}
	assert.Equal(t, usage, h.Usage(), "nothing was freed")
	for i, p := range smalls {
		require.NoError(t, zmm.Try(func() { h.Free(p) }), "chunk %d", i)
		assert.ErrorIs(t, catch(t, func() { h.Free(p) }), zmm.ErrDoubleFree, "chunk %d: freed twice", i)
	}
	// A chunk that empties leaves the heap (to its cache or the OS): the
	// last one holds its large block and a run of one freed slot, which GC
	// gives back. A pointer into it is no longer a block.
	last := smalls[chunks-1]
	h.Free(larges[2*chunks-2])
	h.Free(larges[2*chunks-1])
	h.GC()
	require.Equal(t, chunks-1, h.Stats().Chunks)
	assert.ErrorIs(t, catch(t, func() { h.Free(last) }), zmm.ErrInvalidPointer, "a block of a released chunk")
}

func TestFreeNilIsANoop(t *testing.T) {
	h := newHeap(t)
	h.Free(nil)
	assert.Zero(t, h.Usage())
}

func TestCorruptedFreeListIsReportedNotFollowed(t *testing.T) {
	h := newHeap(t, layout()...)
	a := h.Alloc(32)
	b := h.Alloc(32)
	h.Free(b)
	// An overflow from a into the free slot b overwrites b's link.
	copy(zmm.Bytes(a, 48), make([]byte, 48))
	for i := range zmm.Bytes(a, 48)[32:] {
		zmm.Bytes(a, 48)[32+i] = 0x41
	}
	e := catch(t, func() { h.Alloc(32) })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Contains(t, e.Error(), fmt.Sprintf("0x%x", uintptr(b)))
}

func TestTryPassesOtherPanicsOn(t *testing.T) {
	assert.PanicsWithValue(t, "boom", func() { _ = zmm.Try(func() { panic("boom") }) })
	assert.NoError(t, zmm.Try(func() {}))
}

func TestNoGoAllocationsPerCall(t *testing.T) {
	h := newHeap(t)
	for _, size := range []uintptr{8, 64, 3072, 10_000, 3 << 20} {
		assert.Zero(t, testing.AllocsPerRun(200, func() { h.Free(h.Alloc(size)) }), "Alloc/Free(%d)", size)
	}
	p := h.Alloc(100)
	assert.Zero(t, testing.AllocsPerRun(200, func() {
		p = h.Realloc(p, 5000)
		p = h.Realloc(p, 100)
	}))
	assert.Zero(t, testing.AllocsPerRun(200, func() { h.Free(h.Calloc(4, 100)) }))
}

func TestHeapsAreIndependent(t *testing.T) {
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			h, err := zmm.New()
			if !assert.NoError(t, err) {
				return
			}
			defer h.Close()
			var ps []unsafe.Pointer
			for i := range 20_000 {
				p := h.Alloc(uintptr(i%4000) + 1)
				fill(p, 1, byte(w))
				ps = append(ps, p)
				if i%3 == 0 {
					h.Free(ps[0])
					ps = ps[1:]
				}
			}
			for _, p := range ps {
				if !holds(p, 1, byte(w)) {
					t.Errorf("worker %d: block overwritten", w)
					return
				}
			}
			h.Reset()
		})
	}
	wg.Wait()
}

func TestDefaultHeapIsSafeForConcurrentUse(t *testing.T) {
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 5000 {
				p := zmm.Alloc(uintptr(i%300) + 1)
				fill(p, 1, byte(w))
				if !holds(p, 1, byte(w)) {
					t.Errorf("block overwritten")
				}
				p = zmm.Realloc(p, uintptr(i%500)+1)
				zmm.Free(p)
			}
		})
	}
	wg.Wait()
	assert.Zero(t, zmm.ReadStats().Usage)
}

// TestPackageFunctionsFreeAcrossGoroutines: the package-level functions
// are a shared allocator: a block made on one goroutine may be freed on
// another, and the statistics and snapshot cover every heap.
func TestPackageFunctionsFreeAcrossGoroutines(t *testing.T) {
	blocks := make(chan unsafe.Pointer, 64)
	var producers, consumers sync.WaitGroup
	for w := range 4 {
		producers.Go(func() {
			for i := range 3000 {
				var p unsafe.Pointer
				switch i % 3 {
				case 0:
					p = zmm.Alloc(uintptr(i%700) + 1)
				case 1:
					p = zmm.Calloc(uintptr(i%40)+1, 8)
				default:
					p = zmm.Strdup("crossing")
				}
				fill(p, 1, byte(w))
				blocks <- p
			}
		})
	}
	for range 3 {
		consumers.Go(func() {
			for p := range blocks {
				zmm.Free(p)
			}
		})
	}
	producers.Wait()
	close(blocks)
	consumers.Wait()
	st := zmm.ReadStats() // collects what was freed remotely
	assert.Zero(t, st.Usage)
	snap := zmm.DefaultSnapshot()
	assert.Equal(t, "default", snap.Name)
	assert.Zero(t, snap.Stats.Usage)
	assert.Equal(t, uint64(st.RealUsage), snap.Stats.RealUsage)
	assert.Len(t, snap.Chunks, st.Chunks)
}

func TestPersistentMemorySurvivesReset(t *testing.T) {
	p := zmm.PStrdup("module config")
	q := zmm.Strdup("request data")
	zmm.Reset()
	assert.Equal(t, []byte("module config\x00"), zmm.Bytes(p, 14))
	e := catch(t, func() { zmm.Free(q) })
	assert.True(t, errors.Is(e, zmm.ErrInvalidPointer) || errors.Is(e, zmm.ErrDoubleFree), "%v", e)
	zmm.PFree(p)
	assert.Zero(t, zmm.ReadPersistentStats().Usage)
}

func TestOutOfMemoryFromTheOS(t *testing.T) {
	h := newHeap(t, layout()...)
	// 2^48 bytes fit in no user address space of linux/amd64 (2^47) or
	// linux/arm64 (2^48, part of it taken): mmap must fail.
	const size = 1 << 48
	e := catch(t, func() { h.Alloc(size) })
	assert.ErrorIs(t, e, zmm.ErrOutOfMemory)
	assert.Equal(t, fmt.Sprintf("Out of memory (allocated %d bytes) (tried to allocate %d bytes)", h.RealUsage(), uint64(size)), e.Error())
	p := h.Alloc(100)
	h.Free(p)
	assert.Zero(t, h.Usage(), "the heap is still usable")
}

func TestOwnsTellsHeapsApart(t *testing.T) {
	a, err := zmm.New()
	require.NoError(t, err)
	defer a.Close()
	b, err := zmm.New()
	require.NoError(t, err)
	defer b.Close()
	small, large, huge := a.Alloc(40), a.Alloc(10000), a.Alloc(3<<20)
	for _, p := range []unsafe.Pointer{small, large, huge, unsafe.Add(huge, 2<<20+5)} {
		assert.True(t, a.Owns(p))
		assert.False(t, b.Owns(p))
	}
	assert.False(t, a.Owns(nil))
	x := 7
	assert.False(t, a.Owns(unsafe.Pointer(&x)), "Go memory")
	a.Free(huge)
	assert.False(t, a.Owns(huge), "a freed huge block is not held")
	a.Reset()
	assert.True(t, a.Owns(small), "the main chunk stays after Reset")
	a.Close()
	assert.False(t, a.Owns(small), "nothing is held after Close")
	s, err := zmm.New(zmm.WithAllocMode(zmm.ModeSystem))
	require.NoError(t, err)
	defer s.Close()
	p := s.Alloc(8)
	assert.True(t, s.Owns(p))
	s.Free(p)
	assert.False(t, s.Owns(p))
}

func TestWrongHeapInEveryMode(t *testing.T) {
	for _, m := range []zmm.AllocMode{zmm.ModeChunks, zmm.ModeSystem, zmm.ModeGuard} {
		a := newHeap(t, zmm.WithAllocMode(m))
		b := newHeap(t, zmm.WithAllocMode(m))
		p := a.Alloc(64)
		assert.ErrorIs(t, catch(t, func() { b.Free(p) }), zmm.ErrWrongHeap, "mode %v", m)
		assert.ErrorIs(t, catch(t, func() { b.Realloc(p, 10) }), zmm.ErrWrongHeap, "mode %v", m)
		a.Free(p)
		if m != zmm.ModeChunks { // in chunk mode the chunk is still a's
			assert.ErrorIs(t, catch(t, func() { b.Free(p) }), zmm.ErrInvalidPointer, "mode %v: a freed block is nobody's", m)
		}
	}
}

func TestEveryModeAlignsBlocksTo8Bytes(t *testing.T) {
	for _, m := range []zmm.AllocMode{zmm.ModeChunks, zmm.ModeSystem, zmm.ModeGuard} {
		for _, debug := range []bool{false, true} {
			// Guard mode keeps every block 8-byte aligned when asked to;
			// by default it aligns a block as its size allows
			// (TestGuardModeLayout).
			h := newHeap(t, zmm.WithAllocMode(m), zmm.WithDebug(debug), zmm.WithLeakReport(nil), zmm.WithGuardAlignment(8))
			for _, n := range []uintptr{1, 3, 5, 1, 1, 2, 7, 9, 24, 100, 5000} {
				p := h.Alloc(n)
				assert.Zero(t, uintptr(p)%8, "mode %v debug %v: Alloc(%d) = %p", m, debug, n, p)
			}
		}
	}
}

// TestRunsAreThreadedInBatches covers the lazy threading of a new run: its
// slots reach the free list a batch at a time, and everything that looks
// at free slots (Alloc, Free's checks, Stats, GC, SetHandlers) sees the
// slots not yet threaded as free.
func TestRunsAreThreadedInBatches(t *testing.T) {
	const size = 16
	bin := bins.SizeToBin(size)
	elements := int(bins.Elements[bin])
	runSlots := func(h *zmm.Heap, first unsafe.Pointer) []unsafe.Pointer {
		slots := []unsafe.Pointer{first}
		for range elements - 1 {
			slots = append(slots, h.Alloc(size))
		}
		return slots
	}
	// Every slot of a run is handed out once, in address order, and the
	// next allocation starts a new run.
	h := newHeap(t, layout()...)
	first := h.Alloc(size)
	st := h.Stats().Bins[bin]
	assert.Equal(t, 1, st.Used)
	assert.Equal(t, elements-1, st.Free, "the slots not yet threaded count as free")
	slots := runSlots(h, first)
	for i, p := range slots {
		require.Equal(t, uintptr(first)+uintptr(i*size), uintptr(p), "slot %d", i)
	}
	assert.Equal(t, 0, h.Stats().Bins[bin].Free)
	next := h.Alloc(size)
	assert.NotEqual(t, uintptr(first), uintptr(next)&^(chunk.PageSize-1), "a new run")
	assert.Equal(t, 2, h.Stats().Bins[bin].Runs)

	// GC gives back a run whose handed-out slots were all freed, threaded
	// or not, and nothing else.
	h = newHeap(t, layout()...)
	first = h.Alloc(size)
	keep := h.Alloc(3000)
	h.Free(first)
	assert.Equal(t, 1, h.Stats().Bins[bin].Runs)
	h.GC()
	assert.Equal(t, 0, h.Stats().Bins[bin].Runs, "the run went back to its chunk")
	slots = runSlots(h, h.Alloc(size))
	seen := map[uintptr]bool{}
	for _, p := range slots {
		require.False(t, seen[uintptr(p)], "slot 0x%x handed out twice", p)
		seen[uintptr(p)] = true
	}
	h.Free(keep)

	// Handlers installed in the middle of a run serve the rest of it, and
	// the fast paths serve it again after RestoreHandlers: no slot twice.
	h = newHeap(t, layout()...)
	var live []unsafe.Pointer
	seen = map[uintptr]bool{}
	take := func() {
		p := h.Alloc(size)
		require.False(t, seen[uintptr(p)], "slot 0x%x handed out twice", p)
		seen[uintptr(p)] = true
		live = append(live, p)
	}
	take()
	h.SetHandlers(h.Builtin())
	for range elements / 2 {
		take()
	}
	h.RestoreHandlers()
	for range elements {
		take()
	}
	for _, p := range live {
		h.Free(p)
	}
	assert.Zero(t, h.Usage())
}
