package fuzz

// The program decoder and the heap model shared by FuzzOps and
// FuzzDebugOverflow. Every top-level name here starts with "ops" or "model"
// (or is a Test function) so that it cannot clash with the helpers of the
// other fuzz targets of this package.
//
// A program is a byte string read front to back. Every byte string decodes
// to a valid program: a missing byte reads as 0 and the program ends when
// the bytes do, or after opsMaxSteps operations. An operation is an opcode
// byte (its low nibble picks the operation, the high nibble a variant)
// followed by its arguments:
//
//	size   3 bytes, see opsDecodeSize
//	idx    1 byte: a live block, counted in allocation order, modulo their number
//	e      1 byte: element size, string variant, or an overflow probe
//
//	0-2 Alloc size          3 Calloc size e        4-5 Free idx
//	6-8 Realloc idx size    9 SafeAlloc size e     10 Strdup/Strndup size e
//	11 BlockSize idx        12 Realloc(nil) size   13 misc (see opsMisc*)
//	14 SetLimit l           15 Resize idx d: Realloc to a size near the block's own
//
// The model knows every live block (address, requested and class size, a
// fill pattern), Usage and PeakUsage, the heap's huge table and huge cache,
// and the limit; RealUsage is read from the heap before an operation and
// the outcome is checked against it (see opsRun.pre and opsRun.settle).

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/zmm"
)

const (
	// opsMaxSteps caps a program's length.
	opsMaxSteps = 200
	// opsMaxLive caps the model's Usage: a request that would pass it is
	// turned into a small one.
	opsMaxLive = 64 << 20
	// opsMaxHuge is the largest request a program makes.
	opsMaxHuge = 8 << 20
	// opsMinHuge is the smallest request served by a huge block.
	opsMinHuge = zmm.MaxLargeSize + 1
	// opsMaxPages is the longest page run.
	opsMaxPages = zmm.MaxLargeSize / chunk.PageSize
	// opsNear: when the limit is less than this above RealUsage, an
	// allocation may meet it, and the model reads Stats before it.
	opsNear = 32 << 20

	modelMinSlot = 16
	modelMul     = 0xD6E8FEB86659FD93
	// Blocks of up to modelDense bytes hold the pattern over every byte;
	// larger ones in their first and last modelEdge bytes and one word
	// every 4 KiB (large) or 64 KiB (huge).
	modelDense          = 16 << 10
	modelEdge           = 256
	modelHugeCacheSlots = 32
	// modelHugeReuseSlack: a cached mapping whose slack is at most 1/4 of
	// it is handed out whole.
	modelHugeReuseSlack = 4
	modelHugeCacheBytes = 64 << 20
)

// Opcodes (the low nibble of the opcode byte).
const (
	opsAlloc      = 0 // 0..2
	opsCalloc     = 3
	opsFree       = 4 // 4..5
	opsRealloc    = 6 // 6..8
	opsSafeAlloc  = 9
	opsStrdup     = 10
	opsBlockSize  = 11
	opsReallocNil = 12
	opsMisc       = 13
	opsSetLimit   = 14
	opsResize     = 15
)

// Variants of opsMisc (the high nibble): 0-3 GC, 4-5 Reset, 6-7
// ResetPeak, 8-9 Check, 10-15 Corrupt idx pos val (a debug heap; Check on
// a normal heap, which reads and ignores the three bytes).
const (
	opsMiscGC        = opsMisc | 0<<4
	opsMiscReset     = opsMisc | 4<<4
	opsMiscResetPeak = opsMisc | 6<<4
	opsMiscCheck     = opsMisc | 8<<4
	opsMiscHandlers  = opsMisc | 9<<4
	opsMiscCorrupt   = opsMisc | 10<<4
)

// Special values of the e byte (overflow probes) and of SetLimit's l.
const (
	opsEOverflow        = 255 // Calloc, SafeAlloc: n*size wraps
	opsEAllocOverflow   = 254 // SafeAlloc: Alloc(MaxUint64-1)
	opsEReallocOverflow = 253 // SafeAlloc: Realloc(first block, MaxUint64-1)

	opsLimitUnlimited = 255
	opsLimitLowest    = 254 // RealUsage minus the cached memory: accepted
	opsLimitTooLow    = 253 // one byte below that: refused
	opsLimitNoChunk   = 252 // RealUsage + 2 MiB - 1: no new chunk fits
	opsLimitStep      = 32 << 10
)

var opsElems = [8]uintptr{1, 2, 3, 4, 8, 12, 24, 100}

var opsLargeEdges = [...]uintptr{
	bins.MaxSize + 1, chunk.PageSize - 1, chunk.PageSize, chunk.PageSize + 1,
	2*chunk.PageSize - 1, 2 * chunk.PageSize, 2*chunk.PageSize + 1,
	zmm.MaxLargeSize - chunk.PageSize, zmm.MaxLargeSize - chunk.PageSize + 1,
	zmm.MaxLargeSize - 1, zmm.MaxLargeSize,
}

var opsHugeEdges = [...]uintptr{
	zmm.MaxLargeSize + 1, chunk.Size - 1, chunk.Size, chunk.Size + 1,
	2*chunk.Size - 1, 2 * chunk.Size, 2*chunk.Size + 1, opsMaxHuge, 1 << 20,
}

// opsDecodeSize turns a 3-byte size selector into a request:
//
//	s0%8 0-3: small: bins.Size[s1%30] + s2%3 - 1
//	s0%8 4:   tiny: s1%17 (0..16)
//	s0%8 5-6: large, by m = s0>>3: m<4 an edge (opsLargeEdges[s1%11]);
//	          else 1+s1%8 pages (m<24), 1+s1%64 pages (m<30) or
//	          1+(s1<<1|s2&1)%255 pages, the last page holding s2*16+1
//	          bytes (4096 if s2 is 255); at least 3073
//	s0%8 7:   huge, by m = s0>>3: m<6 an edge (opsHugeEdges[s1%9]);
//	          else MaxLargeSize+1 + x (m<20) or + x*112 (up to 8 MiB),
//	          x = s1<<8|s2
func opsDecodeSize(s0, s1, s2 byte) uintptr {
	switch s0 % 8 {
	case 0, 1, 2, 3:
		return uintptr(bins.Size[s1%bins.NumBins]) + uintptr(s2%3) - 1
	case 4:
		return uintptr(s1 % 17)
	case 5, 6:
		m := s0 >> 3
		if m < 4 {
			return opsLargeEdges[int(s1)%len(opsLargeEdges)]
		}
		var pages uintptr
		switch {
		case m < 24:
			pages = 1 + uintptr(s1%8)
		case m < 30:
			pages = 1 + uintptr(s1%64)
		default:
			pages = 1 + (uintptr(s1)<<1|uintptr(s2&1))%opsMaxPages
		}
		last := uintptr(s2)*16 + 1
		if s2 == 255 {
			last = chunk.PageSize
		}
		return max((pages-1)*chunk.PageSize+last, bins.MaxSize+1)
	}
	m := s0 >> 3
	x := uintptr(s1)<<8 | uintptr(s2)
	switch {
	case m < 6:
		return opsHugeEdges[int(s1)%len(opsHugeEdges)]
	case m < 20:
		return opsMinHuge + x
	}
	return min(opsMinHuge+x*112, opsMaxHuge)
}

// Size selectors for building programs (the inverse of opsDecodeSize).

func opsSmall(bin int, d int) [3]byte { return [3]byte{0, byte(bin), byte(d + 1)} }
func opsTiny(n int) [3]byte           { return [3]byte{4, byte(n), 0} }
func opsLargeEdge(i int) [3]byte      { return [3]byte{5, byte(i), 0} }
func opsHugeEdge(i int) [3]byte       { return [3]byte{7, byte(i), 0} }

// opsLarge selects pages pages, the last holding last*16+1 bytes (255: all).
func opsLarge(pages int, last byte) [3]byte {
	switch {
	case pages <= 8:
		return [3]byte{5 | 4<<3, byte(pages - 1), last}
	case pages <= 64:
		return [3]byte{5 | 24<<3, byte(pages - 1), last}
	}
	return [3]byte{5 | 30<<3, byte((pages - 1) >> 1), last&^1 | byte((pages-1)&1)}
}

