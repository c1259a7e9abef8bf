package zmm

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
)

// Calls on a whole Shared allocator: each holds every heap while it runs
// (stop), so that it sees them between calls, and collects every inbox
// first, so that blocks freed remotely count as free. Other calls wait for
// it (see stop); it takes time in proportion to the allocator's size, as
// the same call on a Heap does.

// Reset ends a request on every heap at once (see Heap.Reset): every block
// of the allocator is released, those waiting in inboxes included, and the
// heaps keep chunks for the next request by the Zend MM's policy. Pointers
// into the allocator are invalid afterwards; no goroutine may use one
// across Reset. A debug allocator writes its leak report first.
//
// Like every call of this file it stops the world once, briefly (see
// stop): it ends a request cycle of the whole process. Requests served
// side by side each want a Heap of their own (zmmhttp, lifecycle), whose
// Reset touches nothing else.
func (a *Shared) Reset() {
	a.checkOpen("Reset")
	hs := a.stop()
	defer a.resume(hs)
	for _, h := range hs {
		// The inbox's blocks are released with the rest, unvisited.
		atomic.StoreUintptr((*uintptr)(ptr(h.st.inbox)), 0)
		h.Reset()
	}
	// Reset gave every heap a new key: remote frees must use it.
	a.mu.Lock()
	old := a.heaps.Load()
	keys := make([]uintptr, len(old.hs))
	for i, h := range old.hs {
		keys[i] = h.st.key
	}
	a.heaps.Store(&sharedList{hs: old.hs, ids: old.ids, keys: keys})
	a.mu.Unlock()
}

// Stats returns the allocator's statistics: the sum over its heaps, with
// RealUsage, RealPeakUsage and Limit the budget's. PeakUsage and
// PeakChunks are sums of the heaps' peaks, which need not have been
// reached at the same moment: an upper bound of the allocator's (exact for
// a serial allocator).
func (a *Shared) Stats() Stats {
	a.checkOpen("Stats")
	hs := a.stop()
	defer a.resume(hs)
	st := Stats{Limit: a.Limit()}
	for _, h := range hs {
		a.collect(h)
		hst := h.Stats()
		st.Usage += hst.Usage
		st.PeakUsage += hst.PeakUsage
		st.Chunks += hst.Chunks
		st.PeakChunks += hst.PeakChunks
		st.CachedChunks += hst.CachedChunks
		st.HugeBlocks += hst.HugeBlocks
		st.HugeBytes += hst.HugeBytes
		st.CachedHuge += hst.CachedHuge
		st.CachedHugeBytes += hst.CachedHugeBytes
		for b := range st.Bins {
			sb, hb := &st.Bins[b], hst.Bins[b]
			sb.Size, sb.Elements, sb.Pages = hb.Size, hb.Elements, hb.Pages
			sb.Runs += hb.Runs
			sb.Used += hb.Used
			sb.Free += hb.Free
		}
	}
	st.RealUsage, st.RealPeakUsage = a.RealUsage(), a.RealPeakUsage()
	return st
}

