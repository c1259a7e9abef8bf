package zmm

import (
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// Remote frees: a block of a Shared allocator's heap freed by a goroutine
// that cannot take that heap (another goroutine holds it, or it sits in
// another P's slot). The freeing goroutine
//
//  1. checks the pointer as far as it can without the heap: the frame
//     table says it is in a live chunk or starts a huge block of this
//     allocator; the chunk's page map says it starts a small slot or a page
//     run; it is not a free slot (a valid check word);
//  2. claims the block: a compare-and-swap writes its remote mark into the
//     block's second word, from whatever the word held. Of two goroutines
//     freeing the same block, one claims it and the other finds the mark:
//     a double free, reported as such;
//  3. pushes it onto the heap's inbox, a stack linked through the blocks'
//     first words: a load, a store and a compare-and-swap (Treiber; only
//     whole-list swaps pop, so ABA cannot bite).
//
// The heap's next holder collects the inbox (one swap) and frees each
// block with the heap's own checks; what those find (a slot never handed
// out, say) is kept for Check, since the goroutine that freed it has moved
// on. mimalloc's thread_free and snmalloc's message queues work the same
// way, per page and batched; per heap is simpler and keeps the fast paths
// of Heap as they are.
//
// The remote mark is ^(block ^ key): unlike a free slot's check word it
// does not depend on the first word, which the push writes after the claim.
// The owner's fast free refuses a marked block, so a block waiting in an
// inbox cannot be freed a second time by the owner either.
//
// A bad pointer may race with its heap releasing the memory it points
// into (a double free racing the first free of a huge block, say): the
// reads of steps 1-3, and the holder's reads of its inbox, run with
// debug.SetPanicOnFault, so that a fault becomes a *Error rather than a
// crash.

func remoteMark(slot, key uintptr) uintptr { return ^(slot ^ key) }

// remoteFreed reports whether the block at slot carries its remote mark:
// it waits in its heap's inbox.
func remoteFreed(slot, key uintptr) bool {
	return *(*uintptr)(ptr(slot + 8)) == remoteMark(slot, key)
}

// sharedOwner is the heap a block belongs to, as a remote free needs it:
// its state, its key and its inbox word, found without reading the state.
type sharedOwner struct {
	s     *heapState
	key   uintptr
	inbox *uintptr
}

// ownerOf returns the allocator's heap that addr's frame names, or panics
// with the error a Heap would report for a pointer that is not its own.
func (a *Shared) ownerOf(op string, addr uintptr) sharedOwner {
	f := frames.Lookup(addr)
	if f.Kind() == frames.None {
		fail(ErrInvalidPointer, op, addr, "zmm: %s(0x%x): invalid pointer: not allocated by zmm", op, addr)
	}
	list := a.heaps.Load()
	for i, id := range list.ids {
		if id == f.Owner() {
			return sharedOwner{list.hs[i].st, list.keys[i], (*uintptr)(ptr(a.inboxAt(i)))}
		}
	}
	switch f.Kind() {
	case frames.Chunk, frames.Huge, frames.HugeInterior:
		fail(ErrWrongHeap, op, addr, "zmm: %s(0x%x): the block belongs to another heap or allocator", op, addr)
	}
	fail(ErrInvalidPointer, op, addr, "zmm: %s(0x%x): invalid pointer: not a block of this allocator", op, addr)
	return sharedOwner{}
}

// guardFaults turns a memory fault in the calling function (set up with
// debug.SetPanicOnFault) into a *Error about addr. Use as
// defer guardFaults(op, addr, debug.SetPanicOnFault(true)).
func guardFaults(op string, addr uintptr, old bool) {
	debug.SetPanicOnFault(old)
	if r := recover(); r != nil {
		if _, ok := r.(interface{ Addr() uintptr }); ok {
			fail(ErrInvalidPointer, op, addr, "zmm: %s(0x%x): invalid pointer: the memory it points into was released meanwhile (freed twice at once?)", op, addr)
		}
		panic(r)
	}
}

// checkRemote is step 1 above: it panics with the error lookup would
// report unless addr starts a small slot or a page run in a live chunk of
// s, or a huge block of s. It reports whether the block is small.
func checkRemote(op string, s *heapState, addr uintptr) (small bool) {
	f := frames.Lookup(addr)
	off := addr & (chunk.Size - 1)
	switch f.Kind() {
	case frames.Huge:
		if off == 0 {
			return false
		}
	case frames.Chunk:
		c := hdr(addr - off)
		page := uint32(off >> chunk.PageShift)
		e := c.Map[page&(chunk.Pages-1)]
		switch e & chunk.MapKindMask {
		case chunk.MapLarge:
			if page != 0 && off&(chunk.PageSize-1) == 0 {
				return false
			}
		case chunk.MapSmall:
			bin := chunk.EntryBin(e) & 31
			within := uint32(off&(chunk.PageSize-1)) + chunk.EntryIndex(e)<<chunk.PageShift
			idx, exact := bins.ElementIndex(bin, within)
			if exact && idx < bins.Elements[bin] {
				return true
			}
		}
	}
	// Not a block start: lookup names what it is (it reads nothing that
	// the holder changes for a pointer of those kinds... and if it does,
	// the fault guard is up).
	s.lookup(op, addr)
	fail(ErrInvalidPointer, op, addr, "zmm: %s(0x%x): invalid pointer", op, addr)
	return false
}

// pushRemote frees addr, a block of o, into o's inbox (steps 1-3).
func (a *Shared) pushRemote(op string, o sharedOwner, addr uintptr) {
	defer guardFaults(op, addr, debug.SetPanicOnFault(true))
	s := o.s
	small := checkRemote(op, s, addr)
	key := o.key
	mark := remoteMark(addr, key)
	w := (*uintptr)(ptr(addr + 8))
	for {
		v := atomic.LoadUintptr(w)
		if v == mark {
			fail(ErrDoubleFree, op, addr, "zmm: %s(0x%x): double free: the block was already freed (by another goroutine; its heap has not collected it yet)", op, addr)
		}
		if small && v == *(*uintptr)(ptr(addr))^key^addr {
			fail(ErrDoubleFree, op, addr, "zmm: %s(0x%x): double free: the %d-byte block is already free", op, addr, s.blockSizeRacy(addr))
		}
		if atomic.CompareAndSwapUintptr(w, v, mark) {
			break
		}
	}
	for {
		head := atomic.LoadUintptr(o.inbox)
		*(*uintptr)(ptr(addr)) = head
		if atomic.CompareAndSwapUintptr(o.inbox, head, addr) {
			break
		}
	}
}

// blockSizeRacy is the class size of a small slot at addr, read without
// holding its heap (for a message).
func (s *heapState) blockSizeRacy(addr uintptr) uint32 {
	off := addr & (chunk.Size - 1)
	e := hdr(addr - off).Map[off>>chunk.PageShift&(chunk.Pages-1)]
	return bins.Size[chunk.EntryBin(e)&31]
}

// collect frees the blocks waiting in the inbox of h, which the caller
// holds. An error a block's free reports is kept for Check and the walk
// goes on with the next block; a block without its remote mark ends it
// (the rest of the list is lost to the heap, never handed out).
func (a *Shared) collect(h *Heap) {
	inbox := (*uintptr)(ptr(h.st.inbox))
	if atomic.LoadUintptr(inbox) == 0 {
		return
	}
	for b := atomic.SwapUintptr(inbox, 0); b != 0; {
		b = a.collectFrom(h, b)
	}
}

// collectFrom frees the inbox list from b on. When a free fails it records
// the error and returns the block after the failed one, for collect to go
// on with; at the end it returns 0.
func (a *Shared) collectFrom(h *Heap, b uintptr) (rest uintptr) {
	s := h.st
	var next uintptr
	defer func() {
		if r := recover(); r != nil {
			err, ok := r.(*Error)
			if _, fault := r.(interface{ Addr() uintptr }); fault {
				err, ok = &Error{Kind: ErrInvalidPointer, Op: "Free", Ptr: b, Msg: fmt.Sprintf("zmm: Free(0x%x): invalid pointer: the memory it points into was released before its heap collected it", b)}, true
			}
			if !ok {
				panic(r)
			}
			a.lateError(err)
			rest = next
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	h.enter(opFree)
	defer h.exit()
	for ; b != 0; b = next {
		next = 0
		w := (*uintptr)(ptr(b + 8))
		if *w != remoteMark(b, s.key) {
			fail(ErrCorrupted, "Free", b, "zmm: heap corrupted: block 0x%x in the inbox of heap %d lost its remote mark (written after it was freed?); the rest of the inbox is dropped", b, s.id)
		}
		next = *(*uintptr)(ptr(b))
		*w = 0
		s.freeBlock(s.lookup("Free", b), b)
		s.collected++
	}
	return 0
}

// lateErrorsKept bounds the errors a Shared keeps for Check.
const lateErrorsKept = 16

func (a *Shared) lateError(err error) {
	a.mu.Lock()
	if len(a.late) < lateErrorsKept {
		a.late = append(a.late, err)
	}
	a.lateN++
	a.mu.Unlock()
}

// freeOwned frees addr on h, which the caller holds: Free's slow path,
// refusing a block that waits in the inbox.
func (h *Heap) freeOwned(addr uintptr) {
	s := h.st
	h.enter(opFree)
	defer h.exit()
	b := s.lookup("Free", addr)
	if remoteFreed(addr, s.key) {
		fail(ErrDoubleFree, "Free", addr, "zmm: Free(0x%x): double free: the block was already freed (by another goroutine; its heap has not collected it yet)", addr)
	}
	s.freeBlock(b, addr)
}

// checkNotRemote panics with ErrDoubleFree when addr, a block of h (which
// the caller holds), waits in h's inbox; any other bad pointer is named by
// lookup.
func (h *Heap) checkNotRemote(op string, addr uintptr) {
	s := h.st
	h.enter(opBlockSize)
	defer h.exit()
	s.lookup(op, addr)
	if remoteFreed(addr, s.key) {
		fail(ErrDoubleFree, op, addr, "zmm: %s(0x%x): the block was already freed (by another goroutine; its heap has not collected it yet)", op, addr)
	}
}

// sizeOf returns the class size of addr, a live block of s, which another
// goroutine may hold: the page map of a live block does not change, and a
// huge block's record is read until it is consistent (the table may grow
// or its records move meanwhile).
func (a *Shared) sizeOf(op string, s *heapState, addr uintptr) (size uintptr) {
	defer guardFaults(op, addr, debug.SetPanicOnFault(true))
	small := checkRemote(op, s, addr)
	if remoteFreed(addr, s.key) {
		fail(ErrDoubleFree, op, addr, "zmm: %s(0x%x): the block was already freed (by another goroutine; its heap has not collected it yet)", op, addr)
	}
	if small {
		if isFree(addr, s.key, 0) {
			fail(ErrDoubleFree, op, addr, "zmm: %s(0x%x): double free: the %d-byte block is already free", op, addr, s.blockSizeRacy(addr))
		}
		return uintptr(s.blockSizeRacy(addr))
	}
	off := addr & (chunk.Size - 1)
	if f := frames.Lookup(addr); f.Kind() == frames.Chunk {
		e := hdr(addr - off).Map[off>>chunk.PageShift&(chunk.Pages-1)]
		return uintptr(chunk.EntryPages(e)) * chunk.PageSize
	}
	for {
		f := frames.Lookup(addr)
		if f.Kind() != frames.Huge || f.Owner() != s.id {
			s.lookup(op, addr) // freed meanwhile: named there
		}
		if r, ok := readHugeRec(s, f.Aux()); ok && r.addr == addr {
			return r.size
		}
	}
}

// readHugeRec reads record i of s's huge table, which another goroutine
// may be growing (the old table unmapped): ok is false when the read
// faulted.
func readHugeRec(s *heapState, i uint32) (r hugeRec, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	t := &s.huge
	if i >= atomic.LoadUint32(&t.n) {
		return r, false
	}
	recs := atomic.LoadUintptr(&t.recs)
	p := (*hugeRec)(ptr(recs + uintptr(hugeCacheSlots+i)*hugeRecSize))
	return hugeRec{atomic.LoadUintptr(&p.addr), atomic.LoadUintptr(&p.size)}, true
}

// copyGuarded copies n bytes from src to dst, reporting a fault instead
// of crashing (src is a block another goroutine may free meanwhile).
func copyGuarded(dst, src, n uintptr) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			err = errFault
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	copy(Bytes(ptr(dst), int(n)), Bytes(ptr(src), int(n)))
	return nil
}

var errFault = &Error{Kind: ErrInvalidPointer, Msg: "zmm: memory fault"}