// opsHugeNear selects MaxLargeSize+1+x; opsHugeFar MaxLargeSize+1+x*112.
func opsHugeNear(x uint16) [3]byte { return [3]byte{7 | 6<<3, byte(x >> 8), byte(x)} }
func opsHugeFar(x uint16) [3]byte  { return [3]byte{7 | 20<<3, byte(x >> 8), byte(x)} }

// opsHugeMiB selects about mib MiB (within 112 bytes; mib in 1..8).
func opsHugeMiB(mib float64) [3]byte {
	return opsHugeFar(uint16((uintptr(mib*(1<<20)) - opsMinHuge) / 112))
}

// modelClass is the class size of an internal request: the bin size
// (requests below 16 bytes get 16), whole 4 KiB pages, whole OS pages.
func modelClass(x uintptr) uintptr {
	switch {
	case x <= bins.MaxSize:
		x = max(x, modelMinSlot)
		for _, s := range bins.Size[:bins.NumBins] {
			if uintptr(s) >= x {
				return uintptr(s)
			}
		}
		panic("unreachable")
	case x <= zmm.MaxLargeSize:
		return (x + chunk.PageSize - 1) &^ (chunk.PageSize - 1)
	}
	ps := chunk.OSPageSize()
	return (x + ps - 1) &^ (ps - 1)
}

// modelBin is the bin of a small class size.
func modelBin(class uintptr) int {
	return slices.Index(bins.Size[:bins.NumBins], uint32(class))
}

const (
	modelSmall = iota
	modelLarge
	modelHuge
)

var modelKindNames = [...]string{"small", "large", "huge"}

func modelKind(class uintptr) int {
	switch {
	case class <= bins.MaxSize:
		return modelSmall
	case class <= zmm.MaxLargeSize:
		return modelLarge
	}
	return modelHuge
}

// modelAlign is the alignment of the start of a block of class size class.
func modelAlign(class uintptr) uintptr {
	switch modelKind(class) {
	case modelSmall:
		if class%16 == 0 {
			return 16
		}
		return 8
	case modelLarge:
		return chunk.PageSize
	}
	return chunk.Size
}

// modelOver mirrors heapState.overLimit: mapping need bytes more would
// pass the limit.
func modelOver(ru, limit, need uintptr) bool { return ru > limit || need > limit-ru }

// The fill pattern of block id: byte o of the block is byte o%8 of the
// little-endian word modelBase(id) + (o/8)*modelMul. Words are distinct
// within a block and between blocks, so a block that shows another block's
// bytes, or its own at another offset, fails.

func modelBase(id uint64) uint64 {
	x := (id + 1) * 0x9E3779B97F4A7C15
	return x ^ x>>31
}

func modelByte(base uint64, o uintptr) byte {
	return byte((base + uint64(o/8)*modelMul) >> (8 * (o % 8)))
}

// modelFillRange writes the pattern of id over bytes [from, to) of p.
func modelFillRange(p unsafe.Pointer, from, to uintptr, id uint64) {
	base := modelBase(id)
	o := from
	for ; o < to && o%8 != 0; o++ {
		*(*byte)(unsafe.Add(p, o)) = modelByte(base, o)
	}
	for ; o+8 <= to; o += 8 {
		*(*uint64)(unsafe.Add(p, o)) = base + uint64(o/8)*modelMul
	}
	for ; o < to; o++ {
		*(*byte)(unsafe.Add(p, o)) = modelByte(base, o)
	}
}

// modelCheckRange returns the first offset in [from, to) of p that does
// not hold the pattern of id, or to.
func modelCheckRange(p unsafe.Pointer, from, to uintptr, id uint64) uintptr {
	base := modelBase(id)
	o := from
	for ; o < to && o%8 != 0; o++ {
		if *(*byte)(unsafe.Add(p, o)) != modelByte(base, o) {
			return o
		}
	}
	for ; o+8 <= to; o += 8 {
		if *(*uint64)(unsafe.Add(p, o)) != base+uint64(o/8)*modelMul {
			for ; *(*byte)(unsafe.Add(p, o)) == modelByte(base, o); o++ {
			}
			return o
		}
	}
	for ; o < to; o++ {
		if *(*byte)(unsafe.Add(p, o)) != modelByte(base, o) {
			return o
		}
	}
	return to
}

// modelRegions calls f for each byte range of a block of n requested
// bytes that holds the pattern, until f returns false.
func modelRegions(n uintptr, f func(from, to uintptr) bool) bool {
	step := uintptr(64 << 10)
	switch {
	case n <= modelDense:
		return f(0, n)
	case n <= zmm.MaxLargeSize:
		step = chunk.PageSize
	}
	if !f(0, modelEdge) {
		return false
	}
	for off := step; off+8 <= n-modelEdge; off += step {
		if !f(off, off+8) {
			return false
		}
	}
	return f(n-modelEdge, n)
}

func modelFill(p unsafe.Pointer, n uintptr, id uint64) {
	modelRegions(n, func(from, to uintptr) bool { modelFillRange(p, from, to, id); return true })
}

// modelCheck returns the first offset below keep, among the pattern
// regions of a block of n bytes, that does not hold the pattern, or keep.
func modelCheck(p unsafe.Pointer, n, keep uintptr, id uint64) uintptr {
	bad := keep
	modelRegions(n, func(from, to uintptr) bool {
		to = min(to, keep)
		if from >= to {
			return true
		}
		if off := modelCheckRange(p, from, to, id); off != to {
			bad = off
			return false
		}
		return true
	})
	return bad
}

// modelZero returns the first non-zero offset among the pattern regions
// of a block of n bytes, or n.
func modelZero(p unsafe.Pointer, n uintptr) uintptr {
	bad := n
	modelRegions(n, func(from, to uintptr) bool {
		for o := from; o < to; o++ {
			if *(*byte)(unsafe.Add(p, o)) != 0 {
				bad = o
				return false
			}
		}
		return true
	})
	return bad
}

// modelRetire mirrors retireHuge on a copy of the huge cache: it returns
// the new cache and the bytes unmapped.
func modelRetire(cache []uintptr, size uintptr) ([]uintptr, uintptr) {
	cache = slices.Clone(cache)
	if size > modelHugeCacheBytes {
		return cache, size
	}
	var unmapped uintptr
	for len(cache) == modelHugeCacheSlots || modelSum(cache)+size > modelHugeCacheBytes {
		unmapped += cache[0]
		cache = cache[1:]
	}
	return append(cache, size), unmapped
}

func modelSum(cache []uintptr) uintptr {
	var n uintptr
	for _, c := range cache {
		n += c
	}
	return n
}

// opsStrBuf is what Strdup copies from: deterministic random bytes.
var opsStrBuf = sync.OnceValue(func() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, opsMaxHuge+512)
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
})

// opsBlock is a live block of the model.
type opsBlock struct {
	p     unsafe.Pointer // the pointer the heap returned
	start uintptr        // the block's first byte (p minus the debug record)
	req   uintptr        // the size asked for
	class uintptr        // its class size (of req plus the debug overhead)
	kind  int            // modelKind(class), or modelLarge for a page run grown past MaxLargeSize
	id    uint64         // its fill pattern
	bad   *opsDamage     // debug: a corruption injected and not yet reported
}

// opsDamage is a byte of a debug block's guards that the program changed.
type opsDamage struct {
	off  int  // from the user pointer: -8..-1 (head guard) or req..req+7 (tail)
	orig byte // the byte's value before
}

func (d *opsDamage) where() string {
	if d.off < 0 {
		return "head"
	}
	return "tail"
}

// opsHits counts what the programs did, for TestSeedsReachEverything.
type opsHits struct {
	bins        [bins.NumBins]int
	large, huge int
	paths       map[string]int // realloc paths
	events      map[string]int // limits, detections, ...
}

func opsNewHits() *opsHits {
	return &opsHits{paths: map[string]int{}, events: map[string]int{}}
}

// opsPre is what the model knows of the heap before an operation.
type opsPre struct {
	ru, limit uintptr
	// near: the limit may stop an allocation; the fields below are set.
	near                             bool
	chunks, peakChunks, cachedChunks int
	cachedHugeBytes                  uintptr
	gcDrop                           uintptr // what gc(false) unmaps
	emptyChunks                      int     // live chunks gc(false) empties
}

