package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/trace"
	"github.com/gozmm/zmm/trace/replay"
	"github.com/gozmm/zmm/zmm"
)

// The selftest serves on loopback, runs its requests (the last one leaks),
// and exits 0; the leak report names the leaking request and the line in
// render.fragment that allocated the block.
func TestSelftestReportsTheLeakingRequest(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"-selftest", "6", "-workers", "2", "-max-requests", "0"}, &stdout, &stderr)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())

	report := stderr.String()
	const leaky = "GET /page?sid=0&leak=1"
	assert.Contains(t, report, "]  Script:  '"+leaky+"'\n")
	assert.Regexp(t, regexp.MustCompile(`examples/lifecycle/main\.go\(\d+\) :  Freeing 0x[0-9a-f]{16} \(19 bytes\), script=`+regexp.QuoteMeta(leaky)+"\n"), report)
	assert.Contains(t, report, "=== Total 1 memory leaks detected ===")
	assert.Equal(t, 1, strings.Count(report, "Script:"), "only the leaking request is reported:\n%s", report)
	assert.NotContains(t, report, "persistent memory", "the components free their persistent memory")

	out := stdout.String()
	assert.Contains(t, out, "hello, session 1 (visit 1)")
	assert.Contains(t, out, "heaps at /debug/zmm/: default, persistent, lifecycle-persistent, worker-0, worker-1")
	assert.Contains(t, out, "[session]\nsessions opened: ")
	assert.Contains(t, out, "[render]\npages rendered: 6\nfragments leaked: 1 (leak on every request: false)")
	assert.Contains(t, out, "violations: 0, failed hooks: 0, requests that leaked: 1")
	assert.Regexp(t, `request "GET /page\?sid=0&leak=1" \(worker \d\) leaked 1 block\(s\), the first allocated in \S*\.\(\*render\)\.fragment at .*main\.go:\d+`, out)
}

// With recycling every 2 requests, the workers' heaps are remade and the
// leak report still names the request.
func TestSelftestWithRecycling(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"-selftest", "7", "-workers", "2", "-max-requests", "2"}, &stdout, &stderr), stderr.String())
	assert.Contains(t, stderr.String(), "script=GET /page?sid=1&leak=1\n")
	assert.Regexp(t, `worker \d: generation [1-9]`, stdout.String(), "a worker was recycled")
	assert.Contains(t, stdout.String(), "pages rendered: 7")
}

func TestSelftestWithLeakOnEveryRequest(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"-selftest", "4", "-leak", "-workers", "1"}, &stdout, &stderr), stderr.String())
	for i := 1; i <= 3; i++ {
		assert.Contains(t, stderr.String(), fmt.Sprintf("script=GET /page?sid=%d\n", i%3))
	}
	assert.Contains(t, stdout.String(), "requests that leaked: 4")
}

func TestSelftestWithoutDebugHasNoLeakReport(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"-selftest", "3", "-debug=false"}, &stdout, &stderr), stderr.String())
	assert.Empty(t, stderr.String())
	assert.Contains(t, stdout.String(), "requests that leaked: 0")
}

func TestBadFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 2, run([]string{"-workers", "0"}, &stdout, &stderr))
	assert.Equal(t, 2, run([]string{"-nope"}, &stdout, &stderr))
}

// With -trace, each worker heap's traffic is recorded; the traces are valid
// and replay on zmm and on Go's allocator without a mismatch, and the
// counters attribute the traffic to the components.
func TestSelftestTracesReplay(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"-selftest", "9", "-workers", "2", "-max-requests", "3", "-trace", dir}, &stdout, &stderr), stderr.String())
	out := stdout.String()
	assert.Regexp(t, `session  allocs [1-9]\d*, frees [1-9]\d*`, out)
	assert.Regexp(t, `handler  allocs [1-9]\d*, frees \d+, reallocs [1-9]\d*`, out)

	paths, err := filepath.Glob(filepath.Join(dir, "worker-*-gen-*.ztrace.gz"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(paths), 3, "recycling every 3 requests makes a trace per generation")
	var requests int
	for _, path := range paths {
		assert.Contains(t, out, "trace: "+path)
		tr, err := trace.ReadFile(path)
		require.NoError(t, err, path)
		requests += tr.Requests
		h, err := zmm.New()
		require.NoError(t, err)
		res, err := replay.Zmm(h, tr, nil)
		h.Close()
		require.NoError(t, err)
		assert.Zero(t, res.Mismatches)
		res, err = replay.Go(tr, nil)
		require.NoError(t, err)
		assert.Zero(t, res.Mismatches)
	}
	assert.Equal(t, 9, requests, "every request ended with a request end record")
}
