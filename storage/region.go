package storage

import (
	"fmt"
	"math/bits"
	"sync"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/frames"
)

// Region is a storage over a fixed range of memory the caller mapped: an
// mmap of its own, a hugetlbfs file, a device. Heaps over a Region never
// grow past it: when it is full, their allocations fail with zmm's
// out-of-memory error, which names the region.
//
// A Region hands out the 2 MiB-aligned part of its range in 2 MiB slots:
// a chunk takes one slot, a huge block as many contiguous slots as it
// spans, placed first fit. Truncate frees a mapping's trailing slots and
// Extend takes the slots after it when they are free, so huge blocks shrink
// and grow in place when they can.
//
// A Region never drops the contents of pages unless it was made with
// WithRelease: it cannot know what its memory is, and madvise(MADV_DONTNEED)
// means different things for private, shared and device memory.
//
// No two open Regions cover the same memory: NewRegion refuses a range
// that overlaps an open Region's slots (a process-wide registry keeps
// them). Close takes a Region out of that registry once no heap holds
// memory of it, so that its memory may be reused, by a new Region for
// example; unmap the memory only after Close. A Region dropped without
// Close stays registered until the garbage collector finds it unreachable
// (the registry holds it weakly, and no heap is over it then: a heap keeps
// its storage reachable until it is closed); NewRegion runs the collector
// once before refusing a range for such a Region, so the answer does not
// depend on when it last ran. A weak pointer rather than runtime.AddCleanup:
// a cleanup runs later, on a goroutine of its own, and nothing can wait for
// it.
//
// Its methods are safe for concurrent use: several heaps may share one
// Region.
type Region struct {
	mu   sync.Mutex
	name string
	// closed is set by Close: Map refuses, and the range is no longer
	// registered.
	closed bool
	// addr and size are the usable, aligned part of the range.
	addr, size uintptr
	slots      uintptr
	freeSlots  uintptr
	// used has a bit per slot, set when the slot belongs to a mapping.
	used []uint64
	// maps holds the live mappings: first slot → size in bytes.
	maps map[uintptr]uintptr
	// release drops the contents of pages (nil: never).
	release func(addr, size uintptr)
}

// RegionOption configures a Region made by NewRegion.
type RegionOption func(*Region)

// WithRelease makes the Region drop the contents of pages with f: pages a
// heap holds but does not use (zmm's GC), and the pages of every mapping
// it unmaps or truncates. f is called with whole OS pages. For anonymous
// private memory, DontNeed is the right f.
func WithRelease(f func(addr, size uintptr)) RegionOption {
	return func(r *Region) { r.release = f }
}

// DontNeed drops the contents of the whole OS pages inside [addr,
// addr+size) with madvise(MADV_DONTNEED): anonymous private pages then
// read back as zeros and cost no memory until written.
func DontNeed(addr, size uintptr) { chunk.Release(ptr(addr), size) }