// opsOutcome is one state the heap may be in after an operation: its
// huge cache and the RealUsage values it may show.
type opsOutcome struct {
	cache []uintptr
	ru    []uintptr
}

// opsRun runs one program on one heap and checks it against the model.
type opsRun struct {
	tb    testing.TB
	h     *zmm.Heap
	debug bool
	hdr   uintptr // debug record before the user pointer (0 or 32)
	hits  *opsHits

	data []byte
	pos  int
	step int
	op   string

	order  []*opsBlock // live blocks in allocation order: idx bytes pick here
	byAddr []*opsBlock // live blocks sorted by start
	usage  uintptr
	peak   uintptr
	nextID uint64
	limit  uintptr
	huge   []*opsBlock // the heap's huge table, in its order
	cache  []uintptr   // the heap's huge cache: mapping sizes, oldest first
	avg    float64     // the heap's running average of chunks per request
	main   uintptr     // the main chunk
	// calls counts the calls the passthrough handlers served since they
	// were installed by toggleHandlers; -1 when none are installed.
	calls int
}

// opsExec decodes data into a program and runs it on a new heap (a debug
// heap if dbg), checking every step against the model. hits, if not nil,
// counts what the program reached.
func opsExec(tb testing.TB, data []byte, dbg bool, hits *opsHits) {
	h, err := zmm.New(zmm.WithDebug(dbg), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(nil))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	defer h.Close()
	r := &opsRun{tb: tb, h: h, debug: dbg, hits: hits, data: data, limit: zmm.Unlimited, avg: 1}
	if dbg {
		r.hdr = debugheader.Size
	}
	defer func() {
		if e := recover(); e != nil {
			tb.Fatalf("%s: unexpected panic: %v\n%s", r.where(), e, debug.Stack())
		}
	}()
	// The first block of a new heap is in its main chunk.
	p := h.Alloc(modelMinSlot)
	r.main = (uintptr(p) - r.hdr) &^ (chunk.Size - 1)
	h.Free(p)
	h.ResetPeak()
	r.calls = -1
	for r.step = 0; r.step < opsMaxSteps && r.pos < len(data); r.step++ {
		calls := r.calls
		r.one()
		r.checkCounters()
		switch r.op {
		case "Alloc", "Calloc", "Strdup", "Realloc(nil)":
			if calls >= 0 && r.calls == calls {
				r.failf("the custom handlers did not see the call")
			}
		}
	}
	r.op = "end"
	r.verifyAll("at the end")
}

func (r *opsRun) where() string {
	mode := "normal"
	if r.debug {
		mode = "debug"
	}
	return fmt.Sprintf("%s heap, step %d (%s), byte %d", mode, r.step, r.op, r.pos)
}

func (r *opsRun) failf(format string, args ...any) {
	r.tb.Helper()
	r.tb.Fatalf("%s: %s", r.where(), fmt.Sprintf(format, args...))
}

func (r *opsRun) event(name string) {
	if r.hits != nil {
		r.hits.events[name]++
	}
}

func (r *opsRun) byte() byte {
	if r.pos >= len(r.data) {
		r.pos++
		return 0
	}
	b := r.data[r.pos]
	r.pos++
	return b
}

func (r *opsRun) size() uintptr {
	s0, s1, s2 := r.byte(), r.byte(), r.byte()
	return opsDecodeSize(s0, s1, s2)
}

// pick returns the live block idx selects, or nil if there is none.
func (r *opsRun) pick(idx byte) *opsBlock {
	if len(r.order) == 0 {
		return nil
	}
	return r.order[int(idx)%len(r.order)]
}

func (r *opsRun) internal(req uintptr) uintptr {
	if r.debug {
		return req + debugheader.Overhead
	}
	return req
}

func (r *opsRun) classOf(req uintptr) uintptr { return modelClass(r.internal(req)) }

// blockSize is what BlockSize must say: the class size, or in debug mode
// the requested size.
func (r *opsRun) blockSize(b *opsBlock) uintptr {
	if r.debug {
		return b.req
	}
	return b.class
}

// capSize keeps the model's Usage under opsMaxLive: a request that would
// pass it (after freeing freed bytes) becomes a small one.
func (r *opsRun) capSize(size, freed uintptr) uintptr {
	if r.usage-freed+r.classOf(size) > opsMaxLive {
		return size % (bins.MaxSize - 64)
	}
	return size
}

// tried is what a limit message names for a request of class size class
// served from pages: the bin's run or the run of whole pages.
func (r *opsRun) tried(class uintptr) uintptr {
	if modelKind(class) == modelSmall {
		return uintptr(bins.Pages[modelBin(class)]) * chunk.PageSize
	}
	return class
}

// one decodes and runs one operation.
func (r *opsRun) one() {
	h := r.h
	code := r.byte()
	switch code % 16 {
	case 0, 1, 2:
		r.op = "Alloc"
		size := r.capSize(r.size(), 0)
		if b := r.allocOp(size, func() unsafe.Pointer { return h.Alloc(size) }); b != nil {
			modelFill(b.p, b.req, b.id)
		}
	case opsCalloc:
		r.op = "Calloc"
		size, e := r.capSize(r.size(), 0), r.byte()
		if e == opsEOverflow {
			r.op = "Calloc overflow"
			r.expectOverflow(func() { h.Calloc(^uintptr(0)/2+1, 2) })
			return
		}
		elem := opsElems[e%8]
		n := (size + elem - 1) / elem
		if b := r.allocOp(n*elem, func() unsafe.Pointer { return h.Calloc(n, elem) }); b != nil {
			if off := modelZero(b.p, b.req); off != b.req {
				r.failf("Calloc(%d, %d) = %p: byte %d is not zero", n, elem, b.p, off)
			}
			modelFill(b.p, b.req, b.id)
		}
	case 4, 5:
		r.op = "Free"
		b := r.pick(r.byte())
		if b == nil {
			h.Free(nil)
			return
		}
		r.freeOp(b)
	case 6, 7, 8:
		r.op = "Realloc"
		b, size := r.pick(r.byte()), r.size()
		if b == nil {
			r.op = "Realloc(nil)"
			r.reallocNil(r.capSize(size, 0))
			return
		}
		r.reallocOp(b, r.capSize(size, b.class))
	case opsSafeAlloc:
		r.op = "SafeAlloc"
		size, e := r.capSize(r.size(), 0), r.byte()
		switch e {
		case opsEOverflow:
			r.op = "SafeAlloc overflow"
			r.expectOverflow(func() { h.SafeAlloc(1<<33, 1<<31, 0) })
			return
		case opsEAllocOverflow:
			r.op = "Alloc overflow"
			r.expectOverflow(func() { h.Alloc(^uintptr(0) - 1) })
			return
		case opsEReallocOverflow:
			r.op = "Realloc overflow"
			for _, b := range r.order {
				if b.bad == nil {
					r.expectOverflow(func() { h.Realloc(b.p, ^uintptr(0)-1) })
					r.verify(b, "after a Realloc that overflowed")
					return
				}
			}
			return
		}
		elem := opsElems[e%8]
		n := size / elem
		off := size - n*elem
		if b := r.allocOp(size, func() unsafe.Pointer { return h.SafeAlloc(n, elem, off) }); b != nil {
			modelFill(b.p, b.req, b.id)
		}
	case opsStrdup:
		r.op = "Strdup"
		size, e := r.capSize(r.size(), 0), r.byte()
		l := max(size, 1) - 1
		buf := opsStrBuf()
		src := unsafe.String(&buf[e], l)
		var call func() unsafe.Pointer
		switch e % 4 {
		case 1: // a longer string cut by n
			r.op = "Strndup short"
			long := unsafe.String(&buf[e], l+uintptr(e>>2))
			call = func() unsafe.Pointer { return h.Strndup(long, l) }
		case 2: // n beyond the string
			r.op = "Strndup long"
			call = func() unsafe.Pointer { return h.Strndup(src, l+uintptr(e)) }
		default:
			call = func() unsafe.Pointer { return h.Strdup(src) }
		}
		if b := r.allocOp(l+1, call); b != nil {
			got := unsafe.Slice((*byte)(b.p), l+1)
			if string(got[:l]) != src || got[l] != 0 {
				r.failf("%p does not hold the %d-byte string and its NUL", b.p, l)
			}
			modelFill(b.p, b.req, b.id)
		}
	case opsBlockSize:
		r.op = "BlockSize"
		b := r.pick(r.byte())
		if b == nil {
			return
		}
		if b.bad != nil {
			r.detect(b, "BlockSize", func() { h.BlockSize(b.p) })
		}
		r.verify(b, "BlockSize")
		if bs := h.BlockSize(b.p); bs != r.blockSize(b) {
			r.failf("BlockSize(%p) = %d, want %d (request %d)", b.p, bs, r.blockSize(b), b.req)
		}
	case opsReallocNil:
		r.op = "Realloc(nil)"
		r.reallocNil(r.capSize(r.size(), 0))
	case opsMisc:
		switch sub := code >> 4; {
		case sub < 4:
			r.op = "GC"
			r.gcOp()
		case sub < 6:
			r.op = "Reset"
			r.resetOp()
		case sub < 8:
			r.op = "ResetPeak"
			h.ResetPeak()
			r.peak = r.usage
		case sub < 9:
			r.op = "Check"
			r.checkOp()
		case sub < 10:
			r.op = "Handlers"
			r.toggleHandlers()
		default:
			idx, pos, val := r.byte(), r.byte(), r.byte()
			if !r.debug {
				r.op = "Check"
				r.checkOp()
				return
			}
			r.op = "Corrupt"
			r.corrupt(r.pick(idx), pos, val)
		}
	case opsSetLimit:
		r.op = "SetLimit"
		r.setLimitOp(r.byte())
	case opsResize:
		r.op = "Resize"
		b, d := r.pick(r.byte()), r.byte()
		if b == nil {
			return
		}
		r.reallocOp(b, r.capSize(opsResizeTo(b.req, d), b.class))
	}
}

