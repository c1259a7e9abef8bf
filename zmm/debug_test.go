package zmm_test

// Tests of debug mode (WithDebug, ZMM_DEBUG), of the system and guard modes
// (WithAllocMode, ZMM_ALLOC) and of the Zend-format leak report. Every
// top-level name here starts with "dbg" (or is a Test function) so that it
// cannot clash with the helpers of the other test files of package zmm_test.
//
// Sites are computed in the test: an allocation and a call of dbgLine share
// a line ("p, line := h.Alloc(n), dbgLine()"), so the expected file:line is
// this file and the line dbgLine returns.

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/bins"
	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/internal/childtest"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmm/internal/wraptest"
)

// dbgFile is the path of this file as the runtime reports it.
var dbgFile = func() string { _, f, _, _ := runtime.Caller(0); return f }()

const dbgFuncPrefix = "github.com/gozmm/zmm/zmm_test."

// dbgLine returns the line it is called from.
func dbgLine() int { _, _, l, _ := runtime.Caller(1); return l }

// dbgSite is "file:line" of a line of this file, as messages print a site.
func dbgSite(line int) string { return fmt.Sprintf("%s:%d", dbgFile, line) }

// dbgNew makes a debug heap whose leak report goes to the returned buffer.
func dbgNew(t testing.TB, opts ...zmm.Option) (*zmm.Heap, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	// Debug mode on chunks unless the test asks for another mode: under
	// ZMM_ALLOC=guard the overflow tests would fault on the spot.
	h, err := zmm.New(append([]zmm.Option{zmm.WithDebug(true), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(&buf)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h, &buf
}

// dbgCatch runs f and returns the *zmm.Error it panicked with.
func dbgCatch(t testing.TB, f func()) *zmm.Error {
	t.Helper()
	err := zmm.Try(f)
	require.Error(t, err, "expected a zmm panic")
	var ze *zmm.Error
	require.ErrorAs(t, err, &ze)
	return ze
}

// dbgFill writes a pattern derived from seed into the n bytes at p.
func dbgFill(p unsafe.Pointer, n uintptr, seed byte) {
	for i, b := 0, zmm.Bytes(p, int(n)); i < len(b); i++ {
		b[i] = seed + byte(i*7)
	}
}

// dbgHolds reports whether the n bytes at p still hold dbgFill's pattern.
func dbgHolds(p unsafe.Pointer, n uintptr, seed byte) bool {
	for i, b := 0, zmm.Bytes(p, int(n)); i < len(b); i++ {
		if b[i] != seed+byte(i*7) {
			return false
		}
	}
	return true
}

// dbgByte is the byte at p+off (off may be negative).
func dbgByte(p unsafe.Pointer, off int) *byte { return (*byte)(unsafe.Add(p, off)) }

func dbgRoundHuge(n uintptr) uintptr {
	ps := chunk.OSPageSize()
	return (n + ps - 1) &^ (ps - 1)
}

// dbgClass is the class size (what Usage counts) of an internal request of
// n bytes in chunk mode.
func dbgClass(n uintptr) uintptr {
	switch {
	case n <= bins.MaxSize:
		return uintptr(bins.Size[bins.SizeToBin(max(n, 16))])
	case n <= zmm.MaxLargeSize:
		return (n + chunk.PageSize - 1) &^ (chunk.PageSize - 1)
	}
	return dbgRoundHuge(n)
}

// dbgDebugClass is what a debug block of n requested bytes counts in Usage.
func dbgDebugClass(n uintptr) uintptr {
	if n+debugheader.Overhead > zmm.MaxLargeSize {
		return dbgRoundHuge(n + debugheader.Overhead)
	}
	return dbgClass(n + debugheader.Overhead)
}

const (
	dbgPast1  = "a write 1 byte(s) past its end (at offset %d of a %d-byte block)"
	dbgBefore = "the guard before the block was overwritten (a write before its start)"
	dbgHuge   = 3 << 20
)

var dbgKinds = []struct {
	name string
	size uintptr
}{{"small", 100}, {"large", 5000}, {"huge", dbgHuge}}

// --- debug mode: overflows ---------------------------------------------

func TestDebugOverflowIsCaught(t *testing.T) {
	for _, k := range dbgKinds {
		for _, where := range []string{"after", "before"} {
			for _, op := range []string{"Free", "Realloc", "BlockSize", "Check"} {
				t.Run(k.name+"/"+where+"/"+op, func(t *testing.T) {
					dbgOverflowCase(t, k.size, where, op)
				})
			}
		}
	}
}

func dbgOverflowCase(t *testing.T, size uintptr, where, op string) {
	h, _ := dbgNew(t)
	before := h.Alloc(64)
	dbgFill(before, 64, 1)
	p, line := h.Alloc(size), dbgLine()
	dbgFill(p, size, 2)
	after := h.Alloc(64)
	dbgFill(after, 64, 3)
	usage := h.Usage()
	require.Equal(t, size, h.BlockSize(p), "debug BlockSize is the requested size")
	require.NoError(t, h.Check())

	off, dmg := int(size), fmt.Sprintf(dbgPast1, size, size)
	if where == "before" {
		off, dmg = -1, dbgBefore
	}
	*dbgByte(p, off) ^= 0xFF
	addr := uintptr(p)

	if op == "Check" {
		err := h.Check()
		require.Error(t, err)
		assert.ErrorIs(t, err, zmm.ErrCorrupted)
		var ce *zmm.CheckError
		require.ErrorAs(t, err, &ce)
		require.Len(t, ce.Problems, 1)
		pr := ce.Problems[0]
		assert.Equal(t, addr, pr.Addr)
		assert.Equal(t, size, pr.Size)
		assert.Equal(t, dbgFile, pr.Site.File)
		assert.Equal(t, line, pr.Site.Line)
		assert.Equal(t, dmg, pr.What)
		assert.Equal(t, fmt.Sprintf("zmm: heap check found 1 problem(s):\n\tblock 0x%x (%d bytes, allocated at %s): %s",
			addr, size, dbgSite(line), dmg), err.Error())
	} else {
		e := dbgCatch(t, func() {
			switch op {
			case "Free":
				h.Free(p)
			case "Realloc":
				h.Realloc(p, 2*size)
			case "BlockSize":
				h.BlockSize(p)
			}
		})
		assert.ErrorIs(t, e, zmm.ErrCorrupted)
		assert.Equal(t, op, e.Op)
		assert.Equal(t, addr, e.Ptr)
		assert.Equal(t, fmt.Sprintf("zmm: %s(0x%x): heap corrupted: block 0x%x (%d bytes, allocated at %s): %s",
			op, addr, addr, size, dbgSite(line), dmg), e.Msg)
	}

	// Nothing was freed or allocated, the neighbours and the block's own
	// bytes are intact.
	assert.Equal(t, usage, h.Usage())
	assert.True(t, dbgHolds(before, 64, 1), "block before intact")
	assert.True(t, dbgHolds(after, 64, 3), "block after intact")
	assert.True(t, dbgHolds(p, size, 2), "the damaged block's bytes intact")

	// The heap keeps serving other blocks.
	q := h.Alloc(size)
	assert.NotEqual(t, p, q)
	dbgFill(q, size, 4)
	assert.True(t, dbgHolds(q, size, 4))
	h.Free(q)

	// The damaged block was not freed: repaired, it frees normally.
	*dbgByte(p, off) ^= 0xFF
	require.NoError(t, h.Check())
	h.Free(p)
	h.Free(before)
	h.Free(after)
	assert.Zero(t, h.Usage())
	assert.Empty(t, h.Leaks())
}

// --- debug mode: write after free ---------------------------------------

func TestDebugWriteAfterFree(t *testing.T) {
	h, _ := dbgNew(t)
	keep := h.Alloc(100)
	dbgFill(keep, 100, 9)
	p, line := h.Alloc(100), dbgLine()
	h.Free(p)
	require.NoError(t, h.Check(), "a freed block is not a problem")
	*dbgByte(p, 5) = 0x42
	addr := uintptr(p)

	err := h.Check()
	require.Error(t, err)
	assert.ErrorIs(t, err, zmm.ErrCorrupted)
	assert.Equal(t, fmt.Sprintf("zmm: heap check found 1 problem(s):\n\tblock 0x%x (100 bytes, allocated at %s): freed, and byte 5 of it was written after it was freed",
		addr, dbgSite(line)), err.Error())

	// The next Alloc of the bin pops the slot (LIFO) and reports it.
	usage := h.Usage()
	e := dbgCatch(t, func() { h.Alloc(100) })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Equal(t, "Alloc", e.Op)
	assert.Equal(t, addr, e.Ptr)
	assert.Equal(t, fmt.Sprintf("zmm: heap corrupted: freed block 0x%x (100 bytes, allocated at %s): byte 5 of it was written after it was freed",
		addr, dbgSite(line)), e.Msg)
	assert.Equal(t, usage, h.Usage())

	// The heap keeps working, and never hands the slot out again.
	var ps []unsafe.Pointer
	for i := range 100 {
		q := h.Alloc(100)
		require.NotEqual(t, p, q, "the damaged slot is quarantined")
		dbgFill(q, 100, byte(i))
		ps = append(ps, q)
	}
	for i, q := range ps {
		require.True(t, dbgHolds(q, 100, byte(i)))
		h.Free(q)
	}
	assert.True(t, dbgHolds(keep, 100, 9))
	h.Free(keep)
	assert.Zero(t, h.Usage())
	assert.Empty(t, h.Leaks(), "a quarantined slot is not a leak")
}

func TestDebugWriteAfterFreeOverLink(t *testing.T) {
	// A write just before a freed block's user bytes lands on its free-list
	// link: the Alloc that would follow it reports the block and abandons
	// the list.
	h, _ := dbgNew(t)
	p, line := h.Alloc(100), dbgLine()
	h.Free(p)
	*dbgByte(p, -1) ^= 0xFF
	addr := uintptr(p)
	e := dbgCatch(t, func() { h.Alloc(100) })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Equal(t, fmt.Sprintf("zmm: heap corrupted: freed block 0x%x (100 bytes, allocated at %s): its free-list link was overwritten (a write after free, or an overflow from the block before it)",
		addr, dbgSite(line)), e.Msg)
	q := h.Alloc(100)
	assert.NotEqual(t, p, q)
	dbgFill(q, 100, 1)
	h.Free(q)
	assert.Zero(t, h.Usage())
}

// Regression: a freed block whose free-list link (the 16 bytes before its
// user bytes) was overwritten used to stop looking free: Leaks (and so the
// leak report) listed it as live although the program freed it, and Check
// reported it a second time as a live block with a broken head guard. It is
// now quarantined after the report, and Check reports it once.
func TestSmashedFreeLinkIsReportedOnceNotAsLeak(t *testing.T) {
	h, _ := dbgNew(t)
	p := h.Alloc(100)
	h.Free(p)
	*dbgByte(p, -1) ^= 0xFF
	_ = zmm.Try(func() { h.Alloc(100) }) // reported and quarantined here
	assert.Empty(t, h.Leaks(), "the program freed every block: nothing leaked")
}

// --- debug mode: double free -------------------------------------------

func TestDebugDoubleFree(t *testing.T) {
	h, _ := dbgNew(t)

	p, line := h.Alloc(100), dbgLine()
	h.Free(p)
	e := dbgCatch(t, func() { h.Free(p) })
	assert.ErrorIs(t, e, zmm.ErrDoubleFree)
	assert.Equal(t, "Free", e.Op)
	assert.Equal(t, uintptr(p), e.Ptr)
	assert.Equal(t, fmt.Sprintf("zmm: Free(0x%x): double free: block 0x%x (100 bytes, allocated at %s) is already free",
		uintptr(p), uintptr(p), dbgSite(line)), e.Msg)
	for _, op := range []func(){func() { h.Realloc(p, 10) }, func() { h.BlockSize(p) }} {
		assert.ErrorIs(t, dbgCatch(t, op), zmm.ErrDoubleFree)
	}

	l := h.Alloc(5000)
	h.Free(l)
	e = dbgCatch(t, func() { h.Free(l) })
	assert.ErrorIs(t, e, zmm.ErrDoubleFree)
	assert.Equal(t, fmt.Sprintf("zmm: Free(0x%x): double free: no block here, the page is free", uintptr(l)), e.Msg)

	g := h.Alloc(dbgHuge)
	h.Free(g)
	e = dbgCatch(t, func() { h.Free(g) })
	assert.ErrorIs(t, e, zmm.ErrDoubleFree)
	assert.Equal(t, fmt.Sprintf("zmm: Free(0x%x): double free: the huge block was already freed", uintptr(g)), e.Msg)

	assert.Zero(t, h.Usage())
	assert.NoError(t, h.Check())
	q := h.Alloc(100)
	dbgFill(q, 100, 1)
	h.Free(q)
}

// --- debug mode: Check --------------------------------------------------

func TestDebugCheckHealthyHeap(t *testing.T) {
	h, _ := dbgNew(t)
	require.NoError(t, h.Check())
	var live []unsafe.Pointer
	for i, n := range []uintptr{0, 1, 8, 100, 3000, 3032, 3033, 5000, 100000, dbgHuge} {
		p := h.Alloc(n)
		dbgFill(p, n, byte(i))
		live = append(live, p)
		if i%2 == 0 {
			h.Free(h.Alloc(n))
		}
	}
	live[3] = h.Realloc(live[3], 400)
	live[5] = h.Realloc(live[5], 10)
	assert.NoError(t, h.Check())
	for _, p := range live {
		h.Free(p)
	}
	assert.NoError(t, h.Check())
}

func TestDebugCheckListsEveryProblem(t *testing.T) {
	h, _ := dbgNew(t)
	s1, l1 := h.Alloc(100), dbgLine()
	s2, l2 := h.Alloc(100), dbgLine()
	fr, l3 := h.Alloc(100), dbgLine()
	lg, l4 := h.Alloc(5000), dbgLine()
	hg, l5 := h.Alloc(dbgHuge), dbgLine()
	ok := h.Alloc(200)
	h.Free(fr)

	*dbgByte(s1, 100) ^= 0xFF
	*dbgByte(s2, -1) ^= 0xFF
	*dbgByte(fr, 99) ^= 0xFF
	*dbgByte(lg, 5000) ^= 0xFF
	*dbgByte(hg, -3) ^= 0xFF

	type prob struct {
		addr uintptr
		text string
	}
	chunkProbs := []prob{
		{uintptr(s1), fmt.Sprintf("block 0x%x (100 bytes, allocated at %s): "+dbgPast1, uintptr(s1), dbgSite(l1), 100, 100)},
		{uintptr(s2), fmt.Sprintf("block 0x%x (100 bytes, allocated at %s): %s", uintptr(s2), dbgSite(l2), dbgBefore)},
		{uintptr(fr), fmt.Sprintf("block 0x%x (100 bytes, allocated at %s): freed, and byte 99 of it was written after it was freed", uintptr(fr), dbgSite(l3))},
		{uintptr(lg), fmt.Sprintf("block 0x%x (5000 bytes, allocated at %s): "+dbgPast1, uintptr(lg), dbgSite(l4), 5000, 5000)},
	}
	// The chunks are walked in address order, the huge blocks after them.
	slices.SortFunc(chunkProbs, func(a, b prob) int { return cmp.Compare(a.addr, b.addr) })
	want := fmt.Sprintf("zmm: heap check found %d problem(s):", len(chunkProbs)+1)
	for _, p := range chunkProbs {
		want += "\n\t" + p.text
	}
	want += fmt.Sprintf("\n\tblock 0x%x (%d bytes, allocated at %s): %s", uintptr(hg), dbgHuge, dbgSite(l5), dbgBefore)

	err := h.Check()
	require.Error(t, err)
	assert.ErrorIs(t, err, zmm.ErrCorrupted)
	var ce *zmm.CheckError
	require.ErrorAs(t, err, &ce)
	assert.Len(t, ce.Problems, 5)
	assert.Equal(t, want, err.Error())
	assert.Equal(t, err.Error(), h.Check().Error(), "Check changes nothing")

	// Still usable.
	dbgFill(ok, 200, 5)
	q := h.Alloc(300)
	h.Free(q)
	assert.True(t, dbgHolds(ok, 200, 5))
}

// --- debug mode: Leaks ----------------------------------------------------

func TestDebugLeaks(t *testing.T) {
	h, _ := dbgNew(t)
	a, la := h.Alloc(10), dbgLine()
	b, lb := h.Alloc(5000), dbgLine()
	c, lc := h.Alloc(dbgHuge), dbgLine()
	r, lr0 := h.Alloc(100), dbgLine()
	dbgFill(r, 100, 7)
	r, lr1 := h.Realloc(r, 200), dbgLine()
	assert.True(t, dbgHolds(r, 100, 7))
	s, ls := h.Strdup("leak"), dbgLine()
	h.Free(h.Alloc(50))
	h.Free(h.Realloc(h.Alloc(50), 60))

	type leak struct {
		addr, size uintptr
		fn         string
		line, orig int
	}
	fn := dbgFuncPrefix + "TestDebugLeaks"
	chunkLeaks := []leak{
		{uintptr(a), 10, fn, la, 0},
		{uintptr(b), 5000, fn, lb, 0},
		{uintptr(r), 200, fn, lr1, lr0},
		{uintptr(s), 5, fn, ls, 0},
	}
	slices.SortFunc(chunkLeaks, func(x, y leak) int { return cmp.Compare(x.addr, y.addr) })
	want := append([]leak{{uintptr(c), dbgHuge, fn, lc, 0}}, chunkLeaks...) // huge blocks first
	var got []leak
	for _, l := range h.Leaks() {
		assert.Equal(t, dbgFile, l.Site.File)
		g := leak{l.Addr, l.Size, l.Site.Function, l.Site.Line, 0}
		if l.Orig != (zmm.Site{}) {
			assert.Equal(t, dbgFile, l.Orig.File)
			assert.Equal(t, fn, l.Orig.Function)
			g.orig = l.Orig.Line
		}
		got = append(got, g)
	}
	assert.Equal(t, want, got)

	// A second realloc keeps the first allocation as the original site.
	r, lr2 := h.Realloc(r, 300), dbgLine()
	for _, l := range h.Leaks() {
		if l.Addr == uintptr(r) {
			assert.Equal(t, lr2, l.Site.Line)
			assert.Equal(t, lr0, l.Orig.Line)
			assert.Equal(t, dbgSite(lr2), l.Site.String())
		}
	}

	for _, p := range []unsafe.Pointer{a, b, c, r, s} {
		h.Free(p)
	}
	assert.Empty(t, h.Leaks())
}

func TestLeaksOfANormalHeapIsNil(t *testing.T) {
	h, err := zmm.New(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	require.NoError(t, err)
	h.Alloc(10)
	assert.Nil(t, h.Leaks())
	h.Close()
	assert.Nil(t, h.Leaks(), "closed heap")
}

// --- the leak report ----------------------------------------------------

var dbgStampRE = regexp.MustCompile(`^\[(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\]  Script:  '(.*)'$`)

// dbgScript is the placeholder for a script line in a wanted report.
const dbgScript = "\x00script"

// dbgCheckReport compares a report line by line with want, where a
// dbgScript line must be a script line naming script, stamped now.
func dbgCheckReport(t *testing.T, got string, want []string, script string) {
	t.Helper()
	require.True(t, strings.HasSuffix(got, "\n"), "the report ends with a newline")
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	require.Len(t, lines, len(want), "report:\n%s", got)
	for i, w := range want {
		if w != dbgScript {
			assert.Equal(t, w, lines[i], "line %d", i+1)
			continue
		}
		m := dbgStampRE.FindStringSubmatch(lines[i])
		if assert.NotNil(t, m, "line %d: %q", i+1, lines[i]) {
			assert.Equal(t, script, m[2])
			at, err := time.ParseInLocation("Mon Jan _2 15:04:05 2006", m[1], time.Local)
			if assert.NoError(t, err) {
				assert.WithinDuration(t, time.Now(), at, time.Minute)
			}
		}
	}
}

func dbgFreeing(line int, addr, size uintptr, script string) string {
	return fmt.Sprintf("%s(%d) :  Freeing 0x%016x (%d bytes), script=%s", dbgFile, line, addr, size, script)
}

func dbgRelayed(line int) string {
	return fmt.Sprintf("%s(%d) : Actual location (location was relayed)", dbgFile, line)
}

func TestLeakReportAtReset(t *testing.T) {
	const name = "/var/www/index.php"
	h, buf := dbgNew(t, zmm.WithName(name))
	g, lg := h.Alloc(dbgHuge), dbgLine()
	a, la := h.Alloc(10), dbgLine()
	var bs []unsafe.Pointer
	var lb int
	for range 3 {
		var p unsafe.Pointer
		p, lb = h.Alloc(30), dbgLine()
		bs = append(bs, p)
	}
	c, lc0 := h.Alloc(100), dbgLine()
	c, lc1 := h.Realloc(c, 200), dbgLine()
	var ds []unsafe.Pointer
	var ld int
	for _, n := range []uintptr{50, 5000} {
		var p unsafe.Pointer
		p, ld = h.Alloc(n), dbgLine()
		ds = append(ds, p)
	}
	h.Free(h.Alloc(3000)) // freed: not in the report

	// The report walks huge blocks, then the chunk in address order; each
	// bin's run was carved when the bin was first used, so that is the
	// order of the allocations above.
	addrs := []uintptr{uintptr(a), uintptr(bs[0]), uintptr(bs[1]), uintptr(bs[2]), uintptr(c), uintptr(ds[0]), uintptr(ds[1])}
	require.True(t, slices.IsSorted(addrs), "allocation order is address order")

	h.Reset()
	want := []string{
		dbgScript, dbgFreeing(lg, uintptr(g), dbgHuge, name),
		dbgScript, dbgFreeing(la, uintptr(a), 10, name),
		dbgScript, dbgFreeing(lb, uintptr(bs[0]), 30, name),
		"Last leak repeated 2 times",
		dbgScript, dbgFreeing(lc1, uintptr(c), 200, name), dbgRelayed(lc0),
		dbgScript, dbgFreeing(ld, uintptr(ds[0]), 50, name),
		"Last leak repeated 1 time",
		"=== Total 8 memory leaks detected ===",
	}
	dbgCheckReport(t, buf.String(), want, name)

	// Reset released everything; the heap works and a clean request
	// reports nothing.
	assert.Zero(t, h.Usage())
	assert.Empty(t, h.Leaks())
	buf.Reset()
	p := h.Alloc(100)
	dbgFill(p, 100, 1)
	h.Free(p)
	h.Reset()
	assert.Empty(t, buf.String(), "no leaks, no report")

	// At Close too.
	p, lp := h.Alloc(64), dbgLine()
	h.Close()
	dbgCheckReport(t, buf.String(), []string{
		dbgScript, dbgFreeing(lp, uintptr(p), 64, name),
		"=== Total 1 memory leaks detected ===",
	}, name)
}

func TestLeakReportAtCloseDefaultNameAndOrder(t *testing.T) {
	h, buf := dbgNew(t)
	var ps []unsafe.Pointer
	var lines []int
	for _, n := range []uintptr{1, 8} {
		p, l := h.Alloc(n), dbgLine()
		ps, lines = append(ps, p), append(lines, l)
		q, l2 := h.Alloc(n), dbgLine()
		ps, lines = append(ps, q), append(lines, l2)
	}
	// 1 and 8 share a bin: the run holds, in address order, blocks from
	// the two lines alternately; the later ones fold into the first two.
	require.True(t, slices.IsSorted([]uintptr{uintptr(ps[0]), uintptr(ps[1]), uintptr(ps[2]), uintptr(ps[3])}))
	h.Close()
	dbgCheckReport(t, buf.String(), []string{
		dbgScript, dbgFreeing(lines[0], uintptr(ps[0]), 1, "-"),
		"Last leak repeated 1 time",
		dbgScript, dbgFreeing(lines[1], uintptr(ps[1]), 1, "-"),
		"Last leak repeated 1 time",
		"=== Total 4 memory leaks detected ===",
	}, "-")
}

func TestWriteLeakReportGolden(t *testing.T) {
	at := time.Date(2024, time.March, 5, 7, 8, 9, 0, time.UTC)
	site := func(file string, line int) zmm.Site { return zmm.Site{File: file, Line: line} }
	leaks := []zmm.Leak{
		{Addr: 0x7f0000200000, Size: 3145728, Site: site("/src/ext/a.c", 10)},
		{Addr: 0x7f00000010a0, Size: 16, Site: site("/src/b.c", 20)},
		{Addr: 0x7f00000010c0, Size: 24, Site: site("/src/b.c", 21), Orig: site("/src/c.c", 5)},
		{Addr: 0x7f00000010e0, Size: 16, Site: site("/src/b.c", 20)},
		{Addr: 0x7f0000002000, Size: 5000, Site: site("/src/ext/a.c", 10)},
		{Addr: 0x7f0000004000, Size: 9, Site: site("/src/b.c", 20)},
		{Addr: 0x10, Size: 0, Site: site("/src/d.c", 1)},
	}
	var b strings.Builder
	require.NoError(t, zmm.WriteLeakReport(&b, leaks, "t.php", at))
	assert.Equal(t, `[Tue Mar  5 07:08:09 2024]  Script:  't.php'
/src/ext/a.c(10) :  Freeing 0x00007f0000200000 (3145728 bytes), script=t.php
Last leak repeated 1 time
[Tue Mar  5 07:08:09 2024]  Script:  't.php'
/src/b.c(20) :  Freeing 0x00007f00000010a0 (16 bytes), script=t.php
Last leak repeated 2 times
[Tue Mar  5 07:08:09 2024]  Script:  't.php'
/src/b.c(21) :  Freeing 0x00007f00000010c0 (24 bytes), script=t.php
/src/c.c(5) : Actual location (location was relayed)
[Tue Mar  5 07:08:09 2024]  Script:  't.php'
/src/d.c(1) :  Freeing 0x0000000000000010 (0 bytes), script=t.php
=== Total 7 memory leaks detected ===
`, b.String())

	b.Reset()
	at = time.Date(2023, time.November, 19, 23, 59, 1, 0, time.UTC)
	require.NoError(t, zmm.WriteLeakReport(&b, leaks[1:2], "-", at))
	assert.Equal(t, "[Sun Nov 19 23:59:01 2023]  Script:  '-'\n"+
		"/src/b.c(20) :  Freeing 0x00007f00000010a0 (16 bytes), script=-\n"+
		"=== Total 1 memory leaks detected ===\n", b.String())

	b.Reset()
	require.NoError(t, zmm.WriteLeakReport(&b, nil, "-", at))
	assert.Empty(t, b.String(), "no leaks, no report")

	werr := errors.New("disk full")
	assert.ErrorIs(t, zmm.WriteLeakReport(dbgFailWriter{werr}, leaks, "-", at), werr)
}

type dbgFailWriter struct{ err error }

func (w dbgFailWriter) Write([]byte) (int, error) { return 0, w.err }

// dbgCaptureStderr runs f with os.Stderr redirected and returns what was
// written to it.
func dbgCaptureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	old := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	func() {
		defer func() { os.Stderr = old }()
		f()
	}()
	require.NoError(t, w.Close())
	return <-done
}

func TestLeakReportDestination(t *testing.T) {
	// WithLeakReport(nil) silences the report; Leaks still works.
	out := dbgCaptureStderr(t, func() {
		h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(nil))
		require.NoError(t, err)
		h.Alloc(10)
		assert.Len(t, h.Leaks(), 1)
		h.Reset()
		h.Alloc(10)
		h.Close()
	})
	assert.Empty(t, out)

	// By default the report goes to stderr.
	var p unsafe.Pointer
	var line int
	out = dbgCaptureStderr(t, func() {
		h, err := zmm.New(zmm.WithDebug(true), zmm.WithName("x"))
		require.NoError(t, err)
		p, line = h.Alloc(10), dbgLine()
		h.Close()
	})
	dbgCheckReport(t, out, []string{dbgScript, dbgFreeing(line, uintptr(p), 10, "x"),
		"=== Total 1 memory leaks detected ==="}, "x")
}

// --- concurrent use ------------------------------------------------------

// dbgBlockingWriter blocks the first Write until released.
type dbgBlockingWriter struct {
	inside, release chan struct{}
	once            sync.Once
}

func (w *dbgBlockingWriter) Write(b []byte) (int, error) {
	w.once.Do(func() {
		close(w.inside)
		<-w.release
	})
	return len(b), nil
}

func TestDebugConcurrentUseIsDetected(t *testing.T) {
	// Deterministic: one goroutine is held inside Reset (in the leak
	// report's writer) while this one calls into the heap.
	w := &dbgBlockingWriter{inside: make(chan struct{}), release: make(chan struct{})}
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(w))
	require.NoError(t, err)
	defer h.Close()
	p := h.Alloc(10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Reset()
	}()
	<-w.inside
	ops := map[string]func(){
		"Alloc":     func() { h.Alloc(10) },
		"Free":      func() { h.Free(p) },
		"Realloc":   func() { h.Realloc(p, 20) },
		"BlockSize": func() { h.BlockSize(p) },
		"Check":     func() { _ = h.Check() },
		"Leaks":     func() { h.Leaks() },
		"Reset":     func() { h.Reset() },
		"Close":     func() { h.Close() },
	}
	for op, f := range ops {
		e := dbgCatch(t, f)
		assert.ErrorIs(t, e, zmm.ErrConcurrentUse, op)
		assert.Equal(t, op, e.Op)
		assert.True(t, strings.HasPrefix(e.Msg, "zmm: concurrent use of a single-owner heap: "+op+" while another goroutine is inside Reset"), e.Msg)
	}
	close(w.release)
	<-done

	// Afterwards the heap works, from any goroutine, one at a time.
	q := h.Alloc(100)
	dbgFill(q, 100, 1)
	freed := make(chan error)
	go func() { freed <- zmm.Try(func() { h.Free(q) }) }()
	assert.NoError(t, <-freed)
	assert.Zero(t, h.Usage())
	assert.NoError(t, h.Check())
}

func TestDebugConcurrentHammeringIsDetected(t *testing.T) {
	for _, mode := range []zmm.AllocMode{zmm.ModeChunks, zmm.ModeSystem} {
		t.Run(mode.String(), func(t *testing.T) {
			h, err := zmm.New(zmm.WithDebug(true), zmm.WithAllocMode(mode), zmm.WithLeakReport(nil))
			require.NoError(t, err)
			defer h.Close()
			const bound = 1_000_000
			var stop atomic.Bool
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for g := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[g] = zmm.Try(func() {
						for i := 0; i < bound && !stop.Load(); i++ {
							h.Free(h.Alloc(uintptr(16 + g*100)))
						}
					})
					stop.Store(true)
				}()
			}
			wg.Wait()
			n := 0
			for _, err := range errs {
				if err != nil {
					assert.ErrorIs(t, err, zmm.ErrConcurrentUse)
					n++
				}
			}
			assert.NotZero(t, n, "two goroutines hammering one heap %d times each went undetected", bound)
		})
	}
}

