package chunk

import (
	"math/bits"
	"unsafe"
)

// Page map entries. Every page of a chunk has one uint32 entry in
// Header.Map. The top two bits say what the page is; the rest depends on it.
//
//	00 free, or a later page of a large run (whole word is 0)
//	01 first page of a large run    low 10 bits: pages in the run
//	10 page of a small-bin run      low 5 bits: bin; bits 16..25: page index within the run;
//	                                bits 5..14 of the run's first page: GC's free-slot counter
//
// Page 0 (the header) is recorded as a one-page large run, so it is never
// free and never handed out.
//
// Invariants: a page's FreeMap bit is set exactly when it is in use; every
// page of a small run and the first page of a large run carry their entry;
// the later pages of a large run keep entry 0, as in the Zend MM, so that a
// large run costs one map write however long it is (an entry of 0 with the
// bit set is such a page: LargeRunStart finds its run, for error reports
// only). The GC counter is zero except while GC runs.
const (
	MapFree     uint32 = 0
	MapLarge    uint32 = 1 << 30
	MapSmall    uint32 = 2 << 30
	MapKindMask uint32 = 3 << 30

	mapPagesMask  = 0x3ff
	mapBinMask    = 0x1f
	mapIndexShift = 16
	mapIndexMask  = 0x3ff
	mapCountShift = 5
	mapCountMask  = 0x3ff
)

// LargeEntry is the map entry of the first page of a large run of n pages.
func LargeEntry(n uint32) uint32 { return MapLarge | n }

// SmallEntry is the map entry of page i of a run of small bin b.
func SmallEntry(b, i uint32) uint32 { return MapSmall | i<<mapIndexShift | b }

// EntryPages is the page count of a MapLarge entry.
func EntryPages(e uint32) uint32 { return e & mapPagesMask }

// EntryBin is the bin of a MapSmall entry.
func EntryBin(e uint32) uint32 { return e & mapBinMask }

// EntryIndex is the page index within its run of a MapSmall entry.
func EntryIndex(e uint32) uint32 { return e >> mapIndexShift & mapIndexMask }

// EntryCounter is GC's free-slot counter of the first page of a small run.
func EntryCounter(e uint32) uint32 { return e >> mapCountShift & mapCountMask }

// WithCounter returns the small-run entry e with its GC counter set to n.
func WithCounter(e, n uint32) uint32 {
	return e&^(mapCountMask<<mapCountShift) | n<<mapCountShift
}

// Header is the chunk header, laid over page 0 of every chunk. It holds only
// integers and uintptrs: it lives in mapped memory the GC never scans.
type Header struct {
	// Heap is the address of the owning heap's state, and HeapID its id in
	// the frame table: a chunk belongs to exactly one heap at a time.
	Heap   uintptr
	HeapID uint32
	// Num numbers the chunks of a heap in the order they were taken: the
	// main chunk is 0. Older chunks are kept in preference when caching.
	Num uint32
	// Next and Prev link the heap's live chunks in a ring anchored at the
	// main chunk; cached chunks are linked through Next alone.
	Next, Prev uintptr
	// FreePages counts the free pages (Pages-FirstPage when empty).
	FreePages uint32
	// FreeTail is a page from which every page to the end of the chunk is
	// free (the Zend MM's free_tail): a gap that starts there needs no
	// scan for its end. Taking pages raises it past them; freeing the
	// pages just below it lowers it; FindRun lowers it to the true start
	// of the trailing gap when it has scanned that far. It is never below
	// a page in use, and may be above the start of the trailing gap.
	FreeTail uint32
	// Slot is the chunk's place in its heap's index of free gaps (zmm's
	// run index); the chunk package does not use it.
	Slot uint32
	_    uint32
	_    [2]uint64
	// FreeMap has one bit per page, set when the page is in use.
	FreeMap [Pages / 64]uint64
	// Map has one entry per page; see MapFree and the other Map constants.
	Map [Pages]uint32
}

