package frames

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
)

// The frame table is process-wide, so these tests use address ranges no
// test maps memory in (they need no memory there: the table only records
// addresses) and clear what they set.
const (
	testFrameBase = uintptr(0x1234) << 32 // a frame-aligned address
	leafSpan      = uintptr(1) << leafShift
)

func clearFrames(t *testing.T, addr, n uintptr) {
	t.Helper()
	t.Cleanup(func() { SetRange(addr, n, 0) })
}

func TestMakeFrameRoundTrip(t *testing.T) {
	kinds := []Kind{None, Chunk, Huge, HugeInterior,
		FreedChunk, FreedHuge, CachedChunk, CachedHuge, 15}
	for _, k := range kinds {
		for _, owner := range []uint32{0, 1, 0xdead, ^uint32(0)} {
			for _, aux := range []uint32{0, 1, 12345, MaxAux} {
				f := Make(k, owner, aux)
				assert.Equal(t, k, f.Kind())
				assert.Equal(t, owner, f.Owner())
				assert.Equal(t, aux, f.Aux())
			}
		}
	}
	assert.Equal(t, Frame(0), Make(None, 0, 0))
}

func TestMakeFramePanicsWhenItDoesNotFit(t *testing.T) {
	assert.PanicsWithError(t,
		fmt.Sprintf("zmm: frame kind 2 or aux %d does not fit in a frame table entry (kind < 16, aux <= %d)", MaxAux+1, MaxAux),
		func() { Make(Huge, 1, MaxAux+1) })
	assert.Panics(t, func() { Make(Chunk, 1, ^uint32(0)) })
	assert.Panics(t, func() { Make(16, 1, 0) })
}

func TestFrameString(t *testing.T) {
	for _, c := range []struct {
		f    Frame
		want string
	}{
		{0, "no zmm memory"},
		{Make(Chunk, 3, 0), "chunk of heap 3"},
		{Make(Huge, 3, 7), "huge block 7 of heap 3"},
		{Make(HugeInterior, 3, 2), "frame 2 of a huge block of heap 3"},
		{Make(FreedChunk, 4, 0), "freed chunk of heap 4"},
		{Make(FreedHuge, 4, 0), "freed huge block of heap 4"},
		{Make(CachedChunk, 5, 0), "cached chunk of heap 5"},
		{Make(CachedHuge, 5, 0), "cached huge block of heap 5"},
		{Make(Chunk, 5, 9), "chunk of heap 5 (aux 9)"},
		{Make(None, 6, 0), "none of heap 6"},
		{Make(12, 6, 0), "kind(12) of heap 6"},
	} {
		assert.Equal(t, c.want, c.f.String())
	}
	assert.Equal(t, "huge-interior", HugeInterior.String())
}

func TestSetLookupFrame(t *testing.T) {
	base := testFrameBase
	clearFrames(t, base-chunk.Size, 3)
	f := Make(Chunk, 42, 0)

	// Any address inside the frame names it.
	Set(base+123, f)
	assert.Equal(t, f, Lookup(base))
	assert.Equal(t, f, Lookup(base+chunk.PageSize*7+5))
	assert.Equal(t, f, Lookup(base+chunk.Size-1))
	// Its neighbours are unknown.
	assert.Equal(t, Frame(0), Lookup(base-1))
	assert.Equal(t, Frame(0), Lookup(base+chunk.Size))

	g := Make(FreedChunk, 42, 0)
	Set(base, g)
	assert.Equal(t, g, Lookup(base+chunk.Size/2))
}

func TestLookupFrameUnknown(t *testing.T) {
	// Within a leaf that exists, and in one nobody created.
	Set(testFrameBase, Make(Chunk, 1, 0))
	clearFrames(t, testFrameBase, 1)
	assert.Equal(t, Frame(0), Lookup(testFrameBase+5*chunk.Size))

	var unused uintptr
	for i := len(root) - 1; i >= 0; i-- {
		if root[i].Load() == nil {
			unused = uintptr(i) << leafShift
			break
		}
	}
	require.NotZero(t, unused, "every leaf of the frame table exists")
	assert.Equal(t, Frame(0), Lookup(unused))
	assert.Equal(t, Frame(0), Lookup(unused+leafSpan-1))
	assert.Nil(t, root[unused>>leafShift].Load(), "a lookup must not create a leaf")

	// Low addresses and addresses beyond 2^48.
	assert.Equal(t, Frame(0), Lookup(0))
	assert.Equal(t, Frame(0), Lookup(1<<AddressBits))
	assert.Equal(t, Frame(0), Lookup(1<<AddressBits+testFrameBase))
	assert.Equal(t, Frame(0), Lookup(^uintptr(0)))
}