func TestDebugNoFalseConcurrentUse(t *testing.T) {
	h, _ := dbgNew(t)
	var ps []unsafe.Pointer
	for i := range 20000 {
		ps = append(ps, h.Alloc(uintptr(i%300)))
		if i%3 == 0 {
			h.Free(ps[len(ps)/2])
			ps = slices.Delete(ps, len(ps)/2, len(ps)/2+1)
		}
		if i%1000 == 0 {
			runtime.Gosched()
		}
	}
	// Handing the heap from goroutine to goroutine is fine.
	for _, p := range ps {
		ch := make(chan error)
		go func() { ch <- zmm.Try(func() { h.Free(p) }) }()
		require.NoError(t, <-ch)
	}
	assert.Zero(t, h.Usage())
}

// --- environment -----------------------------------------------------------

func TestEnvZMMDebug(t *testing.T) {
	t.Setenv("ZMM_ALLOC", "")
	t.Setenv("ZMM_DEBUG", "1")
	var buf bytes.Buffer
	h, err := zmm.New(zmm.WithLeakReport(&buf))
	require.NoError(t, err)
	p, line := h.Alloc(100), dbgLine()
	assert.Equal(t, uintptr(100), h.BlockSize(p), "debug mode: BlockSize is the requested size")
	assert.Equal(t, uintptr(160), h.Usage(), "debug mode: 100 + 40 bytes of overhead")
	if l := h.Leaks(); assert.Len(t, l, 1) {
		assert.Equal(t, line, l[0].Site.Line)
	}
	*dbgByte(p, 100) ^= 0xFF
	assert.ErrorIs(t, dbgCatch(t, func() { h.Free(p) }), zmm.ErrCorrupted)
	*dbgByte(p, 100) ^= 0xFF
	h.Free(p)
	h.Close()

	// WithDebug(false) overrides the environment.
	h, err = zmm.New(zmm.WithDebug(false))
	require.NoError(t, err)
	p = h.Alloc(100)
	assert.Equal(t, uintptr(112), h.BlockSize(p))
	assert.Nil(t, h.Leaks())
	h.Close()

	// What strconv.ParseBool accepts turns it on or off.
	for v, on := range map[string]bool{"": false, "0": false, "false": false, "F": false, "true": true, "TRUE": true, "t": true} {
		t.Setenv("ZMM_DEBUG", v)
		h, err = zmm.New(zmm.WithLeakReport(nil))
		require.NoError(t, err, "ZMM_DEBUG=%q", v)
		assert.Equal(t, on, h.Debug(), "ZMM_DEBUG=%q", v)
		h.Close()
	}
	// Anything else is refused, naming the variable: a typo never turns
	// debug mode silently off.
	for _, v := range []string{"yes", "on", "2", " 1"} {
		t.Setenv("ZMM_DEBUG", v)
		h, err = zmm.New()
		assert.Nil(t, h)
		var ze *zmm.Error
		require.ErrorAs(t, err, &ze, "ZMM_DEBUG=%q", v)
		assert.ErrorIs(t, err, zmm.ErrConfig)
		assert.Equal(t, "New", ze.Op)
		assert.Contains(t, err.Error(), fmt.Sprintf("ZMM_DEBUG=%q", v))
	}
}

