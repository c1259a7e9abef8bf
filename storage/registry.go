package storage

import (
	"runtime"
	"slices"
	"sync"
	"weak"
)

// regions is the process-wide registry of the ranges open Regions hand out
// (their 2 MiB-aligned parts), so that no two Regions cover the same
// memory: two heaps over the same slots would overwrite each other's chunks.
var regions registry

// registry holds the ranges in address order. They never overlap, so ends
// are in order too and a range meets only a run of neighbours found by a
// binary search. NewRegion and Close are rare: a slice under a mutex is
// enough.
//
// It holds its Regions weakly: a Region dropped without Close is no longer
// open once the garbage collector finds it unreachable (no heap can use it
// then: a heap keeps its storage reachable until it is closed), and its
// entry is dropped when a later add meets it.
type registry struct {
	mu      sync.Mutex
	entries []regionEntry
}

type regionEntry struct {
	start, end uintptr
	region     weak.Pointer[Region]
}

// add registers r over [r.addr, r.addr+r.size), unless the range overlaps
// an open Region. Before refusing, it runs the garbage collector once, so
// that a Region dropped without Close does not stand in the way: this is a
// failure path, and without the collection the answer would depend on when
// the collector last ran.
func (g *registry) add(r *Region) error {
	start, end := r.addr, r.addr+r.size
	for collected := false; ; collected = true {
		g.mu.Lock()
		other := g.overlap(start, end)
		if other == nil {
			g.insert(regionEntry{start, end, weak.Make(r)})
		}
		g.mu.Unlock()
		if other == nil {
			return nil
		}
		if collected {
			lo, hi := max(start, other.addr), min(end, other.addr+other.size)
			return errorOf(ErrOverlap, "storage: %s overlaps %s at %#x..%#x, which is still open (no two regions may cover the same memory: close that one first)",
				r.name, other.name, lo, hi)
		}
		// other is dead here (Go's liveness is precise): the collection
		// may find it unreachable.
		runtime.GC()
	}
}

// overlap returns an open Region that overlaps [start, end), dropping the
// entries of collected Regions it meets.
func (g *registry) overlap(start, end uintptr) *Region {
	// The first entry that ends after start.
	i, _ := slices.BinarySearchFunc(g.entries, start, func(e regionEntry, a uintptr) int {
		if e.end <= a {
			return -1
		}
		return 1
	})
	for i < len(g.entries) && g.entries[i].start < end {
		if r := g.entries[i].region.Value(); r != nil {
			return r
		}
		g.entries = slices.Delete(g.entries, i, i+1)
	}
	return nil
}

// insert adds e in address order, dropping the entries of collected
// Regions so that the slice does not grow with Regions dropped without
// Close.
func (g *registry) insert(e regionEntry) {
	g.entries = slices.DeleteFunc(g.entries, func(e regionEntry) bool { return e.region.Value() == nil })
	i, _ := slices.BinarySearchFunc(g.entries, e.start, func(e regionEntry, a uintptr) int {
		if e.start < a {
			return -1
		}
		return 1
	})
	g.entries = slices.Insert(g.entries, i, e)
}

// remove takes r's range out of the registry: r is closed.
func (g *registry) remove(r *Region) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w := weak.Make(r)
	g.entries = slices.DeleteFunc(g.entries, func(e regionEntry) bool { return e.region == w })
}
