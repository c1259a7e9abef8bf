package main

import (
	"fmt"
	"slices"
	"strings"
)

// problem is something that fails the script: a difference between a zmm
// run and the baseline run on Arrow's allocator that the known bugs do not
// explain.
type problem struct {
	pkg, mode string
	what      string
	detail    string // output excerpt
}

// maxListed is how many tests a problem names before it only counts.
const maxListed = 10

// judge compares got, pkg's run on the zmm heap of mode, with base, its run
// on Arrow's allocator; skip is the known bugs' -skip pattern for pkg.
func judge(pkg, mode string, base, got *result, skip skipMatcher) []problem {
	var out []problem
	add := func(what, detail string) {
		out = append(out, problem{pkg: pkg, mode: mode, what: what, detail: detail})
	}
	if got.report == nil {
		add("the test binary did not finish: "+got.reportErr, head(crashOutput(got), 30))
	} else if got.report.Check != "" {
		add("the heap's Check failed after the tests", got.report.Check)
	}

	// Failures that Arrow's allocator does not have. A parent fails with
	// its subtest; name only the innermost failures.
	var only []string
	for _, t := range got.failed() {
		if base.final[t] != "fail" {
			only = append(only, t)
		}
	}
	only = innermost(only)
	for i, t := range only {
		if i == maxListed {
			add(fmt.Sprintf("and %d more tests fail on zmm only", len(only)-maxListed), "")
			break
		}
		add(t+" fails on zmm, passes on Arrow's allocator", tail(outputOf(got, t), 20))
	}

	// Tests that passed on Arrow's allocator and never finished here,
	// though no known bug skips them: the binary died on the way.
	var lost []string
	for t, a := range base.final {
		if _, ran := got.final[t]; !ran && a == "pass" && !skip.skips(t) {
			lost = append(lost, t)
		}
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		lost = outermost(lost)
		add(fmt.Sprintf("%d tests passed on Arrow's allocator and did not finish on zmm: %s",
			len(lost), strings.Join(lost[:min(len(lost), maxListed)], ", ")), "")
	}

	if len(out) == 0 && !got.passed && base.passed {
		add("go test failed without a failing test", tail(got.pkgOutput.String(), 40))
	}
	return out
}

// crashOutput returns the output of the tests that started and never
// ended, where a crash's message and stack are, then the package's output.
func crashOutput(r *result) string {
	var b strings.Builder
	var names []string
	for t := range r.output {
		if _, ended := r.final[t]; !ended {
			names = append(names, t)
		}
	}
	slices.Sort(names)
	for _, t := range innermost(names) {
		b.WriteString(r.output[t].String())
	}
	b.WriteString(r.pkgOutput.String())
	return b.String()
}

func outputOf(r *result, test string) string {
	if b := r.output[test]; b != nil {
		return b.String()
	}
	return ""
}

// innermost drops from names those that are a parent of another one.
func innermost(names []string) []string {
	parents := map[string]bool{}
	for _, n := range names {
		for i := range len(n) {
			if n[i] == '/' {
				parents[n[:i]] = true
			}
		}
	}
	var out []string
	for _, n := range names {
		if !parents[n] {
			out = append(out, n)
		}
	}
	return out
}

// outermost drops from names those whose parent (at any level) is listed.
func outermost(names []string) []string {
	listed := map[string]bool{}
	for _, n := range names {
		listed[n] = true
	}
	var out []string
next:
	for _, n := range names {
		for i := range len(n) {
			if n[i] == '/' && listed[n[:i]] {
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}

// head returns the first n lines of s.
func head(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
