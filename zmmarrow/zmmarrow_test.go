package zmmarrow_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

// heapKind is one way to configure a heap; every test runs on each.
type heapKind struct {
	name string
	opts []zmm.Option
}

// heapKinds are the normal heap (blocks already 64-byte aligned) and the
// three kinds whose blocks are not (debug, system, guard). The options are
// explicit so that ZMM_DEBUG and ZMM_ALLOC do not change what a test runs.
var heapKinds = []heapKind{
	{"normal", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks)}},
	{"debug", []zmm.Option{zmm.WithDebug(true), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(nil)}},
	{"system", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeSystem), zmm.WithLeakReport(nil)}},
	{"guard", []zmm.Option{zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard), zmm.WithLeakReport(nil)}},
}

// newHeap returns a heap of kind k, closed when the test ends. Heaps that
// track blocks are checked for corruption and leaks first.
func newHeap(t testing.TB, k heapKind, opts ...zmm.Option) *zmm.Heap {
	t.Helper()
	h, err := zmm.New(append(append([]zmm.Option{zmm.WithName(t.Name())}, k.opts...), opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, h.Check(), "heap check at the end of the test")
		assert.Empty(t, h.Leaks(), "blocks still live at the end of the test")
		h.Close()
	})
	return h
}

func forEachHeap(t *testing.T, f func(t *testing.T, k heapKind)) {
	for _, k := range heapKinds {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// aligning is an Allocator that checks every buffer another one hands out:
// 64-byte aligned, length and capacity as asked.
type aligning struct {
	t     testing.TB
	mem   memory.Allocator
	mu    sync.Mutex
	calls int
}

func (a *aligning) check(op string, size int, b []byte) {
	a.mu.Lock()
	a.calls++
	a.mu.Unlock()
	if addr(b)%zmmarrow.Alignment != 0 || len(b) != size || cap(b) != size || b == nil {
		a.t.Errorf("%s(%d) returned %p len %d cap %d: want 64-byte aligned, len = cap = size, non-nil", op, size, unsafe.SliceData(b), len(b), cap(b))
	}
}

func (a *aligning) Allocate(size int) []byte {
	b := a.mem.Allocate(size)
	a.check("Allocate", size, b)
	return b
}

func (a *aligning) Reallocate(size int, old []byte) []byte {
	b := a.mem.Reallocate(size, old)
	a.check("Reallocate", size, b)
	return b
}

func (a *aligning) Free(b []byte) { a.mem.Free(b) }

var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "i64", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "f64", Type: arrow.PrimitiveTypes.Float64},
	{Name: "str", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "list", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32), Nullable: true},
	{Name: "st", Type: arrow.StructOf(
		arrow.Field{Name: "a", Type: arrow.PrimitiveTypes.Int32},
		arrow.Field{Name: "b", Type: arrow.BinaryTypes.String, Nullable: true},
	)},
}, nil)

// buildColumns builds one array per field of testSchema, each with its own
// builder, n rows.
func buildColumns(mem memory.Allocator, n int) []arrow.Array {
	i64 := array.NewInt64Builder(mem)
	f64 := array.NewFloat64Builder(mem)
	str := array.NewStringBuilder(mem)
	list := array.NewListBuilder(mem, arrow.PrimitiveTypes.Int32)
	st := array.NewStructBuilder(mem, testSchema.Field(4).Type.(*arrow.StructType))
	defer func() {
		for _, b := range []array.Builder{i64, f64, str, list, st} {
			b.Release()
		}
	}()
	appendRows([]array.Builder{i64, f64, str, list, st}, 0, n)
	return []arrow.Array{i64.NewArray(), f64.NewArray(), str.NewArray(), list.NewArray(), st.NewArray()}
}