// dbgProtNone reports whether the page at addr is mapped PROT_NONE.
func dbgProtNone(t testing.TB, addr uintptr) bool {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		var lo, hi uintptr
		if _, err := fmt.Sscanf(fs[0], "%x-%x", &lo, &hi); err == nil && lo <= addr && addr < hi {
			return strings.HasPrefix(fs[1], "---")
		}
	}
	return false
}

// dbgGuardEnd is the guard page after a guard-mode block of size bytes.
func dbgGuardEnd(p unsafe.Pointer, size uintptr) uintptr {
	ps := chunk.OSPageSize()
	return (uintptr(p) + size + ps - 1) &^ (ps - 1)
}

func TestEnvZMMAlloc(t *testing.T) {
	t.Setenv("ZMM_DEBUG", "")
	for _, v := range []string{"system", "guard", "chunks", ""} {
		t.Run("ZMM_ALLOC="+v, func(t *testing.T) {
			t.Setenv("ZMM_ALLOC", v)
			h, err := zmm.New(zmm.WithLeakReport(nil))
			require.NoError(t, err)
			defer h.Close()
			p := h.Alloc(100)
			if v == "system" || v == "guard" {
				assert.Equal(t, uintptr(100), h.BlockSize(p))
				assert.Equal(t, uintptr(chunk.Size+112), h.RealUsage(), "a block of its own")
				assert.Len(t, h.Leaks(), 1)
			} else {
				assert.Equal(t, uintptr(112), h.BlockSize(p))
				assert.Equal(t, uintptr(chunk.Size), h.RealUsage())
				assert.Nil(t, h.Leaks())
			}
			switch v {
			case "guard":
				assert.True(t, dbgProtNone(t, dbgGuardEnd(p, 100)), "guard page after the block")
			case "system":
				// A Go heap block: the runtime maps its heap 4 MiB at a
				// time within PROT_NONE reservations (at a random base
				// since Go 1.26), so the page after the block may be
				// PROT_NONE or not; nothing zmm decides.
			default:
				assert.False(t, dbgProtNone(t, dbgGuardEnd(p, 100)), "no guard page after a chunk block")
			}
			h.Free(p)
		})
	}

	t.Run("override", func(t *testing.T) {
		t.Setenv("ZMM_ALLOC", "guard")
		h, err := zmm.New(zmm.WithAllocMode(zmm.ModeChunks))
		require.NoError(t, err)
		defer h.Close()
		assert.Equal(t, uintptr(112), h.BlockSize(h.Alloc(100)))
	})

	t.Run("bogus", func(t *testing.T) {
		t.Setenv("ZMM_ALLOC", "bogus")
		h, err := zmm.New()
		assert.Nil(t, h)
		assert.EqualError(t, err, `zmm: ZMM_ALLOC="bogus": want system, guard or chunks`)
		assert.ErrorIs(t, err, zmm.ErrConfig)
		h, err = zmm.New(zmm.WithAllocMode(zmm.ModeSystem))
		require.NoError(t, err, "WithAllocMode overrides the environment")
		h.Close()
	})

	t.Run("debug+guard", func(t *testing.T) {
		t.Setenv("ZMM_ALLOC", "guard")
		t.Setenv("ZMM_DEBUG", "1")
		var buf bytes.Buffer
		h, err := zmm.New(zmm.WithLeakReport(&buf), zmm.WithName("g"))
		require.NoError(t, err)
		p, line := h.Alloc(13), dbgLine()
		assert.True(t, dbgProtNone(t, dbgGuardEnd(p, 13)))
		h.Close()
		dbgCheckReport(t, buf.String(), []string{dbgScript, dbgFreeing(line, uintptr(p), 13, "g"),
			"=== Total 1 memory leaks detected ==="}, "g")
	})
}

