package zmm

import (
	"cmp"
	"slices"
	"time"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
)

// SnapshotVersion is the version of the Snapshot JSON schema. It changes
// when a field changes meaning or is removed; new fields may be added
// within a version, and readers ignore fields they do not know.
const SnapshotVersion = 1

// Snapshot is a picture of a heap at one moment, for people and tools
// (zmmstat, the HTTP handler). It is a plain Go value: it serializes to the
// JSON schema documented on its fields (see also DESIGN.md), and holds no
// pointer into the heap. Addresses are numbers.
type Snapshot struct {
	Version    int       `json:"version"`      // SnapshotVersion
	Name       string    `json:"name"`         // the heap's name (WithName), "-" if none
	Time       time.Time `json:"time"`         // when it was taken
	Mode       string    `json:"mode"`         // "chunks", "system" or "guard"
	Debug      bool      `json:"debug"`        // debug mode
	OSPageSize uint64    `json:"os_page_size"` // bytes
	PageSize   uint64    `json:"page_size"`    // zmm's page: 4096
	ChunkSize  uint64    `json:"chunk_size"`   // 2 MiB
	// Storage is where the heap's chunks come from when it was made
	// WithStorage (the storage's String); empty for the OS.
	Storage string `json:"storage,omitempty"`

	Stats         SnapshotStats   `json:"stats"`
	Fragmentation Fragmentation   `json:"fragmentation"`
	Bins          []BinSnapshot   `json:"bins"`          // one per size class, bin 0 first
	Chunks        []ChunkSnapshot `json:"chunks"`        // live chunks, the main chunk first
	CachedChunks  []uint64        `json:"cached_chunks"` // addresses of cached (empty) chunks
	Huge          []HugeSnapshot  `json:"huge"`          // live huge blocks, by address
	CachedHuge    []HugeSnapshot  `json:"cached_huge"`   // freed huge mappings kept for reuse
	// Blocks lists every live block with its allocation site; only debug,
	// system and guard heaps know sites, so it is empty otherwise.
	Blocks []BlockSnapshot `json:"blocks,omitempty"`
	// Shared describes the heaps of a shared allocator, in a snapshot of
	// the whole of one (Shared.Snapshot); absent otherwise.
	Shared *SharedSnapshot `json:"shared,omitempty"`
}

// SharedSnapshot is what a shared allocator adds to its snapshot: where
// each heap was and what its remote frees were doing.
type SharedSnapshot struct {
	// Serial: debug, system or guard mode, one heap every call takes.
	Serial bool `json:"serial"`
	// Idle counts the heaps in no P's slot; Stranded those left in the
	// slots of Ps that GOMAXPROCS took away, until a heap is next wanted
	// (adoption); Adopted the heaps adopted so far.
	Idle     int    `json:"idle"`
	Stranded int    `json:"stranded"`
	Adopted  uint64 `json:"adopted"`
	// Pending counts the blocks freed remotely that were waiting in the
	// heaps' inboxes when the snapshot was taken (it collected them);
	// Collected the remote frees collected since the allocator was made,
	// those included.
	Pending   uint64               `json:"pending"`
	Collected uint64               `json:"collected"`
	Heaps     []SharedHeapSnapshot `json:"heaps"`
}

// SharedHeapSnapshot is one heap of a shared allocator.
type SharedHeapSnapshot struct {
	Index int `json:"index"` // as in HeapSnapshot and inspect's name/i
	// P is the id of the P whose slot held the heap, or -1 for an idle one.
	P         int    `json:"p"`
	Usage     uint64 `json:"usage"`
	RealUsage uint64 `json:"real_usage"`
	Chunks    int    `json:"chunks"`
	Pending   uint64 `json:"pending"`
	Collected uint64 `json:"collected"`
}

// SnapshotStats are the heap's statistics (see Stats).
type SnapshotStats struct {
	Usage         uint64 `json:"usage"`
	PeakUsage     uint64 `json:"peak_usage"`
	RealUsage     uint64 `json:"real_usage"`
	RealPeakUsage uint64 `json:"real_peak_usage"`
	Limit         uint64 `json:"limit"`
	Chunks        int    `json:"chunks"`
	PeakChunks    int    `json:"peak_chunks"`
}

