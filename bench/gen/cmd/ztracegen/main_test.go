package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/bench/gen"
	"github.com/gozmm/zmm/trace"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"r.ztrace.gz", "r.ztrace"} {
		out := filepath.Join(dir, name)
		var stderr bytes.Buffer
		require.NoError(t, run([]string{"-kind", "request", "-n", "300", "-seed", "5", "-per-request", "50", "-o", out}, &stderr))
		assert.Contains(t, stderr.String(), "300 allocs")
		got, err := trace.ReadFile(out)
		require.NoError(t, err)
		want, err := gen.Trace(gen.Params{Kind: gen.Request, N: 300, Seed: 5, PerRequest: 50})
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
}

func TestRunErrors(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.ztrace.gz")
	for _, args := range [][]string{
		{"-kind", "small"},                           // no -o
		{"-kind", "medium", "-o", out},               // unknown kind
		{"-kind", "small", "-n", "-5", "-o", out},    // bad n
		{"-kind", "small", "-o", out, "extra"},       // stray argument
		{"-kind", "small", "-o", "/nonexistent/x"},   // cannot create
		{"-kind", "small", "-bogus", "1", "-o", out}, // unknown flag
	} {
		assert.Error(t, run(args, &bytes.Buffer{}), "%q", args)
	}
	assert.NoFileExists(t, out)
}