// appendRows appends rows [from, to) to builders of testSchema's fields.
func appendRows(bs []array.Builder, from, to int) {
	i64 := bs[0].(*array.Int64Builder)
	f64 := bs[1].(*array.Float64Builder)
	str := bs[2].(*array.StringBuilder)
	list := bs[3].(*array.ListBuilder)
	st := bs[4].(*array.StructBuilder)
	vals := list.ValueBuilder().(*array.Int32Builder)
	sa := st.FieldBuilder(0).(*array.Int32Builder)
	sb := st.FieldBuilder(1).(*array.StringBuilder)
	for i := from; i < to; i++ {
		if i%7 == 3 {
			i64.AppendNull()
		} else {
			i64.Append(int64(i) * 1_000_003)
		}
		f64.Append(float64(i) / 3)
		if i%11 == 5 {
			str.AppendNull()
		} else {
			str.Append(strings.Repeat(fmt.Sprint(i), i%5+1))
		}
		if i%13 == 0 {
			list.AppendNull()
		} else {
			list.Append(true)
			for j := range i % 6 {
				vals.Append(int32(i + j))
			}
		}
		st.Append(true)
		sa.Append(int32(-i))
		if i%3 == 0 {
			sb.AppendNull()
		} else {
			sb.Append("s" + fmt.Sprint(i))
		}
	}
}

func TestArrowArraysAndIPC(t *testing.T) {
	forEachHeap(t, func(t *testing.T, k heapKind) {
		h := newHeap(t, k)
		start := h.Usage()
		al := &aligning{t: t, mem: zmmarrow.New(h)}
		mem := memory.NewCheckedAllocator(al)

		const n = 3000
		cols := buildColumns(mem, n)
		rec := array.NewRecordBatch(testSchema, cols, n)
		for _, c := range cols {
			c.Release()
		}
		require.EqualValues(t, n, rec.NumRows())
		assert.Greater(t, h.Usage(), start, "the arrays live in the heap")
		assert.Greater(t, mem.CurrentAlloc(), 0)

		// Spot-check the values the arrays hold.
		i64 := rec.Column(0).(*array.Int64)
		assert.True(t, i64.IsNull(3))
		assert.EqualValues(t, 2*1_000_003, i64.Value(2))
		assert.Equal(t, "44444", rec.Column(2).(*array.String).Value(4))
		assert.True(t, rec.Column(2).IsNull(5))
		assert.Equal(t, "s2", rec.Column(4).(*array.Struct).Field(1).(*array.String).Value(2))

		// The same rows through a RecordBuilder, in two batches.
		rb := array.NewRecordBuilder(mem, testSchema)
		appendRows(rb.Fields(), 0, n/2)
		first := rb.NewRecordBatch()
		appendRows(rb.Fields(), n/2, n)
		second := rb.NewRecordBatch()
		rb.Release()
		head := rec.NewSlice(0, n/2)
		assert.True(t, array.RecordEqual(head, first))
		head.Release()

		// Round trip through IPC, compressed and not, every buffer of the
		// writer and the reader from the allocator.
		for _, opts := range [][]ipc.Option{nil, {ipc.WithZstd()}, {ipc.WithLZ4()}} {
			var stream bytes.Buffer
			w := ipc.NewWriter(&stream, append([]ipc.Option{ipc.WithSchema(testSchema), ipc.WithAllocator(mem)}, opts...)...)
			require.NoError(t, w.Write(rec))
			require.NoError(t, w.Write(first))
			require.NoError(t, w.Write(second))
			require.NoError(t, w.Close())

			r, err := ipc.NewReader(bytes.NewReader(stream.Bytes()), ipc.WithAllocator(mem))
			require.NoError(t, err)
			var got []arrow.RecordBatch
			for r.Next() {
				b := r.RecordBatch()
				b.Retain()
				got = append(got, b)
			}
			require.NoError(t, r.Err())
			r.Release()
			require.Len(t, got, 3)
			assert.True(t, array.RecordEqual(rec, got[0]), "record after the IPC round trip")
			assert.True(t, array.RecordEqual(first, got[1]))
			assert.True(t, array.RecordEqual(second, got[2]))
			for _, b := range got {
				b.Release()
			}
		}

		rec.Release()
		first.Release()
		second.Release()
		assert.Zero(t, mem.CurrentAlloc())
		mem.AssertSize(t, 0)
		assert.Equal(t, start, h.Usage(), "heap usage back to where it started")
		assert.Greater(t, al.calls, 50)
	})
}

// sizes reach every bin, page runs and huge blocks.
var sizes = func() []int {
	var s []int
	for n := 1; n <= 3200; n += 7 {
		s = append(s, n)
	}
	return append(s, 4095, 4096, 4097, 8192, 12345, 65536, 1<<20+1,
		2<<20-4096-64, 2<<20-4096, 2<<20, 3<<20+5)
}()

