package zmm

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/gozmm/zmm/chunk"
)

// System mode (ModeSystem, ZMM_ALLOC=system) is the analog of the Zend MM's
// USE_ZEND_ALLOC=0 with tracked allocations: every block is its own Go
// allocation, kept alive by the heap's table until it is freed, so that
// tools that watch allocations one by one (the race detector, -asan) see
// each block. Guard mode (ModeGuard, ZMM_ALLOC=guard) maps every block on
// its own, ending against a PROT_NONE page: a write past the end faults at
// once, with the Go stack trace. By default a block ends exactly at its
// guard page (see WithGuardAlignment); with an alignment chosen, up to
// align-1 bytes of slack may lie between the end of the block and the guard
// page, holding a canary checked at Free, Realloc and by Check.
//
// Both modes keep the statistics of the chunk mode: Usage counts each
// block's class size (bin, pages or huge rounding), and RealUsage is the
// main chunk plus Usage. The memory limit applies to RealUsage at every
// allocation. Their blocks and their methods are this type, chosen once
// in New: no chunk code path asks which mode it is in.

// sysHeap is the backend of a system or guard heap.
type sysHeap struct {
	mode AllocMode // ModeSystem or ModeGuard
	// guardAlign places guard-mode blocks (WithGuardAlignment).
	guardAlign uintptr
	// blocks are the live blocks; freed the recently freed pointers, to
	// name a double free as such.
	blocks map[uintptr]*sysBlock
	freed  map[uintptr]struct{}
}

type sysBlock struct {
	size, class uintptr
	site, orig  uintptr
	buf         []uint64 // system mode: the Go allocation (of words: 8-byte aligned)
	base, len   uintptr  // guard mode: the mapping, guard page included
}

const guardSlackByte = 0xA7

func newSysHeap(mode AllocMode, guardAlign uintptr) *sysHeap {
	return &sysHeap{mode: mode, guardAlign: guardAlign, blocks: map[uintptr]*sysBlock{}, freed: map[uintptr]struct{}{}}
}

// data returns the block's bytes as a pointer. A system-mode block is Go
// memory: its pointer must come from its slice, not from an integer
// (checkptr, on under -race, rejects Go pointers made from integers).
func (b *sysBlock) data(addr uintptr) unsafe.Pointer {
	if b.buf != nil {
		return unsafe.Pointer(unsafe.SliceData(b.buf))
	}
	return ptr(addr)
}

// sysOwners maps every live block of every system or guard heap to its
// heap's id, so that a block freed on the wrong heap is named as such, as
// the frame table does for chunk heaps. Only those modes, meant for
// debugging, pay for it.
var sysOwners sync.Map // uintptr → uint32

// blockAlign is the alignment of a guard-mode block of size bytes: the
// chosen one, or the largest power of two up to 16 that divides size, which
// puts the block's end against the guard page.
func (y *sysHeap) blockAlign(size uintptr) uintptr {
	if y.guardAlign != 0 {
		return y.guardAlign
	}
	if size == 0 {
		return 16
	}
	return min(16, size&-size)
}

func (y *sysHeap) alloc(s *heapState, size uintptr, op string, site, orig uintptr) unsafe.Pointer {
	class := classSize(op, size)
	// admit, not overLimit: the heap of a serial Shared allocator takes
	// its bytes from the allocator's budget (release gives them back).
	if !s.admit(class) {
		limitError(op, s.currentLimit(), size)
	}
	b := &sysBlock{size: size, class: class, site: site, orig: orig}
	var p unsafe.Pointer
	if y.mode == ModeSystem {
		// Words, not bytes: Go's tiny allocator packs small byte slices
		// at any alignment, and every block is 8-byte aligned.
		b.buf = make([]uint64, (max(size, 1)+7)/8)
		p = unsafe.Pointer(unsafe.SliceData(b.buf))
	} else {
		ps := chunk.OSPageSize()
		data := (max(size, 1) + ps - 1) &^ (ps - 1)
		base, err := chunk.Map(data+ps, ps)
		if err != nil {
			s.unadmit(class)
			outOfMemory(op, s.realSize, size)
		}
		if err := chunk.Protect(unsafe.Add(base, data), ps); err != nil {
			_ = chunk.Unmap(base, data+ps)
			s.unadmit(class)
			outOfMemory(op, s.realSize, size)
		}
		b.base, b.len = uintptr(base), data+ps
		end := uintptr(base) + data
		start := (end - size) &^ (y.blockAlign(size) - 1)
		p = ptr(start)
		slack := unsafe.Slice((*byte)(ptr(start+size)), end-start-size)
		for i := range slack {
			slack[i] = guardSlackByte
		}
	}
	y.blocks[uintptr(p)] = b
	sysOwners.Store(uintptr(p), s.id)
	delete(y.freed, uintptr(p))
	s.size += class
	s.peak = max(s.peak, s.size)
	s.realSize += class
	s.realPeak = max(s.realPeak, s.realSize)
	return p
}

