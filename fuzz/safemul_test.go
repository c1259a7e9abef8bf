package fuzz

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"testing"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// FuzzSafeSize checks zmm.SafeSize, SafeAlloc and Calloc against math/big
// for every n, size and offset: SafeSize's value and ok; SafeAlloc and
// Calloc panic with ErrOverflow and the Zend MM's exact message exactly
// when n*size+offset (n*size for Calloc) does not fit in 64 bits. Results
// that fit are allocated only up to 1 MiB (the block must be at least that
// big, and Calloc's zeroed); larger ones are checked through SafeSize alone.
func FuzzSafeSize(f *testing.F) {
	h, err := zmm.New(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(h.Close)
	for _, s := range smSeeds() {
		f.Add(s.n, s.size, s.offset)
	}
	f.Fuzz(func(t *testing.T, n, size, offset uint64) {
		smCheck(t, h, n, size, offset)
	})
}

// smMaxAlloc is the largest result the fuzz target actually allocates.
const smMaxAlloc = 1 << 20

var smLimit = new(big.Int).SetUint64(math.MaxUint64)

// smExact returns n*size+offset and whether it fits in 64 bits.
func smExact(n, size, offset uint64) (uint64, bool) {
	r := new(big.Int).Mul(new(big.Int).SetUint64(n), new(big.Int).SetUint64(size))
	r.Add(r, new(big.Int).SetUint64(offset))
	if r.Cmp(smLimit) > 0 {
		return 0, false
	}
	return r.Uint64(), true
}

func smCheck(t *testing.T, h *zmm.Heap, n, size, offset uint64) {
	want, fits := smExact(n, size, offset)
	got, ok := zmm.SafeSize(uintptr(n), uintptr(size), uintptr(offset))
	if ok != fits || (fits && uint64(got) != want) {
		t.Fatalf("SafeSize(%d, %d, %d) = %d, %v; math/big: %d, fits %v", n, size, offset, got, ok, want, fits)
	}
	smCheckAlloc(t, h, "SafeAlloc", n, size, offset, want, fits, func() unsafe.Pointer {
		return h.SafeAlloc(uintptr(n), uintptr(size), uintptr(offset))
	})
	product, pfits := smExact(n, size, 0)
	smCheckAlloc(t, h, "Calloc", n, size, 0, product, pfits, func() unsafe.Pointer {
		return h.Calloc(uintptr(n), uintptr(size))
	})
}

// smCheckAlloc runs alloc (SafeAlloc or Calloc of n, size, offset, whose
// exact result is want, fitting in 64 bits or not) when it must overflow
// or is small enough to allocate.
func smCheckAlloc(t *testing.T, h *zmm.Heap, op string, n, size, offset, want uint64, fits bool, alloc func() unsafe.Pointer) {
	if fits && want > smMaxAlloc {
		return
	}
	usage := h.Usage()
	var p unsafe.Pointer
	err := zmm.Try(func() { p = alloc() })
	if !fits {
		msg := fmt.Sprintf("Possible integer overflow in memory allocation (%d * %d + %d)", n, size, offset)
		var ze *zmm.Error
		switch {
		case err == nil:
			h.Free(p)
			t.Fatalf("%s(%d, %d, %d) overflows but returned a block", op, n, size, offset)
		case !errors.As(err, &ze) || ze.Kind != zmm.ErrOverflow:
			t.Fatalf("%s(%d, %d, %d): %v, want ErrOverflow", op, n, size, offset, err)
		case ze.Msg != msg:
			t.Fatalf("%s(%d, %d, %d): message %q, want %q", op, n, size, offset, ze.Msg, msg)
		case ze.Op != op:
			t.Fatalf("%s(%d, %d, %d): Op %q", op, n, size, offset, ze.Op)
		}
		if h.Usage() != usage {
			t.Fatalf("%s(%d, %d, %d) overflowed but changed the usage from %d to %d", op, n, size, offset, usage, h.Usage())
		}
		return
	}
	if err != nil {
		t.Fatalf("%s(%d, %d, %d) = %d bytes: %v", op, n, size, offset, want, err)
	}
	if bs := h.BlockSize(p); uint64(bs) < want {
		t.Fatalf("%s(%d, %d, %d): BlockSize %d < %d", op, n, size, offset, bs, want)
	}
	b := zmm.Bytes(p, int(want))
	if op == "Calloc" {
		for i, c := range b {
			if c != 0 {
				t.Fatalf("Calloc(%d, %d): byte %d is %#x, not zero", n, size, i, c)
			}
		}
	}
	// Dirty the block, so that a Calloc that reuses it must clear it.
	for i := range b {
		b[i] = 0xA5
	}
	h.Free(p)
	if h.Usage() != usage {
		t.Fatalf("%s(%d, %d, %d) and Free changed the usage from %d to %d", op, n, size, offset, usage, h.Usage())
	}
}

type smSeed struct {
	name            string
	n, size, offset uint64
}

// smSeeds: the edges of 64-bit n*size+offset — exact fits, one past,
// products that wrap to small numbers, zero operands, and small sizes that
// are allocated.
func smSeeds() []smSeed {
	const max64 = math.MaxUint64
	return []smSeed{
		{"zero", 0, 0, 0},
		{"one", 1, 1, 0},
		{"small", 10, 100, 24},
		{"calloc-1mib", 1, 1 << 20, 0},
		{"safe-1mib-plus1", 1, 1 << 20, 1},
		{"1mib-by-offset", 0, 12345, 1 << 20},
		{"zero-n-huge-size", 0, max64, 7},
		{"zero-size-huge-n", max64, 0, 7},
		{"max-offset", 0, 0, max64},
		{"max-offset-plus1", 1, 1, max64},
		{"max-n", max64, 1, 0},
		{"max-n-plus1", max64, 1, 1},
		{"2^32-squared", 1 << 32, 1 << 32, 0},
		{"2^32-by-2^32-1", 1 << 32, 1<<32 - 1, 1<<32 - 1},
		{"2^32-by-2^32-1-plus1", 1 << 32, 1<<32 - 1, 1 << 32},
		{"thirds", 3, 0x5555555555555555, 0},
		{"thirds-plus1", 3, 0x5555555555555555, 1},
		{"2^63-by-2", 2, 1 << 63, 0},
		{"wraps-to-small", 1 << 33, 1<<31 + 1, 0},
		{"wraps-to-zero", 1 << 40, 1 << 24, 0},
		{"sum-wraps", 1 << 20, 1 << 43, 1 << 63},
		{"sum-fits", 1 << 20, 1 << 43, 1<<63 - 1},
		{"pages", 256, 4096, 16},
		{"huge-no-alloc", 3, 1 << 20, 0},
	}
}

// TestSafeSizeSeeds writes smSeeds to testdata/fuzz/FuzzSafeSize with
// ZMM_WRITE_SEEDS=1.
func TestSafeSizeSeeds(t *testing.T) {
	var files []smCorpusFile
	for _, s := range smSeeds() {
		files = append(files, smCorpusFile{s.name, []any{s.n, s.size, s.offset}})
	}
	smWriteCorpus(t, "FuzzSafeSize", files)
}
