// Command runner runs arrow-go's own test suites on zmm heaps: the engine
// of zmmarrow/arrowtests/run.sh, which says how to use it.
//
// For each package it builds two test binaries (go test -c): the tests as
// published, run once on Arrow's allocator (the baseline), and the tests
// rewritten through go test -overlay to allocate from a zmm heap (package
// arrowtests), run once per zmm mode with the known Arrow bugs skipped. It
// prints a table of the runs and the sites of the blocks still live at
// exit, and exits 1 if a zmm run fails where the baseline does not, dies, or
// finds the heap corrupted.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gozmm/zmm/zmmarrow/arrowtests"
)

// defaultPackages are the packages run when none are named.
var defaultPackages = []string{"arrow/scalar", "arrow/csv", "arrow/ipc", "arrow/array", "arrow/extensions", "arrow/compute"}

// baseline is the name of the run on Arrow's own allocator.
const baseline = "arrow"

type config struct {
	root       string // the zmm checkout
	knownBugs  string
	work       string
	modes      []string
	keep       bool
	setDefault bool
	known      bool
	sites      int
	buildFlags []string // go test -c flags
	runFlags   []string // test binary flags
	pkgs       []string
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "runner:", err)
		os.Exit(2)
	}
	code, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runner:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("run.sh", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: run.sh [flags] [package ...]\n\n"+
			"Runs arrow-go's own tests (packages relative to its module root, default %s)\n"+
			"on Arrow's allocator and on zmm heaps; see zmmarrow/arrowtests/run.sh.\n\n",
			strings.Join(defaultPackages, " "))
		fs.PrintDefaults()
	}
	cache, _ := os.UserCacheDir()
	fs.StringVar(&cfg.root, "root", "", "the zmm checkout whose zmm and zmmarrow the tests use (required)")
	fs.StringVar(&cfg.knownBugs, "known-bugs", "", "the known-bugs file (required)")
	fs.StringVar(&cfg.work, "work", filepath.Join(cache, "zmm-arrowtests"), "where the copy of arrow-go and the runs' files live")
	modes := fs.String("modes", strings.Join(arrowtests.Modes, ","), "the zmm heaps to run on, from "+strings.Join(arrowtests.Modes, ","))
	fs.BoolVar(&cfg.setDefault, "default-allocator", true, "make memory.DefaultAllocator the zmm allocator too, for Arrow's library code that allocates without being given one (false: only the test files' allocators)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the run's overlay, logs and reports (kept anyway when it fails)")
	fs.BoolVar(&cfg.known, "known", false, "check the known bugs instead: each (but the flaky ones) must pass on Arrow's allocator and fail on every mode of -modes (default debug)")
	fs.IntVar(&cfg.sites, "sites", 8, "live-block sites shown per package and mode")
	race := fs.Bool("race", false, "go test -race")
	short := fs.Bool("short", false, "go test -short")
	runPat := fs.String("run", "", "go test -run: only these tests")
	timeout := fs.Duration("timeout", 30*time.Minute, "-test.timeout of each test binary: per package and mode")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.root == "" || cfg.knownBugs == "" {
		return cfg, errors.New("-root and -known-bugs are required (run.sh sets them)")
	}
	if cfg.known && !flagSet(fs, "modes") {
		*modes = "debug"
	}
	for _, m := range strings.Split(*modes, ",") {
		if !slices.Contains(arrowtests.Modes, m) {
			return cfg, fmt.Errorf("-modes: unknown mode %q (want some of %s)", m, strings.Join(arrowtests.Modes, ","))
		}
		cfg.modes = append(cfg.modes, m)
	}
	cfg.runFlags = []string{"-test.timeout=" + timeout.String()}
	if *race {
		cfg.buildFlags = append(cfg.buildFlags, "-race")
	}
	if *short {
		cfg.runFlags = append(cfg.runFlags, "-test.short")
	}
	if *runPat != "" {
		cfg.runFlags = append(cfg.runFlags, "-test.run="+*runPat)
	}
	cfg.pkgs = fs.Args()
	if len(cfg.pkgs) == 0 {
		cfg.pkgs = slices.Clone(defaultPackages)
	}
	for i, p := range cfg.pkgs {
		cfg.pkgs[i] = strings.TrimSuffix(strings.TrimPrefix(p, "./"), "/")
	}
	return cfg, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// session is one run of the script.
