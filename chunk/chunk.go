// Package chunk manages zmm's unit of memory from the OS: 2 MiB chunks
// aligned to 2 MiB, each cut into 512 pages of 4 KiB.
//
// It holds two things and nothing else:
//   - the OS layer (map aligned memory, unmap, give pages back with madvise,
//     grow or shrink a mapping in place), in os_linux.go;
//   - the chunk header that lives in page 0 of every chunk: the owning heap,
//     the page map and the free-page bitmap, and the best-fit page-run
//     allocator that works on them, in header.go.
//
// The process-wide frame table, which says which heap owns each 2 MiB
// frame, is internal to the module (internal/frames): only zmm's own
// packages may write it.
//
// zmm's page is always 4 KiB, whatever the OS page size is (4, 16 or 64 KiB
// on arm64 kernels). Only returning memory to the OS deals in OS pages.
//
// Every type in this package that is laid over mapped memory contains only
// integers and uintptrs: the Go garbage collector never sees that memory, so
// it must never hold a Go pointer.
package chunk

const (
	// Size is the size and the alignment of a chunk (ZEND_MM_CHUNK_SIZE).
	Size = 2 << 20
	// Shift is log2(Size).
	Shift = 21
	// PageSize is zmm's page: fixed at 4 KiB (ZEND_MM_PAGE_SIZE).
	PageSize = 4096
	// PageShift is log2(PageSize).
	PageShift = 12
	// Pages is the number of pages in a chunk (ZEND_MM_PAGES).
	Pages = Size / PageSize
	// FirstPage is the first page that can be handed out: page 0 holds the
	// chunk header (ZEND_MM_FIRST_PAGE).
	FirstPage = 1
	// MaxRunSize is the longest page run a chunk can hold: every page but
	// the header. The Zend MM serves runs up to it (ZEND_MM_MAX_LARGE_SIZE);
	// zmm serves runs of at most half of it (zmm.MaxLargeSize).
	MaxRunSize = Size - FirstPage*PageSize
)
