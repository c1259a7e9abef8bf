package hooks

import (
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
)

// TestChainOfADroppedHeapIsCollected checks that the chains registry does
// not keep alive a heap dropped with hooks still attached, nor its hooks.
func TestChainOfADroppedHeapIsCollected(t *testing.T) {
	key, counterGone := func() (weak.Pointer[zmm.Heap], chan struct{}) {
		h, err := zmm.New()
		require.NoError(t, err)
		c := NewCounter()
		c.Attach(h)
		h.Free(h.Alloc(10))
		h.Close() // closed, but never detached
		gone := make(chan struct{})
		runtime.AddCleanup(c, func(ch chan struct{}) { close(ch) }, gone)
		return weak.Make(h), gone
	}()
	registered := func() bool {
		chains.Lock()
		defer chains.Unlock()
		_, ok := chains.m[key]
		return ok
	}
	require.True(t, registered())
	counterCollected := func() bool {
		select {
		case <-counterGone:
			return true
		default:
			return false
		}
	}
	// Cleanups run on their own goroutine after a collection: give them
	// a bounded number of chances.
	for i := 0; i < 200 && (registered() || !counterCollected()); i++ {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	assert.Nil(t, key.Value(), "the heap was collected")
	assert.False(t, registered(), "its entry was deleted")
	assert.True(t, counterCollected(), "the counter attached to it was collected")
}
