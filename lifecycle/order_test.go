package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/lifecycle"
	"github.com/gozmm/zmm/zmm"
)

func TestPhaseOrderOneWorker(t *testing.T) {
	rec := &recorder{}
	d, _ := start(t, []lifecycle.Component{traced(rec, "a"), traced(rec, "b"), traced(rec, "c")})
	for _, name := range []string{"GET /1", "GET /2"} {
		require.NoError(t, do(d, name, func(c *lifecycle.Context) error {
			rec.add("handler " + c.Request())
			return nil
		}))
	}
	require.NoError(t, d.Shutdown(context.Background()))

	request := func(name string) []string {
		return []string{
			"RINIT a", "RINIT b", "RINIT c",
			"handler " + name,
			"RSHUTDOWN c", "RSHUTDOWN b", "RSHUTDOWN a",
			"POST c", "POST b", "POST a",
		}
	}
	want := slices.Concat(
		[]string{"MINIT a", "MINIT b", "MINIT c", "GINIT a", "GINIT b", "GINIT c"},
		request("GET /1"), request("GET /2"),
		[]string{"GSHUTDOWN c", "GSHUTDOWN b", "GSHUTDOWN a", "MSHUTDOWN c", "MSHUTDOWN b", "MSHUTDOWN a"},
	)
	assert.Equal(t, want, rec.take())
}

// With several workers, each worker runs its own worker start and end in
// order, module startup comes before every worker start, and every worker
// end before module shutdown.
func TestPhaseOrderPerWorker(t *testing.T) {
	rec := &recorder{}
	tag := func(name string) lifecycle.Component {
		hook := func(event string) lifecycle.Hook {
			return func(c *lifecycle.Context) error {
				rec.add(fmt.Sprintf("%d %s %s", c.Worker(), event, name))
				return nil
			}
		}
		return lifecycle.Component{Name: name, ModuleStartup: hook("MINIT"), WorkerStart: hook("GINIT"),
			RequestStart: hook("RINIT"), RequestEnd: hook("RSHUTDOWN"), PostRequestEnd: hook("POST"),
			WorkerEnd: hook("GSHUTDOWN"), ModuleShutdown: hook("MSHUTDOWN")}
	}
	d, _ := start(t, []lifecycle.Component{tag("a"), tag("b")}, lifecycle.WithWorkers(3))
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() { assert.NoError(t, do(d, fmt.Sprint("req ", i), nil)) })
	}
	wg.Wait()
	require.NoError(t, d.Shutdown(context.Background()))
	events := rec.take()

	byWorker := map[string][]string{}
	lastMINIT, firstGINIT, lastGSHUTDOWN, firstMSHUTDOWN := -1, len(events), -1, len(events)
	for i, e := range events {
		worker, rest, _ := strings.Cut(e, " ")
		byWorker[worker] = append(byWorker[worker], rest)
		switch {
		case strings.HasPrefix(rest, "MINIT"):
			lastMINIT = i
		case strings.HasPrefix(rest, "GINIT"):
			firstGINIT = min(firstGINIT, i)
		case strings.HasPrefix(rest, "GSHUTDOWN"):
			lastGSHUTDOWN = i
		case strings.HasPrefix(rest, "MSHUTDOWN"):
			firstMSHUTDOWN = min(firstMSHUTDOWN, i)
		}
	}
	assert.Less(t, lastMINIT, firstGINIT, "module startup ends before any worker starts")
	assert.Less(t, lastGSHUTDOWN, firstMSHUTDOWN, "every worker ends before module shutdown")
	assert.Equal(t, []string{"MINIT a", "MINIT b", "MSHUTDOWN b", "MSHUTDOWN a"}, byWorker["-1"])

	requests := 0
	for w := range 3 {
		seq := byWorker[fmt.Sprint(w)]
		require.GreaterOrEqual(t, len(seq), 4, "worker %d", w)
		assert.Equal(t, []string{"GINIT a", "GINIT b"}, seq[:2], "worker %d starts in registration order", w)
		assert.Equal(t, []string{"GSHUTDOWN b", "GSHUTDOWN a"}, seq[len(seq)-2:], "worker %d ends in reverse order", w)
		body := seq[2 : len(seq)-2]
		require.Zero(t, len(body)%6, "worker %d: whole requests: %v", w, body)
		for i := 0; i < len(body); i += 6 {
			assert.Equal(t, []string{"RINIT a", "RINIT b", "RSHUTDOWN b", "RSHUTDOWN a", "POST b", "POST a"}, body[i:i+6])
			requests++
		}
	}
	assert.Equal(t, 12, requests)
}

