package zmm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// NewShared makes a shared allocator. Its heaps are made on first use, one
// per P that allocates, and closed by Close.
//
// Of the options, WithName is honoured; debug mode, the system and guard
// modes, WithStorage and WithLimit are not supported yet and make NewShared
// return an ErrConfig error (as do ZMM_DEBUG and ZMM_ALLOC asking for
// them).
func NewShared(opts ...Option) (*Shared, error) {
	cfg := config{limit: Unlimited}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.resolve(); err != nil {
		return nil, &Error{Kind: ErrConfig, Op: "NewShared", Msg: "zmm: " + err.Error()}
	}
	var unsupported string
	switch {
	case *cfg.debug:
		unsupported = "debug mode (WithDebug, ZMM_DEBUG)"
	case *cfg.mode != ModeChunks:
		unsupported = cfg.mode.String() + " mode (WithAllocMode, ZMM_ALLOC)"
	case cfg.storage != nil:
		unsupported = "a storage (WithStorage)"
	}
	if unsupported != "" {
		return nil, &Error{Kind: ErrConfig, Op: "NewShared", Msg: "zmm: NewShared does not support " + unsupported + " yet"}
	}
	if cfg.limit < chunk.Size {
		return nil, &Error{Kind: ErrMemoryLimit, Op: "NewShared", Msg: failedLimitMsg(cfg.limit, chunk.Size)}
	}
	tab, err := chunk.Map(slotTableSize(), chunk.OSPageSize())
	if err != nil {
		return nil, &Error{Kind: ErrOutOfMemory, Op: "NewShared", Msg: "zmm: NewShared: mapping the slot table: " + err.Error()}
	}
	a := &Shared{id: lastSharedID.Add(1), name: cfg.name, tab: uintptr(tab)}
	a.budget().limit = cfg.limit
	a.cond.L = &a.mu
	a.heaps.Store(&sharedList{})
	return a, nil
}

// Name returns the allocator's name (WithName; "-" if none).
func (a *Shared) Name() string { return a.name }

// Alloc returns a block of at least size bytes, as Heap.Alloc does. A small
// block comes from the calling P's heap without a lock.
func (a *Shared) Alloc(size uintptr) unsafe.Pointer {
	if isSmall(size) {
		pid := procPin()
		if uint(pid) < sharedSlots {
			if sl := a.slot(pid); sl.stop == 0 {
				if sa := sl.st; sa != 0 {
					s := (*heapState)(ptr(sa))
					bin := smallBin(size) & 31
					if slot := s.free[bin]; slot != 0 {
						// A broken link goes to the slow path, which
						// reports it: nothing may panic while pinned.
						if next, ok := readLink(slot, s.key, 0); ok {
							markHandedOut(slot, 0)
							s.free[bin] = next
							s.size += uintptr(bins.Size[bin])
							s.peak = max(s.peak, s.size)
							procUnpin()
							return ptr(slot)
						}
					}
				}
			}
		}
		procUnpin()
	}
	return a.allocSlow(size)
}

//go:noinline
func (a *Shared) allocSlow(size uintptr) (p unsafe.Pointer) {
	a.retryOverLimit(size, func(h *Heap) { p = h.Alloc(size) })
	return p
}

// retryOverLimit runs f on a heap taken for it. If f reaches the memory
// limit, which it did after collecting its own heap, every heap is
// collected (GC) and f runs once more, as the Zend MM collects and retries
// before it gives up; the second failure is reported. f must change
// nothing when it fails (every heap call keeps that promise).
func (a *Shared) retryOverLimit(tried uintptr, f func(h *Heap)) {
	for retried := false; ; retried = true {
		h := a.take("Alloc")
		if h == nil { // a new heap's main chunk would pass the limit
			if retried {
				limitError("Alloc", a.Limit(), tried)
			}
			a.GC()
			continue
		}
		err := a.runHeld(h, f)
		if err == nil {
			return
		}
		if retried || a.budget().limitNow() == Unlimited {
			panic(err)
		}
		a.GC()
	}
}

