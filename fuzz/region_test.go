package fuzz

// FuzzRegion runs programs of Map, Unmap, Truncate and Extend on a
// storage.Region against a model of its 2 MiB slots: every mapping must be
// where first fit puts it, never overlap another, fail exactly when no run
// of free slots holds it, and a bad call (wrong size, an address that
// starts no mapping, growing by Truncate) must fail and change nothing.
// Every input ends by closing the region, which must fail while a mapping
// is live and succeed once all are unmapped; the next input makes a new
// region over the same memory, which only a closed region allows.
//
// A program is a byte string: an opcode byte (low 3 bits pick the
// operation) followed by its arguments, 2 bytes for a size and 1 byte to
// pick a live mapping. Missing bytes read as 0.

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/storage"
)

// regionSlots is the size of the fuzzed region, in 2 MiB slots.
const regionSlots = 12

// regionMemory is a range mapped once for every input: a Region does not
// touch its memory unless made WithRelease, so the pages are never faulted
// in.
var regionMemory = sync.OnceValues(func() (uintptr, error) {
	p, err := chunk.Map(regionSlots*chunk.Size, chunk.Size)
	return uintptr(p), err
})

type regionRun struct {
	t      *testing.T
	r      *storage.Region
	base   uintptr
	data   []byte
	pos    int
	used   [regionSlots]bool
	maps   map[uintptr]uintptr // slot → size
	starts []uintptr           // live slots, in mapping order
}

func (p *regionRun) byte() byte {
	if p.pos >= len(p.data) {
		return 0
	}
	b := p.data[p.pos]
	p.pos++
	return b
}

// size decodes a mapping size: whole OS pages, from one page to a little
// more than the region, skewed towards the sizes around slot boundaries.
func (p *regionRun) size() uintptr {
	v := uintptr(p.byte())<<8 | uintptr(p.byte())
	ps := chunk.OSPageSize()
	slots := v >> 12 % (regionSlots + 2)
	pages := (v & 0xfff) % (chunk.Size / ps)
	switch v >> 10 & 3 {
	case 0: // just past a slot boundary
		pages = 1
	case 1: // exactly on one
		pages = 0
	}
	return max(slots*chunk.Size+pages*ps, ps)
}

func slotsOf(size uintptr) uintptr { return (size + chunk.Size - 1) >> chunk.Shift }

// firstFit is the model's placement.
func (p *regionRun) firstFit(n uintptr) (uintptr, bool) {
	for i := uintptr(0); i+n <= regionSlots; i++ {
		if p.free(i, n) {
			return i, true
		}
	}
	return 0, false
}

func (p *regionRun) free(i, n uintptr) bool {
	if i+n > regionSlots {
		return false
	}
	for k := i; k < i+n; k++ {
		if p.used[k] {
			return false
		}
	}
	return true
}

func (p *regionRun) mark(i, n uintptr, used bool) {
	for k := i; k < i+n; k++ {
		p.used[k] = used
	}
}

// pick returns a live mapping's slot, or false when there is none.
func (p *regionRun) pick() (uintptr, bool) {
	b := p.byte()
	if len(p.starts) == 0 {
		return 0, false
	}
	return p.starts[int(b)%len(p.starts)], true
}

func (p *regionRun) addr(i uintptr) uintptr { return p.base + i<<chunk.Shift }