// HeaderSize is the space the chunk header takes at the start of page 0.
// The rest of page 0 is free for the owner: the main chunk of a heap keeps
// the heap's own state there, as the Zend MM does.
const HeaderSize = unsafe.Sizeof(Header{})

// At returns the header of the chunk that starts at base.
func At(base unsafe.Pointer) *Header { return (*Header)(base) }

// Of returns the header of the chunk that contains p. The caller must know
// that p lies in a live chunk (see the frame table, internal/frames).
func Of(p unsafe.Pointer) *Header {
	return (*Header)(unsafe.Add(p, -int(uintptr(p)&(Size-1))))
}

// Base is the address of the chunk.
func (c *Header) Base() uintptr { return uintptr(unsafe.Pointer(c)) }

// Page returns a pointer to page i of the chunk.
func (c *Header) Page(i uint32) unsafe.Pointer {
	return unsafe.Add(unsafe.Pointer(c), uintptr(i)<<PageShift)
}

// Init makes the header describe an empty chunk owned by heap: every page
// free but the header page. It does not touch the rest of page 0.
func (c *Header) Init(heap uintptr, heapID, num uint32) {
	c.Heap = heap
	c.HeapID = heapID
	c.Num = num
	c.Next, c.Prev = 0, 0
	c.FreePages = Pages - FirstPage
	c.FreeTail = FirstPage
	c.FreeMap = [Pages / 64]uint64{}
	c.Map = [Pages]uint32{}
	c.FreeMap[0] = 1
	c.Map[0] = LargeEntry(1)
}

// Empty reports whether every page but the header is free.
func (c *Header) Empty() bool { return c.FreePages == Pages-FirstPage }

// FindRun returns the start of the best place for a run of n free pages:
// an exact fit if there is one, otherwise the smallest free gap that holds
// n pages, the lowest one among equals (the Zend MM's best fit). It does not
// take the pages.
func (c *Header) FindRun(n uint32) (start uint32, ok bool) {
	if c.FreePages < n {
		return 0, false
	}
	best, bestLen := uint32(0), uint32(Pages+1)
	for i := uint32(0); i < Pages; {
		s, e := c.nextGap(i)
		if s >= Pages {
			break
		}
		if l := e - s; l == n {
			return s, true
		} else if l > n && l < bestLen {
			best, bestLen = s, l
		}
		if e == Pages && s < c.FreeTail {
			c.FreeTail = s // the trailing gap, scanned: its true start
		}
		i = e
	}
	return best, bestLen <= Pages
}

// nextGap returns the free gap [start, end) that begins at or after page i;
// start is Pages when there is none.
func (c *Header) nextGap(i uint32) (start, end uint32) {
	if i >= c.FreeTail {
		if i >= Pages {
			return Pages, Pages
		}
		return i, Pages
	}
	w := i >> 6
	// Bits below i count as used.
	word := c.FreeMap[w&7] | (uint64(1)<<(i&63) - 1)
	for word == ^uint64(0) {
		w++
		if w >= Pages/64 {
			return Pages, Pages
		}
		word = c.FreeMap[w&7]
	}
	start = w<<6 + uint32(bits.TrailingZeros64(^word))
	if start >= c.FreeTail {
		return start, Pages
	}
	// Bits below start are known free or before i: look for the next used page.
	word = c.FreeMap[w&7] &^ (uint64(1)<<(start&63) - 1)
	for word == 0 {
		w++
		if w >= Pages/64 {
			return start, Pages
		}
		word = c.FreeMap[w&7]
	}
	return start, w<<6 + uint32(bits.TrailingZeros64(word))
}

// GapAround returns the free gap [start, end) that holds page i, which must
// be free.
func (c *Header) GapAround(i uint32) (start, end uint32) {
	if i >= c.FreeTail {
		end = Pages
	} else {
		// The first used page after i.
		w := i >> 6
		word := c.FreeMap[w&7] &^ (uint64(2)<<(i&63) - 1)
		for word == 0 && w < Pages/64-1 {
			w++
			word = c.FreeMap[w&7]
		}
		end = Pages
		if word != 0 {
			end = w<<6 + uint32(bits.TrailingZeros64(word))
		}
	}
	// The last used page before i (page 0 is always used).
	w := i >> 6
	word := c.FreeMap[w&7] & (uint64(1)<<(i&63) - 1)
	for word == 0 {
		w--
		word = c.FreeMap[w&7]
	}
	return w<<6 + 63 - uint32(bits.LeadingZeros64(word)) + 1, end
}