type session struct {
	cfg      config
	arrowDir string // the copy of arrow-go
	runDir   string // this run's go.work, overlays, logs and reports
	env      []string
	bugs     []knownBug
	// test2json is the path of cmd/test2json, built for the run.
	test2json string
	binaries  map[string]*binary
}

func run(cfg config) (int, error) {
	f, err := os.Open(cfg.knownBugs)
	if err != nil {
		return 0, err
	}
	bugs, err := parseKnownBugs(f, cfg.knownBugs)
	f.Close()
	if err != nil {
		return 0, err
	}
	zmmarrowDir := filepath.Join(cfg.root, "zmmarrow")
	version, err := arrowVersion(zmmarrowDir)
	if err != nil {
		return 0, err
	}
	modDir, sum, err := download(zmmarrowDir, version)
	if err != nil {
		return 0, err
	}
	s := &session{cfg: cfg, bugs: bugs, arrowDir: filepath.Join(cfg.work, "arrow-go@"+version),
		binaries: map[string]*binary{}}
	if err := os.MkdirAll(cfg.work, 0o755); err != nil {
		return 0, err
	}
	if err := copyModule(modDir, s.arrowDir, sum); err != nil {
		return 0, err
	}
	if s.runDir, err = os.MkdirTemp(cfg.work, "run-"); err != nil {
		return 0, err
	}
	work := filepath.Join(s.runDir, "go.work")
	if err := writeWorkspace(work, s.arrowDir, cfg.root); err != nil {
		return 0, err
	}
	s.env = []string{"GOWORK=" + work}
	s.test2json = filepath.Join(s.runDir, "test2json")
	if _, err := goCmd(s.runDir, []string{"GOWORK=off"}, "build", "-o", s.test2json, "cmd/test2json"); err != nil {
		return 0, err
	}
	fmt.Fprintf(os.Stderr, "arrow-go %s (copy in %s); zmm from %s; files of this run in %s\n",
		version, s.arrowDir, cfg.root, s.runDir)

	pkgs, err := s.list(cfg.pkgs)
	if err != nil {
		return 0, err
	}
	var code int
	if cfg.known {
		code, err = s.checkKnown(pkgs)
	} else {
		code, err = s.suite(pkgs, version)
	}
	if err != nil {
		return 0, err
	}
	if code == 0 && !cfg.keep {
		os.RemoveAll(s.runDir)
	} else {
		fmt.Printf("\nthe run's overlays, logs (go test -json) and reports are in %s\n", s.runDir)
	}
	return code, nil
}

// list returns the packages named (relative to arrow-go's root), from go
// list.
func (s *session) list(names []string) ([]testPackage, error) {
	args := []string{"list", "-e", "-json=ImportPath,Dir,Name,TestGoFiles,XTestGoFiles,Error"}
	for _, n := range names {
		args = append(args, "./"+n)
	}
	out, err := goCmd(s.arrowDir, s.env, args...)
	if err != nil {
		return nil, err
	}
	var pkgs []testPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			testPackage
			Error *struct{ Err string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		pkgs = append(pkgs, p.testPackage)
	}
	return pkgs, nil
}

// rel is p's path relative to arrow-go's module root.
func rel(p testPackage) string {
	return strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, arrowModule), "/")
}

// binary is a test binary of a package, built once per run and
// configuration: without the overlay for the baseline, with it for the zmm
// modes, which differ only in the environment.
type binary struct {
	path  string
	built bool
	out   string // the build's output when it failed
}