// --- statistics in debug mode -------------------------------------------------

func TestDebugStatistics(t *testing.T) {
	h, _ := dbgNew(t)
	sizes := []uintptr{0, 1, 100, 3032, 3033, 5000, zmm.MaxLargeSize - 40, zmm.MaxLargeSize - 39, dbgHuge}
	var ps []unsafe.Pointer
	var usage, peak uintptr
	for _, n := range sizes {
		ps = append(ps, h.Alloc(n))
		usage += dbgDebugClass(n)
		peak = max(peak, usage)
		assert.Equal(t, usage, h.Usage(), "after Alloc(%d)", n)
		assert.Equal(t, peak, h.PeakUsage())
	}
	assert.Equal(t, uintptr(40), dbgDebugClass(0), "the smallest debug block")
	assert.Equal(t, uintptr(3072), dbgDebugClass(3032))
	assert.Equal(t, uintptr(4096), dbgDebugClass(3033))
	st := h.Stats()
	assert.Equal(t, usage, st.Usage)
	assert.Equal(t, 1, st.Bins[bins.SizeToBin(160)].Used)
	assert.Equal(t, 1, st.Bins[bins.SizeToBin(40)].Used, "Alloc(0)")
	assert.Equal(t, 1, st.Bins[bins.SizeToBin(48)].Used, "Alloc(1)")
	assert.Equal(t, 2, st.HugeBlocks)

	// Realloc does not count both blocks at the peak.
	h.ResetPeak()
	ps[2] = h.Realloc(ps[2], 200)
	usage += 256 - 160
	assert.Equal(t, usage, h.Usage())
	assert.Equal(t, usage, h.PeakUsage())

	for _, p := range ps {
		h.Free(p)
	}
	assert.Zero(t, h.Usage())
	assert.Zero(t, h.Stats().Bins[bins.SizeToBin(160)].Used)
	h.GC()
	assert.Equal(t, uintptr(chunk.Size), h.RealUsage())
}

