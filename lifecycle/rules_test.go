package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/lifecycle"
	"github.com/gozmm/zmm/zmm"
)

// Request memory outside a request: each phase that has none refuses it,
// with a violation that names the phase and the component.
func TestRequestMemoryOutsideARequestIsAViolation(t *testing.T) {
	misuse := map[string]func(c *lifecycle.Context){
		"Alloc":   func(c *lifecycle.Context) { c.Alloc(16) },
		"Calloc":  func(c *lifecycle.Context) { c.Calloc(2, 8) },
		"Realloc": func(c *lifecycle.Context) { c.Realloc(nil, 16) },
		"Free":    func(c *lifecycle.Context) { c.Free(nil) },
		"Heap":    func(c *lifecycle.Context) { c.Heap() },
	}
	for _, phase := range []lifecycle.Phase{
		lifecycle.PhaseModuleStartup, lifecycle.PhaseWorkerStart, lifecycle.PhasePostRequestEnd,
		lifecycle.PhaseWorkerEnd, lifecycle.PhaseModuleShutdown, lifecycle.PhaseInfo,
	} {
		for op, f := range misuse {
			t.Run(fmt.Sprintf("%s in %v", op, phase), func(t *testing.T) {
				hook := func(c *lifecycle.Context) error {
					if c.Phase() == phase {
						f(c)
					}
					return nil
				}
				comp := lifecycle.Component{Name: "cache", ModuleStartup: hook, WorkerStart: hook, PostRequestEnd: hook,
					WorkerEnd: hook, ModuleShutdown: hook, Info: func(c *lifecycle.Context, _ io.Writer) error { return hook(c) }}
				out := &syncBuffer{}
				d := lifecycle.New(lifecycle.WithReport(out), lifecycle.WithDebug(true))
				require.NoError(t, d.Register(comp))

				var err error
				if err = d.Start(context.Background()); err == nil {
					switch phase {
					case lifecycle.PhasePostRequestEnd:
						err = do(d, "GET /x", nil)
					case lifecycle.PhaseInfo:
						err = d.Info(&strings.Builder{})
					}
					if shutdownErr := d.Shutdown(context.Background()); err == nil {
						err = shutdownErr
					}
				}
				require.Error(t, err)
				assert.ErrorIs(t, err, lifecycle.ErrOutsideRequest)
				v := violation(t, err)
				assert.Equal(t, phase, v.Phase)
				assert.Equal(t, "cache", v.Component)
				assert.Equal(t, op, v.Op)
				assert.Contains(t, v.Msg, fmt.Sprintf("%s of request memory in %v hook of component \"cache\"", op, phase))
				assert.Contains(t, out.String(), v.Msg, "reported when found")
				require.Len(t, d.Report().Violations, 1)
				assert.Same(t, v, d.Report().Violations[0])
			})
		}
	}
}

// A request's Context kept after the request ended refuses request memory,
// from the next request as well as from any other goroutine.
func TestStaleRequestContextIsAViolation(t *testing.T) {
	d, out := start(t, nil, lifecycle.WithDebug(true))
	var kept *lifecycle.Context
	require.NoError(t, do(d, "GET /first", func(c *lifecycle.Context) error {
		kept = c
		return nil
	}))

	err := do(d, "GET /second", func(c *lifecycle.Context) error {
		kept.Alloc(32)
		return nil
	})
	assert.ErrorIs(t, err, lifecycle.ErrOutsideRequest)
	v := violation(t, err)
	assert.Equal(t, "GET /first", v.Request, "the violation names the stale request")
	assert.Equal(t, lifecycle.PhaseRequest, v.Phase)
	assert.Contains(t, v.Msg, `Alloc of request memory through the Context of request "GET /first" (worker 0), which has ended`)
	assert.Contains(t, err.Error(), `request handler (request "GET /second", worker 0) failed`)

	err = catch(func() { kept.Heap() })
	assert.ErrorIs(t, err, lifecycle.ErrOutsideRequest)
	assert.Contains(t, out.String(), "Heap of request memory through the Context of request \"GET /first\"")
	assert.Len(t, d.Report().Violations, 2)
}

