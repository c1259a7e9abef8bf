//go:build goexperiment.arenas

package peers

import (
	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
)

func init() {
	arenaPeers = append(arenaPeers, peer{"arena", func(tr *trace.Trace) (replay.Result, error) {
		return Arena(tr, nil)
	}})
}
