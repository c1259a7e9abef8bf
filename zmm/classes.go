package zmm

import (
	"math/bits"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// Size classification, in one place: which kind of block a request gets,
// its bin, its pages, and the bytes it takes (its class size, which Usage
// counts). In debug mode the size classified is the internal one: the
// request plus the debug record and tail guard.
//
//	kind   sizes                           class size
//	small  0 .. bins.MaxSize (3072)         the bin's size (16 at least)
//	large  .. MaxLargeSize (1020 KiB)       whole 4 KiB pages
//	huge   above                           rounded up to the OS page

// MaxLargeSize is the largest request served by a run of pages inside a
// chunk: 255 pages, half of a chunk's 511. Anything larger is a huge block,
// a mapping of its own rounded to the OS page. The Zend MM serves runs up to
// the whole chunk (2 MiB - 4 KiB), so that a run of 256 pages or more leaves
// no room for another of its size: a heap of 1 MiB blocks is half empty
// (php-src #13599), and a 64 MiB limit holds 31 of them. With runs of at most
// half a chunk, two of the largest share a chunk, and a 1 MiB block takes 1
// MiB of mapping: the same limit holds 62.
const MaxLargeSize = (chunk.Pages - chunk.FirstPage) / 2 * chunk.PageSize

// blockKind is the kind of a block.
type blockKind uint8

const (
	kindSmall blockKind = iota + 1
	kindLarge
	kindHuge
)

func (k blockKind) String() string {
	switch k {
	case kindSmall:
		return "small"
	case kindLarge:
		return "large"
	case kindHuge:
		return "huge"
	}
	return "none"
}

// isSmall reports whether a request of size bytes is served by a bin. The
// fast paths test it inline.
func isSmall(size uintptr) bool { return size <= bins.MaxSize }

// kindOf is the kind of block a request of size bytes gets.
func kindOf(size uintptr) blockKind {
	switch {
	case isSmall(size):
		return kindSmall
	case size <= MaxLargeSize:
		return kindLarge
	}
	return kindHuge
}

// smallBin is the bin of a small request; sizes below the smallest slot
// are bumped to it, so Alloc(0) returns a 16-byte block.
func smallBin(size uintptr) uint32 { return bins.Bin(size) }

// fitsBin reports whether a request of size bytes is served by bin: a
// small block of that bin can stay where it is.
func fitsBin(size uintptr, bin uint32) bool { return isSmall(size) && smallBin(size) == bin }

// largePages is the number of pages of a large request.
func largePages(size uintptr) uint32 {
	return uint32((size + chunk.PageSize - 1) >> chunk.PageShift)
}

// roundHuge rounds a huge request to the OS page (zend_mm_alloc_huge). A
// size that wraps is reported as op's ErrOverflow.
func roundHuge(op string, size uintptr) uintptr {
	page := chunk.OSPageSize()
	if size+page-1 < size {
		fail(ErrOverflow, op, 0, "Possible integer overflow in memory allocation (%d + %d)", size, page-1)
	}
	return (size + page - 1) &^ (page - 1)
}

// classSize is the bytes a request of size bytes takes, as Usage counts
// them.
func classSize(op string, size uintptr) uintptr {
	switch kindOf(size) {
	case kindSmall:
		return uintptr(bins.Size[smallBin(size)&31])
	case kindLarge:
		return uintptr(largePages(size)) << chunk.PageShift
	}
	return roundHuge(op, size)
}

// frameCount is the number of 2 MiB frames a mapping of size bytes covers.
func frameCount(size uintptr) uintptr { return (size + chunk.Size - 1) >> chunk.Shift }

// safeSize computes n*size+offset or panics if it does not fit a uintptr
// (zend_safe_address_guarded).
func safeSize(op string, n, size, offset uintptr) uintptr {
	total, ok := SafeSize(n, size, offset)
	if !ok {
		overflowError(op, n, size, offset)
	}
	return total
}

// SafeSize computes n*size+offset as SafeAlloc does and reports whether it
// fits in a uintptr without wrapping (zend_safe_address).
func SafeSize(n, size, offset uintptr) (uintptr, bool) {
	hi, lo := bits.Mul64(uint64(n), uint64(size))
	sum, carry := bits.Add64(lo, uint64(offset), 0)
	return uintptr(sum), hi == 0 && carry == 0
}
