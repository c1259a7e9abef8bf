package fuzz

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/internal/frames"
	"github.com/gozmm/zmm/zmm"
)

// FuzzBadPointers hands Free, Realloc and BlockSize pointers that are not
// the start of a live block of the heap — random addresses, pointers into
// live blocks, freed blocks, blocks of other heaps, chunk headers, Go
// memory, small non-nil addresses — and checks that each is reported as a
// *zmm.Error wrapping exactly the sentinel the case calls for, naming the
// pointer, with the heap untouched.
//
// The expected sentinel comes from a model of the memory the test laid out
// (bpWorld.expect), not from zmm's own tables:
//
//   - inside a live block of the heap, not at its start: ErrInvalidPointer;
//   - in a freed block: ErrDoubleFree where a block of its kind could start
//     (the slot of a freed small block, any page of a freed page run, any
//     2 MiB frame of a freed huge mapping: zmm keeps no record of where a
//     freed run or mapping began), ErrInvalidPointer elsewhere;
//   - a chunk header of the heap: ErrInvalidPointer;
//   - anywhere in a live chunk or live huge block of another heap:
//     ErrWrongHeap; in a freed huge block of another heap: ErrInvalidPointer;
//   - anywhere else (random addresses, Go memory, small addresses):
//     ErrInvalidPointer.
//
// The arguments: debug picks the heap under test (the normal heap or the
// debug heap, whose pointers are user pointers 32 bytes into the block),
// op the call, kind the case (bpKind*), sel the block or variant (low 8
// bits) and the size Realloc asks for (the rest), x the address or offset.
func FuzzBadPointers(f *testing.F) {
	w := bpNewWorld(f)
	f.Cleanup(func() { w.close() })
	for _, s := range bpAddSeeds() {
		f.Add(s.debug, s.op, s.kind, s.sel, s.x)
	}
	f.Fuzz(func(t *testing.T, debug bool, op, kind, sel, x uint64) {
		if w.dirty {
			// A previous input broke the heaps (a bad pointer was
			// accepted): start over with fresh ones.
			w.close()
			w = bpNewWorld(t)
		}
		defer func() {
			if t.Failed() {
				w.dirty = true
			}
		}()
		w.run(t, debug, op, kind, sel, x)
	})
}

// The cases of FuzzBadPointers (kind % bpKinds).
const (
	bpKindRandom   = iota // x is the address
	bpKindInterior        // a live block of the heap, offset 1 + bpOffset(x, size-1)
	bpKindFreed           // a freed block of the heap, offset bpOffset(x, size) (0: its start)
	bpKindOther           // a block of another heap, offset bpOffset(x, size)
	bpKindHeader          // a chunk header, offset x%4096
	bpKindGo              // Go heap (sel even) or stack memory, offset x%len
	bpKindNilish          // 1 + x%4095
	bpKinds
)

var bpKindNames = [bpKinds]string{"random", "interior", "freed", "other-heap", "chunk-header", "go-memory", "nil-ish"}

const (
	bpOpFree = iota
	bpOpRealloc
	bpOpBlockSize
	bpOps
)

var bpOpNames = [bpOps]string{"Free", "Realloc", "BlockSize"}

// bpBlock is a block the test laid out.
type bpBlock struct {
	what string  // for messages: "small", "large", "huge", "cached huge", "quarantined huge", ...
	addr uintptr // the block's start in memory (before the debug record)
	size uintptr // the memory it takes: class size, page run, or mapping
	user uintptr // the pointer the heap handed out
	req  uintptr // the bytes asked for
	seed byte    // the fill pattern of a live block
	huge bool
}

// span is the address range the block owns: huge blocks own whole frames.
func (b bpBlock) span() uintptr {
	if b.huge {
		return (b.size + chunk.Size - 1) &^ (chunk.Size - 1)
	}
	return b.size
}

// granule is the spacing of the addresses inside a freed block where a
// block of its kind could have started.
func (b bpBlock) granule() uintptr {
	switch {
	case b.huge:
		return chunk.Size
	case b.size > bins.MaxSize:
		return chunk.PageSize
	}
	return b.size
}

func (b bpBlock) String() string {
	return fmt.Sprintf("%s block 0x%x (%d bytes at 0x%x)", b.what, b.user, b.req, b.addr)
}

