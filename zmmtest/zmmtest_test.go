package zmmtest_test

import (
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmtest"
)

// fakeTB records what zmmtest.New does with its testing.TB. Methods it does
// not override go to the real test's TB.
type fakeTB struct {
	testing.TB
	name     string
	errors   []string
	fatals   []string
	cleanups []func()
}

func (f *fakeTB) Helper()      {}
func (f *fakeTB) Name() string { return f.name }

func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

// Fatalf stops the goroutine, as testing.T's does.
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

// finish runs the cleanups, last registered first, as the testing package.
func (f *fakeTB) finish() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	f.cleanups = nil
}

func newFake(t *testing.T, name string) *fakeTB { return &fakeTB{TB: t, name: name} }

var thisFile = func() string { _, f, _, _ := runtime.Caller(0); return f }()

// line returns the line it is called from.
func line() int { _, _, l, _ := runtime.Caller(1); return l }

func site(l int) string { return fmt.Sprintf("%s:%d", thisFile, l) }

var stampRE = regexp.MustCompile(`^\[(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\]  Script:  '(.*)'$`)

func TestCleanTestPasses(t *testing.T) {
	f := newFake(t, "TestClean")
	h := zmmtest.New(f)
	p := h.Alloc(100)
	q := h.Strdup("hello")
	p = h.Realloc(p, 5000)
	h.Free(p)
	h.Free(q)
	require.Len(t, f.cleanups, 1)
	f.finish()
	assert.Empty(t, f.errors)
	assert.Empty(t, f.fatals)
	assert.ErrorIs(t, zmm.Try(func() { h.Alloc(1) }), zmm.ErrClosed, "the heap is closed at cleanup")
}

func TestHeapIsADebugHeap(t *testing.T) {
	f := newFake(t, "TestDebug")
	h := zmmtest.New(f)
	p := h.Alloc(100)
	assert.Equal(t, uintptr(100), h.BlockSize(p), "debug BlockSize is the requested size")
	assert.Len(t, h.Leaks(), 1)
	h.Free(p)
	f.finish()
	assert.Empty(t, f.errors)
}

func TestLeakFailsTheTest(t *testing.T) {
	f := newFake(t, "TestLeaky/sub")
	h := zmmtest.New(f)
	p, l := h.Alloc(24), line()
	var qs []unsafe.Pointer
	var lq int
	for range 3 {
		var q unsafe.Pointer
		q, lq = h.Alloc(24), line()
		qs = append(qs, q)
	}
	h.Free(h.Alloc(10))
	f.finish()
	assert.Empty(t, f.fatals)
	require.Len(t, f.errors, 1)

	const head = "zmmtest: the test leaked 4 block(s):\n"
	msg := f.errors[0]
	require.True(t, strings.HasPrefix(msg, head), "%q", msg)
	lines := strings.Split(strings.TrimSuffix(strings.TrimPrefix(msg, head), "\n"), "\n")
	want := []string{
		"",
		fmt.Sprintf("%s(%d) :  Freeing 0x%016x (24 bytes), script=TestLeaky/sub", thisFile, l, uintptr(p)),
		"",
		fmt.Sprintf("%s(%d) :  Freeing 0x%016x (24 bytes), script=TestLeaky/sub", thisFile, lq, uintptr(qs[0])),
		"Last leak repeated 2 times",
		"=== Total 4 memory leaks detected ===",
	}
	require.Len(t, lines, len(want), "%s", msg)
	for i, w := range want {
		if w != "" {
			assert.Equal(t, w, lines[i], "line %d", i+1)
			continue
		}
		m := stampRE.FindStringSubmatch(lines[i])
		if assert.NotNil(t, m, "line %d: %q", i+1, lines[i]) {
			assert.Equal(t, "TestLeaky/sub", m[2])
			at, err := time.ParseInLocation("Mon Jan _2 15:04:05 2006", m[1], time.Local)
			require.NoError(t, err)
			assert.WithinDuration(t, time.Now(), at, time.Minute)
		}
	}
}

