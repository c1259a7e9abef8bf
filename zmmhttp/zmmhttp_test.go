package zmmhttp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/inspect"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmhttp"
)

// newPool makes a pool that is closed when the test ends.
func newPool(t testing.TB, maxIdle int, opts ...zmm.Option) *zmmhttp.Pool {
	t.Helper()
	p, err := zmmhttp.NewPool(maxIdle, opts...)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

// plain are the options of a heap in the normal mode, whatever ZMM_DEBUG and
// ZMM_ALLOC say, for the tests that count bytes and chunks.
var plain = []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks)}

// serve runs one request through the middleware and returns the recorder.
func serve(p *zmmhttp.Pool, method, target string, handler http.HandlerFunc) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	zmmhttp.Middleware(p)(handler).ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

// closed reports whether h is closed: any use of a closed heap panics with
// zmm.ErrClosed.
func closed(h *zmm.Heap) bool {
	return errors.Is(zmm.Try(func() { h.Free(h.Alloc(8)) }), zmm.ErrClosed)
}

func TestHeapInHandler(t *testing.T) {
	p := newPool(t, 4)
	w := serve(p, "GET", "/hello", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		require.NotNil(t, h)
		assert.Same(t, h, zmmhttp.HeapFrom(r.Context()))
		assert.Equal(t, 1, p.Stats().InUse)
		buf := zmm.CopyBytes(h, []byte("hello from zmm"))
		_, err := w.Write(buf) // copied by the ResponseWriter
		assert.NoError(t, err)
	})
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, "hello from zmm", w.Body.String())
	assert.Equal(t, zmmhttp.PoolStats{Idle: 1, InUse: 0, Opened: 1, Closed: 0}, p.Stats())
}

func TestNoHeapOutsideMiddleware(t *testing.T) {
	assert.Nil(t, zmmhttp.HeapFrom(context.Background()))
	r := httptest.NewRequest("GET", "/plain", nil)
	assert.PanicsWithValue(t,
		"zmmhttp: no heap in the request's context: the handler of GET /plain is not behind zmmhttp.Middleware",
		func() { zmmhttp.Heap(r) })
}

func TestHeapReusedAndReset(t *testing.T) {
	p := newPool(t, 1)
	var heaps []*zmm.Heap
	for i := range 5 {
		serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
			h := zmmhttp.Heap(r)
			heaps = append(heaps, h)
			// Every request starts on an empty heap.
			assert.Zero(t, h.Usage(), "request %d", i)
			assert.Zero(t, h.PeakUsage(), "request %d", i)
			// and leaves garbage behind: the small blocks and a large run
			// are never freed.
			for range 1000 {
				h.Alloc(100)
			}
			h.Alloc(64 << 10)
			assert.Greater(t, h.Usage(), uintptr(100_000))
		})
	}
	for i := 1; i < len(heaps); i++ {
		assert.Same(t, heaps[0], heaps[i], "request %d got another heap", i)
	}
	assert.Equal(t, zmmhttp.PoolStats{Idle: 1, Opened: 1}, p.Stats())
}

func TestReusedHeapKeepsItsChunks(t *testing.T) {
	p := newPool(t, 1, plain...)
	var realAtStart []uintptr
	for range 8 {
		serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
			h := zmmhttp.Heap(r)
			realAtStart = append(realAtStart, h.RealUsage())
			// Six runs of 1000 KiB, two to a chunk: a request of three
			// chunks.
			for range 6 {
				h.Alloc(1000 << 10)
			}
		})
	}
	// The first request starts with the main chunk only; once the heap has
	// seen a few such requests, it keeps chunks for the next one and maps
	// nothing at the start of a request.
	assert.Equal(t, uintptr(2<<20), realAtStart[0])
	assert.Greater(t, realAtStart[len(realAtStart)-1], uintptr(2<<20), "RealUsage at each request start: %v", realAtStart)
}