type bpHeap struct {
	name   string
	h      *zmm.Heap
	id     uint32  // its owner id in the frame table
	hdr    uintptr // debug record size (user = addr + hdr)
	live   []bpBlock
	freed  []bpBlock
	chunks []uintptr // its live chunks

	usage, peak, real uintptr
}

// bpWorld is what FuzzBadPointers works on: a normal heap and a debug heap
// under test, and a third heap whose blocks are the "other heap" for both.
type bpWorld struct {
	heaps [3]*bpHeap // normal, debug, other
	goBuf []byte
	dirty bool
}

// bpLayout is what every heap gets: requested sizes of live blocks, and of
// blocks freed once everything is laid out (one huge block goes to the
// huge cache, a 65 MiB one, too big for the cache, is unmapped).
var bpLayout = struct{ live, freed []uintptr }{
	live:  []uintptr{1, 24, 100, 777, 2900, 5000, 40000, 3<<20 + 12345},
	freed: []uintptr{24, 2900, 12000, 3 << 20, 65<<20 + 1},
}

func bpNewHeap(tb testing.TB, name string, debug bool) *bpHeap {
	h, err := zmm.New(zmm.WithDebug(debug), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(nil))
	if err != nil {
		tb.Fatal(err)
	}
	bh := &bpHeap{name: name, h: h}
	if debug {
		bh.hdr = debugheader.Size
	}
	return bh
}

// bpClassSize is the memory a block of req bytes takes in a heap whose
// blocks carry hdr bytes of debug record (and then a tail guard).
func bpClassSize(req uintptr, debug bool) uintptr {
	size := req
	if debug {
		size += debugheader.Overhead
	}
	switch {
	case size <= bins.MaxSize:
		return uintptr(bins.Size[bins.SizeToBin(max(size, 16))])
	case size <= zmm.MaxLargeSize:
		return (size + chunk.PageSize - 1) &^ (chunk.PageSize - 1)
	}
	page := chunk.OSPageSize()
	return (size + page - 1) &^ (page - 1)
}

func (bh *bpHeap) alloc(tb testing.TB, req uintptr, seed byte) bpBlock {
	p := bh.h.Alloc(req)
	debug := bh.hdr != 0
	b := bpBlock{user: uintptr(p), addr: uintptr(p) - bh.hdr, req: req, seed: seed, size: bpClassSize(req, debug)}
	switch {
	case b.size <= bins.MaxSize:
		b.what = "small"
	case b.size <= zmm.MaxLargeSize:
		b.what = "large"
	default:
		b.what, b.huge = "huge", true
	}
	if !debug {
		if got := bh.h.BlockSize(p); got != b.size {
			tb.Fatalf("%s: BlockSize of a %d-byte block is %d, the test expected %d", bh.name, req, got, b.size)
		}
	}
	if !b.huge {
		base := b.addr &^ (chunk.Size - 1)
		found := false
		for _, c := range bh.chunks {
			found = found || c == base
		}
		if !found {
			bh.chunks = append(bh.chunks, base)
		}
	}
	return b
}

// bpSample returns the parts of a live block's bytes the test fills and
// checks: all of it, or its first and last 4 KiB for a huge block.
func bpSample(b bpBlock) [][2]uintptr {
	const n = 4096
	if b.req <= 2*n {
		return [][2]uintptr{{0, b.req}}
	}
	return [][2]uintptr{{0, n}, {b.req - n, b.req}}
}

