package zmm

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/debugheader"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
	"github.com/gozmm/zmm/storage"
)

// Heap is a Zend-MM-style heap (zend_mm_heap). The Heap value is a small Go
// handle; the heap itself, its chunks and every block it hands out live in
// memory mapped from the OS (or from its storage, see WithStorage),
// invisible to the Go garbage collector.
//
// A Heap has one owner at a time: it is not safe for concurrent use, in the
// way a Zend MM heap under ZTS belongs to one thread. Give each worker
// goroutine its own Heap (New), or use the package-level functions, which
// serve a process-wide default heap behind a mutex.
//
// Blocks hold plain bytes. Never store a Go pointer in a block: the garbage
// collector does not look there and may free what it points to.
type Heap struct {
	st *heapState
	// name names the heap in its leak report (script=) and snapshots.
	name string
	// dbg holds the Go-side state of a debug, system or guard heap (leak
	// writer, site cache, the blocks of a system heap); nil otherwise.
	dbg *debugState
	// hooks holds the custom handlers (SetHandlers); nil when there are
	// none.
	hooks *hookState
}

// heapState is the heap proper. It lives in page 0 of the heap's main chunk,
// right after the chunk header (the Zend MM embeds its heap the same way),
// so it holds only integers and uintptrs.
type heapState struct {
	// size and peak count the bytes handed out at class-rounded sizes
	// (memory_get_usage / memory_get_peak_usage).
	size, peak uintptr
	// key encodes the free-list links (see freelist.go).
	key uintptr
	// frame is what the frame table holds for every live chunk of this heap;
	// a pointer is ours exactly when its frame entry equals it.
	frame frames.Frame
	// free holds the head of each bin's free list (32 entries so that a
	// masked bin index needs no bounds check).
	free [32]uintptr
	// own is a direct-mapped set of this heap's live chunks, indexed by
	// frame number mod 64, holding the chunk's base, or ownEmpty, which no
	// base equals (0 would match every pointer below 2 MiB). A
	// pointer whose chunk is in the set is in a live chunk of this heap, so
	// Free's fast path may read that chunk's header after one load instead
	// of the frame table's two dependent ones. A live chunk may be missing
	// (two chunks sharing a slot, or more than 64 chunks): Free's fast
	// path then asks the frame table (unless the heap is special), and the
	// slow path puts the chunk back when its slot is free.
	own [64]uintptr
	// carveNext and carveLeft give, per bin, the uncarved rest of the
	// bin's newest run: carveLeft bytes from carveNext to the end of its
	// last slot, never handed out nor threaded onto the free list. refill
	// threads a run a batch at a time, so a request that uses a few slots
	// of a run does not write every slot of it. Free's fast path rejects a
	// pointer into it (never handed out). Special heaps thread whole runs
	// and keep these zero; GC and SetHandlers, which need every free slot
	// on a list, thread the rest first (flushCarve); Stats counts it.
	carveNext, carveLeft [32]uintptr

	// realSize and realPeak count the bytes mapped from the OS: live and
	// cached chunks plus huge mappings, live and cached
	// (memory_get_usage(true)).
	realSize, realPeak uintptr
	limit              uintptr

	main   uintptr // the main chunk; its page 0 holds this state
	cached uintptr // cached chunks, linked through chunk.Header.Next

	chunks, peakChunks, cachedChunks uint32
	id                               uint32
	nextNum                          uint32
	deleteBoundary, deleteCount      uint32
	closed                           uint32
	// busy names the entry point a slow path of this heap is in, or is
	// opNone: the one-owner check (owner.go).
	busy heapOp
	// special is non-zero for debug, system and guard heaps
	// (specialMode) and heaps with custom handlers (specialHooked). Such
	// heaps keep s.free empty and never enter the own set, so the fast
	// paths always miss and the slow paths dispatch.
	special uint32
	mode    AllocMode
	debug   bool
	// hasStorage is set for a heap made WithStorage: its chunks and huge
	// blocks come from the storage registered under its id (storage.go).
	hasStorage bool
	// linkOff is where a free slot keeps its link and check word: 0, or
	// 16 in debug mode (after the freed block's Size and Site).
	linkOff uintptr
	// hdr is the debug record in front of every block (0 or 32 bytes).
	hdr uintptr
	// dfree are the free lists of a special heap, which the fast paths
	// never see.
	dfree [32]uintptr
	// avgChunks is the running average of chunks a request needed, which
	// sets how many chunks Reset keeps (the Zend MM's avg_chunks_count).
	avgChunks float64

	huge hugeTable
}

