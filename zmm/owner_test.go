package zmm_test

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"

	"github.com/gozmm/zmm/storage"
	"github.com/gozmm/zmm/zmm"
)

// holdingStorage maps from the OS, but once armed it holds the next Map
// call until released: a goroutine allocating a huge block is then inside
// the heap's slow path for as long as a test needs.
type holdingStorage struct {
	storage.OSStorage
	armed           atomic.Bool
	inside, release chan struct{}
}

func newHoldingStorage() *holdingStorage {
	return &holdingStorage{inside: make(chan struct{}), release: make(chan struct{})}
}

func (s *holdingStorage) Map(size uintptr) (uintptr, error) {
	if s.armed.CompareAndSwap(true, false) {
		close(s.inside)
		<-s.release
	}
	return s.OSStorage.Map(size)
}

func (s *holdingStorage) String() string { return "holding" }

func TestConcurrentUseOfANormalHeapIsDetectedOnSlowPaths(t *testing.T) {
	st := newHoldingStorage()
	h := newHeap(t, layout(zmm.WithStorage(st))...)
	small := h.Alloc(64)
	large := h.Alloc(10_000)
	usage, real := h.Usage(), h.RealUsage()

	st.armed.Store(true)
	done := make(chan unsafe.Pointer)
	go func() { done <- h.Alloc(4 << 20) }()
	<-st.inside

	for _, tc := range []struct {
		op   string
		call func()
	}{
		{"Alloc", func() { h.Alloc(20_000) }},          // a page run
		{"Alloc", func() { h.Alloc(8 << 20) }},         // a huge block
		{"Alloc", func() { h.Alloc(3000) }},            // a refill: the bin is empty
		{"Free", func() { h.Free(large) }},             // the slow path of Free
		{"Realloc", func() { h.Realloc(small, 2000) }}, // a realloc that moves
		{"GC", func() { h.GC() }},
		{"Reset", func() { h.Reset() }},
		{"Close", func() { h.Close() }},
		{"Stats", func() { h.Stats() }},
		{"Snapshot", func() { h.Snapshot() }},
		{"Check", func() { _ = h.Check() }},
		{"SetLimit", func() { _ = h.SetLimit(64 << 20) }},
	} {
		e := catch(t, tc.call)
		assert.ErrorIs(t, e, zmm.ErrConcurrentUse, tc.op)
		assert.Equal(t, tc.op, e.Op)
		assert.True(t, strings.HasPrefix(e.Msg, "zmm: concurrent use of a single-owner heap: "+tc.op+" while another goroutine is inside Alloc"), e.Msg)
		assert.Contains(t, e.Msg, "zmm.Alloc")
	}
	assert.Equal(t, usage, h.Usage(), "no refused call changed the heap")
	assert.Equal(t, real, h.RealUsage())

	close(st.release)
	huge := <-done
	// The heap is whole and serves its owner again.
	assert.Equal(t, uintptr(64), h.BlockSize(small))
	h.Free(huge)
	h.Free(large)
	h.Free(small)
	assert.NoError(t, h.Check())
	assert.Zero(t, h.Usage())
}

func TestConcurrentUseOfANormalHeapDoesNotCrash(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two Ps for the goroutines to overlap")
	}
	h := newHeap(t, layout()...)
	// Page runs only: every call goes through a slow path, where the
	// check is made. The check is best effort (two goroutines may pass it
	// at the same moment, and then the heap may hand a run out twice:
	// later calls report that as a double free or a bad pointer), so any
	// *zmm.Error is accepted here; what must not happen is a crash, a hang,
	// or the misuse going unreported.
	var seen atomic.Bool
	var wg sync.WaitGroup
	lives := make([][]unsafe.Pointer, 2)
	for g := range lives {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var live []unsafe.Pointer
			for i := 0; i < 1_000_000 && !seen.Load(); i++ {
				err := zmm.Try(func() {
					if len(live) < 16 {
						live = append(live, h.Alloc(uintptr(5000+g*4096+i%8*4096)))
					} else {
						h.Free(live[0])
						live = live[1:]
					}
				})
				if errors.Is(err, zmm.ErrConcurrentUse) {
					seen.Store(true)
				}
			}
			lives[g] = live
		}()
	}
	wg.Wait()
	assert.True(t, seen.Load(), "two goroutines in one heap were never caught")
	// One owner again: free what each goroutine held, then close.
	for _, live := range lives {
		for _, p := range live {
			_ = zmm.Try(func() { h.Free(p) })
		}
	}
	assert.NoError(t, zmm.Try(func() { h.GC() }))
}
