package zmmarrow_test

// Reproductions of the arrow-go bugs that its own test suites show on zmm
// (zmmarrow/arrowtests/known-bugs.txt). Each test passes by showing that a
// debug heap catches the bug; when arrow-go fixes one, its test fails here,
// and its entry in known-bugs.txt should go with it. The leak in arrow-go's
// compute package is in arrowbugs_compute_test.go.

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/csv"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/debugheader"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

// debugHeap returns a debug heap, silent at Close (the tests read its
// leaks with Leaks), closed when the test ends.
func debugHeap(t *testing.T) *zmm.Heap {
	t.Helper()
	h, err := zmm.New(zmm.WithDebug(true), zmm.WithLeakReport(nil), zmm.WithName(t.Name()))
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

// fill32 is four bytes of the debug heap's free fill, read as an int32.
var fill32 = func() int32 {
	f := uint32(debugheader.FreeFill) * 0x01010101
	return int32(f)
}()

// listViewOverReleasedSizes builds a list view of three lists the way
// arrow-go's random list-view generator does: its validity bitmap and sizes
// are the buffers of an Int32 array, wrapped without taking a reference
// (memory.NewBufferBytes), and that array is released before the list view
// is read.
func listViewOverReleasedSizes(mem memory.Allocator) *array.ListView {
	sb := array.NewInt32Builder(mem)
	defer sb.Release()
	sb.AppendValues([]int32{2, 1, 3}, nil)
	sizes := sb.NewInt32Array()

	vb := array.NewInt8Builder(mem)
	defer vb.Release()
	vb.AppendValues([]int8{1, 2, 3, 4, 5, 6}, nil)
	values := vb.NewInt8Array()
	defer values.Release()

	offsets := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, 2, 3}))
	data := array.NewData(arrow.ListViewOf(arrow.PrimitiveTypes.Int8), sizes.Len(),
		[]*memory.Buffer{
			memory.NewBufferBytes(sizes.NullBitmapBytes()),
			offsets,
			memory.NewBufferBytes(sizes.Data().Buffers()[1].Bytes()),
		},
		[]arrow.ArrayData{values.Data()}, sizes.NullN(), 0)
	defer data.Release()
	sizes.Release() // the bug: the list view still reads its buffers
	return array.NewListViewData(data)
}

func TestArrowBugListViewGeneratorReadsReleasedSizes(t *testing.T) {
	t.Run("Arrow's allocator hides it", func(t *testing.T) {
		lv := listViewOverReleasedSizes(memory.NewGoAllocator())
		defer lv.Release()
		assert.Equal(t, []int32{2, 1, 3}, lv.Sizes(), "the garbage collector keeps the released bytes as they were")
	})
	t.Run("debug heap", func(t *testing.T) {
		lv := listViewOverReleasedSizes(zmmarrow.New(debugHeap(t)))
		defer lv.Release()
		assert.Equal(t, []int32{fill32, fill32, fill32}, lv.Sizes(), "the sizes read as the free fill")
	})
}

// readKeepingStrings reads csv with an inferring reader on mem and returns
// the second column's first value of each record, kept as the string
// array.String.Value returns (which aliases the record's buffer), as
// arrow-go's TestInferringSchemaWithoutHeaderPreservesFirstRow keeps it.
func readKeepingStrings(t *testing.T, mem memory.Allocator, input string) []string {
	r := csv.NewInferringReader(strings.NewReader(input), csv.WithAllocator(mem), csv.WithHeader(false))
	defer r.Release()
	var kept []string
	for r.Next() { // each Next releases the record before it
		kept = append(kept, r.RecordBatch().Column(1).(*array.String).Value(0))
	}
	require.NoError(t, r.Err())
	return kept
}

func TestArrowBugCSVTestKeepsStringPastNext(t *testing.T) {
	const input = "1,a\n2,b\n"
	t.Run("Arrow's allocator hides it", func(t *testing.T) {
		assert.Equal(t, []string{"a", "b"}, readKeepingStrings(t, memory.NewGoAllocator(), input))
	})
	t.Run("debug heap", func(t *testing.T) {
		fill := string([]byte{debugheader.FreeFill})
		assert.Equal(t, []string{fill, fill}, readKeepingStrings(t, zmmarrow.New(debugHeap(t)), input),
			"both strings point into released records")
	})
}
