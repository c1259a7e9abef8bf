// Package zmm is a memory allocator for Go programs built on the design of
// PHP's Zend Memory Manager: memory that lives outside the Go heap, so the
// garbage collector never scans, moves or frees it.
//
// Memory comes from the OS in 2 MiB chunks aligned to 2 MiB and cut into
// 4 KiB pages. Requests of up to 3072 bytes are served from 30 size-class
// bins (runs of pages with a free list per class); larger requests get runs
// of whole pages inside a chunk; requests above MaxLargeSize (1020 KiB) get
// a huge block, a mapping of their own. See DESIGN.md for the layout. A heap made
// WithStorage takes its chunks from a storage.Storage instead (the Zend
// MM's zend_mm_storage): a fixed region, or shared memory other processes
// map.
//
// The API follows the Zend MM's, with Go names:
//
//	emalloc        Heap.Alloc         efree      Heap.Free
//	ecalloc        Heap.Calloc        erealloc   Heap.Realloc
//	safe_emalloc   Heap.SafeAlloc     estrdup    Heap.Strdup
//	estrndup       Heap.Strndup       zend_mem_block_size  Heap.BlockSize
//	memory_get_usage / memory_get_peak_usage   Heap.Usage / Heap.PeakUsage
//	memory_get_usage(true) / ..._peak_usage(true)  Heap.RealUsage / Heap.RealPeakUsage
//	memory_reset_peak_usage  Heap.ResetPeak   memory_limit  Heap.SetLimit
//	zend_mm_gc     Heap.GC            zend_mm_shutdown  Heap.Reset / Heap.Close
//	pemalloc(…, 1) PAlloc (the persistent allocator)
//
// Rules:
//   - A Heap has one owner at a time (like a ZTS thread's heap). A Shared
//     (NewShared) serves every goroutine, with a heap per P and lock-free
//     frees from any goroutine; the package-level functions use two of
//     them (default and persistent).
//   - Blocks hold plain bytes: never store a Go pointer in one.
//   - Everything a heap handed out is gone after Reset or Close.
//   - Allocation failures (memory limit, out of memory, size overflow) and
//     misuse (bad pointer, double free, corruption) panic with a *Error, as
//     the Zend MM bails out; Try turns that panic into an error.
package zmm
