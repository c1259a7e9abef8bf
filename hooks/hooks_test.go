package hooks_test

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/hooks"
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
	"github.com/gozmm/zmm/zmm"
)

func newHeap(t *testing.T, opts ...zmm.Option) *zmm.Heap {
	t.Helper()
	h, err := zmm.New(opts...)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

func TestTracerRecordsWhatReplays(t *testing.T) {
	h := newHeap(t)
	early := h.Alloc(10) // before the tracer: its free is not recorded
	var buf bytes.Buffer
	tr, err := hooks.NewTracer(&buf)
	require.NoError(t, err)
	tr.Attach(h)

	a := h.Alloc(100)          // alloc 0
	b := h.Calloc(4, 1000)     // alloc 1
	a = h.Realloc(a, 5000)     // realloc 0
	h.Free(b)                  // free 1
	c := h.Strdup("zmm")       // alloc 1 (id reused)
	h.Free(early)              // not recorded
	d := h.Realloc(nil, 3<<20) // alloc 2
	h.Reset()                  // request end; a, c, d dropped
	e := h.Alloc(7)            // alloc 0: ids restart after a request end
	h.Free(e)                  // free 0
	_, _, _ = a, c, d
	require.NoError(t, tr.Close())
	h.Alloc(1) // after Close: not recorded

	got, err := trace.Read(&buf)
	require.NoError(t, err, "the trace reader accepts what the tracer wrote")
	assert.Equal(t, []trace.Record{
		{Op: trace.OpAlloc, ID: 0, Size: 100},
		{Op: trace.OpAlloc, ID: 1, Size: 4000},
		{Op: trace.OpRealloc, ID: 0, Size: 5000},
		{Op: trace.OpFree, ID: 1},
		{Op: trace.OpAlloc, ID: 1, Size: 4},
		{Op: trace.OpAlloc, ID: 2, Size: 3 << 20},
		{Op: trace.OpRequestEnd},
		{Op: trace.OpAlloc, ID: 0, Size: 7},
		{Op: trace.OpFree, ID: 0},
	}, got.Records)
	assert.Equal(t, 1, got.Requests)

	// The captured trace replays on zmm and on Go.
	rh := newHeap(t)
	res, err := replay.Zmm(rh, got, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Mismatches)
	res, err = replay.Go(got, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Mismatches)
}

func TestFaultInjectorFailsTheNthAllocation(t *testing.T) {
	h := newHeap(t, zmm.WithLimit(64<<20))
	f := &hooks.FaultInjector{FailNth: 3}
	f.Attach(h)
	p1 := h.Alloc(10)
	p2 := h.Realloc(nil, 20)
	err := zmm.Try(func() { h.Strdup("third") })
	require.Error(t, err)
	assert.ErrorIs(t, err, zmm.ErrMemoryLimit)
	assert.EqualError(t, err, "Allowed memory size of 67108864 bytes exhausted (tried to allocate 6 bytes)")
	p4 := h.Alloc(10) // only the Nth fails
	assert.Equal(t, 4, f.Allocations())
	assert.Equal(t, 1, f.Failures())
	for _, p := range []unsafe.Pointer{p1, p2, p4} {
		h.Free(p)
	}
	assert.Zero(t, h.Usage(), "the failed allocation took nothing")
	require.NoError(t, h.Check())
	f.Detach()
	_, ok := h.CustomHandlers()
	assert.False(t, ok)
}

func TestFaultInjectorFailsAboveASize(t *testing.T) {
	h := newHeap(t)
	f := &hooks.FaultInjector{FailAbove: 4096}
	f.Attach(h)
	small := h.Alloc(4096)
	assert.ErrorIs(t, zmm.Try(func() { h.Alloc(4097) }), zmm.ErrMemoryLimit)
	assert.ErrorIs(t, zmm.Try(func() { h.Realloc(small, 1<<20) }), zmm.ErrMemoryLimit)
	assert.Equal(t, uintptr(4096), h.BlockSize(small), "a failed realloc leaves the block as it was")
	h.Free(small)
	assert.Equal(t, 2, f.Failures())
	f.Detach()
	h.Free(h.Alloc(1 << 20))
}

func TestCounterAttributesTrafficToComponents(t *testing.T) {
	h := newHeap(t)
	c := hooks.NewCounter()
	c.Attach(h)
	leave := c.Enter("session")
	s1 := h.Alloc(100)
	s2 := h.Alloc(300)
	leaveRender := c.Enter("render")
	r1 := h.Alloc(1000)
	h.Free(s1) // a session block freed by render: still session's bytes
	r1 = h.Realloc(r1, 1500)
	leaveRender()
	leave()
	h.Alloc(5) // outside any component

	st := c.Stats()
	assert.Equal(t, hooks.Counts{Allocs: 2, Bytes: 400, Live: 300, PeakLive: 400}, st["session"])
	assert.Equal(t, hooks.Counts{Allocs: 1, Frees: 1, Reallocs: 1, Bytes: 1500, Live: 1500, PeakLive: 1500}, st["render"])
	assert.Equal(t, uint64(5), st[hooks.NoComponent].Live)

	h.Reset()
	st = c.Stats()
	assert.Zero(t, st["session"].Live, "Reset frees every block")
	assert.Equal(t, uint64(400), st["session"].PeakLive)
	_ = s2
	c.Detach()
}

func TestHooksStack(t *testing.T) {
	h := newHeap(t)
	c := hooks.NewCounter()
	c.Attach(h)
	var buf bytes.Buffer
	tr, err := hooks.NewTracer(&buf)
	require.NoError(t, err)
	tr.Attach(h)
	h.Free(h.Alloc(64))
	h.Reset()
	assert.Equal(t, 3, tr.Records(), "alloc, free, request end")
	assert.Equal(t, uint64(1), c.Stats()[hooks.NoComponent].Allocs, "the counter below the tracer saw the call too")

	require.NoError(t, tr.Close())
	h.Alloc(8)
	assert.Equal(t, uint64(2), c.Stats()[hooks.NoComponent].Allocs, "the counter is back in charge")
	c.Detach()
	_, ok := h.CustomHandlers()
	assert.False(t, ok)
}

// stack is a tracer, a fault injector and a counter attached to one heap,
// in that order, as the README shows them.
type stack struct {
	h        *zmm.Heap
	tr       *hooks.Tracer
	faults   *hooks.FaultInjector
	counter  *hooks.Counter
	attached map[string]bool
}

func newStack(t *testing.T, h *zmm.Heap) *stack {
	tr, err := hooks.NewTracer(io.Discard)
	require.NoError(t, err)
	s := &stack{h: h, tr: tr, faults: &hooks.FaultInjector{FailAbove: 1 << 20}, counter: hooks.NewCounter(),
		attached: map[string]bool{"tracer": true, "faults": true, "counter": true}}
	s.tr.Attach(h)
	s.faults.Attach(h)
	s.counter.Attach(h)
	return s
}

// detach detaches one hook by name: the tracer by Close, as the README's
// defer does.
func (s *stack) detach(t *testing.T, name string) {
	switch name {
	case "tracer":
		require.NoError(t, s.tr.Close())
	case "faults":
		s.faults.Detach()
	case "counter":
		s.counter.Detach()
	}
	s.attached[name] = false
}

// checkTraffic makes a round of calls and checks that each attached hook,
// and no detached one, saw them: the tracer records them, the counter
// counts them, the injector counts them and fails an allocation above its
// size.
func (s *stack) checkTraffic(t *testing.T, when string) {
	t.Helper()
	records, allocs := s.tr.Records(), s.faults.Allocations()
	counts := s.counter.Stats()[hooks.NoComponent]

	h := s.h
	h.Free(h.Alloc(64))
	h.Free(h.Realloc(h.Alloc(32), 200))
	h.Reset()

	n := func(hook string, calls int) int {
		if s.attached[hook] {
			return calls
		}
		return 0
	}
	assert.Equal(t, n("tracer", 6), s.tr.Records()-records, "%s: tracer: alloc, free, alloc, realloc, free, request end", when)
	assert.Equal(t, n("faults", 3), s.faults.Allocations()-allocs, "%s: fault injector: 2 allocs and a realloc", when)
	got := s.counter.Stats()[hooks.NoComponent]
	assert.Equal(t, uint64(n("counter", 2)), got.Allocs-counts.Allocs, "%s: counter allocs", when)
	assert.Equal(t, uint64(n("counter", 2)), got.Frees-counts.Frees, "%s: counter frees", when)
	assert.Equal(t, uint64(n("counter", 1)), got.Reallocs-counts.Reallocs, "%s: counter reallocs", when)

	err := zmm.Try(func() { h.Free(h.Alloc(2 << 20)) })
	if s.attached["faults"] {
		assert.ErrorIs(t, err, zmm.ErrMemoryLimit, "%s: the injector fails a 2 MiB allocation", when)
	} else {
		assert.NoError(t, err, "%s: no injector, no failure", when)
	}
	require.NoError(t, h.Check())
}

// permutations returns every order of names.
func permutations(names []string) [][]string {
	if len(names) <= 1 {
		return [][]string{names}
	}
	var out [][]string
	for i, first := range names {
		rest := append(append([]string{}, names[:i]...), names[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{first}, p...))
		}
	}
	return out
}

