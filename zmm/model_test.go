package zmm_test

// A long randomized test of one heap against a simple model of it, and an
// exact test of the memory limit. Every top-level name here starts with
// "model" (or is a Test function) so that it cannot clash with the helpers
// of the other test files of package zmm_test.

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/zmm"
)

// modelBinSizes are the 30 small size classes (bins/table.go).
var modelBinSizes = [bins.NumBins]uintptr{
	8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256,
	320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072,
}

const (
	// modelMinSlot is the smallest block: sizes below it get it.
	modelMinSlot = 16
	// modelMinHugeReq is the smallest request served by a huge block.
	modelMinHugeReq = zmm.MaxLargeSize + 1
	// modelMaxHuge is the largest request the random test makes.
	modelMaxHuge = 8 << 20
	// modelMul spreads a word index over the pattern words of a block.
	modelMul = 0xD6E8FEB86659FD93
)

// modelClass is the class size of a request: the bin size for small
// requests, whole 4 KiB pages for large ones, whole OS pages for huge ones.
func modelClass(req uintptr) uintptr {
	switch {
	case req <= bins.MaxSize:
		req = max(req, modelMinSlot)
		for _, s := range modelBinSizes {
			if s >= req {
				return s
			}
		}
		panic("unreachable")
	case req <= zmm.MaxLargeSize:
		return (req + chunk.PageSize - 1) &^ (chunk.PageSize - 1)
	}
	ps := chunk.OSPageSize()
	return (req + ps - 1) &^ (ps - 1)
}

// modelKind names the kind of a block of class size class.
func modelKind(class uintptr) string {
	switch {
	case class <= bins.MaxSize:
		return "small"
	case class <= zmm.MaxLargeSize:
		return "large"
	}
	return "huge"
}

// modelAlign is the alignment a block of class size class must have: 8
// bytes for small blocks (16 when the class is a multiple of 16), a page
// for large ones, a chunk for huge ones.
func modelAlign(class uintptr) uintptr {
	switch {
	case class <= bins.MaxSize:
		if class%16 == 0 {
			return 16
		}
		return 8
	case class <= zmm.MaxLargeSize:
		return chunk.PageSize
	}
	return chunk.Size
}

// The fill pattern of block id: word k of the block (byte offset 8k) holds
// modelBase(id) + k*modelMul, in native byte order, over the requested
// bytes; a tail shorter than a word holds the first bytes of the next word.
// Words are distinct within a block and between blocks, so a block that
// shows another block's bytes, or its own bytes at another offset, fails.

func modelBase(id uint64) uint64 {
	x := (id + 1) * 0x9E3779B97F4A7C15
	return x ^ x>>31
}

func modelFill(p unsafe.Pointer, n uintptr, id uint64) {
	modelFillFrom(p, 0, n, id)
}

// modelFillFrom writes the pattern of id over bytes [from, n) of the block.
func modelFillFrom(p unsafe.Pointer, from, n uintptr, id uint64) {
	if from >= n {
		return
	}
	base := modelBase(id)
	k0 := from / 8
	if from%8 != 0 { // finish the partial word byte by byte
		w := base + uint64(k0)*modelMul
		wb := (*[8]byte)(unsafe.Pointer(&w))
		end := min(n, (k0+1)*8)
		b := unsafe.Slice((*byte)(unsafe.Add(p, k0*8)), end-k0*8)
		for j := from - k0*8; j < end-k0*8; j++ {
			b[j] = wb[j]
		}
		k0++
	}
	if k0*8 >= n {
		return
	}
	words := unsafe.Slice((*uint64)(unsafe.Add(p, k0*8)), n/8-min(n/8, k0))
	w := base + uint64(k0)*modelMul
	for i := range words {
		words[i] = w
		w += modelMul
	}
	if tail := n % 8; tail != 0 && n/8 >= k0 {
		w := base + uint64(n/8)*modelMul
		wb := (*[8]byte)(unsafe.Pointer(&w))
		copy(unsafe.Slice((*byte)(unsafe.Add(p, n&^7)), tail), wb[:tail])
	}
}

// modelCheck returns the offset of the first word (or tail byte) of the
// block's first n bytes that does not hold the pattern of id, or n.
func modelCheck(p unsafe.Pointer, n uintptr, id uint64) uintptr {
	base := modelBase(id)
	words := unsafe.Slice((*uint64)(p), n/8)
	w := base
	for k, v := range words {
		if v != w {
			return uintptr(k) * 8
		}
		w += modelMul
	}
	if tail := n % 8; tail != 0 {
		w := base + uint64(n/8)*modelMul
		wb := (*[8]byte)(unsafe.Pointer(&w))
		b := unsafe.Slice((*byte)(unsafe.Add(p, n&^7)), tail)
		for j := range b {
			if b[j] != wb[j] {
				return n&^7 + uintptr(j)
			}
		}
	}
	return n
}

// modelZero returns the offset of the first non-zero byte of [p, p+n), or n.
func modelZero(p unsafe.Pointer, n uintptr) uintptr {
	words := unsafe.Slice((*uint64)(p), n/8)
	for k, v := range words {
		if v != 0 {
			return uintptr(k) * 8
		}
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, n&^7)), n%8)
	for j, v := range b {
		if v != 0 {
			return n&^7 + uintptr(j)
		}
	}
	return n
}

// modelBlock is a live block of the model.
type modelBlock struct {
	p     unsafe.Pointer
	req   uintptr // the size asked for
	class uintptr // its class size (BlockSize)
	id    uint64  // its fill pattern
	kind  string  // modelKind(class), or "large" for a page run grown past MaxLargeSize
}

func (b modelBlock) addr() uintptr { return uintptr(b.p) }

// modelConfig sizes a random run.
type modelConfig struct {
	steps       int
	target      int     // live blocks the run hovers around
	largeBudget uintptr // live large bytes above which no large block is asked for
	hugeMax     int     // live huge blocks above which no huge block is asked for
	verifyEvery int     // steps between full checks
}

