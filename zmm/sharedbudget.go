package zmm

import (
	"sync/atomic"
	"unsafe"
)

// sharedBudget is a Shared allocator's memory limit and the bytes its heaps
// have mapped (their RealUsage summed), in the allocator's table on a cache
// line of its own. A heap takes bytes from it before it maps them (admit,
// limit.go), so the limit is exact at the granularity of a chunk or a huge
// block whatever the heaps do at the same moment, and gives them back when
// it unmaps. The peak is kept here too, so that RealPeakUsage is the
// allocator's, not a sum of the heaps' peaks.
type sharedBudget struct {
	real, peak, limit uintptr
}

func budgetAt(addr uintptr) *sharedBudget { return (*sharedBudget)(ptr(addr)) }

// take takes n bytes if the limit allows them.
func (b *sharedBudget) take(n uintptr) bool {
	for {
		used := atomic.LoadUintptr(&b.real)
		limit := atomic.LoadUintptr(&b.limit)
		if used > limit || n > limit-used {
			return false
		}
		if atomic.CompareAndSwapUintptr(&b.real, used, used+n) {
			for p := atomic.LoadUintptr(&b.peak); used+n > p && !atomic.CompareAndSwapUintptr(&b.peak, p, used+n); {
				p = atomic.LoadUintptr(&b.peak)
			}
			return true
		}
	}
}

// give gives n bytes back.
func (b *sharedBudget) give(n uintptr) { atomic.AddUintptr(&b.real, -n) }

func (b *sharedBudget) limitNow() uintptr { return atomic.LoadUintptr(&b.limit) }

// budgetSize is the budget's share of the table: a cache line.
const budgetSize = 64

var _ [budgetSize - unsafe.Sizeof(sharedBudget{})]byte
