package hooks

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"weak"

	"github.com/gozmm/zmm/zmm"
)

// chain is the hooks attached to one heap, the first attached first. The
// heap calls, for each of Alloc, Free and Realloc, the handler of the last
// hook that has one; a hook passes the call on to the handler of the hook
// below it that has one, or to base.
type chain struct {
	heap    *zmm.Heap
	builtin zmm.Handlers // the heap's own code (zmm.Heap.Builtin)
	links   []*link
	// base is what the heap had before the first hook came (CustomHandlers):
	// hadBase says whether it had handlers at all; a nil field is the heap's
	// own code. It comes back when the last hook leaves.
	base    zmm.Handlers
	hadBase bool
}

// link is a hook's place in a chain; each hook type embeds one. It is zero
// while the hook is detached.
type link struct {
	chain *chain
	// own are the hook's handlers; a nil field passes the call on as it is.
	own zmm.Handlers
	// next is where own passes calls on: the handlers below the hook, with
	// no nil field. Handlers read it at each call, so that re-linking the
	// chain reaches hooks that are already installed.
	next zmm.Handlers
}

// chains finds a heap's chain. Both sides are weak: a chain is kept alive
// by its hooks and by the handlers installed in its heap, and a heap by
// its owner. So a heap dropped with hooks still attached is collected with
// its chain, and its entry is deleted by a cleanup.
var chains struct {
	sync.Mutex
	m map[weak.Pointer[zmm.Heap]]weak.Pointer[chain]
}

// chainOf returns h's chain, making an empty one if it has none.
func chainOf(h *zmm.Heap) *chain {
	key := weak.Make(h)
	chains.Lock()
	defer chains.Unlock()
	old, known := chains.m[key]
	if c := old.Value(); c != nil {
		return c
	}
	if chains.m == nil {
		chains.m = map[weak.Pointer[zmm.Heap]]weak.Pointer[chain]{}
	}
	if !known {
		runtime.AddCleanup(h, forgetHeap, key)
	}
	c := &chain{heap: h, builtin: h.Builtin()}
	chains.m[key] = weak.Make(c)
	return c
}

func forgetHeap(key weak.Pointer[zmm.Heap]) {
	chains.Lock()
	delete(chains.m, key)
	chains.Unlock()
}

// attach puts the hook on top of h's chain with the handlers own. It
// panics if the hook is attached already, and with h's *zmm.Error if h
// refuses handlers (a closed heap), leaving the chain as it was.
func (l *link) attach(h *zmm.Heap, what string, own zmm.Handlers) {
	if l.chain != nil {
		panic(fmt.Sprintf("zmm/hooks: %s already attached to a heap; Detach it first", what))
	}
	c := chainOf(h)
	if len(c.links) == 0 {
		c.base, c.hadBase = h.CustomHandlers()
	}
	l.chain, l.own = c, own
	c.links = append(c.links, l)
	if err := zmm.Try(c.install); err != nil {
		c.remove(l)
		panic(err)
	}
}

// detach takes the hook out of its chain, wherever it stands; it does
// nothing if the hook is not attached.
func (l *link) detach() {
	c := l.chain
	if c == nil {
		return
	}
	c.remove(l)
	// A closed heap refuses handlers, and needs none.
	_ = zmm.Try(c.install)
}

// heap is the heap the hook is attached to.
func (l *link) heap() *zmm.Heap { return l.chain.heap }

func (c *chain) remove(l *link) {
	c.links = slices.DeleteFunc(c.links, func(x *link) bool { return x == l })
	*l = link{}
}

// install links every hook to the handlers below it and gives the heap
// the chain's top; with no hook left, the heap gets back what it had
// before the first.
func (c *chain) install() {
	if len(c.links) == 0 {
		base, had := c.base, c.hadBase
		c.base, c.hadBase = zmm.Handlers{}, false
		if had {
			c.heap.SetHandlers(base)
		} else {
			c.heap.RestoreHandlers()
		}
		return
	}
	top := c.base
	for _, l := range c.links {
		l.next = over(top, c.builtin)
		top = over(l.own, top)
	}
	top.Reset = c.reset
	c.heap.SetHandlers(top)
}

// over returns hs, with the calls it leaves nil served by below.
func over(hs, below zmm.Handlers) zmm.Handlers {
	if hs.Alloc == nil {
		hs.Alloc = below.Alloc
	}
	if hs.Free == nil {
		hs.Free = below.Free
	}
	if hs.Realloc == nil {
		hs.Realloc = below.Realloc
	}
	return hs
}

// reset tells every hook, the last attached first, then the handlers
// below them, that the heap is being reset.
func (c *chain) reset() {
	for i := len(c.links) - 1; i >= 0; i-- {
		if r := c.links[i].own.Reset; r != nil {
			r()
		}
	}
	if r := c.base.Reset; r != nil {
		r()
	}
}