// modelRun is one seeded random program and the model it is checked with.
type modelRun struct {
	t    *testing.T
	h    *zmm.Heap
	r    *rand.Rand
	cfg  modelConfig
	seed uint64
	step int
	op   string     // the current operation, for failure messages
	args [2]uintptr // and its sizes, where it has some

	live        []modelBlock // sorted by address
	usage, peak uintptr      // the model's Usage and PeakUsage
	largeBytes  uintptr      // live large class bytes
	hugeCount   int          // live huge blocks
	nextID      uint64
	strBuf      []byte // random bytes that strings are cut from

	// counters of what the run did, logged at the end
	ops map[string]int
}

// failf fails the run. The checks call no t.Helper on their fast paths
// (it costs a stack walk): the message says where the run failed.
func (m *modelRun) failf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("seed %d step %d op %s %v: %s", m.seed, m.step, m.op, m.args, fmt.Sprintf(format, args...))
}

// find returns the index of the block at addr in the sorted live slice.
func (m *modelRun) find(addr uintptr) (int, bool) {
	return slices.BinarySearchFunc(m.live, addr, func(b modelBlock, a uintptr) int {
		switch {
		case b.addr() < a:
			return -1
		case b.addr() > a:
			return 1
		}
		return 0
	})
}

// add checks a block the heap just handed out for a request of req bytes
// (its class size, alignment and that it overlaps no live block) and
// records it. The caller writes its pattern.
func (m *modelRun) add(p unsafe.Pointer, req uintptr) modelBlock {
	m.nextID++
	return m.addID(p, req, m.nextID-1)
}

// addID is add for a block that keeps the pattern of id.
func (m *modelRun) addID(p unsafe.Pointer, req uintptr, id uint64) modelBlock {
	class := modelClass(req)
	return m.addKind(p, req, id, class, modelKind(class))
}

// addKind is addID for a block of a given class size and kind: a page run
// that Realloc grew in place past MaxLargeSize stays a page run, of whole
// 4 KiB pages.
func (m *modelRun) addKind(p unsafe.Pointer, req uintptr, id uint64, class uintptr, kind string) modelBlock {
	if p == nil {
		m.failf("nil block for %d bytes", req)
	}
	bs := m.h.BlockSize(p)
	if kind == "huge" && bs > class && bs-class <= bs/modelHugeReuseSlack && bs%chunk.OSPageSize() == 0 {
		// A cached mapping handed out whole (this model does not follow
		// the huge cache; modelLimitRun does).
		class = bs
	}
	if bs != class {
		m.failf("BlockSize(%p) = %d for a request of %d bytes, want the %s class size %d", p, bs, req, kind, class)
	}
	align := modelAlign(class)
	if kind == "large" {
		align = chunk.PageSize
	}
	if uintptr(p)%align != 0 {
		m.failf("%s block %p of %d bytes is not %d-byte aligned", kind, p, req, align)
	}
	i, found := m.find(uintptr(p))
	if found {
		m.failf("block %p for %d bytes is already live (%d bytes, id %d)", p, req, m.live[i].req, m.live[i].id)
	}
	if i > 0 {
		if prev := m.live[i-1]; prev.addr()+prev.class > uintptr(p) {
			m.failf("block [%p, +%d) for %d bytes overlaps the live block [%p, +%d)", p, class, req, prev.p, prev.class)
		}
	}
	if i < len(m.live) {
		if next := m.live[i]; uintptr(p)+class > next.addr() {
			m.failf("block [%p, +%d) for %d bytes overlaps the live block [%p, +%d)", p, class, req, next.p, next.class)
		}
	}
	b := modelBlock{p: p, req: req, class: class, id: id, kind: kind}
	m.live = slices.Insert(m.live, i, b)
	m.usage += class
	switch kind {
	case "large":
		m.largeBytes += class
	case "huge":
		m.hugeCount++
	}
	return b
}

// remove drops live block i from the model.
func (m *modelRun) remove(i int) modelBlock {
	b := m.live[i]
	m.live = slices.Delete(m.live, i, i+1)
	m.usage -= b.class
	switch b.kind {
	case "large":
		m.largeBytes -= b.class
	case "huge":
		m.hugeCount--
	}
	return b
}

// checkBlock checks that a live block still holds its pattern.
func (m *modelRun) checkBlock(b modelBlock, what string) {
	if off := modelCheck(b.p, b.req, b.id); off != b.req {
		m.failf("%s: %s block %p (%d bytes, id %d) lost its contents at offset %d", what, b.kind, b.p, b.req, b.id, off)
	}
}

// checkStats compares the heap's counters with the model's; it runs after
// every step.
func (m *modelRun) checkStats() {
	h := m.h
	if u := h.Usage(); u != m.usage {
		m.failf("Usage() = %d, model %d (live blocks %d)", u, m.usage, len(m.live))
	}
	if p := h.PeakUsage(); p != m.peak {
		m.failf("PeakUsage() = %d, model %d (usage %d)", p, m.peak, m.usage)
	}
	if ru := h.RealUsage(); ru < m.usage {
		m.failf("RealUsage() = %d is below Usage() = %d", ru, m.usage)
	}
	if ru, rp := h.RealUsage(), h.RealPeakUsage(); rp < ru {
		m.failf("RealPeakUsage() = %d is below RealUsage() = %d", rp, ru)
	}
}

// verifyAll checks every live block: disjoint, its BlockSize, its whole
// contents, and the per-bin and huge counts of Stats.
func (m *modelRun) verifyAll(what string) {
	var used [bins.NumBins]int
	hugeN, hugeBytes := 0, uintptr(0)
	for i, b := range m.live {
		if i > 0 {
			if prev := m.live[i-1]; prev.addr()+prev.class > b.addr() {
				m.failf("%s: live blocks [%p, +%d) and [%p, +%d) overlap", what, prev.p, prev.class, b.p, b.class)
			}
		}
		if bs := m.h.BlockSize(b.p); bs != b.class {
			m.failf("%s: BlockSize(%p) = %d, want %d (request %d)", what, b.p, bs, b.class, b.req)
		}
		m.checkBlock(b, what)
		switch b.kind {
		case "small":
			used[slices.Index(modelBinSizes[:], b.class)]++
		case "huge":
			hugeN++
			hugeBytes += b.class
		}
	}
	st := m.h.Stats()
	if st.Usage != m.usage || st.PeakUsage != m.peak {
		m.failf("%s: Stats usage %d peak %d, model %d %d", what, st.Usage, st.PeakUsage, m.usage, m.peak)
	}
	for b := range used {
		if st.Bins[b].Used != used[b] {
			m.failf("%s: Stats: bin %d (%d bytes) has %d blocks in use, model %d", what, b, modelBinSizes[b], st.Bins[b].Used, used[b])
		}
	}
	if st.HugeBlocks != hugeN || st.HugeBytes != hugeBytes {
		m.failf("%s: Stats: %d huge blocks of %d bytes, model %d of %d", what, st.HugeBlocks, st.HugeBytes, hugeN, hugeBytes)
	}
}