// stateOffset is where the heap state sits in page 0 of the main chunk.
const stateOffset = (chunk.HeaderSize + 63) &^ 63

// The state must fit in the rest of the header page.
var _ [chunk.PageSize - stateOffset - unsafe.Sizeof(heapState{})]byte

// Unlimited is the memory limit of a heap that has none.
const Unlimited uintptr = math.MaxUint64 >> 1

// minSlot is the smallest block handed out: a free slot holds the
// free-list link and its check word, as in the Zend MM 8.4+.
const minSlot = bins.MinBlock

var lastHeapID atomic.Uint32

// closedState stands in for the state of a closed heap: its free lists are
// empty and no frame matches it, so every call reaches a slow path, which
// reports ErrClosed.
var closedState = func() (s heapState) {
	s = heapState{closed: 1, frame: frames.Make(frames.Chunk, 0, 0)}
	s.clearOwn()
	return s
}()

// Option configures a heap made by New.
type Option func(*config)

type config struct {
	limit    uintptr
	debug    *bool
	mode     *AllocMode
	leaks    io.Writer
	leaksSet bool
	name     string
	storage  storage.Storage
	// guardAlign is the alignment of guard-mode blocks; 0 places each
	// block's end against its guard page (see WithGuardAlignment).
	guardAlign    uintptr
	guardAlignSet bool
}

// AllocMode says where a heap's blocks come from.
type AllocMode uint8

const (
	// ModeChunks serves blocks from chunks: the normal mode.
	ModeChunks AllocMode = iota
	// ModeSystem makes every block its own Go allocation (the analog of
	// USE_ZEND_ALLOC=0), so that the race detector and -asan builds see
	// each block on its own. Blocks stay alive until freed or Reset.
	ModeSystem
	// ModeGuard makes every block its own mapping that ends against an
	// inaccessible page: a write past the end faults on the spot, with
	// the Go stack trace.
	ModeGuard
)

func (m AllocMode) String() string {
	switch m {
	case ModeChunks:
		return "chunks"
	case ModeSystem:
		return "system"
	case ModeGuard:
		return "guard"
	}
	return fmt.Sprintf("AllocMode(%d)", uint8(m))
}

// WithDebug turns debug mode on or off for this heap, whatever ZMM_DEBUG
// says: each block then carries its allocation site and guard canaries,
// misuse is reported with the site, and leaks are reported at Reset and
// Close in the Zend MM's format.
func WithDebug(on bool) Option { return func(c *config) { c.debug = &on } }

// WithAllocMode chooses where blocks come from, whatever ZMM_ALLOC says.
func WithAllocMode(m AllocMode) Option { return func(c *config) { c.mode = &m } }

// WithGuardAlignment sets how guard-mode blocks are placed, whatever
// ZMM_GUARD_ALIGN says; other modes ignore it.
//
// By default (align 0) a guard-mode block ends exactly where its guard
// page begins, so a write one byte past its end faults on the spot, as
// Electric Fence does with EF_ALIGNMENT=1. The block is then aligned to the
// largest power of two, up to 16, that divides its size: a Go value or
// slice of a type whose size is n is always aligned for that type, since
// Go types' sizes are multiples of their alignment; a 100-byte buffer is
// 4-byte aligned. With align a power of two from 1 to 4096, every block is
// aligned to align and up to align-1 bytes may lie between its end and the
// guard page: they hold a canary that Free, Realloc and Check verify, so a
// write there is reported at the next of those calls, not on the spot.
// Use 8 where code needs the 8-byte alignment of the other modes for every
// size. New refuses any other value (ErrConfig).
func WithGuardAlignment(align uintptr) Option {
	return func(c *config) { c.guardAlign, c.guardAlignSet = align, true }
}

// WithLeakReport sets where a debug heap writes its leak report (stderr by
// default); nil silences it (ZEND_ALLOC_PRINT_LEAKS=0). Leaks stays
// available. The report is written by the goroutine that calls Reset or
// Close: a writer shared by heaps of several goroutines must be safe for
// concurrent use (os.Stderr is).
func WithLeakReport(w io.Writer) Option {
	return func(c *config) { c.leaks, c.leaksSet = w, true }
}

// WithName names the heap: in its leak report (the report's script=),
// in Snapshot and in the tools that show it. The default is "-".
func WithName(name string) Option { return func(c *config) { c.name = name } }

