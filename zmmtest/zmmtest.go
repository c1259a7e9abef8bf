// Package zmmtest gives a test a debug heap that fails the test if the test
// leaks a block or corrupts the heap.
//
//	func TestParser(t *testing.T) {
//		h := zmmtest.New(t)
//		p := parse(h, input) // code under test allocates from h
//		...
//	} // at cleanup: h.Check() and h.Leaks() must be empty, else t.Errorf with the report
//
// Options given to New apply after the debug defaults, so
// zmmtest.New(t, zmm.WithAllocMode(zmm.ModeGuard)) gives a debug heap whose
// blocks each end against a guard page.
package zmmtest

import (
	"strings"
	"testing"
	"time"

	"github.com/gozmm/zmm/zmm"
)

// New returns a debug heap named after the test. When the test ends it
// checks the heap (guards, free fill, free lists) and reports every block
// still live as a leak, in the Zend MM's format, failing the test with
// t.Errorf; then it closes the heap.
func New(t testing.TB, opts ...zmm.Option) *zmm.Heap {
	t.Helper()
	all := append([]zmm.Option{zmm.WithDebug(true), zmm.WithLeakReport(nil), zmm.WithName(t.Name())}, opts...)
	h, err := zmm.New(all...)
	if err != nil {
		t.Fatalf("zmmtest: %v", err)
	}
	t.Cleanup(func() {
		defer h.Close()
		if err := h.Check(); err != nil {
			t.Errorf("zmmtest: %v", err)
		}
		if leaks := h.Leaks(); len(leaks) > 0 {
			var report strings.Builder
			_ = zmm.WriteLeakReport(&report, leaks, t.Name(), time.Now())
			t.Errorf("zmmtest: the test leaked %d block(s):\n%s", len(leaks), report.String())
		}
	})
	return h
}