var modelLargeEdges = [...]uintptr{
	bins.MaxSize + 1, chunk.PageSize - 1, chunk.PageSize, chunk.PageSize + 1,
	2*chunk.PageSize - 1, 2 * chunk.PageSize, 2*chunk.PageSize + 1,
	zmm.MaxLargeSize - chunk.PageSize, zmm.MaxLargeSize - chunk.PageSize + 1,
	zmm.MaxLargeSize - 1, zmm.MaxLargeSize,
}

var modelHugeEdges = [...]uintptr{
	zmm.MaxLargeSize + 1, zmm.MaxLargeSize + chunk.PageSize, 1 << 20,
	chunk.Size - chunk.PageSize, chunk.Size - 1, chunk.Size, chunk.Size + 1,
	2*chunk.Size - 1, 2 * chunk.Size, 2*chunk.Size + 1, 4 * chunk.Size,
}

// smallSize returns a small request: bins spread evenly, exact class
// sizes and their neighbours, and sizes below the smallest slot.
func (m *modelRun) smallSize() uintptr {
	r := m.r
	switch x := r.IntN(20); {
	case x == 0:
		return uintptr(r.IntN(modelMinSlot + 1))
	case x <= 3:
		s := modelBinSizes[r.IntN(bins.NumBins)]
		return s - 1 + uintptr(r.IntN(3)) // s-1, s or s+1 (3073 is large)
	default:
		b := 1 + r.IntN(bins.NumBins-1)
		lo, hi := modelBinSizes[b-1]+1, modelBinSizes[b]
		return lo + uintptr(r.IntN(int(hi-lo+1)))
	}
}

// largeSize returns a large request: mostly a few pages (the page count
// is log-uniform), sometimes a page or class boundary.
func (m *modelRun) largeSize() uintptr {
	r := m.r
	if r.IntN(8) == 0 {
		return modelLargeEdges[r.IntN(len(modelLargeEdges))]
	}
	const maxPages = zmm.MaxLargeSize / chunk.PageSize
	pages := uintptr(math.Exp(r.Float64() * math.Log(maxPages)))
	pages = min(max(pages, 1), maxPages)
	return max((pages-1)*chunk.PageSize+1+uintptr(r.IntN(chunk.PageSize)), bins.MaxSize+1)
}

// hugeSize returns a huge request of up to 8 MiB.
func (m *modelRun) hugeSize() uintptr {
	r := m.r
	if r.IntN(3) == 0 {
		return modelHugeEdges[r.IntN(len(modelHugeEdges))]
	}
	return modelMinHugeReq + uintptr(r.IntN(modelMaxHuge-modelMinHugeReq+1))
}

// size returns a request of a kind drawn with the given weights, within
// the run's budgets for large and huge blocks.
func (m *modelRun) size(small, large, huge int) uintptr {
	x := m.r.IntN(small + large + huge)
	switch {
	case x >= small+large && m.hugeCount < m.cfg.hugeMax:
		return m.hugeSize()
	case x >= small && m.largeBytes < m.cfg.largeBudget:
		return m.largeSize()
	}
	return m.smallSize()
}

func (m *modelRun) allocSize() uintptr { return m.size(900, 90, 6) }

// reallocSize returns a new size for block b: a quarter of the time one
// near its size (the in-place paths), otherwise any kind.
func (m *modelRun) reallocSize(b modelBlock) uintptr {
	r := m.r
	if r.IntN(4) == 0 {
		clamp := func(v, lo, hi int) uintptr { return uintptr(min(max(v, lo), hi)) }
		switch b.kind {
		case "small":
			return uintptr(r.IntN(int(b.class) + 2))
		case "large":
			// Sometimes past MaxLargeSize: a run grows in place up to the
			// whole chunk when the pages after it are free.
			d := chunk.PageSize*(r.IntN(7)-3) + r.IntN(chunk.PageSize) - chunk.PageSize/2
			hi := zmm.MaxLargeSize
			if r.IntN(3) == 0 {
				d += chunk.PageSize * r.IntN(256)
				hi = chunk.MaxRunSize
			}
			return clamp(int(b.req)+d, bins.MaxSize+1, hi)
		default:
			ps := int(chunk.OSPageSize())
			d := ps*(r.IntN(9)-4) + r.IntN(ps) - ps/2
			if r.IntN(3) == 0 {
				d += chunk.Size * (r.IntN(3) - 1)
			}
			return clamp(int(b.req)+d, modelMinHugeReq, modelMaxHuge)
		}
	}
	return m.size(600, 300, 60)
}

// str returns a string of n random bytes (it shares memory with strBuf).
func (m *modelRun) str(n int) string {
	if n == 0 {
		return ""
	}
	off := m.r.IntN(len(m.strBuf) - n + 1)
	return unsafe.String(&m.strBuf[off], n)
}

func (m *modelRun) strLen() int {
	if m.r.IntN(8) == 0 {
		return bins.MaxSize - 2 + m.r.IntN(len(m.strBuf)-bins.MaxSize+3)
	}
	return int(max(m.smallSize(), 1)) - 1
}

// checkString checks that a block holds s and a NUL.
func (m *modelRun) checkString(p unsafe.Pointer, s string) {
	b := zmm.Bytes(p, len(s)+1)
	if string(b[:len(s)]) != s || b[len(s)] != 0 {
		m.failf("block %p does not hold the %d-byte string and its NUL", p, len(s))
	}
}