// PHP's rule: an extension whose MINIT fails is not shut down, the ones
// started before it are, in reverse order; nothing after it starts.
func TestModuleStartupFailureStopsStartupAndNamesTheComponent(t *testing.T) {
	rec := &recorder{}
	errNoConfig := errors.New("no config file")
	b := traced(rec, "b")
	b.ModuleStartup = func(*lifecycle.Context) error { rec.add("MINIT b"); return errNoConfig }
	out := &syncBuffer{}
	d := lifecycle.New(lifecycle.WithReport(out))
	for _, c := range []lifecycle.Component{traced(rec, "a"), b, traced(rec, "c")} {
		require.NoError(t, d.Register(c))
	}

	err := d.Start(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, errNoConfig)
	he := hookError(t, err)
	assert.Equal(t, "b", he.Component)
	assert.Equal(t, lifecycle.PhaseModuleStartup, he.Phase)
	assert.Contains(t, err.Error(), `module startup hook of component "b" failed: no config file`)
	assert.Equal(t, []string{"MINIT a", "MINIT b", "MSHUTDOWN a"}, rec.take())
	assert.Contains(t, out.String(), `module startup hook of component "b" failed`)
	require.Len(t, d.Report().Failures, 1)

	assert.ErrorIs(t, do(d, "GET /", nil), lifecycle.ErrNotRunning)
	assert.ErrorIs(t, d.Start(context.Background()), lifecycle.ErrStarted)
	assert.NoError(t, d.Shutdown(context.Background()))
	assert.Empty(t, rec.take())
}

func TestWorkerStartFailureUnwindsStartedComponents(t *testing.T) {
	rec := &recorder{}
	b := traced(rec, "b")
	b.WorkerStart = func(c *lifecycle.Context) error {
		rec.add("GINIT b")
		return errors.New("cannot open cache")
	}
	d := lifecycle.New(lifecycle.WithReport(nil))
	for _, c := range []lifecycle.Component{traced(rec, "a"), b, traced(rec, "c")} {
		require.NoError(t, d.Register(c))
	}
	err := d.Start(context.Background())
	require.Error(t, err)
	he := hookError(t, err)
	assert.Equal(t, "b", he.Component)
	assert.Equal(t, lifecycle.PhaseWorkerStart, he.Phase)
	assert.Equal(t, 0, he.Worker)
	assert.Contains(t, err.Error(), `worker start hook of component "b" (worker 0) failed: cannot open cache`)
	assert.Equal(t, []string{
		"MINIT a", "MINIT b", "MINIT c",
		"GINIT a", "GINIT b", "GSHUTDOWN a",
		"MSHUTDOWN c", "MSHUTDOWN b", "MSHUTDOWN a",
	}, rec.take())
	assert.ErrorIs(t, do(d, "GET /", nil), lifecycle.ErrNotRunning)
}

