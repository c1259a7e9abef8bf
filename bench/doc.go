// Package bench measures zmm side by side with what a Go user would pick
// instead, on the same work.
//
//   - go test -bench in this package: alloc+free pairs per size class,
//     random small mixes, large runs, huge blocks, request-like work ended
//     by Reset, realloc growth, a GC-pressure scenario with millions of
//     live objects, and trace replays — each against Go's allocator (with
//     its GC cost), sync.Pool where it fits, modernc.org/memory, and Go's
//     arena experiment (GOEXPERIMENT=arenas). Every benchmark reports GC
//     cycles and pause time.
//   - bench/gen makes synthetic allocation traces (bench/traces holds a
//     few), in the format of package github.com/gozmm/zmm/trace
//     (docs/TRACE_FORMAT.md); trace/replay and bench/peers replay them.
//   - bench/c replays the same traces in C on glibc, jemalloc, mimalloc and
//     PHP's own Zend MM, and prints a table against the Zend MM.
//   - bench/chart draws the results as an SVG.
//
// bench is a module of its own (github.com/gozmm/zmm/bench), so that what
// only the benchmarks need (modernc.org/memory, the peers, the generator)
// stays out of the module graph of zmm's users; the repository's go.work
// builds it against the zmm beside it.
//
// BENCHMARKS.md has the commands and the results of one run.
package bench
