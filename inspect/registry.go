package inspect

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/gozmm/zmm/zmm"
)

// The built-in heap names: zmm's process-wide heaps, always registered.
const (
	Default    = "default"
	Persistent = "persistent"
)

type registered struct {
	h  *zmm.Heap
	mu sync.Locker
}

var registry struct {
	mu     sync.Mutex
	heaps  map[string]registered
	shared map[string]*zmm.Shared
}

// Register makes h visible to the handler under name, replacing a heap
// registered before under the same name. A Heap has one owner at a time:
// mu must be the lock that serializes every use of h, and the handler holds
// it while it takes a snapshot (a short pause, in proportion to the heap's
// size). The heap must be unregistered before it is closed.
//
// Register panics on an empty name, on "default" or "persistent" (always
// there), and on a nil heap or lock.
func Register(name string, h *zmm.Heap, mu sync.Locker) {
	switch {
	case name == "":
		panic("inspect: Register with an empty name")
	case name == Default || name == Persistent:
		panic(fmt.Sprintf("inspect: Register(%q): the name is reserved for zmm's own heap", name))
	case h == nil:
		panic(fmt.Sprintf("inspect: Register(%q) with a nil heap", name))
	case mu == nil:
		panic(fmt.Sprintf("inspect: Register(%q) with a nil lock: pass the lock that serializes the heap's use", name))
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.heaps == nil {
		registry.heaps = map[string]registered{}
	}
	registry.heaps[name] = registered{h, mu}
}

// RegisterShared makes a shared allocator visible to the handler: the
// whole of it as name (its heaps merged, Shared.Snapshot), and each heap
// as name/0, name/1, … (one per heap it has made so far). No lock
// is needed: a snapshot holds the allocator's heaps for its length, as
// a.GC does. The allocator must be unregistered before it is closed.
//
// RegisterShared panics on an empty or reserved name and on a nil
// allocator.
func RegisterShared(name string, a *zmm.Shared) {
	switch {
	case name == "":
		panic("inspect: RegisterShared with an empty name")
	case name == Default || name == Persistent:
		panic(fmt.Sprintf("inspect: RegisterShared(%q): the name is reserved for zmm's own heap", name))
	case a == nil:
		panic(fmt.Sprintf("inspect: RegisterShared(%q) with a nil allocator", name))
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.shared == nil {
		registry.shared = map[string]*zmm.Shared{}
	}
	registry.shared[name] = a
}

// Unregister removes the heap or shared allocator registered under name,
// if any.
func Unregister(name string) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	delete(registry.heaps, name)
	delete(registry.shared, name)
}

// sharedHeap resolves name/i to a registered shared allocator and i.
func sharedHeap(name string) (*zmm.Shared, int, bool) {
	slash := strings.LastIndexByte(name, '/')
	if slash < 0 {
		return nil, 0, false
	}
	i, err := strconv.Atoi(name[slash+1:])
	if err != nil || i < 0 {
		return nil, 0, false
	}
	registry.mu.Lock()
	a, ok := registry.shared[name[:slash]]
	registry.mu.Unlock()
	return a, i, ok
}

// Heaps returns the names of the heaps the handler serves: "default",
// "persistent", then the registered ones in order (a shared allocator as
// name, and its heaps as name/0, name/1, …).
func Heaps() []string {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	names := make([]string, 0, 2+len(registry.heaps))
	for name := range registry.heaps {
		names = append(names, name)
	}
	for name, a := range registry.shared {
		names = append(names, name)
		for i := range a.SharedStats().Heaps {
			names = append(names, fmt.Sprintf("%s/%d", name, i))
		}
	}
	slices.SortFunc(names, cmp.Compare)
	return append([]string{Default, Persistent}, names...)
}

// ErrUnknownHeap is returned (wrapped) by Snapshot for a name that is not
// registered.
var ErrUnknownHeap = fmt.Errorf("inspect: unknown heap")

// Snapshot takes a snapshot of the heap known as name, under its lock. The
// snapshot's Name is the name the heap is known by here.
func Snapshot(name string) (*zmm.Snapshot, error) {
	switch name {
	case Default:
		return zmm.DefaultSnapshot(), nil
	case Persistent:
		return zmm.PersistentSnapshot(), nil
	}
	registry.mu.Lock()
	r, ok := registry.heaps[name]
	whole := registry.shared[name]
	registry.mu.Unlock()
	if whole != nil {
		var s *zmm.Snapshot
		if err := zmm.Try(func() { s = whole.Snapshot() }); err != nil {
			return nil, fmt.Errorf("inspect: heap %q: %w", name, err)
		}
		s.Name = name
		return s, nil
	}
	if !ok {
		if a, i, shared := sharedHeap(name); shared {
			s, err := a.HeapSnapshot(i)
			if err != nil {
				return nil, fmt.Errorf("inspect: heap %q: %w", name, err)
			}
			s.Name = name
			return s, nil
		}
		return nil, fmt.Errorf("%w %q", ErrUnknownHeap, name)
	}
	var s *zmm.Snapshot
	err := func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		return zmm.Try(func() { s = r.h.Snapshot() })
	}()
	if err != nil {
		return nil, fmt.Errorf("inspect: heap %q: %w", name, err)
	}
	s.Name = name
	return s, nil
}