// Name returns the heap's name (WithName, SetName; "-" if none).
func (h *Heap) Name() string { return h.name }

// SetName renames the heap: in its leak report (the report's script=), as
// the Zend MM names the script of the request that leaked, and in
// snapshots. A server that reuses one heap for many requests sets it at
// each request start. An empty name is "-".
func (h *Heap) SetName(name string) {
	if name == "" {
		name = "-"
	}
	h.name = name
}

// envConfig fills in what the options left open from ZMM_DEBUG and
// ZMM_ALLOC. A value it does not accept is an error naming the variable
// (ErrConfig), never silently the default.
func (c *config) envConfig() error {
	if c.debug == nil {
		on := false
		if v, set := os.LookupEnv("ZMM_DEBUG"); set && v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return configError("ZMM_DEBUG=%q: want 1, t, true, TRUE, True or 0, f, false, FALSE, False (strconv.ParseBool)", v)
			}
			on = b
		}
		c.debug = &on
	}
	if c.mode == nil {
		m := ModeChunks
		switch v := os.Getenv("ZMM_ALLOC"); v {
		case "", "chunks":
		case "system":
			m = ModeSystem
		case "guard":
			m = ModeGuard
		default:
			return configError("ZMM_ALLOC=%q: want system, guard or chunks", v)
		}
		c.mode = &m
	}
	if !c.guardAlignSet {
		if v := os.Getenv("ZMM_GUARD_ALIGN"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || !validGuardAlign(uintptr(n)) {
				return configError("ZMM_GUARD_ALIGN=%q: want 0 (each block against its guard page) or a power of two from 1 to 4096", v)
			}
			c.guardAlign = uintptr(n)
		}
	} else if !validGuardAlign(c.guardAlign) {
		return configError("WithGuardAlignment(%d): want 0 (each block against its guard page) or a power of two from 1 to 4096", c.guardAlign)
	}
	if !c.leaksSet {
		c.leaks = os.Stderr
	}
	if c.name == "" {
		c.name = "-"
	}
	return nil
}

func validGuardAlign(a uintptr) bool { return a == 0 || a <= 4096 && a&(a-1) == 0 }

// WithLimit sets the heap's memory limit in bytes (memory_limit). The
// limit is checked, as in the Zend MM, against the memory mapped from the
// OS, when a chunk or a huge block is mapped; it cannot be below one chunk.
func WithLimit(bytes uintptr) Option { return func(c *config) { c.limit = bytes } }

// New makes an independent heap with its main chunk mapped
// (zend_mm_init). The heap must be closed with Close to give its memory
// back to the OS.
func New(opts ...Option) (*Heap, error) {
	cfg := config{limit: Unlimited}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.envConfig(); err != nil {
		return nil, err
	}
	if cfg.limit < chunk.Size {
		return nil, &Error{Kind: ErrMemoryLimit, Op: "New", Msg: failedLimitMsg(cfg.limit, chunk.Size)}
	}
	st := cfg.storage
	if isOS(st) {
		st = nil
	} else if *cfg.mode != ModeChunks {
		return nil, configError("WithStorage(%v) needs chunks mode, not %v mode (ZMM_ALLOC or WithAllocMode), which maps every block on its own", st, *cfg.mode)
	}
	base, err := mapMain(st)
	if err != nil {
		return nil, err
	}
	id := lastHeapID.Add(1)
	s := (*heapState)(unsafe.Add(base, stateOffset))
	*s = heapState{
		id:         id,
		frame:      frames.Make(frames.Chunk, id, 0),
		key:        uintptr(rand.Uint64()),
		limit:      cfg.limit,
		main:       uintptr(base),
		realSize:   chunk.Size,
		realPeak:   chunk.Size,
		chunks:     1,
		peakChunks: 1,
		nextNum:    1,
		avgChunks:  1,
	}
	s.clearOwn()
	if st != nil {
		s.hasStorage = true
		storages.Store(id, st)
	}
	h := &Heap{st: s, name: cfg.name}
	if *cfg.debug || *cfg.mode != ModeChunks {
		s.special = specialMode
		s.debug = *cfg.debug
		s.mode = *cfg.mode
		h.dbg = newDebugState(cfg)
		if s.debug && s.mode == ModeChunks {
			s.linkOff = 16
			s.hdr = debugheader.Size
			debugHeaps.Store(id, h.dbg)
		}
	}
	c := chunk.At(base)
	c.Init(uintptr(unsafe.Pointer(s)), id, 0)
	c.Next, c.Prev = c.Base(), c.Base()
	frames.Set(uintptr(base), s.frame)
	s.addOwn(c.Base())
	return h, nil
}