// elemSize is the element size of a Calloc or SafeAlloc.
func (m *modelRun) elemSize() uintptr {
	return [...]uintptr{1, 2, 3, 4, 8, 12, 16, 24, 100, 4096}[m.r.IntN(10)]
}

// runStep performs one random operation on the heap and the model.
func (m *modelRun) runStep() {
	h, r := m.h, m.r
	x := r.IntN(1000)
	m.args = [2]uintptr{}
	switch {
	case x < 1 || m.step == m.cfg.steps/3:
		m.op = "Reset"
		h.Reset()
		m.live = m.live[:0]
		m.usage, m.peak, m.largeBytes, m.hugeCount = 0, 0, 0, 0
	case x < 4 || m.step == 2*m.cfg.steps/3:
		m.op = "GC"
		if r.IntN(4) == 0 || m.step == 2*m.cfg.steps/3 {
			// Drain most blocks first, so that runs and whole chunks
			// empty out and the collection gives them back.
			m.op = "drain and GC"
			for len(m.live) > m.cfg.target/8 {
				i := r.IntN(len(m.live))
				h.Free(m.live[i].p)
				m.remove(i)
			}
		}
		h.GC()
		m.verifyAll("after GC")
	case x < 9:
		m.op = "ResetPeak"
		h.ResetPeak()
		m.peak = m.usage
	case x < 10:
		m.op = "Free(nil)"
		h.Free(nil)
	case x < 12:
		m.op = "overflow"
		for _, f := range []func(){
			func() { h.SafeAlloc(1<<33, 1<<31, 0) },
			func() { h.SafeAlloc(1, math.MaxUint64, 1) },
			func() { h.Calloc(math.MaxUint64/2+1, 2) },
			func() { h.Alloc(math.MaxUint64 - 1) },
		} {
			if err := zmm.Try(f); !errors.Is(err, zmm.ErrOverflow) {
				m.failf("an overflowing size gave %v, want ErrOverflow", err)
			}
		}
	case x < 20 && len(m.live) > 0:
		m.op = "BlockSize"
		b := m.live[r.IntN(len(m.live))]
		if bs := h.BlockSize(b.p); bs != b.class {
			m.failf("BlockSize(%p) = %d, want %d", b.p, bs, b.class)
		}
	case x < 25:
		m.op = "Realloc(nil)"
		size := m.allocSize()
		b := m.add(h.Realloc(nil, size), size)
		modelFill(b.p, b.req, b.id)
	case x < 180 && len(m.live) > 0:
		m.op = "Realloc"
		i := r.IntN(len(m.live))
		if r.IntN(4) == 0 {
			i = m.pickBig(i)
		}
		old := m.live[i]
		size := m.reallocSize(old)
		m.args = [2]uintptr{old.req, size}
		if r.IntN(3) == 0 {
			// Start from peak == usage, so that the peak rule of this
			// Realloc shows: growth in place raises the peak, a move does
			// not count the old and the new block at once.
			h.ResetPeak()
			m.peak = m.usage
		}
		q := h.Realloc(old.p, size)
		m.remove(i)
		// The pattern depends on the offset only: the kept prefix still
		// holds the old block's, and the rest gets the same.
		if q == old.p && old.kind == "large" && size > zmm.MaxLargeSize && size <= chunk.MaxRunSize {
			m.ops["Realloc large in place past MaxLargeSize"]++
			m.addKind(q, size, old.id, (size+chunk.PageSize-1)&^(chunk.PageSize-1), "large")
		} else {
			m.addID(q, size, old.id)
		}
		keep := min(old.req, size)
		if off := modelCheck(q, keep, old.id); off != keep {
			m.failf("Realloc(%p, %d) -> %p lost the contents at offset %d of %d kept bytes", old.p, size, q, off, keep)
		}
		modelFillFrom(q, keep, size, old.id)
	case len(m.live) > 0 && r.IntN(2*m.cfg.target) < len(m.live):
		m.op = "Free"
		i := r.IntN(len(m.live))
		b := m.live[i]
		if r.IntN(64) == 0 {
			m.checkBlock(b, "before Free")
		}
		h.Free(b.p)
		m.remove(i)
	default:
		m.alloc()
	}
	m.peak = max(m.peak, m.usage)
}

// pickBig returns the index of a random large or huge block, or def if
// there is none: most blocks are small, and the in-place paths of Realloc
// are those of the bigger kinds.
func (m *modelRun) pickBig(def int) int {
	n := 0
	for i, b := range m.live {
		if b.class > bins.MaxSize {
			if n++; m.r.IntN(n) == 0 {
				def = i
			}
		}
	}
	return def
}

// alloc allocates with one of Alloc, Calloc, SafeAlloc, Strdup, Strndup.
func (m *modelRun) alloc() {
	h, r := m.h, m.r
	switch x := r.IntN(100); {
	case x < 60:
		m.op = "Alloc"
		size := m.allocSize()
		m.args[0] = size
		b := m.add(h.Alloc(size), size)
		modelFill(b.p, b.req, b.id)
	case x < 75:
		m.op = "Calloc"
		total, elem := m.allocSize(), m.elemSize()
		n := total / elem
		b := m.add(h.Calloc(n, elem), n*elem)
		if off := modelZero(b.p, b.req); off != b.req {
			m.failf("Calloc(%d, %d) = %p is not zero at offset %d", n, elem, b.p, off)
		}
		modelFill(b.p, b.req, b.id)
	case x < 85:
		m.op = "SafeAlloc"
		total, elem := m.allocSize(), m.elemSize()
		n := total / elem
		b := m.add(h.SafeAlloc(n, elem, total-n*elem), total)
		modelFill(b.p, b.req, b.id)
	case x < 93:
		m.op = "Strdup"
		s := m.str(m.strLen())
		b := m.add(h.Strdup(s), uintptr(len(s))+1)
		m.checkString(b.p, s)
		modelFill(b.p, b.req, b.id)
	default:
		m.op = "Strndup"
		s := m.str(m.strLen())
		n := uintptr(r.IntN(len(s) + 8))
		want := s[:min(n, uintptr(len(s)))]
		b := m.add(h.Strndup(s, n), uintptr(len(want))+1)
		m.checkString(b.p, want)
		modelFill(b.p, b.req, b.id)
	}
}

