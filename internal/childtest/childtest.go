// Package childtest runs one test of the running test binary in a child
// process, for tests that need a process of their own: a fault that must
// kill it, or memory shared between two processes.
//
// Under qemu-user without binfmt_misc a test binary cannot exec itself
// (ENOEXEC); the child then runs through the same emulator with the same
// page size.
package childtest

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
)

// Run runs the test named test of this binary in a child process, verbose,
// with env added to its environment and files as its descriptors 3, 4, …
// It returns the child's combined output and its exit error (nil when it
// exits 0). It skips t when the kernel cannot exec the binary and no qemu
// is on PATH to run it with.
func Run(t testing.TB, test string, env []string, files []*os.File) ([]byte, error) {
	t.Helper()
	args := []string{"-test.run=^" + test + "$", "-test.count=1", "-test.v"}
	run := func(name string, args ...string) ([]byte, error) {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.ExtraFiles = files
		return cmd.CombinedOutput()
	}
	out, err := run(os.Args[0], args...)
	if errors.Is(err, syscall.ENOEXEC) {
		emu, lerr := exec.LookPath("qemu-" + map[string]string{"arm64": "aarch64", "amd64": "x86_64"}[runtime.GOARCH])
		if lerr != nil {
			t.Skipf("the kernel cannot exec this %s test binary (%v: an emulator without binfmt_misc) and no qemu is on PATH to run the child with", runtime.GOARCH, err)
		}
		t.Logf("re-running the child under %s", emu)
		out, err = run(emu, append([]string{"-p", strconv.Itoa(os.Getpagesize()), os.Args[0]}, args...)...)
	}
	return out, err
}