// Fragmentation counts bytes that are mapped but hold no block, by where
// they sit.
type Fragmentation struct {
	FreePages       uint64 `json:"free_pages"`         // free pages inside live chunks
	FreeSlots       uint64 `json:"free_slots"`         // free slots inside bin runs
	RunTails        uint64 `json:"run_tails"`          // bytes at the end of bin runs that fit no slot
	CachedChunks    uint64 `json:"cached_chunks"`      // empty chunks kept for reuse
	CachedHuge      uint64 `json:"cached_huge"`        // freed huge mappings kept for reuse
	ChunkHeaders    uint64 `json:"chunk_headers"`      // page 0 of every live chunk
	Total           uint64 `json:"total"`              // the sum of the above
	UnusedOfRealPct int    `json:"unused_of_real_pct"` // Total as a share of RealUsage, in percent
}

// BinSnapshot describes one size class.
type BinSnapshot struct {
	Bin         int    `json:"bin"`
	Size        uint32 `json:"size"`        // block size
	Elements    uint32 `json:"elements"`    // blocks per run
	Pages       uint32 `json:"pages"`       // pages per run
	Runs        int    `json:"runs"`        // runs the bin holds
	Used        int    `json:"used"`        // blocks handed out
	Free        int    `json:"free"`        // free blocks in its runs
	Utilization int    `json:"utilization"` // Used as a share of Runs*Elements, in percent (0 with no runs)
}

// ChunkSnapshot is a chunk's page map as a list of runs in address order.
type ChunkSnapshot struct {
	Addr      uint64        `json:"addr"`
	Num       uint32        `json:"num"` // 0 for the main chunk, then in order of mapping
	FreePages uint32        `json:"free_pages"`
	Runs      []RunSnapshot `json:"runs"`
}

// RunSnapshot is a stretch of pages of one kind inside a chunk.
type RunSnapshot struct {
	Start uint32 `json:"start"` // first page
	Pages uint32 `json:"pages"`
	// Kind is "header" (page 0), "small" (a run of bin Bin), "large" (a
	// page run handed out whole) or "free".
	Kind string `json:"kind"`
	Bin  int    `json:"bin,omitempty"`  // small runs: the bin
	Used int    `json:"used,omitempty"` // small runs: blocks handed out
}

// HugeSnapshot is a huge mapping.
type HugeSnapshot struct {
	Addr uint64 `json:"addr"`
	Size uint64 `json:"size"`
}

// BlockSnapshot is a live block of a heap that tracks sites.
type BlockSnapshot struct {
	Addr uint64     `json:"addr"`
	Size uint64     `json:"size"` // requested size
	Kind string     `json:"kind"` // "small", "large" or "huge"
	Site SiteRecord `json:"site"`
	Orig SiteRecord `json:"orig,omitzero"` // first allocation, if reallocated
}

// SiteRecord is a Site in a snapshot.
type SiteRecord struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
}

func siteRecord(s Site) SiteRecord { return SiteRecord{s.Function, s.File, s.Line} }