// lookup finds the live block at addr or panics saying what addr is.
func (y *sysHeap) lookup(s *heapState, addr uintptr, op string) *sysBlock {
	b, ok := y.blocks[addr]
	if ok {
		return b
	}
	if _, was := y.freed[addr]; was {
		fail(ErrDoubleFree, op, addr, "zmm: %s(0x%x): double free: the block is already free", op, addr)
	}
	if owner, ok := sysOwners.Load(addr); ok && owner.(uint32) != s.id {
		fail(ErrWrongHeap, op, addr, "zmm: %s(0x%x): the block belongs to another heap", op, addr)
	}
	fail(ErrInvalidPointer, op, addr, "zmm: %s(0x%x): invalid pointer: not a live block of this heap (%v mode)", op, addr, y.mode)
	return nil
}

// owns reports whether addr is a live block of the heap.
func (y *sysHeap) owns(addr uintptr) bool { return y.blocks[addr] != nil }

// slackDamage returns the first damaged slack byte of a guard block.
func (b *sysBlock) slackDamage(p uintptr) (uintptr, bool) {
	if b.base == 0 {
		return 0, false
	}
	end := b.base + b.len - chunk.OSPageSize()
	for a := p + b.size; a < end; a++ {
		if *(*byte)(ptr(a)) != guardSlackByte {
			return a - p, true
		}
	}
	return 0, false
}

func (y *sysHeap) free(s *heapState, addr uintptr, op string) {
	b := y.lookup(s, addr, op)
	checkSlack(addr, b, op)
	y.release(s, addr, b)
}

// checkSlack panics if a guard block's slack canary was written.
func checkSlack(addr uintptr, b *sysBlock, op string) {
	if at, bad := b.slackDamage(addr); bad {
		fail(ErrCorrupted, op, addr, "zmm: %s(0x%x): heap corrupted: block 0x%x (%d bytes, allocated at %v): a write %d byte(s) past its end (at offset %d of a %d-byte block)",
			op, addr, addr, b.size, resolveSite(b.site), at-b.size+1, at, b.size)
	}
}

func (y *sysHeap) release(s *heapState, addr uintptr, b *sysBlock) {
	delete(y.blocks, addr)
	sysOwners.CompareAndDelete(addr, s.id)
	if len(y.freed) >= 1<<16 {
		clear(y.freed)
	}
	y.freed[addr] = struct{}{}
	s.size -= b.class
	s.unmapped(b.class)
	if b.base != 0 {
		_ = chunk.Unmap(ptr(b.base), b.len)
	}
}

// realloc always moves the block, as debug mode does; the old block is
// checked before the new one exists, so a report leaves nothing behind.
func (y *sysHeap) realloc(s *heapState, addr uintptr, size uintptr, site uintptr) unsafe.Pointer {
	if addr == 0 {
		return y.alloc(s, size, "Realloc", site, 0)
	}
	b := y.lookup(s, addr, "Realloc")
	orig := b.orig
	if orig == 0 {
		orig = b.site
	}
	checkSlack(addr, b, "Realloc")
	peak := s.peak
	q := y.alloc(s, size, "Realloc", site, orig)
	n := min(b.size, size)
	copy(unsafe.Slice((*byte)(q), n), unsafe.Slice((*byte)(b.data(addr)), n))
	y.release(s, addr, b)
	s.peak = max(peak, s.size)
	return q
}

// blockSize is the requested size, so that a write past it is caught.
func (y *sysHeap) blockSize(s *heapState, addr uintptr) uintptr {
	return y.lookup(s, addr, "BlockSize").size
}

func (y *sysHeap) check() []Problem {
	var probs []Problem
	for addr, b := range y.blocks {
		if at, bad := b.slackDamage(addr); bad {
			probs = append(probs, Problem{Addr: addr, Size: b.size, Site: resolveSite(b.site),
				What: fmt.Sprintf("a write %d byte(s) past its end (at offset %d of a %d-byte block)", at-b.size+1, at, b.size)})
		}
	}
	return probs
}

func (y *sysHeap) leaks() []Leak {
	var out []Leak
	for addr, b := range y.blocks {
		l := Leak{Addr: addr, Size: b.size, Site: resolveSite(b.site)}
		if b.orig != 0 {
			l.Orig = resolveSite(b.orig)
		}
		out = append(out, l)
	}
	sortLeaks(out)
	return out
}

// releaseAll drops every block (Reset, Close).
func (y *sysHeap) releaseAll(s *heapState) {
	for addr, b := range y.blocks {
		y.release(s, addr, b)
	}
	clear(y.freed)
}
