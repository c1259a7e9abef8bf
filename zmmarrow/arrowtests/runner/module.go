package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// arrowModule is arrow-go's module path.
const arrowModule = "github.com/apache/arrow-go/v18"

// goCmd runs the go command in dir with env added to the environment and
// returns its standard output.
func goCmd(dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return out, nil
}

// arrowVersion returns the arrow-go version the zmmarrow module at dir
// builds with: its go.mod's requirement, or what a workspace it is in
// selects.
func arrowVersion(dir string) (string, error) {
	out, err := goCmd(dir, nil, "list", "-m", "-f", "{{.Version}}", arrowModule)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("go list -m %s in %s: no version (is it replaced by a directory?)", arrowModule, dir)
	}
	return v, nil
}

// download puts arrow-go at version into the module cache and returns its
// directory there and its checksum.
func download(dir, version string) (modDir, sum string, err error) {
	out, err := goCmd(dir, nil, "mod", "download", "-json", arrowModule+"@"+version)
	if err != nil {
		return "", "", err
	}
	var m struct{ Dir, Sum, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", "", fmt.Errorf("go mod download -json: %w", err)
	}
	if m.Error != "" || m.Dir == "" {
		return "", "", fmt.Errorf("go mod download %s@%s: %s", arrowModule, version, m.Error)
	}
	return m.Dir, m.Sum, nil
}

// stampName is the file in a copy that holds the checksum of the module it
// was copied from.
const stampName = ".zmm-arrowtests-sum"

// copyModule makes to a writable copy of the module at from, whose
// checksum is sum, unless to already is one. The copy is kept between runs
// so that the build cache, which keys on source paths, stays warm.
func copyModule(from, to, sum string) error {
	if b, err := os.ReadFile(filepath.Join(to, stampName)); err == nil && string(b) == sum {
		return nil
	}
	if err := os.RemoveAll(to); err != nil {
		return err
	}
	tmp := to + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(tmp, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil // a module zip holds regular files only
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return copyFile(path, dst, info.Mode().Perm()|0o200)
	})
	if err != nil {
		return fmt.Errorf("copying %s: %w", from, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, stampName), []byte(sum), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}

func copyFile(from, to string, perm fs.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeWorkspace writes the go.work at path: the arrow-go copy, and the zmm
// and zmmarrow modules of the checkout at root, whatever their own go.mod
// files or a go.work of the checkout say. zmmarrow requires a released
// version of zmm (v0.1.0 before the first release exists), and the go
// command reads that version's go.mod even when the workspace holds zmm:
// a replace of exactly that version by the checkout keeps it local.
func writeWorkspace(path, arrowDir, root string) error {
	env := []string{"GOWORK=" + path}
	dir := filepath.Dir(path)
	if _, err := goCmd(dir, env, "work", "init", arrowDir, root, filepath.Join(root, "zmmarrow")); err != nil {
		return err
	}
	ver, err := requiredVersion(filepath.Join(root, "zmmarrow"), zmmModule)
	if err != nil {
		return err
	}
	if ver == "" {
		return nil
	}
	_, err = goCmd(dir, env, "work", "edit", "-replace", zmmModule+"@"+ver+"="+root)
	return err
}

// zmmModule is zmm's module path.
const zmmModule = "github.com/gozmm/zmm"

// requiredVersion returns the version of module mod that the go.mod in dir
// requires, or "" if it requires none.
func requiredVersion(dir, mod string) (string, error) {
	out, err := goCmd(dir, []string{"GOWORK=off"}, "mod", "edit", "-json")
	if err != nil {
		return "", err
	}
	var gomod struct {
		Require []struct{ Path, Version string }
	}
	if err := json.Unmarshal(out, &gomod); err != nil {
		return "", fmt.Errorf("go mod edit -json in %s: %w", dir, err)
	}
	for _, r := range gomod.Require {
		if r.Path == mod {
			return r.Version, nil
		}
	}
	return "", nil
}
