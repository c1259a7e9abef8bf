package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// knownBug is an entry of the known-bugs file: tests of an Arrow package
// that fail on zmm because of a bug in Arrow, skipped in the zmm runs.
type knownBug struct {
	pkg     string // the package, relative to arrow-go's module root
	pattern string // a go test -skip pattern
	reason  string
	// flaky: the tests fail now and then on Arrow's allocator too, so
	// run.sh -known cannot check that they still fail.
	flaky bool
	line  int
}

// parseKnownBugs reads the known-bugs file. An entry is a line
// "package pattern" or "package pattern flaky" at the start of a line,
// followed by its reason on one or more indented lines; '#' lines and blank
// lines are comments.
func parseKnownBugs(r io.Reader, name string) ([]knownBug, error) {
	var bugs []knownBug
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if len(bugs) == 0 {
				return nil, fmt.Errorf("%s:%d: a reason line before any entry", name, n)
			}
			b := &bugs[len(bugs)-1]
			b.reason = strings.TrimSpace(b.reason + " " + trimmed)
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 && (len(f) != 3 || f[2] != "flaky") {
			return nil, fmt.Errorf("%s:%d: want \"package skip-pattern [flaky]\", got %q", name, n, line)
		}
		if _, err := compileSkip(f[1]); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		bugs = append(bugs, knownBug{pkg: strings.TrimPrefix(f[0], "./"), pattern: f[1], flaky: len(f) == 3, line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, b := range bugs {
		if b.reason == "" {
			return nil, fmt.Errorf("%s:%d: %s %s has no reason (indented lines after it)", name, b.line, b.pkg, b.pattern)
		}
	}
	return bugs, nil
}

// skipPattern returns the -skip pattern of pkg's entries, "" if none.
func skipPattern(bugs []knownBug, pkg string) string {
	var ps []string
	for _, b := range bugs {
		if b.pkg == pkg {
			ps = append(ps, b.pattern)
		}
	}
	// go test splits a pattern on the '|' outside brackets and parentheses
	// into alternatives, each a '/'-separated path of regexps.
	return strings.Join(ps, "|")
}

// skipMatcher tells which tests a -skip pattern skips, as go test does: a
// test is skipped if, for some '|'-alternative of the pattern, its name has
// at least as many '/'-levels as the alternative and each of the
// alternative's regexps matches (unanchored) the name's level at its place.
type skipMatcher [][]*regexp.Regexp

func compileSkip(pattern string) (skipMatcher, error) {
	var m skipMatcher
	if pattern == "" {
		return m, nil
	}
	for _, alt := range splitTopLevel(pattern, '|') {
		var path []*regexp.Regexp
		for _, elem := range splitTopLevel(alt, '/') {
			re, err := regexp.Compile(elem)
			if err != nil {
				return nil, fmt.Errorf("skip pattern %q: %w", pattern, err)
			}
			path = append(path, re)
		}
		m = append(m, path)
	}
	return m, nil
}

// skips reports whether the test named name (levels joined by '/') is
// skipped.
func (m skipMatcher) skips(name string) bool {
	levels := strings.Split(name, "/")
	for _, path := range m {
		if len(levels) < len(path) {
			continue
		}
		all := true
		for i, re := range path {
			if !re.MatchString(levels[i]) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// splitTopLevel splits s at each sep that is outside brackets and
// parentheses and not escaped by a backslash.
func splitTopLevel(s string, sep byte) []string {
	var parts []string
	brackets, parens, from := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++ // the next byte is literal
		case c == '[':
			brackets++
		case c == ']' && brackets > 0:
			brackets--
		case c == '(' && brackets == 0:
			parens++
		case c == ')' && brackets == 0:
			parens--
		case c == sep && brackets == 0 && parens == 0:
			parts = append(parts, s[from:i])
			from = i + 1
		}
	}
	return append(parts, s[from:])
}
