package zmmhttp_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"

	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmhttp"
)

func ExampleMiddleware() {
	pool, err := zmmhttp.NewPool(8, zmm.WithLimit(64<<20))
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/squares", func(w http.ResponseWriter, r *http.Request) {
		h := zmmhttp.Heap(r) // this request's heap, empty
		buf := zmm.MakeSlice[byte](h, 0, 16)
		for i := 1; i <= 5; i++ {
			if cap(buf)-len(buf) < 24 {
				buf = zmm.GrowSlice(h, buf, 2*cap(buf)) // erealloc
			}
			buf = strconv.AppendInt(buf, int64(i*i), 10)
			buf = append(buf, ' ')
		}
		w.Write(buf) // copied; no need to free buf: the request's end resets the heap
	})
	srv := httptest.NewServer(zmmhttp.Middleware(pool)(mux))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/squares")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output: 1 4 9 16 25
}
