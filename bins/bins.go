// Package bins holds the table of zmm's small size classes and the mapping
// from a requested size to its bin.
//
// There are NumBins (30) bins, from MinSize (8) to MaxSize (3072) bytes, as
// in the Zend MM. A run of a bin is 1 to MaxRunPages (7) contiguous 4 KiB
// pages cut into blocks of the bin's size. The table (Size, Elements, Pages,
// Reciprocal) and the constants it is built from are in table.go, written by
// the mkbins generator from bins/internal/bintable: none is written here by
// hand.
package bins

//go:generate go run ./internal/mkbins

import "math/bits"

// The generated arrays must have exactly binMask+1 entries.
var _ [len(Reciprocal)]struct{} = [binMask + 1]struct{}{}

// Bin returns the bin a request of size bytes is served from: the smallest
// block size that holds max(size, MinBlock) bytes. It is one load from a
// generated table of 385 bytes, with no branch: the size tests that
// SizeToBin needs are unpredictable on mixed sizes, and a mispredicted
// branch costs more than an L1 hit. The caller must ensure size <= MaxSize;
// larger sizes give meaningless results.
func Bin(size uintptr) uint32 { return uint32(binByWords[(size+7)>>3&uintptr(len(binByWords)-1)]) }

// SizeToBin returns the bin of the smallest size class that holds size
// bytes. Sizes 0 and 1..8 give bin 0.
//
// The caller must ensure size <= MaxSize: larger sizes give meaningless
// results. It takes constant time, with no loop and no table: up to 64 bytes
// the bins are 8 bytes apart; above, each power-of-two interval holds 4 bins,
// so the bin follows from the bit length of size-1 and the two bits below its
// top bit.
func SizeToBin(size uintptr) uint32 {
	if size <= 64 {
		// (size+63)>>6 is 0 for size 0 and 1 for 1..64: a branch-free
		// (size != 0), so that size 0 gives bin 0.
		return uint32((size - (size+63)>>6) >> 3)
	}
	t1 := size - 1
	t2 := uint(bits.Len(uint(t1))) - 3 // keep the top 3 bits of t1
	return uint32(t1>>t2) + uint32(t2-3)<<2
}

// ElementIndex returns the index of the block of bin that contains offset,
// a byte offset from the start of a run of that bin, and whether offset is
// exactly the start of that block. It uses no divide: the index is the high
// word of offset times a 32-bit reciprocal of the block size, and the low
// word of the same product tells whether the division was exact.
//
// The caller must ensure bin < NumBins and offset < Pages[bin]*RunPageSize.
// Other bins read zero padding (index 0, not exact) or another bin's entry;
// the function never panics.
func ElementIndex(bin uint32, offset uint32) (index uint32, exact bool) {
	m := Reciprocal[bin&binMask]
	p := uint64(offset) * uint64(m)
	return uint32(p >> ReciprocalShift), uint32(p) < m
}
