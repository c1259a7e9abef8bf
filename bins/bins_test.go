package bins

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/bins/internal/bintable"
	"github.com/gozmm/zmm/chunk"
)

// zendBins is the Zend MM's small bin table (ZEND_MM_BINS_INFO), as given in
// the reference brief §2: size, elements per run, pages per run.
var zendBins = [NumBins]struct{ size, elements, pages uint32 }{
	{8, 512, 1}, {16, 256, 1}, {24, 170, 1}, {32, 128, 1},
	{40, 102, 1}, {48, 85, 1}, {56, 73, 1}, {64, 64, 1},
	{80, 51, 1}, {96, 42, 1}, {112, 36, 1}, {128, 32, 1},
	{160, 25, 1}, {192, 21, 1}, {224, 18, 1}, {256, 16, 1},
	{320, 64, 5}, {384, 32, 3}, {448, 9, 1}, {512, 8, 1},
	{640, 32, 5}, {768, 16, 3}, {896, 9, 2}, {1024, 8, 2},
	{1280, 16, 5}, {1536, 8, 3}, {1792, 16, 7}, {2048, 8, 4},
	{2560, 8, 5}, {3072, 4, 3},
}

func TestConstantsMatchGenerator(t *testing.T) {
	assert.Equal(t, bintable.NumBins, NumBins)
	assert.Equal(t, bintable.MinSize, MinSize)
	assert.Equal(t, bintable.MaxSize, MaxSize)
	assert.LessOrEqual(t, MaxRunPages, bintable.RunPagesLimit)
	assert.Contains(t, Pages[:NumBins], uint32(MaxRunPages), "MaxRunPages is the longest run")
	assert.Equal(t, chunk.PageSize, RunPageSize, "runs are counted in the chunk package's pages")
	assert.Equal(t, bintable.TableLen, len(Size))
	assert.Equal(t, bintable.MinBlock, MinBlock)
	assert.Equal(t, bintable.BinByWordsLen, len(binByWords))
	assert.Equal(t, uint32(MinSize), Size[0])
	assert.Equal(t, uint32(MaxSize), Size[NumBins-1])
}

func TestTableMatchesZend(t *testing.T) {
	for bin, want := range zendBins {
		assert.Equal(t, want.size, Size[bin], "size of bin %d", bin)
		assert.Equal(t, want.elements, Elements[bin], "elements of bin %d", bin)
		assert.Equal(t, want.pages, Pages[bin], "pages of bin %d", bin)
		assert.LessOrEqual(t, Pages[bin], uint32(MaxRunPages), "pages of bin %d", bin)
	}
	for bin := NumBins; bin < len(Size); bin++ {
		assert.Zero(t, Size[bin], "padding size %d", bin)
		assert.Zero(t, Elements[bin], "padding elements %d", bin)
		assert.Zero(t, Pages[bin], "padding pages %d", bin)
		assert.Zero(t, Reciprocal[bin], "padding reciprocal %d", bin)
	}
}

// smallestBin is the reference mapping: the first bin whose size is at
// least max(size, 1), found by a linear scan.
func smallestBin(t *testing.T, size uintptr) uint32 {
	t.Helper()
	size = max(size, 1)
	for bin := range uint32(NumBins) {
		if uintptr(Size[bin]) >= size {
			return bin
		}
	}
	require.FailNow(t, "no bin holds size", "size %d", size)
	return 0
}

func TestSizeToBinExhaustive(t *testing.T) {
	for size := uintptr(0); size <= MaxSize; size++ {
		assert.Equal(t, smallestBin(t, size), SizeToBin(size), "size %d", size)
	}
}

func TestBinExhaustive(t *testing.T) {
	for size := uintptr(0); size <= MaxSize; size++ {
		want := smallestBin(t, max(size, MinBlock))
		require.Equal(t, want, Bin(size), "size %d", size)
		assert.Equal(t, SizeToBin(max(size, MinBlock)), Bin(size), "size %d", size)
	}
	assert.Equal(t, uint32(1), Bin(0), "Alloc(0) gets a minimal block")
	assert.Equal(t, uint32(1), Bin(16))
	assert.Equal(t, uint32(2), Bin(17))
	assert.Equal(t, uint32(NumBins-1), Bin(MaxSize))
	assert.GreaterOrEqual(t, uint32(Size[Bin(1)]), uint32(MinBlock), "the smallest block holds a link and a check word")
}