func ownSlot(addr uintptr) uintptr { return addr >> chunk.Shift & 63 }

// ownEmpty marks a free slot of the own set: it is odd, so no chunk base
// (2 MiB aligned) and no pointer rounded down to one equals it.
const ownEmpty uintptr = 1

// clearOwn empties the own set.
func (s *heapState) clearOwn() {
	for i := range s.own {
		s.own[i] = ownEmpty
	}
}

// addOwn puts a live chunk in the own set if its slot is free. Special
// heaps keep the set empty, so that Free's fast path never serves them.
func (s *heapState) addOwn(base uintptr) {
	if i := ownSlot(base); s.own[i] == ownEmpty && s.special == 0 {
		s.own[i] = base
	}
}

// dropOwn takes a chunk that stops being live out of the own set.
func (s *heapState) dropOwn(base uintptr) {
	if i := ownSlot(base); s.own[i] == base {
		s.own[i] = ownEmpty
	}
}

// eachRun calls f for every run of every live chunk, the main chunk first
// and pages in order: a small run (e is its first page's entry, n its
// pages), a large run (e its MapLarge entry), or a stretch of n free pages
// (e == MapFree). Page 0 is skipped. f must not change the chunk ring.
func (s *heapState) eachRun(f func(c *chunk.Header, page, n, e uint32)) {
	main := hdr(s.main)
	for c := main; ; {
		for i := uint32(chunk.FirstPage); i < chunk.Pages; {
			e := c.Map[i]
			var n uint32
			switch e & chunk.MapKindMask {
			case chunk.MapSmall:
				n = bins.Pages[chunk.EntryBin(e)&31]
			case chunk.MapLarge:
				n = chunk.EntryPages(e)
			case chunk.MapFree:
				for n = 1; i+n < chunk.Pages && c.Map[i+n] == chunk.MapFree; n++ {
				}
			default: // kind 11 is not used: only a damaged map has it
				n = 1
			}
			f(c, i, n, e)
			i += n
		}
		if c = hdr(c.Next); c == main {
			return
		}
	}
}

// ptr turns an address of mapped memory into a pointer.
func ptr(addr uintptr) unsafe.Pointer { return unsafe.Add(nil, addr) }

func hdr(addr uintptr) *chunk.Header { return (*chunk.Header)(ptr(addr)) }

// checkOpen reports use after Close.
func (s *heapState) checkOpen(op string) {
	if s.closed != 0 {
		fail(ErrClosed, op, 0, "zmm: %s on a closed heap", op)
	}
}

// allocPages takes n contiguous free pages for a run from the first chunk
// that has a best fit, mapping a new chunk when none has (zend_mm_alloc_pages).
// tried is the size reported if the memory limit stops it.
func (s *heapState) allocPages(n uint32, op string, tried uintptr) (*chunk.Header, uint32) {
	retried := false
	for {
		c := hdr(s.main)
		for steps := uint32(0); ; steps++ {
			if steps >= s.chunks {
				// More chunks than the heap has: the ring is broken
				// into a loop that misses the main chunk.
				fail(ErrCorrupted, op, c.Base(), "zmm: heap corrupted: chunk list broken at chunk 0x%x", c.Base())
			}
			if start, ok := c.FindRun(n); ok {
				if s.debug && s.mode == ModeChunks {
					s.checkFreedPages(op, c, start, n)
				}
				if steps > 2 && n < 8 {
					s.moveToFront(c)
				}
				c.Take(start, n)
				return c, start
			}
			if c.Next == s.main {
				break
			}
			c = hdr(c.Next)
		}
		if s.cached == 0 && s.overLimit(chunk.Size) {
			// Give back what is cached or empty, then look again: the
			// collection may have emptied pages in the chunks we have.
			if !retried && s.gc(op, false) > 0 {
				retried = true
				continue
			}
			limitError(op, s.limit, tried)
		}
		c = s.newChunk(op, tried)
		c.Take(chunk.FirstPage, n)
		return c, chunk.FirstPage
	}
}

// overLimit reports whether mapping need more bytes would pass the limit.
func (s *heapState) overLimit(need uintptr) bool {
	return s.realSize > s.limit || need > s.limit-s.realSize
}