func TestHooksDetachInAnyOrder(t *testing.T) {
	orders := permutations([]string{"tracer", "faults", "counter"})
	require.Len(t, orders, 6)
	for _, order := range orders {
		t.Run(strings.Join(order, ","), func(t *testing.T) {
			h := newHeap(t)
			s := newStack(t, h)
			s.checkTraffic(t, "all attached")
			for i, name := range order {
				s.detach(t, name)
				s.detach(t, name) // a second Detach or Close does nothing
				s.checkTraffic(t, "after detaching "+strings.Join(order[:i+1], ", "))
				_, hooked := h.CustomHandlers()
				assert.Equal(t, i < len(order)-1, hooked, "handlers installed after detaching %v", order[:i+1])
			}
			// The heap is back on its own code; detaching again is harmless.
			s.detach(t, "tracer")
			s.detach(t, "faults")
			s.detach(t, "counter")
			_, hooked := h.CustomHandlers()
			assert.False(t, hooked)
		})
	}
}

func TestHooksReattachGoesOnTop(t *testing.T) {
	h := newHeap(t)
	s := newStack(t, h)
	s.faults.Detach()
	s.faults.Attach(h) // now above the counter
	s.checkTraffic(t, "the injector attached again")
	s.counter.Detach()
	s.attached["counter"] = false
	s.checkTraffic(t, "the counter gone from below the injector")
}

