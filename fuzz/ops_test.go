package fuzz

// FuzzOps: programs of heap operations (see model_test.go for the
// encoding) on a normal heap, checked against the model after every step.
//
// The committed corpus (testdata/fuzz/FuzzOps/seed-*, and the same inputs
// added with f.Add) is written by opsSeeds; regenerate the files with
//
//	ZMM_WRITE_SEEDS=1 go test ./fuzz -run TestOpsCorpusFiles
//
// TestSeedsReachEverything proves that the seeds reach every reachable bin,
// large and huge blocks, every realloc path and the limit's outcomes.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gozmm/zmm/bins"
)

func FuzzOps(f *testing.F) {
	for _, s := range opsSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		opsExec(t, data, false, nil)
	})
}

// opsSeeds are FuzzOps' seed programs.
func opsSeeds() []opsSeed {
	return []opsSeed{
		{"bins", opsSeedBins().b},
		{"realloc-paths", opsSeedReallocPaths().b},
		{"huge-cache", opsSeedHugeCache().b},
		{"limits", opsSeedLimits().b},
		{"gc-empty-chunk", opsSeedGCEmptyChunk().b},
		{"misc", opsSeedMisc().b},
		{"edges", opsSeedEdges().b},
	}
}

// opsSeedBins allocates 0..16 bytes and every bin size, one less and one
// more, then frees some and checks some.
func opsSeedBins() *opsProg {
	p := &opsProg{}
	for n := 0; n <= 16; n++ {
		p.alloc(opsTiny(n))
	}
	for b := 0; b < bins.NumBins; b++ {
		for d := -1; d <= 1; d++ {
			p.alloc(opsSmall(b, d))
		}
	}
	for i := 0; i < 30; i++ {
		p.free(byte(i * 3))
	}
	p.blockSize(5).blockSize(40).check()
	return p
}

// opsSeedReallocPaths takes every realloc path once.
func opsSeedReallocPaths() *opsProg {
	p := &opsProg{}
	p.alloc(opsSmall(10, -1))      // #0: 111 bytes, bin 10 (112)
	p.realloc(0, opsSmall(10, 0))  // small same bin
	p.realloc(0, opsSmall(6, 0))   // small shrink, moves (56)
	p.realloc(0, opsSmall(19, 0))  // small grow (512)
	p.resize(0, 0)                 // to 0 bytes: small shrink (16)
	p.resize(0, 255)               // to 17 bytes: small grow (24)
	p.realloc(0, opsLarge(2, 100)) // small -> large
	p.resize(0, 128)               // large same size
	p.realloc(0, opsLarge(1, 100)) // large shrink in place
	p.realloc(0, opsLarge(3, 100)) // large grow in place (the pages after are free)
	p.alloc(opsLarge(1, 0))        // #1: right after #0
	p.realloc(0, opsLarge(5, 0))   // large grow, blocked by #1: moves
	p.realloc(0, opsSmall(12, 0))  // large -> small
	p.alloc(opsLarge(4, 10))       // #2
	p.realloc(2, opsHugeMiB(3))    // large -> huge
	p.realloc(2, opsHugeMiB(5))    // huge grow (mremap in place or moved)
	p.realloc(2, opsHugeMiB(2.5))  // huge shrink in place
	p.resize(2, 128)               // huge same size
	p.realloc(2, opsLarge(100, 3)) // huge -> large
	p.alloc(opsHugeEdge(0))        // #3: MaxLargeSize+1
	p.realloc(3, opsSmall(20, 1))  // huge -> small
	p.realloc(0, opsHugeEdge(3))   // small -> huge
	p.reallocNil(opsSmall(5, 0))   // #4
	p.resize(0, 200)               // huge grow by 1 MiB
	p.alloc(opsLarge(200, 0))      // #5
	p.realloc(5, opsHugeMiB(1.5))  // large grow past MaxLargeSize (in place)
	p.free(0).free(0).free(0).free(0).free(0).free(0)
	return p
}