// Snapshot takes a snapshot of the heap. Like every call on a heap it must
// be made by the heap's owner (or under the lock that serializes its use);
// it walks the chunks and free lists, so it takes time in proportion to the
// heap's size, and changes nothing.
func (h *Heap) Snapshot() *Snapshot {
	s := h.st
	s.checkOpen("Snapshot")
	h.enter(opSnapshot)
	defer h.exit()
	st := h.statsLocked("Snapshot")
	var storage string
	if s.hasStorage {
		storage = s.store().String()
	}
	snap := &Snapshot{
		Version: SnapshotVersion, Name: h.name, Time: time.Now(), Storage: storage,
		Mode: h.Mode().String(), Debug: h.Debug(),
		OSPageSize: uint64(chunk.OSPageSize()), PageSize: chunk.PageSize, ChunkSize: chunk.Size,
		Stats: SnapshotStats{
			Usage: uint64(st.Usage), PeakUsage: uint64(st.PeakUsage),
			RealUsage: uint64(st.RealUsage), RealPeakUsage: uint64(st.RealPeakUsage),
			Limit: uint64(st.Limit), Chunks: st.Chunks, PeakChunks: st.PeakChunks,
		},
		CachedChunks: []uint64{},
		Huge:         []HugeSnapshot{},
		CachedHuge:   []HugeSnapshot{},
	}
	fr := &snap.Fragmentation
	for b, bs := range st.Bins {
		util := 0
		if bs.Runs > 0 {
			util = 100 * bs.Used / (bs.Runs * int(bs.Elements))
		}
		snap.Bins = append(snap.Bins, BinSnapshot{Bin: b, Size: bs.Size, Elements: bs.Elements, Pages: bs.Pages,
			Runs: bs.Runs, Used: bs.Used, Free: bs.Free, Utilization: util})
		fr.FreeSlots += uint64(bs.Free) * uint64(bs.Size)
		fr.RunTails += uint64(bs.Runs) * (uint64(bs.Pages)*chunk.PageSize - uint64(bs.Elements)*uint64(bs.Size))
	}

	// Free slots per run, to show each run's use.
	freeIn := map[uintptr]int{}
	for bin := uint32(0); bin < bins.NumBins; bin++ {
		if n := s.uncarvedSlots(bin); n > 0 {
			c, first := s.runOf(s.carveNext[bin])
			freeIn[uintptr(c.Page(first))] += n
		}
	}
	s.eachFree("Snapshot", func(bin uint32, slot uintptr) {
		c, first := s.runOf(slot)
		freeIn[uintptr(c.Page(first))]++
	})
	if sp := h.sp; sp != nil && sp.dbg != nil {
		for slot := range sp.dbg.quarantined {
			c, first := s.runOf(slot)
			freeIn[uintptr(c.Page(first))]++
		}
	}
	s.eachRun(func(c *chunk.Header, page, n, e uint32) {
		if page == chunk.FirstPage { // the walk enters the next chunk
			snap.Chunks = append(snap.Chunks, ChunkSnapshot{Addr: uint64(c.Base()), Num: c.Num, FreePages: c.FreePages,
				Runs: []RunSnapshot{{Start: 0, Pages: 1, Kind: "header"}}})
			fr.FreePages += uint64(c.FreePages) * chunk.PageSize
			fr.ChunkHeaders += chunk.PageSize
		}
		cs := &snap.Chunks[len(snap.Chunks)-1]
		switch e & chunk.MapKindMask {
		case chunk.MapSmall:
			b := chunk.EntryBin(e) & 31
			used := int(bins.Elements[b]) - freeIn[uintptr(c.Page(page))]
			cs.Runs = append(cs.Runs, RunSnapshot{Start: page, Pages: n, Kind: "small", Bin: int(b), Used: used})
		case chunk.MapLarge:
			cs.Runs = append(cs.Runs, RunSnapshot{Start: page, Pages: n, Kind: "large"})
		default:
			cs.Runs = append(cs.Runs, RunSnapshot{Start: page, Pages: n, Kind: "free"})
		}
	})
	for addr := s.cached; addr != 0; addr = hdr(addr).Next {
		snap.CachedChunks = append(snap.CachedChunks, uint64(addr))
		fr.CachedChunks += chunk.Size
	}
	for i := uint32(0); i < s.huge.n; i++ {
		r := s.huge.at(i)
		snap.Huge = append(snap.Huge, HugeSnapshot{Addr: uint64(r.addr), Size: uint64(r.size)})
	}
	slices.SortFunc(snap.Huge, func(a, b HugeSnapshot) int { return cmp.Compare(a.Addr, b.Addr) })
	for _, r := range s.huge.cached() {
		snap.CachedHuge = append(snap.CachedHuge, HugeSnapshot{Addr: uint64(r.addr), Size: uint64(r.size)})
		fr.CachedHuge += uint64(r.size)
	}
	fr.Total = fr.FreePages + fr.FreeSlots + fr.RunTails + fr.CachedChunks + fr.CachedHuge + fr.ChunkHeaders
	if st.RealUsage > 0 {
		fr.UnusedOfRealPct = int(100 * fr.Total / uint64(st.RealUsage))
	}
	if h.sp != nil {
		overhead := uintptr(0)
		if s.debug {
			overhead = debugheader.Overhead
		}
		for _, l := range h.leaks() {
			snap.Blocks = append(snap.Blocks, BlockSnapshot{Addr: uint64(l.Addr), Size: uint64(l.Size),
				Kind: kindOf(l.Size + overhead).String(), Site: siteRecord(l.Site), Orig: siteRecord(l.Orig)})
		}
	}
	return snap
}
