// Package zmmhttp gives each request of a net/http server a zmm heap of its
// own, the way PHP gives each request its Zend MM heap: the handler
// allocates in the request's heap, and when the handler returns everything
// it allocated is released at once (Heap.Reset). The heap then waits in a
// Pool for the next request, with its chunks still mapped, so a busy server
// soon stops asking the OS for memory.
//
//	pool, err := zmmhttp.NewPool(64, zmm.WithLimit(128<<20))
//	if err != nil {
//		return err
//	}
//	defer pool.Close()
//	mux := http.NewServeMux()
//	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
//		h := zmmhttp.Heap(r)
//		buf := zmm.MakeSlice[byte](h, 0, 64<<10)
//		buf = appendReport(h, buf) // grows buf with zmm.GrowSlice
//		w.Write(buf)               // copied: buf may die with the request
//	})
//	http.ListenAndServe("127.0.0.1:8080", zmmhttp.Middleware(pool)(mux))
//
// The rules follow from the heap's lifetime, which is the handler's call:
//
//   - A request's heap belongs to the goroutine that runs the handler.
//     Goroutines the handler starts may use it only until the handler
//     returns, and the handler must wait for them (a Heap has one owner at
//     a time: hand it over, never share it).
//   - Everything allocated in the heap is gone when the handler returns:
//     nothing may keep a pointer, a []byte or a string from it afterwards
//     (not a cache, not a goroutine, not the response).
//   - Write the response before returning. Bytes written to the
//     http.ResponseWriter are copied (io.Writer implementations must not
//     retain the slice), so writing a []byte that lives in the heap is fine.
//     A middleware placed between Middleware and the handler runs before
//     the heap is reset; one placed outside runs after.
//   - Put http.TimeoutHandler outside Middleware, as in
//     http.TimeoutHandler(zmmhttp.Middleware(pool)(h), ...), never inside:
//     TimeoutHandler returns at the timeout while its handler goes on in
//     another goroutine, and Middleware would reset the heap under it.
//   - No Go pointers in blocks, as everywhere in zmm.
//
// Middleware resets the heap also when the handler panics, and then
// panics again with the same value, so net/http still logs the panic and
// aborts the response. A memory-limit error is such a panic (a *zmm.Error);
// a handler that wants to answer it with a page of its own catches it with
// zmm.Try.
//
// Heap(r) returns the request's heap and panics if the handler is not
// behind Middleware; HeapFrom(ctx) returns nil in that case.
//
// In debug mode (zmm.WithDebug, or ZMM_DEBUG=1) each request's heap is
// named after the request ("GET /report"), so the leak report written at
// Reset names the request that leaked.
package zmmhttp
