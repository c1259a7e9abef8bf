// Package zmmarrow lets Apache Arrow (github.com/apache/arrow-go/v18) keep
// its buffers in a zmm heap: an Allocator is a memory.Allocator over a
// *zmm.Heap, so the columns of Arrow arrays, record batches and IPC reads
// live outside the Go heap, where the garbage collector neither scans nor
// frees them, and count in the heap's usage, peak and memory limit.
//
//	h, err := zmm.New(zmm.WithLimit(1 << 30))
//	if err != nil {
//		return err
//	}
//	defer h.Close()
//	mem := zmmarrow.New(h)
//
//	b := array.NewInt64Builder(mem)
//	b.AppendValues([]int64{1, 2, 3}, nil)
//	arr := b.NewInt64Array()
//	b.Release()
//	// ... use arr ...
//	arr.Release() // its buffers go back to h
//
// It is a module of its own (github.com/gozmm/zmm/zmmarrow), so that
// programs that use zmm without Arrow do not depend on arrow-go.
//
// # Which constructor
//
// A zmm heap has one owner at a time. New gives an Allocator without a lock,
// for a heap that one goroutine uses, with every Arrow call that may
// allocate or release (building arrays, Release, IPC reading and writing)
// made on that goroutine. Arrow calls the allocator from other goroutines
// too: the IPC writer compresses buffers on several goroutines
// (ipc.WithCompressConcurrency), compute kernels and Parquet readers run in
// parallel, and an array may be released by a goroutine other than the one
// that built it. Then use NewLocked, which holds a lock around every call;
// give it the lock that serializes every other use of the heap, if there is
// any (for example the one registered with inspect.Register). On a debug
// heap (zmm.WithDebug) an unlocked Allocator used by two goroutines at once
// panics with zmm.ErrConcurrentUse.
//
// NewShared takes a *zmm.Shared instead of a heap: an allocator for every
// goroutine, with no lock (a heap per P, a buffer released on another
// goroutine freed remotely). It is the one to use when Arrow runs on
// several goroutines and the heap is not tied to a request; it has no
// debug mode yet, and no Reset: its buffers live until released or the
// allocator is closed.
//
// # Lifetimes
//
// Everything the Allocator hands out is a block of its heap, and is gone at
// h.Reset() and h.Close(): release every array, record, builder and reader
// built with the Allocator before that. A buffer still held afterwards
// points at memory that is unmapped or handed out again. On a debug heap the
// buffers still live at Reset and Close are reported as leaks, and h.Leaks
// lists them; their site is the line of the program that called into
// Arrow's array, memory or ipc packages (this package marks itself and
// those with zmm.MarkHelperPackage), and the sizes zmm reports include the
// 64 bytes added for alignment. Arrow buffers hold
// plain bytes, never Go pointers, so keeping them where the garbage
// collector does not look is safe; do not store Go pointers in them
// yourself.
//
// # Behaviour
//
// The Allocator behaves as Arrow's memory.GoAllocator does:
//
//   - Allocate(n) returns a zeroed slice of length and capacity n whose first
//     byte is 64-byte aligned. Allocate(0) returns a non-nil empty slice that
//     owns no block and does not touch the heap.
//   - Reallocate(n, b) returns a 64-byte aligned slice of length and
//     capacity n holding b's bytes up to the smaller size, the rest zeroed.
//     It resizes the block with h.Realloc, so a growing page run or huge
//     block is extended in place when zmm can, and a shrinking one gives its
//     memory back. Reallocate(n, b) of an empty b is Allocate(n);
//     Reallocate(0, b) frees b.
//   - Free(b) takes the slice Allocate or Reallocate returned (Arrow's
//     memory.Buffer keeps it whole). A slice of capacity 0 owns no block and
//     is ignored, as GoAllocator ignores every Free.
//
// Failures panic with a *zmm.Error, as every zmm allocation does: the
// heap's memory limit, a negative or overflowing size (zmm.ErrOverflow), and
// a slice that is not a live buffer of the heap (zmm.ErrInvalidPointer,
// zmm.ErrDoubleFree, zmm.ErrWrongHeap). zmm.Try turns them into errors.
//
// # Alignment
//
// Arrow wants 64-byte aligned buffers. On a normal heap (chunk mode, debug
// off) the Allocator rounds each request up to a multiple of 64: zmm serves
// those sizes from bins whose blocks are 64-byte aligned (every bin of a
// multiple of 64 bytes, up to 3072), from 4 KiB aligned page runs or from
// 2 MiB aligned huge blocks, so the block itself is aligned and nothing is
// added. A debug heap puts a 32-byte record before each block, and system
// and guard heaps (zmm.ModeSystem, zmm.ModeGuard) align blocks to 8 bytes
// only; there the Allocator asks for 64 bytes more, returns the first
// 64-byte aligned address at least 8 bytes into the block, and keeps the
// distance to the block's start in the 8 bytes before it, with a check word
// that lets Free and Reallocate reject a slice they did not hand out. On a
// guard heap a buffer whose size is a multiple of 64 (every buffer Arrow's
// memory.Buffer asks for) ends right against the guard page, so a write
// past it faults at once.
package zmmarrow