// With several workers, the one that fails unwinds its own started
// components; the others end in full; then modules shut down.
func TestWorkerStartFailureOnOneOfSeveralWorkers(t *testing.T) {
	rec := &recorder{}
	comp := func(name string, failOn int) lifecycle.Component {
		return lifecycle.Component{
			Name: name,
			WorkerStart: func(c *lifecycle.Context) error {
				rec.add(fmt.Sprintf("%d GINIT %s", c.Worker(), name))
				if c.Worker() == failOn {
					return errors.New("refused")
				}
				return nil
			},
			WorkerEnd: func(c *lifecycle.Context) error {
				rec.add(fmt.Sprintf("%d GSHUTDOWN %s", c.Worker(), name))
				return nil
			},
			ModuleShutdown: func(c *lifecycle.Context) error { rec.add("MSHUTDOWN " + name); return nil },
		}
	}
	d := lifecycle.New(lifecycle.WithReport(nil), lifecycle.WithWorkers(2))
	require.NoError(t, d.Register(comp("a", -1)))
	require.NoError(t, d.Register(comp("b", 1)))
	err := d.Start(context.Background())
	require.Error(t, err)
	assert.Equal(t, 1, hookError(t, err).Worker)

	events := rec.take()
	perWorker := map[byte][]string{}
	for _, e := range events {
		if e[0] == '0' || e[0] == '1' {
			perWorker[e[0]] = append(perWorker[e[0]], e[2:])
		}
	}
	assert.Equal(t, []string{"GINIT a", "GINIT b", "GSHUTDOWN b", "GSHUTDOWN a"}, perWorker['0'])
	assert.Equal(t, []string{"GINIT a", "GINIT b", "GSHUTDOWN a"}, perWorker['1'])
	assert.Equal(t, []string{"MSHUTDOWN b", "MSHUTDOWN a"}, events[len(events)-2:])
}

// A failing request start skips the handler; request end runs for the
// components before the failing one; post-request end runs for all; the
// worker serves the next request normally.
func TestRequestStartFailureSkipsTheHandler(t *testing.T) {
	rec := &recorder{}
	b := traced(rec, "b")
	fail := true
	b.RequestStart = func(c *lifecycle.Context) error {
		rec.add("RINIT b")
		if fail {
			return errors.New("session store down")
		}
		return nil
	}
	d, _ := start(t, []lifecycle.Component{traced(rec, "a"), b, traced(rec, "c")})
	rec.take()

	handler := func(c *lifecycle.Context) error { rec.add("handler"); return nil }
	err := do(d, "GET /a", handler)
	he := hookError(t, err)
	assert.Equal(t, "b", he.Component)
	assert.Equal(t, lifecycle.PhaseRequestStart, he.Phase)
	assert.Equal(t, "GET /a", he.Request)
	assert.Contains(t, err.Error(), `request start hook of component "b" (request "GET /a", worker 0) failed: session store down`)
	assert.Equal(t, []string{"RINIT a", "RINIT b", "RSHUTDOWN a", "POST c", "POST b", "POST a"}, rec.take())

	fail = false // the worker is the only goroutine reading it, after Do's hand-off
	require.NoError(t, do(d, "GET /b", handler))
	assert.Contains(t, rec.take(), "handler")
}

// Shutdown runs every shutdown hook even when some fail, and returns all
// the failures.
func TestShutdownHookFailuresAreJoined(t *testing.T) {
	rec := &recorder{}
	a, b := traced(rec, "a"), traced(rec, "b")
	a.ModuleShutdown = func(*lifecycle.Context) error { rec.add("MSHUTDOWN a"); return errors.New("flush failed") }
	b.WorkerEnd = func(*lifecycle.Context) error { rec.add("GSHUTDOWN b"); return errors.New("close failed") }
	d, _ := start(t, []lifecycle.Component{a, b})
	rec.take()

	err := d.Shutdown(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `worker end hook of component "b" (worker 0) failed: close failed`)
	assert.Contains(t, err.Error(), `module shutdown hook of component "a" failed: flush failed`)
	assert.Equal(t, []string{"GSHUTDOWN b", "GSHUTDOWN a", "MSHUTDOWN b", "MSHUTDOWN a"}, rec.take())
	assert.Equal(t, err, d.Shutdown(context.Background()), "later calls return the first result")
}