func TestOverflowFailsTheTest(t *testing.T) {
	f := newFake(t, "TestOverflow")
	h := zmmtest.New(f, zmm.WithAllocMode(zmm.ModeChunks)) // guard mode would fault on the spot
	p, l := h.Alloc(100), line()
	zmm.Bytes(p, 101)[100] ^= 0xFF // one byte past the end
	f.finish()
	assert.Empty(t, f.fatals)
	require.Len(t, f.errors, 2, "the check report, then the damaged block as a leak")
	assert.Equal(t, fmt.Sprintf("zmmtest: zmm: heap check found 1 problem(s):\n\tblock 0x%x (100 bytes, allocated at %s): a write 1 byte(s) past its end (at offset 100 of a 100-byte block)",
		uintptr(p), site(l)), f.errors[0])
	assert.True(t, strings.HasPrefix(f.errors[1], "zmmtest: the test leaked 1 block(s):\n"), f.errors[1])
	assert.Contains(t, f.errors[1], fmt.Sprintf("%s(%d) :  Freeing 0x%016x (100 bytes), script=TestOverflow\n", thisFile, l, uintptr(p)))
}

func TestOptionsApplyAfterTheDefaults(t *testing.T) {
	f := newFake(t, "TestGuard")
	h := zmmtest.New(f, zmm.WithAllocMode(zmm.ModeGuard), zmm.WithGuardAlignment(8))
	p, l := h.Alloc(13), line()
	assert.Equal(t, uintptr(chunk.Size+16), h.RealUsage(), "a guard-mode block is a mapping of its own")
	zmm.Bytes(p, 14)[13] ^= 0xFF // into the slack before the guard page
	f.finish()
	require.NotEmpty(t, f.errors)
	assert.Equal(t, fmt.Sprintf("zmmtest: zmm: heap check found 1 problem(s):\n\tblock 0x%x (13 bytes, allocated at %s): a write 1 byte(s) past its end (at offset 13 of a 13-byte block)",
		uintptr(p), site(l)), f.errors[0])

	// WithDebug(false) after the defaults turns debug off.
	f = newFake(t, "TestNoDebug")
	h = zmmtest.New(f, zmm.WithDebug(false))
	h.Alloc(100)
	f.finish()
	assert.Empty(t, f.errors, "a heap without debug mode keeps no sites: nothing to report")
}

func TestNewFailureIsFatal(t *testing.T) {
	f := newFake(t, "TestFatal")
	done := make(chan struct{})
	go func() {
		defer close(done)
		zmmtest.New(f, zmm.WithLimit(1))
		t.Error("New went on after Fatalf")
	}()
	<-done
	assert.Equal(t, []string{fmt.Sprintf("zmmtest: Failed to set memory limit to 1 bytes (Current memory usage is %d bytes)", chunk.Size)}, f.fatals)
	assert.Empty(t, f.cleanups)

	t.Setenv("ZMM_ALLOC", "bogus")
	f = newFake(t, "TestFatalEnv")
	done = make(chan struct{})
	go func() {
		defer close(done)
		zmmtest.New(f)
	}()
	<-done
	assert.Equal(t, []string{`zmmtest: zmm: ZMM_ALLOC="bogus": want system, guard or chunks`}, f.fatals)
}

// TestWithRealT uses New the ordinary way: the test must pass.
func TestWithRealT(t *testing.T) {
	h := zmmtest.New(t)
	b := h.AllocBytes(64)
	copy(b, "data")
	h.FreeBytes(b)
}

// ExampleNew shows the typical use: a test gets a debug heap from
// zmmtest.New, hands it to the code under test, and fails at cleanup if the
// code leaked a block or wrote outside one. The report of a leak looks like
// the Zend MM's:
//
//	zmmtest: the test leaked 1 block(s):
//	[Tue Mar  5 07:08:09 2024]  Script:  'TestParse'
//	/src/parse_test.go(12) :  Freeing 0x00007f3a5c401020 (6 bytes), script=TestParse
//	=== Total 1 memory leaks detected ===
func ExampleNew() {
	testParse := func(t *testing.T) {
		h := zmmtest.New(t) // or zmmtest.New(t, zmm.WithAllocMode(zmm.ModeGuard))
		s := h.Strdup("hello")
		defer h.Free(s)
		if got := string(zmm.Bytes(s, 5)); got != "hello" {
			t.Errorf("got %q", got)
		}
	}
	_ = testParse // in a _test.go file: func TestParse(t *testing.T) { ... }
}
