package zmm

import (
	"fmt"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
)

// Debug mode on chunks (WithDebug, ZMM_DEBUG=1): the blocks of a chunk
// heap, each with a debugheader.Record before the user's bytes (size,
// allocation site, original site, head guard) and a tail guard after them.
// A freed small block keeps Size and Site in its first words, its link at
// debugLinkOff, and is filled with debugheader.FreeFill after that; the
// fill is verified when the slot is handed out again and by Check. Freed
// page runs and huge blocks: poison.go. Sites are program counters (the
// site each entry point captured, sites.go), turned into file:line only
// when a report is written.

// quarantinedLink marks a freed debug slot that was found damaged and set
// aside: it is on no free list, but carries a valid check word, so that it
// counts as free (not as a leak) and is never handed out again.
const quarantinedLink = 1

// alloc allocates a debug block for a request of size bytes and returns
// its user pointer.
func (d *debugState) alloc(s *heapState, size uintptr, op string, site, orig uintptr) unsafe.Pointer {
	internal, ok := SafeSize(1, size, debugheader.Overhead)
	if !ok {
		fail(ErrOverflow, op, 0, "Possible integer overflow in memory allocation (%d + %d)", size, debugheader.Overhead)
	}
	var blk unsafe.Pointer
	blockSize := classSize(op, internal)
	if isSmall(internal) {
		bin := smallBin(internal) & 31
		if s.dfree[bin] != 0 {
			slot, ok := s.popFree(bin)
			blk = ptr(slot)
			if !ok {
				d.quarantineSlot(s, op, blk, blockSize, "its free-list link was overwritten (a write after free, or an overflow from the block before it)")
			}
			if at, bad := debugheader.CheckFill(blk, blockSize); bad {
				d.quarantineSlot(s, op, blk, blockSize, fmt.Sprintf("byte %d of it was written after it was freed", at-debugheader.Size))
			}
			s.size += blockSize
			s.peak = max(s.peak, s.size)
		} else {
			blk = s.refill(bin)
		}
	} else {
		blk = s.allocBig(internal, op)
		if kindOf(internal) == kindHuge {
			// A cached mapping may have been handed out whole
			// (hugecache.go): the block is all of it, and the huge
			// table's newest record.
			blockSize = s.huge.at(s.huge.n - 1).size
		}
	}
	debugheader.Write(s.key, blk, blockSize, size, site, orig)
	return debugheader.User(blk)
}

// quarantineSlot panics about a freed debug block found damaged when it
// was to be handed out again, after setting the slot aside (see
// quarantinedLink) with a fresh fill, so that the report is made once and
// the heap stays usable. Its record still holds its size and site.
func (d *debugState) quarantineSlot(s *heapState, op string, blk unsafe.Pointer, blockSize uintptr, what string) {
	r := debugheader.At(blk)
	user := uintptr(debugheader.User(blk))
	err := &Error{Kind: ErrCorrupted, Op: op, Ptr: user, Msg: fmt.Sprintf("zmm: heap corrupted: freed block 0x%x (%d bytes, allocated at %v): %s",
		user, r.Size, resolveSite(uintptr(r.Site)), what)}
	debugheader.Fill(blk, blockSize)
	s.setLink(uintptr(blk), quarantinedLink)
	d.quarantined[uintptr(blk)] = smallBin(blockSize)
	panic(err)
}

// checked looks the user pointer addr up and verifies its canaries, or
// panics naming the block, its size, its site and the damage.
func (d *debugState) checked(s *heapState, op string, addr uintptr) (blockInfo, *debugheader.Record) {
	b := s.lookup(op, addr)
	start := ptr(addr - debugheader.Size)
	if dmg, ok := debugheader.Check(s.key, start, b.size); !ok {
		r := debugheader.At(start)
		fail(ErrCorrupted, op, addr, "zmm: %s(0x%x): heap corrupted: block 0x%x (%d bytes, allocated at %v): %v",
			op, addr, addr, dmg.Size, resolveSite(uintptr(r.Site)), dmg)
	}
	return b, debugheader.At(start)
}

// release frees a checked debug block.
func (d *debugState) release(s *heapState, b blockInfo, addr uintptr) {
	start := ptr(addr - debugheader.Size)
	switch b.kind {
	case kindSmall:
		debugheader.Fill(start, b.size)
		s.pushFree(uintptr(start), b.bin)
	case kindLarge:
		d.poisonRun(b.c, b.page, b.pages, addr)
		s.freeLarge(b.c, b.page, b.pages)
	case kindHuge:
		d.quarantineHuge(s, s.dropHuge(b.huge))
	}
}

