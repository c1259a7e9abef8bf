//go:build goexperiment.arenas

package bench

// The arena variants of the peer workloads and of the trace replay, built
// only with the arena experiment:
//
//	GOEXPERIMENT=arenas go test ./bench -run XXX -bench 'Peers|Replay'
//
// They appear as alloc=arena beside the other allocators.

import (
	"arena"

	"github.com/gozmm/zmm/bench/peers"
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
)

func init() {
	arenaPeers.request = arenaRequest
	arenaPeers.growth = arenaGrowth
	replayPeers = append(replayPeers, replayPeer{
		name:      "arena",
		requestOK: true,
		run: func(t *trace.Trace) (replay.Result, func(), error) {
			res, err := peers.Arena(t, nil)
			return res, func() {}, err
		},
	})
}

// arenaRequest runs core_test.go's request in a fresh arena: every block is
// an arena.MakeSlice, a free only drops the reference, and the arena is
// freed at the end.
func arenaRequest(p *requestPlan, live [][]byte) {
	a := arena.NewArena()
	sizes := p.sizes
	for _, v := range p.ops {
		if v >= 0 {
			n := int(sizes[v])
			live[v] = arena.MakeSlice[byte](a, n, n)
		} else {
			live[^v] = nil
		}
	}
	clear(live) // no reference may outlive the arena
	a.Free()
}

// arenaGrowth doubles a buffer from 16 bytes to 1 MiB in a fresh arena,
// copying at each step as Realloc would, and frees the arena.
func arenaGrowth() {
	a := arena.NewArena()
	buf := arena.MakeSlice[byte](a, 16, 16)
	for size := 32; size <= growthMax; size *= 2 {
		nb := arena.MakeSlice[byte](a, size, size)
		copy(nb, buf)
		buf = nb
	}
	buf[growthMax-1] = 1
	a.Free()
}
