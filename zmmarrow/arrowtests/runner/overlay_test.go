package main

import (
	"bytes"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const sampleTest = `package array_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// memory.DefaultAllocator in a comment stays.
var shared = memory.DefaultAllocator

func TestX(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	b := array.NewInt64Builder(memory.DefaultAllocator)
	_ = "memory.NewGoAllocator()"
	_, _ = mem, b
}
`

func TestRewriteSwapsAllocators(t *testing.T) {
	rw, err := rewriteTestFile("x_test.go", []byte(sampleTest))
	require.NoError(t, err)
	assert.Equal(t, 3, rw.allocs)
	assert.False(t, rw.testMain)
	got := string(rw.src)
	assert.Contains(t, got, "var shared = zmmArrowAlloc()\n")
	assert.Contains(t, got, "memory.NewCheckedAllocator(zmmArrowAlloc())\n")
	assert.Contains(t, got, "array.NewInt64Builder(zmmArrowAlloc())\n")
	assert.Contains(t, got, "// memory.DefaultAllocator in a comment stays.")
	assert.Contains(t, got, `_ = "memory.NewGoAllocator()"`)
	assert.True(t, strings.HasSuffix(got, "\nvar _ memory.Allocator\n"), "the memory import stays used")
	assertSameLines(t, sampleTest, got)
	_, err = parser.ParseFile(token.NewFileSet(), "x_test.go", rw.src, 0)
	assert.NoError(t, err)
}

// assertSameLines checks that every line of before is on the same line
// number in after (only columns may change).
func assertSameLines(t *testing.T, before, after string) {
	t.Helper()
	b, a := strings.Split(before, "\n"), strings.Split(after, "\n")
	require.GreaterOrEqual(t, len(a), len(b))
	for i, line := range b {
		if line != a[i] {
			assert.Contains(t, a[i], "zmmArrowAlloc()", "line %d changed for another reason", i+1)
		}
	}
}

func TestRewriteFollowsImportName(t *testing.T) {
	src := `package p

import mem "github.com/apache/arrow-go/v18/arrow/memory"

type memory struct{ DefaultAllocator int }

var a = mem.DefaultAllocator
var b = memory{}.DefaultAllocator
`
	rw, err := rewriteTestFile("p_test.go", []byte(src))
	require.NoError(t, err)
	assert.Equal(t, 1, rw.allocs)
	assert.Contains(t, string(rw.src), "var a = zmmArrowAlloc()\n")
	assert.Contains(t, string(rw.src), "var b = memory{}.DefaultAllocator\n")
	assert.True(t, strings.HasSuffix(string(rw.src), "\nvar _ mem.Allocator\n"))
}

func TestRewriteLeavesOtherFilesAlone(t *testing.T) {
	src := "package p\n\nimport \"testing\"\n\nfunc TestY(t *testing.T) {}\n"
	rw, err := rewriteTestFile("p_test.go", []byte(src))
	require.NoError(t, err)
	assert.Zero(t, rw.allocs)
	assert.False(t, rw.testMain)
	assert.Equal(t, src, string(rw.src))
}

func TestRewriteRejectsAssignment(t *testing.T) {
	src := `package p

import "github.com/apache/arrow-go/v18/arrow/memory"

func init() { memory.DefaultAllocator = nil }
`
	_, err := rewriteTestFile("p_test.go", []byte(src))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "p_test.go:5")
	assert.Contains(t, err.Error(), "assignment")
}

func TestRewriteHooksTestMain(t *testing.T) {
	src := `package p

import (
	"os"
	"testing"
)

func TestMain(tm *testing.M) {
	if os.Getenv("X") != "" {
		os.Exit(tm.Run())
	}
	code := tm.Run()
	os.Exit(code)
}
`
	rw, err := rewriteTestFile("main_test.go", []byte(src))
	require.NoError(t, err)
	assert.True(t, rw.testMain)
	assert.Zero(t, rw.allocs)
	got := string(rw.src)
	assert.Contains(t, got, "os.Exit(zmmArrowRun(tm))")
	assert.Contains(t, got, "code := zmmArrowRun(tm)")
	assert.NotContains(t, got, "tm.Run()")
	assert.Equal(t, strings.Count(src, "\n"), strings.Count(got, "\n"))
}

func TestRewriteRejectsTestMainItCannotHook(t *testing.T) {
	for name, body := range map[string]string{
		"no Run":      "func TestMain(m *testing.M) { run(m) }\nfunc run(m *testing.M) { m.Run() }",
		"unnamed":     "func TestMain(*testing.M) {}",
		"blank param": "func TestMain(_ *testing.M) {}",
	} {
		t.Run(name, func(t *testing.T) {
			src := "package p\n\nimport \"testing\"\n\n" + body + "\n"
			_, err := rewriteTestFile("main_test.go", []byte(src))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "TestMain")
		})
	}
}

