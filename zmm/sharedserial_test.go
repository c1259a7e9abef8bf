package zmm_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
)

// A serial shared allocator: debug, system and guard mode, one heap that
// every goroutine takes in turn.

var serialFile = func() string { _, f, _, _ := runtime.Caller(0); return f }()

var serialModes = []struct {
	name string
	opts []zmm.Option
}{
	{"debug", []zmm.Option{zmm.WithDebug(true), zmm.WithAllocMode(zmm.ModeChunks)}},
	{"system", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeSystem)}},
	{"guard", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard)}},
}

// newSerial makes a serial allocator whose leak report goes to the
// returned buffer (written by the goroutine that calls Reset or Close).
func newSerial(t testing.TB, opts ...zmm.Option) (*zmm.Shared, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	a, err := zmm.NewShared(append([]zmm.Option{zmm.WithLeakReport(&buf)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return a, &buf
}

// TestSharedSerialModesCrossGoroutines: blocks made by some goroutines are
// checked, resized and freed by others, in every serial mode, and the
// allocator ends empty and consistent with one heap.
func TestSharedSerialModesCrossGoroutines(t *testing.T) {
	for _, m := range serialModes {
		t.Run(m.name, func(t *testing.T) {
			a, buf := newSerial(t, m.opts...)
			assert.Equal(t, m.name == "debug", a.Debug())
			assert.Equal(t, m.name, map[zmm.AllocMode]string{zmm.ModeChunks: "debug", zmm.ModeSystem: "system", zmm.ModeGuard: "guard"}[a.Mode()])

			type block struct {
				p    unsafe.Pointer
				size uintptr
				seed byte
			}
			sizes := []uintptr{1, 8, 24, 100, 3000, 3072, 5000, 70000, 3 << 20}
			blocks := make(chan block, 32)
			var producers, consumers sync.WaitGroup
			for g := range 4 {
				producers.Add(1)
				go func() {
					defer producers.Done()
					r := rand.New(rand.NewPCG(uint64(g), 1))
					for i := range 200 {
						size := sizes[r.IntN(len(sizes)-1)]
						if i%50 == 0 {
							size = sizes[len(sizes)-1]
						}
						p := a.Alloc(size)
						fill(p, size, byte(i))
						blocks <- block{p, size, byte(i)}
					}
				}()
			}
			errs := make(chan error, 4)
			for range 4 {
				consumers.Add(1)
				go func() {
					defer consumers.Done()
					for b := range blocks {
						err := zmm.Try(func() {
							if !holds(b.p, b.size, b.seed) {
								panic(fmt.Errorf("block %p of %d bytes lost its contents", b.p, b.size))
							}
							if a.BlockSize(b.p) < b.size {
								panic(fmt.Errorf("BlockSize %d < %d", a.BlockSize(b.p), b.size))
							}
							if b.size < 1000 {
								b.p = a.Realloc(b.p, b.size*3)
								if !holds(b.p, b.size, b.seed) {
									panic(fmt.Errorf("Realloc lost the contents"))
								}
							}
							a.Free(b.p)
						})
						if err != nil {
							select {
							case errs <- err:
							default:
							}
						}
					}
				}()
			}
			producers.Wait()
			close(blocks)
			consumers.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			require.NoError(t, a.Check())
			assert.Zero(t, a.Usage())
			assert.Empty(t, a.Leaks())
			assert.Equal(t, 1, a.SharedStats().Heaps, "a serial allocator has one heap")
			a.Close()
			assert.Empty(t, buf.String(), "nothing leaked, no report")
		})
	}
}

// elsewhere runs f on a goroutine of its own and returns the *zmm.Error
// it panicked with, or nil.
func elsewhere(f func()) error {
	done := make(chan error)
	go func() { done <- zmm.Try(f) }()
	return <-done
}

// TestSharedDebugFindsBugs: what a debug heap finds, a debug shared
// allocator finds, whichever goroutine did the deed: sites in Leaks and in
// the leak report, a write past a block's end, a write after free, a
// double free.
func TestSharedDebugFindsBugs(t *testing.T) {
	a, buf := newSerial(t, zmm.WithDebug(true), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithName("shared.php"))
	var leaked unsafe.Pointer
	var line int
	require.NoError(t, elsewhere(func() { leaked, line = a.Alloc(10), dbgLine() }))
	leaks := a.Leaks()
	require.Len(t, leaks, 1)
	assert.Equal(t, uintptr(leaked), leaks[0].Addr)
	assert.Equal(t, uintptr(10), leaks[0].Size)
	assert.Equal(t, serialFile, leaks[0].Site.File)
	assert.Equal(t, line, leaks[0].Site.Line)
	assert.Equal(t, uintptr(10), a.BlockSize(leaked), "debug BlockSize is the requested size")

	// A write past the end, found by Check and by the free, from another
	// goroutine.
	p, pline := a.Alloc(64), dbgLine()
	*(*byte)(unsafe.Add(p, 64)) ^= 0xFF
	err := a.Check()
	assert.ErrorIs(t, err, zmm.ErrCorrupted)
	var ce *zmm.CheckError
	require.ErrorAs(t, err, &ce)
	require.Len(t, ce.Problems, 1)
	assert.Equal(t, uintptr(p), ce.Problems[0].Addr)
	assert.Equal(t, pline, ce.Problems[0].Site.Line)
	assert.ErrorIs(t, elsewhere(func() { a.Free(p) }), zmm.ErrCorrupted)
	*(*byte)(unsafe.Add(p, 64)) ^= 0xFF // undo: the block is still live
	require.NoError(t, a.Check())
	a.Free(p)

	// A write after free.
	q := a.Alloc(100)
	a.Free(q)
	b := (*byte)(unsafe.Add(q, 10))
	old := *b
	*b ^= 0xFF
	assert.ErrorIs(t, a.Check(), zmm.ErrCorrupted, "a write after free")
	*b = old
	require.NoError(t, a.Check())

	// A double free, the second from another goroutine.
	r := a.Alloc(40)
	a.Free(r)
	assert.ErrorIs(t, elsewhere(func() { a.Free(r) }), zmm.ErrDoubleFree)
	require.NoError(t, a.Check())

	// The leak report at Close, in Zend's format.
	require.Empty(t, buf.String())
	a.Close()
	assert.Contains(t, buf.String(), fmt.Sprintf("%s(%d) :  Freeing 0x%016x (10 bytes), script=shared.php\n", serialFile, line, uintptr(leaked)))
	assert.Contains(t, buf.String(), "=== Total 1 memory leaks detected ===")
}

// TestSharedSerialResetReportsLeaks: Reset ends a request on a debug
// allocator as on a debug heap: the leak report first, then every block
// released.
func TestSharedSerialResetReportsLeaks(t *testing.T) {
	a, buf := newSerial(t, zmm.WithDebug(true), zmm.WithAllocMode(zmm.ModeChunks))
	p, line := a.Alloc(30), dbgLine()
	a.Alloc(5000)
	a.Reset()
	assert.Contains(t, buf.String(), fmt.Sprintf("%s(%d) :  Freeing 0x%016x (30 bytes), script=-\n", serialFile, line, uintptr(p)))
	assert.Contains(t, buf.String(), "=== Total 2 memory leaks detected ===")
	assert.Zero(t, a.Usage())
	assert.Empty(t, a.Leaks())
	require.NoError(t, a.Check())
}

// TestSharedSerialLimit: the limit of a serial allocator is exact, with
// Zend's message, in every mode.
func TestSharedSerialLimit(t *testing.T) {
	for _, m := range serialModes {
		t.Run(m.name, func(t *testing.T) {
			a, _ := newSerial(t, append(m.opts, zmm.WithLimit(8<<20))...)
			a.Free(a.Alloc(16))
			real := a.RealUsage()
			e := catch(t, func() { a.Alloc(16 << 20) })
			assert.ErrorIs(t, e, zmm.ErrMemoryLimit)
			assert.Contains(t, e.Error(), "Allowed memory size of 8388608 bytes exhausted")
			assert.Equal(t, real, a.RealUsage(), "the failed call mapped nothing")
			p := a.Alloc(1 << 20)
			require.NoError(t, a.Check())
			a.Free(p)
		})
	}
}

// TestSharedSerialBadPointers: a serial allocator reports every bad
// pointer as its heap does, changes nothing when it does, and reports use
// after Close.
func TestSharedSerialBadPointers(t *testing.T) {
	for _, m := range serialModes {
		t.Run(m.name, func(t *testing.T) {
			a, _ := newSerial(t, m.opts...)
			other := newHeap(t, layout()...)
			p := a.Alloc(64)
			big := a.Alloc(8192)
			var goMem [64]byte
			usage, real := a.Usage(), a.RealUsage()
			cases := []struct {
				name  string
				p     unsafe.Pointer
				kinds []error
			}{
				{"Go memory", unsafe.Pointer(&goMem[8]), []error{zmm.ErrInvalidPointer}},
				{"small interior", unsafe.Add(p, 8), []error{zmm.ErrInvalidPointer}},
				{"large interior", unsafe.Add(big, 4096), []error{zmm.ErrInvalidPointer}},
				{"another heap's block", other.Alloc(64), []error{zmm.ErrWrongHeap, zmm.ErrInvalidPointer}},
				{"a small address", unsafe.Add(nil, 4096), []error{zmm.ErrInvalidPointer}},
			}
			for _, c := range cases {
				for op, f := range map[string]func(){
					"Free":      func() { a.Free(c.p) },
					"Realloc":   func() { a.Realloc(c.p, 100) },
					"BlockSize": func() { a.BlockSize(c.p) },
				} {
					e := catch(t, f)
					ok := false
					for _, k := range c.kinds {
						ok = ok || errors.Is(e, k)
					}
					assert.True(t, ok, "%s, %s: %v", c.name, op, e)
				}
			}
			assert.Equal(t, usage, a.Usage(), "the failed calls changed nothing")
			assert.Equal(t, real, a.RealUsage())
			require.NoError(t, a.Check())
			a.Free(p)
			assert.ErrorIs(t, catch(t, func() { a.Free(p) }), zmm.ErrDoubleFree)
			a.Free(big)
			require.NoError(t, a.Check())
			a.Close()
			assert.ErrorIs(t, catch(t, func() { a.Alloc(10) }), zmm.ErrClosed)
			assert.ErrorIs(t, catch(t, func() { a.Free(p) }), zmm.ErrClosed)
		})
	}
}
