package zmm

import (
	"sync/atomic"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// heapState is the heap proper (zend_mm_heap). It lives in page 0 of the
// heap's main chunk, right after the chunk header (the Zend MM embeds its
// heap the same way), so it holds only integers and uintptrs: the Go
// garbage collector never sees it, and a Go pointer stored here would not
// keep its target alive. The fields the fast paths read come first.
type heapState struct {
	// size and peak count the bytes handed out at class-rounded sizes
	// (memory_get_usage / memory_get_peak_usage).
	size, peak uintptr
	// key encodes the free-list links (freelist.go). It is random per heap
	// and per request.
	key uintptr
	// frame is what the frame table holds for every live chunk of this heap;
	// a pointer is ours exactly when its frame entry equals it.
	frame frames.Frame
	// free holds the head of each bin's free list for the fast paths (32
	// entries so that a masked bin index needs no bounds check). A special
	// heap keeps it empty and uses dfree.
	free [32]uintptr
	// own is a direct-mapped set of this heap's live chunks, indexed by
	// frame number mod 64, holding the chunk's base, or ownEmpty, which no
	// base equals (0 would match every pointer below 2 MiB). A pointer whose
	// chunk is in the set is in a live chunk of this heap, so Free's fast
	// path may read that chunk's header after one load instead of the frame
	// table's two dependent ones. A live chunk may be missing (two chunks
	// sharing a slot, or more than 64 chunks): Free's fast path then asks
	// the frame table (unless the heap is special), and the slow path puts
	// the chunk back when its slot is free. A special heap keeps it empty.
	own [64]uintptr
	// carveNext and carveLeft give, per bin, the uncarved rest of the bin's
	// newest run: carveLeft bytes from carveNext to the end of its last
	// slot, never handed out nor threaded onto a free list (freelist.go).
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
	// nextNum numbers chunks in the order they are taken, never reused
	// within the heap's life: a chunk's base and Num name one incarnation
	// of it.
	nextNum                     uint32
	deleteBoundary, deleteCount uint32
	closed                      uint32
	// busy is the one-owner check's mark (owner.go): the heapOp of the slow
	// path a goroutine is in, or 0.
	busy uint32
	// special is non-zero for a heap whose calls all go through the slow
	// paths: its bits are below. Such a heap keeps free empty and never
	// enters the own set, so the fast paths always miss, and the slow paths
	// dispatch (dispatch.go).
	special uint32
	// debug is set for a heap in debug mode on chunks: its blocks carry a
	// debug record (hdr bytes before the user pointer), its free slots
	// keep their link at linkOff, new runs are filled, freed runs
	// remembered (poison.go).
	debug bool
	// hasStorage is set for a heap made WithStorage: its chunks and huge
	// blocks come from the storage registered under its id (storage.go).
	hasStorage bool
	// linkOff is where a free slot keeps its link and check word: 0, or
	// debugLinkOff in debug mode.
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
	// runs finds the free gaps of the live chunks by length (runindex.go).
	runs runIndex

	// inbox is the address of the word that heads the blocks goroutines
	// other than the heap's holder freed into a heap of a Shared allocator
	// (remote.go). The word is in the allocator's table, alone on its cache
	// line, away from the fields the holder writes on every call; only
	// atomic operations touch it.
	inbox uintptr
	// collected counts the blocks the heap's holders took back from inbox.
	collected uint64
	// shared is the id of the Shared allocator the heap serves (0: none),
	// sharedIdx its place in that allocator's heap list.
	shared, sharedIdx uint32
	// held is set while a goroutine of the Shared allocator holds the heap
	// for a call (sharedheaps.go).
	held uint32
	// budget is the address of the Shared allocator's memory budget, which
	// its heaps map against instead of their own limit (limit.go); 0 for
	// any other heap.
	budget uintptr
}

// The bits of heapState.special.
const (
	// specialMode: a debug, system or guard heap (Heap.sp is set).
	specialMode = 1 << iota
	// specialHooked: a heap with custom handlers (Heap.hooks is set).
	specialHooked
)

// stateOffset is where the heap state sits in page 0 of the main chunk.
const stateOffset = (chunk.HeaderSize + 63) &^ 63

// The state must fit in the rest of the header page.
var _ [chunk.PageSize - stateOffset - unsafe.Sizeof(heapState{})]byte

// lastHeapID numbers heaps for the frame table; 0 is nobody.
var lastHeapID atomic.Uint32

// checkOpen reports use after Close.
func (s *heapState) checkOpen(op string) {
	if s.closed != 0 {
		fail(ErrClosed, op, 0, "zmm: %s on a closed heap", op)
	}
}
