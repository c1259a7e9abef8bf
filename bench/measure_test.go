package bench

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// meter: what the peer benchmarks report beside ns/op, B/op and allocs/op.
//
//	gc-cycles        Go collections during the whole run (all iterations)
//	gc-pause-ns/op   their stop-the-world pause time, per iteration
//	cpu-ns/op        process CPU time (user + system, every thread, so the
//	                 collector's background workers too), per iteration
//	gc-cpu-ns/op     the runtime's estimate of the CPU time the collector
//	                 spent (/cpu/classes/gc/total:cpu-seconds), per iteration;
//	                 the runtime updates it at the end of each cycle and
//	                 counts time on a P, not on a CPU, so on a busy machine
//	                 it can exceed what getrusage reports
//	peak-rss-MiB     the process's peak resident set during the run (VmHWM,
//	                 reset at the start), when the kernel lets it be reset
//
// Collections and pause time are read with ReadMemStats, which stops the
// world: once before the loop (whose first b.Loop call resets the timer)
// and once after it (when the timer has stopped).

type meter struct {
	numGC  uint32
	pause  uint64
	cpu    time.Duration
	cls    cpuClasses
	rssHWM bool // VmHWM was reset at the start
	start  time.Time
}

// startMeter settles the Go heap (a collection, and the freed memory given
// back to the OS, so that one benchmark's garbage is not charged to the
// next and its RSS does not count) and starts the counters.
func startMeter() meter {
	debug.FreeOSMemory()
	return startMeterNoGC()
}

// startMeterNoGC starts the counters without settling the heap first, for
// a benchmark that settled it itself.
func startMeterNoGC() meter {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return meter{
		numGC:  m.NumGC,
		pause:  m.PauseTotalNs,
		cpu:    processCPU(),
		cls:    readCPUClasses(),
		rssHWM: resetPeakRSS(),
		start:  time.Now(),
	}
}

// reading is what a meter measured.
type reading struct {
	gcCycles uint32
	pauseNs  uint64
	maxPause time.Duration // the longest pause (of the last 256 cycles)
	cpu      time.Duration
	gcCPU    float64 // seconds, the runtime's estimate
	// gcFrac is the collector's share of the CPU time the program used
	// (all the runtime's CPU classes but idle), over the cycles that ended
	// during the run, by the runtime's own accounting; 0 without cycles.
	gcFrac    float64
	peakRSS   uint64 // bytes; 0 if unknown
	wall      time.Duration
	peakExact bool // peakRSS is VmHWM since the start, not a sample
}

func (g meter) read() reading {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	r := reading{
		gcCycles: m.NumGC - g.numGC,
		pauseNs:  m.PauseTotalNs - g.pause,
		cpu:      processCPU() - g.cpu,
		wall:     time.Since(g.start),
	}
	cls := readCPUClasses()
	r.gcCPU = cls.gc - g.cls.gc
	if used := (cls.total - cls.idle) - (g.cls.total - g.cls.idle); used > 0 {
		r.gcFrac = r.gcCPU / used
	}
	for i := uint32(0); i < min(r.gcCycles, 256); i++ {
		r.maxPause = max(r.maxPause, time.Duration(m.PauseNs[(m.NumGC-1-i)%256]))
	}
	hwm, rss := procRSS()
	if g.rssHWM {
		r.peakRSS, r.peakExact = hwm, true
	} else {
		r.peakRSS = rss
	}
	return r
}

// report adds the metrics above, per b.N iterations.
func (g meter) report(b *testing.B) reading {
	r := g.read()
	n := float64(max(b.N, 1))
	b.ReportMetric(float64(r.gcCycles), "gc-cycles")
	b.ReportMetric(float64(r.pauseNs)/n, "gc-pause-ns/op")
	b.ReportMetric(float64(r.cpu.Nanoseconds())/n, "cpu-ns/op")
	b.ReportMetric(r.gcCPU*1e9/n, "gc-cpu-ns/op")
	if r.peakRSS > 0 {
		b.ReportMetric(float64(r.peakRSS)/(1<<20), "peak-rss-MiB")
	}
	return r
}

// processCPU is the CPU time of the whole process so far, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuClasses are the runtime's estimates of CPU seconds so far, updated at
// the end of each GC cycle: the collector's, everything's (GOMAXPROCS
// times the wall time) and the idle Ps'.
type cpuClasses struct{ gc, total, idle float64 }

var cpuSamples = []metrics.Sample{
	{Name: "/cpu/classes/gc/total:cpu-seconds"},
	{Name: "/cpu/classes/total:cpu-seconds"},
	{Name: "/cpu/classes/idle:cpu-seconds"},
}

func readCPUClasses() cpuClasses {
	metrics.Read(cpuSamples)
	var v [3]float64
	for i, s := range cpuSamples {
		if s.Value.Kind() == metrics.KindFloat64 {
			v[i] = s.Value.Float64()
		}
	}
	return cpuClasses{v[0], v[1], v[2]}
}

// resetPeakRSS resets the kernel's peak-RSS mark (VmHWM) of this process,
// by writing 5 to /proc/self/clear_refs (Linux 4.0 and later), and reports
// whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// procRSS returns VmHWM and VmRSS of this process in bytes (0 if unknown).
func procRSS() (hwm, rss uint64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		var dst *uint64
		switch {
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &hwm
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &rss
		default:
			continue
		}
		f := bytes.Fields(line[6:])
		if len(f) >= 1 {
			if kb, err := strconv.ParseUint(string(f[0]), 10, 64); err == nil {
				*dst = kb << 10
			}
		}
	}
	return hwm, rss
}