// A Context kept from a request start hook works in the handler: request
// memory lives until the request ends.
func TestRequestContextValidUntilTheRequestEnds(t *testing.T) {
	var fromStart *lifecycle.Context
	comp := lifecycle.Component{Name: "a", RequestStart: func(c *lifecycle.Context) error { fromStart = c; return nil }}
	d, _ := start(t, []lifecycle.Component{comp}, lifecycle.WithDebug(true))
	require.NoError(t, do(d, "GET /", func(c *lifecycle.Context) error {
		fromStart.Free(fromStart.Alloc(10))
		return nil
	}))
}

// sessionComponent keeps a persistent block per worker, from worker start
// to worker end, and puts the line that allocates it in *at.
func sessionComponent(at *int) lifecycle.Component {
	return lifecycle.Component{
		Name: "session",
		WorkerStart: func(c *lifecycle.Context) error {
			p, l := c.PAlloc(64), line()
			if c.Worker() == 0 { // the only worker the callers look at
				*at = l
			}
			c.SetGlobals(p)
			return nil
		},
		WorkerEnd: func(c *lifecycle.Context) error {
			c.PFree(c.Globals().(unsafe.Pointer))
			return nil
		},
	}
}

func TestFreeOfPersistentMemoryIsAViolation(t *testing.T) {
	for _, debug := range []bool{true, false} {
		t.Run(fmt.Sprint("debug=", debug), func(t *testing.T) {
			var at int
			d, out := start(t, []lifecycle.Component{sessionComponent(&at)}, lifecycle.WithDebug(debug))
			misuse := map[string]func(c *lifecycle.Context, p unsafe.Pointer){
				"Free":           func(c *lifecycle.Context, p unsafe.Pointer) { c.Free(p) },
				"Realloc":        func(c *lifecycle.Context, p unsafe.Pointer) { c.Realloc(p, 128) },
				"Heap().Free":    func(c *lifecycle.Context, p unsafe.Pointer) { c.Heap().Free(p) },
				"Heap().Realloc": func(c *lifecycle.Context, p unsafe.Pointer) { c.Heap().Realloc(p, 128) },
			}
			for call, f := range misuse {
				var p unsafe.Pointer
				err := do(d, "GET /logout", func(c *lifecycle.Context) error {
					p = c.GlobalsOf("session").(unsafe.Pointer)
					f(c, p)
					return nil
				})
				require.Error(t, err, call)
				assert.ErrorIs(t, err, lifecycle.ErrWrongFree, call)
				v := violation(t, err)
				assert.Equal(t, uintptr(p), v.Ptr)
				assert.Equal(t, "GET /logout", v.Request)
				assert.Contains(t, v.Msg, fmt.Sprintf("of persistent memory in request handler (request \"GET /logout\", worker 0): block 0x%x (64 bytes, allocated ", v.Ptr), call)
				assert.Contains(t, v.Msg, `in worker start hook of component "session" (worker 0)) belongs to the persistent heap, not to the request heap of worker 0; free it with PFree (pefree)`, call)
				if strings.HasPrefix(call, "Heap()") {
					var ze *zmm.Error
					assert.ErrorAs(t, err, &ze, "zmm found it first")
				}
				if debug {
					assert.Equal(t, thisFile(), v.Site.File, call)
					assert.Equal(t, at, v.Site.Line, call)
					assert.Contains(t, v.Msg, fmt.Sprintf("allocated at %s:%d in worker start", thisFile(), at))
				} else {
					assert.Zero(t, v.Site)
				}
				assert.Contains(t, out.String(), v.Msg)
			}
			// The block was left alone: worker end frees it, no leak at shutdown.
			require.NoError(t, d.Shutdown(context.Background()))
			assert.Len(t, d.Report().Violations, len(misuse))
		})
	}
}

