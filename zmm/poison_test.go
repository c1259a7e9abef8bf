package zmm_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/internal/childtest"
	"github.com/gozmm/zmm/zmm"
)

// Writes after free into page runs and huge blocks of a debug heap
// (issue 19, item 4).

var poisonFile = func() string { _, f, _, _ := runtime.Caller(0); return f }()

func poisonSite(line int) string { return fmt.Sprintf("%s:%d", poisonFile, line) }

func TestDebugWriteAfterFreeIntoAPageRunIsCaught(t *testing.T) {
	h, _ := dbgNew(t)
	p, line := h.Alloc(5000), dbgLine()
	addr := uintptr(p)
	h.Free(p)
	*dbgByte(p, 100) = 7 // a write after free

	err := h.Check()
	require.ErrorIs(t, err, zmm.ErrCorrupted)
	assert.EqualError(t, err, fmt.Sprintf("zmm: heap check found 1 problem(s):\n\tblock 0x%x (5000 bytes, allocated at %s): freed, and byte 100 of it was written after it was freed", addr, poisonSite(line)))

	// Handing the pages out again reports it, once, and the heap is as
	// before the call.
	usage := h.Usage()
	e := dbgCatch(t, func() { h.Alloc(5000) })
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Equal(t, "Alloc", e.Op)
	assert.Equal(t, fmt.Sprintf("zmm: heap corrupted: freed block 0x%x (5000 bytes, allocated at %s): byte 100 of it was written after it was freed", addr, poisonSite(line)), e.Msg)
	assert.Equal(t, usage, h.Usage())
	q := h.Alloc(5000)
	assert.Equal(t, addr, uintptr(q), "the same pages, now reported and handed out")
	assert.NoError(t, h.Check())
	h.Free(q)
}

// takeDebugPages allocates debug blocks that take n pages in all, in runs
// of at most the largest run, and returns them.
func takeDebugPages(h *zmm.Heap, n uintptr) []unsafe.Pointer {
	var ps []unsafe.Pointer
	for n > 0 {
		k := min(n, zmm.MaxLargeSize/chunk.PageSize)
		ps = append(ps, h.Alloc(k*chunk.PageSize-debugheader.Overhead))
		n -= k
	}
	return ps
}

func freeAll(h *zmm.Heap, ps []unsafe.Pointer) {
	for _, p := range ps {
		h.Free(p)
	}
}

func TestDebugFreedRunIsCheckedWhenABinRunReusesIt(t *testing.T) {
	h, _ := dbgNew(t)
	// Fill the main chunk with big runs, so that the only free pages are
	// the ones freed below.
	big := takeDebugPages(h, chunk.Pages-1-64)
	p := h.Alloc(60 * chunk.PageSize)
	rest := h.Alloc(3*chunk.PageSize - 2*debugheader.Overhead) // the last free pages
	h.Free(p)
	*dbgByte(p, 30*chunk.PageSize) = 1
	// A new run of the 16-byte bin (one page) takes a page of the freed
	// run: the whole run is checked.
	e := dbgCatch(t, func() {
		for range 1000 {
			h.Alloc(1)
		}
	})
	assert.ErrorIs(t, e, zmm.ErrCorrupted)
	assert.Contains(t, e.Msg, fmt.Sprintf("byte %d of it was written after it was freed", 30*chunk.PageSize))
	freeAll(h, big)
	h.Free(rest)
}

func TestDebugFreedRunSplitStaysChecked(t *testing.T) {
	h, _ := dbgNew(t)
	big := takeDebugPages(h, chunk.Pages-1-64)
	p := h.Alloc(60 * chunk.PageSize)
	h.Free(p)
	q := h.Alloc(2 * chunk.PageSize) // best fit: the start of the freed run
	require.Equal(t, uintptr(p), uintptr(q))
	// The rest of the run stays free, filled and remembered.
	*dbgByte(p, 40*chunk.PageSize) = 1
	err := h.Check()
	assert.ErrorIs(t, err, zmm.ErrCorrupted)
	assert.ErrorContains(t, err, fmt.Sprintf("byte %d of it was written after it was freed", 40*chunk.PageSize))
	*dbgByte(p, 40*chunk.PageSize) = debugheader.FreeFill
	assert.NoError(t, h.Check())
	h.Free(q)
	freeAll(h, big)
}

