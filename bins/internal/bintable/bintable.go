// Package bintable derives zmm's table of small size classes and renders it
// as the Go source of bins/table.go. It is the logic behind the mkbins
// generator, kept importable so that a test can check that the committed
// table.go is what the generator produces now.
//
// Everything is derived except the number of pages per run, which is the
// Zend MM's own choice and is given below as the one explicit input.
// Derive panics if any invariant of the table breaks.
package bintable

import (
	"bytes"
	"fmt"
	"go/format"

	"github.com/gozmm/zmm/chunk"
)

const (
	// MinSize is the smallest block size (the first bin).
	MinSize = 8
	// MaxSize is the largest small block size (the last bin).
	MaxSize = 3072
	// PageSize is zmm's page size, in which runs are counted: the chunk
	// package's, not a copy.
	PageSize = chunk.PageSize
	// RunPagesLimit is the most pages the rules allow a run of one bin to
	// span (the Zend MM's limit); the table's longest run may be shorter
	// (MaxRunPages in the generated table is the longest one).
	RunPagesLimit = 8
	// NumBins is the number of bins the rules below must produce.
	NumBins = 30
	// TableLen is the length of the generated arrays: NumBins rounded up
	// to a power of two, so that indexing with bin&(TableLen-1) needs no
	// bounds check.
	TableLen = 32
	// ReciprocalShift is the shift used with the reciprocals: the element
	// index is the high 32 bits of the 64-bit product offset*reciprocal.
	ReciprocalShift = 32
	// MinBlock is the smallest block zmm serves from the bins: a free slot
	// holds the free-list link and its check word, two words.
	MinBlock = 16
	// BinByWordsLen is the length of the size-to-bin table, indexed by a
	// size rounded up to whole 8-byte words: MaxSize/8+1 entries rounded up
	// to a power of two, so that a masked index needs no bounds check.
	BinByWordsLen = 512
)

// runPages is the number of pages per run of each bin, in bin order. This is
// the Zend MM's choice (ZEND_MM_BINS_INFO), made to keep the unused tail of a
// run small while keeping runs at most 8 pages long. It is the generator's one
// explicit input: no simple rule reproduces it. For example 2048-byte blocks
// get 4 pages (8 elements) although 3 pages (6 elements) would waste nothing,
// while 3072-byte blocks get 3 pages (4 elements); and 896 bytes take 2 pages
// while 1792 take 7, although 1792 over 4 pages wastes the same share of the
// run as 896 over 2.
var runPages = [NumBins]uint32{
	1, 1, 1, 1, 1, 1, 1, 1, // 8 .. 64, steps of 8
	1, 1, 1, 1, // 80 .. 128
	1, 1, 1, 1, // 160 .. 256
	5, 3, 1, 1, // 320 .. 512
	5, 3, 2, 2, // 640 .. 1024
	5, 3, 7, 4, // 1280 .. 2048
	5, 3, // 2560 .. 3072
}

// Bin is one row of the table.
type Bin struct {
	Size       uint32 // block size in bytes
	Elements   uint32 // blocks per run
	Pages      uint32 // pages per run
	Waste      uint32 // bytes of the run left unused
	Reciprocal uint32 // offset/Size == offset*Reciprocal >> ReciprocalShift
}

// Sizes returns the block sizes: steps of 8 from MinSize to 64, then every
// power-of-two interval [2^k, 2^(k+1)) split into 4 equal steps, up to
// MaxSize.
func Sizes() []uint32 {
	var sizes []uint32
	for s := uint32(MinSize); s <= 64; s += 8 {
		sizes = append(sizes, s)
	}
	for base := uint32(64); ; base *= 2 {
		step := base / 4
		for i := uint32(1); i <= 4; i++ {
			s := base + i*step
			if s > MaxSize {
				return sizes
			}
			sizes = append(sizes, s)
		}
	}
}

// reciprocal returns the multiplier m = ceil(2^32 / size). The product
// offset*m fits in 64 bits for any 32-bit offset; Derive checks exhaustively
// that its high word is offset/size for every offset of a run.
func reciprocal(size uint32) uint32 {
	m := (uint64(1)<<ReciprocalShift + uint64(size) - 1) / uint64(size)
	if m > 1<<32-1 {
		panic(fmt.Sprintf("bintable: reciprocal of %d does not fit in 32 bits", size))
	}
	return uint32(m)
}

