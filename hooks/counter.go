package hooks

import (
	"sync"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// Counts are the statistics of one component. Bytes are the sizes the
// program asked for, not the size classes the heap rounded them up to.
type Counts struct {
	Allocs, Frees, Reallocs uint64
	// Bytes is the total asked for by allocations and by the growth of
	// reallocations.
	Bytes uint64
	// Live is what the component's blocks hold now; PeakLive its highest
	// value. A block belongs to the component that allocated it, whoever
	// frees it; Reset frees every block.
	Live, PeakLive uint64
}

// NoComponent names the traffic made outside any Enter.
const NoComponent = "(none)"

// Counter is a counting observer: it attributes each call on a heap to the
// component running at the time (Enter), the analog of per-extension
// memory statistics. It keeps a Go map from live block to owner: counting
// costs Go heap memory in proportion to the live blocks.
type Counter struct {
	link
	mu      sync.Mutex // guards stats against Stats from other goroutines
	current *Counts
	byName  map[string]*Counts
	owners  map[uintptr]owned
}

type owned struct {
	c    *Counts
	size uint64
}

// NewCounter returns a counter with no component entered.
func NewCounter() *Counter {
	c := &Counter{byName: map[string]*Counts{}, owners: map[uintptr]owned{}}
	c.current = c.component(NoComponent)
	return c
}

func (c *Counter) component(name string) *Counts {
	k := c.byName[name]
	if k == nil {
		k = &Counts{}
		c.byName[name] = k
	}
	return k
}

// Enter makes name the component that the heap's traffic is counted for,
// until the returned function is called, which brings back the previous
// one: defer c.Enter("session")().
func (c *Counter) Enter(name string) (leave func()) {
	c.mu.Lock()
	prev := c.current
	c.current = c.component(name)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.current = prev
		c.mu.Unlock()
	}
}

// Attach starts counting h's calls: the counter goes on top of the hooks
// attached to h (see the package doc). It panics if the counter is
// attached already.
func (c *Counter) Attach(h *zmm.Heap) {
	c.attach(h, "Counter", zmm.Handlers{Alloc: c.alloc, Free: c.free, Realloc: c.realloc, Reset: c.reset})
}

func (c *Counter) alloc(size uintptr) unsafe.Pointer {
	p := c.next.Alloc(size)
	c.mu.Lock()
	k := c.current
	k.Allocs++
	k.Bytes += uint64(size)
	c.grow(k, uint64(size))
	c.owners[uintptr(p)] = owned{k, uint64(size)}
	c.mu.Unlock()
	return p
}

func (c *Counter) free(p unsafe.Pointer) {
	c.next.Free(p)
	c.mu.Lock()
	c.current.Frees++
	if o, ok := c.owners[uintptr(p)]; ok {
		delete(c.owners, uintptr(p))
		o.c.Live -= o.size
	}
	c.mu.Unlock()
}

func (c *Counter) realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer {
	q := c.next.Realloc(p, size)
	c.mu.Lock()
	k := c.current
	k.Reallocs++
	o, ok := c.owners[uintptr(p)]
	if !ok || p == nil {
		o = owned{k, 0}
	}
	delete(c.owners, uintptr(p))
	if n := uint64(size); n > o.size {
		k.Bytes += n - o.size
	}
	o.c.Live -= o.size
	c.grow(o.c, uint64(size))
	c.owners[uintptr(q)] = owned{o.c, uint64(size)}
	c.mu.Unlock()
	return q
}

func (c *Counter) reset() {
	c.mu.Lock()
	clear(c.owners)
	for _, k := range c.byName {
		k.Live = 0
	}
	c.mu.Unlock()
}

func (c *Counter) grow(k *Counts, n uint64) {
	k.Live += n
	k.PeakLive = max(k.PeakLive, k.Live)
}

// Detach stops counting and takes the counter out of the heap's hooks,
// wherever it stands among them; it does nothing if the counter is not
// attached. The statistics stay; blocks still live are forgotten.
func (c *Counter) Detach() {
	c.detach()
	c.mu.Lock()
	clear(c.owners)
	c.mu.Unlock()
}

// Stats returns a copy of every component's counts. Safe for concurrent
// use.
func (c *Counter) Stats() map[string]Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Counts, len(c.byName))
	for name, k := range c.byName {
		out[name] = *k
	}
	return out
}
