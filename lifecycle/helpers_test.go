package lifecycle_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/lifecycle"
)

// recorder collects events from hooks on any goroutine.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	return e
}

// traced is a component whose every hook records "<PHP name> <component>".
func traced(rec *recorder, name string) lifecycle.Component {
	hook := func(event string) lifecycle.Hook {
		return func(c *lifecycle.Context) error {
			rec.add(event + " " + name)
			return nil
		}
	}
	return lifecycle.Component{
		Name:           name,
		ModuleStartup:  hook("MINIT"),
		WorkerStart:    hook("GINIT"),
		RequestStart:   hook("RINIT"),
		RequestEnd:     hook("RSHUTDOWN"),
		PostRequestEnd: hook("POST"),
		WorkerEnd:      hook("GSHUTDOWN"),
		ModuleShutdown: hook("MSHUTDOWN"),
	}
}

// syncBuffer is a bytes.Buffer safe for the driver's workers to write to.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start makes, fills and starts a driver whose report goes to the returned
// buffer; the driver is shut down at the end of the test if the test did
// not do it.
func start(t *testing.T, comps []lifecycle.Component, opts ...lifecycle.Option) (*lifecycle.Driver, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	d := lifecycle.New(append([]lifecycle.Option{lifecycle.WithReport(out)}, opts...)...)
	for _, c := range comps {
		require.NoError(t, d.Register(c))
	}
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	return d, out
}

// do runs a request named name with handle on d.
func do(d *lifecycle.Driver, name string, handle lifecycle.Hook) error {
	return d.Do(context.Background(), lifecycle.Request{Name: name, Handle: handle})
}

// line returns the line it is called from: `p, at := c.Alloc(8), line()`
// names the line of the allocation.
func line() int {
	_, _, l, _ := runtime.Caller(1)
	return l
}

// thisFile is the file name of the caller, for site checks.
func thisFile() string {
	_, f, _, _ := runtime.Caller(1)
	return f
}

// violation returns the *Violation in err's chain, failing the test if
// there is none.
func violation(t *testing.T, err error) *lifecycle.Violation {
	t.Helper()
	var v *lifecycle.Violation
	require.ErrorAs(t, err, &v)
	return v
}

func hookError(t *testing.T, err error) *lifecycle.HookError {
	t.Helper()
	var he *lifecycle.HookError
	require.ErrorAs(t, err, &he)
	return he
}

// catch runs f and returns what it panicked with, as an error.
func catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
				return
			}
			err = errors.New("non-error panic")
		}
	}()
	f()
	return nil
}

// waitAll waits for wg, or fails after a while.
func waitAll(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}
