package inspect

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
)

// TestQuarantinedSlotCountsAsFree is the regression test for a bug found
// while building the snapshot reports: a freed debug slot found damaged
// when it is to be handed out again is quarantined (zmm/debugchunks.go), off
// every free list; the bins table and the run used to count it as used
// while Leaks (and Snapshot.Blocks) treated it as free, so reports showed a
// used block that no site holds. It now counts as free everywhere.
func TestQuarantinedSlotCountsAsFree(t *testing.T) {
	h := newHeap(t, zmm.WithDebug(true))
	p := h.Alloc(100)
	h.Free(p)
	zmm.Bytes(p, 100)[50] = 1 // a write after free
	err := zmm.Try(func() { h.Alloc(100) })
	require.True(t, errors.Is(err, zmm.ErrCorrupted), "%v", err)

	s := h.Snapshot()
	used, small := 0, 0
	for _, b := range s.Bins {
		used += b.Used
	}
	for _, b := range s.Blocks {
		if b.Kind == "small" {
			small++
		}
	}
	assert.Equal(t, small, used, "bins' used blocks vs the small blocks the snapshot lists")
}