// checkReciprocal verifies, for every offset of a run of b, that the high
// word of offset*Reciprocal is offset/Size and that its low word is below
// Reciprocal exactly when offset is a multiple of Size.
func checkReciprocal(b Bin) {
	run := b.Pages * PageSize
	for off := uint32(0); off < run; off++ {
		p := uint64(off) * uint64(b.Reciprocal)
		idx, lo := uint32(p>>ReciprocalShift), uint32(p)
		if idx != off/b.Size {
			panic(fmt.Sprintf("bintable: size %d: offset %d gives index %d, want %d", b.Size, off, idx, off/b.Size))
		}
		if exact := lo < b.Reciprocal; exact != (off%b.Size == 0) {
			panic(fmt.Sprintf("bintable: size %d: offset %d: exactness test says %v", b.Size, off, exact))
		}
	}
}

// Derive builds the table and checks its invariants. It panics if one breaks.
func Derive() []Bin {
	sizes := Sizes()
	if len(sizes) != NumBins {
		panic(fmt.Sprintf("bintable: %d sizes, want %d", len(sizes), NumBins))
	}
	if sizes[0] != MinSize || sizes[len(sizes)-1] != MaxSize {
		panic(fmt.Sprintf("bintable: sizes run from %d to %d, want %d to %d", sizes[0], sizes[len(sizes)-1], MinSize, MaxSize))
	}
	table := make([]Bin, len(sizes))
	for i, size := range sizes {
		pages := runPages[i]
		run := pages * PageSize
		b := Bin{
			Size:       size,
			Elements:   run / size,
			Pages:      pages,
			Waste:      run % size,
			Reciprocal: reciprocal(size),
		}
		switch {
		case size%8 != 0:
			panic(fmt.Sprintf("bintable: bin %d: size %d is not a multiple of 8", i, size))
		case i > 0 && size <= table[i-1].Size:
			panic(fmt.Sprintf("bintable: bin %d: size %d does not grow", i, size))
		case pages < 1 || pages > RunPagesLimit:
			panic(fmt.Sprintf("bintable: bin %d: %d pages per run, want 1..%d", i, pages, RunPagesLimit))
		case b.Elements != pages*PageSize/size || b.Elements == 0:
			panic(fmt.Sprintf("bintable: bin %d: %d elements per run", i, b.Elements))
		case b.Waste >= size || b.Elements*size+b.Waste != run:
			panic(fmt.Sprintf("bintable: bin %d: waste %d not below size %d", i, b.Waste, size))
		}
		checkReciprocal(b)
		table[i] = b
	}
	return table
}

// BinByWords returns the size-to-bin table: entry w is the bin of the
// smallest block size that holds max(8*w, MinBlock) bytes, for every w up to
// MaxSize/8; the entries past it are zero. Rounding a size up to whole words
// never changes its bin, since every block size is a multiple of 8.
func BinByWords(table []Bin) [BinByWordsLen]uint8 {
	if MaxSize/8 >= BinByWordsLen {
		panic("bintable: BinByWordsLen is too small for MaxSize")
	}
	var t [BinByWordsLen]uint8
	for w := range uint32(MaxSize/8 + 1) {
		need := max(8*w, MinBlock)
		bin := 0
		for table[bin].Size < need {
			bin++
		}
		t[w] = uint8(bin)
	}
	return t
}