import (
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gozmm/zmm/zmm"
)

// Debug heaps name the program's line as a buffer's allocation site, not
// this adapter's nor Arrow's buffer and builder code in between.
func init() {
	for _, pkg := range []string{
		"github.com/gozmm/zmm/zmmarrow",
		"github.com/apache/arrow-go/v18/arrow/memory",
		"github.com/apache/arrow-go/v18/arrow/array",
		"github.com/apache/arrow-go/v18/arrow/ipc",
	} {
		zmm.MarkHelperPackage(pkg)
	}
}

// Alignment is the alignment, in bytes, of every buffer an Allocator hands
// out (Arrow's memory alignment).
const Alignment = 64

// Overhead is what an Allocator over a debug, system or guard heap asks
// zmm for beyond each buffer (room for the buffer's 64-byte alignment and a
// header): a block in such a heap's leak report or Leaks is Overhead bytes
// longer than the Arrow buffer in it. Over a normal heap the block is the
// buffer, rounded up to 64 bytes.
const Overhead = pad

const (
	// pad is what the over-allocating path adds to a request: room to move
	// the start of the buffer to the next multiple of 64 at least hdrSize
	// bytes into the block, wherever the block starts (a guard-mode block is
	// aligned only as its size allows, to end against its guard page).
	pad = Alignment + hdrSize
	// hdrSize is the header before an over-allocated buffer.
	hdrSize = 8
	// hdrMagic keys the header's check word.
	hdrMagic = 0x5a4d4d4172726f77 // "ZMMArrow"
	// maxSize is the largest request the size arithmetic takes.
	maxSize = math.MaxInt - 2*Alignment
)

// Allocator is a memory.Allocator over a zmm heap. Make one with New or
// NewLocked; the zero value is not usable.
type Allocator struct {
	h  *zmm.Heap
	s  *zmm.Shared // NewShared (h is nil then)
	mu sync.Locker // nil for New and NewShared
	// over: the heap's blocks are not 64-byte aligned (debug, system or
	// guard heap), so buffers are over-allocated and carry a header.
	over bool
}

var _ memory.Allocator = (*Allocator)(nil)

// New returns an Allocator over h without a lock, for a heap that one
// goroutine owns: every Arrow call that allocates or releases through it
// must be made on that goroutine (or under a lock the caller holds). Use
// NewLocked when Arrow may call it from several goroutines.
func New(h *zmm.Heap) *Allocator {
	if h == nil {
		panic("zmmarrow: New with a nil heap")
	}
	return &Allocator{h: h, over: h.Debug() || h.Mode() != zmm.ModeChunks}
}

// NewLocked returns an Allocator over h that holds mu around every call, so
// that Arrow may call it from any goroutine. If the heap is used other than
// through this Allocator, pass the lock that serializes those uses too
// (every use of h must hold it); a nil mu gives the Allocator a mutex of its
// own.
func NewLocked(h *zmm.Heap, mu sync.Locker) *Allocator {
	a := New(h)
	if mu == nil {
		mu = new(sync.Mutex)
	}
	a.mu = mu
	return a
}

// NewShared returns an Allocator over a shared allocator, which any
// goroutine may call without a lock. Its blocks are 64-byte aligned at the
// sizes this package asks for, as a normal heap's are; over a debug,
// system or guard allocator (a serial one) buffers carry Overhead bytes,
// as over such a heap, and leaks are reported at Arrow's caller.
func NewShared(s *zmm.Shared) *Allocator {
	if s == nil {
		panic("zmmarrow: NewShared with a nil allocator")
	}
	return &Allocator{s: s, over: s.Debug() || s.Mode() != zmm.ModeChunks}
}

