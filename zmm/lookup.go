package zmm

import (
	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/internal/frames"
)

// Validating a pointer a caller hands back (Free, Realloc, BlockSize on
// their slow paths). The frame table answers first, so that no chunk
// header is read before the table has said the chunk is a live chunk of
// this heap; every way the pointer can be wrong is named.

// block describes a live block found by lookup.
type blockInfo struct {
	kind  blockKind
	c     *chunk.Header // small and large
	page  uint32        // small and large: the page p is in / starts
	bin   uint32        // small
	pages uint32        // large
	huge  uint32        // huge: index in the huge table
	size  uintptr       // the block's class size (BlockSize)
}

// lookup finds the live block that starts at p, or panics with a *Error
// that says what p is instead. It reads a chunk header only after the frame
// table has said the chunk is one of this heap's live chunks.
//
// In debug mode p is the user pointer, debugheader.Size bytes past the block
// start; messages name p, and the start of the block it points into as a
// user pointer too.
func (s *heapState) lookup(op string, user uintptr) blockInfo {
	addr := user - s.hdr
	f := frames.Lookup(addr)
	off := addr & (chunk.Size - 1)
	if f.Kind() == frames.None {
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: not allocated by zmm", op, user)
	}
	if f.Owner() != s.id {
		switch f.Kind() {
		case frames.Chunk, frames.Huge, frames.HugeInterior:
			fail(ErrWrongHeap, op, user, "zmm: %s(0x%x): the block belongs to another heap", op, user)
		}
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: not a block of this heap", op, user)
	}
	switch f.Kind() {
	case frames.Huge:
		if off != 0 {
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the huge block at 0x%x", op, user, addr-off+s.hdr)
		}
		return blockInfo{kind: kindHuge, huge: f.Aux(), size: s.huge.at(f.Aux()).size}
	case frames.HugeInterior:
		start := addr - off - uintptr(f.Aux())*chunk.Size
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the huge block at 0x%x", op, user, start+s.hdr)
	case frames.FreedHuge, frames.CachedHuge:
		if off == 0 {
			fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: the huge block was already freed", op, user)
		}
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside a freed huge block", op, user)
	case frames.FreedChunk, frames.CachedChunk:
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: its chunk was released (by Reset, GC or a free); the block is gone", op, user)
	case frames.Chunk:
	default:
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer (frame %v)", op, user, f)
	}
	c := hdr(addr - off)
	page := uint32(off >> chunk.PageShift)
	e := c.Map[page&(chunk.Pages-1)]
	switch e & chunk.MapKindMask {
	case chunk.MapFree:
		if c.Used(page) { // a later page of a large run
			start, _ := c.LargeRunStart(page)
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the large block at 0x%x", op, user,
				c.Base()+uintptr(start)<<chunk.PageShift+s.hdr)
		}
		if off&(chunk.PageSize-1) == 0 {
			fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: no block here, the page is free", op, user)
		}
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside a free page", op, user)
	case chunk.MapLarge:
		if page == 0 {
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside a chunk header", op, user)
		}
		if off&(chunk.PageSize-1) != 0 {
			fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the large block at 0x%x", op, user, addr&^(chunk.PageSize-1)+s.hdr)
		}
		n := chunk.EntryPages(e)
		return blockInfo{kind: kindLarge, c: c, page: page, pages: n, size: uintptr(n) * chunk.PageSize}
	}
	bin := chunk.EntryBin(e)
	within := uint32(off&(chunk.PageSize-1)) + chunk.EntryIndex(e)<<chunk.PageShift
	idx, exact := bins.ElementIndex(bin, within)
	if !exact {
		start := addr - uintptr(within-idx*bins.Size[bin&31])
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: inside the %d-byte block at 0x%x", op, user, bins.Size[bin&31], start+s.hdr)
	}
	if idx >= bins.Elements[bin&31] {
		fail(ErrInvalidPointer, op, user, "zmm: %s(0x%x): invalid pointer: in the unused tail of a run", op, user)
	}
	if s.uncarved(bin, addr) {
		fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: the %d-byte block is free (never handed out)", op, user, bins.Size[bin&31])
	}
	if s.isFreeSlot(addr) {
		if s.debug {
			r := debugheader.At(ptr(addr))
			fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: block 0x%x (%d bytes, allocated at %v) is already free",
				op, user, user, r.Size, resolveSite(uintptr(r.Site)))
		}
		fail(ErrDoubleFree, op, user, "zmm: %s(0x%x): double free: the %d-byte block is already free", op, user, bins.Size[bin&31])
	}
	return blockInfo{kind: kindSmall, c: c, page: page, bin: bin, size: uintptr(bins.Size[bin&31])}
}

// handedOut is Free's fast-path test as a function, for Realloc: it
// reports whether slot is a handed-out block of a small bin of this heap
// (in a live chunk of this heap by the own set or fastFrame, at the exact
// start of an element, not in the run's unused tail nor in its bin's
// uncarved rest, and without a valid check word), and its bin. Free spells
// the same test out inline: at a cost of 189 this function is beyond Go's
// inlining budget of 80, and a call would cost Free more than the test
// itself. Keep the two in step; TestBadPointersAreReported runs every bad
// pointer through both.
func (s *heapState) handedOut(slot uintptr) (bin uint32, ok bool) {
	off := slot & (chunk.Size - 1)
	if s.own[ownSlot(slot)] != slot-off && !s.fastFrame(slot) {
		return 0, false
	}
	e := hdr(slot - off).Map[off>>chunk.PageShift&(chunk.Pages-1)]
	bin = chunk.EntryBin(e) & 31
	within := uint32(off&(chunk.PageSize-1)) + chunk.EntryIndex(e)<<chunk.PageShift
	idx, exact := bins.ElementIndex(bin, within)
	return bin, e&chunk.MapKindMask == chunk.MapSmall && exact && idx < bins.Elements[bin] &&
		!s.uncarved(bin, slot) && !isFree(slot, s.key, 0)
}
