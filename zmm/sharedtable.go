package zmm

import (
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// Shared is an allocator for the whole program: safe from any goroutine at
// any time, and a block may be freed by a goroutine other than the one that
// allocated it, as Go programs do all the time. It is the analog of
// mimalloc's or TCMalloc's thread caches, made of zmm heaps:
//
//   - each P (GOMAXPROCS of them) has a heap of its own, found through
//     runtime.procPin. A small alloc, and the free of a small block of that
//     same heap, run pinned, without a lock and without an atomic
//     read-modify-write: the heap's own fast paths;
//   - every other call takes a heap for the goroutine's sole use for its
//     length (the P's, or an idle one, or a new one) and runs the heap's
//     full code on it, unpinned, so that a mapping call or a big copy never
//     holds up the P (sharedheaps.go);
//   - a block of a heap the goroutine cannot take is freed remotely: one
//     compare-and-swap claims it, one pushes it onto that heap's inbox, and
//     the heap's next holder collects the inbox on its slow path
//     (remote.go). No lock is taken.
//
// Every guarantee of Heap holds: a bad pointer, an interior pointer, a
// block of another allocator, a double free, including a block freed twice
// remotely, by two goroutines at once, is a *Error, and no block is handed
// out twice. (Two exceptions are caught later: a remote free of a slot
// that was never handed out, and a double free whose two frees race each
// other within nanoseconds, one of them on the owner's P, are found when
// the owner collects its inbox; Check reports them.)
//
// The memory limit (WithLimit, SetLimit) is the allocator's: its heaps map
// against one budget, taken atomically before a chunk or a huge block is
// mapped, so it is exact at that granularity whatever the goroutines do at
// once, and a call that would pass it collects every heap and retries
// before it fails with Zend's message.
//
// RealUsage and RealPeakUsage are the budget's, exact. Usage sums the
// heaps' figures, read without stopping them: each is exact as of the
// heap's last completed call, and a block freed remotely counts until its
// heap collects it; PeakUsage is the sum of the heaps' peaks, an upper
// bound of the allocator's.
//
// Stats, Snapshot and Leaks describe the whole allocator, HeapSnapshot one
// heap (inspect.RegisterShared serves both); Reset ends a request on every
// heap at once.
//
// A serial allocator (debug mode, or the system or guard mode) has one heap
// of that mode, which every call takes in turn, as a mutex would: those
// modes keep a site, a map entry or a mapping per block, and are for
// finding bugs, not for speed. Its leak report, sites, guards and fill are
// the heap's, and a block may be freed by any goroutine. Its fast paths
// always miss (the heap is in no P's slot), so they cost it nothing either.
//
// Not yet: storages (NewShared refuses WithStorage). Blocks hold plain
// bytes; never store a Go pointer in one.
type Shared struct {
	// tab is the slot table: per P id, a sharedSlot (sharedheaps.go). It
	// is mapped memory, so that its plain loads and stores are seen by no
	// Go machinery (the race detector included: the stop-the-world orders
	// them, which it does not know). Close gives its pages back but keeps
	// it mapped, so that a call racing Close reads empty slots (and goes to
	// the slow path, which reports ErrClosed) rather than faulting.
	tab uintptr

	id   uint32
	name string

	// serial is set for debug, system and guard mode: the allocator has
	// one heap, which never sits in a slot, and every call takes it.
	serial bool
	// debug and mode are the heaps' (Debug, Mode).
	debug bool
	mode  AllocMode
	// heapOpts are the options each heap is made with.
	heapOpts []Option

	// heaps is every heap of the allocator, in the order made; a heap's
	// state records its index (heapState.sharedIdx). Copy on write under mu.
	heaps  atomic.Pointer[sharedList]
	closed atomic.Bool

	mu       sync.Mutex
	cond     sync.Cond // mu's: a heap came back, or a stop ended
	stopping bool      // a stop holds every heap (GC, Check, Close)
	idle     []*Heap   // heaps in no slot and held by nobody
	waiting  int       // goroutines waiting for an idle heap
	adopted  uint64    // heaps adopted from the slots of Ps gone
	late     []error   // errors found by a collection, for Check
	lateN    int       // how many there were (late keeps the first few)
}

// sharedSlots bounds the P ids served by a slot; a P with a larger id
// takes an idle heap for every call.
const sharedSlots = 256

// sharedSlot is one P's slot, alone on its cache line: a P writes its own
// slot on its slow paths. st is the state of the heap in it, or 0; stop is
// raised while a stop takes the heaps (sharedheaps.go). Both are plain
// fields: only the goroutine pinned on the P reads and writes them, and
// stop, after a stop-the-world.
type sharedSlot struct {
	st   uintptr
	stop uint32
	_    [64 - 12]byte
}

// slotTableSize is the table's mapping, whole OS pages: the slots, an
// inbox word per heap, each on a cache line of its own, and the budget.
func slotTableSize() uintptr {
	n := uintptr(sharedSlots)*unsafe.Sizeof(sharedSlot{}) + maxSharedHeaps*64 + budgetSize
	ps := chunk.OSPageSize()
	return (n + ps - 1) &^ (ps - 1)
}

// budget returns the allocator's memory budget (sharedbudget.go).
func (a *Shared) budget() *sharedBudget {
	return budgetAt(a.inboxAt(maxSharedHeaps))
}

// inboxAt returns the address of the inbox word of heap i.
func (a *Shared) inboxAt(i int) uintptr {
	return a.tab + uintptr(sharedSlots)*unsafe.Sizeof(sharedSlot{}) + uintptr(i)*64
}

// slot returns P pid's slot; pid < sharedSlots.
func (a *Shared) slot(pid int) *sharedSlot {
	return (*sharedSlot)(ptr(a.tab + uintptr(pid)*unsafe.Sizeof(sharedSlot{})))
}

// sharedList is a snapshot of the allocator's heaps. ids and keys copy
// hs[i].st.id and .key, so that a remote free finds a block's heap and its
// key without reading the heap state, whose lines the holder writes.
type sharedList struct {
	hs   []*Heap
	ids  []uint32
	keys []uintptr
}

// maxSharedHeaps bounds the heaps of one allocator (the inbox table's
// size).
const maxSharedHeaps = 1024

var lastSharedID atomic.Uint32

// checkOpen reports use after Close.
func (a *Shared) checkOpen(op string) {
	if a.closed.Load() {
		fail(ErrClosed, op, 0, "zmm: %s on a closed shared allocator", op)
	}
}