// opsSeedHugeCache churns huge blocks through the cache: reuse whole and
// trimmed, eviction of the oldest by bytes (64 MiB) and by slots (32),
// Reset with live huge blocks.
func opsSeedHugeCache() *opsProg {
	p := &opsProg{}
	p.alloc(opsHugeMiB(4)).alloc(opsHugeMiB(3)).alloc(opsHugeMiB(2.5)).alloc(opsHugeEdge(0)).alloc(opsHugeMiB(3.5))
	p.free(0).free(0).free(0) // cache: 4, 3, 2.5
	p.alloc(opsHugeMiB(2.2))  // from the cache: 2.5, whole (slack under a quarter)
	p.alloc(opsHugeMiB(1.5))  // from the cache: 3, trimmed
	p.free(0).free(0)         // cache: 4, 1 and 3.5 (live: 2.2, 1.5)
	p.alloc(opsHugeMiB(5))    // mapped
	p.free(0)                 // cache: 4, 1, 3.5, 2.2 (live: 1.5, 5)
	p.alloc(opsHugeEdge(7))   // 8 MiB, mapped
	p.alloc(opsHugeMiB(3))    // the cached 3.5, whole
	p.alloc(opsSmall(9, 0))   // a small one in between
	p.reset()                 // the live huge blocks go to the cache
	p.alloc(opsHugeMiB(2)).alloc(opsHugeMiB(6))
	p.realloc(0, opsHugeMiB(2.75)) // grows past the cached mappings
	p.gc()
	p.alloc(opsHugeMiB(2))
	p.free(0).free(0).free(0)
	// Eviction by bytes: 7 MiB mappings cached (the first takes the cached
	// 8 MiB whole), then three 8 MiB ones that no cached mapping fits: the
	// third passes 64 MiB.
	for range 7 {
		p.alloc(opsHugeMiB(7))
	}
	for range 7 {
		p.free(0)
	}
	p.alloc(opsHugeEdge(7)).alloc(opsHugeEdge(7)).alloc(opsHugeEdge(7))
	p.free(0).free(0).free(0)
	// Eviction by slots: 40 blocks of just over MaxLargeSize, the first
	// ones cut from the cached 7 MiB mappings, then all freed.
	for range 40 {
		p.alloc(opsHugeEdge(0))
	}
	for range 40 {
		p.free(0)
	}
	return p
}

// opsSeedLimits meets the limit: huge and page allocations refused, a huge
// block served only after the collection, SetLimit refused and accepted
// below the usage.
func opsSeedLimits() *opsProg {
	p := &opsProg{}
	p.alloc(opsSmall(10, 0))         // #0, for the check after a failure
	p.setLimit(opsLimitNoChunk)      // RealUsage + 2 MiB - 1
	p.allocRefused(opsHugeMiB(3))    // huge: refused
	p.alloc(opsLargeEdge(10))        // #1: MaxLargeSize, half the main chunk
	p.allocRefused(opsLargeEdge(10)) // the bin run took a page: needs a chunk
	p.free(1)                        //
	p.alloc(opsLarge(8, 0))          // #1 fits in the main chunk
	p.setLimit(128 + 72)             // RealUsage + 2.25 MiB
	p.alloc(opsHugeEdge(2))          // #2: 2 MiB fits
	p.free(2)                        // cached
	p.setLimit(opsLimitTooLow)       // refused
	p.setLimit(128 + 32)             // RealUsage + 1 MiB, 2 MiB of it cached
	p.alloc(opsHugeMiB(3))           // #2: fits only once the cache is dropped
	p.free(2)                        // 3 MiB cached
	p.setLimit(opsLimitLowest)       // accepted: drops the huge cache
	p.allocRefused(opsHugeEdge(0))   // refused
	p.alloc(opsSmall(3, 0))          // #2 fits in the main chunk
	p.setLimit(opsLimitUnlimited)    //
	p.alloc(opsLargeEdge(10))        // #3: half the main chunk
	p.alloc(opsLargeEdge(10))        // #4: a chunk of its own
	p.free(4)                        // cached, or unmapped
	p.free(3)                        //
	p.setLimit(100)                  // below the usage
	p.realloc(1, opsHugeMiB(2.5))    // large -> huge near the limit
	p.setLimit(opsLimitNoChunk)      //
	p.realloc(1, opsHugeMiB(4.5))    // huge grow: refused
	p.realloc(0, opsLarge(200, 0))   // a page run elsewhere, or refused
	p.gc()
	return p
}

