package chunk

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// The frame table says, for every 2 MiB frame of the address space, which
// heap owns it and what it holds. zmm looks a pointer's frame up before it
// reads any chunk header, so that a pointer zmm never handed out is reported
// instead of faulting.
//
// The table is process-wide and shared by heaps running in different
// goroutines, so every entry is read and written atomically. Like the Go
// runtime's arena index it has two levels over a 48-bit address space: a
// root array in Go memory indexed by addr>>34, and leaves of 8192 entries
// (64 KiB, one entry per frame) mapped from the OS on first use and never
// freed. A leaf covers 16 GiB, so a process touches only a few of them.
const (
	// AddressBits is the width of the address space the table covers:
	// addresses at or above 1<<AddressBits have no frame.
	AddressBits = 48

	leafBits  = 13
	leafShift = Shift + leafBits
	rootBits  = AddressBits - leafShift
)

type frameLeaf [1 << leafBits]uint64

var frameRoot [1 << rootBits]atomic.Pointer[frameLeaf]

// Frame is one entry of the frame table: bits 0..31 hold the owner heap id
// (0 for nobody), bits 32..35 the FrameKind and bits 36..63 an auxiliary
// value whose meaning depends on the kind. The zero Frame means nothing
// zmm knows about lives there.
type Frame uint64

// FrameKind says what a frame holds.
type FrameKind uint8

const (
	// FrameNone: zmm has never had anything here.
	FrameNone FrameKind = iota
	// FrameChunk: a live chunk.
	FrameChunk
	// FrameHuge: the first frame of a huge block. Aux is the index of the
	// block in its heap's huge table.
	FrameHuge
	// FrameHugeInterior: a later frame of a huge block. Aux is the distance
	// in frames back to the block's first frame.
	FrameHugeInterior
	// FrameFreedChunk: a tombstone, the owner unmapped a chunk here.
	FrameFreedChunk
	// FrameFreedHuge: a tombstone, a huge block that started here was freed.
	FrameFreedHuge
	// FrameCachedChunk: a chunk kept in its owner's cache; it hands out no
	// blocks.
	FrameCachedChunk
	// FrameCachedHuge: a huge mapping kept in its owner's cache.
	FrameCachedHuge
)

const (
	frameKindShift = 32
	frameKindBits  = 4
	frameAuxShift  = frameKindShift + frameKindBits

	// MaxFrameAux is the largest auxiliary value a Frame can hold.
	MaxFrameAux = 1<<(64-frameAuxShift) - 1
)

var frameKindNames = [...]string{
	FrameNone:         "none",
	FrameChunk:        "chunk",
	FrameHuge:         "huge",
	FrameHugeInterior: "huge-interior",
	FrameFreedChunk:   "freed-chunk",
	FrameFreedHuge:    "freed-huge",
	FrameCachedChunk:  "cached-chunk",
	FrameCachedHuge:   "cached-huge",
}