// NewRegion makes a storage over [addr, addr+size). Only the part aligned
// to 2 MiB is used, so the range must hold at least one 2 MiB-aligned
// 2 MiB slot; it must lie below 2^48 (zmm's frame table covers no more).
//
// The memory must be mapped read/write and must stay mapped until the
// region is closed (Close), which it can be once every heap over it is
// closed. NewRegion refuses, with an error naming the range:
//   - Go heap memory (errors.Is ErrGoMemory): a []byte from make, new or
//     append, a goroutine's stack. The garbage collector may free or reuse
//     it under the heaps, and zmm's blocks would be invisible to it. Map
//     the memory instead (unix.Mmap, chunk.Map). It is found by asking the
//     runtime about each 2 MiB slot (see goheap.go); memory of a Go global
//     variable is not the heap's and is not refused.
//   - a range that overlaps the slots of an open Region (errors.Is
//     ErrOverlap): two heaps over the same memory would overwrite each
//     other. The message names both ranges.
//   - a range that holds memory of a zmm heap (ErrOverlap too), which the
//     frame table knows.
func NewRegion(addr, size uintptr, opts ...RegionOption) (*Region, error) {
	r := new(Region)
	if err := r.init(addr, size, fmt.Sprintf("region %#x+%s", addr, formatSize(size))); err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// init sets r up over [addr, addr+size), named name.
func (r *Region) init(addr, size uintptr, name string) error {
	if addr == 0 || size == 0 {
		return fmt.Errorf("storage: %s: a region needs a non-nil address and a positive size", name)
	}
	if addr+size < addr || !frames.Addressable(addr, size) {
		return fmt.Errorf("storage: %s reaches beyond 2^%d, the address space zmm covers", name, frames.AddressBits)
	}
	start := (addr + chunk.Size - 1) &^ (chunk.Size - 1)
	end := (addr + size) &^ (chunk.Size - 1)
	if start >= end {
		return fmt.Errorf("storage: %s holds no 2 MiB-aligned 2 MiB slot: map at least 4 MiB, or 2 MiB at a 2 MiB-aligned address", name)
	}
	// A 2 MiB-aligned slot lies inside one of the runtime's heap arenas
	// (64 MiB, or 4 MiB, aligned) or outside all of them, and every page of
	// a Go allocation of 2 MiB or more is known to the runtime: one look
	// per slot finds a region over a []byte from make.
	for a := start; a < end; a += chunk.Size {
		if inGoHeap(a) {
			return errorOf(ErrGoMemory, "storage: %s is Go heap memory at %#x: the garbage collector may free or reuse it under the heaps and cannot see their blocks; map the memory instead (unix.Mmap, chunk.Map)", name, a)
		}
	}
	slots := (end - start) >> chunk.Shift
	r.name = name
	r.addr, r.size = start, end-start
	r.slots, r.freeSlots = slots, slots
	r.used = make([]uint64, (slots+63)/64)
	r.maps = make(map[uintptr]uintptr)
	if err := regions.add(r); err != nil {
		return err
	}
	// Memory a zmm heap holds would be overwritten by a heap over the
	// region, and the frame table would stop naming its blocks. Checked
	// after the registry, so that memory of a heap over an open Region is
	// named by that Region.
	for a := start; a < end; a += chunk.Size {
		switch f := frames.Lookup(a); f.Kind() {
		case frames.Chunk, frames.Huge, frames.HugeInterior, frames.CachedChunk, frames.CachedHuge:
			regions.remove(r)
			return errorOf(ErrOverlap, "storage: %s overlaps memory of a zmm heap at %#x (%v)", name, a, f)
		}
	}
	return nil
}

// Close takes the region out of the process-wide registry, so that its
// memory may be unmapped or given to a new Region, and makes Map refuse
// (ErrClosed). It fails, changing nothing, while heaps hold mappings of the
// region (ErrInUse): close them first. Closing twice does nothing.
func (r *Region) Close() error {
	closed, err := r.shut()
	if closed {
		regions.remove(r)
	}
	return err
}

// shut marks the region closed if no mapping of it is live, and reports
// whether this call closed it.
func (r *Region) shut() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false, nil
	}
	if n := len(r.maps); n != 0 {
		return false, errorOf(ErrInUse, "storage: %s: cannot close: %d mapping(s) of it are still in use (close the heaps over it first)", r.name, n)
	}
	r.closed = true
	return true, nil
}

// String names the region: its range as given to NewRegion.
func (r *Region) String() string { return r.name }

// Addr returns the start of the part of the range the region hands out
// (the first 2 MiB-aligned address in it).
func (r *Region) Addr() uintptr { return r.addr }

// Size returns the bytes the region hands out: its 2 MiB-aligned part.
func (r *Region) Size() uintptr { return r.size }

// Free returns the bytes of the region that no mapping holds.
func (r *Region) Free() uintptr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.freeSlots << chunk.Shift
}

// Mappings returns how many mappings the region has handed out and not
// had back.
func (r *Region) Mappings() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.maps)
}

func slotsFor(size uintptr) uintptr { return (size + chunk.Size - 1) >> chunk.Shift }

// Map hands out the first run of free slots that holds size bytes.
func (r *Region) Map(size uintptr) (uintptr, error) {
	if err := checkSize("map", size); err != nil {
		return 0, err
	}
	if size > r.size {
		return 0, full("%s cannot hold %d bytes: it hands out %s", r.name, size, formatSize(r.size))
	}
	n := slotsFor(size)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errorOf(ErrClosed, "storage: %s is closed", r.name)
	}
	i, ok := r.firstFit(n)
	if !ok {
		if r.freeSlots == 0 {
			return 0, full("%s is full", r.name)
		}
		return 0, full("%s is full: %d bytes need %d free 2 MiB slots in a row; %d of %d slots are free, in shorter runs",
			r.name, size, n, r.freeSlots, r.slots)
	}
	r.mark(i, n, true)
	r.maps[i] = size
	return r.addr + i<<chunk.Shift, nil
}

// Unmap takes back the mapping at addr, which must have the size it has
// now. An address that is not a live mapping of the region, an unmap done
// twice included, is an error and changes nothing.
func (r *Region) Unmap(addr, size uintptr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, err := r.lookup("unmap", addr, size)
	if err != nil {
		return err
	}
	r.drop(addr, size)
	r.mark(i, slotsFor(size), false)
	delete(r.maps, i)
	return nil
}

