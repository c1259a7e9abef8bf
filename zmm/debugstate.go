package zmm

import (
	"sync"
)

// debugState is the Go-side state of a heap in debug mode on chunks (its
// blocks carry debug records: debugchunks.go), beyond what every special
// heap has (special, in heap.go): what catches writes after free
// (poison.go).
type debugState struct {
	// quarantined holds the freed slots set aside after damage was found
	// (slot → bin): free, but on no list, so statistics count them here.
	quarantined map[uintptr]uint32
	// freedRuns are the freed page runs whose fill is not checked yet, by
	// chunk base.
	freedRuns map[uintptr][]freedRun
	// quarantine holds the freed huge mappings kept inaccessible, oldest
	// first: quarantine[:quarantineN], quarantineBytes in all.
	quarantine      [quarantineMaxBlocks]hugeRec
	quarantineN     int
	quarantineBytes uintptr
}

// freedRun is the freed part of a page run whose fill is not checked yet.
type freedRun struct {
	from, to uintptr // the filled bytes [from, to) of the run
	num      uint32  // the Num of its chunk when it was freed
	// The freed block, for reports.
	user, size, site uintptr
}

// The huge quarantine keeps the last quarantineMaxBlocks freed huge
// mappings, up to quarantineMaxBytes of them (poison.go).
const (
	quarantineMaxBlocks = 16
	quarantineMaxBytes  = 1 << 30
)

func newDebugState() *debugState {
	return &debugState{quarantined: map[uintptr]uint32{}, freedRuns: map[uintptr][]freedRun{}}
}

// debugHeaps maps the id of every open heap in debug mode on chunks to its
// *debugState, for the page search (takePages), which knows only the heap
// state.
var debugHeaps sync.Map

func debugStateOf(id uint32) *debugState {
	d, ok := debugHeaps.Load(id)
	if !ok {
		fail(ErrCorrupted, "debug", 0, "zmm: heap %d is marked as a debug heap but has no debug state registered (heap state overwritten?)", id)
	}
	return d.(*debugState)
}
