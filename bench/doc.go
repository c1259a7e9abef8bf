// Package bench holds benchmarks comparing zmm with Go's allocator: small,
// large and huge alloc/free pairs, a PHP-like request mix ended by Reset,
// Reset alone, and Realloc growth, each with a Go-allocator twin that
// reports the garbage-collection cycles and pause time it causes.
//
// Later: trace replay and a C harness against the real Zend MM.
//
// Run them with
//
//	go test ./bench -run XXX -bench .
//
// `go test ./bench` alone runs only a quick smoke test of the workloads.
package bench