func TestAlignment(t *testing.T) {
	forEachHeap(t, func(t *testing.T, k heapKind) {
		h := newHeap(t, k)
		start := h.Usage()
		a := zmmarrow.New(h)
		var bufs [][]byte
		for _, n := range sizes {
			b := a.Allocate(n)
			require.Len(t, b, n)
			require.Equal(t, n, cap(b))
			assert.Zero(t, addr(b)%64, "Allocate(%d) = %p", n, unsafe.SliceData(b))
			assert.Equal(t, -1, bytes.IndexFunc(b, func(r rune) bool { return r != 0 }), "Allocate(%d) is zeroed", n)
			for i := range b {
				b[i] = byte(n + i)
			}
			bufs = append(bufs, b)
		}
		for i, b := range bufs {
			for j := range b {
				if b[j] != byte(sizes[i]+j) {
					t.Fatalf("buffer of %d bytes: byte %d overwritten", sizes[i], j)
				}
			}
			a.Free(b)
		}
		assert.Equal(t, start, h.Usage())
	})
}

func TestGuardBuffersEndAtTheGuardPage(t *testing.T) {
	h := newHeap(t, heapKinds[3])
	a := zmmarrow.New(h)
	ps := uintptr(os.Getpagesize())
	for _, n := range []int{64, 128, 4096, 64 * 1001} {
		b := a.Allocate(n)
		assert.Zero(t, (addr(b)+uintptr(n))%ps, "a %d-byte buffer of a guard heap ends at a page boundary", n)
		a.Free(b)
	}
}

func TestEmpty(t *testing.T) {
	forEachHeap(t, func(t *testing.T, k heapKind) {
		h := newHeap(t, k)
		start := h.Usage()
		a := zmmarrow.New(h)
		e := a.Allocate(0)
		assert.NotNil(t, e)
		assert.Zero(t, len(e))
		assert.Zero(t, cap(e))
		assert.Zero(t, addr(e)%64)
		assert.Equal(t, start, h.Usage(), "Allocate(0) takes no block")
		a.Free(e)
		a.Free(nil)
		a.Free(make([]byte, 0))

		b := a.Reallocate(100, e)
		assert.Len(t, b, 100)
		assert.Zero(t, addr(b)%64)
		b = a.Reallocate(0, b)
		assert.NotNil(t, b)
		assert.Zero(t, cap(b))
		assert.Equal(t, start, h.Usage(), "Reallocate(0, b) frees b")
		a.Free(b)
		b = a.Reallocate(10, nil)
		assert.Len(t, b, 10)
		a.Free(b)
		assert.Equal(t, start, h.Usage())
	})
}

func TestReallocate(t *testing.T) {
	forEachHeap(t, func(t *testing.T, k heapKind) {
		h := newHeap(t, k)
		start := h.Usage()
		a := zmmarrow.New(h)
		rng := rand.New(rand.NewPCG(1, 2))
		steps := []int{10, 100, 3000, 3072, 5000, 70000, 3 << 20, 5 << 20, 100000, 2000, 64, 1, 4000}
		for range 150 {
			steps = append(steps, 1+rng.IntN(10000))
		}
		var b []byte
		var others [][]byte
		fill := 0
		for i, n := range steps {
			old := b
			b = a.Reallocate(n, b)
			require.Len(t, b, n, "step %d", i)
			require.Equal(t, n, cap(b))
			assert.Zero(t, addr(b)%64, "Reallocate(%d) = %p", n, unsafe.SliceData(b))
			keep := min(len(old), n)
			for j := range keep {
				if b[j] != byte(fill+j) {
					t.Fatalf("step %d: Reallocate(%d) from %d bytes: byte %d is %d, want %d", i, n, len(old), j, b[j], byte(fill+j))
				}
			}
			for j := keep; j < n; j++ {
				if b[j] != 0 {
					t.Fatalf("step %d: Reallocate(%d) from %d bytes: new byte %d is %d, want 0", i, n, len(old), j, b[j])
				}
			}
			fill = i * 31
			for j := range b {
				b[j] = byte(fill + j)
			}
			// Blocks around b make it move, and the over-allocated path
			// change its offset.
			if i%3 == 0 {
				others = append(others, a.Allocate(1+rng.IntN(300)))
			}
			if i%5 == 0 && len(others) > 0 {
				a.Free(others[0])
				others = others[1:]
			}
		}
		b = a.Reallocate(0, b)
		assert.Zero(t, cap(b))
		for _, o := range others {
			a.Free(o)
		}
		assert.Equal(t, start, h.Usage())
	})
}

