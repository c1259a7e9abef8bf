package zmm

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
)

// Debug mode (WithDebug, ZMM_DEBUG=1) and the system and guard modes
// (WithAllocMode, ZMM_ALLOC) are "special" heaps. They never reach the fast
// paths of Alloc and Free (see heapState.special), so a normal heap pays
// nothing for them; every call of a special heap lands here.
//
// In debug mode every block starts with a debugheader.Record (size,
// allocation site, original site, head guard) and ends with a tail guard;
// freed small blocks are filled with debugheader.FreeFill. Sites are program
// counters, turned into file:line only when a report is written.

// debugState is the Go-side state of a special heap.
type debugState struct {
	out io.Writer // leak report; nil = silent
	// busy is the one-owner check's field for this heap (owner.go).
	busy atomic.Uint32
	// guardAlign places guard-mode blocks (WithGuardAlignment).
	guardAlign uintptr
	sites      siteCache
	// System and guard modes: the live blocks, and recently freed
	// pointers (to name a double free as such).
	sys   map[uintptr]*sysBlock
	freed map[uintptr]struct{}
	// quarantined holds the freed debug slots set aside after damage was
	// found (slot → bin): free, but on no list, so statistics count them
	// here.
	quarantined map[uintptr]uint32
	// freedRuns are the freed page runs of a debug heap whose fill is
	// not checked yet, by chunk base; quarantine the freed huge mappings
	// kept inaccessible, oldest first (poison.go).
	freedRuns       map[uintptr][]freedRun
	quarantine      [quarantineMaxBlocks]hugeRec
	quarantineN     int // quarantine[:quarantineN], oldest first
	quarantineBytes uintptr
}

func newDebugState(cfg config) *debugState {
	return &debugState{out: cfg.leaks, guardAlign: cfg.guardAlign,
		sys: map[uintptr]*sysBlock{}, freed: map[uintptr]struct{}{}, quarantined: map[uintptr]uint32{},
		freedRuns: map[uintptr][]freedRun{}}
}

// siteCache remembers which program counters belong to zmm itself, so that
// finding the caller outside zmm costs a few compares once warm.
type siteCache struct {
	pc       [256]uintptr
	internal [256]bool
}

const zmmFuncPrefix = "github.com/gozmm/zmm/zmm."

// helperPrefixes are the function-name prefixes of the packages marked
// with MarkHelperPackage.
var helperPrefixes atomic.Pointer[[]string]