func (m *modelRun) run() {
	defer func() {
		if e := recover(); e != nil {
			m.t.Fatalf("seed %d step %d op %s: panic: %v\n%s", m.seed, m.step, m.op, e, debug.Stack())
		}
	}()
	for m.step = 0; m.step < m.cfg.steps; m.step++ {
		m.runStep()
		m.ops[m.op]++
		m.checkStats()
		if m.step%m.cfg.verifyEvery == m.cfg.verifyEvery-1 {
			m.op = "verify"
			m.verifyAll("periodic check")
		}
	}
	m.op = "final verify"
	m.verifyAll("final check")
	// Free everything in random order: the heap must be empty again.
	for len(m.live) > 0 {
		m.op = "final Free"
		i := m.r.IntN(len(m.live))
		m.h.Free(m.live[i].p)
		m.remove(i)
		m.checkStats()
	}
	if u := m.h.Usage(); u != 0 {
		m.failf("Usage() = %d after every block was freed", u)
	}
}

func TestRandomAgainstModel(t *testing.T) {
	require.Equal(t, modelBinSizes[:], func() []uintptr {
		s := make([]uintptr, bins.NumBins)
		for i := range s {
			s[i] = uintptr(bins.Size[i])
		}
		return s
	}(), "the model's bin sizes are the package's")

	cfg := modelConfig{steps: 25_000, target: 1500, largeBudget: 8 << 20, hugeMax: 2, verifyEvery: 200}
	seeds := []uint64{1, 2, 3, 0x5eed}
	if testing.Short() {
		cfg = modelConfig{steps: 6000, target: 400, largeBudget: 6 << 20, hugeMax: 2, verifyEvery: 200}
		seeds = seeds[:2]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			h, err := zmm.New(layout()...)
			require.NoError(t, err)
			defer h.Close()
			m := &modelRun{
				t: t, h: h, cfg: cfg, seed: seed,
				r:      rand.New(rand.NewPCG(seed, 0x6d6f64656c)),
				strBuf: make([]byte, 32<<10),
				ops:    map[string]int{},
			}
			for i := range m.strBuf {
				m.strBuf[i] = byte(m.r.Uint32())
			}
			m.run()
			calls := 0
			for _, n := range m.ops {
				calls += n
			}
			t.Logf("%d steps: %v", calls, m.ops)
		})
	}
}

// The memory limit, checked exactly. The limit applies to RealUsage when a
// chunk or a huge block is mapped. Before it fails, the heap collects
// (gc(false)): cached chunks and cached huge mappings are unmapped, and so
// are chunks that hold only free bin runs. The test keeps every small
// block in the main chunk, together with one large block of MaxLargeSize
// that leaves no room there for another, and every other chunk holding two
// large blocks of MaxLargeSize (a "filler" pair, allocated and freed
// together), so no live chunk other than the main one can be emptied by a
// collection; what a collection gives back is then exactly the cached
// chunks and the cached huge mappings that Stats reports.

// The huge-mapping cache of hugecache.go: 32 mappings, 64 MiB at most,
// oldest evicted first; a mapping whose slack is at most a quarter of it is
// handed out whole, a larger one trimmed. The model below follows it and is
// checked against Stats.
const (
	modelHugeCacheSlots = 32
	modelHugeCacheBytes = 64 << 20
	modelHugeReuseSlack = 4
)

type modelLimitRun struct {
	t    *testing.T
	h    *zmm.Heap
	r    *rand.Rand
	seed uint64
	step int
	op   string

	ps                     uintptr
	limit                  uintptr
	smalls, fillers, huges []modelBlock
	cache                  []uintptr // cached huge mappings, oldest first
	usage, ru              uintptr   // model Usage and RealUsage
	nextID                 uint64
	fails, gcSaves         int // refused; served thanks to a collection
	fromCache, chunkReuse  int // huge blocks from the cache; fillers in a cached chunk
}

func (m *modelLimitRun) failf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("seed %d step %d op %s: %s", m.seed, m.step, m.op, fmt.Sprintf(format, args...))
}

// The blocks of this test are big: only a word every 64 KiB and the last
// word of each hold the pattern.
// n must be at least 8.
func modelStamp(p unsafe.Pointer, n uintptr, id uint64) {
	for off := uintptr(0); off+8 <= n; off += 64 << 10 {
		modelFillFrom(p, off, off+8, id)
	}
	modelFillFrom(p, n&^7-8, n&^7, id)
}

// modelStamped reports whether the stamps of a block of n bytes that lie
// below keep are intact.
func modelStamped(p unsafe.Pointer, n, keep uintptr, id uint64) bool {
	base := modelBase(id)
	ok := func(off uintptr) bool {
		return off+8 > keep || *(*uint64)(unsafe.Add(p, off)) == base+uint64(off/8)*modelMul
	}
	for off := uintptr(0); off+8 <= n; off += 64 << 10 {
		if !ok(off) {
			return false
		}
	}
	return ok(n&^7 - 8)
}

func (m *modelLimitRun) down(x uintptr) uintptr { return x &^ (m.ps - 1) }

func (m *modelLimitRun) cacheBytes() uintptr {
	var n uintptr
	for _, c := range m.cache {
		n += c
	}
	return n
}

// state reads what a collection would give back.
func (m *modelLimitRun) state() (ru, droppable uintptr, cachedChunks int) {
	st := m.h.Stats()
	if st.CachedHuge != len(m.cache) || st.CachedHugeBytes != m.cacheBytes() {
		m.failf("huge cache holds %d mappings of %d bytes, model %d of %d (%v)", st.CachedHuge, st.CachedHugeBytes, len(m.cache), m.cacheBytes(), m.cache)
	}
	ru = m.h.RealUsage()
	if ru != m.ru {
		m.failf("RealUsage() = %d, model %d", ru, m.ru)
	}
	if ru > m.limit {
		m.failf("RealUsage() = %d is above the limit %d", ru, m.limit)
	}
	return ru, uintptr(st.CachedChunks)*chunk.Size + st.CachedHugeBytes, st.CachedChunks
}