func (d *debugState) free(s *heapState, addr uintptr) {
	b, _ := d.checked(s, "Free", addr)
	d.release(s, b, addr)
}

// realloc always moves the block, so that a stale pointer to the old one
// is caught; the new block records the realloc's site, and the first
// allocation's as its original site.
func (d *debugState) realloc(s *heapState, addr, size, site uintptr) unsafe.Pointer {
	if addr == 0 {
		return d.alloc(s, size, "Realloc", site, 0)
	}
	b, r := d.checked(s, "Realloc", addr)
	orig, old := uintptr(r.Orig), uintptr(r.Size)
	if orig == 0 {
		orig = uintptr(r.Site)
	}
	peak := s.peak
	q := d.alloc(s, size, "Realloc", site, orig)
	n := min(old, size)
	copy(unsafe.Slice((*byte)(q), n), unsafe.Slice((*byte)(ptr(addr)), n))
	d.release(s, b, addr)
	s.peak = max(peak, s.size)
	return q
}

// blockSize is the requested size, so that a write past it is caught.
func (d *debugState) blockSize(s *heapState, addr uintptr) uintptr {
	_, r := d.checked(s, "BlockSize", addr)
	return uintptr(r.Size)
}

// check returns every corruption of the heap's blocks beyond its free
// lists (which Check walks for every chunk heap): the guards of every live
// block, the fill of every free slot and freed run. reported holds the
// slots whose links Check reported already.
func (d *debugState) check(s *heapState, reported map[uintptr]bool) []Problem {
	var probs []Problem
	s.eachSlot(func(slot uintptr, bin uint32, free bool) {
		size := uintptr(bins.Size[bin])
		switch {
		case reported[slot]:
		case free:
			if at, bad := debugheader.CheckFill(ptr(slot), size); bad {
				r := debugheader.At(ptr(slot))
				probs = append(probs, Problem{Addr: slot + s.hdr, Size: uintptr(r.Size), Site: resolveSite(uintptr(r.Site)),
					What: fmt.Sprintf("freed, and byte %d of it was written after it was freed", at-debugheader.Size)})
			}
		default:
			probs = checkLive(s, probs, ptr(slot), size)
		}
	})
	s.eachRun(func(c *chunk.Header, page, n, e uint32) {
		if e&chunk.MapKindMask == chunk.MapLarge {
			probs = checkLive(s, probs, c.Page(page), uintptr(n)*chunk.PageSize)
		}
	})
	for i := uint32(0); i < s.huge.n; i++ {
		r := s.huge.at(i)
		probs = checkLive(s, probs, ptr(r.addr), r.size)
	}
	return d.checkFreedRuns(s, probs)
}

// checkLive adds a problem if the guards of the live block at block are
// damaged.
func checkLive(s *heapState, probs []Problem, blk unsafe.Pointer, size uintptr) []Problem {
	if dmg, ok := debugheader.Check(s.key, blk, size); !ok {
		r := debugheader.At(blk)
		probs = append(probs, Problem{Addr: uintptr(debugheader.User(blk)), Size: dmg.Size,
			Site: resolveSite(uintptr(r.Site)), What: dmg.String()})
	}
	return probs
}

// leaks lists every live block with its sites, huge blocks first, then in
// chunk order, as zend_mm_check_leaks walks them.
func (d *debugState) leaks(s *heapState) []Leak {
	var out []Leak
	add := func(blk unsafe.Pointer) {
		r := debugheader.At(blk)
		l := Leak{Addr: uintptr(debugheader.User(blk)), Size: uintptr(r.Size), Site: resolveSite(uintptr(r.Site))}
		if r.Orig != 0 {
			l.Orig = resolveSite(uintptr(r.Orig))
		}
		out = append(out, l)
	}
	for i := uint32(0); i < s.huge.n; i++ {
		add(ptr(s.huge.at(i).addr))
	}
	s.eachRun(func(c *chunk.Header, page, n, e uint32) {
		switch e & chunk.MapKindMask {
		case chunk.MapSmall:
			bin := chunk.EntryBin(e) & 31
			size := uintptr(bins.Size[bin])
			run := uintptr(c.Page(page))
			for k := uintptr(0); k < uintptr(bins.Elements[bin]); k++ {
				if !s.isFreeSlot(run + k*size) {
					add(ptr(run + k*size))
				}
			}
		case chunk.MapLarge:
			add(c.Page(page))
		}
	})
	return out
}