// Heap returns the heap the Allocator allocates from (nil for NewShared).
func (a *Allocator) Heap() *zmm.Heap { return a.h }

// Shared returns the shared allocator the Allocator allocates from (nil
// unless made by NewShared).
func (a *Allocator) Shared() *zmm.Shared { return a.s }

// Allocate returns a zeroed, 64-byte aligned slice of length and capacity
// size in the heap. Allocate(0) returns a non-nil empty slice that owns no
// block. A negative size panics with a *zmm.Error (zmm.ErrOverflow), as does
// every allocation the heap cannot serve.
func (a *Allocator) Allocate(size int) []byte {
	if size <= 0 {
		return a.empty("Allocate", size)
	}
	b := a.alloc(size)
	clear(b) // outside the lock: the buffer is the caller's already
	return b
}

// Reallocate resizes b, a slice Allocate or Reallocate returned, to size
// bytes and returns it, moved if need be: the bytes up to the smaller of
// cap(b) and size are kept, the rest are zeroed, and the result is 64-byte
// aligned with length and capacity size. b must not be used afterwards.
// An empty b (capacity 0) is allocated anew; size 0 frees b and returns an
// empty slice.
func (a *Allocator) Reallocate(size int, b []byte) []byte {
	if size <= 0 {
		a.empty("Reallocate", size)
		a.Free(b)
		return emptyBuf
	}
	if cap(b) == 0 {
		return a.Allocate(size)
	}
	if size == cap(b) {
		return b[:size]
	}
	keep := min(cap(b), size)
	out := a.realloc(size, b, keep)
	clear(out[keep:])
	return out
}

// Free gives back the block of b, a slice Allocate or Reallocate returned.
// A slice of capacity 0 (nil, or what Allocate(0) returned) owns no block
// and is ignored. A slice the heap did not hand out, or one already freed,
// panics with a *zmm.Error.
func (a *Allocator) Free(b []byte) {
	if cap(b) == 0 {
		return
	}
	if a.mu != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if a.over {
		p, _ = a.header(p, "Free")
	}
	if a.s != nil {
		a.s.Free(p)
		return
	}
	a.h.Free(p)
}

// emptyBuf is what Allocate(0) returns: non-nil, empty, 64-byte aligned.
// It points into a Go global, never at a block, and nothing can be written
// through it.
var emptyBuf = func() []byte {
	p := unsafe.Pointer(&emptyBacking[0])
	p = unsafe.Add(p, (Alignment-uintptr(p)%Alignment)%Alignment)
	return unsafe.Slice((*byte)(p), 0)
}()

var emptyBacking [2 * Alignment]byte

// empty returns emptyBuf for size 0 and panics for a negative size.
func (a *Allocator) empty(op string, size int) []byte {
	if size < 0 {
		panic(&zmm.Error{Kind: zmm.ErrOverflow, Op: op,
			Msg: fmt.Sprintf("zmmarrow: %s(%d): negative size", op, size)})
	}
	return emptyBuf
}

// checkSize panics if size is too large for the size arithmetic.
func checkSize(op string, size int) {
	if size > maxSize {
		panic(&zmm.Error{Kind: zmm.ErrOverflow, Op: op,
			Msg: fmt.Sprintf("zmmarrow: %s(%d): size too large", op, size)})
	}
}

// roundUp returns size rounded up to a multiple of Alignment.
func roundUp(size int) uintptr {
	return (uintptr(size) + Alignment - 1) &^ (Alignment - 1)
}

// alloc returns an aligned, not zeroed, buffer of size > 0 bytes.
func (a *Allocator) alloc(size int) []byte {
	checkSize("Allocate", size)
	if a.mu != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
	}
	if a.over {
		p := a.blockAlloc(uintptr(size) + pad)
		return unsafe.Slice((*byte)(place(p)), size)
	}
	p := a.blockAlloc(roundUp(size))
	checkAligned(p, "Allocate")
	return unsafe.Slice((*byte)(p), size)
}