// Snapshot takes a snapshot of the whole allocator: its heaps' snapshots
// merged (chunks, huge blocks and sites of every heap; statistics and
// fragmentation summed as Stats sums them). The per-heap pictures are
// HeapSnapshot's.
func (a *Shared) Snapshot() *Snapshot {
	a.checkOpen("Snapshot")
	hs, pids := a.stopAt()
	defer a.resume(hs)
	procs := runtime.GOMAXPROCS(0)
	sh := &SharedSnapshot{Serial: a.serial, Heaps: []SharedHeapSnapshot{}}
	a.mu.Lock()
	sh.Adopted = a.adopted
	a.mu.Unlock()
	snap := &Snapshot{
		Version: SnapshotVersion, Name: a.name, Time: time.Now(),
		Mode: a.Mode().String(), Debug: a.Debug(),
		OSPageSize: uint64(chunk.OSPageSize()), PageSize: chunk.PageSize, ChunkSize: chunk.Size,
		CachedChunks: []uint64{}, Huge: []HugeSnapshot{}, CachedHuge: []HugeSnapshot{},
	}
	for i, h := range hs {
		pending := inboxLen(h.st) // nobody collects during a stop
		a.collect(h)
		hsnap := h.Snapshot()
		mergeSnapshot(snap, hsnap)
		sh.Heaps = append(sh.Heaps, SharedHeapSnapshot{
			Index: int(h.st.sharedIdx), P: pids[i],
			Usage: hsnap.Stats.Usage, RealUsage: hsnap.Stats.RealUsage, Chunks: hsnap.Stats.Chunks,
			Pending: pending, Collected: h.st.collected,
		})
		sh.Pending += pending
		sh.Collected += h.st.collected
		switch {
		case pids[i] < 0:
			sh.Idle++
		case pids[i] >= procs:
			sh.Stranded++
		}
	}
	slices.SortFunc(sh.Heaps, func(x, y SharedHeapSnapshot) int { return cmp.Compare(x.Index, y.Index) })
	snap.Shared = sh
	if snap.Bins == nil { // no heap yet
		for b := range bins.NumBins {
			snap.Bins = append(snap.Bins, BinSnapshot{Bin: b, Size: bins.Size[b], Elements: bins.Elements[b], Pages: bins.Pages[b]})
		}
	}
	snap.Stats.RealUsage, snap.Stats.RealPeakUsage = uint64(a.RealUsage()), uint64(a.RealPeakUsage())
	snap.Stats.Limit = uint64(a.Limit())
	fr := &snap.Fragmentation
	fr.UnusedOfRealPct = 0
	if snap.Stats.RealUsage > 0 {
		fr.UnusedOfRealPct = int(100 * fr.Total / snap.Stats.RealUsage)
	}
	slices.SortFunc(snap.Blocks, func(x, y BlockSnapshot) int { return cmp.Compare(x.Addr, y.Addr) })
	slices.SortFunc(snap.Huge, func(x, y HugeSnapshot) int { return cmp.Compare(x.Addr, y.Addr) })
	return snap
}

// mergeSnapshot adds one heap's snapshot to an allocator's.
func mergeSnapshot(dst, src *Snapshot) {
	st, ss := &dst.Stats, src.Stats
	st.Usage += ss.Usage
	st.PeakUsage += ss.PeakUsage
	st.Chunks += ss.Chunks
	st.PeakChunks += ss.PeakChunks
	fr, sf := &dst.Fragmentation, src.Fragmentation
	fr.FreePages += sf.FreePages
	fr.FreeSlots += sf.FreeSlots
	fr.RunTails += sf.RunTails
	fr.CachedChunks += sf.CachedChunks
	fr.CachedHuge += sf.CachedHuge
	fr.ChunkHeaders += sf.ChunkHeaders
	fr.Total += sf.Total
	if dst.Bins == nil {
		dst.Bins = slices.Clone(src.Bins)
	} else {
		for i := range dst.Bins {
			b, sb := &dst.Bins[i], src.Bins[i]
			b.Runs += sb.Runs
			b.Used += sb.Used
			b.Free += sb.Free
			b.Utilization = 0
			if b.Runs > 0 {
				b.Utilization = 100 * b.Used / (b.Runs * int(b.Elements))
			}
		}
	}
	dst.Chunks = append(dst.Chunks, src.Chunks...)
	dst.CachedChunks = append(dst.CachedChunks, src.CachedChunks...)
	dst.Huge = append(dst.Huge, src.Huge...)
	dst.CachedHuge = append(dst.CachedHuge, src.CachedHuge...)
	dst.Blocks = append(dst.Blocks, src.Blocks...)
}

// inboxLen counts the blocks in s's inbox. Only for a stopped heap: the
// blocks may be pushed onto, never taken off meanwhile, so the list from
// the head it loads stays whole.
func inboxLen(s *heapState) uint64 {
	n := uint64(0)
	for b := atomic.LoadUintptr((*uintptr)(ptr(s.inbox))); b != 0; b = *(*uintptr)(ptr(b)) {
		n++
	}
	return n
}

// Leaks lists the allocator's live blocks with their sites, in its heap's
// order (see Heap.Leaks): a serial allocator's (debug, system, guard
// mode); a normal one keeps no sites and returns nil.
func (a *Shared) Leaks() []Leak {
	a.checkOpen("Leaks")
	if !a.serial {
		return nil
	}
	hs := a.stop()
	defer a.resume(hs)
	var out []Leak
	for _, h := range hs {
		out = append(out, h.Leaks()...)
	}
	return out
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