func TestPFreeOfRequestMemoryIsAViolation(t *testing.T) {
	for _, debug := range []bool{true, false} {
		t.Run(fmt.Sprint("debug=", debug), func(t *testing.T) {
			d, out := start(t, nil, lifecycle.WithDebug(debug))
			type alloc func(c *lifecycle.Context) (unsafe.Pointer, int)
			allocs := map[string]alloc{
				"Context.Alloc": func(c *lifecycle.Context) (unsafe.Pointer, int) { return c.Alloc(100), line() },
				"Heap().Alloc":  func(c *lifecycle.Context) (unsafe.Pointer, int) { return c.Heap().Alloc(100), line() },
			}
			frees := map[string]func(c *lifecycle.Context, p unsafe.Pointer){
				"PFree":    func(c *lifecycle.Context, p unsafe.Pointer) { c.PFree(p) },
				"PRealloc": func(c *lifecycle.Context, p unsafe.Pointer) { c.PRealloc(p, 200) },
			}
			for an, a := range allocs {
				for fn, f := range frees {
					var at int
					err := do(d, "POST /upload", func(c *lifecycle.Context) error {
						var p unsafe.Pointer
						p, at = a(c)
						f(c, p)
						return nil
					})
					name := an + " then " + fn
					require.Error(t, err, name)
					assert.ErrorIs(t, err, lifecycle.ErrWrongFree, name)
					v := violation(t, err)
					assert.Equal(t, fn, v.Op)
					assert.Contains(t, v.Msg, fmt.Sprintf("lifecycle: %s (pe", fn), name)
					assert.Contains(t, v.Msg, fmt.Sprintf("of request memory in request handler (request \"POST /upload\", worker 0): block 0x%x", v.Ptr), name)
					assert.Contains(t, v.Msg, "belongs to the request heap of worker 0, not to the persistent heap; free it with Free (efree)", name)
					if debug {
						assert.Contains(t, v.Msg, fmt.Sprintf("(100 bytes, allocated at %s:%d)", thisFile(), at), name)
						assert.Equal(t, at, v.Site.Line, name)
					} else {
						assert.Zero(t, v.Site, name)
					}
					assert.Contains(t, out.String(), v.Msg)
				}
			}
			// Nothing persistent was allocated: PRealloc refused before allocating.
			require.NoError(t, d.Shutdown(context.Background()))
		})
	}
}

// Persistent memory that a request allocates and nobody frees is reported
// at module shutdown as allocated during that request.
func TestPersistentMemoryAllocatedDuringARequestAndNeverFreed(t *testing.T) {
	var cacheAt, renderAt int
	render := lifecycle.Component{
		Name: "render",
		RequestEnd: func(c *lifecycle.Context) error {
			if c.Request() == "GET /report" {
				_, renderAt = c.PAlloc(24), line()
			}
			return nil
		},
	}
	d, out := start(t, []lifecycle.Component{render}, lifecycle.WithDebug(true))
	require.NoError(t, do(d, "GET /cache", func(c *lifecycle.Context) error {
		_, cacheAt = c.PAlloc(48), line()
		c.PFree(c.PAlloc(1000)) // freed: no leak
		return nil
	}))
	require.NoError(t, do(d, "GET /report", nil))

	err := d.Shutdown(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, lifecycle.ErrPersistentLeak)
	var le *lifecycle.LeakError
	require.ErrorAs(t, err, &le)
	require.Len(t, le.Leaks, 2)
	byRequest := map[string]lifecycle.PersistentLeak{}
	for _, l := range le.Leaks {
		assert.True(t, l.DuringRequest())
		assert.Equal(t, 0, l.Worker)
		assert.Equal(t, thisFile(), l.Site.File)
		byRequest[l.Request] = l
	}
	cache, report := byRequest["GET /cache"], byRequest["GET /report"]
	assert.Equal(t, lifecycle.PhaseRequest, cache.Phase)
	assert.Empty(t, cache.Component)
	assert.Equal(t, uintptr(48), cache.Size)
	assert.Equal(t, cacheAt, cache.Site.Line)
	assert.Equal(t, lifecycle.PhaseRequestEnd, report.Phase)
	assert.Equal(t, "render", report.Component)
	assert.Equal(t, renderAt, report.Site.Line)
	assert.Equal(t, le.Leaks, d.Report().PersistentLeaks)

	text := out.String()
	assert.Contains(t, text, "lifecycle: module shutdown: 2 block(s) of persistent memory (72 bytes) never freed, 2 of them allocated during a request")
	assert.Contains(t, text, `lifecycle: persistent memory allocated during request "GET /cache" (request handler, worker 0) and never freed:`)
	assert.Contains(t, text, `lifecycle: persistent memory allocated during request "GET /report" (request end hook of component "render", worker 0) and never freed:`)
	assert.Contains(t, text, "]  Script:  'GET /cache'\n")
	assert.Contains(t, text, fmt.Sprintf("%s(%d) :  Freeing 0x%016x (48 bytes), script=GET /cache\n", thisFile(), cacheAt, cache.Addr))
	assert.Contains(t, text, fmt.Sprintf("%s(%d) :  Freeing 0x%016x (24 bytes), script=GET /report\n", thisFile(), renderAt, report.Addr))
}

