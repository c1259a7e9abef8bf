package fuzz

// FuzzDebugOverflow: the programs of FuzzOps on a debug heap, plus
// injected corruption (opcode opsMiscCorrupt): one byte of a live block's
// tail guard (up to 8 bytes past its requested size, always inside its
// class) or head guard (the 8 bytes before it) is changed. The next Free,
// Realloc or BlockSize of that block, or the next Check, must report
// ErrCorrupted naming the block's address, its size and the damage; the
// byte is then repaired and the program goes on, and every other block
// must be intact.

import "testing"

func FuzzDebugOverflow(f *testing.F) {
	for _, s := range opsDebugSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		opsExec(t, data, true, nil)
	})
}

// opsDebugSeeds are FuzzDebugOverflow's seed programs: corruption found by
// every operation, on every kind of block, and FuzzOps' programs.
func opsDebugSeeds() []opsSeed {
	return []opsSeed{
		{"corrupt", opsSeedCorrupt().b},
		{"corrupt-churn", opsSeedCorruptChurn().b},
		{"bins", opsSeedBins().b},
		{"realloc-paths", opsSeedReallocPaths().b},
		{"limits", opsSeedLimits().b},
		{"huge-cache", opsSeedHugeCache().b},
	}
}

// Positions for Corrupt: tail k (k bytes past the requested size) and head
// k (k bytes before the user pointer, 1..8).
func opsTail(k int) byte { return byte(k << 1) }
func opsHead(k int) byte { return byte((k-1)<<1 | 1) }

// opsSeedCorrupt corrupts the head and the tail of small, large and huge
// blocks and has each found by Free, BlockSize, Realloc, Check and the
// check at Reset.
func opsSeedCorrupt() *opsProg {
	p := &opsProg{}
	p.alloc(opsSmall(10, 0))                    // #0 small
	p.alloc(opsLarge(3, 7))                     // #1 large
	p.alloc(opsHugeEdge(0))                     // #2 huge
	p.alloc(opsSmall(20, 0))                    // #3 small
	p.corrupt(0, opsTail(0), 1).free(0)         // Free: tail (small)
	p.corrupt(0, opsHead(1), 0x80).blockSize(0) // BlockSize: head (large)
	p.corrupt(1, opsTail(7), 0xFF)              // huge, tail
	p.realloc(1, opsHugeMiB(3))                 // Realloc: tail (huge)
	p.corrupt(2, opsHead(8), 3).check()         // Check: head (small)
	p.corrupt(0, opsTail(3), 0).check()         // Check: tail (large)
	p.corrupt(1, opsHead(2), 9).free(1)         // Free: head (huge)
	p.corrupt(0, opsTail(5), 7).blockSize(0)    // BlockSize: tail (large)
	p.corrupt(1, opsHead(4), 1)                 // small, head
	p.realloc(1, opsSmall(3, 0))                // Realloc: head
	p.corrupt(0, opsTail(1), 2).corrupt(1, opsHead(3), 2)
	p.reset() // both found by the check before Reset
	p.alloc(opsSmall(25, 0)).corrupt(0, opsTail(0), 0x40).resize(0, 200)
	return p
}

// opsSeedCorruptChurn mixes corruption with allocations around the
// corrupted blocks, so that detection and repair leave the neighbours
// intact.
func opsSeedCorruptChurn() *opsProg {
	p := &opsProg{}
	for b := 4; b < 30; b += 5 {
		p.alloc(opsSmall(b, 0)).alloc(opsSmall(b, 1))
	}
	for i := 0; i < 12; i += 2 {
		p.corrupt(byte(i), opsTail(i%8), byte(i+1))
		p.corrupt(byte(i+1), opsHead(1+i%8), byte(i+1))
	}
	p.alloc(opsLarge(2, 0)).alloc(opsTiny(0))
	p.free(0).free(0).blockSize(3).realloc(4, opsLarge(1, 1))
	p.check()
	p.gc()
	return p
}