func bpNewWorld(tb testing.TB) *bpWorld {
	w := &bpWorld{goBuf: make([]byte, 8192)}
	w.heaps[0] = bpNewHeap(tb, "normal heap", false)
	w.heaps[1] = bpNewHeap(tb, "debug heap", true)
	w.heaps[2] = bpNewHeap(tb, "other heap", false)
	// Everything is mapped before anything is freed, so that no later
	// mapping reuses the address range of the unmapped huge block.
	seed := byte(1)
	var toFree [3][]bpBlock
	for i, bh := range w.heaps {
		for _, req := range bpLayout.live {
			b := bh.alloc(tb, req, seed)
			seed += 37
			bh.live = append(bh.live, b)
			for _, r := range bpSample(b) {
				buf := zmm.Bytes(unsafe.Add(nil, b.user), int(b.req))
				for j := r[0]; j < r[1]; j++ {
					buf[j] = b.seed + byte(j*7)
				}
			}
		}
		for _, req := range bpLayout.freed {
			toFree[i] = append(toFree[i], bh.alloc(tb, req, 0))
		}
	}
	for i, bh := range w.heaps {
		for _, b := range toFree[i] {
			bh.h.Free(unsafe.Add(nil, b.user))
			if b.huge {
				b.what = "cached huge"
				switch {
				case bh.hdr != 0:
					// A debug heap quarantines it: inaccessible, never
					// cached.
					b.what = "quarantined huge"
				case b.size > 64<<20:
					b.what = "unmapped huge"
				}
			} else {
				b.what = "freed " + b.what
			}
			bh.freed = append(bh.freed, b)
		}
		bh.id = frames.Lookup(bh.chunks[0]).Owner()
		bh.usage, bh.peak, bh.real = bh.h.Usage(), bh.h.PeakUsage(), bh.h.RealUsage()
		// The layout relies on these; fail loudly if zmm changes them.
		for _, b := range bh.freed {
			f := frames.Lookup(b.addr)
			want := frames.Kind(0)
			switch b.what {
			case "cached huge":
				want = frames.CachedHuge
			case "unmapped huge", "quarantined huge":
				want = frames.FreedHuge
			default:
				want = frames.Chunk
			}
			if f.Kind() != want || f.Owner() != bh.id {
				tb.Fatalf("%s: the %v is in frame %v, the test expected a %v of heap %d", bh.name, b, f, want, bh.id)
			}
		}
	}
	return w
}

func (w *bpWorld) close() {
	for _, bh := range w.heaps {
		if bh != nil {
			bh.h.Close()
		}
	}
}

// bpPtr turns an address into an unsafe.Pointer by reinterpreting the
// word, not by converting it: checkptr (-race) checks conversions and
// would reject addresses below 4096 and Go heap addresses made from
// nothing before zmm sees them.
func bpPtr(a uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&a)) }

func bpIn(addr, start, size uintptr) bool { return addr-start < size }

// expect says what a call with user must report on heap bh: the sentinel,
// and why. A nil sentinel with an empty skip means the pointer is valid (the
// start of a live block); a non-empty skip means the model cannot tell.
func (w *bpWorld) expect(bh *bpHeap, user uintptr) (want error, why, skip string) {
	addr := user - bh.hdr
	for _, b := range bh.live {
		if bpIn(addr, b.addr, b.span()) {
			if addr == b.addr {
				return nil, "", ""
			}
			return zmm.ErrInvalidPointer, fmt.Sprintf("offset %d inside the live %v", addr-b.addr, b), ""
		}
	}
	for _, b := range bh.freed {
		if bpIn(addr, b.addr, b.span()) {
			if (addr-b.addr)%b.granule() == 0 {
				return zmm.ErrDoubleFree, fmt.Sprintf("offset %d in the %v, where a block could start", addr-b.addr, b), ""
			}
			return zmm.ErrInvalidPointer, fmt.Sprintf("offset %d inside the %v", addr-b.addr, b), ""
		}
	}
	for _, c := range bh.chunks {
		if bpIn(addr, c, chunk.PageSize) {
			return zmm.ErrInvalidPointer, fmt.Sprintf("offset %d in the header of chunk 0x%x", addr-c, c), ""
		}
		if bpIn(addr, c, chunk.Size) {
			return nil, "", fmt.Sprintf("0x%x is in a part of chunk 0x%x the test did not lay out", addr, c)
		}
	}
	for _, o := range w.heaps {
		if o == bh {
			continue
		}
		for _, c := range o.chunks {
			if bpIn(addr, c, chunk.Size) {
				return zmm.ErrWrongHeap, fmt.Sprintf("offset %d in chunk 0x%x of the %s", addr-c, c, o.name), ""
			}
		}
		for _, b := range o.live {
			if b.huge && bpIn(addr, b.addr, b.span()) {
				return zmm.ErrWrongHeap, fmt.Sprintf("offset %d in the %v of the %s", addr-b.addr, b, o.name), ""
			}
		}
		for _, b := range o.freed {
			if b.huge && bpIn(addr, b.addr, b.span()) {
				return zmm.ErrInvalidPointer, fmt.Sprintf("offset %d in the %v of the %s", addr-b.addr, b, o.name), ""
			}
		}
	}
	// Not memory this test laid out. Other tests in the process may have
	// left heaps open: their live memory is another heap's, whatever
	// zmm knows of beyond that (tombstones) is no block.
	switch f := frames.Lookup(addr); {
	case f.Owner() == bh.id && f.Kind() != frames.None:
		return nil, "", fmt.Sprintf("0x%x is in %v, which the test did not lay out", addr, f)
	case f.Kind() == frames.Chunk || f.Kind() == frames.Huge || f.Kind() == frames.HugeInterior:
		return zmm.ErrWrongHeap, fmt.Sprintf("0x%x is in %v, made by another test", addr, f), ""
	}
	return zmm.ErrInvalidPointer, fmt.Sprintf("0x%x is no memory of any zmm heap", addr), ""
}

