package zmm

import (
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
)

// Free slots of small bins form one singly linked list per bin. A free
// slot's first word is the address of the next free slot (0 ends the list)
// and its second word is a check word: next ^ key ^ slot. The check word
// makes a corrupted link detectable before it is followed (the Zend MM 8.4+
// keeps a shadow pointer for the same reason), and it marks the slot as
// free: Free finds a valid check word in a block it is given only when the
// block is already free. A slot handed out has its check word cleared. The
// key is random per heap and per request, so user data matches a check
// word by chance with probability 2^-64.
//
// Debug heaps keep the link and check word at debugLinkOff, after the freed
// block's Size and Site, and use their own lists (dfree), as every special
// heap does; the fast paths, which hard-code offset 0 and s.free, never see
// them.
//
// Every read and write of a link goes through this file: the fast paths of
// Alloc and Free use the inlined helpers (readLink, writeLink, isFree), the
// slow paths popFree and pushFree, and the walks of GC, Stats, Snapshot
// and Check walkFree or eachFree.

// debugLinkOff is where a freed debug slot keeps its link and check word:
// after the freed block's Size and Site words, which reports about it
// read, and ending exactly where its free fill begins.
const debugLinkOff = 16

var (
	// The link does not cover Size and Site, which reports read.
	_ [debugLinkOff - unsafe.Offsetof(debugheader.Record{}.Orig)]struct{}
	// Link and check word end exactly where the free fill begins.
	_ = [1]struct{}{}[debugheader.FreeFillFrom-(debugLinkOff+2*8)]
	// The smallest slot holds a link and a check word.
	_ = [1]struct{}{}[bins.MinBlock-2*8]
)

// readLink returns a free slot's link and whether its check word is valid.
func readLink(slot, key, off uintptr) (next uintptr, ok bool) {
	next = *(*uintptr)(ptr(slot + off))
	return next, *(*uintptr)(ptr(slot + off + 8)) == next^key^slot
}

// writeLink makes slot a free slot linked to next.
func writeLink(slot, next, key, off uintptr) {
	*(*uintptr)(ptr(slot + off)) = next
	*(*uintptr)(ptr(slot + off + 8)) = next ^ key ^ slot
}

// isFree reports whether slot carries a valid check word: a free slot.
func isFree(slot, key, off uintptr) bool {
	_, ok := readLink(slot, key, off)
	return ok
}

// markHandedOut clears a slot's check word: the slot is no longer free
// (its pages may have held an old free slot's link).
func markHandedOut(slot, off uintptr) { *(*uintptr)(ptr(slot + off + 8)) = 0 }

func (s *heapState) setLink(slot, next uintptr) { writeLink(slot, next, s.key, s.linkOff) }

func (s *heapState) isFreeSlot(slot uintptr) bool { return isFree(slot, s.key, s.linkOff) }

// lists returns the free lists the slow paths work on.
func (s *heapState) lists() *[32]uintptr {
	if s.special != 0 {
		return &s.dfree
	}
	return &s.free
}

// popFree takes the head of the bin's list (it must not be empty). If its
// check word is broken, the list cannot be trusted: it is abandoned (its
// slots leak, the heap stays usable) and ok is false, for the caller to
// report. Usage is the caller's.
func (s *heapState) popFree(bin uint32) (slot uintptr, ok bool) {
	l := s.lists()
	slot = l[bin&31]
	next, ok := readLink(slot, s.key, s.linkOff)
	if !ok {
		l[bin&31] = 0
		return slot, false
	}
	l[bin&31] = next
	markHandedOut(slot, s.linkOff)
	return slot, true
}

// pushFree puts a small block that lookup accepted onto its bin's free
// list and takes it out of the usage (the slow-path twin of Free's fast
// path).
func (s *heapState) pushFree(slot uintptr, bin uint32) {
	bin &= 31
	l := s.lists()
	s.setLink(slot, l[bin])
	l[bin] = slot
	s.size -= uintptr(bins.Size[bin])
}

// corruptSlot reports a broken free-list link found when a slot was to be
// handed out; popFree (or the fast path) has abandoned the list.
//
//go:noinline
func (s *heapState) corruptSlot(op string, bin uint32, slot uintptr) {
	s.lists()[bin&31] = 0
	fail(ErrCorrupted, op, slot,
		"zmm: heap corrupted: free slot 0x%x of bin %d (%d bytes) has a broken link (written after free, or overflow from the block before it)",
		slot, bin, bins.Size[bin&31])
}

