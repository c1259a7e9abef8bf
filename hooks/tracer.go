package hooks

import (
	"fmt"
	"io"
	"sync"
	"unsafe"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/zmm"
)

// Tracer records the allocation traffic of a heap as an allocation trace
// (docs/TRACE_FORMAT.md, version 1): every Alloc (and Calloc, Strdup, …) as an
// alloc, every Free as a free, every Realloc as a realloc, and every Reset
// as a request end. `zmmstat replay` and bench/ replay the trace against
// zmm, the Go runtime, and the C allocators of bench/c, so a program's own
// traffic can be compared across allocators.
//
// Blocks get dense ids, reused after they are freed, as the format asks.
// A Free or Realloc of a block allocated before the tracer was attached is
// passed on but not recorded as such: a Realloc of one is recorded as the
// alloc of a new block, a Free of one is left out, so the trace stays
// valid. The tracer keeps a Go map from live block to id: tracing costs Go
// heap memory in proportion to the live blocks.
type Tracer struct {
	link
	mu      sync.Mutex // guards w and err against Close from another goroutine
	w       *trace.Writer
	err     error
	ids     map[uintptr]uint32
	freeIDs []uint32 // ids free for reuse
	nextID  uint32   // the next never-used id
}

// NewTracer writes a trace header to w and returns a tracer that appends a
// record per call once attached. Close flushes it.
func NewTracer(w io.Writer) (*Tracer, error) {
	tw, err := trace.NewWriter(w)
	if err != nil {
		return nil, err
	}
	return &Tracer{w: tw, ids: map[uintptr]uint32{}}, nil
}

// Attach starts tracing h: the tracer goes on top of the hooks attached to
// h (see the package doc). It panics if the tracer is attached already.
func (t *Tracer) Attach(h *zmm.Heap) {
	t.attach(h, "Tracer", zmm.Handlers{Alloc: t.alloc, Free: t.free, Realloc: t.realloc, Reset: t.reset})
}

func (t *Tracer) alloc(size uintptr) unsafe.Pointer {
	p := t.next.Alloc(size)
	t.record(trace.OpAlloc, t.newID(uintptr(p)), size)
	return p
}

func (t *Tracer) free(p unsafe.Pointer) {
	t.next.Free(p)
	if id, ok := t.ids[uintptr(p)]; ok {
		delete(t.ids, uintptr(p))
		t.freeIDs = append(t.freeIDs, id)
		t.record(trace.OpFree, id, 0)
	}
}

func (t *Tracer) realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	q := t.next.Realloc(p, size)
	id, ok := t.ids[uintptr(p)]
	if !ok || p == nil {
		t.record(trace.OpAlloc, t.newID(uintptr(q)), size)
		return q
	}
	delete(t.ids, uintptr(p))
	t.ids[uintptr(q)] = id
	t.record(trace.OpRealloc, id, size)
	return q
}

func (t *Tracer) reset() {
	clear(t.ids)
	t.freeIDs, t.nextID = t.freeIDs[:0], 0
	t.record(trace.OpRequestEnd, 0, 0)
}

// Detach stops tracing and takes the tracer out of the heap's hooks,
// wherever it stands among them; it does nothing if the tracer is not
// attached. The trace stays open: attach again, to the same heap or another, to go on.
// Blocks still live are forgotten; their later frees are not recorded.
func (t *Tracer) Detach() {
	t.detach()
	clear(t.ids)
}

func (t *Tracer) newID(p uintptr) uint32 {
	var id uint32
	if n := len(t.freeIDs); n > 0 {
		id, t.freeIDs = t.freeIDs[n-1], t.freeIDs[:n-1]
	} else {
		id = t.nextID
		t.nextID++
	}
	t.ids[p] = id
	return id
}

// record appends one record; the first error sticks and stops recording.
func (t *Tracer) record(op trace.Op, id uint32, size uintptr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil && t.w != nil {
		if err := t.w.Write(trace.Record{Op: op, ID: id, Size: uint64(size)}); err != nil {
			t.err = fmt.Errorf("zmm/hooks: trace record %d: %w", t.w.Records(), err)
		}
	}
}

// Records returns how many records the trace has. Safe for concurrent use.
func (t *Tracer) Records() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w == nil {
		return 0
	}
	return t.w.Records()
}

// Err returns the first error met while writing, if any. Safe for
// concurrent use.
func (t *Tracer) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Close detaches the tracer (as Detach does, wherever it stands among the
// heap's hooks) and flushes the trace; it returns the first error met
// while writing. The underlying writer is not closed. Closing again does
// nothing more and returns the same error.
func (t *Tracer) Close() error {
	t.Detach()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w != nil {
		if err := t.w.Flush(); err != nil && t.err == nil {
			t.err = err
		}
		t.w = nil
	}
	return t.err
}