func TestPanicReturnsHeapAndPropagates(t *testing.T) {
	p := newPool(t, 2)
	var first *zmm.Heap
	assert.PanicsWithValue(t, "boom", func() {
		serve(p, "GET", "/panic", func(w http.ResponseWriter, r *http.Request) {
			first = zmmhttp.Heap(r)
			first.Alloc(5000)
			panic("boom")
		})
	})
	assert.Equal(t, zmmhttp.PoolStats{Idle: 1, Opened: 1}, p.Stats(), "the heap is back in the pool")
	serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		assert.Same(t, first, h)
		assert.Zero(t, h.Usage(), "the heap was reset after the panic")
	})

	// http.ErrAbortHandler goes on as it is, and net/http aborts the
	// response quietly; a real server sees the panic too.
	assert.PanicsWithValue(t, http.ErrAbortHandler, func() {
		serve(p, "GET", "/abort", func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		})
	})
	var logged bytes.Buffer
	var logMu sync.Mutex
	srv := httptest.NewUnstartedServer(zmmhttp.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zmmhttp.Heap(r).Alloc(100)
		panic("handler bug")
	})))
	srv.Config.ErrorLog = log.New(writerFunc(func(b []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logged.Write(b)
	}), "", 0)
	srv.Start()
	defer srv.Close()
	_, err := http.Get(srv.URL)
	assert.Error(t, err, "net/http aborts the response of a handler that panicked")
	srv.Close() // waits for the handler's goroutine
	logMu.Lock()
	assert.Contains(t, logged.String(), "handler bug")
	logMu.Unlock()
	assert.Equal(t, 0, p.Stats().InUse)
	assert.Equal(t, 1, p.Stats().Idle)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestGoexitReturnsHeap(t *testing.T) {
	p := newPool(t, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
			zmmhttp.Heap(r).Alloc(100)
			runtime.Goexit() // as t.FailNow does
		})
	}()
	<-done
	assert.Equal(t, zmmhttp.PoolStats{Idle: 1, Opened: 1}, p.Stats())
}

func TestCorruptedHeapIsClosed(t *testing.T) {
	p := newPool(t, 2, plain...)
	var h *zmm.Heap
	assert.Panics(t, func() {
		serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
			h = zmmhttp.Heap(r)
			b := h.AllocBytes(64)
			h.FreeBytes(b)
			copy(b[:16], "use after free!!") // overwrites the free-list link
			h.Alloc(64)                      // panics with zmm.ErrCorrupted
		})
	})
	assert.True(t, closed(h), "a corrupted heap is closed, not reused")
	assert.Equal(t, zmmhttp.PoolStats{Opened: 1, Closed: 1}, p.Stats())
}

func TestConcurrentUseHeapIsDropped(t *testing.T) {
	p := newPool(t, 2)
	var h *zmm.Heap
	// What a debug heap panics with when a goroutine of the handler is in
	// it at the same time as the handler.
	concurrent := &zmm.Error{Kind: zmm.ErrConcurrentUse, Op: "Alloc", Msg: "zmm: concurrent use of a single-owner heap"}
	assert.PanicsWithValue(t, concurrent, func() {
		serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
			h = zmmhttp.Heap(r)
			panic(concurrent)
		})
	})
	assert.Equal(t, zmmhttp.PoolStats{Opened: 1, Closed: 1}, p.Stats(), "not reused")
	assert.False(t, closed(h), "not closed either: the other goroutine may still write to it")
	h.Close()
}

func TestMemoryLimitPanicKeepsHeap(t *testing.T) {
	p := newPool(t, 1, zmm.WithLimit(4<<20))
	var first *zmm.Heap
	err := zmm.Try(func() {
		serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
			first = zmmhttp.Heap(r)
			first.Alloc(8 << 20)
		})
	})
	assert.ErrorIs(t, err, zmm.ErrMemoryLimit, "the handler's panic goes through the middleware")

	// A handler that wants to answer the error itself uses zmm.Try.
	w := serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		assert.Same(t, first, h, "a heap over its limit is fine after Reset")
		if err := zmm.Try(func() { h.Alloc(8 << 20) }); errors.Is(err, zmm.ErrMemoryLimit) {
			http.Error(w, "too big", http.StatusInsufficientStorage)
		}
	})
	assert.Equal(t, http.StatusInsufficientStorage, w.Code)
}

func TestMaxIdle(t *testing.T) {
	p := newPool(t, 2)
	var hs []*zmm.Heap
	for range 5 {
		h, err := p.Get()
		require.NoError(t, err)
		hs = append(hs, h)
	}
	assert.Equal(t, zmmhttp.PoolStats{InUse: 5, Opened: 5}, p.Stats())
	for _, h := range hs {
		p.Put(h)
	}
	assert.Equal(t, zmmhttp.PoolStats{Idle: 2, Opened: 5, Closed: 3}, p.Stats())
	for i, h := range hs {
		assert.Equal(t, i >= 2, closed(h), "heap %d", i)
	}
	// The next Gets reuse the idle heaps, the last one put first.
	h, err := p.Get()
	require.NoError(t, err)
	assert.Same(t, hs[1], h)
	p.Put(h)

	// maxIdle 0 keeps none.
	p0 := newPool(t, 0)
	h, err = p0.Get()
	require.NoError(t, err)
	p0.Put(h)
	assert.True(t, closed(h))
	assert.Equal(t, zmmhttp.PoolStats{Opened: 1, Closed: 1}, p0.Stats())
}

