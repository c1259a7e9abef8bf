// Package lifecycle runs PHP's lifecycle for a Go program on zmm heaps:
// module startup and shutdown once per process, worker start and end for
// each worker, request start and end around each unit of work, with the
// memory rules of each phase enforced.
//
// Components are the analog of PHP extensions: a Component is a name and
// optional hooks, one per phase. A Driver runs them:
//
//	d := lifecycle.New(lifecycle.WithWorkers(4), lifecycle.WithMaxRequests(500))
//	d.Register(lifecycle.Component{Name: "session", WorkerStart: ..., RequestStart: ...})
//	d.Register(lifecycle.Component{Name: "render", RequestEnd: ...})
//	if err := d.Start(ctx); err != nil { ... }       // MINIT, then GINIT on each worker
//	err := d.Do(ctx, lifecycle.Request{Name: "GET /cart", Handle: func(c *lifecycle.Context) error {
//		buf := c.Alloc(4096)                       // emalloc: gone at request end
//		...
//	}})
//	err = d.Shutdown(ctx)                              // GSHUTDOWN on each worker, then MSHUTDOWN
//
// # The phases and their PHP counterparts
//
//	PHP (Zend)                 lifecycle                          runs
//	MINIT                      Component.ModuleStartup            once, at Start, in registration order
//	GINIT (ZTS globals ctor)   Component.WorkerStart              on each worker, when it is made (Start, recycle)
//	RINIT                      Component.RequestStart             before each request's handler
//	the script                 Request.Handle                     between them, on the worker
//	RSHUTDOWN                  Component.RequestEnd               after the handler, before the heap reset, reverse order
//	zend_mm_shutdown(full=0)   the request heap's Reset           between RSHUTDOWN and post_deactivate
//	post_deactivate            Component.PostRequestEnd           after the reset, reverse order
//	GSHUTDOWN (globals dtor)   Component.WorkerEnd                on each worker before its heap is closed, reverse order
//	MSHUTDOWN                  Component.ModuleShutdown           once, at Shutdown, after every worker ended, reverse order
//	MINFO                      Component.Info (Driver.Info)       when Info is called, registration order
//	emalloc/efree/erealloc     Context.Alloc/Free/Realloc, Heap   request phases only
//	pemalloc/pefree/perealloc  Context.PAlloc/PFree/PRealloc      every phase
//	ZEND_MODULE_GLOBALS (ZTS)  Context.SetGlobals/Globals         per component per worker
//	pm.max_requests (FPM)      WithMaxRequests                    recycle a worker after n requests
//	threads under ZTS          WithWorkers(n)                     n workers in parallel, one heap each
//
// Startup hooks run in registration order, shutdown hooks (request end,
// post-request end, worker end, module shutdown) in reverse order. When a
// startup hook fails — module startup, worker start or request start —
// the phase stops there: the components before the failing one get their
// matching shutdown hooks, in reverse order; the failing one and those
// after it get none. This is PHP's rule: an extension whose MINIT failed
// is not shut down, those started before it are. A failed module or
// worker start fails Start, which shuts the whole driver down; a failed
// request start skips the handler.
//
// # The memory rules
//
//  1. Request memory (Context.Alloc, Calloc, Realloc, Free, Heap: the
//     emalloc family) exists only inside a request, from the request start
//     hooks through the handler to the request end hooks, and is released
//     at request end: the worker's heap is Reset, which frees every block
//     at once and keeps chunks cached for the next request. Using it
//     anywhere else — a module, worker, post-request or info hook, or a
//     request's Context after the request ended — panics with a
//     *Violation wrapping ErrOutsideRequest.
//  2. Persistent memory (Context.PAlloc, PCalloc, PRealloc, PFree: the
//     pemalloc family) is for what outlives a request: module and worker
//     state, caches. It comes from one persistent heap per driver, behind a
//     mutex, so workers allocate it in parallel. It is allowed in every
//     phase.
//  3. Each family frees its own blocks. Free (or Realloc, or the request
//     heap's own Free) given persistent memory, and PFree (or PRealloc)
//     given request memory, panic with a *Violation wrapping ErrWrongFree
//     that names both heaps and, in debug mode, where the block was
//     allocated.
//  4. At request end, in debug mode, request memory still live is reported
//     in the Zend MM's leak format with the request's name as the script,
//     and recorded in Report().RequestLeaks. It is freed by the reset all
//     the same, as in PHP.
//  5. At module shutdown, after the module shutdown hooks, persistent
//     memory still live is a leak: reported in the Zend MM's format, grouped
//     by where it was allocated, blocks allocated during a request said so
//     ("allocated during request X"), recorded in Report().PersistentLeaks
//     and returned by Shutdown as a *LeakError (ErrPersistentLeak).
//     Persistent memory is not checked at worker end: a worker may
//     allocate what other workers share (as PHP's persistent resources),
//     so only module shutdown knows it was never freed.
//
// A violation is reported to the report writer (WithReport) when it is
// found, recorded in Report().Violations, and fails the hook that made it,
// which gets a *HookError naming the phase and the component.
//
// # Workers
//
// A worker is a goroutine that owns a request heap (zmm.New at worker
// start, Close at worker end), as a PHP process or a ZTS thread owns its
// Zend MM heap. With one worker (the default) requests run one after
// another, like PHP-CLI or one FPM worker; with WithWorkers(n), n requests
// run in parallel on n heaps, like threads under ZTS. Do hands a request
// to a free worker. WithMaxRequests(n) recycles a worker after n
// requests: worker end, heap closed, new heap, worker start.
//
// # Debug mode
//
// WithDebug(true) (or ZMM_DEBUG=1) makes every heap a zmm debug heap:
// guards, allocation sites, leak reports. The package marks itself with
// zmm.MarkHelperPackage, so the site of a block allocated through a
// Context is the line that called the Context method, in the driver's
// reports and in zmm's own errors, snapshots and profiles alike.
package lifecycle