// bpNearGoHeap reports whether a is within 64 GiB of the Go heap. A
// random address there, held in an unsafe.Pointer, could make the garbage
// collector throw ("found bad pointer in Go heap"); that is Go's rule, not
// zmm's, so random addresses there are not tried.
func bpNearGoHeap(a, goHeap uintptr) bool {
	const r = 64 << 30
	return a-goHeap+r < 2*r
}

// pointer builds the pointer of a case, in the heap-under-test's terms.
// bpOffset maps x to an offset below n: x%n, or counted back from n-1 when
// the top bit of x is set (so that 1<<63 is the last byte).
func bpOffset(x uint64, n uintptr) uintptr {
	if x>>63 != 0 {
		return n - 1 - uintptr((x<<1>>1)%uint64(n))
	}
	return uintptr(x % uint64(n))
}

// Offsets into blocks are offsets from the block's start in memory, so that
// on the debug heap they also reach the debug record before the user's
// bytes.
//
// For Go memory it also returns the pointer itself: under -race (checkptr)
// a Go pointer must be derived from its object, not made from an address.
func (w *bpWorld) pointer(t *testing.T, bh *bpHeap, kind, sel, x uint64, stack *[512]byte) (user uintptr, goPtr unsafe.Pointer, what string) {
	sel &= 0xff
	switch kind {
	case bpKindRandom:
		return uintptr(x), nil, "random address"
	case bpKindInterior:
		b := bh.live[sel%uint64(len(bh.live))]
		return b.addr + bh.hdr + 1 + bpOffset(x, b.size-1), nil, "interior of the live " + b.String()
	case bpKindFreed:
		b := bh.freed[sel%uint64(len(bh.freed))]
		return b.addr + bh.hdr + bpOffset(x, b.size), nil, "the " + b.String()
	case bpKindOther:
		var blocks []bpBlock
		for _, o := range w.heaps {
			if o != bh {
				blocks = append(append(blocks, o.live...), o.freed...)
			}
		}
		b := blocks[sel%uint64(len(blocks))]
		return b.addr + bh.hdr + bpOffset(x, b.size), nil, "another heap's " + b.String()
	case bpKindHeader:
		var chunks []uintptr
		for _, o := range w.heaps {
			chunks = append(chunks, o.chunks...)
		}
		c := chunks[sel%uint64(len(chunks))]
		return c + bh.hdr + uintptr(x%chunk.PageSize), nil, fmt.Sprintf("header of chunk 0x%x", c)
	case bpKindGo:
		if sel%2 == 0 {
			p := unsafe.Pointer(&w.goBuf[x%uint64(len(w.goBuf))])
			return uintptr(p), p, "Go heap memory"
		}
		p := unsafe.Pointer(&stack[x%uint64(len(stack))])
		return uintptr(p), p, "Go stack memory"
	case bpKindNilish:
		return 1 + uintptr(x%4095), nil, "small address"
	}
	t.Fatalf("bad kind %d", kind)
	return 0, nil, ""
}

