package zmm

import (
	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// The walks over a heap's pages and slots, for the slow paths that look at
// the whole heap (Stats, Snapshot, Check, the leak report). They read the
// chunk ring and page maps and change nothing.

// eachRun calls f for every run of every live chunk, the main chunk first
// and pages in order: a small run (e is its first page's entry, n its
// pages), a large run (e its MapLarge entry), or a stretch of n free pages
// (e == MapFree). Page 0 is skipped. f must not change the chunk ring.
func (s *heapState) eachRun(f func(c *chunk.Header, page, n, e uint32)) {
	main := hdr(s.main)
	for c := main; ; {
		for i := uint32(chunk.FirstPage); i < chunk.Pages; {
			e := c.Map[i]
			var n uint32
			switch e & chunk.MapKindMask {
			case chunk.MapSmall:
				n = bins.Pages[chunk.EntryBin(e)&31]
			case chunk.MapLarge:
				n = chunk.EntryPages(e)
			case chunk.MapFree:
				for n = 1; i+n < chunk.Pages && c.Map[i+n] == chunk.MapFree; n++ {
				}
			default: // kind 11 is not used: only a damaged map has it
				n = 1
			}
			f(c, i, n, e)
			i += n
		}
		if c = hdr(c.Next); c == main {
			return
		}
	}
}

// eachSlot calls f for every slot of every small run, in heap order, with
// its bin and whether it is free (it carries a valid check word, or lies in
// its bin's uncarved rest).
func (s *heapState) eachSlot(f func(slot uintptr, bin uint32, free bool)) {
	s.eachRun(func(c *chunk.Header, page, n, e uint32) {
		if e&chunk.MapKindMask != chunk.MapSmall {
			return
		}
		bin := chunk.EntryBin(e) & 31
		size := uintptr(bins.Size[bin])
		run := uintptr(c.Page(page))
		for k := uintptr(0); k < uintptr(bins.Elements[bin]); k++ {
			slot := run + k*size
			f(slot, bin, s.uncarved(bin, slot) || s.isFreeSlot(slot))
		}
	})
}

// runOf returns the chunk and first page of the run holding a slot.
func (s *heapState) runOf(slot uintptr) (*chunk.Header, uint32) {
	c := hdr(slot &^ (chunk.Size - 1))
	page := uint32(slot&(chunk.Size-1)) >> chunk.PageShift
	return c, page - chunk.EntryIndex(c.Map[page&(chunk.Pages-1)])
}