// Truncate shrinks the mapping at addr to newSize bytes, freeing the slots
// it no longer spans.
func (r *Region) Truncate(addr, oldSize, newSize uintptr) error {
	if err := checkSize("truncate", newSize); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, err := r.lookup("truncate", addr, oldSize)
	if err != nil {
		return err
	}
	if newSize > oldSize {
		return fmt.Errorf("storage: %s: cannot truncate the mapping at %#x from %d to %d bytes: that is growing", r.name, addr, oldSize, newSize)
	}
	r.drop(addr+newSize, oldSize-newSize)
	keep := slotsFor(newSize)
	r.mark(i+keep, slotsFor(oldSize)-keep, false)
	r.maps[i] = newSize
	return nil
}

// Extend grows the mapping at addr to newSize bytes in place, when the
// slots after it are free.
func (r *Region) Extend(addr, oldSize, newSize uintptr) error {
	if err := checkSize("extend", newSize); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, err := r.lookup("extend", addr, oldSize)
	if err != nil {
		return err
	}
	if newSize < oldSize {
		return fmt.Errorf("storage: %s: cannot extend the mapping at %#x from %d to %d bytes: that is shrinking", r.name, addr, oldSize, newSize)
	}
	have := slotsFor(oldSize)
	if newSize > r.addr+r.size-addr {
		return full("%s: cannot extend the mapping at %#x to %d bytes: the region ends first", r.name, addr, newSize)
	}
	need := slotsFor(newSize)
	if !r.runFree(i+have, need-have) {
		return full("%s: cannot extend the mapping at %#x to %d bytes: the slots after it are taken", r.name, addr, newSize)
	}
	r.mark(i+have, need-have, true)
	r.maps[i] = newSize
	return nil
}

// Release drops the contents of the whole OS pages in [addr, addr+size)
// if the region was made WithRelease, and does nothing otherwise.
func (r *Region) Release(addr, size uintptr) {
	if r.release == nil || addr < r.addr || size > r.addr+r.size-addr {
		return
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		// The memory may belong to a new Region by now.
		return
	}
	r.releasePages(addr, size)
}

// drop releases what an unmap or truncate gives back, if asked to.
func (r *Region) drop(addr, size uintptr) {
	if r.release != nil && size != 0 {
		r.releasePages(addr, size)
	}
}

// releasePages calls r.release with the whole OS pages inside the range.
func (r *Region) releasePages(addr, size uintptr) {
	ps := chunk.OSPageSize()
	start := (addr + ps - 1) &^ (ps - 1)
	end := (addr + size) &^ (ps - 1)
	if start < end {
		r.release(start, end-start)
	}
}

// lookup returns the slot of the live mapping at addr, checking its size.
func (r *Region) lookup(op string, addr, size uintptr) (uintptr, error) {
	if addr < r.addr || addr-r.addr >= r.size {
		return 0, fmt.Errorf("storage: %s: cannot %s %#x: the address is not in the region (%#x..%#x)", r.name, op, addr, r.addr, r.addr+r.size)
	}
	i := (addr - r.addr) >> chunk.Shift
	have, ok := r.maps[i]
	if !ok || addr&(chunk.Size-1) != 0 {
		return 0, fmt.Errorf("storage: %s: cannot %s %#x: no mapping starts there (never mapped, or unmapped already)", r.name, op, addr)
	}
	if size != have {
		return 0, fmt.Errorf("storage: %s: cannot %s %#x as %d bytes: the mapping there is %d bytes", r.name, op, addr, size, have)
	}
	return i, nil
}

// firstFit returns the first run of n free slots.
func (r *Region) firstFit(n uintptr) (uintptr, bool) {
	if n > r.freeSlots {
		return 0, false
	}
	for i := uintptr(0); i+n <= r.slots; {
		w := r.used[i/64] >> (i % 64)
		if w&1 != 0 {
			// Skip the used slots from i on in this word.
			i += uintptr(bits.TrailingZeros64(^w))
			continue
		}
		// Count free slots from i.
		j := i
		for j < i+n && r.used[j/64]&(1<<(j%64)) == 0 {
			j++
		}
		if j == i+n {
			return i, true
		}
		i = j
	}
	return 0, false
}

// runFree reports whether the n slots from i exist and are free.
func (r *Region) runFree(i, n uintptr) bool {
	if i+n > r.slots {
		return false
	}
	for j := i; j < i+n; j++ {
		if r.used[j/64]&(1<<(j%64)) != 0 {
			return false
		}
	}
	return true
}

// mark sets or clears the bits of n slots from i.
func (r *Region) mark(i, n uintptr, used bool) {
	for j := i; j < i+n; j++ {
		if used {
			r.used[j/64] |= 1 << (j % 64)
		} else {
			r.used[j/64] &^= 1 << (j % 64)
		}
	}
	if used {
		r.freeSlots -= n
	} else {
		r.freeSlots += n
	}
}