// opsSeedGCEmptyChunk fills the main chunk so that bin runs land in other
// chunks; freeing their blocks leaves chunks with nothing but free runs,
// which GC, and the collection the limit triggers, unmap. The largest page
// run is 255 pages, so filling a chunk takes two.
func opsSeedGCEmptyChunk() *opsProg {
	p := &opsProg{}
	p.alloc(opsLarge(255, 255)).alloc(opsLarge(255, 255)) // #0 #1 fill the main chunk
	p.alloc(opsSmall(16, 0))                              // #2 a bin run in chunk 2
	p.alloc(opsSmall(16, 0))                              // #3
	p.free(2).free(2)                                     // chunk 2: a free run only
	p.gc()                                                // unmaps chunk 2
	p.alloc(opsSmall(16, 0))                              // #2 chunk 2 again (pages 1-5)
	p.alloc(opsLarge(250, 255))                           // #3 pages 6-255
	p.alloc(opsSmall(17, 0))                              // #4 a bin run at pages 256-258
	p.alloc(opsLarge(253, 255))                           // #5 fills chunk 2
	p.free(2).free(2).free(2).free(2)                     // free runs only, no gap of 255 pages
	p.alloc(opsHugeMiB(1.5)).free(2)                      // a cached huge mapping
	p.setLimit(opsLimitNoChunk)                           // no new chunk fits...
	p.alloc(opsLarge(255, 255))                           // #2 ...until the collection unmaps chunk 2 and the cache
	p.alloc(opsSmall(16, 0))                              // #3
	p.setLimit(opsLimitUnlimited)                         //
	p.reset()                                             // chunks to the cache
	p.alloc(opsLarge(255, 255)).alloc(opsLarge(255, 255)) // the main chunk
	p.alloc(opsLarge(255, 255))                           // from the cache
	p.setLimit(opsLimitLowest)                            //
	p.free(2).free(1).free(0)                             //
	return p
}

// opsSeedMisc covers Calloc, SafeAlloc, Strdup, Strndup, the overflow
// probes, BlockSize, ResetPeak, Check, GC, Reset and the operations that
// find no block.
func opsSeedMisc() *opsProg {
	p := &opsProg{}
	p.handlers()                       // everything below but the tail goes through handlers
	p.add(opsFree, 0)                  // Free(nil)
	p.add(opsRealloc, 0, 0, 5, 1)      // no block: Realloc(nil, 48)
	p.n++                              //
	p.add(opsBlockSize, 0)             //
	p.calloc(opsSmall(7, 0), 0)        // elements of 1 byte
	p.calloc(opsLarge(3, 5), 6)        // of 24 bytes
	p.calloc(opsHugeEdge(0), 4)        // huge
	p.calloc(opsTiny(0), 2)            //
	p.calloc(opsTiny(1), opsEOverflow) //
	p.safeAlloc(opsSmall(15, 1), 7)    // elements of 100 bytes
	p.safeAlloc(opsLarge(2, 0), 3)     //
	p.safeAlloc(opsTiny(0), opsEOverflow)
	p.safeAlloc(opsTiny(0), opsEAllocOverflow)
	p.safeAlloc(opsTiny(0), opsEReallocOverflow)
	p.strdup(opsSmall(9, 0), 0)     // Strdup
	p.strdup(opsSmall(9, 0), 1+4*5) // Strndup of a longer string
	p.strdup(opsLarge(2, 9), 2)     // Strndup with n past the end
	p.strdup(opsTiny(0), 3)         // the empty string
	p.strdup(opsHugeEdge(1), 0)     // huge
	p.blockSize(0).blockSize(3).blockSize(7)
	p.resetPeak().check()
	p.free(1).free(2)
	p.gc()
	p.reset()
	p.alloc(opsSmall(11, 0))
	p.handlers() // off again: the fast paths serve the blocks made under them
	p.free(0).alloc(opsSmall(11, 0))
	p.add(opsMiscCorrupt, 0, 0, 0) // Check on a normal heap
	return p
}