func (w *bpWorld) run(t *testing.T, debug bool, op, kind, sel, x uint64) {
	bh := w.heaps[0]
	if debug {
		bh = w.heaps[1]
	}
	op, kind = op%bpOps, kind%bpKinds
	var stack [512]byte
	user, goPtr, what := w.pointer(t, bh, kind, sel, x, &stack)

	if kind == bpKindRandom && bpNearGoHeap(user, uintptr(unsafe.Pointer(&w.goBuf[0]))) {
		t.Skipf("random address 0x%x is near the Go heap", user)
	}
	if user == 0 && op != bpOpBlockSize {
		t.Skip("Free(nil) and Realloc(nil, n) are legal")
	}
	want, why, skip := w.expect(bh, user)
	if skip != "" {
		t.Skip(skip)
	}
	if want == nil {
		t.Skipf("0x%x is the start of a live block of the %s: legal", user, bh.name)
	}

	opName := bpOpNames[op]
	size := uintptr(sel>>8) % (64 << 10)
	call := func() error {
		return zmm.Try(func() {
			p := goPtr
			if p == nil {
				p = bpPtr(user)
			}
			switch op {
			case bpOpFree:
				bh.h.Free(p)
			case bpOpRealloc:
				bh.h.Realloc(p, size)
			case bpOpBlockSize:
				bh.h.BlockSize(p)
			}
		})
	}
	desc := fmt.Sprintf("%s: %s(0x%x) [%s: %s]", bh.name, opName, user, what, why)
	if user < 4096 {
		// Pointers below 4096 once crashed the runtime when a stack grew
		// inside zmm (see TestSmallPointerDoesNotCrashRuntime): call from
		// fresh goroutines at many depths, so that stacks grow there.
		for depth := range 100 {
			done := make(chan error)
			go func() { done <- bpAtDepth(depth, call) }()
			if err := <-done; !errors.Is(err, want) {
				t.Fatalf("%s at depth %d: %v, want %v", desc, depth, err, want)
			}
		}
	}
	err := call()
	var ze *zmm.Error
	switch {
	case err == nil:
		t.Fatalf("%s: no error, want %v", desc, want)
	case !errors.As(err, &ze):
		t.Fatalf("%s: error %T %v, want a *zmm.Error", desc, err, err)
	case ze.Kind != want:
		t.Errorf("%s: got %v (%q), want %v", desc, ze.Kind, ze.Msg, want)
	}
	if ze != nil {
		if !strings.Contains(ze.Msg, fmt.Sprintf("0x%x", user)) {
			t.Errorf("%s: message %q does not name the pointer", desc, ze.Msg)
		}
		if ze.Op != opName || ze.Ptr != user {
			t.Errorf("%s: Op %q Ptr 0x%x, want %q 0x%x", desc, ze.Op, ze.Ptr, opName, user)
		}
	}
	w.checkIntact(t, desc, bh, kind == bpKindOther || kind == bpKindHeader)
}