// --- system mode -----------------------------------------------------------------

func TestSystemModeBasics(t *testing.T) {
	h, buf := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeSystem))
	p := h.Alloc(100)
	assert.Equal(t, uintptr(100), h.BlockSize(p))
	dbgFill(p, 100, 1)
	p = h.Realloc(p, 5000)
	assert.Equal(t, uintptr(5000), h.BlockSize(p))
	assert.True(t, dbgHolds(p, 100, 1))
	p = h.Realloc(p, 10)
	assert.True(t, dbgHolds(p, 10, 1))
	c := h.Calloc(10, 30)
	assert.Equal(t, uintptr(300), h.BlockSize(c))
	assert.Equal(t, make([]byte, 300), zmm.Bytes(c, 300))
	s := h.Strdup("hello")
	assert.Equal(t, "hello\x00", string(zmm.Bytes(s, 6)))
	assert.Equal(t, uintptr(6), h.BlockSize(s))
	n := h.Realloc(nil, 7)
	assert.Equal(t, uintptr(7), h.BlockSize(n))
	for _, q := range []unsafe.Pointer{p, c, s, n} {
		h.Free(q)
	}
	h.Free(nil)
	assert.Zero(t, h.Usage())
	assert.Equal(t, uintptr(chunk.Size), h.RealUsage())
	assert.NoError(t, h.Check())
	h.Close()
	assert.Empty(t, buf.String(), "no debug, no report")
}