// runHeld runs f on h, which the caller took, gives h back, and returns
// the limit error f panicked with, if any; other panics go on.
func (a *Shared) runHeld(h *Heap, f func(h *Heap)) (err *Error) {
	defer func() {
		a.give(h)
		if r := recover(); r != nil {
			if e, ok := r.(*Error); ok && e.Kind == ErrMemoryLimit {
				err = e
				return
			}
			panic(r)
		}
	}()
	f(h)
	return nil
}

// Calloc returns a zeroed block of n*size bytes, checked (ecalloc).
func (a *Shared) Calloc(n, size uintptr) unsafe.Pointer { return callocFrom(a, n, size) }

// SafeAlloc returns a block of n*size+offset bytes, checked (safe_emalloc).
func (a *Shared) SafeAlloc(n, size, offset uintptr) unsafe.Pointer {
	return a.Alloc(safeSize("SafeAlloc", n, size, offset))
}

// Strdup copies s into a new block followed by a NUL byte (estrdup).
func (a *Shared) Strdup(s string) unsafe.Pointer { return copyStringTo(a, "Strdup", s) }

// Strndup copies at most n bytes of s and a NUL byte (estrndup).
func (a *Shared) Strndup(s string, n uintptr) unsafe.Pointer {
	if n < uintptr(len(s)) {
		s = s[:n]
	}
	return copyStringTo(a, "Strndup", s)
}

// AllocBytes allocates n bytes as a slice whose capacity is the block.
func (a *Shared) AllocBytes(n int) []byte { return allocBytesFrom(a, n) }

// FreeBytes frees a slice that AllocBytes returned.
func (a *Shared) FreeBytes(b []byte) {
	if cap(b) == 0 {
		return
	}
	a.Free(unsafe.Pointer(unsafe.SliceData(b)))
}

// Free gives a block back, whichever goroutine allocated it (efree).
// Free(nil) does nothing; a bad pointer panics with a *Error as in
// Heap.Free. The free of a small block of the calling P's heap takes the
// heap's fast path; a block of a heap held elsewhere goes to that heap's
// inbox.
func (a *Shared) Free(p unsafe.Pointer) {
	slot := uintptr(p) // untrusted: an integer from here on (see Heap.Free)
	off := slot & (chunk.Size - 1)
	pid := procPin()
	if uint(pid) < sharedSlots {
		if sl := a.slot(pid); sl.stop == 0 {
			if sa := sl.st; sa != 0 {
				// Heap.Free's fast-path test (keep the two in step:
				// TestBadPointersAreReported and TestSharedBadPointers
				// run the same pointers through both), and the block is
				// not in an inbox.
				s := (*heapState)(ptr(sa))
				if s.own[ownSlot(slot)] == slot-off || s.fastFrame(slot) {
					e := hdr(slot - off).Map[off>>chunk.PageShift&(chunk.Pages-1)]
					bin := chunk.EntryBin(e) & 31
					within := uint32(off&(chunk.PageSize-1)) + chunk.EntryIndex(e)<<chunk.PageShift
					idx, exact := bins.ElementIndex(bin, within)
					key := s.key
					if e&chunk.MapKindMask == chunk.MapSmall && exact && idx < bins.Elements[bin] &&
						!s.uncarved(bin, slot) && !isFree(slot, key, 0) && !remoteFreed(slot, key) {
						writeLink(slot, s.free[bin], key, 0)
						s.free[bin] = slot
						s.size -= uintptr(bins.Size[bin])
						procUnpin()
						return
					}
				}
			}
		}
	}
	procUnpin()
	a.freeSlow(slot)
}

//go:noinline
func (a *Shared) freeSlow(addr uintptr) {
	if addr == 0 {
		return
	}
	a.checkOpen("Free")
	o := a.ownerOf("Free", addr)
	if h := a.takeIfSlotted(o.s); h != nil {
		defer a.give(h)
		h.freeOwned(addr)
		return
	}
	a.pushRemote("Free", o, addr)
}

