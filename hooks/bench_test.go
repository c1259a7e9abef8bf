package hooks_test

import (
	"io"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/hooks"
	"github.com/gozmm/zmm/zmm"
)

// BenchmarkPair measures what an alloc+free pair of 64 bytes costs with no
// handlers (the inlined fast path), with handlers that only pass calls on
// (the price of leaving the fast path), and with each shipped hook.
func BenchmarkPair(b *testing.B) {
	cases := []struct {
		name   string
		attach func(b *testing.B, h *zmm.Heap)
	}{
		{"none", func(*testing.B, *zmm.Heap) {}},
		{"passthrough", func(_ *testing.B, h *zmm.Heap) {
			next := h.Builtin()
			h.SetHandlers(zmm.Handlers{
				Alloc: func(size uintptr) unsafe.Pointer { return next.Alloc(size) },
				Free:  func(p unsafe.Pointer) { next.Free(p) },
			})
		}},
		{"faults", func(_ *testing.B, h *zmm.Heap) { (&hooks.FaultInjector{}).Attach(h) }},
		{"counter", func(_ *testing.B, h *zmm.Heap) { hooks.NewCounter().Attach(h) }},
		{"tracer", func(b *testing.B, h *zmm.Heap) {
			tr, err := hooks.NewTracer(io.Discard)
			require.NoError(b, err)
			tr.Attach(h)
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h, err := zmm.New()
			require.NoError(b, err)
			defer h.Close()
			c.attach(b, h)
			b.ReportAllocs()
			for b.Loop() {
				h.Free(h.Alloc(64))
			}
		})
	}
}
