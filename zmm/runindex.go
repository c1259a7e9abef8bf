package zmm

import (
	"math/bits"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// The run index finds the place for a run of n pages in time that does
// not grow with the heap: the Zend MM walks its chunks and scans each one's
// bitmap until one has room (zend_mm_alloc_pages), which dominates a heap
// of thousands of chunks (php-src #23470). zmm keeps, for every length L
// from 1 to 511 pages, which live chunks have a free gap of exactly L pages,
// and takes the smallest gap of at least n pages in the whole heap: global
// best fit, never worse than the Zend MM's best fit inside the first chunk
// that has room. Among chunks with a gap of that length it takes the lowest
// slot, and inside the chunk FindRun takes the lowest such gap.
//
// A heap of a few chunks does not need it, and should not pay for it: up to
// runIndexFrom chunks the page search walks the ring as the Zend MM does
// (the first chunk with room, best fit inside it; a PHP request rarely has
// more), and the index is off. When the heap takes one chunk more, the
// index is built from the live chunks' bitmaps and kept from then on;
// Reset, which brings the heap back to its main chunk, drops it.
//
// The index lives in a side table mapped from the OS (like the huge
// table's array, whatever the heap's storage), grown by doubling:
//
//	bases   [cap]uintptr        slot -> chunk base; a free slot holds its
//	                            free-list link (odd: no base is)
//	nChunks [512]uint32         chunks with at least one gap of length L
//	counts  [cap][512]uint16    gaps of each length in the chunk of a slot
//	words   [512][cap/64]uint64 bit per slot: the chunk has a gap of length L
//	summary [512][sw]uint64     bit per word of words: the word is not zero
//
// and heapState.runs.any has a bit per length with nChunks > 0. Finding a
// gap is a scan of any's 8 words, of one summary row and one word; keeping
// the index is a few counter updates for each gap a Take or a Release
// changes (at most three). Only live chunks are indexed: a chunk gets a slot
// when it joins the ring and gives it back when it leaves.
//
// Invariants: every live chunk c has bases[c.Slot] == c.Base(), and
// counts[c.Slot] is the multiset of its free gaps' lengths; words, summary,
// nChunks and any follow from counts.

const (
	runLengths   = chunk.Pages // gap lengths 1..511, indexed by length
	slotFree     = 1           // the mark of a free slot's link
	runIndexInit = 64          // slots of a new table
	// runIndexFrom is the most chunks a heap walks without the index.
	runIndexFrom = 8
)

// runIndex is the heap state's part of the index: where the side table's
// arrays are (addresses, computed when it is mapped), and any.
type runIndex struct {
	tab    uintptr // the side table: bases first
	nChunk uintptr // nChunks
	counts uintptr // counts
	words  uintptr // words
	sums   uintptr // summary
	nWords uint32  // words per length: cap/64
	nSums  uint32  // summary words per length
	cap    uint32  // slots the table holds, a multiple of 64
	top    uint32  // slots ever handed out: [0, top)
	free   uint32  // a free slot below top, plus one; 0 when none
	on     bool    // the index is kept (the heap has had more than runIndexFrom chunks)
	// any has bit L set when some live chunk has a free gap of L pages.
	any [runLengths / 64]uint64
}

// layout sets the arrays' addresses for a table of cap slots at tab, and
// returns the table's size.
func (x *runIndex) layout(tab uintptr, cap uint32) uintptr {
	x.tab, x.cap = tab, cap
	x.nWords = cap / 64
	x.nSums = (x.nWords + 63) / 64
	x.nChunk = tab + uintptr(cap)*8
	x.counts = x.nChunk + runLengths*4
	x.words = x.counts + uintptr(cap)*runLengths*2
	x.sums = x.words + runLengths*uintptr(x.nWords)*8
	return x.sums + runLengths*uintptr(x.nSums)*8 - tab
}

func (x *runIndex) base(slot uint32) *uintptr {
	return (*uintptr)(ptr(x.tab + uintptr(slot)*8))
}

func (x *runIndex) nChunks(l uint32) *uint32 {
	return (*uint32)(ptr(x.nChunk + uintptr(l)*4))
}

func (x *runIndex) count(slot, l uint32) *uint16 {
	return (*uint16)(ptr(x.counts + (uintptr(slot)*runLengths+uintptr(l))*2))
}

func (x *runIndex) word(l uint32, w uintptr) *uint64 {
	return (*uint64)(ptr(x.words + (uintptr(l)*uintptr(x.nWords)+w)*8))
}

func (x *runIndex) sum(l uint32, w uintptr) *uint64 {
	return (*uint64)(ptr(x.sums + (uintptr(l)*uintptr(x.nSums)+w)*8))
}

// reserveSlot makes sure a slot is free for a chunk about to join the
// ring, growing the table first, so that the chunk is never mapped when its
// slot cannot be had. When that chunk takes the heap past runIndexFrom
// chunks, the index is built first, with a slot for every live chunk.
func (s *heapState) reserveSlot(op string) {
	x := &s.runs
	if !x.on {
		if s.chunks < runIndexFrom {
			return
		}
		for x.cap < s.chunks+1 {
			x.grow(op)
		}
		x.on = true
		main := hdr(s.main)
		for c := main; ; {
			s.indexChunk(c)
			if c = hdr(c.Next); c == main {
				break
			}
		}
		return
	}
	if x.free == 0 && x.top == x.cap {
		x.grow(op)
	}
}

// dropIndex turns the index off and forgets every chunk (Reset: the heap is
// back to its main chunk). The table stays mapped for the next time.
func (s *heapState) dropIndex() {
	x := &s.runs
	if !x.on {
		return
	}
	main := hdr(s.main)
	for c := main; ; {
		s.unindexChunk(c)
		if c = hdr(c.Next); c == main {
			break
		}
	}
	x.on, x.top, x.free = false, 0, 0
}

// grow doubles the table (or makes the first one) and carries every slot
// over: bases and counts as they are, the bit rows rebuilt from counts.
func (x *runIndex) grow(op string) {
	old := *x
	ps := chunk.OSPageSize()
	var probe runIndex
	cap := max(2*old.cap, runIndexInit)
	size := (probe.layout(0, cap) + ps - 1) &^ (ps - 1)
	p, err := chunk.Map(size, chunk.OSPageSize())
	if err != nil {
		fail(ErrOutOfMemory, op, 0, "Out of memory (run index of %d bytes: %v)", size, err)
	}
	x.layout(uintptr(p), cap)
	if old.tab == 0 {
		return
	}
	n := uintptr(old.cap) * 8
	copy(unsafe.Slice((*byte)(ptr(x.tab)), n), unsafe.Slice((*byte)(ptr(old.tab)), n))
	copy(unsafe.Slice((*byte)(ptr(x.nChunk)), runLengths*4), unsafe.Slice((*byte)(ptr(old.nChunk)), runLengths*4))
	n = uintptr(old.cap) * runLengths * 2
	copy(unsafe.Slice((*byte)(ptr(x.counts)), n), unsafe.Slice((*byte)(ptr(old.counts)), n))
	for slot := range old.top {
		if *x.base(slot)&slotFree != 0 {
			continue
		}
		for l := uint32(1); l < runLengths; l++ {
			if *x.count(slot, l) != 0 {
				x.setBit(l, slot)
			}
		}
	}
	var dummy runIndex
	_ = chunk.Unmap(ptr(old.tab), (dummy.layout(0, old.cap)+ps-1)&^(ps-1))
}

// release unmaps the table (Close).
func (x *runIndex) release() {
	if x.tab != 0 {
		var probe runIndex
		ps := chunk.OSPageSize()
		_ = chunk.Unmap(ptr(x.tab), (probe.layout(0, x.cap)+ps-1)&^(ps-1))
	}
	*x = runIndex{}
}

func (x *runIndex) setBit(l, slot uint32) {
	w := uintptr(slot) / 64
	*x.word(l, w) |= 1 << (slot % 64)
	*x.sum(l, w/64) |= 1 << (w % 64)
}

// gapAdd records a free gap of l pages in the chunk of slot.
func (x *runIndex) gapAdd(slot, l uint32) {
	c := x.count(slot, l)
	if *c++; *c != 1 {
		return
	}
	x.setBit(l, slot)
	if n := x.nChunks(l); *n == 0 {
		x.any[l/64] |= 1 << (l % 64)
		*n = 1
	} else {
		*n++
	}
}

// gapDel forgets a free gap of l pages in the chunk of slot.
func (x *runIndex) gapDel(slot, l uint32) {
	c := x.count(slot, l)
	if *c--; *c != 0 {
		return
	}
	w := uintptr(slot) / 64
	word := x.word(l, w)
	if *word &^= 1 << (slot % 64); *word == 0 {
		*x.sum(l, w/64) &^= 1 << (w % 64)
	}
	n := x.nChunks(l)
	if *n--; *n == 0 {
		x.any[l/64] &^= 1 << (l % 64)
	}
}

// indexChunk indexes a chunk that joins the ring, with its gaps (a chunk is
// empty then, but the main chunk at Reset has its header page only). The
// caller has reserved the slot.
func (s *heapState) indexChunk(c *chunk.Header) {
	x := &s.runs
	if !x.on {
		return
	}
	var slot uint32
	if x.free != 0 {
		slot = x.free - 1
		x.free = uint32(*x.base(slot) >> 1)
	} else {
		slot = x.top
		x.top++
	}
	*x.base(slot) = c.Base()
	c.Slot = slot
	c.Gaps(func(start, end uint32) { x.gapAdd(slot, end-start) })
}

// unindexChunk takes a chunk that leaves the ring out of the index.
func (s *heapState) unindexChunk(c *chunk.Header) {
	x := &s.runs
	if !x.on {
		return
	}
	slot := c.Slot
	c.Gaps(func(start, end uint32) { x.gapDel(slot, end-start) })
	*x.base(slot) = uintptr(x.free)<<1 | slotFree
	x.free = slot + 1
}

// findGap returns the chunk that holds the smallest free gap of at least
// n pages in the heap, and that gap's length, or nil.
func (x *runIndex) findGap(n uint32) (*chunk.Header, uint32) {
	w := n / 64
	word := x.any[w&7] &^ (uint64(1)<<(n%64) - 1)
	for word == 0 {
		if w++; w >= runLengths/64 {
			return nil, 0
		}
		word = x.any[w&7]
	}
	l := w*64 + uint32(bits.TrailingZeros64(word))
	for sw := uintptr(0); sw < uintptr(x.nSums); sw++ {
		if s := *x.sum(l, sw); s != 0 {
			wi := sw*64 + uintptr(bits.TrailingZeros64(s))
			slot := uint32(wi*64) + uint32(bits.TrailingZeros64(*x.word(l, wi)))
			return hdr(*x.base(slot)), l
		}
	}
	return nil, 0
}

// takeFromIndex takes the smallest free gap of at least n pages in the
// heap (in debug mode after checking the freed runs it overlaps) and
// returns its chunk and first page, or false when no live chunk has room.
func (s *heapState) takeFromIndex(op string, n uint32) (*chunk.Header, uint32, bool) {
	c, _ := s.runs.findGap(n)
	if c == nil {
		return nil, 0, false
	}
	start, ok := c.FindRun(n)
	if !ok {
		fail(ErrCorrupted, op, c.Base(), "zmm: heap corrupted: the run index says chunk 0x%x has %d free pages in a row, its page map says not", c.Base(), n)
	}
	if s.debug {
		debugStateOf(s.id).checkFreedPages(s, op, c, start, n)
	}
	s.takeIndexed(c, start, n)
	return c, start, true
}

// take marks pages [start, start+n) of c used and updates the index: the
// gap they came from becomes what is left of it on either side.
func (s *heapState) take(c *chunk.Header, start, n uint32) {
	if s.runs.on {
		s.takeIndexed(c, start, n)
		return
	}
	c.Take(start, n)
}

// takeIndexed is take with the index on.
//
//go:noinline
func (s *heapState) takeIndexed(c *chunk.Header, start, n uint32) {
	gs, ge := c.GapAround(start)
	x, slot := &s.runs, c.Slot
	x.gapDel(slot, ge-gs)
	c.Take(start, n)
	if start > gs {
		x.gapAdd(slot, start-gs)
	}
	if end := start + n; ge > end {
		x.gapAdd(slot, ge-end)
	}
}

// release frees pages [start, start+n) of c (a large run's pages with
// large, whose later pages carry no map entry) and updates the index: the
// gaps on either side and the pages merge into one.
func (s *heapState) release(c *chunk.Header, start, n uint32, large bool) {
	if large {
		c.ReleaseLarge(start, n)
	} else {
		c.Release(start, n)
	}
	if s.runs.on {
		s.releaseIndexed(c, start, n)
	}
}

// releaseIndexed updates the index after release freed pages [start,
// start+n) of c.
//
//go:noinline
func (s *heapState) releaseIndexed(c *chunk.Header, start, n uint32) {
	gs, ge := c.GapAround(start)
	x, slot := &s.runs, c.Slot
	if start > gs {
		x.gapDel(slot, start-gs)
	}
	if end := start + n; ge > end {
		x.gapDel(slot, ge-end)
	}
	x.gapAdd(slot, ge-gs)
}
