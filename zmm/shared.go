package zmm

import (
	"io"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// NewShared makes a shared allocator. Its heaps are made on first use, one
// per P that allocates, and closed by Close.
//
// Every option of New is honoured but WithStorage, which makes NewShared
// return an ErrConfig error. Debug mode and the system and guard modes
// (WithDebug, WithAllocMode, ZMM_DEBUG, ZMM_ALLOC) make a serial allocator:
// one heap of that mode serves every goroutine, one call at a time (see
// Shared).
func NewShared(opts ...Option) (*Shared, error) {
	cfg := config{limit: Unlimited}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.resolve(); err != nil {
		return nil, &Error{Kind: ErrConfig, Op: "NewShared", Msg: "zmm: " + err.Error()}
	}
	if cfg.storage != nil {
		return nil, &Error{Kind: ErrConfig, Op: "NewShared", Msg: "zmm: NewShared does not support a storage (WithStorage) yet"}
	}
	if cfg.limit < chunk.Size {
		return nil, &Error{Kind: ErrMemoryLimit, Op: "NewShared", Msg: failedLimitMsg(cfg.limit, chunk.Size)}
	}
	serial := *cfg.debug || *cfg.mode != ModeChunks
	leaks := io.Writer(nil)
	if serial {
		leaks = cfg.leaks
	}
	tab, err := chunk.Map(slotTableSize(), chunk.OSPageSize())
	if err != nil {
		return nil, &Error{Kind: ErrOutOfMemory, Op: "NewShared", Msg: "zmm: NewShared: mapping the slot table: " + err.Error()}
	}
	a := &Shared{id: lastSharedID.Add(1), name: cfg.name, tab: uintptr(tab),
		serial: serial, debug: *cfg.debug, mode: *cfg.mode}
	a.heapOpts = []Option{WithName(cfg.name), WithLeakReport(leaks), WithDebug(*cfg.debug),
		WithAllocMode(*cfg.mode), WithGuardAlignment(cfg.guardAlign)}
	a.budget().limit = cfg.limit
	a.cond.L = &a.mu
	a.heaps.Store(&sharedList{})
	return a, nil
}

// Name returns the allocator's name (WithName; "-" if none).
func (a *Shared) Name() string { return a.name }

// Debug reports whether the allocator is in debug mode.
func (a *Shared) Debug() bool { return a.debug }

// Mode reports where the allocator's blocks come from.
func (a *Shared) Mode() AllocMode { return a.mode }

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
	a.freeSlow(p)
}

// freeSlow takes p, not its address: a system-mode block is Go memory,
// which must stay a pointer.
//
//go:noinline
func (a *Shared) freeSlow(p unsafe.Pointer) {
	addr := uintptr(p)
	if addr == 0 {
		return
	}
	a.checkOpen("Free")
	if a.serial {
		h := a.takeSerial("Free", addr)
		defer a.give(h)
		h.Free(p)
		return
	}
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
	if a.serial {
		// The heap collects and retries before it reports the limit, and
		// it is the allocator's only one: nothing to add here.
		h := a.takeSerial("Realloc", addr)
		defer a.give(h)
		return h.Realloc(p, size)
	}
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
	if a.serial {
		h := a.takeSerial("BlockSize", addr)
		defer a.give(h)
		return h.BlockSize(p)
	}
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