// reserve checks the limit before need bytes are mapped, collecting cached
// and empty memory first if that helps (the Zend MM's gc-and-retry).
func (s *heapState) reserve(need uintptr, op string, tried uintptr) {
	if s.overLimit(need) {
		s.gc(op, false)
		if s.overLimit(need) {
			limitError(op, s.limit, tried)
		}
	}
}

// mapMemory maps size bytes aligned to a chunk, retrying once after a
// collection, and reports the Zend MM's out-of-memory error on failure.
// A heap over a storage names the storage and its reason in the message.
func (s *heapState) mapMemory(size uintptr, op string, tried uintptr) unsafe.Pointer {
	p, err := s.mapChunks(size)
	if err != nil {
		s.gc(op, false)
		p, err = s.mapChunks(size)
		if err != nil {
			s.oom(op, tried, err)
		}
	}
	if !frames.Addressable(p, size) {
		_ = s.unmapChunks(p, size)
		s.oom(op, tried, fmt.Errorf("address %#x beyond 2^%d", p, frames.AddressBits))
	}
	return ptr(p)
}

// newChunk takes a chunk from the cache, or maps one, and links it at the
// end of the ring. The caller has checked the limit.
func (s *heapState) newChunk(op string, tried uintptr) *chunk.Header {
	var c *chunk.Header
	if s.cached != 0 {
		c = hdr(s.cached)
		s.cached = c.Next
		s.cachedChunks--
	} else {
		c = chunk.At(s.mapMemory(chunk.Size, op, tried))
		s.realSize += chunk.Size
		s.realPeak = max(s.realPeak, s.realSize)
	}
	c.Init(uintptr(unsafe.Pointer(s)), s.id, s.nextNum)
	s.nextNum++
	frames.Set(c.Base(), s.frame)
	s.addOwn(c.Base())
	s.chunks++
	s.peakChunks = max(s.peakChunks, s.chunks)
	main := hdr(s.main)
	c.Next, c.Prev = s.main, main.Prev
	hdr(main.Prev).Next = c.Base()
	main.Prev = c.Base()
	return c
}

// unlink takes c out of the ring, checking that its neighbours agree: a
// broken ring means the header page was overwritten.
func (s *heapState) unlink(c *chunk.Header) {
	next, prev := hdr(c.Next), hdr(c.Prev)
	if next.Prev != c.Base() || prev.Next != c.Base() {
		fail(ErrCorrupted, "unlink", c.Base(), "zmm: heap corrupted: chunk list broken at chunk 0x%x", c.Base())
	}
	prev.Next = c.Next
	next.Prev = c.Prev
}

func (s *heapState) moveToFront(c *chunk.Header) {
	main := hdr(s.main)
	if main.Next == c.Base() {
		return
	}
	s.unlink(c)
	c.Prev, c.Next = s.main, main.Next
	hdr(main.Next).Prev = c.Base()
	main.Next = c.Base()
}

// deleteChunk retires an empty chunk other than the main one: it is cached
// for reuse or unmapped, by the Zend MM's policy (zend_mm_delete_chunk),
// which keeps about as many chunks as requests have been using and stops
// mmap/munmap thrashing around a chunk boundary (bug #75368).
func (s *heapState) deleteChunk(c *chunk.Header) {
	s.unlink(c)
	s.chunks--
	if float64(s.chunks+s.cachedChunks) < s.avgChunks+0.1 ||
		(s.chunks == s.deleteBoundary && s.deleteCount >= 4) {
		s.cacheChunk(c)
		return
	}
	s.realSize -= chunk.Size
	if s.cached == 0 {
		if s.chunks != s.deleteBoundary {
			s.deleteBoundary, s.deleteCount = s.chunks, 0
		} else {
			s.deleteCount++
		}
	}
	if s.cached == 0 || c.Num > hdr(s.cached).Num {
		s.unmapChunk(c.Base())
		return
	}
	// Keep the older chunk: it replaces the head of the cache.
	old := s.cached
	c.Next = hdr(old).Next
	s.cached = c.Base()
	s.dropOwn(c.Base())
	frames.Set(c.Base(), frames.Make(frames.CachedChunk, s.id, 0))
	s.unmapChunk(old)
}

func (s *heapState) cacheChunk(c *chunk.Header) {
	s.dropOwn(c.Base())
	s.forgetChunk(c.Base())
	c.Next = s.cached
	s.cached = c.Base()
	s.cachedChunks++
	frames.Set(c.Base(), frames.Make(frames.CachedChunk, s.id, 0))
}

