package zmm

// A Heap has one owner at a time. Misuse by two goroutines is detected on
// the slow paths the way Go's maps detect a concurrent write: a plain field
// of the heap state, set while a slow path runs, found set by another
// goroutine entering one. No atomic instruction is involved and the
// inlined fast paths of Alloc and Free never look at it, so a correct
// program pays a compare and two stores per slow-path call. Detection is
// best effort (two goroutines may both read the field before either writes
// it, and two fast paths racing each other are never seen), but a program
// that shares a heap between goroutines without a lock hits it within a few
// slow-path calls: every refill, page run, huge block, slow free and
// moving realloc is one.
//
// The operations below are entry points: the functions they call inside
// the heap never enter again, so a slow path that allocates (a realloc
// that moves) or collects (the memory limit's retry) is one entry.

// markedExact is the mark a heap that keeps its mark on the Go side (a
// debug, system or guard heap) leaves in heapState.busy for good, so that
// enter's inlined test sends it to enterSlow.
const markedExact = ^uint32(0)

// heapOp names an entry point in the concurrent-use report.
type heapOp uint32

const (
	opNone heapOp = iota
	opAlloc
	opFree
	opRealloc
	opBlockSize
	opGC
	opReset
	opClose
	opStats
	opSnapshot
	opCheck
	opLeaks
	opSetLimit
	opSetHandlers
)

var heapOpNames = [...]string{
	opNone:        "nothing",
	opAlloc:       "Alloc",
	opFree:        "Free",
	opRealloc:     "Realloc",
	opBlockSize:   "BlockSize",
	opGC:          "GC",
	opReset:       "Reset",
	opClose:       "Close",
	opStats:       "Stats",
	opSnapshot:    "Snapshot",
	opCheck:       "Check",
	opLeaks:       "Leaks",
	opSetLimit:    "SetLimit",
	opSetHandlers: "SetHandlers",
}

func (op heapOp) String() string {
	if int(op) < len(heapOpNames) {
		return heapOpNames[op]
	}
	return "an operation"
}

// enter marks the heap busy with op for the length of a slow path, or
// panics with ErrConcurrentUse if another goroutine is inside one. Call as
// h.enter(op); defer h.exit(): the deferred exit also runs when the path
// reports an error, so the heap stays usable after a recovered panic.
//
// Debug, system and guard heaps, whose calls cost microseconds anyway,
// keep the field in their Go-side state and take it with a
// compare-and-swap: there the check is exact for their slow paths (which
// are all their calls), and the race detector, which does not see mapped
// memory, sees the Go-side state they keep (sites, blockInfo maps) handed from
// goroutine to goroutine through it.
func (h *Heap) enter(op heapOp) {
	if s := h.st; s.busy == uint32(opNone) {
		s.busy = uint32(op)
		return
	}
	h.enterSlow(op)
}

// enterSlow is enter for a heap that keeps its mark on the Go side, and
// the report of a heap found busy. It is out of line so that enter, which
// every slow path of a normal heap calls, inlines to a load, a compare and
// a store.
//
//go:noinline
func (h *Heap) enterSlow(op heapOp) {
	if sp := h.sp; sp != nil { // heapState.busy is markedExact for good
		if !sp.busy.CompareAndSwap(uint32(opNone), uint32(op)) {
			concurrentUse(op, heapOp(sp.busy.Load()))
		}
		return
	}
	concurrentUse(op, heapOp(h.st.busy))
}

func (h *Heap) exit() {
	if sp := h.sp; sp != nil {
		sp.busy.Store(uint32(opNone))
		return
	}
	h.st.busy = uint32(opNone)
}

//go:noinline
func concurrentUse(op, inside heapOp) {
	fail(ErrConcurrentUse, op.String(), 0,
		"zmm: concurrent use of a single-owner heap: %v while another goroutine is inside %v (a Heap has one owner at a time: give each goroutine its own heap, or use the package-level functions such as zmm.Alloc, which are safe from any goroutine)",
		op, inside)
}