func (m *modelLimitRun) check() {
	m.t.Helper()
	if u := m.h.Usage(); u != m.usage {
		m.failf("Usage() = %d, model %d", u, m.usage)
	}
	if ru := m.h.RealUsage(); ru != m.ru {
		m.failf("RealUsage() = %d, model %d", ru, m.ru)
	}
	if l := m.h.Limit(); l != m.limit {
		m.failf("Limit() = %d, model %d", l, m.limit)
	}
	for _, set := range [][]modelBlock{m.smalls, m.fillers, m.huges} {
		for _, b := range set {
			if !modelStamped(b.p, b.req, b.req, b.id) {
				m.failf("%s block %p of %d bytes lost its contents", modelKind(b.class), b.p, b.req)
			}
			if bs := m.h.BlockSize(b.p); bs != b.class {
				m.failf("BlockSize(%p) = %d, want %d", b.p, bs, b.class)
			}
		}
	}
}

func (m *modelLimitRun) newBlock(p unsafe.Pointer, req uintptr) modelBlock {
	return m.newBlockOf(p, req, modelClass(req))
}

// newBlockOf is newBlock for a block of a given class size: a cached huge
// mapping handed out whole is larger than the request's class.
func (m *modelLimitRun) newBlockOf(p unsafe.Pointer, req, class uintptr) modelBlock {
	m.t.Helper()
	if bs := m.h.BlockSize(p); bs != class {
		m.failf("BlockSize(%p) = %d for %d bytes, want %d", p, bs, req, class)
	}
	if uintptr(p)%modelAlign(class) != 0 {
		m.failf("%s block %p is misaligned", modelKind(class), p)
	}
	b := modelBlock{p: p, req: req, class: class, id: m.nextID}
	m.nextID++
	modelStamp(p, req, b.id)
	m.usage += class
	return b
}

// expectLimit checks the outcome of an operation the model predicted.
func (m *modelLimitRun) expectLimit(err error, wantOK, gcRan bool, what string) {
	m.t.Helper()
	switch {
	case wantOK && err != nil:
		m.failf("%s failed with %v; the model says it fits (limit %d, RealUsage %d, collected first: %v)", what, err, m.limit, m.h.RealUsage(), gcRan)
	case !wantOK && err == nil:
		m.failf("%s succeeded; the model says it passes the limit %d (RealUsage now %d)", what, m.limit, m.h.RealUsage())
	case !wantOK && !errors.Is(err, zmm.ErrMemoryLimit):
		m.failf("%s failed with %v, want ErrMemoryLimit", what, err)
	}
	if !wantOK {
		m.fails++
	} else if gcRan {
		m.gcSaves++
	}
}

// allocHuge allocates a huge block of class size s (a random request that
// rounds to it) and checks that it fails exactly when the model says.
func (m *modelLimitRun) allocHuge(s uintptr) {
	m.t.Helper()
	ru, droppable, _ := m.state()
	req := max(s-uintptr(m.r.IntN(int(m.ps))), modelMinHugeReq)
	m.op = fmt.Sprintf("Alloc(%d) huge of %d", req, s)
	best := -1
	for i, c := range m.cache {
		if c >= s && (best < 0 || c <= m.cache[best]) {
			best = i
		}
	}
	var wantOK, gcRan bool
	class := s
	switch {
	case best >= 0 && m.cache[best]-s <= m.cache[best]/modelHugeReuseSlack: // served whole
		wantOK = true
		m.fromCache++
		class = m.cache[best]
		m.ru = ru
		m.cache = slices.Delete(m.cache, best, best+1)
	case best >= 0: // served from the cache, trimmed in place
		wantOK = true
		m.fromCache++
		m.ru = ru - (m.cache[best] - s)
		m.cache = slices.Delete(m.cache, best, best+1)
	case s <= m.limit-ru:
		wantOK = true
		m.ru = ru + s
	default: // collect, then try again
		gcRan = true
		m.cache = nil
		m.ru = ru - droppable
		if wantOK = s <= m.limit-m.ru; wantOK {
			m.ru += s
		}
	}
	var p unsafe.Pointer
	err := zmm.Try(func() { p = m.h.Alloc(req) })
	m.expectLimit(err, wantOK, gcRan, m.op)
	if err == nil {
		m.huges = append(m.huges, m.newBlockOf(p, req, class))
	}
	m.check()
	if err != nil {
		m.afterFailure()
	}
}

func (m *modelLimitRun) freeHuge(i int) {
	m.t.Helper()
	b := m.huges[i]
	m.op = fmt.Sprintf("Free huge of %d", b.class)
	m.huges = slices.Delete(m.huges, i, i+1)
	m.h.Free(b.p)
	m.usage -= b.class
	for len(m.cache) == modelHugeCacheSlots || m.cacheBytes()+b.class > modelHugeCacheBytes {
		m.ru -= m.cache[0]
		m.cache = m.cache[1:]
	}
	m.cache = append(m.cache, b.class)
	m.check()
}

// allocFiller takes two blocks of MaxLargeSize: the first needs a chunk of
// its own, cached or newly mapped; the second fits in the rest of it.
func (m *modelLimitRun) allocFiller() {
	m.t.Helper()
	m.op = "Alloc filler"
	ru, _, cachedChunks := m.state()
	var wantOK, gcRan bool
	switch {
	case cachedChunks > 0:
		wantOK = true
		m.chunkReuse++
	case chunk.Size <= m.limit-ru:
		wantOK = true
		m.ru = ru + chunk.Size
	default:
		gcRan = true
		m.ru = ru - m.cacheBytes() // no cached chunks here
		m.cache = nil
		if wantOK = chunk.Size <= m.limit-m.ru; wantOK {
			m.ru += chunk.Size
		}
	}
	var p unsafe.Pointer
	err := zmm.Try(func() { p = m.h.Alloc(zmm.MaxLargeSize) })
	m.expectLimit(err, wantOK, gcRan, m.op)
	if err == nil {
		first := m.newBlock(p, zmm.MaxLargeSize)
		if uintptr(p)&(chunk.Size-1) != chunk.PageSize {
			m.failf("the filler %p is not the first page of a chunk", p)
		}
		m.op = "Alloc filler partner"
		q := m.h.Alloc(zmm.MaxLargeSize) // no new chunk, so no limit check
		if uintptr(q)&^(chunk.Size-1) != uintptr(p)&^(chunk.Size-1) {
			m.failf("the filler partner %p is not in the chunk of %p", q, p)
		}
		m.fillers = append(m.fillers, first, m.newBlock(q, zmm.MaxLargeSize))
	}
	m.check()
	if err != nil {
		m.afterFailure()
	}
}