// checkIntact checks that no heap's usage changed and every live block
// still holds its bytes, and runs the Check of the heap under test (of
// every heap with all).
func (w *bpWorld) checkIntact(t *testing.T, desc string, target *bpHeap, all bool) {
	for _, bh := range w.heaps {
		if u, p, r := bh.h.Usage(), bh.h.PeakUsage(), bh.h.RealUsage(); u != bh.usage || p != bh.peak || r != bh.real {
			t.Errorf("%s: %s usage/peak/real %d/%d/%d, was %d/%d/%d", desc, bh.name, u, p, r, bh.usage, bh.peak, bh.real)
		}
		for _, b := range bh.live {
			buf := zmm.Bytes(unsafe.Add(nil, b.user), int(b.req))
			for _, r := range bpSample(b) {
				for j := r[0]; j < r[1]; j++ {
					if buf[j] != b.seed+byte(j*7) {
						t.Fatalf("%s: byte %d of the %v changed", desc, j, b)
					}
				}
			}
		}
		if bh != target && !all {
			continue
		}
		if err := bh.h.Check(); err != nil {
			t.Fatalf("%s: %s: %v", desc, bh.name, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Seeds

type bpSeed struct {
	name             string
	debug            bool
	op, kind, sel, x uint64
}

// bpSeeds covers every case on both heaps, the op turning from seed to
// seed: every block of each kind, offsets at the edges (the first and last
// byte, the debug record, page and frame boundaries), random addresses at
// the edges of the address space. They are the corpus files.
func bpSeeds() []bpSeed {
	var seeds []bpSeed
	n := uint64(0)
	add := func(name string, kind, sel, x uint64) {
		for _, debug := range []bool{false, true} {
			h := "normal"
			if debug {
				h = "debug"
			}
			op := n % bpOps
			n++
			name := fmt.Sprintf("%s-%s-%s-%s", h, bpKindNames[kind], name, strings.ToLower(bpOpNames[op]))
			seeds = append(seeds, bpSeed{name, debug, op, kind, sel | 4000<<8, x})
		}
	}
	for i, a := range []uint64{0, 1 << 47, 1<<48 - 1, 1 << 48, 1 << 63, 1<<64 - 1, 1<<64 - 31, 0x7fff_ffff_f000, 0x5555_5555_0000, 4096} {
		add(fmt.Sprintf("%d", i), bpKindRandom, 0, a)
	}
	live, freed := uint64(len(bpLayout.live)), uint64(len(bpLayout.freed))
	for sel := range live {
		add(fmt.Sprintf("block%d-first", sel), bpKindInterior, sel, 0)
		add(fmt.Sprintf("block%d-last", sel), bpKindInterior, sel, 1<<63)
		add(fmt.Sprintf("block%d-8", sel), bpKindInterior, sel, 7)
		add(fmt.Sprintf("block%d-32", sel), bpKindInterior, sel, 31)
		add(fmt.Sprintf("block%d-page", sel), bpKindInterior, sel, chunk.PageSize-1)
	}
	huge := live - 1 // the live huge block: its second frame, and past its end
	add("huge-frame1", bpKindInterior, huge, chunk.Size-1)
	add("huge-frame1-plus", bpKindInterior, huge, chunk.Size+99)
	for sel := range freed {
		add(fmt.Sprintf("block%d", sel), bpKindFreed, sel, 0)
		add(fmt.Sprintf("block%d-plus8", sel), bpKindFreed, sel, 8)
		add(fmt.Sprintf("block%d-page1", sel), bpKindFreed, sel, chunk.PageSize)
		add(fmt.Sprintf("block%d-frame1", sel), bpKindFreed, sel, chunk.Size)
		add(fmt.Sprintf("block%d-frame32", sel), bpKindFreed, sel, 32*chunk.Size)
		add(fmt.Sprintf("block%d-frame1-plus", sel), bpKindFreed, sel, chunk.Size+4096)
		add(fmt.Sprintf("block%d-last", sel), bpKindFreed, sel, 1<<63)
	}
	for sel := range 2 * (live + freed) {
		add(fmt.Sprintf("block%d", sel), bpKindOther, sel, 0)
		if sel%3 == 0 {
			add(fmt.Sprintf("block%d-last", sel), bpKindOther, sel, 1<<63)
		}
	}
	for sel := range 3 {
		add(fmt.Sprintf("chunk%d-base", sel), bpKindHeader, uint64(sel), 0)
		add(fmt.Sprintf("chunk%d-state", sel), bpKindHeader, uint64(sel), 3000)
		add(fmt.Sprintf("chunk%d-end", sel), bpKindHeader, uint64(sel), 4095)
	}
	for sel := range 2 {
		add(fmt.Sprintf("%d-start", sel), bpKindGo, uint64(sel), 0)
		add(fmt.Sprintf("%d-mid", sel), bpKindGo, uint64(sel), 100)
	}
	for _, x := range []uint64{0, 7, 31, 4094} {
		add(fmt.Sprintf("%d", x+1), bpKindNilish, 0, x)
	}
	return seeds
}

// bpAddSeeds are the f.Add seeds: one input of each kind with each op on
// each heap.
func bpAddSeeds() []bpSeed {
	var seeds []bpSeed
	examples := [bpKinds][2]uint64{
		bpKindRandom:   {0, 1 << 47},
		bpKindInterior: {0, 0},
		bpKindFreed:    {0, 0},
		bpKindOther:    {0, 0},
		bpKindHeader:   {0, 0},
		bpKindGo:       {0, 0},
		bpKindNilish:   {0, 7},
	}
	for kind, e := range examples {
		for _, debug := range []bool{false, true} {
			for op := range uint64(bpOps) {
				seeds = append(seeds, bpSeed{"", debug, op, uint64(kind), e[0] | 100<<8, e[1]})
			}
		}
	}
	return seeds
}

// TestBadPointersSeeds writes bpSeeds to testdata/fuzz/FuzzBadPointers
// with ZMM_WRITE_SEEDS=1.
func TestBadPointersSeeds(t *testing.T) {
	var files []smCorpusFile
	for _, s := range bpSeeds() {
		files = append(files, smCorpusFile{s.name, []any{s.debug, s.op, s.kind, s.sel, s.x}})
	}
	smWriteCorpus(t, "FuzzBadPointers", files)
}

// ---------------------------------------------------------------------------
// Known bugs

// TestSmallPointerDoesNotCrashRuntime is the regression test for a bug
// this fuzz target found: Free, Realloc and BlockSize of a pointer below
// 4096 (a field of a nil struct pointer, a small integer cast to a
// pointer) could kill the process with "fatal error: invalid pointer found
// on stack": zmm kept the pointer in an unsafe.Pointer variable of its
// lookup path while it formatted the error, and when the goroutine's stack
// grew there the runtime refused to copy a frame holding a pointer below
// 4096. zmm now turns the pointer into an integer at its API entry points. It
// happens whenever the calling goroutine's stack is still small, for
// example in a fresh goroutine. The crash is shown in a child process.
func TestSmallPointerDoesNotCrashRuntime(t *testing.T) {
	if os.Getenv("ZMM_BP_CHILD") == "1" {
		bpSmallPointerChild()
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestSmallPointerDoesNotCrashRuntime$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "ZMM_BP_CHILD=1")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Skipf("cannot run the child test binary: %v", err)
	}
	if err != nil || !strings.Contains(string(out), "bp-child: all reported") {
		lines := strings.SplitN(string(out), "\n", 8)
		t.Fatalf("Free/Realloc/BlockSize of a pointer below 4096 crashed the process instead of reporting ErrInvalidPointer:\n%s",
			strings.Join(lines[:min(len(lines), 7)], "\n"))
	}
}

func bpSmallPointerChild() {
	var heaps []*zmm.Heap
	for _, debug := range []bool{false, true} {
		h, err := zmm.New(zmm.WithDebug(debug), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(nil))
		if err != nil {
			panic(err)
		}
		defer h.Close()
		heaps = append(heaps, h)
	}
	// Each call runs in a fresh goroutine (a small stack) below a varying
	// depth of padding frames, so that in some of them the stack has to
	// grow while zmm builds its error.
	for depth := range 100 {
		for i, a := range []uintptr{8, 1, 4095} {
			for op := range bpOps {
				h := heaps[(depth+i+op)%2]
				done := make(chan error)
				go func() {
					done <- bpAtDepth(depth, func() error {
						return zmm.Try(func() {
							p := bpPtr(a)
							switch op {
							case bpOpFree:
								h.Free(p)
							case bpOpRealloc:
								h.Realloc(p, 10)
							default:
								h.BlockSize(p)
							}
						})
					})
				}()
				if err := <-done; !errors.Is(err, zmm.ErrInvalidPointer) {
					fmt.Printf("bp-child: %s(0x%x): %v\n", bpOpNames[op], a, err)
					os.Exit(3)
				}
			}
		}
	}
	fmt.Println("bp-child: all reported")
}

// bpAtDepth calls f below depth frames of about 100 bytes each.
//
//go:noinline
func bpAtDepth(depth int, f func() error) error {
	var pad [64]byte
	if depth == 0 {
		return f()
	}
	pad[depth%64] = byte(depth)
	err := bpAtDepth(depth-1, f)
	runtime.KeepAlive(&pad)
	return err
}

// ---------------------------------------------------------------------------
// Corpus files (shared by the targets of this file set)

type smCorpusFile struct {
	name string
	vals []any
}

// smWriteCorpus writes files to testdata/fuzz/<target>/seed-<name> in Go's
// corpus format when ZMM_WRITE_SEEDS=1, after removing the seed- files
// written before (inputs saved from fuzzing are kept).
func smWriteCorpus(t *testing.T, target string, files []smCorpusFile) {
	if os.Getenv("ZMM_WRITE_SEEDS") != "1" {
		t.Skipf("set ZMM_WRITE_SEEDS=1 to regenerate testdata/fuzz/%s", target)
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.name] {
			t.Fatalf("duplicate seed name %s", f.name)
		}
		seen[f.name] = true
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, v := range f.vals {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case uint64, bool:
				fmt.Fprintf(&b, "%T(%v)\n", v, v)
			default:
				t.Fatalf("seed %s: cannot encode %T", f.name, v)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "seed-"+f.name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d seeds to %s", len(files), dir)
}
