package zmm

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/debugheader"
)

// Check and the leak report: what a heap says about its own health.

// Check walks the whole heap and reports every corruption it finds, or
// returns nil. Every chunk heap checks its free lists' links. In debug
// mode it also checks the guards of every live block and the free fill of
// every freed small block and page run; in guard mode, the slack canaries
// of every block.
func (h *Heap) Check() error {
	s := h.st
	s.checkOpen("Check")
	h.enter(opCheck)
	defer h.exit()
	sp := h.sp
	if sp != nil && sp.sys != nil {
		return checkResult(sp.sys.check())
	}
	// The free lists, each walked to its first broken link. reported holds
	// the slots reported there, so the slot walk does not report them
	// again.
	var probs []Problem
	reported := map[uintptr]bool{}
	s.walkFree(func(uint32, uintptr) {}, func(bin uint32, slot uintptr, what string) {
		p := Problem{Addr: slot + s.hdr, What: fmt.Sprintf("free slot of bin %d (%d bytes) %s", bin, bins.Size[bin&31], what)}
		if s.debug {
			r := debugheader.At(ptr(slot))
			p.Size, p.Site = uintptr(r.Size), resolveSite(uintptr(r.Site))
		}
		probs = append(probs, p)
		reported[slot] = true
	})
	if sp != nil && sp.dbg != nil {
		probs = append(probs, sp.dbg.check(s, reported)...)
	}
	return checkResult(probs)
}

// Leaks lists the blocks that are live now, with their sites, in heap
// order. It needs debug mode (or the system or guard mode, which track
// every block); a normal heap keeps no sites and returns nil.
func (h *Heap) Leaks() []Leak {
	s := h.st
	if h.sp == nil || s.closed != 0 {
		return nil
	}
	h.enter(opLeaks)
	defer h.exit()
	return h.leaks()
}

// leaks is Leaks for a heap that keeps sites, inside the heap.
func (h *Heap) leaks() []Leak {
	if sp := h.sp; sp.sys != nil {
		return sp.sys.leaks()
	}
	return h.sp.dbg.leaks(h.st)
}

// reportLeaks writes the leak report of a debug heap before Reset or
// Close releases its blocks (zend_mm_check_leaks).
func (h *Heap) reportLeaks() {
	sp := h.sp
	if sp == nil || !sp.debug || sp.leaks == nil {
		return
	}
	WriteLeakReport(sp.leaks, h.leaks(), h.name, time.Now())
}

// WriteLeakReport writes leaks in the Zend MM's format: for each leak not
// yet reported, a script line and a "Freeing" line with its site, the
// original site if it was reallocated, then "Last leak repeated N times"
// for the later leaks from the same file and line, which are folded into
// it; then the total. script is the report's script name ("-" if none).
func WriteLeakReport(w io.Writer, leaks []Leak, script string, now time.Time) error {
	if len(leaks) == 0 {
		return nil
	}
	type key struct {
		file string
		line int
	}
	stamp := now.Format("Mon Jan _2 15:04:05 2006")
	reported := make([]bool, len(leaks))
	var b strings.Builder
	for i, l := range leaks {
		if reported[i] {
			continue
		}
		k := key{l.Site.File, l.Site.Line}
		repeats := 0
		for j := i + 1; j < len(leaks); j++ {
			if !reported[j] && (key{leaks[j].Site.File, leaks[j].Site.Line}) == k {
				reported[j] = true
				repeats++
			}
		}
		fmt.Fprintf(&b, "[%s]  Script:  '%s'\n", stamp, script)
		fmt.Fprintf(&b, "%s(%d) :  Freeing 0x%016x (%d bytes), script=%s\n", l.Site.File, l.Site.Line, l.Addr, l.Size, script)
		if l.Orig.File != "" {
			fmt.Fprintf(&b, "%s(%d) : Actual location (location was relayed)\n", l.Orig.File, l.Orig.Line)
		}
		if repeats > 0 {
			plural := ""
			if repeats > 1 {
				plural = "s"
			}
			fmt.Fprintf(&b, "Last leak repeated %d time%s\n", repeats, plural)
		}
	}
	fmt.Fprintf(&b, "=== Total %d memory leaks detected ===\n", len(leaks))
	_, err := io.WriteString(w, b.String())
	return err
}