func TestHooksKeepHandlersInstalledBeforeThem(t *testing.T) {
	h := newHeap(t)
	builtin := h.Builtin()
	var allocs, resets int
	h.SetHandlers(zmm.Handlers{
		Alloc: func(size uintptr) unsafe.Pointer { allocs++; return builtin.Alloc(size) },
		Reset: func() { resets++ },
	})
	c := hooks.NewCounter()
	c.Attach(h)
	f := &hooks.FaultInjector{}
	f.Attach(h)
	h.Alloc(10)
	h.Reset()
	assert.Equal(t, 1, allocs, "the call reached the handlers below the hooks")
	assert.Equal(t, 1, resets)
	assert.Equal(t, uint64(1), c.Stats()[hooks.NoComponent].Allocs)

	c.Detach()
	f.Detach()
	hs, ok := h.CustomHandlers()
	require.True(t, ok, "the handlers from before the hooks are back")
	assert.Nil(t, hs.Free)
	h.Alloc(10)
	assert.Equal(t, 2, allocs)
}

func TestHooksDetachFromAClosedHeap(t *testing.T) {
	h, err := zmm.New()
	require.NoError(t, err)
	s := newStack(t, h)
	h.Close()
	for _, name := range []string{"faults", "tracer", "counter"} {
		assert.NotPanics(t, func() { s.detach(t, name) }, name)
	}
	c := hooks.NewCounter()
	assert.PanicsWithError(t, "zmm: SetHandlers on a closed heap", func() { c.Attach(h) })
	c.Attach(newHeap(t)) // the refused Attach left the counter detached
}

func TestHooksOnADebugHeapKeepSites(t *testing.T) {
	h := newHeap(t, zmm.WithDebug(true), zmm.WithLeakReport(nil))
	c := hooks.NewCounter()
	c.Attach(h)
	h.Alloc(12)
	leaks := h.Leaks()
	require.Len(t, leaks, 1)
	assert.Contains(t, leaks[0].Site.File, "hooks_test.go")
}

func TestHooksPanicOnDoubleAttach(t *testing.T) {
	h := newHeap(t)
	c := hooks.NewCounter()
	c.Attach(h)
	assert.Panics(t, func() { c.Attach(h) })
}

func TestHooksAllocateNothingOnTheGoHeapPerCallOnceWarm(t *testing.T) {
	h := newHeap(t)
	f := &hooks.FaultInjector{}
	f.Attach(h)
	assert.Zero(t, testing.AllocsPerRun(100, func() { h.Free(h.Alloc(64)) }))
}