// freeFiller frees filler pair i; the chunk is cached or unmapped by the
// Zend MM's policy, which the model reads back from Stats.
func (m *modelLimitRun) freeFiller(i int) {
	m.t.Helper()
	m.op = "Free filler"
	ru, _, cachedBefore := m.state()
	for _, b := range m.fillers[2*i : 2*i+2] {
		m.h.Free(b.p)
		m.usage -= b.class
	}
	m.fillers = slices.Delete(m.fillers, 2*i, 2*i+2)
	cachedAfter := m.h.Stats().CachedChunks
	m.ru = m.h.RealUsage()
	switch {
	case cachedAfter == cachedBefore+1 && m.ru == ru:
	case cachedAfter == cachedBefore && m.ru == ru-chunk.Size:
	default:
		m.failf("freeing a chunk's only block: cached chunks %d -> %d, RealUsage %d -> %d", cachedBefore, cachedAfter, ru, m.ru)
	}
	m.check()
}

// reallocHuge grows a huge block near the limit, or shrinks it.
func (m *modelLimitRun) reallocHuge(i int) {
	m.t.Helper()
	ru, droppable, _ := m.state()
	b := m.huges[i]
	minS := modelClass(modelMinHugeReq)
	var s uintptr
	if m.r.IntN(3) == 0 && b.class > minS {
		s = minS + m.down(uintptr(m.r.Int64N(int64(b.class-minS))))
	} else {
		availNow, availGC := m.limit-ru, m.limit-(ru-droppable)
		d := [...]uintptr{m.down(availNow), m.down(availNow) + m.ps, m.down(availGC), m.down(availGC) + m.ps,
			m.ps * uintptr(1+m.r.IntN(1024))}[m.r.IntN(5)]
		s = b.class + max(d, m.ps)
	}
	// Any request in the OS page below s has class s, but with OS pages
	// above 4 KiB that page can reach below the huge threshold: stay huge.
	req := max(s-uintptr(m.r.IntN(int(m.ps))), modelMinHugeReq)
	m.op = fmt.Sprintf("Realloc huge %d -> %d (class %d)", b.class, req, s)
	var wantOK, gcRan bool
	switch {
	case s <= b.class:
		wantOK = true
		m.ru = ru - (b.class - s)
	case s-b.class <= m.limit-ru:
		wantOK = true
		m.ru = ru + s - b.class
	default:
		gcRan = true
		m.cache = nil
		m.ru = ru - droppable
		if wantOK = s-b.class <= m.limit-m.ru; wantOK {
			m.ru += s - b.class
		}
	}
	var q unsafe.Pointer
	err := zmm.Try(func() { q = m.h.Realloc(b.p, req) })
	m.expectLimit(err, wantOK, gcRan, m.op)
	if err == nil {
		if !modelStamped(q, b.req, min(b.req, req), b.id) {
			m.failf("Realloc %p -> %p lost the contents", b.p, q)
		}
		m.usage -= b.class
		m.huges[i] = m.newBlock(q, req)
	}
	m.check()
	if err != nil {
		m.afterFailure()
	}
}

// afterFailure checks that the heap still works: a small block and a huge
// block that fits are served.
func (m *modelLimitRun) afterFailure() {
	m.t.Helper()
	op := m.op
	m.op = op + " (then a small block)"
	p := m.h.Alloc(100)
	if bs := m.h.BlockSize(p); bs != 112 {
		m.failf("BlockSize = %d after a failure, want 112", bs)
	}
	m.h.Free(p)
	m.check()
	ru, _, _ := m.state()
	if s := m.down(m.limit - ru); s >= modelClass(modelMinHugeReq) && len(m.cache) == 0 {
		m.allocHuge(s) // fits without a collection: must work
		m.freeHuge(len(m.huges) - 1)
	}
	m.op = op
}

// setLimit moves the limit above the usage, between the usage and what a
// collection of the caches leaves (accepted: the caches are dropped), or
// below that (refused).
func (m *modelLimitRun) setLimit() {
	m.t.Helper()
	ru, droppable, cachedChunks := m.state()
	var limit uintptr
	wantOK := true
	switch x := m.r.IntN(4); {
	case x < 2 || droppable == 0 && x < 3:
		limit = ru + uintptr(m.r.IntN(max(1, int(48<<20)-int(ru))))
	case x < 3:
		limit = ru - droppable + uintptr(m.r.IntN(int(droppable)))
	default:
		limit = ru - droppable - 1 - uintptr(m.r.IntN(int(chunk.Size)))
		wantOK = false
	}
	m.op = fmt.Sprintf("SetLimit(%d)", limit)
	err := m.h.SetLimit(limit)
	if wantOK != (err == nil) || (err != nil && !errors.Is(err, zmm.ErrMemoryLimit)) {
		m.failf("SetLimit(%d) with RealUsage %d, %d bytes cached: %v", limit, ru, droppable, err)
	}
	if wantOK {
		m.limit = limit
		// Cached chunks go first, one at a time; then the huge cache at once.
		for ; m.ru > limit && cachedChunks > 0; cachedChunks-- {
			m.ru -= chunk.Size
		}
		if m.ru > limit {
			m.ru -= m.cacheBytes()
			m.cache = nil
		}
	}
	m.check()
}

