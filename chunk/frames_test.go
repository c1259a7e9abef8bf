package chunk

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	t.Cleanup(func() { SetFrames(addr, n, 0) })
}

func TestMakeFrameRoundTrip(t *testing.T) {
	kinds := []FrameKind{FrameNone, FrameChunk, FrameHuge, FrameHugeInterior,
		FrameFreedChunk, FrameFreedHuge, FrameCachedChunk, FrameCachedHuge, 15}
	for _, k := range kinds {
		for _, owner := range []uint32{0, 1, 0xdead, ^uint32(0)} {
			for _, aux := range []uint32{0, 1, 12345, MaxFrameAux} {
				f := MakeFrame(k, owner, aux)
				assert.Equal(t, k, f.Kind())
				assert.Equal(t, owner, f.Owner())
				assert.Equal(t, aux, f.Aux())
			}
		}
	}
	assert.Equal(t, Frame(0), MakeFrame(FrameNone, 0, 0))
}

func TestMakeFramePanicsWhenItDoesNotFit(t *testing.T) {
	assert.PanicsWithError(t,
		fmt.Sprintf("zmm: frame kind 2 or aux %d does not fit in a frame table entry (kind < 16, aux <= %d)", MaxFrameAux+1, MaxFrameAux),
		func() { MakeFrame(FrameHuge, 1, MaxFrameAux+1) })
	assert.Panics(t, func() { MakeFrame(FrameChunk, 1, ^uint32(0)) })
	assert.Panics(t, func() { MakeFrame(16, 1, 0) })
}

func TestFrameString(t *testing.T) {
	for _, c := range []struct {
		f    Frame
		want string
	}{
		{0, "no zmm memory"},
		{MakeFrame(FrameChunk, 3, 0), "chunk of heap 3"},
		{MakeFrame(FrameHuge, 3, 7), "huge block 7 of heap 3"},
		{MakeFrame(FrameHugeInterior, 3, 2), "frame 2 of a huge block of heap 3"},
		{MakeFrame(FrameFreedChunk, 4, 0), "freed chunk of heap 4"},
		{MakeFrame(FrameFreedHuge, 4, 0), "freed huge block of heap 4"},
		{MakeFrame(FrameCachedChunk, 5, 0), "cached chunk of heap 5"},
		{MakeFrame(FrameCachedHuge, 5, 0), "cached huge block of heap 5"},
		{MakeFrame(FrameChunk, 5, 9), "chunk of heap 5 (aux 9)"},
		{MakeFrame(FrameNone, 6, 0), "none of heap 6"},
		{MakeFrame(12, 6, 0), "kind(12) of heap 6"},
	} {
		assert.Equal(t, c.want, c.f.String())
	}
	assert.Equal(t, "huge-interior", FrameHugeInterior.String())
}

func TestSetLookupFrame(t *testing.T) {
	base := testFrameBase
	clearFrames(t, base-Size, 3)
	f := MakeFrame(FrameChunk, 42, 0)

	// Any address inside the frame names it.
	SetFrame(base+123, f)
	assert.Equal(t, f, LookupFrame(base))
	assert.Equal(t, f, LookupFrame(base+PageSize*7+5))
	assert.Equal(t, f, LookupFrame(base+Size-1))
	// Its neighbours are unknown.
	assert.Equal(t, Frame(0), LookupFrame(base-1))
	assert.Equal(t, Frame(0), LookupFrame(base+Size))

	g := MakeFrame(FrameFreedChunk, 42, 0)
	SetFrame(base, g)
	assert.Equal(t, g, LookupFrame(base+Size/2))
}

func TestLookupFrameUnknown(t *testing.T) {
	// Within a leaf that exists, and in one nobody created.
	SetFrame(testFrameBase, MakeFrame(FrameChunk, 1, 0))
	clearFrames(t, testFrameBase, 1)
	assert.Equal(t, Frame(0), LookupFrame(testFrameBase+5*Size))

	var unused uintptr
	for i := len(frameRoot) - 1; i >= 0; i-- {
		if frameRoot[i].Load() == nil {
			unused = uintptr(i) << leafShift
			break
		}
	}
	require.NotZero(t, unused, "every leaf of the frame table exists")
	assert.Equal(t, Frame(0), LookupFrame(unused))
	assert.Equal(t, Frame(0), LookupFrame(unused+leafSpan-1))
	assert.Nil(t, frameRoot[unused>>leafShift].Load(), "a lookup must not create a leaf")

	// Low addresses and addresses beyond 2^48.
	assert.Equal(t, Frame(0), LookupFrame(0))
	assert.Equal(t, Frame(0), LookupFrame(1<<AddressBits))
	assert.Equal(t, Frame(0), LookupFrame(1<<AddressBits+testFrameBase))
	assert.Equal(t, Frame(0), LookupFrame(^uintptr(0)))
}