// opsSeedEdges allocates every large and huge edge size.
func opsSeedEdges() *opsProg {
	p := &opsProg{}
	for i := range opsLargeEdges {
		p.alloc(opsLargeEdge(i))
	}
	for i := range opsHugeEdges {
		p.alloc(opsHugeEdge(i))
		p.free(p.last(0))
	}
	p.alloc(opsLarge(64, 255)).alloc(opsLarge(200, 254)).alloc(opsLarge(255, 255))
	return p
}

// TestOpsSizeSelectors checks the seed builders against the decoder.
func TestOpsSizeSelectors(t *testing.T) {
	for b := 0; b < bins.NumBins; b++ {
		for d := -1; d <= 1; d++ {
			s := opsSmall(b, d)
			if got := opsDecodeSize(s[0], s[1], s[2]); got != uintptr(int(bins.Size[b])+d) {
				t.Errorf("opsSmall(%d, %d) decodes to %d", b, d, got)
			}
		}
	}
	for pages := 1; pages <= opsMaxPages; pages++ {
		for _, last := range []byte{0, 100, 254, 255} {
			s := opsLarge(pages, last)
			got := opsDecodeSize(s[0], s[1], s[2])
			if modelClass(got) != uintptr(pages)*4096 && got != bins.MaxSize+1 {
				t.Fatalf("opsLarge(%d, %d) decodes to %d", pages, last, got)
			}
		}
	}
	for _, mib := range []float64{2, 2.5, 3, 5, 7.9} {
		s := opsHugeMiB(mib)
		got := opsDecodeSize(s[0], s[1], s[2])
		if want := uintptr(mib * (1 << 20)); got > want || got+112 <= want {
			t.Errorf("opsHugeMiB(%v) decodes to %d", mib, got)
		}
	}
	// Every selector decodes to a size in range.
	for s0 := 0; s0 < 256; s0++ {
		for s1 := 0; s1 < 256; s1 += 3 {
			for s2 := 0; s2 < 256; s2 += 5 {
				if got := opsDecodeSize(byte(s0), byte(s1), byte(s2)); got > opsMaxHuge {
					t.Fatalf("selector %d %d %d decodes to %d", s0, s1, s2, got)
				}
			}
		}
	}
}

// The realloc paths the seeds must take (paths' names, opsRun.path).
var opsWantPaths = []string{
	"Realloc(nil)",
	"small same bin", "small shrink move", "small grow", "small->large", "small->huge",
	"large shrink", "large same size", "large grow in place", "large grow moved", "large->small", "large->huge",
	"large grow past MaxLargeSize",
	"huge shrink", "huge same size", "huge grow", "huge->large", "huge->small",
}

var opsWantEvents = []string{
	"limit: huge refused", "limit: page refused",
	"limit: huge served after the collection", "limit: page served after the collection",
	"SetLimit refused", "SetLimit below usage accepted", "SetLimit dropped the huge cache",
	"after failure: small block served", "overflow",
	"huge cache: reused whole", "huge cache: reused trimmed",
	"huge cache: evicted for a slot", "huge cache: evicted for bytes",
}