func isInternalFunc(name string) bool {
	if strings.HasPrefix(name, zmmFuncPrefix) {
		return true
	}
	if l := helperPrefixes.Load(); l != nil {
		for _, p := range *l {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
	}
	return false
}

// MarkHelperPackage makes debug heaps look past the functions of the
// package with the given import path when they record a block's allocation
// site, as testing.T.Helper does for test helpers: a package that wraps
// zmm (an adapter, a lifecycle driver, an arena type) then has its
// callers' lines in leak reports, errors and profiles instead of its own.
// Call it from the package's init function: a debug heap caches what it
// learnt of a program counter, so marking later may not reach heaps that
// have already recorded sites from the package.
func MarkHelperPackage(importPath string) {
	for {
		old := helperPrefixes.Load()
		var next []string
		if old != nil {
			next = append(next, *old...)
		}
		next = append(next, importPath+".")
		if helperPrefixes.CompareAndSwap(old, &next) {
			return
		}
	}
}

// callerSite returns the program counter of the first caller outside
// package zmm. Walking the stack is most of debug mode's cost, and the
// walk costs in proportion to its depth, so it first looks at the few
// frames above the entry point (Callers skips itself, callerSite, the
// special path and the slow path that reached it) and walks further only
// when all of those are zmm's own.
func (d *debugState) callerSite() uintptr {
	var pcs [32]uintptr
	n := runtime.Callers(4, pcs[:6])
	if pc := d.firstOutside(pcs[:n]); pc != 0 || n < 6 {
		return pc
	}
	n = runtime.Callers(4, pcs[:])
	if pc := d.firstOutside(pcs[:n]); pc != 0 {
		return pc
	}
	if n > 0 {
		return pcs[n-1]
	}
	return 0
}

// firstOutside returns the first program counter not in package zmm, or 0.
func (d *debugState) firstOutside(pcs []uintptr) uintptr {
	for _, pc := range pcs {
		i := pc >> 2 & 255
		if d.sites.pc[i] != pc {
			f := runtime.FuncForPC(pc - 1)
			d.sites.pc[i], d.sites.internal[i] = pc, f != nil && isInternalFunc(f.Name())
		}
		if !d.sites.internal[i] {
			return pc
		}
	}
	return 0
}

// Site is a place in the program: an allocation site.
type Site struct {
	PC       uintptr
	Function string
	File     string
	Line     int
}

func (s Site) String() string {
	if s.File == "" {
		return "unknown site"
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// resolveSite turns a program counter into file:line.
func resolveSite(pc uintptr) Site {
	if pc == 0 {
		return Site{}
	}
	frames := runtime.CallersFrames([]uintptr{pc})
	for {
		f, more := frames.Next()
		if !isInternalFunc(f.Function) || !more {
			return Site{PC: pc, Function: f.Function, File: f.File, Line: f.Line}
		}
	}
}

// callSite is the allocation site of the call being served: the first
// caller outside zmm, or, below a custom handler, the handler's caller.
func (h *Heap) callSite(d *debugState) uintptr {
	if hk := h.hooks; hk != nil && hk.site != 0 {
		return hk.site
	}
	return d.callerSite()
}

// allocDebug serves Alloc (and everything built on it) for a debug,
// system or guard heap.
func (h *Heap) allocDebug(size uintptr, op string) unsafe.Pointer {
	d := h.dbg
	h.st.checkOpen(op)
	h.enter(opAlloc)
	defer h.exit()
	if h.st.mode != ModeChunks {
		return h.sysAlloc(size, op, h.callSite(d), 0)
	}
	return h.debugAlloc(size, op, h.callSite(d), 0)
}

// debugAlloc allocates a debug block in a chunk heap.
func (h *Heap) debugAlloc(size uintptr, op string, site, orig uintptr) unsafe.Pointer {
	s := h.st
	internal, ok := SafeSize(1, size, debugheader.Overhead)
	if !ok {
		fail(ErrOverflow, op, 0, "Possible integer overflow in memory allocation (%d + %d)", size, debugheader.Overhead)
	}
	var block unsafe.Pointer
	var blockSize uintptr
	if internal <= bins.MaxSize {
		bin := smallBin(internal) & 31
		blockSize = uintptr(bins.Size[bin])
		if slot := s.dfree[bin]; slot != 0 {
			block = ptr(slot)
			if !s.isFreeSlot(slot) {
				// The rest of the list cannot be trusted: abandon it.
				s.dfree[bin] = 0
				h.quarantine(op, block, blockSize, "its free-list link was overwritten (a write after free, or an overflow from the block before it)")
			}
			s.dfree[bin] = *(*uintptr)(ptr(slot + s.linkOff))
			if at, bad := debugheader.CheckFill(block, blockSize); bad {
				h.quarantine(op, block, blockSize, fmt.Sprintf("byte %d of it was written after it was freed", at-debugheader.Size))
			}
			s.size += blockSize
			s.peak = max(s.peak, s.size)
		} else {
			block = s.refill(bin)
		}
	} else {
		block = s.allocBig(internal, op)
		blockSize = s.classSize(internal)
	}
	debugheader.Write(s.key, block, blockSize, size, site, orig)
	return debugheader.User(block)
}

// classSize is the class size of an internal request above the bins.
func (s *heapState) classSize(size uintptr) uintptr {
	if size <= chunk.MaxLargeSize {
		return (size + chunk.PageSize - 1) &^ (chunk.PageSize - 1)
	}
	return roundHuge("Alloc", size)
}

// quarantinedLink marks a freed debug slot that was found damaged and set
// aside: it is on no free list, but carries a valid check word, so that it
// counts as free (not as a leak) and is never handed out again.
const quarantinedLink = 1

// quarantine panics about a freed debug block found damaged when it was to
// be handed out again, after setting the slot aside (see quarantinedLink)
// with a fresh fill, so that the report is made once and the heap stays
// usable. Its record still holds its size and site.
func (h *Heap) quarantine(op string, block unsafe.Pointer, blockSize uintptr, what string) {
	s := h.st
	r := debugheader.At(block)
	user := uintptr(debugheader.User(block))
	err := &Error{Kind: ErrCorrupted, Op: op, Ptr: user, Msg: fmt.Sprintf("zmm: heap corrupted: freed block 0x%x (%d bytes, allocated at %v): %s",
		user, r.Size, resolveSite(uintptr(r.Site)), what)}
	debugheader.Fill(block, blockSize)
	s.setLink(uintptr(block), quarantinedLink)
	h.dbg.quarantined[uintptr(block)] = smallBin(blockSize)
	panic(err)
}

// checkedBlock looks p up and verifies its canaries, or panics naming the
// block, its size, its site and the damage.
func (h *Heap) checkedBlock(op string, addr uintptr) (block, *debugheader.Record) {
	s := h.st
	b := s.lookup(op, addr)
	start := ptr(addr - debugheader.Size)
	if dmg, ok := debugheader.Check(s.key, start, b.size); !ok {
		r := debugheader.At(start)
		fail(ErrCorrupted, op, addr, "zmm: %s(0x%x): heap corrupted: block 0x%x (%d bytes, allocated at %v): %v",
			op, addr, addr, dmg.Size, resolveSite(uintptr(r.Site)), dmg)
	}
	return b, debugheader.At(start)
}

// debugRelease frees a checked debug block.
func (h *Heap) debugRelease(b block, addr uintptr) {
	s := h.st
	start := ptr(addr - debugheader.Size)
	switch b.kind {
	case kindSmall:
		debugheader.Fill(start, b.size)
		s.pushFree(uintptr(start), b.bin)
	case kindLarge:
		h.poisonRun(b, addr)
		s.freeLarge(b.c, b.page, b.pages)
	case kindHuge:
		h.quarantineHuge(s.dropHuge(b.huge))
	}
}

// freeDebug is Free for a debug, system or guard heap.
func (h *Heap) freeDebug(addr uintptr) {
	h.enter(opFree)
	defer h.exit()
	if h.st.mode != ModeChunks {
		h.sysFree(addr, "Free")
		return
	}
	b, _ := h.checkedBlock("Free", addr)
	h.debugRelease(b, addr)
}

// reallocDebug is Realloc for a debug, system or guard heap. It always moves the block,
// so that a stale pointer to the old one is caught; the new block records
// the realloc's site, and the first allocation's as its original site.
func (h *Heap) reallocDebug(addr uintptr, size uintptr) unsafe.Pointer {
	d := h.dbg
	s := h.st
	s.checkOpen("Realloc")
	h.enter(opRealloc)
	defer h.exit()
	site := h.callSite(d)
	if addr == 0 {
		if s.mode != ModeChunks {
			return h.sysAlloc(size, "Realloc", site, 0)
		}
		return h.debugAlloc(size, "Realloc", site, 0)
	}
	if s.mode != ModeChunks {
		return h.sysRealloc(addr, size, site)
	}
	b, r := h.checkedBlock("Realloc", addr)
	orig, old := uintptr(r.Orig), uintptr(r.Size)
	if orig == 0 {
		orig = uintptr(r.Site)
	}
	peak := s.peak
	q := h.debugAlloc(size, "Realloc", site, orig)
	n := min(old, size)
	copy(unsafe.Slice((*byte)(q), n), unsafe.Slice((*byte)(ptr(addr)), n))
	h.debugRelease(b, addr)
	s.peak = max(peak, s.size)
	return q
}

// blockSizeSpecial is BlockSize for a special heap: the requested size, so
// that a write past it is caught.
func (h *Heap) blockSizeSpecial(addr uintptr) uintptr {
	if h.st.special&specialMode == 0 { // handlers only
		return h.st.lookup("BlockSize", addr).size
	}
	h.enter(opBlockSize)
	defer h.exit()
	if h.st.mode != ModeChunks {
		return h.sysLookup(addr, "BlockSize").size
	}
	_, r := h.checkedBlock("BlockSize", addr)
	return uintptr(r.Size)
}

// Problem is one corruption found by Check.
type Problem struct {
	Addr uintptr // the block's (user) address
	Size uintptr // its requested size, as recorded
	Site Site    // where it was allocated
	What string  // what is wrong
}

func (p Problem) String() string {
	return fmt.Sprintf("block 0x%x (%d bytes, allocated at %v): %s", p.Addr, p.Size, p.Site, p.What)
}

// CheckError is what Check returns when it finds corruption. It wraps
// ErrCorrupted.
type CheckError struct {
	Problems []Problem
}

func (e *CheckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "zmm: heap check found %d problem(s):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *CheckError) Unwrap() error { return ErrCorrupted }

// Check walks the whole heap and reports every corruption it finds, or
// returns nil. Every mode checks the free lists' links. In debug mode it
// also checks the guards of every live block and the free fill of every
// freed small block; in guard mode, the guard bytes of every block.
func (h *Heap) Check() error {
	s := h.st
	s.checkOpen("Check")
	var probs []Problem
	h.enter(opCheck)
	defer h.exit()
	if h.dbg != nil {
		if s.mode != ModeChunks {
			probs = h.sysCheck()
			return checkResult(probs)
		}
	}
	// Walk the free lists, stopping at a broken link. reported holds the
	// slots already reported, so the chunk walk does not report them again.
	free := map[uintptr]bool{}
	reported := map[uintptr]bool{}
	lists := s.lists()
	for bin := uint32(1); bin < bins.NumBins; bin++ {
		for slot := lists[bin]; slot != 0; slot = *(*uintptr)(ptr(slot + s.linkOff)) {
			if !s.isFreeSlot(slot) || free[slot] {
				p := Problem{Addr: slot + s.hdr, What: fmt.Sprintf("free slot of bin %d (%d bytes) has a broken free-list link", bin, bins.Size[bin])}
				if s.debug {
					r := debugheader.At(ptr(slot))
					p.Size, p.Site = uintptr(r.Size), resolveSite(uintptr(r.Site))
				}
				probs = append(probs, p)
				reported[slot] = true
				break
			}
			free[slot] = true
		}
	}
	if !s.debug {
		return checkResult(probs)
	}
	s.eachRun(func(c *chunk.Header, page, n, e uint32) {
		switch e & chunk.MapKindMask {
		case chunk.MapSmall:
			b := chunk.EntryBin(e) & 31
			size := uintptr(bins.Size[b])
			run := uintptr(c.Page(page))
			for k := uintptr(0); k < uintptr(bins.Elements[b]); k++ {
				slot := run + k*size
				if reported[slot] {
					continue
				}
				if free[slot] || s.isFreeSlot(slot) {
					if at, bad := debugheader.CheckFill(ptr(slot), size); bad {
						r := debugheader.At(ptr(slot))
						probs = append(probs, Problem{Addr: slot + s.hdr, Size: uintptr(r.Size), Site: resolveSite(uintptr(r.Site)),
							What: fmt.Sprintf("freed, and byte %d of it was written after it was freed", at-debugheader.Size)})
					}
					continue
				}
				probs = h.checkLive(probs, ptr(slot), size)
			}
		case chunk.MapLarge:
			probs = h.checkLive(probs, c.Page(page), uintptr(n)*chunk.PageSize)
		}
	})
	for i := uint32(0); i < s.huge.n; i++ {
		r := s.huge.at(i)
		probs = h.checkLive(probs, ptr(r.addr), r.size)
	}
	probs = h.dbg.checkFreedRuns(probs)
	return checkResult(probs)
}

func (h *Heap) checkLive(probs []Problem, block unsafe.Pointer, size uintptr) []Problem {
	if dmg, ok := debugheader.Check(h.st.key, block, size); !ok {
		r := debugheader.At(block)
		probs = append(probs, Problem{Addr: uintptr(debugheader.User(block)), Size: dmg.Size,
			Site: resolveSite(uintptr(r.Site)), What: dmg.String()})
	}
	return probs
}

func checkResult(probs []Problem) error {
	if len(probs) == 0 {
		return nil
	}
	return &CheckError{Problems: probs}
}

// Leak is a block still live, as Leaks and the leak report list it.
type Leak struct {
	Addr uintptr // the block's (user) address
	Size uintptr // the requested size
	Site Site    // where it was allocated (or last reallocated)
	Orig Site    // where it was first allocated, if it was reallocated
}

// Leaks lists the blocks that are live now, with their sites, in heap
// order. It needs debug mode (or the system or guard mode, which track
// every block); a normal heap keeps no sites and returns nil.
func (h *Heap) Leaks() []Leak {
	s := h.st
	if s.special&specialMode == 0 || s.closed != 0 {
		return nil
	}
	h.enter(opLeaks)
	defer h.exit()
	return h.leaks()
}

func (h *Heap) leaks() []Leak {
	s := h.st
	if s.mode != ModeChunks {
		return h.sysLeaks()
	}
	if !s.debug {
		return nil
	}
	var out []Leak
	add := func(block unsafe.Pointer) {
		r := debugheader.At(block)
		l := Leak{Addr: uintptr(debugheader.User(block)), Size: uintptr(r.Size), Site: resolveSite(uintptr(r.Site))}
		if r.Orig != 0 {
			l.Orig = resolveSite(uintptr(r.Orig))
		}
		out = append(out, l)
	}
	for i := uint32(0); i < s.huge.n; i++ { // huge blocks first, as the Zend MM
		add(ptr(s.huge.at(i).addr))
	}
	s.eachRun(func(c *chunk.Header, page, n, e uint32) {
		switch e & chunk.MapKindMask {
		case chunk.MapSmall:
			b := chunk.EntryBin(e) & 31
			size := uintptr(bins.Size[b])
			run := uintptr(c.Page(page))
			for k := uintptr(0); k < uintptr(bins.Elements[b]); k++ {
				if !s.isFreeSlot(run + k*size) {
					add(ptr(run + k*size))
				}
			}
		case chunk.MapLarge:
			add(c.Page(page))
		}
	})
	return out
}

// reportLeaks writes the leak report of a special debug heap before
// Reset or Close releases its blocks (zend_mm_check_leaks).
func (h *Heap) reportLeaks() {
	d := h.dbg
	if d == nil || !h.st.debug || d.out == nil {
		return
	}
	WriteLeakReport(d.out, h.leaks(), h.name, time.Now())
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

// sortLeaks orders leaks by address.
func sortLeaks(l []Leak) {
	slices.SortFunc(l, func(a, b Leak) int { return cmp.Compare(a.Addr, b.Addr) })
}