func TestSystemModeStatisticsMatchChunkMode(t *testing.T) {
	for _, mode := range []zmm.AllocMode{zmm.ModeSystem, zmm.ModeGuard} {
		t.Run(mode.String(), func(t *testing.T) {
			sys, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(mode))
			ref, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
			sizes := []uintptr{0, 1, 16, 17, 100, 3072, 3073, 5000, zmm.MaxLargeSize, zmm.MaxLargeSize + 1, dbgHuge}
			var sp, rp []unsafe.Pointer
			for _, n := range sizes {
				sp, rp = append(sp, sys.Alloc(n)), append(rp, ref.Alloc(n))
				assert.Equal(t, ref.Usage(), sys.Usage(), "Alloc(%d)", n)
				assert.Equal(t, dbgClass(n), ref.BlockSize(rp[len(rp)-1]))
				assert.Equal(t, chunk.Size+sys.Usage(), sys.RealUsage())
			}
			assert.Equal(t, ref.PeakUsage(), sys.PeakUsage())
			sp[4], rp[4] = sys.Realloc(sp[4], 2000), ref.Realloc(rp[4], 2000)
			assert.Equal(t, ref.Usage(), sys.Usage())
			assert.Equal(t, ref.PeakUsage(), sys.PeakUsage(), "realloc does not count both blocks at the peak")
			for i := range sp {
				sys.Free(sp[i])
				ref.Free(rp[i])
				assert.Equal(t, ref.Usage(), sys.Usage())
				assert.Equal(t, chunk.Size+sys.Usage(), sys.RealUsage())
			}
			assert.Zero(t, sys.Usage())
			assert.Equal(t, uintptr(chunk.Size), sys.RealUsage())
		})
	}
}