func TestHandlerErrorsAndPanics(t *testing.T) {
	rec := &recorder{}
	d, out := start(t, []lifecycle.Component{traced(rec, "a")}, lifecycle.WithHeapOptions(zmm.WithLimit(4<<20)))
	rec.take()

	t.Run("a returned error comes back as is", func(t *testing.T) {
		errNotFound := errors.New("not found")
		assert.Equal(t, errNotFound, do(d, "GET /missing", func(*lifecycle.Context) error { return errNotFound }))
		assert.Equal(t, []string{"RINIT a", "RSHUTDOWN a", "POST a"}, rec.take())
	})
	t.Run("a panic fails the request, with its stack in the report", func(t *testing.T) {
		err := do(d, "GET /panic", func(*lifecycle.Context) error { panic("boom") })
		he := hookError(t, err)
		assert.Equal(t, lifecycle.PhaseRequest, he.Phase)
		assert.Empty(t, he.Component)
		var pe *lifecycle.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "boom", pe.Value)
		assert.Contains(t, err.Error(), `request handler (request "GET /panic", worker 0) failed: panic: boom`)
		assert.Contains(t, out.String(), "TestHandlerErrorsAndPanics")
		assert.Equal(t, []string{"RINIT a", "RSHUTDOWN a", "POST a"}, rec.take(), "request end hooks still run")
	})
	t.Run("a zmm bailout (memory limit) fails the request, not the worker", func(t *testing.T) {
		err := do(d, "GET /big", func(c *lifecycle.Context) error {
			c.Alloc(64 << 20)
			return nil
		})
		assert.ErrorIs(t, err, zmm.ErrMemoryLimit)
		assert.Contains(t, err.Error(), "Allowed memory size of 4194304 bytes exhausted")
		assert.NoError(t, do(d, "GET /small", func(c *lifecycle.Context) error { c.Free(c.Alloc(100)); return nil }))
		rec.take()
	})
}

func TestRegisterRules(t *testing.T) {
	d := lifecycle.New(lifecycle.WithReport(nil))
	assert.ErrorContains(t, d.Register(lifecycle.Component{}), "no name")
	require.NoError(t, d.Register(lifecycle.Component{Name: "a"}))
	assert.ErrorContains(t, d.Register(lifecycle.Component{Name: "a"}), `"a" is already registered`)
	assert.ErrorIs(t, d.Do(context.Background(), lifecycle.Request{Name: "GET /"}), lifecycle.ErrNotRunning)
	require.NoError(t, d.Start(context.Background()))
	assert.ErrorIs(t, d.Register(lifecycle.Component{Name: "b"}), lifecycle.ErrStarted)
	assert.ErrorIs(t, d.Start(context.Background()), lifecycle.ErrStarted)
	require.NoError(t, d.Shutdown(context.Background()))
	assert.ErrorIs(t, d.Do(context.Background(), lifecycle.Request{Name: "GET /"}), lifecycle.ErrNotRunning)

	assert.Panics(t, func() { lifecycle.WithWorkers(0) })
	assert.Panics(t, func() { lifecycle.WithMaxRequests(-1) })
}