// A new run is threaded onto its free list a batch at a time, not whole as
// in zend_mm_alloc_small_slow. Threading writes each slot's link and check
// word, and the first write to a line misses the cache: a request that
// ends (Reset) after a few allocations of a bin should pay that only for
// the slots it could use. The first batch of a run is carveFirst bytes (at
// least carveMinSlots slots); each later batch is as large as all before
// it, so a bin in heavy use reaches the end of its run in a few refills.
// The never-threaded rest of a bin's newest run is its uncarved range
// (carveNext, carveLeft): never handed out, on no list. Free's fast path
// rejects a pointer into it with one compare; the walks that need every
// free slot on a list thread it first (flushCarve); Stats counts it as
// free. Special heaps thread whole runs and keep it empty.
const (
	carveFirst    = 1024
	carveMinSlots = 4
)

// carveFirstBytes is the first batch of each bin, in whole slots.
var carveFirstBytes = func() (t [32]uintptr) {
	for b := range bins.NumBins {
		size := uintptr(bins.Size[b])
		t[b] = max(carveMinSlots*size, carveFirst/size*size)
	}
	return t
}()

// uncarved reports whether addr is in the uncarved rest of the bin's newest
// run (one compare, for Free's fast path).
func (s *heapState) uncarved(bin uint32, addr uintptr) bool {
	return addr-s.carveNext[bin&31] < s.carveLeft[bin&31]
}

// uncarvedSlots returns how many slots of the bin's newest run are
// uncarved.
func (s *heapState) uncarvedSlots(bin uint32) int {
	return int(s.carveLeft[bin&31] / uintptr(bins.Size[bin&31]))
}

// pushSlots threads the slots of size bytes from first up to end onto the
// bin's free list, in address order, ahead of what the list held.
func (s *heapState) pushSlots(bin uint32, first, end, size uintptr) {
	// The key and link offset live in locals: the stores below go through
	// unsafe pointers, which the compiler must assume may alias s, so it
	// would reload both fields for every slot.
	key, off := s.key, s.linkOff
	last := end - size
	for p := first; p < last; p += size {
		writeLink(p, p+size, key, off)
	}
	l := s.lists()
	writeLink(last, l[bin&31], key, off)
	l[bin&31] = first
}

// flushCarve threads the uncarved rest of every bin's newest run onto the
// free lists, for the slow paths that walk the lists and count on every
// slot not handed out being on one.
func (s *heapState) flushCarve() {
	for bin := range uint32(bins.NumBins) {
		if left := s.carveLeft[bin]; left != 0 {
			first := s.carveNext[bin]
			s.pushSlots(bin, first, first+left, uintptr(bins.Size[bin]))
			s.carveNext[bin], s.carveLeft[bin] = 0, 0
		}
	}
}

// walkFree walks every bin's free list, checking each slot's check word
// before it trusts the slot and follows its link, and calls f for each
// free slot. A slot with a broken check word, or a list longer than the
// heap's chunks could hold (it loops), ends the walk of that bin: bad is
// called with what is wrong, and the walk goes on with the next bin. It
// changes nothing.
func (s *heapState) walkFree(f func(bin uint32, slot uintptr), bad func(bin uint32, slot uintptr, what string)) {
	lists := s.lists()
	for bin := uint32(0); bin < bins.NumBins; bin++ {
		limit := uintptr(s.chunks) * chunk.Pages * chunk.PageSize / uintptr(bins.Size[bin])
		n := uintptr(0)
		for slot := lists[bin]; slot != 0; n++ {
			next, ok := readLink(slot, s.key, s.linkOff)
			if !ok {
				bad(bin, slot, "has a broken link")
				break
			}
			if n > limit {
				bad(bin, slot, "is on a list that loops")
				break
			}
			f(bin, slot)
			slot = next
		}
	}
}

// eachFree is walkFree for the walks that stop at the first damage: it
// panics with ErrCorrupted naming op and the slot (GC, Stats, Snapshot).
func (s *heapState) eachFree(op string, f func(bin uint32, slot uintptr)) {
	s.walkFree(f, func(bin uint32, slot uintptr, what string) {
		fail(ErrCorrupted, op, slot, "zmm: heap corrupted: free slot 0x%x of bin %d (%d bytes) %s", slot, bin, bins.Size[bin&31], what)
	})
}
