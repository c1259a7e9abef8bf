package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// The Zend MM finds huge blocks by walking an unsorted list; zmm keeps them
// in a table, an array in mapped memory, and writes each block's index into
// the frame-table entry of its first frame, so every lookup is O(1). The
// table also holds the huge cache (hugecache.go).

type hugeRec struct {
	addr, size uintptr
}

const (
	hugeCacheSlots = 4
	// hugeCacheMaxBytes bounds the bytes kept in the huge cache.
	hugeCacheMaxBytes = 64 << 20
	// hugeCacheResidentBytes bounds the bytes of cached mappings that keep
	// their pages, with hugeCacheResidentShare: at most 1/16 of the heap's
	// real usage (the newest always keeps them, whatever its size).
	hugeCacheResidentBytes = 16 << 20
	hugeCacheResidentShare = 16
	hugeRecSize            = unsafe.Sizeof(hugeRec{})
)

type hugeTable struct {
	recs   uintptr // mapped array of hugeRec
	n, cap uint32
	cacheN uint32
	// resident has bit i set when cache[i] still has its pages; the
	// others were purged. The resident ones hold at most
	// min(hugeCacheResidentBytes, real usage / hugeCacheResidentShare),
	// or are the newest alone.
	resident   uint8
	cache      [hugeCacheSlots]hugeRec
	cacheBytes uintptr
}

func (t *hugeTable) at(i uint32) *hugeRec {
	return (*hugeRec)(ptr(t.recs + uintptr(i)*hugeRecSize))
}

// add records a huge block and returns its index.
func (t *hugeTable) add(addr, size uintptr) uint32 {
	if t.n == t.cap {
		t.grow()
	}
	i := t.n
	*t.at(i) = hugeRec{addr, size}
	t.n++
	return i
}

// grow doubles the table. The table's own array always comes from the OS,
// whatever the heap's storage.
func (t *hugeTable) grow() {
	newCap := max(2*t.cap, uint32(chunk.OSPageSize()/hugeRecSize))
	bytes := uintptr(newCap) * hugeRecSize
	p, err := chunk.Map(bytes, chunk.OSPageSize())
	if err != nil {
		fail(ErrOutOfMemory, "Alloc", 0, "Out of memory (huge block table of %d bytes: %v)", bytes, err)
	}
	if t.recs != 0 {
		old := uintptr(t.cap) * hugeRecSize
		copy(unsafe.Slice((*byte)(p), old), unsafe.Slice((*byte)(ptr(t.recs)), old))
		_ = chunk.Unmap(ptr(t.recs), old)
	}
	t.recs, t.cap = uintptr(p), newCap
}

// release unmaps the table itself.
func (t *hugeTable) release() {
	if t.recs != 0 {
		_ = chunk.Unmap(ptr(t.recs), uintptr(t.cap)*hugeRecSize)
		t.recs, t.n, t.cap = 0, 0, 0
	}
}
