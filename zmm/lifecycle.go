package zmm

import (
	"github.com/gozmm/zmm/internal/frames"
	"math/rand/v2"
	"unsafe"
)

// The request lifecycle: Reset ends a request (zend_mm_shutdown, not
// full), Close ends the heap (full), GC gives unused memory back between
// requests.

// closedState stands in for the state of a closed heap: its free lists are
// empty and no frame matches it, so every call reaches a slow path, which
// reports ErrClosed.
var closedState = func() (s heapState) {
	s = heapState{closed: 1, frame: frames.Make(frames.Chunk, 0, 0)}
	s.clearOwn()
	return s
}()

// Reset ends a request (zend_mm_shutdown, not full): every block is
// released at once without visiting it, statistics restart, and the main
// chunk plus about as many cached chunks as recent requests needed stay
// mapped for the next request. Pointers into the heap are invalid after
// Reset.
//
// A debug heap first writes its leak report (see WithLeakReport).
func (h *Heap) Reset() {
	s := h.st
	s.checkOpen("Reset")
	if hk := h.hooks; hk != nil && hk.Reset != nil {
		hk.Reset()
	}
	h.enter(opReset)
	defer h.exit()
	s.checkRing("Reset")
	if sp := h.sp; sp != nil {
		h.reportLeaks()
		if sp.sys != nil {
			sp.sys.releaseAll(s)
		} else {
			clear(sp.dbg.quarantined)
			sp.dbg.forgetRuns()
		}
	}
	s.reset()
}

// reset drops every block of the heap and keeps its chunks by the Zend
// MM's policy: live huge blocks are retired, every chunk but the main one
// moves to the cache, the cache is trimmed to the running average of chunks
// per request (avg_chunks_count), and the main chunk's header is
// reinitialised. No block is visited. The key changes, so a link written
// before Reset is not valid after.
func (s *heapState) reset() {
	s.freeAllHuge()
	s.dropIndex()
	for addr := hdr(s.main).Next; addr != s.main; {
		c := hdr(addr)
		addr = c.Next
		s.cacheChunk(c)
		s.chunks--
	}
	s.avgChunks = (s.avgChunks + float64(s.peakChunks)) / 2
	for s.cached != 0 && float64(s.cachedChunks)+0.9 > s.avgChunks {
		s.unmapCachedChunk()
	}
	main := hdr(s.main)
	main.Init(uintptr(unsafe.Pointer(s)), s.id, 0)
	main.Next, main.Prev = s.main, s.main
	s.free = [32]uintptr{}
	s.dfree = [32]uintptr{}
	s.carveNext, s.carveLeft = [32]uintptr{}, [32]uintptr{}
	s.size, s.peak = 0, 0
	s.realPeak = s.realSize
	s.chunks, s.peakChunks = 1, 1
	s.deleteBoundary, s.deleteCount = 0, 0
	s.key = uintptr(rand.Uint64())
}

// Close gives every byte of the heap back to the OS (zend_mm_shutdown,
// full). The heap and every pointer into it are invalid afterwards; using
// the heap panics with ErrClosed.
//
// A debug heap first writes its leak report.
func (h *Heap) Close() {
	s := h.st
	if s.closed != 0 {
		return
	}
	s.checkRing("Close")
	// The heap stays busy to the end: its state is unmapped with the main
	// chunk, so there is nothing to clear afterwards.
	h.enter(opClose)
	sp := h.sp
	if sp != nil {
		h.reportLeaks()
		if sp.sys != nil {
			sp.sys.releaseAll(s)
		}
	}
	id, hasStorage := s.id, s.hasStorage
	h.st = &closedState
	s.unmapAll() // the state dies with it
	if hasStorage {
		storages.Delete(id)
	}
	if sp != nil && sp.dbg != nil {
		debugHeaps.Delete(id)
		sp.dbg.releaseQuarantine()
	}
}

// unmapAll unmaps everything the heap holds, its own state (in the main
// chunk) last: s must not be used afterwards.
func (s *heapState) unmapAll() {
	s.freeAllHuge()
	s.dropHugeCache()
	s.huge.release()
	s.runs.release()
	s.dropCache()
	for addr := hdr(s.main).Next; addr != s.main; {
		next := hdr(addr).Next
		s.unmapChunk(addr)
		addr = next
	}
	s.unmapChunk(s.main)
}

// GC gives memory the heap holds but does not use back to the OS and
// returns how many bytes (zend_mm_gc, gc_mem_caches): bin runs whose slots
// are all free go back to their chunk, chunks left empty and every cached
// chunk and huge mapping are unmapped, and the free pages of the chunks
// that stay are released with madvise (in whole OS pages; they stay mapped
// and count in RealUsage until their chunk is unmapped). The count is the
// bytes of emptied runs in chunks that stay, plus the bytes unmapped.
func (h *Heap) GC() uintptr {
	s := h.st
	s.checkOpen("GC")
	h.enter(opGC)
	defer h.exit()
	return s.gc("GC", true)
}