func (p *regionRun) step(op byte) {
	t := p.t
	switch op & 7 {
	case 0, 1: // Map
		size := p.size()
		got, err := p.r.Map(size)
		n := slotsOf(size)
		want, ok := p.firstFit(n)
		if !ok {
			if err == nil {
				t.Fatalf("Map(%d) = %#x, want an error: no %d free slots in a row", size, got, n)
			}
			return
		}
		if err != nil {
			t.Fatalf("Map(%d): %v, want slot %d", size, err, want)
		}
		if got != p.addr(want) {
			t.Fatalf("Map(%d) = %#x, want %#x (slot %d, first fit)", size, got, p.addr(want), want)
		}
		p.mark(want, n, true)
		p.maps[want] = size
		p.starts = append(p.starts, want)
	case 2: // Unmap
		i, ok := p.pick()
		if !ok {
			return
		}
		if err := p.r.Unmap(p.addr(i), p.maps[i]); err != nil {
			t.Fatalf("Unmap(%#x, %d): %v", p.addr(i), p.maps[i], err)
		}
		p.mark(i, slotsOf(p.maps[i]), false)
		delete(p.maps, i)
		p.starts = slices.DeleteFunc(p.starts, func(s uintptr) bool { return s == i })
	case 3: // Truncate
		i, ok := p.pick()
		if !ok {
			return
		}
		old := p.maps[i]
		size := min(p.size(), old)
		if err := p.r.Truncate(p.addr(i), old, size); err != nil {
			t.Fatalf("Truncate(%#x, %d, %d): %v", p.addr(i), old, size, err)
		}
		p.mark(i+slotsOf(size), slotsOf(old)-slotsOf(size), false)
		p.maps[i] = size
	case 4: // Extend
		i, ok := p.pick()
		if !ok {
			return
		}
		old := p.maps[i]
		size := max(p.size(), old)
		err := p.r.Extend(p.addr(i), old, size)
		have, need := slotsOf(old), slotsOf(size)
		if !p.free(i+have, need-have) {
			if err == nil {
				t.Fatalf("Extend(%#x, %d, %d) succeeded over taken slots or past the end", p.addr(i), old, size)
			}
			return
		}
		if err != nil {
			t.Fatalf("Extend(%#x, %d, %d): %v, but slots %d..%d are free", p.addr(i), old, size, err, i+have, i+need-1)
		}
		p.mark(i+have, need-have, true)
		p.maps[i] = size
	case 5: // misuse: a wrong size, or growing by Truncate / shrinking by Extend
		i, ok := p.pick()
		if !ok {
			return
		}
		old, a := p.maps[i], p.addr(i)
		ps := chunk.OSPageSize()
		if p.r.Unmap(a, old+ps) == nil || p.r.Truncate(a, old, old+ps) == nil {
			t.Fatalf("misuse of the mapping at %#x (%d bytes) was accepted", a, old)
		}
		if old > ps && p.r.Extend(a, old, old-ps) == nil {
			t.Fatalf("Extend shrinking the mapping at %#x was accepted", a)
		}
	case 6: // misuse: an address that starts no mapping
		k := uintptr(p.byte()) % (regionSlots + 2)
		a := p.addr(k) + uintptr(p.byte())*chunk.OSPageSize()
		if _, live := p.maps[k]; live && a == p.addr(k) {
			return
		}
		if p.r.Unmap(a, chunk.Size) == nil {
			t.Fatalf("Unmap(%#x) of no mapping was accepted", a)
		}
	case 7: // the whole region, which fails unless it is empty
		_, err := p.r.Map(regionSlots * chunk.Size)
		if empty := len(p.maps) == 0; (err == nil) != empty {
			t.Fatalf("Map of the whole region: err %v with %d mappings", err, len(p.maps))
		}
		if err == nil {
			p.mark(0, regionSlots, true)
			p.maps[0] = regionSlots * chunk.Size
			p.starts = append(p.starts, 0)
		}
	}
}

// check compares the region's counts with the model's.
func (p *regionRun) check(op byte) {
	free := 0
	for _, u := range p.used {
		if !u {
			free++
		}
	}
	if got, want := p.r.Free(), uintptr(free)*chunk.Size; got != want {
		p.t.Fatalf("after op %d: Free() = %d, want %d", op&7, got, want)
	}
	if got := p.r.Mappings(); got != len(p.maps) {
		p.t.Fatalf("after op %d: Mappings() = %d, want %d", op&7, got, len(p.maps))
	}
}

func FuzzRegion(f *testing.F) {
	f.Add([]byte{0, 0x20, 0, 0, 0x10, 0, 3, 0, 0, 0x10, 0, 4, 0, 0x60, 0, 2, 0, 7})
	f.Add([]byte{0, 0xc0, 0, 0, 0x30, 5, 4, 1, 0x80, 0, 5, 0, 6, 3, 0, 2, 1, 7})
	f.Add([]byte{7, 2, 0, 0, 0x10, 0, 0, 0x10, 0, 0, 0x10, 0, 2, 1, 0, 0x20, 0, 4, 0, 0x40, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		base, err := regionMemory()
		if err != nil {
			t.Skipf("cannot map the region's memory: %v", err)
		}
		r, err := storage.NewRegion(base, regionSlots*chunk.Size)
		if err != nil {
			t.Fatal(err)
		}
		p := &regionRun{t: t, r: r, base: r.Addr(), data: data, maps: map[uintptr]uintptr{}}
		for steps := 0; p.pos < len(data) && steps < 500; steps++ {
			op := p.byte()
			p.step(op)
			p.check(op)
		}
		p.close()
	})
}

// close unmaps what is left and closes the region.
func (p *regionRun) close() {
	if len(p.starts) != 0 {
		if err := p.r.Close(); !errors.Is(err, storage.ErrInUse) {
			p.t.Fatalf("Close with %d live mappings: %v, want ErrInUse", len(p.starts), err)
		}
	}
	for _, i := range p.starts {
		if err := p.r.Unmap(p.addr(i), p.maps[i]); err != nil {
			p.t.Fatalf("Unmap(%#x, %d) before closing: %v", p.addr(i), p.maps[i], err)
		}
	}
	if err := p.r.Close(); err != nil {
		p.t.Fatalf("Close with no live mapping: %v", err)
	}
}