// Realloc changes the size of a block, as Heap.Realloc does. A block of
// the calling P's heap is resized by that heap (in place where it can); a
// block of another heap is copied into a new block of this P's and freed
// remotely. If the new block cannot be had, p stays valid.
func (a *Shared) Realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	addr := uintptr(p)
	if addr == 0 {
		return a.Alloc(size)
	}
	a.checkOpen("Realloc")
	o := a.ownerOf("Realloc", addr)
	if h := a.takeIfSlotted(o.s); h != nil {
		var q unsafe.Pointer
		err := a.runHeld(h, func(h *Heap) {
			h.checkNotRemote("Realloc", addr)
			q = h.Realloc(p, size)
		})
		if err == nil {
			return q
		}
		if a.budget().limitNow() == Unlimited {
			panic(err)
		}
		// Over the limit: collect every heap and try again, moving the
		// block if its heap is no longer at hand.
		a.GC()
		return a.Realloc(p, size)
	}
	old := a.sizeOf("Realloc", o.s, addr)
	q := a.Alloc(size)
	n := min(old, size)
	if err := copyGuarded(uintptr(q), addr, n); err != nil {
		a.Free(q)
		fail(ErrInvalidPointer, "Realloc", addr, "zmm: Realloc(0x%x): invalid pointer: the block's memory was released while it was copied (freed by another goroutine meanwhile?)", addr)
	}
	if err := Try(func() { a.pushRemote("Realloc", o, addr) }); err != nil {
		a.Free(q)
		panic(err)
	}
	return q
}

// BlockSize returns the usable size of a block (zend_mem_block_size).
func (a *Shared) BlockSize(p unsafe.Pointer) uintptr {
	addr := uintptr(p)
	a.checkOpen("BlockSize")
	o := a.ownerOf("BlockSize", addr)
	if h := a.takeIfSlotted(o.s); h != nil {
		defer a.give(h)
		h.checkNotRemote("BlockSize", addr)
		return h.BlockSize(p)
	}
	return a.sizeOf("BlockSize", o.s, addr)
}

// Owns reports whether p points into memory one of the allocator's heaps
// holds now (see Heap.Owns).
func (a *Shared) Owns(p unsafe.Pointer) bool {
	if a.closed.Load() {
		return false
	}
	for _, h := range a.heaps.Load().hs {
		if h.Owns(p) {
			return true
		}
	}
	return false
}

// Usage returns the bytes handed out and not freed, summed over the heaps
// (memory_get_usage()); blocks freed remotely count until collected.
func (a *Shared) Usage() uintptr { return a.sum(func(s *heapState) *uintptr { return &s.size }) }

// PeakUsage returns the sum of the heaps' peak usages: at least the
// allocator's peak.
func (a *Shared) PeakUsage() uintptr { return a.sum(func(s *heapState) *uintptr { return &s.peak }) }

// RealUsage returns the bytes mapped from the OS by all the heaps
// (memory_get_usage(true)): the allocator's budget, exact at any time. The
// memory limit applies to it.
func (a *Shared) RealUsage() uintptr { return atomic.LoadUintptr(&a.budget().real) }

// RealPeakUsage returns the highest RealUsage.
func (a *Shared) RealPeakUsage() uintptr { return atomic.LoadUintptr(&a.budget().peak) }

// Limit returns the memory limit (Unlimited when there is none).
func (a *Shared) Limit() uintptr { return a.budget().limitNow() }

// SetLimit sets the memory limit of the whole allocator: every heap maps
// against it, and a mapping that would pass it fails, after a collection
// of every heap, with Zend's message (ErrMemoryLimit). A limit below
// RealUsage is accepted if collecting every heap brings the usage under
// it; otherwise SetLimit returns Zend's "Failed to set memory limit" error
// and the limit stays as it was.
func (a *Shared) SetLimit(limit uintptr) error {
	a.checkOpen("SetLimit")
	b := a.budget()
	old := b.limitNow()
	atomic.StoreUintptr(&b.limit, limit)
	if a.RealUsage() > limit {
		a.GC()
		if real := a.RealUsage(); real > limit {
			atomic.StoreUintptr(&b.limit, old)
			return &Error{Kind: ErrMemoryLimit, Op: "SetLimit", Msg: failedLimitMsg(limit, real)}
		}
	}
	return nil
}

// sum adds up one figure of every heap, each read as the heap's holder
// last wrote it.
func (a *Shared) sum(field func(*heapState) *uintptr) uintptr {
	var n uintptr
	for _, h := range a.heaps.Load().hs {
		n += atomic.LoadUintptr(field(h.st))
	}
	return n
}

