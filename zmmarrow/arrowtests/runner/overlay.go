package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// memoryPath is the import path of Arrow's memory package.
const memoryPath = "github.com/apache/arrow-go/v18/arrow/memory"

// The names the rewritten test files call; the added files define them.
const (
	allocFunc = "zmmArrowAlloc"
	runFunc   = "zmmArrowRun"
)

// testPackage is what the overlay needs of a package from go list.
type testPackage struct {
	ImportPath   string
	Dir          string
	Name         string
	TestGoFiles  []string // package Name
	XTestGoFiles []string // package Name_test
}

// rewritten is a test file after rewriting.
type rewritten struct {
	src      []byte
	allocs   int  // allocator expressions replaced
	testMain bool // it declares TestMain, whose m.Run() now calls runFunc
}

// edit replaces src[from:to] with text.
type edit struct {
	from, to int
	text     string
}

// rewriteTestFile makes the test file src (named name, for errors) use the
// zmm allocator: every memory.DefaultAllocator and memory.NewGoAllocator()
// becomes allocFunc(), and in TestMain, if the file declares one, every
// m.Run() becomes runFunc(m) so that the heap is checked when the tests are
// done. Only columns change, never lines, so that Arrow's failure messages
// keep their line numbers.
func rewriteTestFile(name string, src []byte) (rewritten, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return rewritten{}, err
	}
	off := func(p token.Pos) int { return fset.Position(p).Offset }
	var edits []edit
	var out rewritten

	mem := memoryName(f)
	if mem != "" {
		// Selectors assigned to (memory.DefaultAllocator = x) cannot become
		// calls; no test of arrow-go does that today.
		assigned := map[ast.Expr]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok {
				for _, l := range as.Lhs {
					assigned[l] = true
				}
			}
			return true
		})
		var bad error
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if isSel(n.Fun, mem, "NewGoAllocator") && len(n.Args) == 0 {
					edits = append(edits, edit{off(n.Pos()), off(n.End()), allocFunc + "()"})
					return false
				}
			case *ast.SelectorExpr:
				if isSel(n, mem, "DefaultAllocator") {
					if assigned[n] && bad == nil {
						bad = fmt.Errorf("%s: cannot rewrite an assignment to %s.DefaultAllocator", fset.Position(n.Pos()), mem)
					}
					edits = append(edits, edit{off(n.Pos()), off(n.End()), allocFunc + "()"})
					return false
				}
			}
			return true
		})
		if bad != nil {
			return rewritten{}, bad
		}
		out.allocs = len(edits)
	}

	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv != nil || fn.Name.Name != "TestMain" {
			continue
		}
		out.testMain = true
		params := fn.Type.Params.List
		if len(params) != 1 || len(params[0].Names) != 1 || params[0].Names[0].Name == "_" {
			return rewritten{}, fmt.Errorf("%s: TestMain without a named *testing.M parameter", fset.Position(fn.Pos()))
		}
		m := params[0].Names[0].Name
		runs := 0
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if c, ok := n.(*ast.CallExpr); ok && isSel(c.Fun, m, "Run") && len(c.Args) == 0 {
				edits = append(edits, edit{off(c.Pos()), off(c.End()), runFunc + "(" + m + ")"})
				runs++
			}
			return true
		})
		if runs == 0 {
			return rewritten{}, fmt.Errorf("%s: TestMain does not call %s.Run(), so the heap could not be checked after the tests", fset.Position(fn.Pos()), m)
		}
	}

	out.src = applyEdits(src, edits)
	if out.allocs > 0 {
		// The file may have used the memory package only for the
		// allocators just replaced; keep its import used. Appended after
		// the last line, so no line moves.
		out.src = fmt.Appendf(out.src, "\nvar _ %s.Allocator\n", mem)
	}
	return out, nil
}

// memoryName is the name file f imports Arrow's memory package as, or "" if
// it does not import it by a name (not at all, or as _ or .).
func memoryName(f *ast.File) string {
	for _, imp := range f.Imports {
		if p, err := strconv.Unquote(imp.Path.Value); err != nil || p != memoryPath {
			continue
		}
		if imp.Name == nil {
			return "memory"
		}
		if imp.Name.Name == "_" || imp.Name.Name == "." {
			return ""
		}
		return imp.Name.Name
	}
	return ""
}