func TestSystemModeLimitAndBadPointers(t *testing.T) {
	for _, mode := range []zmm.AllocMode{zmm.ModeSystem, zmm.ModeGuard} {
		t.Run(mode.String(), func(t *testing.T) {
			limit := uintptr(chunk.Size + 8192)
			h, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(mode), zmm.WithLimit(limit))
			p := h.Alloc(5000)
			e := dbgCatch(t, func() { h.Alloc(1) })
			assert.ErrorIs(t, e, zmm.ErrMemoryLimit)
			assert.Equal(t, fmt.Sprintf("Allowed memory size of %d bytes exhausted (tried to allocate 1 bytes)", limit), e.Msg)
			e = dbgCatch(t, func() { h.Realloc(p, 5001) })
			assert.ErrorIs(t, e, zmm.ErrMemoryLimit)
			assert.Equal(t, uintptr(5000), h.BlockSize(p), "a failed Realloc keeps the block")
			assert.Equal(t, uintptr(8192), h.Usage())

			e = dbgCatch(t, func() { h.Free(unsafe.Add(p, 8)) })
			assert.ErrorIs(t, e, zmm.ErrInvalidPointer)
			assert.Equal(t, fmt.Sprintf("zmm: Free(0x%x): invalid pointer: not a live block of this heap (%v mode)", uintptr(p)+8, mode), e.Msg)
			var x [16]byte
			e = dbgCatch(t, func() { h.BlockSize(unsafe.Pointer(&x)) })
			assert.ErrorIs(t, e, zmm.ErrInvalidPointer)
			assert.Equal(t, "BlockSize", e.Op)

			h.Free(p)
			e = dbgCatch(t, func() { h.Free(p) })
			assert.ErrorIs(t, e, zmm.ErrDoubleFree)
			assert.Equal(t, fmt.Sprintf("zmm: Free(0x%x): double free: the block is already free", uintptr(p)), e.Msg)
			assert.Zero(t, h.Usage())

			q := h.Alloc(8000)
			dbgFill(q, 8000, 3)
			h.Free(q)
		})
	}
}

func TestSystemModeLeaksAndReset(t *testing.T) {
	for _, mode := range []zmm.AllocMode{zmm.ModeSystem, zmm.ModeGuard} {
		t.Run(mode.String(), func(t *testing.T) {
			h, buf := dbgNew(t, zmm.WithAllocMode(mode), zmm.WithName("s"))
			a, la := h.Alloc(10), dbgLine()
			b, lb0 := h.Alloc(20), dbgLine()
			b, lb1 := h.Realloc(b, 30), dbgLine()
			h.Free(h.Alloc(40))
			type leak struct {
				addr, size uintptr
				line, orig int
			}
			want := []leak{{uintptr(a), 10, la, 0}, {uintptr(b), 30, lb1, lb0}}
			slices.SortFunc(want, func(x, y leak) int { return cmp.Compare(x.addr, y.addr) })
			var got []leak
			for _, l := range h.Leaks() {
				assert.Equal(t, dbgFile, l.Site.File)
				got = append(got, leak{l.Addr, l.Size, l.Site.Line, l.Orig.Line})
			}
			assert.Equal(t, want, got)

			h.Reset()
			var wantReport []string
			for _, l := range want {
				wantReport = append(wantReport, dbgScript, dbgFreeing(l.line, l.addr, l.size, "s"))
				if l.orig != 0 {
					wantReport = append(wantReport, dbgRelayed(l.orig))
				}
			}
			wantReport = append(wantReport, "=== Total 2 memory leaks detected ===")
			dbgCheckReport(t, buf.String(), wantReport, "s")
			assert.Zero(t, h.Usage())
			assert.Equal(t, uintptr(chunk.Size), h.RealUsage())
			assert.Empty(t, h.Leaks())
			e := dbgCatch(t, func() { h.Free(a) })
			assert.True(t, errors.Is(e, zmm.ErrDoubleFree) || errors.Is(e, zmm.ErrInvalidPointer), "Reset freed the block: %v", e)

			buf.Reset()
			h.Free(h.Alloc(10))
			h.Close()
			assert.Empty(t, buf.String())
		})
	}
}

// --- guard mode --------------------------------------------------------------------