func (m *modelLimitRun) gc() {
	m.t.Helper()
	m.op = "GC"
	ru, droppable, _ := m.state()
	if n := m.h.GC(); n < droppable {
		m.failf("GC() = %d, but %d bytes were cached", n, droppable)
	}
	m.ru = ru - droppable
	m.cache = nil
	m.check()
}

func (m *modelLimitRun) run(steps int) {
	h, r := m.h, m.r
	// Small blocks first: their runs stay in the main chunk, which then
	// has no room left for a filler. Small blocks are never freed here, and
	// the first one is of the size afterFailure allocates: no bin run is
	// ever entirely free, so the collection that the limit triggers never
	// gives a run back (that path has a test of its own:
	// TestRefillClearsStaleCheckWord).
	m.smalls = append(m.smalls, m.newBlock(h.Alloc(100), 100))
	for range 7 {
		size := modelMinSlot + uintptr(r.IntN(bins.MaxSize-modelMinSlot+1))
		m.smalls = append(m.smalls, m.newBlock(h.Alloc(size), size))
	}
	// A block of MaxLargeSize leaves fewer than MaxLargeSize/PageSize free
	// pages in the main chunk, so every filler needs a chunk of its own. It
	// stays for the whole run, and the 32 small blocks at most never need
	// more bin runs than the rest holds.
	m.smalls = append(m.smalls, m.newBlock(h.Alloc(zmm.MaxLargeSize), zmm.MaxLargeSize))
	m.check()
	for m.step = 0; m.step < steps; m.step++ {
		ru, droppable, _ := m.state()
		switch x := r.IntN(100); {
		case x < 30:
			availNow, availGC := m.limit-ru, m.limit-(ru-droppable)
			minS := modelClass(modelMinHugeReq)
			cands := []uintptr{m.down(availNow), m.down(availNow) + m.ps, m.down(availGC), m.down(availGC) + m.ps,
				minS + m.ps*uintptr(r.IntN(2048))}
			if len(m.cache) > 0 {
				c := slices.Max(m.cache)
				cands = append(cands, c, c+m.ps, c-m.ps)
			}
			m.allocHuge(max(cands[r.IntN(len(cands))], minS))
		case x < 42:
			m.allocFiller()
		case x < 52 && len(m.fillers) > 0:
			m.freeFiller(r.IntN(len(m.fillers) / 2))
		case x < 67 && len(m.huges) > 0:
			m.freeHuge(r.IntN(len(m.huges)))
		case x < 75:
			m.gc()
		case x < 87 && len(m.huges) > 0:
			m.reallocHuge(r.IntN(len(m.huges)))
		case x < 93:
			m.op = "small"
			if len(m.smalls) < 32 {
				size := modelMinSlot + uintptr(r.IntN(bins.MaxSize-modelMinSlot+1))
				m.smalls = append(m.smalls, m.newBlock(h.Alloc(size), size))
			}
			m.check()
		default:
			m.setLimit()
		}
	}
}

func TestModelMemoryLimitIsExact(t *testing.T) {
	seeds := []uint64{7, 8, 9}
	steps := 400
	if testing.Short() {
		seeds, steps = seeds[:1], 150
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x6c696d6974))
			ps := chunk.OSPageSize()
			limit := 24<<20 + uintptr(r.IntN(64))*ps + uintptr(r.IntN(int(ps)))
			h, err := zmm.New(layout(zmm.WithLimit(limit))...)
			require.NoError(t, err)
			defer h.Close()
			require.Equal(t, limit, h.Limit())
			m := &modelLimitRun{t: t, h: h, r: r, seed: seed, ps: ps, limit: limit, ru: h.RealUsage()}
			require.Equal(t, uintptr(chunk.Size), m.ru, "a new heap maps its main chunk")
			defer func() {
				if e := recover(); e != nil {
					t.Fatalf("seed %d step %d op %s: panic: %v\n%s", seed, m.step, m.op, e, debug.Stack())
				}
			}()
			m.run(steps)
			t.Logf("%d steps: %d allocations refused, %d served only thanks to a collection, %d huge blocks from the cache, %d fillers in a cached chunk",
				steps, m.fails, m.gcSaves, m.fromCache, m.chunkReuse)
			assert.Positive(t, m.fails, "the limit was never reached")
			assert.Positive(t, m.gcSaves, "a collection never made room")
		})
	}
}

// TestRefillClearsStaleCheckWord is the regression test for a bug the
// model test found: refill returned the first slot of a new bin run without
// clearing its check word (Alloc's fast path clears it). When the run is
// carved from pages whose old bytes are still there, the first slot still
// carried the valid free-list check word of an earlier free slot at that
// address: the new, live block was taken for a free one, and Free and
// BlockSize reported a double free.
// The collection that the memory limit triggers (gc(false)) gives fully
// free runs back to their chunk without zeroing them, so it is enough to
// hit the limit once. (GC() zeroes the free pages with madvise when they
// are whole OS pages, which hides the bug with 4 KiB OS pages but not with
// 16 or 64 KiB ones; a cached chunk reused by newChunk keeps its old bytes
// too.)
func TestRefillClearsStaleCheckWord(t *testing.T) {
	h, err := zmm.New(zmm.WithLimit(4 << 20))
	require.NoError(t, err)
	defer h.Close()
	// Fill one run of the 128-byte bin (32 slots, one page), then free it all.
	var ps []unsafe.Pointer
	for range 32 {
		ps = append(ps, h.Alloc(128))
	}
	first := ps[0]
	for _, p := range ps {
		h.Free(p)
	}
	// Reaching the limit makes the heap collect: the empty run goes back.
	err = zmm.Try(func() { h.Alloc(3 << 20) })
	require.ErrorIs(t, err, zmm.ErrMemoryLimit)
	// A new run of the bin is carved at the same page; its first slot is
	// handed out.
	p := h.Alloc(128)
	require.Equal(t, first, p, "the run was carved again at the same page")
	assert.NoError(t, zmm.Try(func() { assert.Equal(t, uintptr(128), h.BlockSize(p)) }), "BlockSize of a live block")
	assert.NoError(t, zmm.Try(func() { h.Free(p) }), "Free of a live block")
}
