package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/zmm"
)

// The report of `zmmstat show`: summary, bins, fragmentation, page maps,
// huge blocks, top allocation sites. Every part reads only the snapshot.

// mapRows and mapCols shape a chunk's page map: 8 rows of 64 pages.
const mapCols = 64

// topSites is how many allocation sites the report lists; it names the
// functions of the others if they are no more than namedRest.
const (
	topSites  = 10
	namedRest = 3
)

func writeShow(w io.Writer, s *inspect.Summary) {
	writeSummary(w, s)
	fmt.Fprintln(w)
	if s.Shared != nil {
		writeShared(w, s.Shared)
		fmt.Fprintln(w)
	}
	writeBins(w, s.Snapshot)
	fmt.Fprintln(w)
	writeFragmentation(w, s.Snapshot)
	fmt.Fprintln(w)
	writeChunkMaps(w, s.Snapshot)
	if len(s.Huge) > 0 || len(s.CachedHuge) > 0 {
		fmt.Fprintln(w)
		writeHuge(w, s.Snapshot)
	}
	if len(s.Blocks) > 0 {
		fmt.Fprintln(w)
		writeSites(w, s.Snapshot)
	}
}

func modeString(s *zmm.Snapshot) string {
	m := s.Mode + " mode"
	if s.Debug {
		m += ", debug"
	}
	return m
}

