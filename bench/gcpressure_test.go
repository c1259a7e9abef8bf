package bench

// GCPressure: a service holding tens of millions of small live objects
// (-gcp-objects, 16 million by default, 32 to 64 bytes each) while a
// steady workload replaces random ones (free the old object, allocate a
// new one of a random size, write into it). The objects live either in a
// zmm heap (their addresses kept in a []uintptr, memory the collector does
// not scan) or on the Go heap (a [][]byte). What differs is the collector's
// work: with the objects on the Go heap every cycle marks all of them.
//
// extra=none is the workload alone; extra=go64B adds a 64-byte Go
// allocation per operation on both sides, the garbage every Go service
// makes besides, so that collections happen with zmm too and show what
// each costs when the live set is off the heap. (zmm's own operations
// cause no collection: with extra=none its gc-cycles must be 0.)
//
// Setup (filling the objects) takes seconds and is not timed. With the
// objects on the Go heap a collection comes after about as many bytes of
// new objects as are live, so the Go side needs a few seconds of
// operations per collection: run with -benchtime=10s (or -benchtime=100000000x)
// to see several; -benchtime=1x only checks that it works.
//
// Besides the meter's metrics (measure_test.go) it reports gc-cpu-s (the
// runtime's estimate of the collector's CPU seconds in all), gc-cpu-frac
// (the collector's share of the CPU time the program used, over the cycles
// that ended in the run, both by the runtime's accounting) and
// gc-pause-max-ns (the longest pause). cpu-ns/op (getrusage) is the
// measured total.

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"testing"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

var gcpObjects = flag.Int("gcp-objects", 16_000_000, "live objects held by BenchmarkGCPressure")

const (
	gcpMinSize = 32
	gcpMaxSize = 64
	gcpOps     = 1 << 20 // the pre-generated operations, replayed in a loop
)

// gcpOp replaces object idx by a new one of size bytes.
type gcpOp struct {
	idx  uint32
	size uint32
}

func gcpOpsFor(n int) []gcpOp {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	ops := make([]gcpOp, gcpOps)
	for i := range ops {
		ops[i] = gcpOp{r.Uint32N(uint32(n)), gcpMinSize + r.Uint32N(gcpMaxSize-gcpMinSize+1)}
	}
	return ops
}

// gcpSizes draws the sizes of the initial objects.
func gcpSizes(n int) func() uint32 {
	r := rand.New(rand.NewPCG(seed, uint64(n)+1))
	return func() uint32 { return gcpMinSize + r.Uint32N(gcpMaxSize-gcpMinSize+1) }
}

// gcpSink keeps the extra Go garbage of an operation reachable until the
// next one.
var gcpSink []byte

var gcpExtras = []struct {
	name    string
	garbage bool
}{{"none", false}, {"go64B", true}}

// ptrAt turns a handle kept in a []uintptr back into the pointer.
func ptrAt(u uintptr) unsafe.Pointer { return unsafe.Add(unsafe.Pointer(nil), u) }

// zmmHold allocates n objects in h and returns their addresses.
func zmmHold(h *zmm.Heap, n int) []uintptr {
	next := gcpSizes(n)
	handles := make([]uintptr, n)
	for i := range handles {
		p := h.Alloc(uintptr(next()))
		*(*uint64)(p) = uint64(i)
		handles[i] = uintptr(p)
	}
	return handles
}

// goHold allocates n objects on the Go heap.
func goHold(n int) [][]byte {
	next := gcpSizes(n)
	objs := make([][]byte, n)
	for i := range objs {
		q := make([]byte, next())
		binary.LittleEndian.PutUint64(q, uint64(i))
		objs[i] = q
	}
	return objs
}

// zmmReplace runs operation i (of ops, cyclically) on the zmm objects.
func zmmReplace(h *zmm.Heap, handles []uintptr, ops []gcpOp, i int, garbage bool) {
	op := ops[i&(gcpOps-1)]
	h.Free(ptrAt(handles[op.idx]))
	p := h.Alloc(uintptr(op.size))
	*(*uint64)(p) = uint64(i)
	handles[op.idx] = uintptr(p)
	if garbage {
		gcpSink = make([]byte, 64)
	}
}