// build builds p's test binary, with overlay unless it is "".
func (s *session) build(p testPackage, overlay string) (*binary, error) {
	name := strings.ReplaceAll(rel(p), "/", "_")
	kind := ".base.test"
	if overlay != "" {
		kind = ".zmm.test"
	}
	if b := s.binaries[name+kind]; b != nil {
		return b, nil
	}
	b := &binary{path: filepath.Join(s.runDir, name+kind)}
	args := append([]string{"test", "-c", "-o", b.path}, s.cfg.buildFlags...)
	if overlay != "" {
		args = append(args, "-overlay="+overlay)
	}
	args = append(args, p.ImportPath)
	cmd := exec.Command("go", args...)
	cmd.Dir = s.arrowDir
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.CombinedOutput()
	if _, serr := os.Stat(b.path); err == nil && serr != nil {
		err = fmt.Errorf("no test binary: %v", serr)
	}
	switch {
	case err == nil:
		b.built = true
	case overlay == "":
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	default:
		b.out = fmt.Sprintf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	s.binaries[name+kind] = b
	return b, nil
}

// goTest runs p's tests on mode's heap (baseline: Arrow's allocator,
// without the overlay) with extra test binary flags (-test.run=...), logs
// the go test -json form of the output, and returns the result.
func (s *session) goTest(p testPackage, mode, overlay string, extra ...string) (*result, error) {
	name := strings.ReplaceAll(rel(p), "/", "_") + "." + mode
	logPath := filepath.Join(s.runDir, name+".json")
	reportPath := filepath.Join(s.runDir, name+".report.json")
	start := time.Now()
	var env []string
	if mode == baseline {
		overlay = ""
	} else {
		env = append(env, arrowtests.ModeEnv+"="+mode, arrowtests.ReportEnv+"="+reportPath)
		if s.cfg.setDefault {
			env = append(env, arrowtests.DefaultEnv+"=1")
		}
	}
	bin, err := s.build(p, overlay)
	if err != nil {
		return nil, err
	}
	if !bin.built {
		res := &result{final: map[string]string{}, output: map[string]*strings.Builder{}, ended: true,
			reportErr: "the tests did not build with the overlay"}
		res.pkgOutput.WriteString(bin.out)
		return res, nil
	}

	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	// test2json turns the binary's -test.v=test2json output into what go
	// test -json prints; the tests run in their package's directory, as
	// under go test.
	args := append([]string{"-t", "-p", p.ImportPath, bin.path, "-test.v=test2json"}, s.cfg.runFlags...)
	args = append(args, extra...)
	cmd := exec.Command(s.test2json, args...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	buildTime := time.Since(start)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	res, perr := parseResults(io.TeeReader(out, logFile))
	io.Copy(io.Discard, out) // whatever a parse error left
	werr := cmd.Wait()
	if perr != nil {
		return nil, fmt.Errorf("test2json %s: %w", strings.Join(args, " "), perr)
	}
	res.pkgOutput.WriteString(stderr.String())
	if !res.ended {
		return nil, fmt.Errorf("test2json %s: %v: no result for the package\n%s", strings.Join(args, " "), werr, tail(res.pkgOutput.String(), 40))
	}
	if mode != baseline {
		res.report, res.reportErr = readReport(reportPath)
	}
	pass, fail, skip := res.counts()
	fmt.Fprintf(os.Stderr, "  %-20s %-7s %6d passed %4d failed %4d skipped  %7.1fs test (build %.1fs)\n",
		rel(p), mode, pass, fail, skip, res.elapsed, buildTime.Seconds())
	return res, nil
}

func readReport(path string) (*arrowtests.Report, string) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "no report: it did not reach the end of its TestMain (a crash, a fault or the timeout)"
	} else if err != nil {
		return nil, err.Error()
	}
	var r arrowtests.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Sprintf("report %s: %v", path, err)
	}
	return &r, ""
}

// overlay builds p's overlay and returns the overlay file's path.
func (s *session) overlay(p testPackage) (string, error) {
	name := strings.ReplaceAll(rel(p), "/", "_")
	replace, err := buildOverlay(p, filepath.Join(s.runDir, name+".overlay"))
	if err != nil {
		return "", err
	}
	if replace == nil {
		return "", fmt.Errorf("%s has no test files", p.ImportPath)
	}
	b, err := json.MarshalIndent(struct{ Replace map[string]string }{replace}, "", "\t")
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.runDir, name+".overlay.json")
	return path, os.WriteFile(path, b, 0o644)
}

// row is a line of the table.
type row struct {
	pkg, mode string
	res       *result
}