// Persistent memory of module and worker phases still live after module
// shutdown is a leak too, reported by where it was allocated, in every
// mode (sites in debug mode only).
func TestModuleShutdownReportsPersistentLeaks(t *testing.T) {
	for _, debug := range []bool{true, false} {
		t.Run(fmt.Sprint("debug=", debug), func(t *testing.T) {
			var minitAt, ginitAt, growAt int
			config := lifecycle.Component{
				Name:          "config",
				ModuleStartup: func(c *lifecycle.Context) error { _, minitAt = c.PAlloc(300), line(); return nil },
				WorkerStart: func(c *lifecycle.Context) error {
					p, l := c.PCalloc(4, 8), line()
					ginitAt = l
					c.SetGlobals(p)
					return nil
				},
				RequestStart: func(c *lifecycle.Context) error {
					p, l := c.PRealloc(c.Globals().(unsafe.Pointer), 64), line() // grown in a request, still the worker's
					growAt = l
					c.SetGlobals(p)
					return nil
				},
			}
			d, out := start(t, []lifecycle.Component{config}, lifecycle.WithDebug(debug))
			require.NoError(t, do(d, "GET /", nil))
			err := d.Shutdown(context.Background())
			assert.ErrorIs(t, err, lifecycle.ErrPersistentLeak)
			assert.EqualError(t, err, "lifecycle: module shutdown: 2 block(s) of persistent memory (364 bytes) never freed, 0 of them allocated during a request")

			leaks := d.Report().PersistentLeaks
			require.Len(t, leaks, 2)
			phases := map[lifecycle.Phase]lifecycle.PersistentLeak{}
			for _, l := range leaks {
				assert.False(t, l.DuringRequest())
				assert.Equal(t, "config", l.Component)
				assert.Empty(t, l.Request)
				phases[l.Phase] = l
			}
			minit, ginit := phases[lifecycle.PhaseModuleStartup], phases[lifecycle.PhaseWorkerStart]
			assert.Equal(t, -1, minit.Worker)
			assert.Equal(t, 0, ginit.Worker)
			assert.Equal(t, uintptr(64), ginit.Size)
			text := out.String()
			assert.Contains(t, text, `lifecycle: persistent memory allocated in module startup hook of component "config" and never freed:`)
			assert.Contains(t, text, `lifecycle: persistent memory allocated in worker start hook of component "config" (worker 0) and never freed:`)
			assert.Contains(t, text, "]  Script:  'module startup of config'\n")
			assert.Contains(t, text, "=== Total 1 memory leaks detected ===")
			if debug {
				assert.Equal(t, minitAt, minit.Site.Line)
				assert.Equal(t, growAt, ginit.Site.Line, "the last allocation's site")
				assert.Equal(t, ginitAt, ginit.Orig.Line, "the first allocation's site")
				assert.Contains(t, text, fmt.Sprintf("%s(%d) : Actual location (location was relayed)\n", thisFile(), ginitAt))
			} else {
				assert.Zero(t, minit.Site)
				assert.Zero(t, ginit.Site)
			}
		})
	}
}

func TestNoLeaksNoReport(t *testing.T) {
	var at int
	d, out := start(t, []lifecycle.Component{sessionComponent(&at)}, lifecycle.WithDebug(true), lifecycle.WithWorkers(2))
	for range 4 {
		require.NoError(t, do(d, "GET /", func(c *lifecycle.Context) error {
			p := c.Alloc(100)
			p = c.Realloc(p, 5000)
			c.Free(p)
			c.PFree(c.PRealloc(c.PAlloc(10), 20))
			return nil
		}))
	}
	require.NoError(t, d.Shutdown(context.Background()))
	assert.Empty(t, out.String())
	assert.Equal(t, lifecycle.Report{}, d.Report())
}