// goReplace is zmmReplace on the Go heap.
func goReplace(objs [][]byte, ops []gcpOp, i int, garbage bool) {
	op := ops[i&(gcpOps-1)]
	q := make([]byte, op.size)
	binary.LittleEndian.PutUint64(q, uint64(i))
	objs[op.idx] = q
	if garbage {
		gcpSink = make([]byte, 64)
	}
}

func reportPressure(b *testing.B, m meter) {
	r := m.report(b)
	b.ReportMetric(float64(r.maxPause.Nanoseconds()), "gc-pause-max-ns")
	b.ReportMetric(r.gcCPU, "gc-cpu-s")
	b.ReportMetric(r.gcFrac, "gc-cpu-frac")
	gcpSink = nil
}

func BenchmarkGCPressure(b *testing.B) {
	n := *gcpObjects
	if n <= 0 {
		b.Fatalf("-gcp-objects=%d", n)
	}
	ops := gcpOpsFor(n)
	b.Run("objects="+countName(n), func(b *testing.B) {
		b.Run("alloc=zmm", func(b *testing.B) {
			h := newHeap(b)
			defer h.Close()
			handles := zmmHold(h, n)
			for _, ex := range gcpExtras {
				b.Run("extra="+ex.name, func(b *testing.B) {
					b.ReportAllocs()
					m := startMeter()
					i := 0
					for b.Loop() {
						zmmReplace(h, handles, ops, i, ex.garbage)
						i++
					}
					reportPressure(b, m)
				})
			}
			runtime.KeepAlive(handles)
		})
		b.Run("alloc=go", func(b *testing.B) {
			objs := goHold(n)
			for _, ex := range gcpExtras {
				b.Run("extra="+ex.name, func(b *testing.B) {
					b.ReportAllocs()
					m := startMeter()
					i := 0
					for b.Loop() {
						goReplace(objs, ops, i, ex.garbage)
						i++
					}
					reportPressure(b, m)
				})
			}
			runtime.KeepAlive(objs)
			objs = nil
			debug.FreeOSMemory()
		})
	})
}

// countName prints 16000000 as 16M, 1500 as 1.5k.
func countName(n int) string {
	switch {
	case n >= 1e6 && n%1e5 == 0:
		return trimFloat(float64(n)/1e6) + "M"
	case n >= 1e3 && n%100 == 0:
		return trimFloat(float64(n)/1e3) + "k"
	}
	return fmt.Sprint(n)
}

func trimFloat(f float64) string { return fmt.Sprintf("%g", f) }

// TestGCPressureRun runs the GC-pressure workload on a few objects.
func TestGCPressureRun(t *testing.T) {
	const n = 2000
	ops := gcpOpsFor(n)
	h := newHeap(t)
	defer h.Close()
	handles := zmmHold(h, n)
	objs := goHold(n)
	for i := range 2 * n {
		zmmReplace(h, handles, ops, i, i%2 == 0)
		goReplace(objs, ops, i, i%2 == 0)
	}
	for i, u := range handles {
		if s := h.BlockSize(ptrAt(u)); s < gcpMinSize || s > gcpMaxSize {
			t.Fatalf("object %d: block of %d bytes", i, s)
		}
		if got, want := *(*uint64)(ptrAt(u)), binary.LittleEndian.Uint64(objs[i]); got != want {
			t.Fatalf("object %d holds %d in zmm, %d on the Go heap", i, got, want)
		}
	}
	for _, c := range []struct {
		n    int
		want string
	}{{16_000_000, "16M"}, {12_500_000, "12.5M"}, {1500, "1.5k"}, {999, "999"}, {1_000_001, "1000001"}} {
		if got := countName(c.n); got != c.want {
			t.Errorf("countName(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	gcpSink = nil
}
