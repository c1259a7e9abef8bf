//go:build goexperiment.arenas

package peers

import (
	"github.com/gozmm/zmm/bench/replay"
	"github.com/gozmm/zmm/bench/trace"
)

func init() {
	arenaPeers = append(arenaPeers, peer{"arena", func(tr *trace.Trace) (replay.Result, error) {
		return Arena(tr, nil)
	}})
}
