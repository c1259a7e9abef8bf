// Command modproxy writes a module proxy on the file system
// (GOPROXY=file://DIR) that serves modules of this repository's working tree
// at one version, as the module proxy would serve them once the repository
// is tagged with that version. CI uses it to build zmm's nested modules and
// an outside consumer against github.com/gozmm/zmm@VERSION before the tag
// exists (.ci/modules.sh).
//
// Usage:
//
//	go run . -o DIR -version VERSION [-repo ROOT] MODDIR...
//
// Each MODDIR is a module's directory relative to ROOT (. for the root
// module). Its zip holds the files git would commit (tracked files and
// untracked ones not ignored, as they are in the working tree), minus the
// nested modules' files: what `git tag` followed by a proxy fetch would
// publish, uncommitted changes included so that CI checks the tree it was
// run on. The zip is built with golang.org/x/mod/zip, which applies the
// module zip rules the go command checks on download.
//
// It lives in a module of its own so that golang.org/x/mod stays out of
// zmm's module graph.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "modproxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("modproxy", flag.ContinueOnError)
	out := fl.String("o", "", "the proxy directory to write (created if missing)")
	version := fl.String("version", "", "the version to serve every module at, for example v0.1.0")
	repo := fl.String("repo", ".", "the repository's root directory")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" || *version == "" || fl.NArg() == 0 {
		return errors.New("usage: modproxy -o DIR -version VERSION [-repo ROOT] MODDIR...")
	}
	if v := module.CanonicalVersion(*version); v != *version {
		return fmt.Errorf("version %q is not a canonical semantic version (want something like v0.1.0)", *version)
	}
	root, err := filepath.Abs(*repo)
	if err != nil {
		return err
	}
	tracked, err := gitFiles(root)
	if err != nil {
		return err
	}
	when, err := commitTime(root)
	if err != nil {
		return err
	}
	for _, dir := range fl.Args() {
		if err := serve(*out, root, path.Clean(filepath.ToSlash(dir)), *version, when, tracked); err != nil {
			return fmt.Errorf("module in %s: %w", dir, err)
		}
	}
	return nil
}

// gitFiles lists the repository's files as git sees them: tracked ones and
// untracked ones that .gitignore does not exclude, slash-separated and
// relative to root. Ignored build outputs (test binaries, profiles) are
// left out, as a tag would leave them out.
func gitFiles(root string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files in %s: %v: %s", root, err, strings.TrimSpace(stderr.String()))
	}
	var files []string
	for name := range strings.SplitSeq(string(b), "\x00") {
		if name != "" {
			files = append(files, name)
		}
	}
	return files, nil
}

// commitTime is the time of the checkout's HEAD commit: the time a tag on
// it would carry, and a stable one, so that the same tree gives the same
// proxy.
func commitTime(root string) (time.Time, error) {
	cmd := exec.Command("git", "log", "-1", "--format=%cI")
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		return time.Time{}, fmt.Errorf("git log in %s: %v", root, err)
	}
	return time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
}

// serve writes the list, .info, .mod and .zip files of the module in dir
// (relative to root) at version under the proxy directory out, as the
// GOPROXY protocol lays them out.
func serve(out, root, dir, version string, when time.Time, tracked []string) error {
	modDir := filepath.Join(root, filepath.FromSlash(dir))
	gomod, err := os.ReadFile(filepath.Join(modDir, "go.mod"))
	if err != nil {
		return err
	}
	modPath := modfile.ModulePath(gomod)
	if modPath == "" {
		return fmt.Errorf("%s/go.mod has no module line", dir)
	}
	mv := module.Version{Path: modPath, Version: version}
	if err := module.Check(mv.Path, mv.Version); err != nil {
		return err
	}
	escPath, err := module.EscapePath(mv.Path)
	if err != nil {
		return err
	}
	escVersion, err := module.EscapeVersion(mv.Version)
	if err != nil {
		return err
	}

	var files []modzip.File
	prefix := ""
	if dir != "." {
		prefix = dir + "/"
	}
	for _, name := range tracked {
		rel, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		info, err := os.Lstat(filepath.Join(root, filepath.FromSlash(name)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree: not part of it
		}
		if err != nil {
			return err
		}
		files = append(files, file{path: rel, abs: filepath.Join(root, filepath.FromSlash(name)), info: info})
	}

	vdir := filepath.Join(out, filepath.FromSlash(escPath), "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(vdir, escVersion)
	var zipBuf bytes.Buffer
	// Create leaves out the files of nested modules (any directory below
	// with a go.mod) and refuses what the go command would refuse.
	if err := modzip.Create(&zipBuf, mv, files); err != nil {
		return err
	}
	if err := os.WriteFile(base+".zip", zipBuf.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(base+".mod", gomod, 0o644); err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{mv.Version, when.UTC()})
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".info", info, 0o644); err != nil {
		return err
	}
	return addToList(filepath.Join(vdir, "list"), mv.Version)
}

// addToList adds version to the proxy's list of the module's versions
// unless it is there already.
func addToList(list, version string) error {
	b, err := os.ReadFile(list)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for line := range strings.Lines(string(b)) {
		if strings.TrimSpace(line) == version {
			return nil
		}
	}
	f, err := os.OpenFile(list, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, version); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// file is a file of the working tree as golang.org/x/mod/zip reads it.
type file struct {
	path string // slash-separated, relative to the module's directory
	abs  string
	info fs.FileInfo
}

func (f file) Path() string                 { return f.path }
func (f file) Lstat() (fs.FileInfo, error)  { return f.info, nil }
func (f file) Open() (io.ReadCloser, error) { return os.Open(f.abs) }