func TestSeedsReachEverything(t *testing.T) {
	t.Run("FuzzOps", func(t *testing.T) {
		hits := opsNewHits()
		for _, s := range opsSeeds() {
			t.Run(s.name, func(t *testing.T) { opsExec(t, s.data, false, hits) })
		}
		// Bin 0 (8 bytes) is never used: requests below 16 bytes get 16,
		// so that every free slot holds a link and its check word.
		if hits.bins[0] != 0 {
			t.Errorf("bin 0 (8 bytes) served %d blocks; requests below 16 bytes must get 16", hits.bins[0])
		}
		for b := 1; b < bins.NumBins; b++ {
			if hits.bins[b] == 0 {
				t.Errorf("no seed allocates from bin %d (%d bytes)", b, bins.Size[b])
			}
		}
		if hits.large == 0 || hits.huge == 0 {
			t.Errorf("large blocks %d, huge blocks %d: want some of each", hits.large, hits.huge)
		}
		for _, p := range opsWantPaths {
			if hits.paths[p] == 0 {
				t.Errorf("no seed takes the realloc path %q", p)
			}
		}
		for _, e := range opsWantEvents {
			if hits.events[e] == 0 {
				t.Errorf("no seed reaches %q", e)
			}
		}
		t.Logf("bins %v, large %d, huge %d\npaths %v\nevents %v", hits.bins, hits.large, hits.huge, hits.paths, hits.events)
	})
	t.Run("FuzzDebugOverflow", func(t *testing.T) {
		hits := opsNewHits()
		for _, s := range opsDebugSeeds() {
			t.Run(s.name, func(t *testing.T) { opsExec(t, s.data, true, hits) })
		}
		// A debug block holds a 32-byte record and at least 8 bytes of
		// tail guard: bins below 40 bytes are never used.
		for b := 0; b < bins.NumBins; b++ {
			if (bins.Size[b] >= 40) != (hits.bins[b] > 0) {
				t.Errorf("bin %d (%d bytes) served %d debug blocks", b, bins.Size[b], hits.bins[b])
			}
		}
		if hits.large == 0 || hits.huge == 0 {
			t.Errorf("large blocks %d, huge blocks %d: want some of each", hits.large, hits.huge)
		}
		for _, op := range []string{"Free", "Realloc", "BlockSize", "Check"} {
			for _, where := range []string{"head", "tail"} {
				if e := "detected by " + op + ": " + where; hits.events[e] == 0 {
					t.Errorf("no seed reaches %q", e)
				}
			}
		}
		t.Logf("bins %v, large %d, huge %d\npaths %v\nevents %v", hits.bins, hits.large, hits.huge, hits.paths, hits.events)
	})
}

// TestOpsCorpusFiles checks that the committed seed files are the seeds
// the code builds; with ZMM_WRITE_SEEDS=1 it writes them.
func TestOpsCorpusFiles(t *testing.T) {
	write := os.Getenv("ZMM_WRITE_SEEDS") == "1"
	for target, seeds := range map[string][]opsSeed{"FuzzOps": opsSeeds(), "FuzzDebugOverflow": opsDebugSeeds()} {
		dir := filepath.Join("testdata", "fuzz", target)
		if write {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var names []string
		for _, s := range seeds {
			name := "seed-" + s.name
			names = append(names, name)
			path := filepath.Join(dir, name)
			want := opsCorpusFile(s.data)
			if write {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s is missing or stale (%v): regenerate with ZMM_WRITE_SEEDS=1 go test ./fuzz -run TestOpsCorpusFiles", path, err)
			}
			if len(s.data) > 1024 {
				t.Errorf("seed %s/%s is %d bytes; keep seeds small", target, s.name, len(s.data))
			}
		}
		// No stale seed files from programs that no longer exist.
		old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
		for _, f := range old {
			if !slices.Contains(names, filepath.Base(f)) {
				if write {
					_ = os.Remove(f)
				} else {
					t.Errorf("%s is not a seed of %s any more: regenerate with ZMM_WRITE_SEEDS=1", f, target)
				}
			}
		}
	}
	if write {
		t.Log(fmt.Sprintf("wrote %d + %d seed files", len(opsSeeds()), len(opsDebugSeeds())))
	}
}