func (k FrameKind) String() string {
	if int(k) < len(frameKindNames) {
		return frameKindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MakeFrame builds a frame table entry. It panics if kind does not fit in
// four bits or aux is larger than MaxFrameAux.
func MakeFrame(kind FrameKind, owner uint32, aux uint32) Frame {
	if kind >= 1<<frameKindBits || aux > MaxFrameAux {
		panic(badFrame{kind, aux})
	}
	return Frame(owner) | Frame(kind)<<frameKindShift | Frame(aux)<<frameAuxShift
}

// badFrame is MakeFrame's panic value; a value rather than a formatted
// string keeps MakeFrame inlinable.
type badFrame struct {
	kind FrameKind
	aux  uint32
}

func (b badFrame) Error() string {
	return fmt.Sprintf("zmm: frame kind %d or aux %d does not fit in a frame table entry (kind < %d, aux <= %d)",
		b.kind, b.aux, 1<<frameKindBits, MaxFrameAux)
}

// Kind returns what the frame holds.
func (f Frame) Kind() FrameKind { return FrameKind(f >> frameKindShift & (1<<frameKindBits - 1)) }

// Owner returns the id of the heap that owns the frame, 0 for nobody.
func (f Frame) Owner() uint32 { return uint32(f) }

// Aux returns the kind-specific value: the huge-table index for FrameHuge,
// the distance back to the first frame for FrameHugeInterior.
func (f Frame) Aux() uint32 { return uint32(f >> frameAuxShift) }

// String describes the frame for error messages.
func (f Frame) String() string {
	switch k, o, a := f.Kind(), f.Owner(), f.Aux(); {
	case f == 0:
		return "no zmm memory"
	case a != 0 && k != FrameHuge && k != FrameHugeInterior:
		return fmt.Sprintf("%s of heap %d (aux %d)", k, o, a)
	case k == FrameChunk:
		return fmt.Sprintf("chunk of heap %d", o)
	case k == FrameHuge:
		return fmt.Sprintf("huge block %d of heap %d", a, o)
	case k == FrameHugeInterior:
		return fmt.Sprintf("frame %d of a huge block of heap %d", a, o)
	case k == FrameFreedChunk:
		return fmt.Sprintf("freed chunk of heap %d", o)
	case k == FrameFreedHuge:
		return fmt.Sprintf("freed huge block of heap %d", o)
	case k == FrameCachedChunk:
		return fmt.Sprintf("cached chunk of heap %d", o)
	case k == FrameCachedHuge:
		return fmt.Sprintf("cached huge block of heap %d", o)
	default:
		return fmt.Sprintf("%s of heap %d", k, o)
	}
}

// LookupFrame returns the frame table entry for the 2 MiB frame containing
// addr: 0 if zmm never recorded anything there, including for addresses at
// or above 1<<AddressBits. It costs two dependent loads.
func LookupFrame(addr uintptr) Frame {
	i := addr >> leafShift
	if i >= uintptr(len(frameRoot)) {
		return 0
	}
	leaf := frameRoot[i].Load()
	if leaf == nil {
		return 0
	}
	return Frame(atomic.LoadUint64(&leaf[addr>>Shift&(1<<leafBits-1)]))
}

// SetFrame records f for the 2 MiB frame containing addr, mapping the leaf
// of the table on first use. It panics if addr is at or above
// 1<<AddressBits (callers check Addressable after mmap) or if the leaf cannot
// be mapped.
func SetFrame(addr uintptr, f Frame) {
	atomic.StoreUint64(frameEntry(addr), uint64(f))
}

// SetFrames records f for the n consecutive frames starting with the one
// containing addr, for example to tombstone a freed huge block.
func SetFrames(addr uintptr, n uintptr, f Frame) {
	if n == 0 {
		return
	}
	if n > 1<<(AddressBits-Shift) || !Addressable(addr&^(Size-1), n<<Shift) {
		panic(fmt.Sprintf("zmm: %d frames from address %#x reach beyond the frame table (2^%d)", n, addr, AddressBits))
	}
	for ; n > 0; n-- {
		atomic.StoreUint64(frameEntry(addr), uint64(f))
		addr += Size
	}
}

// Addressable reports whether [addr, addr+size) lies below 1<<AddressBits,
// the part of the address space the frame table covers. Callers check it
// after every mmap and treat a range beyond it as out of memory.
func Addressable(addr, size uintptr) bool {
	const limit = 1 << AddressBits
	return uint64(addr) < limit && uint64(size) <= limit-uint64(addr)
}

// frameEntry returns the address of addr's entry, creating its leaf if
// needed.
func frameEntry(addr uintptr) *uint64 {
	i := addr >> leafShift
	if i >= uintptr(len(frameRoot)) {
		panic(fmt.Sprintf("zmm: address %#x is beyond the frame table (2^%d)", addr, AddressBits))
	}
	root := &frameRoot[i]
	leaf := root.Load()
	if leaf == nil {
		leaf = newFrameLeaf(root)
	}
	return &leaf[addr>>Shift&(1<<leafBits-1)]
}

// newFrameLeaf maps a zeroed leaf and installs it in root, unless another
// goroutine got there first, in which case it unmaps its own and returns the
// winner's.
func newFrameLeaf(root *atomic.Pointer[frameLeaf]) *frameLeaf {
	size := unsafe.Sizeof(frameLeaf{})
	if ps := OSPageSize(); size < ps {
		size = ps
	}
	p, err := Map(size, OSPageSize())
	if err != nil {
		panic(fmt.Sprintf("zmm: cannot map a frame table leaf: %v", err))
	}
	leaf := (*frameLeaf)(p)
	if root.CompareAndSwap(nil, leaf) {
		return leaf
	}
	if err := Unmap(p, size); err != nil {
		panic(fmt.Sprintf("zmm: cannot unmap a spare frame table leaf: %v", err))
	}
	return root.Load()
}
