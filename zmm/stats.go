package zmm

import (
	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/storage"
)

// Usage returns the bytes handed out and not freed, counted at class size:
// the bin size of a small block, whole pages of a large one, the mapped size
// of a huge one (memory_get_usage()).
func (h *Heap) Usage() uintptr { return h.st.size }

// PeakUsage returns the highest Usage since the heap was made, Reset, or
// ResetPeak was called (memory_get_peak_usage()).
func (h *Heap) PeakUsage() uintptr { return h.st.peak }

// RealUsage returns the bytes mapped from the OS: live and cached chunks and
// huge mappings (memory_get_usage(true)). The memory limit applies to it.
func (h *Heap) RealUsage() uintptr { return h.st.realSize }

// RealPeakUsage returns the highest RealUsage (memory_get_peak_usage(true)).
func (h *Heap) RealPeakUsage() uintptr { return h.st.realPeak }

// ResetPeak sets both peaks to the current usage (memory_reset_peak_usage).
func (h *Heap) ResetPeak() {
	s := h.st
	s.checkOpen("ResetPeak")
	s.peak, s.realPeak = s.size, s.realSize
}

// Limit returns the memory limit (Unlimited when there is none).
func (h *Heap) Limit() uintptr { return h.st.limit }

// SetLimit sets the memory limit in bytes (zend_set_memory_limit). The
// limit applies to RealUsage and is checked when a chunk or a huge block is
// mapped, so it works in steps of 2 MiB chunks, as in the Zend MM. A limit
// below RealUsage is accepted only if dropping cached memory brings the
// usage under it (the cache is then dropped); otherwise SetLimit returns an
// error with Zend's message "Failed to set memory limit to N bytes (Current
// memory usage is M bytes)" and the old limit stays. Unlike the Zend MM, the
// limit is also set when the cache had to be dropped.
func (h *Heap) SetLimit(limit uintptr) error {
	s := h.st
	s.checkOpen("SetLimit")
	h.enter(opSetLimit)
	defer h.exit()
	if limit < s.realSize {
		if limit < s.realSize-s.cachedBytes() {
			return &Error{Kind: ErrMemoryLimit, Op: "SetLimit", Msg: failedLimitMsg(limit, s.realSize)}
		}
		for s.realSize > limit && s.cached != 0 {
			s.unmapCachedChunk()
		}
		if s.realSize > limit {
			s.dropHugeCache()
		}
	}
	s.limit = limit
	return nil
}

// Stats is a consistent picture of a heap's statistics.
type Stats struct {
	Usage, PeakUsage         uintptr // memory_get_usage(), memory_get_peak_usage()
	RealUsage, RealPeakUsage uintptr // the same with real_usage = true
	Limit                    uintptr

	Chunks       int // live chunks, the main chunk included
	PeakChunks   int // most live chunks since the last Reset
	CachedChunks int // empty chunks kept mapped for reuse

	HugeBlocks      int     // live huge blocks
	HugeBytes       uintptr // their mapped size
	CachedHuge      int     // freed huge mappings kept for reuse
	CachedHugeBytes uintptr

	Bins [bins.NumBins]BinStats
}

// BinStats describes one size class.
type BinStats struct {
	Size     uint32 // block size of the bin
	Elements uint32 // blocks per run
	Pages    uint32 // pages per run
	Runs     int    // runs the bin holds now
	Used     int    // blocks handed out
	Free     int    // free blocks in its runs
}

// Stats walks the heap's chunks and free lists and returns its statistics.
// It costs time in proportion to the heap's size; the fast path keeps no
// per-bin counters.
func (h *Heap) Stats() Stats {
	s := h.st
	s.checkOpen("Stats")
	h.enter(opStats)
	defer h.exit()
	return h.statsLocked("Stats")
}

func (h *Heap) statsLocked(op string) Stats {
	s := h.st
	st := Stats{
		Usage: s.size, PeakUsage: s.peak,
		RealUsage: s.realSize, RealPeakUsage: s.realPeak,
		Limit:  s.limit,
		Chunks: int(s.chunks), PeakChunks: int(s.peakChunks), CachedChunks: int(s.cachedChunks),
		HugeBlocks: int(s.huge.n), CachedHuge: int(s.huge.cacheN), CachedHugeBytes: s.huge.cacheBytes,
	}
	for i := uint32(0); i < s.huge.n; i++ {
		st.HugeBytes += s.huge.at(i).size
	}
	for b := range st.Bins {
		st.Bins[b] = BinStats{Size: bins.Size[b], Elements: bins.Elements[b], Pages: bins.Pages[b]}
	}
	s.eachRun(func(c *chunk.Header, page, n, e uint32) {
		if e&chunk.MapKindMask == chunk.MapSmall {
			st.Bins[chunk.EntryBin(e)&31].Runs++
		}
	})
	for b := uint32(0); b < bins.NumBins; b++ {
		st.Bins[b].Free = s.uncarvedSlots(b)
	}
	s.eachFree(op, func(bin uint32, slot uintptr) { st.Bins[bin].Free++ })
	if sp := h.sp; sp != nil && sp.dbg != nil {
		for _, b := range sp.dbg.quarantined {
			st.Bins[b&31].Free++
		}
	}
	for b := range st.Bins {
		st.Bins[b].Used = st.Bins[b].Runs*int(bins.Elements[b]) - st.Bins[b].Free
	}
	return st
}

// Storage returns the storage the heap's memory comes from: storage.OS
// unless it was made WithStorage (and storage.OS after Close).
func (h *Heap) Storage() storage.Storage {
	if !h.st.hasStorage {
		return storage.OS
	}
	return h.st.store()
}