// mustFail runs f, which must panic with a *zmm.Error of one of kinds.
func mustFail(t *testing.T, what string, f func(), kinds ...error) {
	t.Helper()
	err := zmm.Try(f)
	require.Error(t, err, what)
	var ze *zmm.Error
	require.ErrorAs(t, err, &ze, what)
	for _, k := range kinds {
		if errors.Is(err, k) {
			return
		}
	}
	t.Errorf("%s: got %v, want one of %v", what, err, kinds)
}

func TestMisuse(t *testing.T) {
	forEachHeap(t, func(t *testing.T, k heapKind) {
		h := newHeap(t, k)
		a := zmmarrow.New(h)
		b := a.Allocate(256)

		goSlice := make([]byte, 256)
		mustFail(t, "Free of Go memory", func() { a.Free(goSlice) }, zmm.ErrInvalidPointer)
		mustFail(t, "Reallocate of Go memory", func() { a.Reallocate(1000, goSlice) }, zmm.ErrInvalidPointer)
		mustFail(t, "Free of b[1:]", func() { a.Free(b[1:]) }, zmm.ErrInvalidPointer)
		mustFail(t, "Free of b[64:]", func() { a.Free(b[64:]) }, zmm.ErrInvalidPointer)
		mustFail(t, "Reallocate of b[128:]", func() { a.Reallocate(1000, b[128:]) }, zmm.ErrInvalidPointer)

		// A slice that starts a page after an inaccessible one: the
		// over-allocating path reads the 8 bytes before a buffer, and must
		// report, not crash.
		ps := os.Getpagesize()
		m, err := syscall.Mmap(-1, 0, 2*ps, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		require.NoError(t, err)
		defer func() { _ = syscall.Munmap(m) }()
		require.NoError(t, syscall.Mprotect(m[:ps], syscall.PROT_NONE))
		mustFail(t, "Free of a page after a PROT_NONE page", func() { a.Free(m[ps:]) }, zmm.ErrInvalidPointer)

		// A buffer of another heap of the same kind.
		other := zmmarrow.New(newHeap(t, k))
		ob := other.Allocate(100)
		mustFail(t, "Free of another heap's buffer", func() { a.Free(ob) }, zmm.ErrWrongHeap, zmm.ErrInvalidPointer)
		other.Free(ob)

		// Sizes.
		mustFail(t, "Allocate(-1)", func() { a.Allocate(-1) }, zmm.ErrOverflow)
		mustFail(t, "Reallocate(-1)", func() { a.Reallocate(-1, b) }, zmm.ErrOverflow)
		mustFail(t, "Allocate(MaxInt)", func() { a.Allocate(math.MaxInt) }, zmm.ErrOverflow)
		mustFail(t, "Reallocate(MaxInt)", func() { a.Reallocate(math.MaxInt, b) }, zmm.ErrOverflow)

		// Double free: the normal heap and the system heap know the block
		// was freed; the debug heap's free fill and the guard heap's unmapped
		// block leave the buffer unrecognizable.
		big := a.Allocate(10000)
		a.Free(big)
		mustFail(t, "double Free of a page run", func() { a.Free(big) }, zmm.ErrDoubleFree, zmm.ErrInvalidPointer)
		a.Free(b)
		mustFail(t, "double Free of a small block", func() { a.Free(b) }, zmm.ErrDoubleFree, zmm.ErrInvalidPointer)

		require.NoError(t, h.Check())
		c := a.Allocate(300) // the heap still works
		a.Free(c)
	})
}

func TestMemoryLimit(t *testing.T) {
	forEachHeap(t, func(t *testing.T, k heapKind) {
		h := newHeap(t, k, zmm.WithLimit(8<<20))
		a := zmmarrow.New(h)
		mustFail(t, "Allocate over the limit", func() { a.Allocate(64 << 20) }, zmm.ErrMemoryLimit)
		b := a.Allocate(1000)
		b[999] = 7
		mustFail(t, "Reallocate over the limit", func() { a.Reallocate(64<<20, b) }, zmm.ErrMemoryLimit)
		assert.Equal(t, byte(7), b[999], "b stays valid when Reallocate fails")
		a.Free(b)

		// An Arrow builder over the limit panics with the same error.
		mustFail(t, "Int64 builder over the limit", func() {
			bld := array.NewInt64Builder(memory.NewCheckedAllocator(a))
			defer bld.Release()
			bld.Reserve(2 << 20) // 16 MiB of values
		}, zmm.ErrMemoryLimit)
	})
}

func TestLeakReport(t *testing.T) {
	var report bytes.Buffer
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(&report), zmm.WithName("arrow-request"))
	require.NoError(t, err)
	defer h.Close()
	a := zmmarrow.New(h)

	released := buildColumns(a, 100)
	for _, c := range released {
		c.Release()
	}
	require.Empty(t, h.Leaks(), "released arrays leave no block")

	b := array.NewInt64Builder(a)
	b.AppendValues(make([]int64, 1000), nil)
	leaked := b.NewInt64Array()
	b.Release()
	_ = leaked // never released

	leaks := h.Leaks()
	require.NotEmpty(t, leaks)
	var values *zmm.Leak
	for i := range leaks {
		if leaks[i].Size >= 8000 {
			values = &leaks[i]
		}
	}
	require.NotNil(t, values, "the 8000-byte value buffer is listed: %v", leaks)
	assert.Contains(t, values.Site.Function, "TestLeakReport", "the site is the program's line, not Arrow's or the adapter's")
	assert.Equal(t, uintptr(unsafe.Pointer(unsafe.SliceData(leaked.Data().Buffers()[1].Buf()))), values.Addr+64-values.Addr%64,
		"the leak's block holds the array's buffer")

	h.Reset() // the report: the leaked array's buffers
	assert.Contains(t, report.String(), "script=arrow-request")
	assert.Contains(t, report.String(), "memory leaks detected")
	assert.Contains(t, report.String(), fmt.Sprintf("(%d bytes)", values.Size))
	t.Log(report.String())
}

