// Package fuzz holds zmm's go test -fuzz targets: programs of heap
// operations decoded from the fuzzer's bytes and run against a model of the
// heap, on a normal heap (FuzzOps) and on a debug heap with injected guard
// corruption (FuzzDebugOverflow), among others.
//
// Run a target with
//
//	go test ./fuzz -run XXX -fuzz '^FuzzOps$' -fuzztime 60s
//
// or every target with fuzz/run.sh. Plain go test ./fuzz replays the
// committed corpus under testdata/fuzz. The package has no non-test code.
package fuzz