// suite runs every package in every mode and prints the table.
func (s *session) suite(pkgs []testPackage, version string) (int, error) {
	var rows []row
	var problems []problem
	baseFails := map[string][]string{}
	total := time.Now()
	for _, p := range pkgs {
		ovl, err := s.overlay(p)
		if err != nil {
			return 0, err
		}
		base, err := s.goTest(p, baseline, "")
		if err != nil {
			return 0, err
		}
		rows = append(rows, row{rel(p), baseline, base})
		baseFails[rel(p)] = innermost(base.failed())
		pattern := skipPattern(s.bugs, rel(p))
		skip, err := compileSkip(pattern)
		if err != nil {
			return 0, err
		}
		var extra []string
		if pattern != "" {
			extra = []string{"-test.skip=" + pattern}
		}
		for _, mode := range s.cfg.modes {
			got, err := s.goTest(p, mode, ovl, extra...)
			if err != nil {
				return 0, err
			}
			rows = append(rows, row{rel(p), mode, got})
			problems = append(problems, judge(rel(p), mode, base, got, skip)...)
		}
	}

	fmt.Printf("\narrow-go %s's own tests on Arrow's allocator (%s) and on zmm heaps (%s)\n\n",
		version, baseline, strings.Join(s.cfg.modes, ", "))
	printTable(os.Stdout, rows)
	fmt.Println()
	printSites(os.Stdout, rows, s.arrowDir, s.cfg.sites)
	printSkipped(os.Stdout, s.bugs, pkgs)
	for _, p := range pkgs {
		if f := baseFails[rel(p)]; len(f) > 0 {
			fmt.Printf("%s: failing on Arrow's allocator too, so not counted against zmm: %s\n", rel(p), strings.Join(f, ", "))
		}
	}
	fmt.Printf("\ntotal %.0fs\n", time.Since(total).Seconds())
	if len(problems) == 0 {
		fmt.Println("ok: no test fails on zmm that passes on Arrow's allocator, and every heap checked clean")
		return 0, nil
	}
	fmt.Printf("\nFAIL: %d problems\n", len(problems))
	for _, pr := range problems {
		fmt.Printf("%s (%s heap): %s\n", pr.pkg, pr.mode, pr.what)
		if pr.detail != "" {
			fmt.Println(indent(pr.detail, "    "))
		}
	}
	return 1, nil
}

// checkKnown runs each known bug's tests on Arrow's allocator and on the
// zmm heaps: each must pass on the first and fail on every zmm heap (or
// kill the test binary, as guard mode does), else it is no longer a known
// bug of this arrow-go and the entry must go.
func (s *session) checkKnown(pkgs []testPackage) (int, error) {
	code := 0
	for _, b := range s.bugs {
		i := slices.IndexFunc(pkgs, func(p testPackage) bool { return rel(p) == b.pkg })
		if i < 0 {
			continue
		}
		p := pkgs[i]
		ovl, err := s.overlay(p)
		if err != nil {
			return 0, err
		}
		m, err := compileSkip(b.pattern)
		if err != nil {
			return 0, err
		}
		fmt.Printf("\n%s %s\n    %s\n", b.pkg, b.pattern, b.reason)
		if b.flaky {
			fmt.Println("    flaky on Arrow's allocator too: not checked")
			continue
		}
		runs := append([]string{baseline}, s.cfg.modes...)
		for _, mode := range runs {
			res, err := s.goTest(p, mode, ovl, "-test.run="+b.pattern)
			if err != nil {
				return 0, err
			}
			pass, fail := 0, 0
			for t, a := range res.final {
				if m.skips(t) {
					pass += b2i(a == "pass")
					fail += b2i(a == "fail")
				}
			}
			died := mode != baseline && res.report == nil
			var verdict string
			switch {
			case mode == baseline && (fail > 0 || pass == 0):
				verdict, code = "UNEXPECTED: the bug's tests do not all pass on Arrow's allocator", 1
			case mode == baseline:
				verdict = "pass, as expected"
			case died:
				verdict = "caught: the test binary died (" + firstFatal(crashOutput(res)) + ")"
			case fail > 0:
				verdict = "caught"
			default:
				verdict, code = "NOT REPRODUCED: remove the entry or fix the pattern", 1
			}
			fmt.Printf("    %-7s %5d pass %5d fail  %s\n", mode, pass, fail, verdict)
			if mode != baseline && fail > 0 {
				failing := innermost(res.failed())
				fmt.Println(indent(tail(outputOf(res, failing[0]), 12), "        "))
			}
		}
	}
	return code, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// firstFatal returns the first line of a Go crash in out.
func firstFatal(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "unexpected fault address") {
			return l
		}
	}
	return "no report"
}

func indent(s, with string) string {
	return with + strings.ReplaceAll(s, "\n", "\n"+with)
}