func TestConcurrentRequestsGetTheirOwnHeap(t *testing.T) {
	const clients, requests = 8, 40
	p := newPool(t, clients)
	var inUse sync.Map // *zmm.Heap -> *atomic.Bool
	srv := httptest.NewServer(zmmhttp.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		flag, _ := inUse.LoadOrStore(h, new(atomic.Bool))
		if !flag.(*atomic.Bool).CompareAndSwap(false, true) {
			t.Errorf("heap %p serves two requests at once", h)
			return
		}
		defer flag.(*atomic.Bool).Store(false)
		if h.Usage() != 0 {
			t.Errorf("request starts with %d bytes in use", h.Usage())
		}
		id := r.URL.Query().Get("id")
		// Fill blocks with the request's id, let the other requests run,
		// then check nobody wrote into them.
		var bufs [][]byte
		for i := range 50 {
			b := h.AllocBytes(100 + 37*i)
			for j := range b {
				b[j] = id[j%len(id)]
			}
			bufs = append(bufs, b)
			if i%10 == 0 {
				runtime.Gosched()
			}
		}
		for _, b := range bufs {
			for j := range b {
				if b[j] != id[j%len(id)] {
					t.Errorf("request %s: byte %d of a block changed", id, j)
					return
				}
			}
		}
		out := zmm.MakeSlice[byte](h, 0, 16)
		out = append(out, "id="...)
		out = append(out, id...)
		w.Write(out)
	})))
	defer srv.Close()

	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range requests {
				id := fmt.Sprintf("%d-%d", c, i)
				resp, err := srv.Client().Get(srv.URL + "/?id=" + id)
				if !assert.NoError(t, err) {
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.NoError(t, err)
				assert.Equal(t, "id="+id, string(body))
			}
		})
	}
	wg.Wait()
	srv.Close()
	st := p.Stats()
	assert.Equal(t, 0, st.InUse)
	assert.LessOrEqual(t, st.Idle, clients)
	assert.LessOrEqual(t, st.Opened, clients, "at most one heap per concurrent request")
	assert.Equal(t, st.Opened-st.Idle, st.Closed)
}

// lockedBuffer is a bytes.Buffer that the pool's heaps can share as their
// leak report writer.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestDebugLeakReportNamesTheRequest(t *testing.T) {
	var report lockedBuffer
	p := newPool(t, 2, zmm.WithDebug(true), zmm.WithLeakReport(&report))
	serve(p, "GET", "/leaky/page?q=1", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		assert.True(t, h.Debug())
		h.Alloc(100) // leaked
		h.Free(h.Alloc(200))
	})
	out := report.String()
	assert.Contains(t, out, "Script:  'GET /leaky/page'")
	assert.Contains(t, out, "(100 bytes), script=GET /leaky/page\n")
	assert.Contains(t, out, "zmmhttp_test.go(")
	assert.Contains(t, out, "=== Total 1 memory leaks detected ===")

	// The same heap serves the next request under its name, and a request
	// that frees what it allocates leaves no report.
	serve(p, "POST", "/clean", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		h.Free(h.Alloc(100))
	})
	assert.Equal(t, out, report.String())
	serve(p, "PUT", "/other", func(w http.ResponseWriter, r *http.Request) {
		zmmhttp.Heap(r).Alloc(300)
	})
	assert.Contains(t, strings.TrimPrefix(report.String(), out), "(300 bytes), script=PUT /other\n")
}

func TestClose(t *testing.T) {
	p, err := zmmhttp.NewPool(4)
	require.NoError(t, err)
	a, err := p.Get()
	require.NoError(t, err)
	b, err := p.Get()
	require.NoError(t, err)
	p.Put(a)

	p.Close()
	assert.True(t, closed(a), "Close closes the idle heaps")
	assert.False(t, closed(b), "a heap in use stays usable until it is put back")
	assert.Equal(t, zmmhttp.PoolStats{InUse: 1, Opened: 2, Closed: 1}, p.Stats())
	p.Put(b)
	assert.True(t, closed(b), "Put after Close closes the heap")

	// Requests in flight during a shutdown still get a heap.
	w := serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
		b = zmmhttp.Heap(r)
		io.WriteString(w, "late")
	})
	assert.Equal(t, "late", w.Body.String())
	assert.True(t, closed(b))
	assert.Equal(t, zmmhttp.PoolStats{Opened: 3, Closed: 3}, p.Stats())
	p.Close() // twice is fine
}

