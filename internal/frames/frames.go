// Package frames is zmm's process-wide frame table: for every 2 MiB frame of
// the address space, which heap owns it and what it holds. It is internal:
// the guarantee that a bad pointer is reported, never followed, holds only
// while zmm's own packages alone write the table.
package frames

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
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
	leafShift = chunk.Shift + leafBits
	rootBits  = AddressBits - leafShift
)

type leafTable [1 << leafBits]uint64

var root [1 << rootBits]atomic.Pointer[leafTable]

// Frame is one entry of the frame table: bits 0..31 hold the owner heap id
// (0 for nobody), bits 32..35 the Kind and bits 36..63 an auxiliary
// value whose meaning depends on the kind. The zero Frame means nothing
// zmm knows about lives there.
type Frame uint64

// Kind says what a frame holds.
type Kind uint8

const (
	// None: zmm has never had anything here.
	None Kind = iota
	// Chunk: a live chunk.
	Chunk
	// Huge: the first frame of a huge block. Aux is the index of the
	// block in its heap's huge table.
	Huge
	// HugeInterior: a later frame of a huge block. Aux is the distance
	// in frames back to the block's first frame.
	HugeInterior
	// FreedChunk: a tombstone, the owner unmapped a chunk here.
	FreedChunk
	// FreedHuge: a tombstone, a huge block that started here was freed.
	FreedHuge
	// CachedChunk: a chunk kept in its owner's cache; it hands out no
	// blocks.
	CachedChunk
	// CachedHuge: a huge mapping kept in its owner's cache.
	CachedHuge
)

const (
	kindShift = 32
	kindBits  = 4
	auxShift  = kindShift + kindBits

	// MaxAux is the largest auxiliary value a Frame can hold.
	MaxAux = 1<<(64-auxShift) - 1
)

var kindNames = [...]string{
	None:         "none",
	Chunk:        "chunk",
	Huge:         "huge",
	HugeInterior: "huge-interior",
	FreedChunk:   "freed-chunk",
	FreedHuge:    "freed-huge",
	CachedChunk:  "cached-chunk",
	CachedHuge:   "cached-huge",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Make builds a frame table entry. It panics if kind does not fit in
// four bits or aux is larger than MaxAux.
func Make(kind Kind, owner uint32, aux uint32) Frame {
	if kind >= 1<<kindBits || aux > MaxAux {
		panic(badFrame{kind, aux})
	}
	return Frame(owner) | Frame(kind)<<kindShift | Frame(aux)<<auxShift
}

// badFrame is Make's panic value; a value rather than a formatted
// string keeps Make inlinable.
type badFrame struct {
	kind Kind
	aux  uint32
}

func (b badFrame) Error() string {
	return fmt.Sprintf("zmm: frame kind %d or aux %d does not fit in a frame table entry (kind < %d, aux <= %d)",
		b.kind, b.aux, 1<<kindBits, MaxAux)
}

// Kind returns what the frame holds.
func (f Frame) Kind() Kind { return Kind(f >> kindShift & (1<<kindBits - 1)) }

// Owner returns the id of the heap that owns the frame, 0 for nobody.
func (f Frame) Owner() uint32 { return uint32(f) }

// Aux returns the kind-specific value: the huge-table index for Huge,
// the distance back to the first frame for HugeInterior.
func (f Frame) Aux() uint32 { return uint32(f >> auxShift) }

// String describes the frame for error messages.
func (f Frame) String() string {
	switch k, o, a := f.Kind(), f.Owner(), f.Aux(); {
	case f == 0:
		return "no zmm memory"
	case a != 0 && k != Huge && k != HugeInterior:
		return fmt.Sprintf("%s of heap %d (aux %d)", k, o, a)
	case k == Chunk:
		return fmt.Sprintf("chunk of heap %d", o)
	case k == Huge:
		return fmt.Sprintf("huge block %d of heap %d", a, o)
	case k == HugeInterior:
		return fmt.Sprintf("frame %d of a huge block of heap %d", a, o)
	case k == FreedChunk:
		return fmt.Sprintf("freed chunk of heap %d", o)
	case k == FreedHuge:
		return fmt.Sprintf("freed huge block of heap %d", o)
	case k == CachedChunk:
		return fmt.Sprintf("cached chunk of heap %d", o)
	case k == CachedHuge:
		return fmt.Sprintf("cached huge block of heap %d", o)
	default:
		return fmt.Sprintf("%s of heap %d", k, o)
	}
}

// Lookup returns the frame table entry for the 2 MiB frame containing
// addr: 0 if zmm never recorded anything there, including for addresses at
// or above 1<<AddressBits. It costs two dependent loads.
func Lookup(addr uintptr) Frame {
	i := addr >> leafShift
	if i >= uintptr(len(root)) {
		return 0
	}
	leaf := root[i].Load()
	if leaf == nil {
		return 0
	}
	return Frame(atomic.LoadUint64(&leaf[addr>>chunk.Shift&(1<<leafBits-1)]))
}

// Set records f for the 2 MiB frame containing addr, mapping the leaf
// of the table on first use. It panics if addr is at or above
// 1<<AddressBits (callers check Addressable after mmap) or if the leaf cannot
// be mapped.
func Set(addr uintptr, f Frame) {
	atomic.StoreUint64(entry(addr), uint64(f))
}

// SetRange records f for the n consecutive frames starting with the one
// containing addr, for example to tombstone a freed huge block.
func SetRange(addr uintptr, n uintptr, f Frame) {
	if n == 0 {
		return
	}
	if n > 1<<(AddressBits-chunk.Shift) || !Addressable(addr&^(chunk.Size-1), n<<chunk.Shift) {
		panic(fmt.Sprintf("zmm: %d frames from address %#x reach beyond the frame table (2^%d)", n, addr, AddressBits))
	}
	for ; n > 0; n-- {
		atomic.StoreUint64(entry(addr), uint64(f))
		addr += chunk.Size
	}
}

// Addressable reports whether [addr, addr+size) lies below 1<<AddressBits,
// the part of the address space the frame table covers. Callers check it
// after every mmap and treat a range beyond it as out of memory.
func Addressable(addr, size uintptr) bool {
	const limit = 1 << AddressBits
	return uint64(addr) < limit && uint64(size) <= limit-uint64(addr)
}

// entry returns the address of addr's entry, creating its leaf if
// needed.
func entry(addr uintptr) *uint64 {
	i := addr >> leafShift
	if i >= uintptr(len(root)) {
		panic(fmt.Sprintf("zmm: address %#x is beyond the frame table (2^%d)", addr, AddressBits))
	}
	root := &root[i]
	leaf := root.Load()
	if leaf == nil {
		leaf = newLeaf(root)
	}
	return &leaf[addr>>chunk.Shift&(1<<leafBits-1)]
}

// newLeaf maps a zeroed leaf and installs it in root, unless another
// goroutine got there first, in which case it unmaps its own and returns the
// winner's.
func newLeaf(root *atomic.Pointer[leafTable]) *leafTable {
	size := unsafe.Sizeof(leafTable{})
	if ps := chunk.OSPageSize(); size < ps {
		size = ps
	}
	p, err := chunk.Map(size, chunk.OSPageSize())
	if err != nil {
		panic(fmt.Sprintf("zmm: cannot map a frame table leaf: %v", err))
	}
	leaf := (*leafTable)(p)
	if root.CompareAndSwap(nil, leaf) {
		return leaf
	}
	if err := chunk.Unmap(p, size); err != nil {
		panic(fmt.Sprintf("zmm: cannot unmap a spare frame table leaf: %v", err))
	}
	return root.Load()
}
