package zmm_test

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
)

type point struct {
	X, Y int64
	Tag  [4]byte
	Addr uintptr // a number, allowed
}

type withString struct {
	ID   int
	Name string
}

type nested struct {
	A int
	B struct {
		C [2]*int
	}
}

func TestAllocOfAndFreeOf(t *testing.T) {
	h := newHeap(t, layout()...)
	p := zmm.AllocOf[point](h)
	require.NotNil(t, p)
	assert.Equal(t, point{}, *p, "zeroed")
	p.X, p.Y, p.Tag = 3, 4, [4]byte{'z', 'm', 'm', 0}
	assert.Equal(t, int64(7), p.X+p.Y)
	assert.Equal(t, unsafe.Sizeof(point{}), uintptr(32))
	assert.Equal(t, uintptr(32), h.Usage())
	zmm.FreeOf(h, p)
	assert.Zero(t, h.Usage())
	assert.Zero(t, testing.AllocsPerRun(100, func() { zmm.FreeOf(h, zmm.AllocOf[point](h)) }))
}

func TestTypesWithGoPointersAreRefused(t *testing.T) {
	h := newHeap(t)
	cases := []struct {
		name, op string
		f        func()
		msg      string
	}{
		{"string field", "AllocOf", func() { zmm.AllocOf[withString](h) },
			"zmm: type zmm_test.withString cannot live in zmm memory: zmm_test.withString.Name is a string, a Go pointer the garbage collector would not see"},
		{"nested array of pointers", "MakeSlice", func() { zmm.MakeSlice[nested](h, 1, 1) },
			"zmm: type zmm_test.nested cannot live in zmm memory: zmm_test.nested.B.C[0] is a pointer, a Go pointer the garbage collector would not see"},
		{"slice", "AllocOf", func() { zmm.AllocOf[[]int](h) },
			"zmm: type []int cannot live in zmm memory: []int is a slice, a Go pointer the garbage collector would not see"},
		{"map", "AllocOf", func() { zmm.AllocOf[map[int]int](h) },
			"zmm: type map[int]int cannot live in zmm memory: map[int]int is a map, a Go pointer the garbage collector would not see"},
		{"interface", "GrowSlice", func() { zmm.GrowSlice[any](h, nil, 4) },
			"zmm: type interface {} cannot live in zmm memory: interface {} is an interface, a Go pointer the garbage collector would not see"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second time, the verdict is cached and still enforced
				e := catch(t, tc.f) // a *zmm.Error, so zmm.Try catches it
				assert.ErrorIs(t, e, zmm.ErrGoPointer)
				assert.Equal(t, tc.op, e.Op)
				assert.Equal(t, tc.msg, e.Error())
			}
		})
	}
	assert.Zero(t, h.Usage(), "nothing was allocated")
}

func TestMakeGrowAndFreeSlice(t *testing.T) {
	h := newHeap(t)
	s := zmm.MakeSlice[int32](h, 3, 10)
	assert.Len(t, s, 3)
	assert.Equal(t, 10, cap(s))
	assert.Equal(t, []int32{0, 0, 0}, s)
	s = append(s, 7, 8) // within capacity: stays in the block
	for i := range s {
		s[i] = int32(i + 1)
	}
	s = zmm.GrowSlice(h, s, 5000) // moves to a page run
	assert.Len(t, s, 5)
	assert.Equal(t, 5000, cap(s))
	assert.Equal(t, []int32{1, 2, 3, 4, 5}, s)
	assert.Equal(t, make([]int32, 4995), s[5:5000], "the new room is zeroed")
	assert.Equal(t, s, zmm.GrowSlice(h, s, 100), "enough room already: unchanged")
	zmm.FreeSlice(h, s)

	var none []uint64
	g := zmm.GrowSlice(h, none, 2)
	assert.Len(t, g, 0)
	assert.Equal(t, 2, cap(g))
	zmm.FreeSlice(h, g)
	zmm.FreeSlice(h, none)
	assert.Zero(t, h.Usage())

	e := catch(t, func() { zmm.MakeSlice[byte](h, -1, 0) })
	assert.ErrorIs(t, e, zmm.ErrOverflow)
	e = catch(t, func() { zmm.GrowSlice[[1 << 20]byte](h, nil, 1<<45) })
	assert.ErrorIs(t, e, zmm.ErrOverflow)
}

func TestCopyStringAndBytes(t *testing.T) {
	h := newHeap(t)
	src := []byte("request-scoped")
	s := zmm.CopyString(h, string(src))
	src[0] = 'X' // the copy does not share the caller's bytes
	assert.Equal(t, "request-scoped", s)
	raw := []byte("abc")
	b := zmm.CopyBytes(h, raw)
	raw[0] = 'X'
	assert.Equal(t, []byte("abc"), b, "a copy, not the caller's bytes")
	assert.Equal(t, "", zmm.CopyString(h, ""))
	zmm.FreeString(h, s)
	zmm.FreeString(h, "")
	h.FreeBytes(b)
	assert.Zero(t, h.Usage())
	e := catch(t, func() { zmm.FreeString(h, string(src)) })
	assert.ErrorIs(t, e, zmm.ErrInvalidPointer, "a Go string is not a zmm block")
}

func TestTypedHelpersOnADebugHeap(t *testing.T) {
	h := newHeap(t, zmm.WithDebug(true), zmm.WithLeakReport(nil))
	p := zmm.AllocOf[point](h)
	s := zmm.MakeSlice[uint16](h, 2, 2)
	s = zmm.GrowSlice(h, s, 64)
	assert.Len(t, h.Leaks(), 2)
	zmm.FreeOf(h, p)
	zmm.FreeSlice(h, s)
	assert.Empty(t, h.Leaks())
	require.NoError(t, h.Check())
}

func TestZeroCapacitySlicesOwnNoBlock(t *testing.T) {
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(nil))
	require.NoError(t, err)
	defer h.Close()
	s := zmm.MakeSlice[byte](h, 0, 0)
	assert.NotNil(t, s)
	assert.Zero(t, cap(s))
	zmm.FreeSlice(h, s)
	g := zmm.GrowSlice(h, zmm.MakeSlice[int](h, 0, 0), 100)
	zmm.FreeSlice(h, g)
	assert.Empty(t, h.Leaks())
	assert.Zero(t, h.Usage())
	assert.Zero(t, testing.AllocsPerRun(10, func() { _ = zmm.MakeSlice[int64](h, 0, 0) }))
}