func TestDebugFreedRunsDoNotOutliveTheirPages(t *testing.T) {
	h, _ := dbgNew(t)
	// GC releases free pages to the OS: they read back as zeros, which is
	// no write after free.
	p := h.Alloc(40 * chunk.PageSize)
	keep := h.Alloc(100)
	h.Free(p)
	h.GC()
	assert.NoError(t, h.Check())
	h.Free(h.Alloc(40 * chunk.PageSize))

	// A chunk that is cached and taken again starts clean.
	fill := takeDebugPages(h, chunk.Pages-1-64)
	q := h.Alloc(100 * chunk.PageSize) // a second chunk
	h.Free(q)                          // the chunk empties: cached or unmapped
	*dbgByte(q, 10) = 0                // (not a write after free we can see: the chunk left)
	r := h.Alloc(100 * chunk.PageSize)
	assert.NoError(t, h.Check())
	h.Free(r)
	freeAll(h, fill)
	h.Free(keep)

	// Reset forgets them too.
	p = h.Alloc(5000)
	h.Free(p)
	h.Reset()
	assert.NoError(t, h.Check())
	h.Free(h.Alloc(5000))
}

func TestDebugFreedHugeBlockIsNotReused(t *testing.T) {
	h, _ := dbgNew(t)
	p := h.Alloc(4 << 20)
	real := h.RealUsage()
	h.Free(p)
	assert.Equal(t, real-dbgRoundHuge(4<<20+debugheader.Overhead), h.RealUsage(), "its pages are released")
	assert.True(t, dbgProtNone(t, uintptr(p)), "the freed mapping is inaccessible")
	e := dbgCatch(t, func() { h.Free(p) })
	assert.ErrorIs(t, e, zmm.ErrDoubleFree)
	q := h.Alloc(4 << 20)
	assert.NotEqual(t, p, q, "a quarantined mapping is never handed out")
	h.Free(q)

	// The quarantine is bounded: the oldest mappings are unmapped.
	var ps []unsafe.Pointer
	for range 20 {
		ps = append(ps, h.Alloc(3<<20))
	}
	for _, p := range ps {
		h.Free(p)
	}
	assert.False(t, dbgProtNone(t, uintptr(ps[0])), "the oldest is unmapped")
	assert.True(t, dbgProtNone(t, uintptr(ps[19])), "the newest is kept")
}

const dbgHugeFaultChildEnv = "ZMM_TEST_HUGE_UAF_CHILD"

// TestDebugHugeUseAfterFreeChild runs only as the child of
// TestDebugHugeUseAfterFreeFaults: it writes into a freed huge block of a
// debug heap, which must fault.
func TestDebugHugeUseAfterFreeChild(t *testing.T) {
	if os.Getenv(dbgHugeFaultChildEnv) != "1" {
		t.Skip("run by TestDebugHugeUseAfterFreeFaults in a subprocess")
	}
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(nil))
	require.NoError(t, err)
	p := h.Alloc(4 << 20)
	h.Free(p)
	fmt.Printf("use after free at 0x%x\n", uintptr(p)+100)
	_ = os.Stdout.Sync()
	zmm.Bytes(p, 101)[100] = 1
	t.Fatal("the write into a freed huge block did not fault")
}

func TestDebugHugeUseAfterFreeFaults(t *testing.T) {
	out, err := childtest.Run(t, "TestDebugHugeUseAfterFreeChild", []string{dbgHugeFaultChildEnv + "=1", "GOTRACEBACK=single"}, nil)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the child must fail; output:\n%s", out)
	text := string(out)
	m := regexp.MustCompile(`use after free at (0x[0-9a-f]+)`).FindStringSubmatch(text)
	require.NotNil(t, m, "child output:\n%s", text)
	assert.Contains(t, text, "unexpected fault address "+m[1], "child output:\n%s", text)
	assert.Contains(t, text, dbgFuncPrefix+"TestDebugHugeUseAfterFreeChild(", "the Go stack trace names the faulting test")
	assert.NotContains(t, text, "did not fault")
}
