package zmm_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
)

// observer counts the calls it sees and passes them to the heap's own code.
type observer struct {
	allocs, frees, reallocs, resets int
	bytes                           uintptr
}

func observe(h *zmm.Heap) *observer {
	o := &observer{}
	next := h.Builtin()
	h.SetHandlers(zmm.Handlers{
		Alloc: func(size uintptr) unsafe.Pointer {
			o.allocs++
			o.bytes += size
			return next.Alloc(size)
		},
		Free: func(p unsafe.Pointer) {
			o.frees++
			next.Free(p)
		},
		Realloc: func(p unsafe.Pointer, size uintptr) unsafe.Pointer {
			o.reallocs++
			return next.Realloc(p, size)
		},
		Reset: func() { o.resets++ },
	})
	return o
}

func TestHandlersObserveEveryEntryPoint(t *testing.T) {
	for _, debug := range []bool{false, true} {
		h := newHeap(t, zmm.WithDebug(debug), zmm.WithLeakReport(nil))
		o := observe(h)
		p := h.Alloc(100)
		q := h.Calloc(10, 10)
		s := h.Strdup("hello")
		b := h.AllocBytes(5000)
		n := zmm.AllocOf[int64](h)
		big := h.SafeAlloc(3, 1<<20, 0)
		assert.Equal(t, 6, o.allocs, "debug=%v", debug)
		assert.Equal(t, uintptr(100+100+6+5000+8+3<<20), o.bytes)

		p = h.Realloc(p, 200)
		p = h.Realloc(p, 20000)
		assert.Equal(t, 2, o.reallocs)
		assert.Equal(t, 6, o.allocs, "a realloc that moves is one realloc, not an alloc and a free")
		assert.Zero(t, o.frees)

		for _, x := range []unsafe.Pointer{p, q, s, unsafe.Pointer(&b[0]), unsafe.Pointer(n), big} {
			h.Free(x)
		}
		assert.Equal(t, 6, o.frees)
		assert.Zero(t, h.Usage(), "the heap's own code did the work")
		h.Reset()
		assert.Equal(t, 1, o.resets)
	}
}

func TestHandlersReplaceTheAllocator(t *testing.T) {
	h := newHeap(t)
	other := newHeap(t)
	h.SetHandlers(zmm.Handlers{Alloc: other.Alloc, Free: other.Free, Realloc: other.Realloc})
	p := h.Alloc(64)
	assert.True(t, other.Owns(p), "the replacement served the block")
	assert.False(t, h.Owns(p))
	assert.Zero(t, h.Usage())
	p = h.Realloc(p, 128)
	assert.True(t, other.Owns(p))
	h.Free(p)
	assert.Zero(t, other.Usage())
}

func TestHandlersNilFieldsKeepTheBuiltin(t *testing.T) {
	h := newHeap(t)
	frees := 0
	next := h.Builtin()
	h.SetHandlers(zmm.Handlers{Free: func(p unsafe.Pointer) { frees++; next.Free(p) }})
	p := h.Alloc(48)
	p = h.Realloc(p, 4000)
	h.Free(p)
	assert.Equal(t, 1, frees)
	assert.Zero(t, h.Usage())
	got, ok := h.CustomHandlers()
	require.True(t, ok)
	assert.Nil(t, got.Alloc)
	assert.NotNil(t, got.Free)
}

func TestRestoreHandlersBringsTheFastPathBack(t *testing.T) {
	h := newHeap(t)
	var before []unsafe.Pointer
	for i := range 100 {
		before = append(before, h.Alloc(uintptr(8+i*30)))
	}
	o := observe(h)
	var during []unsafe.Pointer
	for i := range 100 {
		during = append(during, h.Alloc(uintptr(8+i*30)))
	}
	for _, p := range before[:50] { // blocks from before the handlers
		h.Free(p)
	}
	assert.Equal(t, 100, o.allocs)
	assert.Equal(t, 50, o.frees)

	h.RestoreHandlers()
	_, ok := h.CustomHandlers()
	assert.False(t, ok)
	for _, p := range append(before[50:], during...) {
		h.Free(p)
	}
	assert.Equal(t, 50, o.frees, "no handler after RestoreHandlers")
	assert.Zero(t, h.Usage())
	require.NoError(t, h.Check())
	assert.Zero(t, testing.AllocsPerRun(100, func() { h.Free(h.Alloc(64)) }))

	// The free slots made while the handlers were on are used again.
	real := h.RealUsage()
	for range 1000 {
		h.Free(h.Alloc(100))
	}
	assert.Equal(t, real, h.RealUsage())
}

func TestHandlersKeepMisuseChecks(t *testing.T) {
	h := newHeap(t)
	observe(h)
	p := h.Alloc(32)
	h.Free(p)
	assert.ErrorIs(t, catch(t, func() { h.Free(p) }), zmm.ErrDoubleFree)
	x := 1
	assert.ErrorIs(t, catch(t, func() { h.Free(unsafe.Pointer(&x)) }), zmm.ErrInvalidPointer)
	require.NoError(t, h.Check())
}

func TestHandlersOnDebugHeapKeepTheCallersSite(t *testing.T) {
	var report bytes.Buffer
	h := newHeap(t, zmm.WithDebug(true), zmm.WithLeakReport(&report))
	observe(h)
	h.Alloc(24) // the leak: this line is the site
	leaks := h.Leaks()
	require.Len(t, leaks, 1)
	assert.True(t, strings.HasSuffix(leaks[0].Site.File, "handlers_test.go"), "site %v", leaks[0].Site)
	assert.Equal(t, "zmm_test.TestHandlersOnDebugHeapKeepTheCallersSite", leaks[0].Site.Function[strings.LastIndex(leaks[0].Site.Function, "/")+1:])
	h.Reset()
	assert.Contains(t, report.String(), "handlers_test.go")
}

func TestHandlersStayConsistentUnderRandomTraffic(t *testing.T) {
	h := newHeap(t)
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[unsafe.Pointer]uintptr{}
	var o *observer
	for i := range 20000 {
		switch {
		case i%2500 == 0 && o == nil:
			o = observe(h)
		case i%2500 == 0:
			h.RestoreHandlers()
			o = nil
		}
		switch op := rng.IntN(10); {
		case op < 5 || len(live) == 0:
			size := uintptr(rng.IntN(5000))
			if rng.IntN(50) == 0 {
				size = uintptr(rng.IntN(4 << 20))
			}
			p := h.Alloc(size)
			fill(p, min(size, 64), byte(i))
			live[p] = size
		case op < 7:
			for p, size := range live {
				nsize := uintptr(rng.IntN(8000))
				q := h.Realloc(p, nsize)
				delete(live, p)
				live[q] = nsize
				_ = size
				break
			}
		default:
			for p := range live {
				h.Free(p)
				delete(live, p)
				break
			}
		}
	}
	require.NoError(t, h.Check())
	for p := range live {
		h.Free(p)
	}
	assert.Zero(t, h.Usage())
}

func TestHandlersAfterClose(t *testing.T) {
	h, err := zmm.New()
	require.NoError(t, err)
	observe(h)
	h.Close()
	assert.ErrorIs(t, catch(t, func() { h.Alloc(8) }), zmm.ErrClosed)
	assert.ErrorIs(t, catch(t, func() { h.Builtin().Alloc(8) }), zmm.ErrClosed)
	h.RestoreHandlers() // harmless
}
