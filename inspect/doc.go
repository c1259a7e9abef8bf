// Package inspect reads zmm heaps from outside: an HTTP handler in the
// style of net/http/pprof that serves a program's heaps as snapshots and
// pprof profiles, the conversion of a snapshot into a pprof profile of the
// live allocations by site, and Load, which reads a snapshot back from a
// file or from a running program's handler.
//
// A program mounts the handler and registers the heaps it wants to show
// (the default and the persistent heap are always there):
//
//	var mu sync.Mutex // serializes every use of h
//	h, _ := zmm.New(zmm.WithDebug(true))
//	inspect.Register("requests", h, &mu)
//	http.Handle("/debug/zmm/", inspect.Handler())
//	go http.ListenAndServe("127.0.0.1:6060", nil)
//
// then
//
//	go tool pprof http://127.0.0.1:6060/debug/zmm/profile?heap=requests
//	go run ./cmd/zmmstat watch http://127.0.0.1:6060/debug/zmm/?heap=requests
//
// Snapshots of heaps in debug, system or guard mode list every live block
// with its allocation site, so their profiles show the code that holds the
// memory; a normal heap keeps no sites, and its profile shows where the
// memory sits instead (per bin, large runs, huge blocks).
package inspect