// isSel reports whether e is the selector x.sel with x a bare identifier.
func isSel(e ast.Expr, x, sel string) bool {
	s, ok := e.(*ast.SelectorExpr)
	if !ok || s.Sel.Name != sel {
		return false
	}
	id, ok := s.X.(*ast.Ident)
	return ok && id.Name == x
}

// applyEdits returns src with the edits, which do not overlap, made.
func applyEdits(src []byte, edits []edit) []byte {
	slices.SortFunc(edits, func(a, b edit) int { return a.from - b.from })
	var out bytes.Buffer
	at := 0
	for _, e := range edits {
		out.Write(src[at:e.from])
		out.WriteString(e.text)
		at = e.to
	}
	out.Write(src[at:])
	return out.Bytes()
}

// addedFile is the source of the file the overlay adds to a test package
// (package name pkg): allocFunc, and either TestMain (main) or runFunc
// for an existing TestMain (hook).
func addedFile(pkg string, main, hook bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by zmm's arrowtests runner for go test -overlay. DO NOT EDIT.\n\npackage %s\n\nimport (\n", pkg)
	if main {
		b.WriteString("\t\"os\"\n")
	}
	if main || hook {
		b.WriteString("\t\"testing\"\n\n")
	}
	fmt.Fprintf(&b, "\t%q\n\t%q\n)\n\n", memoryPath, harnessPath)
	fmt.Fprintf(&b, "func %s() memory.Allocator { return arrowtests.Allocator() }\n", allocFunc)
	if main {
		b.WriteString("\nfunc TestMain(m *testing.M) { os.Exit(arrowtests.Run(m)) }\n")
	}
	if hook {
		fmt.Fprintf(&b, "\nfunc %s(m *testing.M) int { return arrowtests.Run(m) }\n", runFunc)
	}
	return b.Bytes()
}

// harnessPath is the import path of the package the added files call.
const harnessPath = "github.com/gozmm/zmm/zmmarrow/arrowtests"

// addedName is the file name the overlay adds to a package directory; no
// file of arrow-go is named so.
func addedName(external bool) string {
	if external {
		return "zz_zmmarrow_ext_test.go"
	}
	return "zz_zmmarrow_int_test.go"
}

// buildOverlay writes the rewritten and added test files of p under dir and
// returns the overlay's Replace map (file of p.Dir → file under dir). It
// returns a nil map if p has no test files.
func buildOverlay(p testPackage, dir string) (map[string]string, error) {
	if len(p.TestGoFiles)+len(p.XTestGoFiles) == 0 {
		return nil, nil
	}
	replace := map[string]string{}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	put := func(name string, src []byte) error {
		to := filepath.Join(dir, name)
		if err := os.WriteFile(to, src, 0o644); err != nil {
			return err
		}
		replace[filepath.Join(p.Dir, name)] = to
		return nil
	}
	// mainIn[external] says whether that test package declares TestMain.
	var mainIn [2]bool
	for i, files := range [][]string{p.TestGoFiles, p.XTestGoFiles} {
		for _, name := range files {
			src, err := os.ReadFile(filepath.Join(p.Dir, name))
			if err != nil {
				return nil, err
			}
			rw, err := rewriteTestFile(filepath.Join(p.Dir, name), src)
			if err != nil {
				return nil, err
			}
			if rw.testMain {
				mainIn[i] = true
			}
			if rw.allocs > 0 || rw.testMain {
				if err := put(name, rw.src); err != nil {
					return nil, err
				}
			}
		}
	}
	if mainIn[0] && mainIn[1] {
		return nil, fmt.Errorf("%s: TestMain in both the package's and its _test package's files", p.ImportPath)
	}
	hasMain := mainIn[0] || mainIn[1]
	// Our TestMain goes into the external test package if there is one
	// (either would do: both are in the one test binary).
	ours := len(p.XTestGoFiles) > 0
	for i, files := range [][]string{p.TestGoFiles, p.XTestGoFiles} {
		if len(files) == 0 {
			continue
		}
		external := i == 1
		name := p.Name
		if external {
			name += "_test"
		}
		main := !hasMain && external == ours
		if err := put(addedName(external), addedFile(name, main, mainIn[i])); err != nil {
			return nil, err
		}
	}
	return replace, nil
}
