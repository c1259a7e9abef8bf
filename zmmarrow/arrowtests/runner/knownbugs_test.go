package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKnownBugs(t *testing.T) {
	src := `# comment

arrow/array TestConcatenate/^(large_)?list_view$
	the generator keeps pointers
	into a released array.
./arrow/csv TestRow
  keeps a string.
arrow/compute ^TestRace$ flaky
	races.
`
	bugs, err := parseKnownBugs(strings.NewReader(src), "kb.txt")
	require.NoError(t, err)
	require.Len(t, bugs, 3)
	assert.Equal(t, knownBug{pkg: "arrow/array", pattern: "TestConcatenate/^(large_)?list_view$",
		reason: "the generator keeps pointers into a released array.", line: 3}, bugs[0])
	assert.Equal(t, "arrow/csv", bugs[1].pkg)
	assert.Equal(t, "keeps a string.", bugs[1].reason)
	assert.False(t, bugs[1].flaky)
	assert.Equal(t, knownBug{pkg: "arrow/compute", pattern: "^TestRace$", reason: "races.", flaky: true, line: 8}, bugs[2])
	assert.Equal(t, "TestConcatenate/^(large_)?list_view$", skipPattern(bugs, "arrow/array"))
	assert.Empty(t, skipPattern(bugs, "arrow/ipc"))
}

func TestParseKnownBugsErrors(t *testing.T) {
	for src, want := range map[string]string{
		"arrow/csv TestRow\n":              "kb.txt:1: arrow/csv TestRow has no reason",
		"\treason first\n":                 "kb.txt:1: a reason line before any entry",
		"arrow/csv\n\tno pattern\n":        `kb.txt:1: want "package skip-pattern [flaky]"`,
		"a b c\n\treason\n":                `kb.txt:1: want "package skip-pattern [flaky]"`,
		"# c\narrow/csv Test(\n\treason\n": "kb.txt:2: skip pattern \"Test(\"",
	} {
		_, err := parseKnownBugs(strings.NewReader(src), "kb.txt")
		if assert.Error(t, err, src) {
			assert.Contains(t, err.Error(), want)
		}
	}
}

// The cases follow go test -skip: each was checked against go test 1.26
// on a package with these tests.
func TestSkipMatcher(t *testing.T) {
	for _, c := range []struct {
		pattern string
		skips   []string
		keeps   []string
	}{
		{"TestConcatenate/^(large_)?list_view$",
			[]string{"TestConcatenate/list_view", "TestConcatenate/large_list_view", "TestConcatenate/list_view/deep"},
			[]string{"TestConcatenate", "TestConcatenate/list", "TestConcatenate/list_view_x", "TestOther/list_view"}},
		{"TestA|TestB/x",
			[]string{"TestA", "TestA/y", "TestB/x", "TestAB"},
			[]string{"TestB", "TestB/y", "TestC"}},
		{"Test/[|]x",
			[]string{"Test/|x"},
			[]string{"Test", "Test//x", "TestA/y"}},
		{"TestB/(x|z)",
			[]string{"TestB/x"},
			[]string{"TestB", "TestB/y"}},
		{`TestA\/B`, // an escaped slash does not split, and no level has one
			nil,
			[]string{"TestA", "TestA/B"}},
		{"", nil, []string{"TestA"}},
	} {
		m, err := compileSkip(c.pattern)
		require.NoError(t, err, c.pattern)
		for _, name := range c.skips {
			assert.True(t, m.skips(name), "%q should skip %s", c.pattern, name)
		}
		for _, name := range c.keeps {
			assert.False(t, m.skips(name), "%q should not skip %s", c.pattern, name)
		}
	}
}
