package zmmarrow_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

// benchAllocators are the allocators compared: zmm without and with its
// lock, arrow-go's GoAllocator, and memory.DefaultAllocator (a GoAllocator
// unless arrow-go is built with the mallocator or cgo allocator tags).
var benchAllocators = []struct {
	name string
	mem  func(b *testing.B) memory.Allocator
}{
	{"zmm", func(b *testing.B) memory.Allocator { return zmmarrow.New(benchHeap(b)) }},
	{"zmm-locked", func(b *testing.B) memory.Allocator { return zmmarrow.NewLocked(benchHeap(b), nil) }},
	{"go", func(*testing.B) memory.Allocator { return memory.NewGoAllocator() }},
	{"default", func(*testing.B) memory.Allocator { return memory.DefaultAllocator }},
}

// benchHeap is a normal heap (ZMM_DEBUG and ZMM_ALLOC do not apply), closed
// when the benchmark ends.
func benchHeap(b *testing.B) *zmm.Heap {
	h, err := zmm.New(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	return h
}

// runBench runs build once per iteration with each allocator and reports,
// besides ns/op, B/op and allocs/op of the Go heap, the GC cycles per op.
func runBench(b *testing.B, build func(mem memory.Allocator)) {
	for _, ba := range benchAllocators {
		b.Run("alloc="+ba.name, func(b *testing.B) {
			mem := ba.mem(b)
			build(mem) // warm up: chunks mapped, size classes used once
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				build(mem)
			}
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.NumGC-before.NumGC)/float64(b.N), "GCs/op")
		})
	}
}

// BenchmarkInt64 builds and releases an Int64 array of 1e5 values, appended
// one by one (the builder grows its buffers by reallocation).
func BenchmarkInt64(b *testing.B) {
	runBench(b, func(mem memory.Allocator) {
		bld := array.NewInt64Builder(mem)
		for i := range 100_000 {
			bld.Append(int64(i))
		}
		arr := bld.NewInt64Array()
		bld.Release()
		if arr.Len() != 100_000 {
			panic("short array")
		}
		arr.Release()
	})
}

var benchStrings = func() []string {
	s := make([]string, 10_000)
	for i := range s {
		s[i] = fmt.Sprintf("value-%d-%s", i, "abcdefghijklmnopqrstuvwxyz"[:i%27])
	}
	return s
}()

// BenchmarkString builds and releases a String array of 1e4 strings.
func BenchmarkString(b *testing.B) {
	runBench(b, func(mem memory.Allocator) {
		bld := array.NewStringBuilder(mem)
		for _, s := range benchStrings {
			bld.Append(s)
		}
		arr := bld.NewStringArray()
		bld.Release()
		arr.Release()
	})
}

var benchSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "score", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "name", Type: arrow.BinaryTypes.String},
	{Name: "tags", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
}, nil)

// BenchmarkRecordBatch builds and releases a record batch of 1e4 rows:
// Int64, nullable Float64, String and List<Int32> columns.
func BenchmarkRecordBatch(b *testing.B) {
	runBench(b, func(mem memory.Allocator) {
		rb := array.NewRecordBuilder(mem, benchSchema)
		id := rb.Field(0).(*array.Int64Builder)
		score := rb.Field(1).(*array.Float64Builder)
		name := rb.Field(2).(*array.StringBuilder)
		tags := rb.Field(3).(*array.ListBuilder)
		tv := tags.ValueBuilder().(*array.Int32Builder)
		for i, s := range benchStrings {
			id.Append(int64(i))
			if i%10 == 0 {
				score.AppendNull()
			} else {
				score.Append(float64(i) * 0.5)
			}
			name.Append(s)
			tags.Append(true)
			for j := range i % 4 {
				tv.Append(int32(j))
			}
		}
		rec := rb.NewRecordBatch()
		rb.Release()
		rec.Release()
	})
}
