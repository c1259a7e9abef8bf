package zmm

import (
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// Who may use which heap of a Shared allocator. A heap is in exactly one
// of four places:
//
//   - in a P's slot: the goroutine pinned on that P uses it, on the fast
//     paths, without further ado (no other goroutine runs on the P while it
//     is pinned);
//   - held (heapState.held): a goroutine took it out of its P's slot
//     (pinned) or out of idle (under mu) for one call, and uses it
//     unpinned: it may map memory, copy megabytes, panic with a *Error;
//   - idle: in a.idle, under mu;
//   - stopped: GC, Check or Close hold every heap (stop).
//
// A goroutine done with a heap puts it in its current P's slot if that is
// empty, else in idle. Heaps move between Ps that way; a heap belongs to no
// P, only its blocks belong to it. New heaps are made only when no slot
// and no idle heap offers one, so there are about as many heaps as Ps that
// allocate, plus those that goroutines held at the same time.
//
// A slot is read and written only by the goroutine pinned on its P, so
// taking a heap out of it or putting one in is a plain load and store: no
// atomic read-modify-write, on the slow paths either. stop is the one
// outsider. It raises every slot's stop flag, which every pinned section
// checks before it looks at the slot (the flag shares the slot's cache
// line), then stops the world: a stop-the-world waits until every pinned
// section has ended, so from then on nobody uses a slot or the heap in it,
// and stop takes them with plain loads. sync.Pool relies on the same
// property of the stop-the-world: its per-P pools are cleared there.

// heapOf returns the allocator's heap whose state is s.
func (a *Shared) heapOf(s *heapState) *Heap {
	return a.heaps.Load().hs[s.sharedIdx]
}

// take returns a heap for the calling goroutine's sole use, for one call:
// its P's, else an idle one, else a new one; nil when a new one's main
// chunk would pass the memory limit. Its inbox is collected first. The
// caller gives it back with give, also when it panics.
func (a *Shared) take(op string) *Heap {
	pid := procPin()
	if uint(pid) < sharedSlots {
		if sl := a.slot(pid); sl.stop == 0 {
			if sa := sl.st; sa != 0 {
				sl.st = 0
				(*heapState)(ptr(sa)).held = 1
				procUnpin()
				h := a.heapOf((*heapState)(ptr(sa)))
				a.collect(h)
				return h
			}
		}
	}
	procUnpin()
	h := a.takeIdle(op)
	if h != nil {
		a.collect(h)
	}
	return h
}

// takeSerial takes a serial allocator's heap for a call on the block at
// addr. Before the heap is made (it would pass the limit) no block can be
// the allocator's: ownerOf names what addr is instead.
func (a *Shared) takeSerial(op string, addr uintptr) *Heap {
	h := a.take(op)
	if h == nil {
		a.ownerOf(op, addr) // panics: the allocator has no heap
	}
	return h
}

// takeIfSlotted takes the heap whose state is s if it is in the calling
// goroutine's P's slot, and returns it, or nil.
func (a *Shared) takeIfSlotted(s *heapState) *Heap {
	sa := uintptr(unsafe.Pointer(s))
	pid := procPin()
	if uint(pid) < sharedSlots {
		if sl := a.slot(pid); sl.stop == 0 && sl.st == sa {
			sl.st = 0
			s.held = 1
			procUnpin()
			return a.heapOf(s)
		}
	}
	procUnpin()
	return nil
}

// give puts a heap the goroutine held back: in its P's slot if that is
// empty and no stop is under way, else among the idle ones. A serial
// allocator's heap always goes to idle, where the next call finds it.
func (a *Shared) give(h *Heap) {
	s := h.st
	pid := procPin()
	if uint(pid) < sharedSlots && !a.serial {
		if sl := a.slot(pid); sl.stop == 0 && sl.st == 0 {
			s.held = 0
			sl.st = uintptr(unsafe.Pointer(s))
			procUnpin()
			return
		}
	}
	procUnpin()
	a.mu.Lock()
	s.held = 0
	a.idle = append(a.idle, h)
	if a.stopping || a.waiting > 0 {
		a.cond.Broadcast()
	}
	a.mu.Unlock()
}

// takeIdle takes an idle heap, waiting out a stop, or makes a new one. The
// number of heaps is bounded (maxHeaps, and one for a serial allocator):
// past it, takeIdle waits for one to come back. It returns nil when a new heap's main chunk would pass the
// memory limit.
func (a *Shared) takeIdle(op string) *Heap {
	a.mu.Lock()
	for {
		for a.stopping {
			a.cond.Wait()
		}
		if a.closed.Load() {
			a.mu.Unlock()
			a.checkOpen(op)
		}
		if n := len(a.idle); n > 0 {
			h := a.idle[n-1]
			a.idle = a.idle[:n-1]
			h.st.held = 1
			a.mu.Unlock()
			return h
		}
		procs := runtime.GOMAXPROCS(0)
		if a.adoptStranded(procs) {
			continue
		}
		if n := len(a.heaps.Load().hs); n < maxHeaps(procs) && (n == 0 || !a.serial) {
			break
		}
		a.waiting++
		a.cond.Wait()
		a.waiting--
	}
	defer a.mu.Unlock()
	if !a.budget().take(chunk.Size) {
		return nil
	}
	h, err := New(a.heapOpts...)
	if err != nil {
		a.budget().give(chunk.Size)
		panic(err)
	}
	old := a.heaps.Load()
	i := len(old.hs)
	h.st.budget = uintptr(unsafe.Pointer(a.budget()))
	h.st.shared = a.id
	h.st.sharedIdx = uint32(i)
	h.st.inbox = a.inboxAt(i)
	h.st.held = 1
	a.heaps.Store(&sharedList{
		hs:   append(old.hs[:i:i], h),
		ids:  append(old.ids[:i:i], h.st.id),
		keys: append(old.keys[:i:i], h.st.key),
	})
	return h
}

// maxHeaps bounds the heaps of an allocator: two per P and a few more, so
// that goroutines descheduled while holding a heap do not make the
// allocator map a new chunk each.
func maxHeaps(procs int) int { return min(2*procs+4, maxSharedHeaps) }

// adoptStranded moves the heaps left in the slots of Ps that no longer
// exist (GOMAXPROCS went down) to idle, so that they serve again and their
// inboxes are collected (mimalloc's abandoned heaps, adopted). It runs
// under mu, only when a new heap would be made, and reports whether it
// adopted any. GOMAXPROCS may go back up meanwhile, so those slots are
// taken as stop takes them: flags raised, the world stopped.
func (a *Shared) adoptStranded(procs int) bool {
	found := false
	for i := procs; i < sharedSlots; i++ {
		if sl := a.slot(i); atomicLoadUintptr(&sl.st) != 0 {
			found = true
			atomicStoreUint32(&sl.stop, 1)
		}
	}
	if !found {
		return false
	}
	stopTheWorld()
	for i := procs; i < sharedSlots; i++ {
		sl := a.slot(i)
		if sa := sl.st; sa != 0 && sl.stop != 0 {
			sl.st = 0
			a.idle = append(a.idle, a.heapOf((*heapState)(ptr(sa))))
			a.adopted++
		}
		atomicStoreUint32(&sl.stop, 0)
	}
	return true
}

// stop takes every heap: it waits out another stop, raises the slots' stop
// flags and stops the world (see the top of this file), takes the heaps in
// the slots, and waits until no goroutine holds one (those give theirs to
// idle). Calls meanwhile wait in takeIdle. resume ends it.
func (a *Shared) stop() []*Heap {
	hs, _ := a.stopAt()
	return hs
}

// stopAt is stop, and says for each heap the P whose slot held it (-1:
// idle or held).
func (a *Shared) stopAt() (hs []*Heap, pids []int) {
	a.mu.Lock()
	for a.stopping {
		a.cond.Wait()
	}
	a.stopping = true
	for i := range sharedSlots {
		atomicStoreUint32(&a.slot(i).stop, 1)
	}
	a.mu.Unlock()
	stopTheWorld()
	for i := range sharedSlots {
		if sl := a.slot(i); sl.st != 0 {
			hs = append(hs, a.heapOf((*heapState)(ptr(sl.st))))
			pids = append(pids, i)
			sl.st = 0
		}
	}
	a.mu.Lock()
	for a.anyHeld() {
		a.cond.Wait()
	}
	for _, h := range a.idle {
		hs = append(hs, h)
		pids = append(pids, -1)
	}
	a.idle = a.idle[:0]
	a.mu.Unlock()
	return hs, pids
}

// anyHeld reports whether a goroutine holds one of the heaps (under mu,
// during a stop: the holders that took a heap from a slot did so before
// the stop-the-world, and the others give back under mu).
func (a *Shared) anyHeld() bool {
	for _, h := range a.heaps.Load().hs {
		if h.st.held != 0 {
			return true
		}
	}
	return false
}

// resume ends a stop: the heaps go to idle, and from there to the slots of
// the Ps that use them next.
func (a *Shared) resume(hs []*Heap) {
	a.mu.Lock()
	a.idle = append(a.idle, hs...)
	for i := range sharedSlots {
		atomicStoreUint32(&a.slot(i).stop, 0)
	}
	a.stopping = false
	a.cond.Broadcast()
	a.mu.Unlock()
}

// stopTheWorld stops and restarts the world, which waits until every
// goroutine pinned to its P has unpinned. ReadMemStats is the lightest
// call that does it.
func stopTheWorld() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
}

// The outsiders' (stop's, adoptStranded's) writes to the slot flags are
// atomic, so that a pinned section on another CPU sees them promptly; the
// stop-the-world that follows is what makes them safe.
func atomicStoreUint32(p *uint32, v uint32) { atomic.StoreUint32(p, v) }

func atomicLoadUintptr(p *uintptr) uintptr { return atomic.LoadUintptr(p) }