// Take marks pages [start, start+n) used. It does not write map entries.
func (c *Header) Take(start, n uint32) {
	c.setBits(start, n)
	c.FreePages -= n
	c.FreeTail = max(c.FreeTail, start+n)
}

// Release marks pages [start, start+n) free and clears their map entries.
func (c *Header) Release(start, n uint32) {
	c.clearBits(start, n)
	c.FreePages += n
	c.lowerTail(start, n)
	clear(c.Map[start : start+n])
}

// ReleaseLarge marks the pages [start, start+n) of (part of) a large run
// free. Only the run's first page has an entry, so only that one is
// cleared: freeing a run costs the same whatever its length.
func (c *Header) ReleaseLarge(start, n uint32) {
	c.clearBits(start, n)
	c.FreePages += n
	c.lowerTail(start, n)
	c.Map[start] = MapFree
}

// lowerTail moves FreeTail down over freed pages [start, start+n) that end
// where the trailing gap begins.
func (c *Header) lowerTail(start, n uint32) {
	if start+n == c.FreeTail {
		c.FreeTail = start
	}
}

// SetLargeRun writes the map entry of a large run of n pages at start: its
// first page's (the later pages keep entry 0).
func (c *Header) SetLargeRun(start, n uint32) {
	c.Map[start] = LargeEntry(n)
}

// Used reports whether page i is in use.
func (c *Header) Used(i uint32) bool { return c.FreeMap[i>>6&7]&(1<<(i&63)) != 0 }

// LargeRunStart returns the first page of the large run that holds page i,
// a page in use whose entry is 0 (a later page of a large run). It walks
// back through the map, so it is for error reports, not fast paths.
func (c *Header) LargeRunStart(i uint32) (uint32, bool) {
	for p := int(i) - 1; p >= 0; p-- {
		if e := c.Map[p]; e != MapFree {
			if e&MapKindMask == MapLarge && uint32(p)+EntryPages(e) > i {
				return uint32(p), true
			}
			return 0, false
		}
	}
	return 0, false
}

// SetSmallRun writes the map entries of a run of bin b, n pages at start.
func (c *Header) SetSmallRun(start, n, b uint32) {
	for i := uint32(0); i < n; i++ {
		c.Map[start+i] = SmallEntry(b, i)
	}
}

// RangeFree reports whether pages [start, start+n) are all free and inside
// the chunk.
func (c *Header) RangeFree(start, n uint32) bool {
	if start+n > Pages {
		return false
	}
	for n > 0 {
		w, b := start>>6, start&63
		k := min(64-b, n)
		mask := ^uint64(0) >> (64 - k) << b
		if c.FreeMap[w&7]&mask != 0 {
			return false
		}
		start += k
		n -= k
	}
	return true
}

func (c *Header) setBits(start, n uint32) {
	for n > 0 {
		w, b := start>>6, start&63
		k := min(64-b, n)
		c.FreeMap[w&7] |= ^uint64(0) >> (64 - k) << b
		start += k
		n -= k
	}
}

func (c *Header) clearBits(start, n uint32) {
	for n > 0 {
		w, b := start>>6, start&63
		k := min(64-b, n)
		c.FreeMap[w&7] &^= ^uint64(0) >> (64 - k) << b
		start += k
		n -= k
	}
}

// Gaps calls f for every free gap [start, end) of the chunk, in address
// order.
func (c *Header) Gaps(f func(start, end uint32)) {
	for i := uint32(0); i < Pages; {
		s, e := c.nextGap(i)
		if s >= Pages {
			return
		}
		f(s, e)
		i = e
	}
}