func TestLockedConcurrent(t *testing.T) {
	for _, k := range heapKinds[:2] { // the debug heap panics with ErrConcurrentUse on overlap
		t.Run(k.name, func(t *testing.T) {
			h := newHeap(t, k)
			start := h.Usage()
			var mu sync.Mutex // the heap's lock, shared with other users of h
			mem := memory.NewCheckedAllocator(&aligning{t: t, mem: zmmarrow.NewLocked(h, &mu)})

			const workers = 4
			arrays := make(chan arrow.Array, 16)
			var built, freed sync.WaitGroup
			for w := range workers {
				built.Add(1)
				go func() {
					defer built.Done()
					for i := range 20 {
						cols := buildColumns(mem, 200+50*w+i)
						for _, c := range cols {
							arrays <- c // released by another goroutine
						}
						mu.Lock()
						_ = h.Usage() // other uses of h hold the same lock
						mu.Unlock()
					}
				}()
			}
			for range workers {
				freed.Go(func() {
					for c := range arrays {
						c.Release()
					}
				})
			}
			// The IPC writer compresses buffers on several goroutines.
			freed.Go(func() {
				cols := buildColumns(mem, 2000)
				rec := array.NewRecordBatch(testSchema, cols, 2000)
				for _, c := range cols {
					c.Release()
				}
				defer rec.Release()
				for range 5 {
					var stream bytes.Buffer
					w := ipc.NewWriter(&stream, ipc.WithSchema(testSchema), ipc.WithAllocator(mem),
						ipc.WithZstd(), ipc.WithCompressConcurrency(4), ipc.WithMinSpaceSavings(0))
					assert.NoError(t, w.Write(rec))
					assert.NoError(t, w.Close())
					r, err := ipc.NewReader(&stream, ipc.WithAllocator(mem))
					if !assert.NoError(t, err) {
						return
					}
					for r.Next() {
						assert.True(t, array.RecordEqual(rec, r.RecordBatch()))
					}
					r.Release()
				}
			})
			built.Wait()
			close(arrays)
			freed.Wait()
			assert.Zero(t, mem.CurrentAlloc())
			mem.AssertSize(t, 0)
			mu.Lock()
			assert.Equal(t, start, h.Usage())
			mu.Unlock()
		})
	}
}