// Source returns the gofmt'ed Go source of bins/table.go.
func Source() ([]byte, error) {
	table := Derive()
	var buf bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&buf, format, args...) }

	w("// Code generated by mkbins; DO NOT EDIT.\n\n")
	w("package bins\n\n")
	w("// The small size classes. Sizes go in steps of 8 up to 64, then split each\n")
	w("// power-of-two interval into 4 equal steps, up to %d. Pages per run are\n", MaxSize)
	w("// the Zend MM's choice (an explicit input of the generator); elements and\n")
	w("// waste follow from them. Waste is the unused tail of a run in bytes and as\n")
	w("// a share of the run.\n")
	w("//\n")
	w("//\tbin  size  elements  pages  waste  waste%%\n")
	for i, b := range table {
		pct := float64(b.Waste) * 100 / float64(b.Pages*PageSize)
		w("//\t%3d  %4d  %8d  %5d  %5d  %5.2f%%\n", i, b.Size, b.Elements, b.Pages, b.Waste, pct)
	}
	w("//\n")
	w("// The arrays have %d entries so that bin&%d indexes them without a bounds\n", TableLen, TableLen-1)
	w("// check; entries %d..%d are zero padding.\n\n", NumBins, TableLen-1)

	longest := uint32(0)
	for _, b := range table {
		longest = max(longest, b.Pages)
	}
	w("// The constants the table is built from, and what follows from it.\n")
	w("const (\n")
	w("// NumBins is the number of small size classes (ZEND_MM_BINS).\n")
	w("NumBins = %d\n", NumBins)
	w("// MinSize is the block size of bin 0 (ZEND_MM_MIN_SMALL_SIZE).\n")
	w("MinSize = %d\n", MinSize)
	w("// MaxSize is the block size of the last bin, the largest small size\n")
	w("// (ZEND_MM_MAX_SMALL_SIZE).\n")
	w("MaxSize = %d\n", MaxSize)
	w("// MinBlock is the smallest block served from the bins: a free slot holds\n")
	w("// the free-list link and its check word, two words, so requests of 0 to\n")
	w("// %d bytes get the %d-byte bin; bin 0 exists for the table's sake (it is\n", MinBlock, MinBlock)
	w("// the Zend MM's) and serves nothing.\n")
	w("MinBlock = %d\n", MinBlock)
	w("// RunPageSize is the page runs are counted in: chunk.PageSize, whatever\n")
	w("// the OS page size.\n")
	w("RunPageSize = %d\n", PageSize)
	w("// MaxRunPages is the longest run of any bin, in pages (the rules allow\n")
	w("// up to %d).\n", RunPagesLimit)
	w("MaxRunPages = %d\n", longest)
	w("// binMask masks a bin number into the arrays below.\n")
	w("binMask = %d\n", TableLen-1)
	w(")\n\n")

	array := func(name, doc string, field func(Bin) uint32) {
		w("%s", doc)
		w("var %s = [%d]uint32{\n", name, TableLen)
		for i, b := range table {
			w("%d, // %d\n", field(b), i)
		}
		w("}\n\n")
	}
	array("Size", "// Size is the block size of each bin in bytes.\n",
		func(b Bin) uint32 { return b.Size })
	array("Elements", "// Elements is the number of blocks in one run of each bin.\n",
		func(b Bin) uint32 { return b.Elements })
	array("Pages", "// Pages is the number of 4 KiB pages in one run of each bin.\n",
		func(b Bin) uint32 { return b.Pages })
	array("Reciprocal",
		"// Reciprocal is ceil(2^32 / Size[bin]) for each bin. For every offset in a\n"+
			"// run, offset*Reciprocal[bin] >> ReciprocalShift is offset/Size[bin], and\n"+
			"// the low 32 bits of that product are below Reciprocal[bin] exactly when\n"+
			"// offset is a multiple of Size[bin]. The generator checks both for every\n"+
			"// offset of every run.\n",
		func(b Bin) uint32 { return b.Reciprocal })
	w("// ReciprocalShift is the shift that goes with Reciprocal.\n")
	w("const ReciprocalShift = %d\n\n", ReciprocalShift)

	w("// binByWords maps a size rounded up to whole 8-byte words to its bin: entry\n")
	w("// w is the bin of the smallest block size that holds max(8*w, %d) bytes\n", MinBlock)
	w("// (MinBlock), for w up to MaxSize/8 = %d; the rest is zero padding, so that\n", MaxSize/8)
	w("// an index masked with %d needs no bounds check.\n", BinByWordsLen-1)
	w("var binByWords = [%d]uint8{", BinByWordsLen)
	byWords := BinByWords(table)
	for i, bin := range byWords[:MaxSize/8+1] {
		if i%16 == 0 {
			w("\n// %d..\n", i*8)
		}
		w("%d, ", bin)
	}
	w("\n}\n")

	src, err := format.Source(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("bintable: gofmt generated source: %w", err)
	}
	return src, nil
}