// The request leak report, in debug mode, is the Zend MM's, with the
// request's name as the script and the sites of the code that allocated
// (not of the Context methods).
func TestRequestLeakReportNamesTheRequest(t *testing.T) {
	d, out := start(t, nil, lifecycle.WithDebug(true))
	var allocAt, heapAt, firstAt, reallocAt int
	var addrs []uintptr
	require.NoError(t, do(d, "GET /leak?id=7", func(c *lifecycle.Context) error {
		p, l := c.Alloc(100), line()
		allocAt = l
		q, l := c.Heap().Alloc(200), line()
		heapAt = l
		r, l := c.Alloc(40), line()
		firstAt = l
		r, l = c.Realloc(r, 4000), line()
		reallocAt = l
		c.Free(c.Alloc(50)) // freed: not a leak
		addrs = []uintptr{uintptr(p), uintptr(q), uintptr(r)}
		return nil
	}))

	leaks := d.Report().RequestLeaks
	require.Len(t, leaks, 1)
	assert.Equal(t, "GET /leak?id=7", leaks[0].Request)
	assert.Equal(t, 0, leaks[0].Worker)
	require.Len(t, leaks[0].Leaks, 3)
	sites := map[uintptr]zmm.Leak{}
	for _, l := range leaks[0].Leaks {
		assert.Equal(t, thisFile(), l.Site.File)
		sites[l.Addr] = l
	}
	assert.Equal(t, allocAt, sites[addrs[0]].Site.Line)
	assert.Equal(t, heapAt, sites[addrs[1]].Site.Line)
	assert.Equal(t, reallocAt, sites[addrs[2]].Site.Line)
	assert.Equal(t, firstAt, sites[addrs[2]].Orig.Line)

	text := out.String()
	assert.Contains(t, text, "]  Script:  'GET /leak?id=7'\n")
	assert.Contains(t, text, fmt.Sprintf("%s(%d) :  Freeing 0x%016x (100 bytes), script=GET /leak?id=7\n", thisFile(), allocAt, addrs[0]))
	assert.Contains(t, text, fmt.Sprintf("%s(%d) :  Freeing 0x%016x (200 bytes), script=GET /leak?id=7\n", thisFile(), heapAt, addrs[1]))
	assert.Contains(t, text, fmt.Sprintf("%s(%d) :  Freeing 0x%016x (4000 bytes), script=GET /leak?id=7\n", thisFile(), reallocAt, addrs[2]))
	assert.Contains(t, text, fmt.Sprintf("%s(%d) : Actual location (location was relayed)\n", thisFile(), firstAt))
	assert.Contains(t, text, "=== Total 3 memory leaks detected ===\n")
	assert.NotContains(t, text, "context.go", "no site inside the lifecycle package")

	// The next request starts clean, under its own name.
	require.NoError(t, do(d, "GET /clean", func(c *lifecycle.Context) error { c.Free(c.Alloc(8)); return nil }))
	assert.Len(t, d.Report().RequestLeaks, 1)
	assert.NotContains(t, out.String(), "GET /clean")
}

func TestNoRequestLeakReportWithoutDebug(t *testing.T) {
	d, out := start(t, nil, lifecycle.WithDebug(false))
	require.NoError(t, do(d, "GET /leak", func(c *lifecycle.Context) error { c.Alloc(100); return nil }))
	assert.Empty(t, out.String())
	assert.Empty(t, d.Report().RequestLeaks)
}

// errors.Is works through every layer: HookError → Violation → sentinel.
func TestViolationErrorChain(t *testing.T) {
	d, _ := start(t, nil, lifecycle.WithReport(nil))
	err := do(d, "GET /", func(c *lifecycle.Context) error {
		p := c.PAlloc(8)
		defer c.PFree(p)
		c.Free(p)
		return nil
	})
	assert.ErrorIs(t, err, lifecycle.ErrWrongFree)
	assert.False(t, errors.Is(err, lifecycle.ErrOutsideRequest))
	he := hookError(t, err)
	assert.Equal(t, lifecycle.PhaseRequest, he.Phase)
	assert.Equal(t, "GET /", violation(t, err).Request)
}
