package zmm

import (
	"fmt"
	"slices"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/internal/frames"
)

// Debug mode catches writes after free in every kind of block (the Zend
// MM 8.5's ZEND_MM_DEBUG=poison_free does the first half of this):
//
//   - A freed small block is filled with debugheader.FreeFill, checked when
//     the slot is handed out again and by Check (debugchunks.go).
//   - A freed page run is filled the same way, its record (size and site)
//     kept at its start, and remembered as a freed run of its chunk. When
//     any of its pages is taken again (a page run or a new bin run, in
//     takePages, before anything is written), and by Check, the whole
//     run's fill is verified; a damaged run is reported once, naming the
//     freed block, and forgotten. The part of a run that stays free stays
//     remembered. Runs whose pages left the heap are not checked: a run
//     names its chunk's incarnation (base and Num), which a chunk loses
//     when it is cached or unmapped; Reset and GC (which releases free
//     pages to the OS: they read back as zeros) forget every run.
//   - A freed huge block is not cached for reuse: its pages are released
//     and the mapping made inaccessible (PROT_NONE), so a read or write
//     through a stale pointer faults on the spot, with the Go stack trace,
//     as in guard mode. The mapping stays reserved, costing address space
//     only (not RealUsage), for the last quarantineMaxBlocks freed huge
//     blocks, up to quarantineMaxBytes of them; older ones are unmapped.
//     The quarantine is a fixed array, so debug mode still makes no Go
//     allocation per call once warm. A heap over a storage cannot make the
//     storage's memory inaccessible safely (the storage hands it out
//     again), so there a freed huge block is unmapped at once.

// poisonRun fills a freed debug page run (n pages of c from page; the
// block's user pointer is user) and remembers it; the caller then gives
// its pages back to the chunk.
func (d *debugState) poisonRun(c *chunk.Header, page, n uint32, user uintptr) {
	start := uintptr(c.Page(page))
	bytes := uintptr(n) * chunk.PageSize
	r := debugheader.At(ptr(start))
	debugheader.Fill(ptr(start), bytes)
	base := c.Base()
	d.freedRuns[base] = append(d.freedRuns[base], freedRun{
		from: start + debugheader.FreeFillFrom, to: start + bytes, num: c.Num,
		user: user, size: uintptr(r.Size), site: uintptr(r.Site),
	})
}

// liveRuns returns the remembered runs of the chunk at base, dropping
// those of an earlier incarnation of it: its pages left the heap since.
func (d *debugState) liveRuns(s *heapState, base uintptr) []freedRun {
	runs := d.freedRuns[base]
	if len(runs) == 0 {
		return runs
	}
	if frames.Lookup(base) != s.frame {
		delete(d.freedRuns, base)
		return nil
	}
	num := hdr(base).Num
	return slices.DeleteFunc(runs, func(r freedRun) bool { return r.num != num })
}

// checkFreedPages verifies the fill of every freed run that pages [start,
// start+n) of c overlap, before they are handed out. A damaged run is
// reported (ErrCorrupted, naming the freed block) and forgotten, before any
// page is taken, so the heap is as it was and the next allocation goes on.
func (d *debugState) checkFreedPages(s *heapState, op string, c *chunk.Header, start, n uint32) {
	base := c.Base()
	runs := d.liveRuns(s, base)
	lo := uintptr(c.Page(start))
	hi := lo + uintptr(n)*chunk.PageSize
	for i := 0; i < len(runs); {
		r := runs[i]
		if r.to <= lo || r.from >= hi {
			i++
			continue
		}
		runs = slices.Delete(runs, i, i+1)
		if at, bad := debugheader.CheckFillBytes(ptr(r.from), r.to-r.from); bad {
			d.freedRuns[base] = runs
			panic(r.damaged(op, r.from+at))
		}
		// What stays free stays filled, and remembered.
		if r.from < lo {
			runs = append(runs, freedRun{r.from, lo, r.num, r.user, r.size, r.site})
		}
		if r.to > hi {
			runs = append(runs, freedRun{hi, r.to, r.num, r.user, r.size, r.site})
		}
	}
	// An emptied list keeps its array, so that a chunk's runs are
	// remembered without allocating once warm.
	d.freedRuns[base] = runs
}

// damaged is the error for a freed run whose byte at addr was written.
func (r freedRun) damaged(op string, addr uintptr) *Error {
	return &Error{Kind: ErrCorrupted, Op: op, Ptr: r.user, Msg: fmt.Sprintf(
		"zmm: heap corrupted: freed block 0x%x (%d bytes, allocated at %v): byte %d of it was written after it was freed",
		r.user, r.size, resolveSite(r.site), int64(addr)-int64(r.user))}
}

// checkFreedRuns adds a problem for every damaged freed run (Check).
func (d *debugState) checkFreedRuns(s *heapState, probs []Problem) []Problem {
	for base := range d.freedRuns {
		for _, r := range d.liveRuns(s, base) {
			if at, bad := debugheader.CheckFillBytes(ptr(r.from), r.to-r.from); bad {
				probs = append(probs, Problem{Addr: r.user, Size: r.size, Site: resolveSite(r.site),
					What: fmt.Sprintf("freed, and byte %d of it was written after it was freed", int64(r.from+at)-int64(r.user))})
			}
		}
	}
	return probs
}

// forgetRuns drops every freed run (GC, Reset), keeping the lists' arrays.
func (d *debugState) forgetRuns() {
	for base, runs := range d.freedRuns {
		d.freedRuns[base] = runs[:0]
	}
}

// quarantineHuge retires a freed huge block: its pages go back to the OS
// and the mapping becomes inaccessible until it is evicted from the
// quarantine. Its frames say it was freed, so a second free is named a
// double free.
func (d *debugState) quarantineHuge(s *heapState, r hugeRec) {
	if s.hasStorage {
		s.unmapHuge(r)
		return
	}
	frames.SetRange(r.addr, frameCount(r.size), frames.Make(frames.FreedHuge, s.id, 0))
	chunk.Release(ptr(r.addr), r.size)
	if err := chunk.Protect(ptr(r.addr), r.size); err != nil {
		// It cannot be made to fault: give it back rather than leave
		// it readable.
		s.unmapHuge(r)
		return
	}
	s.unmapped(r.size)
	for d.quarantineN == len(d.quarantine) || d.quarantineN > 0 && d.quarantineBytes+r.size > quarantineMaxBytes {
		old := d.quarantine[0]
		copy(d.quarantine[:], d.quarantine[1:d.quarantineN])
		d.quarantineN--
		d.quarantineBytes -= old.size
		_ = chunk.Unmap(ptr(old.addr), old.size)
	}
	d.quarantine[d.quarantineN] = r
	d.quarantineN++
	d.quarantineBytes += r.size
}

// releaseQuarantine unmaps every quarantined huge mapping (Close).
func (d *debugState) releaseQuarantine() {
	for _, r := range d.quarantine[:d.quarantineN] {
		_ = chunk.Unmap(ptr(r.addr), r.size)
	}
	d.quarantineN, d.quarantineBytes = 0, 0
}
