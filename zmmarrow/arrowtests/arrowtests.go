// Package arrowtests is the part of the Arrow test-suite runner
// (zmmarrow/arrowtests/run.sh) that is compiled into arrow-go's own test
// binaries. The runner rewrites every memory.DefaultAllocator and
// memory.NewGoAllocator() in a package's test files to a call of Allocator
// and hooks Run into the package's TestMain, through a go test -overlay on a
// copy of the module (the module cache is never edited); with
// ZMM_ARROWTESTS_DEFAULT=1, Run makes memory.DefaultAllocator itself the
// allocator too.
//
// The allocator is zmmarrow.NewShared over one zmm.Shared per process, which
// any goroutine may call without a lock, as Arrow's parallel tests and its
// releases from other goroutines need. The environment variable
// ZMM_ARROWTESTS_MODE chooses its kind: "normal" (per-P chunk heaps),
// "debug" (zmm.WithDebug) or "guard" (zmm.ModeGuard); the last two are
// serial, one heap of that mode. When the tests are done, Run checks the
// allocator (Shared.Check), lists the blocks still live with their
// allocation sites (Shared.Leaks, in debug and guard mode) and writes a
// Report as JSON to the file named by ZMM_ARROWTESTS_REPORT.
//
// Nothing else should import this package: it keeps one allocator per
// process and never closes it.
package arrowtests

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

// The environment variables the runner sets for a test binary.
const (
	ModeEnv   = "ZMM_ARROWTESTS_MODE"
	ReportEnv = "ZMM_ARROWTESTS_REPORT"
	// DefaultEnv=1 makes Run set memory.DefaultAllocator to the heap's
	// allocator too, so that Arrow's library code that allocates without
	// being given an allocator (a compute function called with
	// context.Background(), for one) uses the heap as well.
	DefaultEnv = "ZMM_ARROWTESTS_DEFAULT"
)

// Modes are the heaps a test binary can run on, in the order the runner
// reports them.
var Modes = []string{"normal", "debug", "guard"}

// Report is what Run writes when the tests are done.
type Report struct {
	Mode string `json:"mode"`
	// Check is Shared.Check's error, "" when the allocator is sound.
	Check string `json:"check"`
	// Tracked says whether the allocator lists its live blocks (debug and
	// guard ones do, a normal one does not): only then are LiveBlocks and
	// Sites known.
	Tracked    bool `json:"tracked"`
	LiveBlocks int  `json:"live_blocks"`
	// LiveBytes is, when tracked, the sum of the live Arrow buffers'
	// sizes; in normal mode, Shared.Usage (bytes at class size).
	LiveBytes uint64 `json:"live_bytes"`
	PeakUsage uint64 `json:"peak_usage"`
	// Sites groups the live blocks by allocation site, most bytes first.
	Sites []SiteTotal `json:"sites,omitempty"`
}

// SiteTotal is the live blocks allocated at one site.
type SiteTotal struct {
	Site     string `json:"site"` // file:line
	Function string `json:"function"`
	Blocks   int    `json:"blocks"`
	Bytes    uint64 `json:"bytes"` // Arrow buffer sizes
}

var (
	setup       sync.Once
	shared      *zmm.Shared
	alloc       memory.Allocator
	mode        string
	setupErr    error
	modeOptions = map[string][]zmm.Option{
		"normal": {zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks)},
		"debug":  {zmm.WithDebug(true), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLeakReport(nil)},
		"guard":  {zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeGuard), zmm.WithLeakReport(nil)},
	}
)

// options returns the heap options of mode m.
func options(m string) ([]zmm.Option, error) {
	opts, ok := modeOptions[m]
	if !ok {
		return nil, fmt.Errorf("arrowtests: %s=%q: want one of %v", ModeEnv, m, Modes)
	}
	return opts, nil
}

func start() {
	setup.Do(func() {
		mode = os.Getenv(ModeEnv)
		var opts []zmm.Option
		if opts, setupErr = options(mode); setupErr != nil {
			return
		}
		if shared, setupErr = zmm.NewShared(append(opts, zmm.WithName("arrow-go tests"))...); setupErr != nil {
			return
		}
		alloc = zmmarrow.NewShared(shared)
	})
	if setupErr != nil {
		panic(setupErr)
	}
}

// Allocator returns the allocator every rewritten test file uses: one
// zmmarrow.Allocator over the process's shared allocator, since Arrow's
// tests run in parallel and release from any goroutine. It may be called before
// TestMain, from a test file's package-level variables.
func Allocator() memory.Allocator {
	start()
	return alloc
}

// Run runs the tests of m, writes the Report, and returns the exit code for
// os.Exit: m.Run's, or 1 if the heap is corrupted or the report cannot be
// written, or 2 if the heap cannot be made (ZMM_ARROWTESTS_MODE names no
// mode).
func Run(m *testing.M) int {
	if err := startErr(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if os.Getenv(DefaultEnv) == "1" {
		memory.DefaultAllocator = alloc
	}
	code := m.Run()
	// Check and Leaks hold every heap while they run, so a goroutine a
	// test left running waits meanwhile.
	r := report(shared, mode)
	fmt.Printf("zmm %s heap: check %s, %d bytes live\n", r.Mode, orClean(r.Check), r.LiveBytes)
	if r.Check != "" {
		fmt.Fprintf(os.Stderr, "zmm %s heap: Check: %s\n", r.Mode, r.Check)
		code = 1
	}
	if path := os.Getenv(ReportEnv); path != "" {
		if err := writeReport(path, r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// startErr sets the heap up and returns the reason it could not be.
func startErr() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	start()
	return nil
}

func orClean(check string) string {
	if check == "" {
		return "clean"
	}
	return "FAILED"
}

func writeReport(path string, r Report) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("arrowtests: report: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("arrowtests: report: %w", err)
	}
	return nil
}

// report checks h and sums up what is live in it.
func report(h *zmm.Shared, mode string) Report {
	r := Report{Mode: mode, PeakUsage: uint64(h.PeakUsage())}
	if err := h.Check(); err != nil {
		r.Check = err.Error()
	}
	// Debug and guard allocators track every block; a normal one keeps no
	// sites, and Leaks returns nil whatever is live.
	r.Tracked = h.Debug() || h.Mode() != zmm.ModeChunks
	if !r.Tracked {
		r.LiveBytes = uint64(h.Usage())
		return r
	}
	r.Sites = BySite(h.Leaks())
	for _, s := range r.Sites {
		r.LiveBlocks += s.Blocks
		r.LiveBytes += s.Bytes
	}
	return r
}

// BySite groups leaks by allocation site, most bytes first (then most
// blocks, then by site). Sizes are the Arrow buffers': on the heaps that
// track blocks, zmmarrow asks zmm for Overhead bytes more than each buffer.
func BySite(leaks []zmm.Leak) []SiteTotal {
	at := map[string]*SiteTotal{}
	for _, l := range leaks {
		key := l.Site.String()
		s := at[key]
		if s == nil {
			s = &SiteTotal{Site: key, Function: l.Site.Function}
			at[key] = s
		}
		s.Blocks++
		if l.Size > zmmarrow.Overhead {
			s.Bytes += uint64(l.Size - zmmarrow.Overhead)
		}
	}
	out := make([]SiteTotal, 0, len(at))
	for _, s := range at {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b SiteTotal) int {
		return cmp.Or(cmp.Compare(b.Bytes, a.Bytes), cmp.Compare(b.Blocks, a.Blocks), cmp.Compare(a.Site, b.Site))
	})
	return out
}