// realloc resizes the buffer b to size bytes, keeping its first keep
// bytes, and returns it, not zeroed beyond them.
func (a *Allocator) realloc(size int, b []byte, keep int) []byte {
	checkSize("Reallocate", size)
	if a.mu != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
	}
	if !a.over {
		// On a normal heap the block is the buffer.
		p := a.blockRealloc(unsafe.Pointer(unsafe.SliceData(b)), roundUp(size))
		checkAligned(p, "Reallocate")
		return unsafe.Slice((*byte)(p), size)
	}
	// h.Realloc keeps the block's bytes, so the buffer's first keep bytes
	// are at the old distance from the new block's start; they move if the
	// new block needs another distance.
	p, off := a.header(unsafe.Pointer(unsafe.SliceData(b)), "Reallocate")
	q := a.blockRealloc(p, uintptr(size)+pad)
	buf := unsafe.Add(q, offset(q))
	if moved := unsafe.Add(q, off); moved != buf {
		// Before the header is written: it may lie in the bytes that move.
		copy(unsafe.Slice((*byte)(buf), keep), unsafe.Slice((*byte)(moved), keep))
	}
	writeHeader(buf, uintptr(buf)-uintptr(q))
	return unsafe.Slice((*byte)(buf), size)
}

// blockAlloc and blockRealloc call the allocator's backend: the shared
// allocator, or the heap (under the lock the caller took, if any).
func (a *Allocator) blockAlloc(n uintptr) unsafe.Pointer {
	if a.s != nil {
		return a.s.Alloc(n)
	}
	return a.h.Alloc(n)
}

func (a *Allocator) blockRealloc(p unsafe.Pointer, n uintptr) unsafe.Pointer {
	if a.s != nil {
		return a.s.Realloc(p, n)
	}
	return a.h.Realloc(p, n)
}

// checkAligned panics if a normal heap's block is not 64-byte aligned,
// which would mean zmm's size classes changed under this package.
func checkAligned(p unsafe.Pointer, op string) {
	if uintptr(p)%Alignment != 0 {
		panic(fmt.Sprintf("zmmarrow: %s: zmm returned block %p, which is not %d-byte aligned", op, p, Alignment))
	}
}

// place returns the buffer of the over-allocated block p and writes its
// header.
func place(p unsafe.Pointer) unsafe.Pointer {
	off := offset(p)
	buf := unsafe.Add(p, off)
	writeHeader(buf, off)
	return buf
}

// offset returns where the buffer of the over-allocated block p starts:
// the last 64-byte aligned address that leaves the buffer inside the block
// (p + pad is where it would end the block), between hdrSize + 1 and pad
// bytes in, wherever p is. Taking the last one puts a buffer whose size is
// a multiple of 64 right against the end of its block: in guard mode,
// against the guard page. (The header before it is 8-byte aligned.)
func offset(p unsafe.Pointer) uintptr {
	return (uintptr(p)+pad)&^(Alignment-1) - uintptr(p)
}

// writeHeader writes the header of the buffer at buf, off bytes into its
// block.
func writeHeader(buf unsafe.Pointer, off uintptr) {
	*(*uint64)(unsafe.Add(buf, -hdrSize)) = checkWord(buf) | uint64(off)
}

// checkWord is the header of the buffer at buf without its offset byte.
func checkWord(buf unsafe.Pointer) uint64 {
	return (uint64(uintptr(buf)) ^ hdrMagic) &^ 0xff
}

// header returns the block and offset of the over-allocated buffer at buf,
// or panics with a *zmm.Error if buf is not one.
func (a *Allocator) header(buf unsafe.Pointer, op string) (unsafe.Pointer, uintptr) {
	if uintptr(buf)%Alignment == 0 {
		if w, ok := readHeader(buf); ok && w&^0xff == checkWord(buf) {
			if off := uintptr(w & 0xff); off >= hdrSize && off <= pad {
				return unsafe.Add(buf, -int(off)), off
			}
		}
	}
	panic(&zmm.Error{Kind: zmm.ErrInvalidPointer, Op: op, Ptr: uintptr(buf),
		Msg: fmt.Sprintf("zmmarrow: %s(%p): invalid pointer: not a live buffer of this heap "+
			"(a slice it did not hand out, one resliced from its start, or one already freed)", op, buf)})
}

// readHeader reads the 8 bytes before buf. buf may be anything a caller
// passed to Free: a fault (the page before it unmapped, a guard block freed
// already) is reported as !ok instead of crashing the program.
//
//go:nocheckptr
func readHeader(buf unsafe.Pointer) (w uint64, ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			w, ok = 0, false
		}
	}()
	return *(*uint64)(unsafe.Add(buf, -hdrSize)), true
}