func TestContextAccessors(t *testing.T) {
	type key struct{}
	type globals struct{ requests int }
	var got []string
	comp := lifecycle.Component{
		Name: "session",
		ModuleStartup: func(c *lifecycle.Context) error {
			got = append(got, fmt.Sprintf("%v|%s|%d|%q|%v", c.Phase(), c.Component(), c.Worker(), c.Request(), c.Globals()))
			return nil
		},
		WorkerStart: func(c *lifecycle.Context) error {
			c.SetGlobals(&globals{})
			return nil
		},
		RequestStart: func(c *lifecycle.Context) error {
			c.Globals().(*globals).requests++
			got = append(got, fmt.Sprintf("%v|%s|%d|%q|%v", c.Phase(), c.Component(), c.Worker(), c.Request(), c.Context().Value(key{})))
			return nil
		},
	}
	d, _ := start(t, []lifecycle.Component{comp})
	ctx := context.WithValue(context.Background(), key{}, "v")
	require.NoError(t, d.Do(ctx, lifecycle.Request{Name: "GET /x", Handle: func(c *lifecycle.Context) error {
		assert.Nil(t, c.Globals(), "a handler has no component of its own")
		assert.Equal(t, 1, c.GlobalsOf("session").(*globals).requests)
		assert.Nil(t, c.GlobalsOf("nope"))
		assert.Panics(t, func() { c.SetGlobals(1) })
		got = append(got, fmt.Sprintf("%v|%s|%d|%q", c.Phase(), c.Component(), c.Worker(), c.Request()))
		return nil
	}}))
	require.NoError(t, do(d, "", nil))
	assert.Equal(t, []string{
		`module startup|session|-1|""|<nil>`,
		`request start|session|0|"GET /x"|v`,
		`request handler||0|"GET /x"`,
		`request start|session|0|"-"|<nil>`,
	}, got)
}

func TestHookObserverWrapsEveryHook(t *testing.T) {
	rec := &recorder{}
	observe := func(c *lifecycle.Context) func() {
		component, phase := c.Component(), c.Phase()
		rec.add(fmt.Sprintf("enter %s %v", component, phase))
		return func() { rec.add(fmt.Sprintf("leave %s %v", component, phase)) }
	}
	comp := lifecycle.Component{
		Name:          "a",
		ModuleStartup: func(*lifecycle.Context) error { rec.add("MINIT a"); return nil },
		RequestEnd:    func(*lifecycle.Context) error { panic("observer must still leave") },
	}
	d, _ := start(t, []lifecycle.Component{comp}, lifecycle.WithHookObserver(observe))
	err := do(d, "GET /", func(*lifecycle.Context) error { rec.add("handler"); return nil })
	require.Error(t, err)
	assert.Equal(t, []string{
		"enter a module startup", "MINIT a", "leave a module startup",
		"enter  request handler", "handler", "leave  request handler",
		"enter a request end", "leave a request end",
	}, rec.take())
}

// occupyWorker starts a request that holds d's only worker until the
// returned function is called; that function waits for the request to end.
func occupyWorker(t *testing.T, d *lifecycle.Driver) (finish func()) {
	release, running := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		assert.NoError(t, do(d, "GET /slow", func(*lifecycle.Context) error {
			close(running)
			<-release
			return nil
		}))
	})
	<-running
	return func() {
		close(release)
		wg.Wait()
	}
}

func TestDoGivesUpWhenItsContextEndsBeforeAWorkerIsFree(t *testing.T) {
	d, _ := start(t, nil)
	finish := occupyWorker(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran := false
	err := d.Do(ctx, lifecycle.Request{Name: "GET /late", Handle: func(*lifecycle.Context) error { ran = true; return nil }})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	finish()
	assert.False(t, ran)
}

// A Shutdown whose context ends while a request is still running returns
// the context's error; a later Shutdown finishes the job, once.
func TestShutdownWaitsForRunningRequests(t *testing.T) {
	rec := &recorder{}
	d, _ := start(t, []lifecycle.Component{traced(rec, "a")})
	finish := occupyWorker(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, d.Shutdown(ctx), context.DeadlineExceeded)
	assert.ErrorIs(t, do(d, "GET /after", nil), lifecycle.ErrNotRunning)
	finish()
	require.NoError(t, d.Shutdown(context.Background()))
	require.NoError(t, d.Shutdown(context.Background()))
	events := rec.take()
	assert.Equal(t, []string{"GSHUTDOWN a", "MSHUTDOWN a"}, events[len(events)-2:])
	assert.Equal(t, 1, slices.Index(events, "MSHUTDOWN a")-slices.Index(events, "GSHUTDOWN a"))
}