func TestFrameTableEdges(t *testing.T) {
	top := uintptr(1)<<AddressBits - Size
	f := MakeFrame(FrameHuge, 9, 1)
	SetFrame(top, f)
	clearFrames(t, top, 1)
	assert.Equal(t, f, LookupFrame(uintptr(1)<<AddressBits-1))

	assert.PanicsWithValue(t, "zmm: address 0x1000000000000 is beyond the frame table (2^48)",
		func() { SetFrame(1<<AddressBits, f) })
	assert.Panics(t, func() { SetFrame(^uintptr(0), f) })
	assert.Panics(t, func() { SetFrames(top, 2, f) }, "range crossing 2^48")
	assert.Panics(t, func() { SetFrames(0, ^uintptr(0), f) }, "absurd frame count")
	assert.NotPanics(t, func() { SetFrames(top, 1, f) })
	assert.NotPanics(t, func() { SetFrames(1<<AddressBits, 0, f) }, "no frames is a no-op")
}

func TestAddressable(t *testing.T) {
	const limit = uintptr(1) << AddressBits
	assert.True(t, Addressable(0, Size))
	assert.True(t, Addressable(testFrameBase, 3*Size))
	assert.True(t, Addressable(limit-Size, Size))
	assert.False(t, Addressable(limit-Size, Size+1))
	assert.False(t, Addressable(limit, 1))
	assert.False(t, Addressable(limit-Size, ^uintptr(0)), "size overflowing the address must not wrap")
	assert.False(t, Addressable(^uintptr(0)&^(Size-1), Size))
}

func TestSetFramesAcrossLeaves(t *testing.T) {
	// Four frames, two at the end of one leaf and two at the start of the
	// next.
	start := 3*leafSpan - 2*Size
	f := MakeFrame(FrameFreedHuge, 7, 0)
	clearFrames(t, start-Size, 6)
	SetFrames(start+Size/3, 4, f)
	assert.Equal(t, Frame(0), LookupFrame(start-1))
	for i := uintptr(0); i < 4; i++ {
		assert.Equal(t, f, LookupFrame(start+i*Size), "frame %d", i)
	}
	assert.Equal(t, Frame(0), LookupFrame(start+4*Size))

	// Interior frames of a huge block, as a heap records them.
	SetFrame(start, MakeFrame(FrameHuge, 7, 3))
	for i := uintptr(1); i < 4; i++ {
		SetFrame(start+i*Size, MakeFrame(FrameHugeInterior, 7, uint32(i)))
	}
	for i := uintptr(1); i < 4; i++ {
		fr := LookupFrame(start + i*Size + 99)
		require.Equal(t, FrameHugeInterior, fr.Kind())
		first := start + i*Size - uintptr(fr.Aux())*Size
		assert.Equal(t, MakeFrame(FrameHuge, 7, 3), LookupFrame(first))
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
		return uintptr(0x2f00+i%4)<<leafShift + uintptr(i*workers+w)*Size
	}
	t.Cleanup(func() {
		for w := 0; w < workers; w++ {
			for i := 0; i < frames; i++ {
				SetFrame(addr(w, i), 0)
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
					SetFrame(addr(w, i), MakeFrame(FrameChunk, uint32(w+1), uint32(r)))
				}
				for i := 0; i < frames; i++ {
					want := MakeFrame(FrameChunk, uint32(w+1), uint32(r))
					if got := LookupFrame(addr(w, i) + PageSize); got != want {
						errs <- fmt.Errorf("worker %d frame %d round %d: got %v, want %v", w, i, r, got, want)
						return
					}
				}
				// Peek at other workers' frames: whatever is seen must be
				// a value one of them wrote.
				for i := 0; i < frames; i++ {
					o := (w + 1) % workers
					got := LookupFrame(addr(o, i))
					if got != 0 && (got.Owner() != uint32(o+1) || got.Kind() != FrameChunk || got.Aux() > rounds) {
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
			assert.Equal(t, MakeFrame(FrameChunk, uint32(w+1), rounds), LookupFrame(addr(w, i)))
		}
	}
}