// opsResizeTo is the new size a Resize picks for a block of req bytes: a
// small block gets 0 .. its class+1, a large one ± 64 KiB, a huge one
// ± 2 MiB, staying large or huge.
func opsResizeTo(req uintptr, d byte) uintptr {
	c := modelClass(req)
	switch modelKind(c) {
	case modelSmall:
		return uintptr(d) * (c + 1) / 255
	case modelLarge:
		return uintptr(min(max(int(req)+(int(d)-128)*512, bins.MaxSize+1), zmm.MaxLargeSize))
	}
	return uintptr(min(max(int(req)+(int(d)-128)*16384, opsMinHuge), opsMaxHuge))
}

func (r *opsRun) expectOverflow(f func()) {
	usage, ru := r.h.Usage(), r.h.RealUsage()
	err := zmm.Try(f)
	if !errors.Is(err, zmm.ErrOverflow) {
		r.failf("got %v, want ErrOverflow", err)
	}
	if r.h.Usage() != usage || r.h.RealUsage() != ru {
		r.failf("an overflowing request changed Usage %d -> %d, RealUsage %d -> %d", usage, r.h.Usage(), ru, r.h.RealUsage())
	}
	r.event("overflow")
}

// pre reads what the model needs before an allocation: RealUsage and the
// limit, and, when the limit is near (or force), the cached memory and
// what a collection would unmap.
func (r *opsRun) pre(force bool) opsPre {
	p := opsPre{ru: r.h.RealUsage(), limit: r.h.Limit()}
	if p.ru > p.limit {
		r.failf("RealUsage %d is above the limit %d", p.ru, p.limit)
	}
	p.near = p.limit-p.ru < opsNear
	if !p.near && !force {
		return p
	}
	st := r.h.Stats()
	r.checkCache(st, "before")
	if st.RealUsage != p.ru {
		r.failf("Stats().RealUsage = %d, RealUsage() = %d", st.RealUsage, p.ru)
	}
	p.chunks, p.peakChunks, p.cachedChunks = st.Chunks, st.PeakChunks, st.CachedChunks
	p.cachedHugeBytes = st.CachedHugeBytes
	// gc(false) unmaps the cached chunks and huge mappings, and every
	// chunk but the main one that holds no live block: its bin runs are
	// all free, and go back to it.
	used := map[uintptr]bool{}
	for _, b := range r.order {
		if b.kind != modelHuge {
			if c := b.start &^ (chunk.Size - 1); c != r.main {
				used[c] = true
			}
		}
	}
	p.emptyChunks = st.Chunks - 1 - len(used)
	if p.emptyChunks < 0 {
		r.failf("Stats says %d live chunks, but live blocks are in %d chunks besides the main one", st.Chunks, len(used))
	}
	p.gcDrop = uintptr(st.CachedChunks+p.emptyChunks)*chunk.Size + st.CachedHugeBytes
	return p
}

// checkCache compares the model's huge cache with the heap's.
func (r *opsRun) checkCache(st zmm.Stats, when string) {
	if st.CachedHuge != len(r.cache) || st.CachedHugeBytes != modelSum(r.cache) {
		r.failf("%s: the huge cache holds %d mappings of %d bytes, model %d of %d (%v)",
			when, st.CachedHuge, st.CachedHugeBytes, len(r.cache), modelSum(r.cache), r.cache)
	}
}

// opsHugePlan is the model's prediction for mapping a huge block.
type opsHugePlan struct {
	ok, gc bool
	ru     uintptr
	cache  []uintptr
	class  uintptr // the block's size: need, or a cached mapping handed out whole
	reuse  string  // "whole" or "trimmed" when a cached mapping serves it
}

// planHuge predicts a huge mapping of need bytes: taken from the cache if
// fromCache and a cached mapping is large enough (the smallest such, the
// newest among equals, whole if its slack is at most a quarter of it,
// else trimmed), else mapped if it fits under the limit, else mapped if it
// fits after the collection, else refused (takeCachedHuge, reserve).
func (r *opsRun) planHuge(p opsPre, need uintptr, fromCache bool) opsHugePlan {
	if fromCache {
		best := -1
		for i, c := range r.cache {
			if c >= need && (best < 0 || c <= r.cache[best]) {
				best = i
			}
		}
		if best >= 0 {
			c := r.cache[best]
			rest := slices.Delete(slices.Clone(r.cache), best, best+1)
			if c-need <= c/modelHugeReuseSlack {
				return opsHugePlan{ok: true, ru: p.ru, cache: rest, class: c, reuse: "whole"}
			}
			return opsHugePlan{ok: true, ru: p.ru - (c - need), cache: rest, class: need, reuse: "trimmed"}
		}
	}
	if !modelOver(p.ru, p.limit, need) {
		return opsHugePlan{ok: true, ru: p.ru + need, cache: r.cache, class: need}
	}
	if !p.near {
		r.failf("internal: %d bytes do not fit under the limit %d with RealUsage %d, yet the limit is far", need, p.limit, p.ru)
	}
	ru := p.ru - p.gcDrop
	if modelOver(ru, p.limit, need) {
		return opsHugePlan{gc: true, ru: ru}
	}
	return opsHugePlan{ok: true, gc: true, ru: ru + need, class: need}
}

// expectLimit checks an outcome that the model predicted exactly.
func (r *opsRun) expectLimit(err error, wantOK bool, tried uintptr, p opsPre) {
	switch {
	case wantOK && err != nil:
		r.failf("failed with %v; the model says it fits (limit %d, RealUsage %d before, collection would unmap %d)", err, p.limit, p.ru, p.gcDrop)
	case !wantOK && err == nil:
		r.failf("succeeded; the model says it passes the limit %d (RealUsage %d before, %d now, collection would unmap %d)", p.limit, p.ru, r.h.RealUsage(), p.gcDrop)
	case !wantOK:
		r.checkLimitError(err, tried)
		r.event("limit: huge refused")
	}
}

// expectHuge checks a huge mapping's outcome against the plan.
func (r *opsRun) expectHuge(err error, plan opsHugePlan, tried uintptr, p opsPre) {
	r.expectLimit(err, plan.ok, tried, p)
	if plan.ok && plan.reuse != "" {
		r.event("huge cache: reused " + plan.reuse)
	}
	if plan.ok && plan.gc {
		r.event("limit: huge served after the collection")
	}
}

