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
	// hugeCacheSlots is how many freed mappings the huge cache holds: enough
	// for a big heap churning 1-2 MiB blocks to find one that fits most of
	// the time (4 slots missed 40% on issue 20's large mix at 400 live
	// blocks; 32 took a third of the time per operation).
	hugeCacheSlots = 32
	// hugeCacheMaxBytes bounds the bytes kept in the huge cache.
	hugeCacheMaxBytes = 64 << 20
	// hugeCacheResidentShare bounds the bytes of cached mappings that keep
	// their pages: at most 1/8 of the heap's real usage (the newest always
	// keeps them, whatever its size).
	hugeCacheResidentShare = 8
	// hugeReuseSlack: a cached mapping is handed out whole, not trimmed,
	// when what it has beyond the request is at most 1/hugeReuseSlack of it.
	hugeReuseSlack = 4
	hugeRecSize    = unsafe.Sizeof(hugeRec{})
)

// hugeTable is the heap's huge blocks and its huge cache. Both live in one
// mapping, the cache's hugeCacheSlots records first, then the table's cap
// records; the heap state (in the main chunk's header page) keeps only the
// counts.
type hugeTable struct {
	recs   uintptr // the mapping: the cache's records, then the table's
	n, cap uint32
	cacheN uint32
	// resident has bit i set when cached mapping i still has its pages; the
	// others were purged. The resident ones hold at most
	// real usage / hugeCacheResidentShare, or are the newest alone.
	resident   uint32
	cacheBytes uintptr
}

// cache is the huge cache, oldest first; its first cacheN records are
// valid. Only a heap that has had a huge block has a mapping, and only
// such a heap has cached mappings.
func (t *hugeTable) cache() *[hugeCacheSlots]hugeRec {
	return (*[hugeCacheSlots]hugeRec)(ptr(t.recs))
}

// cached is the valid part of the cache (nil without a mapping).
func (t *hugeTable) cached() []hugeRec {
	if t.cacheN == 0 {
		return nil
	}
	return t.cache()[:t.cacheN]
}

// at is the table's record i.
func (t *hugeTable) at(i uint32) *hugeRec {
	return (*hugeRec)(ptr(t.recs + uintptr(hugeCacheSlots+i)*hugeRecSize))
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
	// The mapping doubles, from one OS page: a whole number of pages.
	oldBytes := uintptr(hugeCacheSlots+t.cap) * hugeRecSize
	bytes := max(2*oldBytes, chunk.OSPageSize())
	newCap := uint32(bytes/hugeRecSize) - hugeCacheSlots
	p, err := chunk.Map(bytes, chunk.OSPageSize())
	if err != nil {
		fail(ErrOutOfMemory, "Alloc", 0, "Out of memory (huge block table of %d bytes: %v)", bytes, err)
	}
	if t.recs != 0 {
		copy(unsafe.Slice((*byte)(p), oldBytes), unsafe.Slice((*byte)(ptr(t.recs)), oldBytes))
		_ = chunk.Unmap(ptr(t.recs), oldBytes)
	}
	t.recs, t.cap = uintptr(p), newCap
}

// release unmaps the table itself; the cache must be empty.
func (t *hugeTable) release() {
	if t.recs != 0 {
		_ = chunk.Unmap(ptr(t.recs), uintptr(hugeCacheSlots+t.cap)*hugeRecSize)
		t.recs, t.n, t.cap = 0, 0, 0
	}
}