func TestSizeToBinBoundaries(t *testing.T) {
	for bin := range uint32(NumBins) {
		size := uintptr(Size[bin])
		assert.Equal(t, bin, SizeToBin(size), "size %d", size)
		if bin+1 < NumBins {
			assert.Equal(t, bin+1, SizeToBin(size+1), "size %d", size+1)
		}
	}
	// The worked examples of the reference brief.
	assert.Equal(t, uint32(0), SizeToBin(0))
	assert.Equal(t, uint32(8), SizeToBin(65))
	assert.Equal(t, uint32(12), SizeToBin(129))
	assert.Equal(t, uint32(29), SizeToBin(3072))
}

func TestElementIndexExhaustive(t *testing.T) {
	for bin := range uint32(NumBins) {
		size := Size[bin]
		run := Pages[bin] * RunPageSize
		require.NotZero(t, size, "bin %d", bin)
		require.LessOrEqual(t, Elements[bin]*size, run, "bin %d", bin)
		bad := 0
		for off := range run {
			idx, exact := ElementIndex(bin, off)
			if idx != off/size || exact != (off%size == 0) {
				bad++
				assert.Failf(t, "wrong element index", "bin %d offset %d: got (%d, %v), want (%d, %v)",
					bin, off, idx, exact, off/size, off%size == 0)
				require.Less(t, bad, 10, "bin %d: too many failures", bin)
			}
		}
		// The last offset of the run lies in the tail when there is waste,
		// past the last element.
		last, _ := ElementIndex(bin, run-1)
		assert.Equal(t, Elements[bin]-1+min(run%size, 1), last, "bin %d last offset", bin)
	}
}

// TestTableUpToDate fails when table.go differs from what the generator
// produces now: run go generate ./bins.
func TestTableUpToDate(t *testing.T) {
	want, err := bintable.Source()
	require.NoError(t, err)
	got, err := os.ReadFile("table.go")
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got), "table.go is stale: run go generate ./bins")
}

func TestDeriveMatchesTable(t *testing.T) {
	table := bintable.Derive()
	require.Len(t, table, NumBins)
	for bin, b := range table {
		assert.Equal(t, b.Size, Size[bin], "bin %d", bin)
		assert.Equal(t, b.Elements, Elements[bin], "bin %d", bin)
		assert.Equal(t, b.Pages, Pages[bin], "bin %d", bin)
		assert.Equal(t, b.Reciprocal, Reciprocal[bin], "bin %d", bin)
		assert.Equal(t, b.Pages*RunPageSize-b.Elements*b.Size, b.Waste, "bin %d", bin)
	}
}

var sinkBin uint32

// BenchmarkBin and BenchmarkSizeToBinMixed map pseudo-random sizes of 0..255
// bytes, the bulk of PHP's traffic, drawn from xorshift so that no branch
// predictor learns them: there the size tests of SizeToBin mispredict, the
// table load of Bin does not. (A short repeating table of sizes would be
// learnt, and hide the difference.)
func BenchmarkBin(b *testing.B) {
	var acc uint32
	x := uint32(1)
	for b.Loop() {
		x = xorshift(x)
		acc += Bin(uintptr(x & 255))
	}
	sinkBin = acc
}

func BenchmarkSizeToBinMixed(b *testing.B) {
	var acc uint32
	x := uint32(1)
	for b.Loop() {
		x = xorshift(x)
		acc += SizeToBin(max(uintptr(x&255), MinBlock))
	}
	sinkBin = acc
}

func xorshift(x uint32) uint32 {
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	return x
}

func BenchmarkSizeToBin(b *testing.B) {
	var acc uint32
	for i := 0; b.Loop(); i++ {
		acc += SizeToBin(uintptr(i) & 2047)
	}
	sinkBin = acc
}

func BenchmarkElementIndex(b *testing.B) {
	var acc uint32
	for i := 0; b.Loop(); i++ {
		idx, exact := ElementIndex(uint32(i)&15, uint32(i)&4095)
		if exact {
			acc++
		}
		acc += idx
	}
	sinkBin = acc
}