func (r *opsRun) checkLimitError(err error, tried uintptr) {
	var ze *zmm.Error
	if !errors.As(err, &ze) || !errors.Is(err, zmm.ErrMemoryLimit) {
		r.failf("failed with %v, want ErrMemoryLimit", err)
	}
	want := fmt.Sprintf("Allowed memory size of %d bytes exhausted (tried to allocate %d bytes)", r.limit, tried)
	if ze.Msg != want {
		r.failf("limit message %q, want %q", ze.Msg, want)
	}
}

// pageOutcomes returns what the heap may look like after serving a block
// of class size class from a bin or a page run, which may need a chunk:
// taken from the cache, or mapped, perhaps after a collection (only
// possible when nothing is cached and a chunk does not fit under the
// limit). It checks a failure: only the limit may stop it, only when no
// chunk fits even after the collection, and the collection has run.
// freeOld adds the effect of freeing the old block of a realloc.
func (r *opsRun) pageOutcomes(p opsPre, err error, class uintptr, freeOld func(opsOutcome) opsOutcome) []opsOutcome {
	if err != nil {
		r.checkLimitError(err, r.tried(class))
		if !p.near || p.cachedChunks != 0 || !modelOver(p.ru-p.gcDrop, p.limit, chunk.Size) {
			r.failf("a %d-byte block was refused, but a chunk is cached (%d) or fits after the collection (RealUsage %d, limit %d, collection unmaps %d)",
				class, p.cachedChunks, p.ru, p.limit, p.gcDrop)
		}
		r.event("limit: page refused")
		return []opsOutcome{{cache: nil, ru: []uintptr{p.ru - p.gcDrop}}}
	}
	outs := []opsOutcome{{cache: r.cache, ru: []uintptr{p.ru, p.ru + chunk.Size}}}
	if p.near && p.cachedChunks == 0 && modelOver(p.ru, p.limit, chunk.Size) {
		ru := p.ru - p.gcDrop
		outs = append(outs, opsOutcome{cache: nil, ru: []uintptr{ru, ru + chunk.Size}})
	}
	if freeOld != nil {
		for i := range outs {
			outs[i] = freeOld(outs[i])
		}
	}
	return outs
}

// freeEffect returns what freeing a block of class size class does to an
// outcome: nothing (small), maybe unmaps its chunk (large), retires the
// mapping to the cache (huge), or, on a debug heap, gives the mapping's
// memory back and keeps it out of the cache (huge: it is quarantined,
// inaccessible, so that a use after free faults).
func (r *opsRun) freeEffect(kind int, class uintptr) func(opsOutcome) opsOutcome {
	return func(o opsOutcome) opsOutcome {
		switch kind {
		case modelLarge:
			ru := slices.Clone(o.ru)
			for _, v := range o.ru {
				ru = append(ru, v-chunk.Size)
			}
			o.ru = ru
		case modelHuge:
			if !r.debug && class <= modelHugeCacheBytes {
				switch {
				case len(o.cache) == modelHugeCacheSlots:
					r.event("huge cache: evicted for a slot")
				case modelSum(o.cache)+class > modelHugeCacheBytes:
					r.event("huge cache: evicted for bytes")
				}
			}
			cache, unmapped := modelRetire(o.cache, class)
			if r.debug {
				cache, unmapped = o.cache, class
			}
			ru := make([]uintptr, len(o.ru))
			for i, v := range o.ru {
				ru[i] = v - unmapped
			}
			o.cache, o.ru = cache, ru
		}
		return o
	}
}

// settle checks the heap against the outcomes the model allows and takes
// the huge cache of the first that matches; it returns its index.
func (r *opsRun) settle(outs []opsOutcome, stats bool) int {
	for _, o := range outs[1:] {
		if !slices.Equal(o.cache, outs[0].cache) {
			stats = true
		}
	}
	ru := r.h.RealUsage()
	var st zmm.Stats
	if stats {
		st = r.h.Stats()
	}
	for i, o := range outs {
		if !slices.Contains(o.ru, ru) {
			continue
		}
		if stats && (st.CachedHuge != len(o.cache) || st.CachedHugeBytes != modelSum(o.cache)) {
			continue
		}
		r.cache = o.cache
		return i
	}
	r.failf("RealUsage %d, huge cache %d mappings of %d bytes: none of the model's outcomes %v", ru, st.CachedHuge, st.CachedHugeBytes, outs)
	return -1
}

// allocOp runs an allocation of req bytes and checks its outcome. It
// returns the new block, or nil when the limit refused it as the model
// allows; the caller fills the block.
func (r *opsRun) allocOp(req uintptr, do func() unsafe.Pointer) *opsBlock {
	p := r.pre(false)
	class := r.classOf(req)
	var q unsafe.Pointer
	err := zmm.Try(func() { q = do() })
	var outs []opsOutcome
	if modelKind(class) == modelHuge {
		plan := r.planHuge(p, class, true)
		r.expectHuge(err, plan, r.internal(req), p)
		outs = []opsOutcome{{cache: plan.cache, ru: []uintptr{plan.ru}}}
		class = plan.class
	} else {
		outs = r.pageOutcomes(p, err, class, nil)
	}
	if r.settle(outs, modelKind(class) == modelHuge || err != nil) > 0 {
		r.event("limit: page served after the collection")
	}
	if err != nil {
		r.afterFailure()
		return nil
	}
	b := r.placeKind(q, req, r.nextID, class, modelKind(class))
	r.nextID++
	r.order = append(r.order, b)
	if modelKind(class) == modelHuge {
		r.huge = append(r.huge, b)
	}
	r.peak = max(r.peak, r.usage)
	return b
}

func (r *opsRun) reallocNil(size uintptr) {
	if b := r.allocOp(size, func() unsafe.Pointer { return r.h.Realloc(nil, size) }); b != nil {
		modelFill(b.p, b.req, b.id)
		if r.hits != nil {
			r.hits.paths["Realloc(nil)"]++
		}
	}
}

// place checks a block the heap just handed out for req bytes (alignment,
// BlockSize, no overlap with a live block) and records it.
func (r *opsRun) place(p unsafe.Pointer, req uintptr, id uint64) *opsBlock {
	class := r.classOf(req)
	return r.placeKind(p, req, id, class, modelKind(class))
}

// placeKind is place for a block of a given class size and kind: a page
// run that Realloc grew in place past MaxLargeSize stays a page run.
func (r *opsRun) placeKind(p unsafe.Pointer, req uintptr, id uint64, class uintptr, kind int) *opsBlock {
	if p == nil {
		r.failf("nil block for %d bytes", req)
	}
	b := &opsBlock{p: p, start: uintptr(p) - r.hdr, req: req, class: class, kind: kind, id: id}
	a := modelAlign(class)
	if kind == modelLarge {
		a = chunk.PageSize
	}
	if b.start%a != 0 {
		r.failf("%s block %p for %d bytes starts at 0x%x, not %d-byte aligned", modelKindNames[kind], p, req, b.start, a)
	}
	if bs := r.h.BlockSize(p); bs != r.blockSize(b) {
		r.failf("BlockSize(%p) = %d for a request of %d bytes, want %d", p, bs, req, r.blockSize(b))
	}
	i, found := slices.BinarySearchFunc(r.byAddr, b.start, func(x *opsBlock, s uintptr) int {
		switch {
		case x.start < s:
			return -1
		case x.start > s:
			return 1
		}
		return 0
	})
	if found {
		r.failf("block %p for %d bytes is already live (%d bytes)", p, req, r.byAddr[i].req)
	}
	if i > 0 {
		if prev := r.byAddr[i-1]; prev.start+prev.class > b.start {
			r.failf("block [0x%x, +%d) for %d bytes overlaps the live block [0x%x, +%d)", b.start, class, req, prev.start, prev.class)
		}
	}
	if i < len(r.byAddr) {
		if next := r.byAddr[i]; b.start+class > next.start {
			r.failf("block [0x%x, +%d) for %d bytes overlaps the live block [0x%x, +%d)", b.start, class, req, next.start, next.class)
		}
	}
	r.byAddr = slices.Insert(r.byAddr, i, b)
	r.usage += class
	if r.hits != nil {
		switch kind {
		case modelSmall:
			r.hits.bins[modelBin(class)]++
		case modelLarge:
			r.hits.large++
		default:
			r.hits.huge++
		}
	}
	return b
}

