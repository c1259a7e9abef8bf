// Command ztracestat validates allocation traces with package trace's checks
// and describes their shape: the counts of each op, the live blocks and
// bytes at their peak, the bytes asked for, and a histogram of the sizes.
// bench/capture/capture.sh runs it on every trace it captures and writes
// its table to STATS.md.
//
//	ztracestat [-json] [-work DIR] TRACE...
//
// A trace that breaks the format is reported with the record's index (the
// messages of package trace), and the exit status is 1. Without -json the
// output is a Markdown table, one row per trace; with -json it is one JSON
// object per trace.
//
// With -work DIR, each trace NAME.ztrace.gz is checked against what the
// capture left in DIR: NAME.zend.json (zcapture --zend-peaks: the program's
// own memory_get_peak_usage() per request, run on the real Zend MM) and
// NAME.replay-zend.json (bench/c's replay-zend on the trace: the Zend MM's
// peak usage when it serves exactly the trace's calls). A trace that saw
// every call of the program makes the two peaks agree; the table shows
// their ratio.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gozmm/zmm/trace"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ztracestat:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ztracestat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "one JSON object per trace instead of a Markdown table")
	work := fs.String("work", "", "directory with each trace's NAME.zend.json and NAME.replay-zend.json (the realism check)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: ztracestat [-json] [-work DIR] TRACE...")
	}
	var all []Stats
	for _, path := range fs.Args() {
		s, err := statFile(path)
		if err != nil {
			return err
		}
		if *work != "" {
			if err := s.addPeaks(*work); err != nil {
				return err
			}
		}
		all = append(all, s)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, s := range all {
			if err := enc.Encode(s); err != nil {
				return err
			}
		}
		return nil
	}
	_, err := io.WriteString(stdout, Table(all))
	return err
}

// Buckets are the upper bounds of the size histogram's classes, chosen
// along the Zend MM's lines: its small bins end at 3072 bytes, its large
// runs at 2 MiB − 4 KiB, and huge blocks lie above.
var Buckets = []struct {
	Max   uint64
	Label string
}{
	{16, "≤16"},
	{64, "≤64"},
	{256, "≤256"},
	{1024, "≤1K"},
	{3072, "≤3K"},
	{2<<20 - 4096, "large"},
	{trace.MaxSize, "huge"},
}

// Stats describes one trace.
type Stats struct {
	Trace       string `json:"trace"`
	Records     int    `json:"records"`
	Allocs      int    `json:"allocs"`
	Frees       int    `json:"frees"`
	Reallocs    int    `json:"reallocs"`
	RequestEnds int    `json:"request_ends"`
	// MaxLive is the most blocks live at once, PeakLiveBytes the most
	// bytes (sizes as recorded), over all requests.
	MaxLive       int    `json:"max_live"`
	PeakLiveBytes uint64 `json:"peak_live_bytes"`
	// Bytes sums the sizes of allocs and reallocs: the traffic.
	Bytes uint64 `json:"bytes"`
	// Dropped counts the blocks still live at a request end (released by
	// it, not freed one by one).
	Dropped int `json:"dropped"`
	// Sizes counts allocs and reallocs by size class (Buckets).
	Sizes []int `json:"sizes"`
	// Grows and Shrinks split the reallocs.
	Grows   int `json:"grows"`
	Shrinks int `json:"shrinks"`

	// From -work: the program's own peak on the Zend MM and the Zend MM's
	// peak replaying the trace (the highest over the requests), in bytes.
	ProgramPeak  uint64 `json:"program_peak_usage,omitempty"`
	ReplayedPeak uint64 `json:"replayed_peak_usage,omitempty"`
}

// statFile reads and validates the trace at path, streaming.
func statFile(path string) (Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return Stats{}, err
	}
	defer f.Close()
	s, err := stat(f)
	if err != nil {
		return Stats{}, fmt.Errorf("%s: %w", path, err)
	}
	s.Trace = filepath.Base(path)
	return s, nil
}