func TestFrameTableEdges(t *testing.T) {
	top := uintptr(1)<<AddressBits - chunk.Size
	f := Make(Huge, 9, 1)
	Set(top, f)
	clearFrames(t, top, 1)
	assert.Equal(t, f, Lookup(uintptr(1)<<AddressBits-1))

	assert.PanicsWithValue(t, "zmm: address 0x1000000000000 is beyond the frame table (2^48)",
		func() { Set(1<<AddressBits, f) })
	assert.Panics(t, func() { Set(^uintptr(0), f) })
	assert.Panics(t, func() { SetRange(top, 2, f) }, "range crossing 2^48")
	assert.Panics(t, func() { SetRange(0, ^uintptr(0), f) }, "absurd frame count")
	assert.NotPanics(t, func() { SetRange(top, 1, f) })
	assert.NotPanics(t, func() { SetRange(1<<AddressBits, 0, f) }, "no frames is a no-op")
}

func TestAddressable(t *testing.T) {
	const limit = uintptr(1) << AddressBits
	assert.True(t, Addressable(0, chunk.Size))
	assert.True(t, Addressable(testFrameBase, 3*chunk.Size))
	assert.True(t, Addressable(limit-chunk.Size, chunk.Size))
	assert.False(t, Addressable(limit-chunk.Size, chunk.Size+1))
	assert.False(t, Addressable(limit, 1))
	assert.False(t, Addressable(limit-chunk.Size, ^uintptr(0)), "size overflowing the address must not wrap")
	assert.False(t, Addressable(^uintptr(0)&^(chunk.Size-1), chunk.Size))
}

func TestSetFramesAcrossLeaves(t *testing.T) {
	// Four frames, two at the end of one leaf and two at the start of the
	// next.
	start := 3*leafSpan - 2*chunk.Size
	f := Make(FreedHuge, 7, 0)
	clearFrames(t, start-chunk.Size, 6)
	SetRange(start+chunk.Size/3, 4, f)
	assert.Equal(t, Frame(0), Lookup(start-1))
	for i := uintptr(0); i < 4; i++ {
		assert.Equal(t, f, Lookup(start+i*chunk.Size), "frame %d", i)
	}
	assert.Equal(t, Frame(0), Lookup(start+4*chunk.Size))

	// Interior frames of a huge block, as a heap records them.
	Set(start, Make(Huge, 7, 3))
	for i := uintptr(1); i < 4; i++ {
		Set(start+i*chunk.Size, Make(HugeInterior, 7, uint32(i)))
	}
	for i := uintptr(1); i < 4; i++ {
		fr := Lookup(start + i*chunk.Size + 99)
		require.Equal(t, HugeInterior, fr.Kind())
		first := start + i*chunk.Size - uintptr(fr.Aux())*chunk.Size
		assert.Equal(t, Make(Huge, 7, 3), Lookup(first))
	}
}

// TestFramesConcurrent has goroutines write and read their own frames at the
// same time, half of them in leaves that do not exist yet, so that several
// goroutines race to install the same leaf. Run it with -race.
func TestFramesConcurrent(t *testing.T) {
	const (
		workers = 8
		frames  = 64
		rounds  = 20
	)
	// Leaves 0x2f00.. are used by no other test. Each worker's frames are
	// spread over four leaves that all workers share.
	addr := func(w, i int) uintptr {
		return uintptr(0x2f00+i%4)<<leafShift + uintptr(i*workers+w)*chunk.Size
	}
	t.Cleanup(func() {
		for w := 0; w < workers; w++ {
			for i := 0; i < frames; i++ {
				Set(addr(w, i), 0)
			}
		}
	})

	var start, done sync.WaitGroup
	start.Add(1)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			for r := 1; r <= rounds; r++ {
				for i := 0; i < frames; i++ {
					Set(addr(w, i), Make(Chunk, uint32(w+1), uint32(r)))
				}
				for i := 0; i < frames; i++ {
					want := Make(Chunk, uint32(w+1), uint32(r))
					if got := Lookup(addr(w, i) + chunk.PageSize); got != want {
						errs <- fmt.Errorf("worker %d frame %d round %d: got %v, want %v", w, i, r, got, want)
						return
					}
				}
				// Peek at other workers' frames: whatever is seen must be
				// a value one of them wrote.
				for i := 0; i < frames; i++ {
					o := (w + 1) % workers
					got := Lookup(addr(o, i))
					if got != 0 && (got.Owner() != uint32(o+1) || got.Kind() != Chunk || got.Aux() > rounds) {
						errs <- fmt.Errorf("worker %d saw %v at worker %d's frame %d", w, got, o, i)
						return
					}
				}
			}
		}()
	}
	start.Done()
	done.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	for w := 0; w < workers; w++ {
		for i := 0; i < frames; i++ {
			assert.Equal(t, Make(Chunk, uint32(w+1), rounds), Lookup(addr(w, i)))
		}
	}
}