// unplace drops a block from the address index and the usage.
func (r *opsRun) unplace(b *opsBlock) {
	i := slices.Index(r.byAddr, b)
	if i < 0 {
		r.failf("internal: block %p not in the address index", b.p)
	}
	r.byAddr = slices.Delete(r.byAddr, i, i+1)
	r.usage -= b.class
}

// dropHuge mirrors freeHuge's table update: the last entry takes the
// freed one's place.
func (r *opsRun) dropHuge(b *opsBlock) {
	i := slices.Index(r.huge, b)
	if i < 0 {
		r.failf("internal: huge block %p not in the huge table", b.p)
	}
	last := len(r.huge) - 1
	r.huge[i] = r.huge[last]
	r.huge = r.huge[:last]
}

func (r *opsRun) verify(b *opsBlock, what string) {
	if off := modelCheck(b.p, b.req, b.req, b.id); off != b.req {
		r.failf("%s: %s block %p (%d bytes) lost its contents at offset %d",
			what, modelKindNames[b.kind], b.p, b.req, off)
	}
}

func (r *opsRun) freeOp(b *opsBlock) {
	if b.bad != nil {
		r.detect(b, "Free", func() { r.h.Free(b.p) })
	}
	r.verify(b, "before Free")
	ru := r.h.RealUsage()
	r.h.Free(b.p)
	r.unplace(b)
	i := slices.Index(r.order, b)
	r.order = slices.Delete(r.order, i, i+1)
	outs := []opsOutcome{r.freeEffect(b.kind, b.class)(opsOutcome{cache: r.cache, ru: []uintptr{ru}})}
	if b.kind == modelHuge {
		r.dropHuge(b)
	}
	r.settle(outs, b.kind == modelHuge)
}

// reallocOp runs Realloc(b, size) and checks it: the path it must take
// (in place or not), its limit outcome, the kept contents, the statistics.
func (r *opsRun) reallocOp(b *opsBlock, size uintptr) {
	h := r.h
	if b.bad != nil {
		r.detect(b, "Realloc", func() { h.Realloc(b.p, size) })
	}
	r.verify(b, "before Realloc")
	oc, nc := b.class, r.classOf(size)
	ok, nk := b.kind, modelKind(nc)
	r.op = fmt.Sprintf("Realloc %s %d -> %s %d", modelKindNames[ok], b.req, modelKindNames[nk], size)
	p := r.pre(false)
	var q unsafe.Pointer
	err := zmm.Try(func() { q = h.Realloc(b.p, size) })
	var outs []opsOutcome
	inPlace, sameSlot := false, false
	// A page run grows in place past MaxLargeSize, up to the whole chunk,
	// when the pages after it are free; the model does not follow the
	// pages, so it takes the heap's word for it when the block stayed.
	grownRun := !r.debug && ok == modelLarge && nk == modelHuge && size <= chunk.MaxRunSize && err == nil && q == b.p
	if grownRun {
		nc, nk = (size+chunk.PageSize-1)&^(chunk.PageSize-1), modelLarge
	}
	switch {
	case grownRun:
		inPlace = true
		outs = []opsOutcome{{cache: r.cache, ru: []uintptr{p.ru}}}
	case !r.debug && ok == modelSmall && nk == modelSmall && oc == nc,
		!r.debug && ok == modelLarge && nk == modelLarge && nc <= oc:
		inPlace = true
		outs = []opsOutcome{{cache: r.cache, ru: []uintptr{p.ru}}}
	case !r.debug && ok == modelHuge && nk == modelHuge && nc <= oc:
		inPlace, sameSlot = true, true
		outs = []opsOutcome{{cache: r.cache, ru: []uintptr{p.ru - (oc - nc)}}}
	case !r.debug && ok == modelHuge && nk == modelHuge:
		// Grown in place or moved by mremap; no cached mapping is used.
		sameSlot = true
		plan := r.planHuge(p, nc-oc, false)
		r.expectHuge(err, plan, size, p)
		outs = []opsOutcome{{cache: plan.cache, ru: []uintptr{plan.ru}}}
	case nk == modelHuge:
		plan := r.planHuge(p, nc, true)
		r.expectHuge(err, plan, r.internal(size), p)
		nc = plan.class
		o := opsOutcome{cache: plan.cache, ru: []uintptr{plan.ru}}
		if err == nil {
			o = r.freeEffect(ok, oc)(o)
		}
		outs = []opsOutcome{o}
	default:
		outs = r.pageOutcomes(p, err, nc, r.freeEffect(ok, oc))
	}
	if inPlace && err != nil {
		r.failf("an in-place Realloc failed: %v", err)
	}
	if r.settle(outs, ok == modelHuge || nk == modelHuge || err != nil) > 0 {
		r.event("limit: page served after the collection")
	}
	if err != nil {
		r.verify(b, "after a failed Realloc")
		r.afterFailure()
		return
	}
	if inPlace && q != b.p {
		r.failf("Realloc(%p, %d) moved the block to %p; it must stay in place", b.p, size, q)
	}
	if r.hits != nil {
		r.hits.paths[r.path(b, q, ok, nk, oc, nc)]++
	}
	// Replace the block in the model, keeping its place in the program's
	// order and, when the heap keeps it, in the huge table.
	r.unplace(b)
	nb := r.placeKind(q, size, b.id, nc, nk)
	r.order[slices.Index(r.order, b)] = nb
	switch {
	case sameSlot:
		r.huge[slices.Index(r.huge, b)] = nb
	default:
		if nk == modelHuge {
			r.huge = append(r.huge, nb)
		}
		if ok == modelHuge {
			r.dropHuge(b)
		}
	}
	r.peak = max(r.peak, r.usage)
	keep := min(b.req, size)
	if off := modelCheck(q, b.req, keep, b.id); off != keep {
		r.failf("Realloc(%p, %d) = %p lost the contents at offset %d of %d kept bytes", b.p, size, q, off, keep)
	}
	modelFill(q, size, b.id)
}

// path names the realloc path taken.
func (r *opsRun) path(b *opsBlock, q unsafe.Pointer, ok, nk int, oc, nc uintptr) string {
	if ok == modelLarge && nk == modelLarge && nc > zmm.MaxLargeSize && oc <= zmm.MaxLargeSize {
		return "large grow past MaxLargeSize"
	}
	if ok != nk {
		return modelKindNames[ok] + "->" + modelKindNames[nk]
	}
	moved := q != b.p
	name := modelKindNames[ok]
	switch {
	case oc == nc && ok == modelSmall:
		return name + " same bin"
	case oc == nc:
		return name + " same size"
	case nc < oc && ok == modelSmall:
		return name + " shrink move"
	case nc < oc:
		return name + " shrink"
	case ok == modelSmall:
		return name + " grow"
	case ok == modelLarge && moved:
		return name + " grow moved"
	case ok == modelLarge:
		return name + " grow in place"
	}
	return name + " grow"
}

// afterFailure checks that the heap still serves small blocks after an
// allocation was refused: a small block freed is handed out again at
// once (LIFO), or, if there is none, a minimal block is served or refused
// only when no chunk fits.
func (r *opsRun) afterFailure() {
	op := r.op
	r.op = op + ", then a small block"
	defer func() { r.op = op }()
	for _, b := range r.order {
		if b.kind != modelSmall || b.bad != nil {
			continue
		}
		r.verify(b, "after a limit failure")
		r.h.Free(b.p)
		var q unsafe.Pointer
		if err := zmm.Try(func() { q = r.h.Alloc(b.req) }); err != nil {
			r.failf("after a limit failure, a %d-byte block just freed cannot be had again: %v", b.req, err)
		}
		if q != b.p {
			r.failf("after a limit failure, the %d-byte block %p just freed was not handed out again (got %p)", b.req, b.p, q)
		}
		modelFill(b.p, b.req, b.id)
		r.event("after failure: small block served")
		return
	}
	var q unsafe.Pointer
	err := zmm.Try(func() { q = r.h.Alloc(modelMinSlot) })
	if err != nil {
		r.checkLimitError(err, r.tried(r.classOf(modelMinSlot)))
		if ru := r.h.RealUsage(); !modelOver(ru, r.limit, chunk.Size) {
			r.failf("after a limit failure, a %d-byte block was refused though a chunk fits (RealUsage %d, limit %d)", modelMinSlot, ru, r.limit)
		}
		return
	}
	r.peak = max(r.peak, r.usage+r.classOf(modelMinSlot))
	r.h.Free(q)
	r.event("after failure: small block served")
}

