package main

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gozmm/zmm/trace"
)

var updateDemo = flag.Bool("update-demo", false, "regenerate demo.ztrace.gz from demoTraceRecords")

// TestDemoTrace checks that the embedded demo trace is what the generator
// below makes; with -update-demo it writes it (go generate does that).
func TestDemoTrace(t *testing.T) {
	want := demoTraceRecords()
	if *updateDemo {
		if err := trace.WriteFile("demo.ztrace.gz", &trace.Trace{Records: want}); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote demo.ztrace.gz: %d records", len(want))
		return
	}
	got, err := trace.Read(bytes.NewReader(demoTrace))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Records, want) {
		t.Fatalf("demo.ztrace.gz (%d records) is not what the generator makes (%d records): run go generate ./cmd/zmmstat",
			len(got.Records), len(want))
	}
}

// demoGen writes a PHP-like trace: ids are reused as blocks die, and
// every block gets a lifetime when it is born.
type demoGen struct {
	rng   *rand.Rand
	recs  []trace.Record
	ids   []uint32 // free ids
	next  uint32
	step  int
	death map[int][]uint32 // step → ids that die then
	live  map[uint32]bool
	keep  int // percent of blocks that live until the request ends
}

func (g *demoGen) alloc(size uint64) uint32 {
	var id uint32
	if n := len(g.ids); n > 0 {
		id, g.ids = g.ids[n-1], g.ids[:n-1]
	} else {
		id, g.next = g.next, g.next+1
	}
	g.recs = append(g.recs, trace.Record{Op: trace.OpAlloc, ID: id, Size: size})
	g.live[id] = true
	return id
}

func (g *demoGen) free(id uint32) {
	if !g.live[id] {
		return
	}
	g.recs = append(g.recs, trace.Record{Op: trace.OpFree, ID: id})
	delete(g.live, id)
	g.ids = append(g.ids, id)
}

func (g *demoGen) realloc(id uint32, size uint64) {
	g.recs = append(g.recs, trace.Record{Op: trace.OpRealloc, ID: id, Size: size})
}

// dieIn schedules id's free after n steps (never, for n < 0: it lives to
// the request's end).
func (g *demoGen) dieIn(id uint32, n int) {
	if n >= 0 {
		g.death[g.step+n] = append(g.death[g.step+n], id)
	}
}

func (g *demoGen) tick() {
	g.step++
	for _, id := range g.death[g.step] {
		g.free(id)
	}
	delete(g.death, g.step)
}

func (g *demoGen) end() {
	g.recs = append(g.recs, trace.Record{Op: trace.OpRequestEnd})
	g.ids, g.next = g.ids[:0], 0
	clear(g.live)
	clear(g.death)
}

// size draws a PHP-like block size: mostly short strings, zvals and hash
// tables, some arrays' buckets and objects, a few page runs.
func (g *demoGen) size() uint64 {
	r := g.rng.IntN(100)
	switch {
	case r < 38:
		return uint64(16 + g.rng.IntN(48)) // short strings, zvals
	case r < 50:
		return 56 // a HashTable
	case r < 58:
		return 320 // 8 buckets of a packed array
	case r < 78:
		return uint64(64 + g.rng.IntN(192)) // objects, longer strings
	case r < 90:
		return uint64(256 + g.rng.IntN(768))
	case r < 98:
		return uint64(1024 + g.rng.IntN(2048))
	}
	return uint64(4096 + g.rng.IntN(12288)) // page runs: buffers
}

// lifetime draws how many steps a block lives: most die young, some live
// for a while, a few until the request ends (-1).
func (g *demoGen) lifetime() int {
	switch r := g.rng.IntN(100); {
	case r < g.keep:
		return -1
	case r < 60:
		return 1 + g.rng.IntN(40)
	}
	return 40 + g.rng.IntN(2500)
}

func demoTraceRecords() []trace.Record {
	g := &demoGen{rng: rand.New(rand.NewPCG(0x7a6d6d, 6)), death: map[int][]uint32{}, live: map[uint32]bool{}}
	const requests = 5
	for req := range requests {
		last := req == requests-1
		steps := 2000 + g.rng.IntN(1000)
		g.keep = 12
		if last {
			// The last request builds a big page: more of it stays.
			steps, g.keep = 11000, 25
			// The last request reads a file whole: a huge block.
			g.dieIn(g.alloc(5<<19+12345), -1)
		}
		if req == 2 {
			g.dieIn(g.alloc(3<<20), 700) // a big temporary: a huge block
		}
		for range steps {
			g.tick()
			id := g.alloc(g.size())
			g.dieIn(id, g.lifetime())
			if g.rng.IntN(100) == 0 {
				// A growing buffer or array: doubled until it is done.
				b := g.alloc(128)
				size := uint64(128)
				for range 2 + g.rng.IntN(6) {
					size *= 2
					g.realloc(b, size)
				}
				g.dieIn(b, g.lifetime())
			}
		}
		g.end()
	}
	return g.recs
}