// writeSummary writes the heap's statistics and, for a heap that keeps its
// blocks, their totals, which s has even when it leaves the blocks out.
func writeSummary(w io.Writer, s *inspect.Summary) {
	st := s.Stats
	fmt.Fprintf(w, "heap %q (%s), snapshot of %s\n", s.Name, modeString(s.Snapshot), s.Time.Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(w, "  usage       %-10s  peak %-10s   handed out, at class size (memory_get_usage)\n", inspect.FormatBytes(st.Usage), inspect.FormatBytes(st.PeakUsage))
	fmt.Fprintf(w, "  real usage  %-10s  peak %-10s   mapped from the OS (memory_get_usage(true))\n", inspect.FormatBytes(st.RealUsage), inspect.FormatBytes(st.RealPeakUsage))
	if s.Storage != "" {
		fmt.Fprintf(w, "  storage     %s\n", s.Storage)
	}
	limit := "none"
	if st.Limit < uint64(zmm.Unlimited) {
		limit = inspect.FormatBytes(st.Limit)
		if st.Limit > 0 {
			limit += fmt.Sprintf(" (%d%% used)", 100*st.RealUsage/st.Limit)
		}
	}
	fmt.Fprintf(w, "  limit       %s\n", limit)
	var hugeBytes uint64
	for _, h := range s.Huge {
		hugeBytes += h.Size
	}
	fmt.Fprintf(w, "  chunks      %d live (peak %d), %d cached; huge blocks %d (%s), %d cached\n",
		st.Chunks, st.PeakChunks, len(s.CachedChunks), len(s.Huge), inspect.FormatBytes(hugeBytes), len(s.CachedHuge))
	if hasSites(s.Snapshot) {
		live := s.LiveBlocks()
		fmt.Fprintf(w, "  live blocks %d, %s requested\n", live.Count, inspect.FormatBytes(live.Bytes))
	}
}

// writeShared writes what a shared allocator's snapshot adds: its heaps,
// where each was, and their remote frees.
func writeShared(w io.Writer, sh *zmm.SharedSnapshot) {
	kind := "per-P heaps"
	if sh.Serial {
		kind = "serial: one heap every goroutine takes in turn"
	}
	fmt.Fprintf(w, "shared allocator (%s): %s, %d idle, %d stranded (their P went away), %d adopted\n",
		kind, count(len(sh.Heaps), "heap"), sh.Idle, sh.Stranded, sh.Adopted)
	fmt.Fprintf(w, "  remote frees: %d pending when the snapshot was taken (it collected them), %d collected in all\n", sh.Pending, sh.Collected)
	fmt.Fprintf(w, "  %5s %5s %10s %10s %7s %8s %10s\n", "heap", "P", "usage", "real", "chunks", "pending", "collected")
	for _, h := range sh.Heaps {
		p := "idle"
		if h.P >= 0 {
			p = fmt.Sprint(h.P)
		}
		fmt.Fprintf(w, "  %5d %5s %10s %10s %7d %8d %10d\n", h.Index, p, inspect.FormatBytes(h.Usage),
			inspect.FormatBytes(h.RealUsage), h.Chunks, h.Pending, h.Collected)
	}
}

// hasSites reports whether the heap tracks its blocks' sites.
func hasSites(s *zmm.Snapshot) bool { return s.Debug || s.Mode != "chunks" || len(s.Blocks) > 0 }

func writeBins(w io.Writer, s *zmm.Snapshot) {
	used := 0
	for _, b := range s.Bins {
		if b.Runs > 0 {
			used++
		}
	}
	verb := "hold"
	if used == 1 {
		verb = "holds"
	}
	fmt.Fprintf(w, "bins: %d of %d %s runs\n", used, len(s.Bins), verb)
	if used == 0 {
		return
	}
	fmt.Fprintf(w, "  %3s %3s %6s %5s %7s %7s %10s  %s\n", "bin", "map", "size", "runs", "used", "free", "used bytes", "utilization")
	for _, b := range s.Bins {
		if b.Runs == 0 {
			continue
		}
		fmt.Fprintf(w, "  %3d %3s %6d %5d %7d %7d %10s  %s %3d%%\n", b.Bin, binChar(b.Bin), b.Size, b.Runs, b.Used, b.Free,
			inspect.FormatBytes(uint64(b.Used)*uint64(b.Size)), bar(b.Utilization, 10), b.Utilization)
	}
}

// bar draws pct percent as a bar of width characters.
func bar(pct, width int) string {
	pct = min(max(pct, 0), 100)
	n := (pct*width + 50) / 100
	if n == 0 && pct > 0 {
		n = 1
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func writeFragmentation(w io.Writer, s *zmm.Snapshot) {
	f := s.Fragmentation
	fmt.Fprintf(w, "fragmentation: %s mapped but holding no block (%d%% of real usage)\n", inspect.FormatBytes(f.Total), f.UnusedOfRealPct)
	rows := []struct {
		what string
		n    uint64
	}{
		{"free pages in chunks", f.FreePages},
		{"free slots in bin runs", f.FreeSlots},
		{"ends of bin runs (fit no slot)", f.RunTails},
		{"chunk headers (page 0)", f.ChunkHeaders},
		{"cached chunks", f.CachedChunks},
		{"cached huge blocks", f.CachedHuge},
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-31s %10s\n", r.what, inspect.FormatBytes(r.n))
	}
}

// binChar is the page-map character of a bin: 0-9, then a-v.
func binChar(bin int) string {
	if bin < 0 || bin >= 32 {
		return "?"
	}
	return string("0123456789abcdefghijklmnopqrstuv"[bin])
}

// pageMap returns a chunk's page map: one character per page.
func pageMap(s *zmm.Snapshot, c zmm.ChunkSnapshot) []byte {
	pages := int(s.ChunkSize / s.PageSize)
	m := []byte(strings.Repeat("?", pages))
	for _, r := range c.Runs {
		ch := byte('?')
		switch r.Kind {
		case "header":
			ch = '#'
		case "free":
			ch = '.'
		case "large":
			ch = 'L'
		case "small":
			ch = binChar(r.Bin)[0]
		}
		for p := int(r.Start); p < int(r.Start)+int(r.Pages) && p < pages; p++ {
			m[p] = ch
		}
	}
	return m
}

func writeChunkMaps(w io.Writer, s *zmm.Snapshot) {
	fmt.Fprintf(w, "chunks: one character per %s page, %d pages a row\n", inspect.FormatBytes(s.PageSize), mapCols)
	fmt.Fprintf(w, "  # header  . free  L large run  0-9a-t a run of that bin\n")
	for _, c := range s.Chunks {
		name := fmt.Sprintf("chunk %d", c.Num)
		if c.Num == 0 {
			name += " (main)"
		}
		fmt.Fprintf(w, "%s at 0x%x: %d of %d pages free\n", name, c.Addr, c.FreePages, s.ChunkSize/s.PageSize)
		m := pageMap(s, c)
		for row := 0; row*mapCols < len(m); row++ {
			fmt.Fprintf(w, "  %3d %s\n", row*mapCols, m[row*mapCols:min(len(m), (row+1)*mapCols)])
		}
	}
	if len(s.CachedChunks) > 0 {
		addrs := make([]string, len(s.CachedChunks))
		for i, a := range s.CachedChunks {
			addrs[i] = fmt.Sprintf("0x%x", a)
		}
		fmt.Fprintf(w, "cached chunks (empty, kept for reuse): %s\n", strings.Join(addrs, " "))
	}
}

func writeHuge(w io.Writer, s *zmm.Snapshot) {
	const show = 10
	list := func(what string, hs []zmm.HugeSnapshot) {
		if len(hs) == 0 {
			return
		}
		var total uint64
		for _, h := range hs {
			total += h.Size
		}
		fmt.Fprintf(w, "%s: %d, %s\n", what, len(hs), inspect.FormatBytes(total))
		for _, h := range hs[:min(len(hs), show)] {
			fmt.Fprintf(w, "  0x%x %10s\n", h.Addr, inspect.FormatBytes(h.Size))
		}
		if len(hs) > show {
			fmt.Fprintf(w, "  … %d more\n", len(hs)-show)
		}
	}
	list("huge blocks (a mapping each)", s.Huge)
	list("cached huge mappings", s.CachedHuge)
}

// siteStat is the live memory of one allocation site.
type siteStat struct {
	site, orig zmm.SiteRecord
	blocks     int
	bytes      uint64
	kinds      []string
}

// sitesOf groups a snapshot's blocks by site (and first site), largest
// first.
func sitesOf(s *zmm.Snapshot) []*siteStat {
	type key struct{ site, orig zmm.SiteRecord }
	by := map[key]*siteStat{}
	var out []*siteStat
	for _, b := range s.Blocks {
		k := key{b.Site, b.Orig}
		st := by[k]
		if st == nil {
			st = &siteStat{site: b.Site, orig: b.Orig}
			by[k] = st
			out = append(out, st)
		}
		st.blocks++
		st.bytes += b.Size
		if !slices.Contains(st.kinds, b.Kind) {
			st.kinds = append(st.kinds, b.Kind)
		}
	}
	slices.SortStableFunc(out, func(a, b *siteStat) int {
		return cmp.Or(cmp.Compare(b.bytes, a.bytes), cmp.Compare(b.blocks, a.blocks),
			cmp.Compare(siteString(a.site), siteString(b.site)), cmp.Compare(siteString(a.orig), siteString(b.orig)))
	})
	for _, st := range out {
		slices.Sort(st.kinds)
	}
	return out
}

func siteString(s zmm.SiteRecord) string {
	if s.File == "" {
		return "(unknown site)"
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// shortFunc drops the import path of a function name: replay.ZmmHooks.
func shortFunc(name string) string {
	if name == "" {
		return "?"
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

func writeSites(w io.Writer, s *zmm.Snapshot) {
	sites := sitesOf(s)
	fmt.Fprintf(w, "top allocation sites, by live bytes (%s, %s)\n", count(len(sites), "site"), count(len(s.Blocks), "live block"))
	fmt.Fprintf(w, "  %10s %7s  %-16s %s\n", "bytes", "blocks", "kind", "site")
	for _, st := range sites[:min(len(sites), topSites)] {
		fmt.Fprintf(w, "  %10s %7d  %-16s %s  %s\n", inspect.FormatBytes(st.bytes), st.blocks, strings.Join(st.kinds, "+"),
			shortFunc(st.site.Function), siteString(st.site))
		if st.orig != (zmm.SiteRecord{}) {
			fmt.Fprintf(w, "  %10s %7s  %-16s   reallocated; first allocated in %s  %s\n", "", "", "",
				shortFunc(st.orig.Function), siteString(st.orig))
		}
	}
	if len(sites) > topSites {
		var bytes uint64
		blocks := 0
		for _, st := range sites[topSites:] {
			bytes += st.bytes
			blocks += st.blocks
		}
		rest := count(len(sites)-topSites, "more site")
		if len(sites)-topSites <= namedRest {
			var names []string
			for _, st := range sites[topSites:] {
				names = append(names, shortFunc(st.site.Function))
			}
			rest += ": " + strings.Join(names, ", ")
		}
		fmt.Fprintf(w, "  %10s %7d  %s\n", inspect.FormatBytes(bytes), blocks, rest)
	}
}