func TestNew(t *testing.T) {
	h := newHeap(t, heapKinds[0])
	assert.Same(t, h, zmmarrow.New(h).Heap())
	assert.Same(t, h, zmmarrow.NewLocked(h, nil).Heap())
	assert.Panics(t, func() { zmmarrow.New(nil) })
}

// TestSharedConcurrent: arrays built on several goroutines and released on
// others, and the IPC writer's concurrent compression, on a zmm.Shared
// without a lock, of every kind (debug, system and guard ones are serial).
func TestSharedConcurrent(t *testing.T) {
	forEachHeap(t, testSharedConcurrent)
}

func testSharedConcurrent(t *testing.T, k heapKind) {
	s, err := zmm.NewShared(k.opts...)
	require.NoError(t, err)
	defer s.Close()
	mem := memory.NewCheckedAllocator(&aligning{t: t, mem: zmmarrow.NewShared(s)})

	const workers = 4
	arrays := make(chan arrow.Array, 16)
	var built, freed sync.WaitGroup
	for w := range workers {
		built.Go(func() {
			for i := range 20 {
				for _, c := range buildColumns(mem, 200+50*w+i) {
					arrays <- c // released by another goroutine
				}
			}
		})
	}
	for range workers {
		freed.Go(func() {
			for c := range arrays {
				c.Release()
			}
		})
	}
	freed.Go(func() {
		cols := buildColumns(mem, 2000)
		rec := array.NewRecordBatch(testSchema, cols, 2000)
		for _, c := range cols {
			c.Release()
		}
		defer rec.Release()
		for range 5 {
			var stream bytes.Buffer
			w := ipc.NewWriter(&stream, ipc.WithSchema(testSchema), ipc.WithAllocator(mem),
				ipc.WithZstd(), ipc.WithCompressConcurrency(4), ipc.WithMinSpaceSavings(0))
			assert.NoError(t, w.Write(rec))
			assert.NoError(t, w.Close())
			r, err := ipc.NewReader(&stream, ipc.WithAllocator(mem))
			if !assert.NoError(t, err) {
				return
			}
			for r.Next() {
				assert.True(t, array.RecordEqual(rec, r.RecordBatch()))
			}
			r.Release()
		}
	})
	built.Wait()
	close(arrays)
	freed.Wait()
	assert.Zero(t, mem.CurrentAlloc())
	mem.AssertSize(t, 0)
	require.NoError(t, s.Check()) // collects what was freed remotely
	assert.Zero(t, s.Usage())
	assert.Empty(t, s.Leaks())

	// Reallocate keeps the bytes and the alignment; Free of a foreign slice
	// is an error.
	za := zmmarrow.NewShared(s)
	b := za.Allocate(100)
	copy(b, "hello")
	b = za.Reallocate(5000, b)
	assert.Equal(t, "hello", string(b[:5]))
	assert.Zero(t, uintptr(unsafe.Pointer(unsafe.SliceData(b)))%zmmarrow.Alignment)
	za.Free(b)
	require.NoError(t, s.Check())
	err = zmm.Try(func() { za.Free(make([]byte, 64)) })
	assert.ErrorIs(t, err, zmm.ErrInvalidPointer)
	assert.Same(t, s, za.Shared())
	assert.Nil(t, za.Heap())

	if s.Debug() {
		// A debug allocator names Arrow's caller, on whichever goroutine.
		var leak []byte
		var file string
		var line int
		done := make(chan struct{})
		go func() {
			defer close(done)
			leak = za.Allocate(10)
			_, file, line, _ = runtime.Caller(0)
		}()
		<-done
		leaks := s.Leaks()
		require.Len(t, leaks, 1)
		assert.Equal(t, file, leaks[0].Site.File)
		assert.Equal(t, line-1, leaks[0].Site.Line)
		za.Free(leak)
		assert.Empty(t, s.Leaks())
	}
	assert.Panics(t, func() { zmmarrow.NewShared(nil) })
}
