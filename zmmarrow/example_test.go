package zmmarrow_test

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

func Example() {
	h, err := zmm.New(zmm.WithLimit(64 << 20))
	if err != nil {
		panic(err)
	}
	defer h.Close()
	mem := zmmarrow.New(h) // one goroutine uses h; NewLocked otherwise

	b := array.NewInt64Builder(mem)
	b.AppendValues([]int64{1, 2, 3}, nil)
	b.AppendNull()
	arr := b.NewInt64Array()
	b.Release()
	fmt.Println(arr, "in the heap:", h.Usage() > 0)

	arr.Release() // before h.Reset or h.Close: the buffers go back to h
	fmt.Println("after Release:", h.Usage())

	err = zmm.Try(func() { mem.Allocate(1 << 30) }) // over the heap's limit
	fmt.Println(err != nil)
	// Output:
	// [1 2 3 (null)] in the heap: true
	// after Release: 0
	// true
}