func stat(r io.Reader) (Stats, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return Stats{}, err
	}
	s := Stats{Sizes: make([]int, len(Buckets))}
	var size []uint64 // per live id its size; the reader bounds ids by MaxIDs
	var touched []uint32
	var live int
	var liveBytes uint64
	for {
		rec, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Stats{}, err
		}
		s.Records++
		switch rec.Op {
		case trace.OpAlloc, trace.OpRealloc:
			if int(rec.ID) >= len(size) {
				size = append(size, make([]uint64, int(rec.ID)+1-len(size))...)
			}
			s.Bytes += rec.Size
			s.Sizes[bucket(rec.Size)]++
			if rec.Op == trace.OpAlloc {
				s.Allocs++
				live++
				touched = append(touched, rec.ID)
			} else {
				s.Reallocs++
				switch old := size[rec.ID]; {
				case rec.Size > old:
					s.Grows++
				case rec.Size < old:
					s.Shrinks++
				}
			}
			liveBytes += rec.Size - size[rec.ID]
			size[rec.ID] = rec.Size
			s.MaxLive = max(s.MaxLive, live)
			s.PeakLiveBytes = max(s.PeakLiveBytes, liveBytes)
		case trace.OpFree:
			s.Frees++
			live--
			liveBytes -= size[rec.ID]
			size[rec.ID] = 0
		case trace.OpRequestEnd:
			s.RequestEnds++
			s.Dropped += live
			// The reader has checked that only ids allocated in this
			// request can be live: clearing those clears them all.
			for _, id := range touched {
				size[id] = 0
			}
			touched = touched[:0]
			live, liveBytes = 0, 0
		}
	}
	return s, nil
}

func bucket(size uint64) int {
	for i, b := range Buckets {
		if size <= b.Max {
			return i
		}
	}
	return len(Buckets) - 1
}

// addPeaks reads the realism check's two peaks from dir.
func (s *Stats) addPeaks(dir string) error {
	name := strings.TrimSuffix(strings.TrimSuffix(s.Trace, ".gz"), ".ztrace")
	var program struct {
		PeakUsage []uint64 `json:"peak_usage"`
	}
	if err := readJSON(filepath.Join(dir, name+".zend.json"), &program); err != nil {
		return err
	}
	for _, p := range program.PeakUsage {
		s.ProgramPeak = max(s.ProgramPeak, p)
	}
	var replayed struct {
		PeakUsage uint64 `json:"peak_usage"`
	}
	if err := readJSON(filepath.Join(dir, name+".replay-zend.json"), &replayed); err != nil {
		return err
	}
	s.ReplayedPeak = replayed.PeakUsage
	if s.ProgramPeak == 0 || s.ReplayedPeak == 0 {
		return fmt.Errorf("%s: the peaks in %s are missing (program %d, replayed %d)", s.Trace, dir, s.ProgramPeak, s.ReplayedPeak)
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Table prints the stats as a Markdown table; the size classes are shares
// of the allocs and reallocs.
func Table(all []Stats) string {
	peaks := false
	for _, s := range all {
		peaks = peaks || s.ProgramPeak > 0
	}
	var b strings.Builder
	b.WriteString("| trace | records | allocs | frees | reallocs (grow/shrink) | requests | dropped at request end | max live | peak live | traffic |")
	for _, bk := range Buckets {
		fmt.Fprintf(&b, " %s |", bk.Label)
	}
	if peaks {
		b.WriteString(" PHP's peak | replayed peak | ratio |")
	}
	b.WriteString("\n|---|")
	for i := 0; i < 9+len(Buckets); i++ {
		b.WriteString("---:|")
	}
	if peaks {
		b.WriteString("---:|---:|---:|")
	}
	b.WriteString("\n")
	for _, s := range all {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d (%d/%d) | %d | %d | %d | %s | %s |", s.Trace, s.Records, s.Allocs, s.Frees,
			s.Reallocs, s.Grows, s.Shrinks, s.RequestEnds, s.Dropped, s.MaxLive, byteSize(s.PeakLiveBytes), byteSize(s.Bytes))
		n := s.Allocs + s.Reallocs
		for _, c := range s.Sizes {
			fmt.Fprintf(&b, " %s |", share(c, n))
		}
		if peaks {
			if s.ProgramPeak > 0 {
				fmt.Fprintf(&b, " %s | %s | %.3f |", byteSize(s.ProgramPeak), byteSize(s.ReplayedPeak),
					float64(s.ReplayedPeak)/float64(s.ProgramPeak))
			} else {
				b.WriteString(" – | – | – |")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func share(c, n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(c)/float64(n))
}

// byteSize prints a byte count in the largest unit that keeps it above 1.
func byteSize(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
