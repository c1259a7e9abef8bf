package inspect

import "github.com/gozmm/zmm/zmm"

// BlockTotals are how many blocks a heap has live and the bytes their
// callers asked for.
type BlockTotals struct {
	Count int    `json:"count"`
	Bytes uint64 `json:"bytes"`
}

// TotalsOf adds up the blocks a snapshot lists.
func TotalsOf(s *zmm.Snapshot) BlockTotals {
	t := BlockTotals{Count: len(s.Blocks)}
	for _, b := range s.Blocks {
		t.Bytes += b.Size
	}
	return t
}

// Summary is a snapshot as the handler serves it. Asked for no blocks
// (blocks=0), the handler leaves the block list out, which is most of a
// debug heap's snapshot, and keeps its totals in BlocksLeftOut, so that a
// report of the heap's summary still counts them. Its JSON is the
// snapshot's, with a "blocks_left_out" object added when blocks were left
// out: a reader of zmm.Snapshot reads it as a snapshot without blocks.
type Summary struct {
	*zmm.Snapshot
	BlocksLeftOut *BlockTotals `json:"blocks_left_out,omitempty"`
}

// LiveBlocks returns the totals of the heap's live blocks: those left out,
// or those listed. They are zero for a heap that keeps no blocks (a normal
// heap outside debug mode).
func (s *Summary) LiveBlocks() BlockTotals {
	if s.BlocksLeftOut != nil {
		return *s.BlocksLeftOut
	}
	return TotalsOf(s.Snapshot)
}

// withoutBlocks returns s as a summary without its block list.
func withoutBlocks(s *zmm.Snapshot) *Summary {
	totals := TotalsOf(s)
	s.Blocks = nil
	return &Summary{Snapshot: s, BlocksLeftOut: &totals}
}