func TestGuardModeLayout(t *testing.T) {
	sizes := []uintptr{0, 1, 2, 5, 7, 8, 9, 12, 15, 16, 24, 100, 4095, 4096, 4097, 5000}
	t.Run("default: against the guard page", func(t *testing.T) {
		h, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard))
		for _, n := range sizes {
			p := h.Alloc(n)
			end := dbgGuardEnd(p, n)
			assert.Equal(t, end, uintptr(p)+n, "Alloc(%d) ends where the guard page begins", n)
			assert.True(t, dbgProtNone(t, end), "Alloc(%d): the next page is a guard page", n)
			align := uintptr(16)
			if n != 0 {
				align = min(16, n&-n)
			}
			assert.Zero(t, uintptr(p)%align, "Alloc(%d) is %d-byte aligned", n, align)
			dbgFill(p, n, byte(n))
			assert.True(t, dbgHolds(p, n, byte(n)))
			h.Free(p)
			assert.False(t, dbgProtNone(t, end), "Free(%d) unmaps the block and its guard page", n)
		}
		// A Go value of any type is aligned for its type.
		type odd struct {
			A int32
			B [2]int16
			C byte
		}
		assert.Zero(t, uintptr(unsafe.Pointer(zmm.AllocOf[odd](h)))%unsafe.Alignof(odd{}))
		assert.Zero(t, uintptr(unsafe.Pointer(unsafe.SliceData(zmm.MakeSlice[odd](h, 3, 3))))%unsafe.Alignof(odd{}))
		assert.Zero(t, uintptr(unsafe.Pointer(zmm.AllocOf[[3]uint64](h)))%8)
	})
	for _, align := range []uintptr{1, 8, 64} {
		t.Run(fmt.Sprintf("WithGuardAlignment(%d)", align), func(t *testing.T) {
			h, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard), zmm.WithGuardAlignment(align))
			for _, n := range sizes {
				p := h.Alloc(n)
				assert.Zero(t, uintptr(p)%align, "Alloc(%d) is %d-byte aligned", n, align)
				end := dbgGuardEnd(p, n)
				assert.Less(t, end-(uintptr(p)+n), align, "Alloc(%d) ends within %d bytes of the guard page", n, align-1)
				assert.True(t, dbgProtNone(t, end), "Alloc(%d): the next page is a guard page", n)
				h.Free(p)
			}
		})
	}
	t.Run("ZMM_GUARD_ALIGN", func(t *testing.T) {
		t.Setenv("ZMM_ALLOC", "guard")
		t.Setenv("ZMM_DEBUG", "")
		t.Setenv("ZMM_GUARD_ALIGN", "8")
		h, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard))
		p := h.Alloc(13)
		assert.Equal(t, uintptr(3), dbgGuardEnd(p, 13)-(uintptr(p)+13))
		h.Free(p)
		h2, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard), zmm.WithGuardAlignment(0))
		p = h2.Alloc(13)
		assert.Equal(t, dbgGuardEnd(p, 13), uintptr(p)+13, "the option overrides the environment")
		h2.Free(p)
		for _, v := range []string{"3", "8192", "x", "-8"} {
			t.Setenv("ZMM_GUARD_ALIGN", v)
			_, err := zmm.New()
			assert.ErrorIs(t, err, zmm.ErrConfig, v)
			assert.ErrorContains(t, err, fmt.Sprintf("ZMM_GUARD_ALIGN=%q", v))
		}
	})
	_, err := zmm.New(zmm.WithAllocMode(zmm.ModeGuard), zmm.WithGuardAlignment(24))
	assert.ErrorIs(t, err, zmm.ErrConfig)
	assert.ErrorContains(t, err, "WithGuardAlignment(24)")
}

func TestGuardModeSlackWriteIsCaught(t *testing.T) {
	h, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard), zmm.WithGuardAlignment(8))
	nb := h.Alloc(24)
	dbgFill(nb, 24, 1)
	p, line := h.Alloc(13), dbgLine() // 3 bytes of slack
	dbgFill(p, 13, 2)
	require.NoError(t, h.Check())
	addr := uintptr(p)
	for _, off := range []int{13, 15} {
		*dbgByte(p, off) ^= 0xFF
		what := fmt.Sprintf("a write %d byte(s) past its end (at offset %d of a 13-byte block)", off-13+1, off)
		e := dbgCatch(t, func() { h.Free(p) })
		assert.ErrorIs(t, e, zmm.ErrCorrupted)
		assert.Equal(t, fmt.Sprintf("zmm: Free(0x%x): heap corrupted: block 0x%x (13 bytes, allocated at %s): %s", addr, addr, dbgSite(line), what), e.Msg)
		err := h.Check()
		assert.ErrorIs(t, err, zmm.ErrCorrupted)
		assert.EqualError(t, err, fmt.Sprintf("zmm: heap check found 1 problem(s):\n\tblock 0x%x (13 bytes, allocated at %s): %s", addr, dbgSite(line), what))
		*dbgByte(p, off) ^= 0xFF
		require.NoError(t, h.Check())
	}
	assert.True(t, dbgHolds(p, 13, 2))
	assert.True(t, dbgHolds(nb, 24, 1))
	h.Free(p)
	h.Free(nb)
	assert.Zero(t, h.Usage())
}

// Regression: a guard-mode Realloc of a block whose slack was written used
// to allocate the new block before checking the old one, so the panic left
// the new block allocated and unreachable. It now checks first, as debug
// chunk mode does.
func TestGuardReallocChecksTheOldBlockFirst(t *testing.T) {
	h, _ := dbgNew(t, zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard), zmm.WithGuardAlignment(8))
	p := h.Alloc(13)
	*dbgByte(p, 13) ^= 0xFF
	usage := h.Usage()
	e := dbgCatch(t, func() { h.Realloc(p, 100) })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Equal(t, usage, h.Usage(), "a failed Realloc allocates nothing")
	assert.Len(t, h.Leaks(), 1, "only the damaged block is live")
}

const dbgGuardChildEnv = "ZMM_TEST_GUARD_FAULT_CHILD"

// TestGuardFaultChild runs only as the child of TestGuardPageFaults: it
// writes one byte past the end of a 13-byte guard-mode block, which must
// fault (by default the block ends at its guard page).
func TestGuardFaultChild(t *testing.T) {
	if os.Getenv(dbgGuardChildEnv) != "1" {
		t.Skip("run by TestGuardPageFaults in a subprocess")
	}
	h, err := zmm.New(zmm.WithAllocMode(zmm.ModeGuard), zmm.WithLeakReport(nil))
	require.NoError(t, err)
	p := h.Alloc(13) // the guard page right after byte 12
	line := dbgLine() + 3
	fmt.Printf("guard fault at 0x%x line %d\n", uintptr(p)+13, line)
	_ = os.Stdout.Sync()
	zmm.Bytes(p, 14)[13] = 1
	t.Fatal("the write past the guard page did not fault")
}

func TestGuardPageFaults(t *testing.T) {
	out, err := childtest.Run(t, "TestGuardFaultChild", []string{dbgGuardChildEnv + "=1", "GOTRACEBACK=single"}, nil)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the child must fail; output:\n%s", out)
	assert.NotZero(t, ee.ExitCode())
	text := string(out)
	m := regexp.MustCompile(`guard fault at (0x[0-9a-f]+) line (\d+)`).FindStringSubmatch(text)
	require.NotNil(t, m, "child output:\n%s", text)
	assert.Contains(t, text, "unexpected fault address "+m[1], "child output:\n%s", text)
	assert.Contains(t, text, "SIGSEGV")
	assert.Contains(t, text, dbgFuncPrefix+"TestGuardFaultChild(", "the Go stack trace names the faulting test")
	assert.Contains(t, text, "\t"+dbgFile+":"+m[2]+" ", "the Go stack trace names the faulting line")
	assert.NotContains(t, text, "did not fault")
}

func TestSetNameNamesTheLeakReport(t *testing.T) {
	var out bytes.Buffer
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(&out), zmm.WithName("first"))
	require.NoError(t, err)
	defer h.Close()
	h.Alloc(10)
	h.SetName("GET /users/7")
	h.Reset()
	assert.Contains(t, out.String(), "script=GET /users/7")
	assert.NotContains(t, out.String(), "first")
}

func TestMarkHelperPackageNamesTheWrappersCaller(t *testing.T) {
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(nil))
	require.NoError(t, err)
	defer h.Close()
	wraptest.Alloc(h, 40) // the site: this line, not the wrapper's
	leaks := h.Leaks()
	require.Len(t, leaks, 1)
	assert.True(t, strings.HasSuffix(leaks[0].Site.File, "zmm/debug_test.go"), "site %v", leaks[0].Site)
	assert.Contains(t, leaks[0].Site.Function, "TestMarkHelperPackageNamesTheWrappersCaller")
}