// checkCounters runs after every step.
func (r *opsRun) checkCounters() {
	h := r.h
	if u := h.Usage(); u != r.usage {
		r.failf("Usage() = %d, model %d (%d live blocks)", u, r.usage, len(r.order))
	}
	if p := h.PeakUsage(); p != r.peak {
		r.failf("PeakUsage() = %d, model %d (usage %d)", p, r.peak, r.usage)
	}
	if l := h.Limit(); l != r.limit {
		r.failf("Limit() = %d, model %d", l, r.limit)
	}
	ru, rp := h.RealUsage(), h.RealPeakUsage()
	if ru < r.usage {
		r.failf("RealUsage() = %d is below Usage() = %d", ru, r.usage)
	}
	if ru > r.limit {
		r.failf("RealUsage() = %d is above the limit %d", ru, r.limit)
	}
	if rp < ru {
		r.failf("RealPeakUsage() = %d is below RealUsage() = %d", rp, ru)
	}
}

// verifyAll checks every live block (no overlap, contents, BlockSize), a
// heap Check (which, on a debug heap, must report exactly the blocks
// corrupted and not yet reported), and Stats against the model.
func (r *opsRun) verifyAll(what string) {
	r.checkOp()
	var used [bins.NumBins]int
	hugeN, hugeBytes := 0, uintptr(0)
	for i, b := range r.byAddr {
		if i > 0 {
			if prev := r.byAddr[i-1]; prev.start+prev.class > b.start {
				r.failf("%s: live blocks [0x%x, +%d) and [0x%x, +%d) overlap", what, prev.start, prev.class, b.start, b.class)
			}
		}
		r.verify(b, what)
		if bs := r.h.BlockSize(b.p); bs != r.blockSize(b) {
			r.failf("%s: BlockSize(%p) = %d, want %d", what, b.p, bs, r.blockSize(b))
		}
		switch b.kind {
		case modelSmall:
			used[modelBin(b.class)]++
		case modelHuge:
			hugeN++
			hugeBytes += b.class
		}
	}
	st := r.h.Stats()
	if st.Usage != r.usage || st.PeakUsage != r.peak {
		r.failf("%s: Stats usage %d peak %d, model %d %d", what, st.Usage, st.PeakUsage, r.usage, r.peak)
	}
	for b := range used {
		if st.Bins[b].Used != used[b] {
			r.failf("%s: Stats: bin %d (%d bytes) has %d blocks in use, model %d", what, b, bins.Size[b], st.Bins[b].Used, used[b])
		}
	}
	if st.HugeBlocks != hugeN || st.HugeBytes != hugeBytes || len(r.huge) != hugeN {
		r.failf("%s: Stats: %d huge blocks of %d bytes, model %d of %d", what, st.HugeBlocks, st.HugeBytes, hugeN, hugeBytes)
	}
	r.checkCache(st, what)
}

// checkOp runs h.Check: nil on a normal heap; on a debug heap, exactly the
// corrupted blocks, each named with its address, size and damage, which
// are then repaired.
// toggleHandlers installs custom handlers that pass every call to the
// heap's own code, or removes them. The model does not change: whatever
// the handlers, the heap must behave the same, its blocks staying valid
// across the switch both ways.
func (r *opsRun) toggleHandlers() {
	h := r.h
	if _, on := h.CustomHandlers(); on {
		h.RestoreHandlers()
		r.calls = -1
		return
	}
	next := h.Builtin()
	r.calls = 0
	h.SetHandlers(zmm.Handlers{
		Alloc: func(size uintptr) unsafe.Pointer { r.calls++; return next.Alloc(size) },
		Free:  func(p unsafe.Pointer) { r.calls++; next.Free(p) },
		Realloc: func(p unsafe.Pointer, size uintptr) unsafe.Pointer {
			r.calls++
			return next.Realloc(p, size)
		},
	})
}

func (r *opsRun) checkOp() {
	err := r.h.Check()
	var want []*opsBlock
	for _, b := range r.order {
		if b.bad != nil {
			want = append(want, b)
		}
	}
	if len(want) == 0 {
		if err != nil {
			r.failf("Check() = %v on a healthy heap", err)
		}
		return
	}
	var ce *zmm.CheckError
	if !errors.As(err, &ce) || !errors.Is(err, zmm.ErrCorrupted) {
		r.failf("Check() = %v, want a CheckError naming %d corrupted block(s)", err, len(want))
	}
	if len(ce.Problems) != len(want) {
		r.failf("Check() found %d problem(s), want %d:\n%v", len(ce.Problems), len(want), err)
	}
	for _, b := range want {
		i := slices.IndexFunc(ce.Problems, func(p zmm.Problem) bool { return p.Addr == uintptr(b.p) })
		if i < 0 {
			r.failf("Check() does not name the corrupted block %p (%s damage):\n%v", b.p, b.bad.where(), err)
		}
		pr := ce.Problems[i]
		if pr.Size != b.req || pr.What != r.damage(b) {
			r.failf("Check() reports block %p as %d bytes, %q; want %d bytes, %q", b.p, pr.Size, pr.What, b.req, r.damage(b))
		}
		if !strings.Contains(pr.String(), fmt.Sprintf("block 0x%x (%d bytes, allocated at ", uintptr(b.p), b.req)) {
			r.failf("Check() problem %q does not name block 0x%x and its size %d", pr.String(), uintptr(b.p), b.req)
		}
		r.event("detected by Check: " + b.bad.where())
		r.repair(b)
	}
	r.verifyOthers("after Check reported corrupted blocks")
}

// damage is how the heap must describe a block's damage.
func (r *opsRun) damage(b *opsBlock) string {
	if b.bad.off < 0 {
		return "the guard before the block was overwritten (a write before its start)"
	}
	past := uintptr(b.bad.off) - b.req
	return fmt.Sprintf("a write %d byte(s) past its end (at offset %d of a %d-byte block)", past+1, b.bad.off, b.req)
}

// corrupt changes one byte of a debug block's guards: the tail canary
// within 8 bytes past the requested size (always inside the block's
// class: debug blocks keep at least debugheader.TailSize bytes of tail), or
// the head guard, the 8 bytes right before the user pointer.
func (r *opsRun) corrupt(b *opsBlock, pos, val byte) {
	if b == nil || b.bad != nil {
		return
	}
	off := -1 - int(pos>>1)%8
	if pos&1 == 0 {
		off = int(b.req) + int(pos>>1)%debugheader.TailSize
	}
	if off >= 0 && uintptr(off) >= b.class-debugheader.Size {
		r.failf("internal: tail offset %d is outside the %d-byte class of a %d-byte block", off, b.class, b.req)
	}
	at := (*byte)(unsafe.Add(b.p, off))
	x := val
	if x == 0 {
		x = 0x5A
	}
	b.bad = &opsDamage{off: off, orig: *at}
	*at ^= x
	r.event("inject " + b.bad.where())
}

func (r *opsRun) repair(b *opsBlock) {
	*(*byte)(unsafe.Add(b.p, b.bad.off)) = b.bad.orig
	b.bad = nil
}

// detect runs an operation on a corrupted block, which must report it
// (ErrCorrupted, naming the block, its size and the damage), and repairs
// the block.
func (r *opsRun) detect(b *opsBlock, op string, f func()) {
	usage, ru := r.h.Usage(), r.h.RealUsage()
	err := zmm.Try(f)
	var ze *zmm.Error
	if !errors.As(err, &ze) || !errors.Is(err, zmm.ErrCorrupted) {
		r.failf("%s(%p) after a write at offset %d (%s guard) gave %v, want ErrCorrupted", op, b.p, b.bad.off, b.bad.where(), err)
	}
	name := fmt.Sprintf("heap corrupted: block 0x%x (%d bytes, allocated at ", uintptr(b.p), b.req)
	if ze.Op != op || ze.Ptr != uintptr(b.p) || !strings.Contains(ze.Msg, name) || !strings.HasSuffix(ze.Msg, r.damage(b)) {
		r.failf("%s(%p) reported %q (op %s, ptr 0x%x); want it to name the block, its %d bytes and %q", op, b.p, ze.Msg, ze.Op, ze.Ptr, b.req, r.damage(b))
	}
	if r.h.Usage() != usage || r.h.RealUsage() != ru {
		r.failf("a reported %s changed Usage %d -> %d, RealUsage %d -> %d", op, usage, r.h.Usage(), ru, r.h.RealUsage())
	}
	r.event("detected by " + op + ": " + b.bad.where())
	r.repair(b)
	r.verifyOthers("after " + op + " reported a corrupted block")
}

