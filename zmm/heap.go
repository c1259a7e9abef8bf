package zmm

import (
	"io"
	"math/rand/v2"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/internal/frames"
)

// Heap is a Zend-MM-style heap (zend_mm_heap). The Heap value is a small Go
// handle; the heap itself, its chunks and every block it hands out live in
// memory mapped from the OS (or from its storage, see WithStorage),
// invisible to the Go garbage collector.
//
// A Heap has one owner at a time: it is not safe for concurrent use, in the
// way a Zend MM heap under ZTS belongs to one thread. Give each worker
// goroutine its own Heap (New), or use a Shared (NewShared, or the
// package-level functions, which serve one). Two goroutines caught
// in one heap's slow paths at once get ErrConcurrentUse (owner.go).
//
// Blocks hold plain bytes. Never store a Go pointer in a block: the garbage
// collector does not look there and may free what it points to.
type Heap struct {
	st *heapState
	// name names the heap in its leak report (script=) and snapshots.
	name string
	// sp is the Go-side state of a heap made in debug, system or guard
	// mode; nil otherwise. It is chosen once, in New.
	sp *specialState
	// hooks holds the custom handlers (SetHandlers); nil when there are
	// none.
	hooks *hookState
}

// special is what a heap made in debug, system or guard mode keeps on the
// Go side. Exactly one backend serves its blocks: dbg (debug mode on
// chunks) or sys (system and guard modes, debug or not).
type specialState struct {
	// busy is the exact one-owner check of these heaps (owner.go).
	busy atomic.Uint32
	// debug is debug mode (WithDebug): a leak report at Reset and Close.
	debug bool
	// sites caches which program counters are zmm's (sites.go).
	sites siteCache
	// leaks is where the leak report goes; nil is silent.
	leaks io.Writer
	dbg   *debugState
	sys   *sysHeap
}

// Handlers replace or observe a heap's allocation calls, the analog of the
// Zend MM's zend_mm_set_custom_handlers. Alloc serves Alloc and everything
// built on it (Calloc, SafeAlloc, Strdup, AllocBytes, the typed helpers),
// Free serves Free and FreeBytes, and Realloc serves Realloc. A nil field
// keeps the heap's own code for that call. Reset, if set, is told at the
// start of every Reset (before the heap drops its blocks), so that an
// observer can close its books on the request.
//
// A handler that observes calls the heap's own code through the Handlers
// that Builtin returns, never through the heap's methods: those would call
// the handler again, without end.
//
// Handlers run on the heap owner's goroutine, inside the call they serve;
// a heap with handlers is as single-owner as any other.
type Handlers struct {
	Alloc   func(size uintptr) unsafe.Pointer
	Free    func(p unsafe.Pointer)
	Realloc func(p unsafe.Pointer, size uintptr) unsafe.Pointer
	Reset   func()
}

// hookState is the Go-side state of a heap with handlers.
type hookState struct {
	Handlers
	// site is the allocation site of the call a handler is serving, taken
	// on entry (heaps that keep sites only): below the handler, the first
	// frame outside zmm is the handler's own code, not the program's.
	site uintptr
}

// New makes an independent heap with its main chunk mapped
// (zend_mm_init). The heap must be closed with Close to give its memory
// back to the OS.
//
// Its mode is decided here, once: chunk mode; debug mode on chunks; system
// or guard mode (debug or not). Custom handlers may be put on top of any
// of them later (SetHandlers).
func New(opts ...Option) (*Heap, error) {
	cfg := config{limit: Unlimited}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.resolve(); err != nil {
		return nil, &Error{Kind: ErrConfig, Op: "New", Msg: "zmm: " + err.Error()}
	}
	if cfg.limit < chunk.Size {
		return nil, &Error{Kind: ErrMemoryLimit, Op: "New", Msg: failedLimitMsg(cfg.limit, chunk.Size)}
	}
	base, err := mapMain(cfg.storage)
	if err != nil {
		return nil, &Error{Kind: ErrOutOfMemory, Op: "New", Msg: "Can't initialize heap: " + err.Error()}
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
	if cfg.storage != nil {
		s.hasStorage = true
		storages.Store(id, cfg.storage)
	}
	h := &Heap{st: s, name: cfg.name}
	if *cfg.debug || *cfg.mode != ModeChunks {
		s.special = specialMode
		s.busy = markedExact
		sp := &specialState{debug: *cfg.debug, leaks: cfg.leaks}
		if *cfg.mode == ModeChunks {
			sp.dbg = newDebugState()
			s.debug = true
			s.linkOff = debugLinkOff
			s.hdr = debugheader.Size
			debugHeaps.Store(id, sp.dbg)
		} else {
			sp.sys = newSysHeap(*cfg.mode, cfg.guardAlign)
		}
		h.sp = sp
	}
	c := chunk.At(base)
	c.Init(uintptr(unsafe.Pointer(s)), id, 0)
	c.Next, c.Prev = c.Base(), c.Base()
	frames.Set(uintptr(base), s.frame)
	s.addOwn(c.Base())
	return h, nil
}

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

// Debug reports whether the heap is in debug mode. A debug block starts
// debugheader.Size (32) bytes into its slot, so page runs are no longer
// 4 KiB aligned: only 8-byte alignment holds for every block.
func (h *Heap) Debug() bool { return h.sp != nil && h.sp.debug }

// Mode reports where the heap's blocks come from.
func (h *Heap) Mode() AllocMode {
	if h.sp != nil && h.sp.sys != nil {
		return h.sp.sys.mode
	}
	return ModeChunks
}