func TestTimeoutHandlerOutside(t *testing.T) {
	p := newPool(t, 1, zmm.WithDebug(true), zmm.WithLeakReport(nil))
	done := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		h := zmmhttp.Heap(r)
		b := h.AllocBytes(100)
		<-r.Context().Done() // the timeout; the handler goes on after it
		for range 100 {
			h.Free(h.Alloc(50)) // a debug heap would panic if it were reset meanwhile
		}
		b[0] = 1
		w.Write(b)
	})
	srv := httptest.NewServer(http.TimeoutHandler(zmmhttp.Middleware(p)(slow), 20*time.Millisecond, "timeout"))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	<-done
	// TimeoutHandler's goroutine gives the heap back after the handler.
	assert.Eventually(t, func() bool { return p.Stats() == zmmhttp.PoolStats{Idle: 1, Opened: 1} },
		5*time.Second, time.Millisecond)
}

func TestPutMisuse(t *testing.T) {
	p := newPool(t, 2)
	h, err := p.Get()
	require.NoError(t, err)
	p.Put(h)
	assert.PanicsWithValue(t, "zmmhttp: Put of a heap that is not out of this pool (given back twice, or not from Get)",
		func() { p.Put(h) })

	other, err := zmm.New()
	require.NoError(t, err)
	defer other.Close()
	assert.Panics(t, func() { p.Put(other) })
}

func TestHandlerClosedTheHeap(t *testing.T) {
	p := newPool(t, 2)
	serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
		zmmhttp.Heap(r).Close()
	})
	assert.Equal(t, zmmhttp.PoolStats{Opened: 1, Closed: 1}, p.Stats(), "a closed heap is dropped")
}

func TestNewPoolChecksOptions(t *testing.T) {
	_, err := zmmhttp.NewPool(-1)
	assert.Error(t, err)
	_, err = zmmhttp.NewPool(4, zmm.WithLimit(1<<20))
	assert.ErrorIs(t, err, zmm.ErrMemoryLimit)

	t.Setenv("ZMM_ALLOC", "bogus")
	_, err = zmmhttp.NewPool(4)
	assert.ErrorContains(t, err, "ZMM_ALLOC")
}

func TestNoHeapIs503(t *testing.T) {
	p := newPool(t, 4)
	t.Setenv("ZMM_ALLOC", "bogus") // zmm.New fails from now on
	ran := false
	w := serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) { ran = true })
	assert.False(t, ran)
	assert.Equal(t, http.StatusServiceUnavailable, w.Code)
	assert.Contains(t, w.Body.String(), "ZMM_ALLOC")
}

func TestOnRequestEnd(t *testing.T) {
	p := newPool(t, 2, plain...)
	var peaks []string
	p.OnRequestEnd = func(r *http.Request, h *zmm.Heap) {
		assert.Same(t, h, zmmhttp.Heap(r))
		peaks = append(peaks, r.URL.Path+" "+strconv.FormatUint(uint64(h.PeakUsage()), 10)+" "+strconv.Itoa(h.Stats().Chunks))
	}
	serve(p, "GET", "/small", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		h.Free(h.Alloc(100)) // a 112-byte bin
	})
	assert.Panics(t, func() {
		serve(p, "GET", "/big", func(w http.ResponseWriter, r *http.Request) {
			zmmhttp.Heap(r).Alloc(3 << 20) // a huge block, mapped on its own
			panic("after the allocation")
		})
	})
	assert.Equal(t, []string{"/small 112 1", "/big 3145728 1"}, peaks)
}

func TestInspectWithPoolLocks(t *testing.T) {
	p := newPool(t, 1, zmm.WithDebug(true), zmm.WithLeakReport(nil))
	var names sync.Map // *zmm.Heap -> string
	var n atomic.Int32
	p.OnOpen = func(h *zmm.Heap, mu sync.Locker) {
		name := fmt.Sprintf("zmmhttp-test-%d", n.Add(1))
		names.Store(h, name)
		inspect.Register(name, h, mu)
	}
	p.OnClose = func(h *zmm.Heap) {
		name, _ := names.Load(h)
		inspect.Unregister(name.(string))
	}

	started, snapped := make(chan struct{}), make(chan *zmm.Snapshot)
	serve(p, "GET", "/", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r)
		h.Alloc(1000)
		go func() {
			close(started)
			s, err := inspect.Snapshot("zmmhttp-test-1")
			assert.NoError(t, err)
			snapped <- s
		}()
		<-started
		// The snapshot waits for the request: the debug heap would panic
		// with ErrConcurrentUse if it did not.
		time.Sleep(20 * time.Millisecond)
		h.Alloc(2000)
	})
	s := <-snapped
	assert.Zero(t, s.Stats.Usage, "the snapshot shows the heap after the request")
	assert.Equal(t, uint64(2<<20), uint64(s.Stats.RealUsage))

	p.Close()
	_, err := inspect.Snapshot("zmmhttp-test-1")
	assert.ErrorIs(t, err, inspect.ErrUnknownHeap, "OnClose unregistered the heap")
}