// SharedStats describes a shared allocator's heaps.
type SharedStats struct {
	// Heaps is how many heaps the allocator has made; Idle how many are in
	// no P's slot and held by no goroutine right now.
	Heaps, Idle int
	// Collected counts the blocks freed remotely (into a heap held
	// elsewhere) that their heaps have taken back.
	Collected uint64
}

// SharedStats returns the allocator's figures, read without stopping it.
func (a *Shared) SharedStats() SharedStats {
	list := a.heaps.Load()
	st := SharedStats{Heaps: len(list.hs)}
	for _, h := range list.hs {
		st.Collected += atomic.LoadUint64(&h.st.collected)
	}
	a.mu.Lock()
	st.Idle = len(a.idle)
	a.mu.Unlock()
	return st
}

// HeapSnapshot takes a snapshot of the allocator's heap i, 0 ≤ i <
// SharedStats().Heaps, after collecting its inbox (see Heap.Snapshot). It
// holds every heap meanwhile, as GC does. The snapshot is named after the
// allocator and the heap ("name/i").
func (a *Shared) HeapSnapshot(i int) (*Snapshot, error) {
	var snap *Snapshot
	err := Try(func() {
		a.checkOpen("Snapshot")
		hs := a.stop()
		defer a.resume(hs)
		list := a.heaps.Load().hs
		if i < 0 || i >= len(list) {
			fail(ErrConfig, "Snapshot", 0, "zmm: Snapshot of heap %d of a shared allocator with %d heaps", i, len(list))
		}
		a.collect(list[i])
		snap = list[i].Snapshot()
		snap.Name = fmt.Sprintf("%s/%d", a.name, i)
	})
	return snap, err
}

// GC collects every heap's inbox and runs Heap.GC on every heap, giving
// what they do not use back to the OS; it returns the bytes. It holds every
// heap while it runs: other calls wait for it, except the fast paths of
// goroutines whose P already held a heap, which find none and wait too.
func (a *Shared) GC() uintptr {
	a.checkOpen("GC")
	hs := a.stop()
	defer a.resume(hs)
	var n uintptr
	for _, h := range hs {
		a.collect(h)
		n += h.GC()
	}
	return n
}

// Check collects every heap's inbox, checks every heap (Heap.Check), and
// returns what it found together with the errors collections found since
// the last Check (a remote free of a block that was never handed out, a
// double free whose frees raced), or nil.
func (a *Shared) Check() error {
	a.checkOpen("Check")
	hs := a.stop()
	defer a.resume(hs)
	var errs []error
	var mapped uintptr
	for _, h := range hs {
		a.collect(h)
		if err := h.Check(); err != nil {
			errs = append(errs, err)
		}
		mapped += h.st.realSize
	}
	// Every heap is held here, so no mapping is under way: the budget
	// must be exactly what the heaps have mapped.
	if real := a.RealUsage(); real != mapped {
		errs = append(errs, &Error{Kind: ErrCorrupted, Op: "Check", Msg: fmt.Sprintf("zmm: shared allocator corrupted: its budget counts %d bytes mapped, its heaps %d", real, mapped)})
	}
	a.mu.Lock()
	errs = append(errs, a.late...)
	if a.lateN > len(a.late) {
		errs = append(errs, &Error{Kind: ErrCorrupted, Op: "Check", Msg: "zmm: and more errors found by collections"})
	}
	a.late, a.lateN = nil, 0
	a.mu.Unlock()
	return errors.Join(errs...)
}

// Close closes every heap and gives all the allocator's memory back to the
// OS. No goroutine may use the allocator or its blocks afterwards: calls
// panic with ErrClosed. Close is idempotent.
func (a *Shared) Close() {
	if a.closed.Swap(true) {
		return
	}
	hs := a.stop()
	a.heaps.Store(&sharedList{})
	for _, h := range hs {
		h.Close()
	}
	// The table stays mapped, so that a call racing Close reads zeros
	// rather than faulting, but its pages go back to the OS: an empty slot
	// sends every call to the slow path, which reports ErrClosed.
	chunk.Release(ptr(a.tab), slotTableSize())
	a.mu.Lock()
	a.stopping = false
	a.cond.Broadcast()
	a.mu.Unlock()
}