// writePkg writes files into a new package directory and returns it.
func writePkg(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644))
	}
	return dir
}

// overlayFiles builds p's overlay and returns the files it replaces or
// adds, by base name, with their new contents.
func overlayFiles(t *testing.T, p testPackage) map[string]string {
	t.Helper()
	replace, err := buildOverlay(p, filepath.Join(t.TempDir(), "ovl"))
	require.NoError(t, err)
	out := map[string]string{}
	for from, to := range replace {
		require.Equal(t, p.Dir, filepath.Dir(from), "the overlay only touches the package's directory")
		b, err := os.ReadFile(to)
		require.NoError(t, err)
		out[filepath.Base(from)] = string(b)
	}
	return out
}

func TestOverlayAddsTestMainToExternalPackage(t *testing.T) {
	internal := "package array\n\nimport \"github.com/apache/arrow-go/v18/arrow/memory\"\n\nvar m = memory.NewGoAllocator()\n"
	plain := "package array_test\n\nimport \"testing\"\n\nfunc TestZ(t *testing.T) {}\n"
	p := testPackage{ImportPath: "x/array", Name: "array",
		Dir:          writePkg(t, map[string]string{"a_test.go": internal, "b_test.go": plain}),
		TestGoFiles:  []string{"a_test.go"},
		XTestGoFiles: []string{"b_test.go"},
	}
	files := overlayFiles(t, p)
	require.Len(t, files, 3, "a_test.go rewritten, b_test.go untouched, two files added")
	assert.Contains(t, files["a_test.go"], "var m = zmmArrowAlloc()")
	in, ext := files[addedName(false)], files[addedName(true)]
	assert.Contains(t, in, "package array\n")
	assert.NotContains(t, in, "TestMain")
	assert.Contains(t, ext, "package array_test\n")
	assert.Contains(t, ext, "func TestMain(m *testing.M) { os.Exit(arrowtests.Run(m)) }")
	for name, src := range files {
		_, err := parser.ParseFile(token.NewFileSet(), name, src, 0)
		assert.NoError(t, err, name)
	}
}

func TestOverlayAddsTestMainToInternalPackageAlone(t *testing.T) {
	p := testPackage{ImportPath: "x/ipc", Name: "ipc",
		Dir:         writePkg(t, map[string]string{"a_test.go": "package ipc\n"}),
		TestGoFiles: []string{"a_test.go"},
	}
	files := overlayFiles(t, p)
	require.Len(t, files, 1)
	assert.Contains(t, files[addedName(false)], "func TestMain(")
}

func TestOverlayHooksExistingTestMain(t *testing.T) {
	main := "package flight\n\nimport (\n\t\"os\"\n\t\"testing\"\n)\n\nfunc TestMain(m *testing.M) { os.Exit(m.Run()) }\n"
	p := testPackage{ImportPath: "x/flight", Name: "flight",
		Dir:          writePkg(t, map[string]string{"main_test.go": main, "b_test.go": "package flight_test\n"}),
		TestGoFiles:  []string{"main_test.go"},
		XTestGoFiles: []string{"b_test.go"},
	}
	files := overlayFiles(t, p)
	assert.Contains(t, files["main_test.go"], "os.Exit(zmmArrowRun(m))")
	assert.Contains(t, files[addedName(false)], "func zmmArrowRun(m *testing.M) int { return arrowtests.Run(m) }")
	mains := 0
	for _, src := range files {
		mains += strings.Count(src, "func TestMain(")
	}
	assert.Equal(t, 1, mains, "the package's own TestMain, and no other")
}

func TestOverlayRejectsTwoTestMains(t *testing.T) {
	main := "package %s\n\nimport \"testing\"\n\nfunc TestMain(m *testing.M) { m.Run() }\n"
	p := testPackage{ImportPath: "x/q", Name: "q",
		Dir: writePkg(t, map[string]string{
			"a_test.go": strings.Replace(main, "%s", "q", 1),
			"b_test.go": strings.Replace(main, "%s", "q_test", 1),
		}),
		TestGoFiles:  []string{"a_test.go"},
		XTestGoFiles: []string{"b_test.go"},
	}
	_, err := buildOverlay(p, t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "TestMain in both")
}

func TestOverlayOfPackageWithoutTests(t *testing.T) {
	replace, err := buildOverlay(testPackage{ImportPath: "x/none", Dir: t.TempDir()}, t.TempDir())
	require.NoError(t, err)
	assert.Nil(t, replace)
}

func TestAddedFileIsGofmted(t *testing.T) {
	for _, c := range []struct{ main, hook bool }{{false, false}, {true, false}, {false, true}} {
		src := addedFile("p_test", c.main, c.hook)
		formatted, err := format.Source(src)
		require.NoError(t, err)
		assert.Equal(t, string(formatted), string(src))
		assert.True(t, bytes.HasPrefix(src, []byte("// Code generated")), "go vet and linters skip it")
	}
}
