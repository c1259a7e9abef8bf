package main

import (
	"math/rand/v2"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// The demo's workload: what PHP requests do to the Zend heap, written out
// in Go. Each function below that allocates is named for the part of the
// engine or of the script it stands for, and allocates on its own lines,
// so that a debug heap's allocation sites (the report's top sites, the
// leak report, a pprof profile) read as what the memory is for: request
// parsing, strings, arrays, objects, templates, buffers.
//
// The sizes are those of PHP's structures (a 56-byte HashTable, 320 bytes
// for the buckets of a small packed array, zend_strings of every length),
// the odds and lifetimes those of a page render: most values die within a
// few statements, some live for a while, a share until the request ends.
// The random source has a fixed seed, so every run does the same work.

// demoRequests is how many requests the workload runs.
const demoRequests = 5

// workload runs the requests on a heap and keeps the books: every block a
// request holds, and the step at which the script drops each.
type workload struct {
	h    *zmm.Heap
	rng  *rand.Rand
	step int // the script's statements so far in this request
	// keep is the percentage of the script's values that live until the
	// request ends.
	keep  int
	held  map[unsafe.Pointer]bool  // the blocks the request holds
	death map[int][]unsafe.Pointer // step → blocks the script drops then
	stats workloadStats
}

// workloadStats are what a run of the workload did.
type workloadStats struct {
	Requests      int           `json:"requests"`
	Allocs        int           `json:"allocs"`
	Frees         int           `json:"frees"`
	Reallocs      int           `json:"reallocs"`
	Duration      time.Duration `json:"duration_ns"` // the requests' work, atEnd excluded
	PeakUsage     uint64        `json:"peak_usage"`  // the highest over the requests
	RealPeakUsage uint64        `json:"real_peak_usage"`
}

// calls is how many allocator calls the workload made.
func (s workloadStats) calls() int { return s.Allocs + s.Frees + s.Reallocs }

// runWorkload runs the requests on h. atEnd is called at the end of each
// request, with its number (from 1) and whether it is the last, while the
// request still holds its blocks; then the engine frees them one by one
// and resets the heap, so that a debug heap's leak report at the reset
// lists only what atEnd leaked.
func runWorkload(h *zmm.Heap, atEnd func(request int, last bool)) workloadStats {
	w := &workload{
		h:     h,
		rng:   rand.New(rand.NewPCG(0x7a6d6d, 6)),
		held:  map[unsafe.Pointer]bool{},
		death: map[int][]unsafe.Pointer{},
	}
	for req := 1; req <= demoRequests; req++ {
		last := req == demoRequests
		start := time.Now()
		w.runRequest(req, last)
		w.stats.Duration += time.Since(start)
		atEnd(req, last)
		start = time.Now()
		w.endRequest()
		w.stats.Duration += time.Since(start)
	}
	return w.stats
}

// runRequest runs one request's script: a page render of a few thousand
// statements. The third request sorts a big array; the last one builds a
// bigger page and reads a file whole.
func (w *workload) runRequest(req int, last bool) {
	w.stats.Requests++
	parseRequest(w)
	steps := 2000 + w.rng.IntN(1000)
	w.keep = 12
	if last {
		steps, w.keep = 11000, 25
		w.hold(readFileWhole(w), -1)
	}
	if req == 3 {
		w.hold(sortLargeArray(w), 700)
	}
	for range steps {
		w.statement()
	}
}

// statement runs one statement of the script: it drops the values whose
// time has come and makes one new value, of a kind drawn with PHP-like
// odds.
func (w *workload) statement() {
	w.step++
	for _, p := range w.death[w.step] {
		w.drop(p)
	}
	delete(w.death, w.step)

	switch r := w.rng.IntN(100); {
	case r < 38:
		w.hold(concatStrings(w), w.lifetime())
	case r < 50:
		w.hold(newHashTable(w), w.lifetime())
	case r < 58:
		ht, buckets := newArray(w)
		life := w.lifetime()
		w.hold(ht, life)
		w.hold(buckets, life)
	case r < 78:
		w.hold(newObject(w), w.lifetime())
	case r < 90:
		w.hold(renderRow(w), w.lifetime())
	case r < 98:
		w.hold(compileTemplate(w), w.lifetime())
	default:
		w.hold(streamBuffer(w), w.lifetime())
	}
	if w.rng.IntN(100) == 0 {
		w.hold(appendToArray(w), w.lifetime())
	}
}

// lifetime draws how many statements a value lives: most die young, some
// live for a while, a share until the request ends (-1).
func (w *workload) lifetime() int {
	switch r := w.rng.IntN(100); {
	case r < w.keep:
		return -1
	case r < 60:
		return 1 + w.rng.IntN(40)
	}
	return 40 + w.rng.IntN(2500)
}

// hold counts p as the request's, to be dropped after n statements (n < 0:
// at the request's end).
func (w *workload) hold(p unsafe.Pointer, n int) {
	w.stats.Allocs++
	w.held[p] = true
	if n >= 0 {
		w.death[w.step+n] = append(w.death[w.step+n], p)
	}
}

// drop frees a value the script no longer uses.
func (w *workload) drop(p unsafe.Pointer) {
	delete(w.held, p)
	w.h.Free(p)
	w.stats.Frees++
}

// endRequest frees what the request still holds, as the engine's shutdown
// does, and resets the heap.
func (w *workload) endRequest() {
	w.stats.PeakUsage = max(w.stats.PeakUsage, uint64(w.h.PeakUsage()))
	w.stats.RealPeakUsage = max(w.stats.RealPeakUsage, uint64(w.h.RealPeakUsage()))
	for p := range w.held {
		w.drop(p)
	}
	clear(w.death)
	w.step = 0
	w.h.Reset()
}

// The engine and the script, one function per kind of memory. Each draws
// its size and allocates it; the caller decides how long it lives.

// parseRequest builds the request's superglobals ($_SERVER, $_GET,
// $_COOKIE): a hash table, and a string for each name and value. They
// live until the request ends.
func parseRequest(w *workload) {
	w.hold(newHashTable(w), -1)
	for range 2 * (20 + w.rng.IntN(20)) {
		w.hold(w.h.Alloc(uintptr(16+w.rng.IntN(48))), -1)
	}
}

// concatStrings makes a short string: a concatenation, an interpolation,
// a number turned into a string.
func concatStrings(w *workload) unsafe.Pointer {
	return w.h.Alloc(uintptr(16 + w.rng.IntN(48)))
}

// newHashTable makes the HashTable of an array or a symbol table.
func newHashTable(w *workload) unsafe.Pointer {
	return w.h.Alloc(56)
}

// newArray makes a small packed array: its HashTable and the buckets of
// its first 8 elements.
func newArray(w *workload) (ht, buckets unsafe.Pointer) {
	return newHashTable(w), w.h.Alloc(320)
}

// newObject makes an object with its properties table.
func newObject(w *workload) unsafe.Pointer {
	return w.h.Alloc(uintptr(64 + w.rng.IntN(192)))
}

// renderRow makes a fragment of the page: a row of HTML.
func renderRow(w *workload) unsafe.Pointer {
	return w.h.Alloc(uintptr(256 + w.rng.IntN(768)))
}

// compileTemplate makes the opcodes of a template include.
func compileTemplate(w *workload) unsafe.Pointer {
	return w.h.Alloc(uintptr(1024 + w.rng.IntN(2048)))
}

// streamBuffer makes the buffer of a stream: a socket read, output
// buffering. These take whole pages.
func streamBuffer(w *workload) unsafe.Pointer {
	return w.h.Alloc(uintptr(4096 + w.rng.IntN(12288)))
}

// appendToArray fills an array element by element: its buckets double as
// it grows (zend_hash_extend), a reallocation each time.
func appendToArray(w *workload) unsafe.Pointer {
	size := uintptr(128)
	p := w.h.Alloc(size)
	for range 2 + w.rng.IntN(6) {
		size *= 2
		p = w.h.Realloc(p, size)
		w.stats.Reallocs++
	}
	return p
}

// sortLargeArray makes the copy that sort() works on: a big temporary, a
// huge block of its own.
func sortLargeArray(w *workload) unsafe.Pointer {
	return w.h.Alloc(3 << 20)
}

// readFileWhole is file_get_contents of a file of 2.5 MiB: a huge block.
func readFileWhole(w *workload) unsafe.Pointer {
	return w.h.Alloc(5<<19 + 12345)
}