// unmapChunk gives a chunk back to the OS and leaves a tombstone in the
// frame table, so that a stale pointer into it is reported as such.
func (s *heapState) unmapChunk(addr uintptr) {
	s.dropOwn(addr)
	s.forgetChunk(addr)
	frames.Set(addr, frames.Make(frames.FreedChunk, s.id, 0))
	if err := s.unmapChunks(addr, chunk.Size); err != nil {
		fail(ErrCorrupted, "munmap", addr, "zmm: munmap of chunk 0x%x failed: %v", addr, err)
	}
}

// unmapCachedChunk unmaps the chunk at the head of the cache.
func (s *heapState) unmapCachedChunk() {
	addr := s.cached
	s.cached = hdr(addr).Next
	s.cachedChunks--
	s.realSize -= chunk.Size
	s.unmapChunk(addr)
}

// dropCache unmaps every cached chunk and returns the bytes unmapped.
func (s *heapState) dropCache() uintptr {
	n := uintptr(s.cachedChunks) * chunk.Size
	for s.cached != 0 {
		s.unmapCachedChunk()
	}
	return n
}

// Reset ends a request (zend_mm_shutdown, not full): every block is
// released at once without visiting it, statistics restart, and the main
// chunk plus about as many cached chunks as recent requests needed stay
// mapped for the next request. Pointers into the heap are invalid after
// Reset.
//
// A debug heap first writes its leak report (see WithLeakReport).
func (h *Heap) Reset() {
	s := h.st
	s.checkOpen("Reset")
	if hk := h.hooks; hk != nil && hk.Reset != nil {
		hk.Reset()
	}
	h.enter(opReset)
	defer h.exit()
	s.checkRing("Reset")
	if d := h.dbg; d != nil {
		h.reportLeaks()
		if s.mode != ModeChunks {
			h.sysReleaseAll()
		}
		clear(d.quarantined)
		d.forgetRuns()
	}
	s.freeAllHuge()
	for addr := hdr(s.main).Next; addr != s.main; {
		c := hdr(addr)
		addr = c.Next
		s.cacheChunk(c)
		s.chunks--
	}
	s.avgChunks = (s.avgChunks + float64(s.peakChunks)) / 2
	for s.cached != 0 && float64(s.cachedChunks)+0.9 > s.avgChunks {
		s.unmapCachedChunk()
	}
	main := hdr(s.main)
	main.Init(uintptr(unsafe.Pointer(s)), s.id, 0)
	main.Next, main.Prev = s.main, s.main
	s.free = [32]uintptr{}
	s.dfree = [32]uintptr{}
	s.carveNext, s.carveLeft = [32]uintptr{}, [32]uintptr{}
	s.size, s.peak = 0, 0
	s.realPeak = s.realSize
	s.chunks, s.peakChunks = 1, 1
	s.deleteBoundary, s.deleteCount = 0, 0
	s.key = uintptr(rand.Uint64())
}

// Close gives every byte of the heap back to the OS (zend_mm_shutdown,
// full). The heap and every pointer into it are invalid afterwards; using
// the heap panics with ErrClosed.
//
// A debug heap first writes its leak report.
func (h *Heap) Close() {
	s := h.st
	if s.closed != 0 {
		return
	}
	// The heap stays busy to the end: its state is unmapped with the main
	// chunk, so there is nothing to clear afterwards.
	s.checkRing("Close")
	h.enter(opClose)
	if d := h.dbg; d != nil {
		h.reportLeaks()
		if s.mode != ModeChunks {
			h.sysReleaseAll()
		}
	}
	s.freeAllHuge()
	s.dropHugeCache()
	s.huge.release()
	s.dropCache()
	for addr := hdr(s.main).Next; addr != s.main; {
		next := hdr(addr).Next
		s.unmapChunk(addr)
		addr = next
	}
	h.st = &closedState
	id, hasStorage := s.id, s.hasStorage
	s.unmapChunk(s.main) // the state dies with it
	if hasStorage {
		storages.Delete(id)
	}
	if d := h.dbg; d != nil {
		debugHeaps.Delete(id)
		d.releaseQuarantine()
	}
}

// smallBin is the bin of a small request; sizes below the smallest slot
// are bumped to it, so Alloc(0) returns a 16-byte block.
func smallBin(size uintptr) uint32 { return bins.Bin(size) }
