package main

import (
	"fmt"
	"io"
	"strings"
)

// printTable prints a line per package and mode: the tests that passed,
// failed and were skipped, the time the tests took (build excluded), the
// blocks and bytes live at exit and the heap check.
func printTable(w io.Writer, rows []row) {
	width := len("package")
	for _, r := range rows {
		width = max(width, len(r.pkg))
	}
	line := fmt.Sprintf("%%-%ds  %%-6s  %%7s  %%6s  %%7s  %%8s  %%11s  %%10s  %%s\n", width)
	fmt.Fprintf(w, line, "package", "mode", "passed", "failed", "skipped", "time", "live blocks", "live bytes", "check")
	for _, r := range rows {
		pass, fail, skip := r.res.counts()
		blocks, bytes, check := "-", "-", "-"
		if rep := r.res.report; rep != nil {
			bytes = size(rep.LiveBytes)
			if rep.Tracked {
				blocks = fmt.Sprint(rep.LiveBlocks)
			}
			check = "clean"
			if rep.Check != "" {
				check = "CORRUPTED"
			}
		} else if r.mode != baseline {
			check = "no report"
		}
		fmt.Fprintf(w, line, r.pkg, r.mode, fmt.Sprint(pass), fmt.Sprint(fail), fmt.Sprint(skip),
			fmt.Sprintf("%.1fs", r.res.elapsed), blocks, bytes, check)
	}
	fmt.Fprintln(w, "(time: the tests' run, the build excluded; live bytes: the Arrow buffers still allocated when the tests ended,")
	fmt.Fprintln(w, "on a normal heap counted at zmm's size classes)")
}

// printSites prints, for each package, the sites of the blocks live at exit
// on the debug heap (or the guard heap if the debug heap did not run), most
// bytes first: Arrow's tests mostly leave arrays unreleased on purpose,
// trusting the garbage collector, but a site in library code with no
// release on any path is a leak in Arrow.
func printSites(w io.Writer, rows []row, arrowDir string, n int) {
	shown := map[string]bool{}
	for _, pick := range []string{"debug", "guard"} {
		for _, r := range rows {
			rep := r.res.report
			if r.mode != pick || shown[r.pkg] || rep == nil || len(rep.Sites) == 0 {
				continue
			}
			shown[r.pkg] = true
			fmt.Fprintf(w, "%s: %d blocks (%s) live at exit on the %s heap, at %d sites; the largest:\n",
				r.pkg, rep.LiveBlocks, size(rep.LiveBytes), r.mode, len(rep.Sites))
			for _, s := range rep.Sites[:min(n, len(rep.Sites))] {
				site := strings.TrimPrefix(s.Site, arrowDir+"/")
				fmt.Fprintf(w, "  %6d blocks %10s  %s (%s)\n", s.Blocks, size(s.Bytes), site, shortFunc(s.Function))
			}
		}
	}
	if len(shown) > 0 {
		fmt.Fprintln(w)
	}
}

// shortFunc drops the module path from a function name.
func shortFunc(f string) string {
	return strings.TrimPrefix(f, arrowModule+"/")
}

// printSkipped lists the known bugs the runs skipped.
func printSkipped(w io.Writer, bugs []knownBug, pkgs []testPackage) {
	in := map[string]bool{}
	for _, p := range pkgs {
		in[rel(p)] = true
	}
	for _, b := range bugs {
		if in[b.pkg] {
			fmt.Fprintf(w, "%s: skipped on zmm (known Arrow bug): %s\n", b.pkg, b.pattern)
		}
	}
}

// size formats a byte count.
func size(b uint64) string {
	switch {
	case b >= 10<<20:
		return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
	case b >= 10<<10:
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