// verifyOthers checks the contents of every live block: a corruption
// found and repaired leaves every other block intact.
func (r *opsRun) verifyOthers(what string) {
	for _, b := range r.order {
		r.verify(b, what)
	}
}

func (r *opsRun) gcOp() {
	p := r.pre(true)
	n := r.h.GC()
	if n < p.gcDrop {
		r.failf("GC() = %d, but it had to unmap %d bytes", n, p.gcDrop)
	}
	r.cache = nil
	if ru := r.h.RealUsage(); ru != p.ru-p.gcDrop {
		r.failf("RealUsage after GC = %d, want %d - %d (cached chunks %d, empty chunks %d, cached huge %d bytes)",
			ru, p.ru, p.gcDrop, p.cachedChunks, p.emptyChunks, p.cachedHugeBytes)
	}
	st := r.h.Stats()
	if st.CachedChunks != 0 || st.Chunks != p.chunks-p.emptyChunks {
		r.failf("after GC: %d chunks, %d cached; want %d and none", st.Chunks, st.CachedChunks, p.chunks-p.emptyChunks)
	}
	r.verifyAll("after GC")
}

func (r *opsRun) resetOp() {
	r.verifyAll("before Reset")
	p := r.pre(true)
	ru := p.ru
	for i := len(r.huge) - 1; i >= 0; i-- {
		var unmapped uintptr
		r.cache, unmapped = modelRetire(r.cache, r.huge[i].class)
		ru -= unmapped
	}
	cached := p.cachedChunks + p.chunks - 1
	r.avg = (r.avg + float64(p.peakChunks)) / 2
	for cached > 0 && float64(cached)+0.9 > r.avg {
		cached--
		ru -= chunk.Size
	}
	r.h.Reset()
	r.order, r.byAddr, r.huge = nil, nil, nil
	r.usage, r.peak = 0, 0
	st := r.h.Stats()
	r.checkCache(st, "after Reset")
	if st.RealUsage != ru || st.CachedChunks != cached || st.Chunks != 1 || st.PeakChunks != 1 {
		r.failf("after Reset: RealUsage %d, %d chunks (peak %d), %d cached; want %d, 1 (1), %d (average %.2f)",
			st.RealUsage, st.Chunks, st.PeakChunks, st.CachedChunks, ru, cached, r.avg)
	}
	if st.RealPeakUsage != st.RealUsage {
		r.failf("after Reset: RealPeakUsage %d, want RealUsage %d", st.RealPeakUsage, st.RealUsage)
	}
}

// setLimitOp sets a limit near RealUsage and checks SetLimit against the
// model: refused exactly when the limit is below RealUsage minus the
// cached memory; accepted otherwise, dropping cached chunks one by one and
// then the huge cache while RealUsage is above it.
func (r *opsRun) setLimitOp(l byte) {
	p := r.pre(true)
	cached := uintptr(p.cachedChunks)*chunk.Size + p.cachedHugeBytes
	var limit uintptr
	switch l {
	case opsLimitUnlimited:
		limit = zmm.Unlimited
	case opsLimitLowest:
		limit = p.ru - cached
	case opsLimitTooLow:
		limit = p.ru - cached - 1
	case opsLimitNoChunk:
		limit = p.ru + chunk.Size - 1
	default:
		limit = uintptr(max(int64(p.ru)+(int64(l)-128)*opsLimitStep, 0))
	}
	r.op = fmt.Sprintf("SetLimit(%d) with RealUsage %d, %d cached", limit, p.ru, cached)
	err := r.h.SetLimit(limit)
	if limit < p.ru && limit < p.ru-cached {
		var ze *zmm.Error
		if !errors.As(err, &ze) || !errors.Is(err, zmm.ErrMemoryLimit) {
			r.failf("got %v, want ErrMemoryLimit", err)
		}
		want := fmt.Sprintf("Failed to set memory limit to %d bytes (Current memory usage is %d bytes)", limit, p.ru)
		if ze.Msg != want {
			r.failf("message %q, want %q", ze.Msg, want)
		}
		if ru := r.h.RealUsage(); ru != p.ru {
			r.failf("a refused SetLimit changed RealUsage %d -> %d", p.ru, ru)
		}
		r.event("SetLimit refused")
		return
	}
	if err != nil {
		r.failf("SetLimit failed: %v", err)
	}
	r.limit = limit
	ru, cc := p.ru, p.cachedChunks
	for ru > limit && cc > 0 {
		ru -= chunk.Size
		cc--
	}
	if ru > limit {
		ru -= modelSum(r.cache)
		r.cache = nil
		r.event("SetLimit dropped the huge cache")
	}
	st := r.h.Stats()
	r.checkCache(st, "after SetLimit")
	if st.RealUsage != ru || st.CachedChunks != cc {
		r.failf("after SetLimit: RealUsage %d, %d cached chunks; want %d, %d", st.RealUsage, st.CachedChunks, ru, cc)
	}
	if limit < p.ru {
		r.event("SetLimit below usage accepted")
	}
}

// opsProg builds a program byte by byte, counting the live blocks so that
// indices can name the most recent ones.
type opsProg struct {
	b []byte
	n int // live blocks, as the program goes (assuming no refusal)
}

func (p *opsProg) add(bs ...byte) *opsProg { p.b = append(p.b, bs...); return p }

// last is the index byte of the k-th most recent live block (0: the last).
func (p *opsProg) last(k int) byte { return byte(p.n - 1 - k) }

func (p *opsProg) alloc(s [3]byte) *opsProg { p.n++; return p.add(opsAlloc, s[0], s[1], s[2]) }

// allocRefused is an Alloc the program expects the limit to refuse.
func (p *opsProg) allocRefused(s [3]byte) *opsProg { return p.add(opsAlloc, s[0], s[1], s[2]) }

func (p *opsProg) calloc(s [3]byte, e byte) *opsProg {
	if e != opsEOverflow {
		p.n++
	}
	return p.add(opsCalloc, s[0], s[1], s[2], e)
}

func (p *opsProg) safeAlloc(s [3]byte, e byte) *opsProg {
	if e < opsEReallocOverflow {
		p.n++
	}
	return p.add(opsSafeAlloc, s[0], s[1], s[2], e)
}

func (p *opsProg) strdup(s [3]byte, e byte) *opsProg {
	p.n++
	return p.add(opsStrdup, s[0], s[1], s[2], e)
}

func (p *opsProg) free(idx byte) *opsProg { p.n--; return p.add(opsFree, idx) }

func (p *opsProg) realloc(idx byte, s [3]byte) *opsProg {
	return p.add(opsRealloc, idx, s[0], s[1], s[2])
}

func (p *opsProg) reallocNil(s [3]byte) *opsProg {
	p.n++
	return p.add(opsReallocNil, s[0], s[1], s[2])
}

func (p *opsProg) resize(idx, d byte) *opsProg { return p.add(opsResize, idx, d) }
func (p *opsProg) blockSize(idx byte) *opsProg { return p.add(opsBlockSize, idx) }
func (p *opsProg) gc() *opsProg                { return p.add(opsMiscGC) }
func (p *opsProg) reset() *opsProg             { p.n = 0; return p.add(opsMiscReset) }
func (p *opsProg) resetPeak() *opsProg         { return p.add(opsMiscResetPeak) }
func (p *opsProg) check() *opsProg             { return p.add(opsMiscCheck) }
func (p *opsProg) handlers() *opsProg          { return p.add(opsMiscHandlers) }
func (p *opsProg) setLimit(l byte) *opsProg    { return p.add(opsSetLimit, l) }
func (p *opsProg) corrupt(idx, pos, val byte) *opsProg {
	return p.add(opsMiscCorrupt, idx, pos, val)
}

// opsSeed is a named program of the committed corpus.
type opsSeed struct {
	name string
	data []byte
}

// opsCorpusFile is a seed in the Go fuzz corpus format.
func opsCorpusFile(data []byte) string {
	return fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
}
