package main

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var required = []string{"-root", "/zmm", "-known-bugs", "/zmm/kb.txt"}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(required)
	require.NoError(t, err)
	assert.Equal(t, []string{"normal", "debug", "guard"}, cfg.modes)
	assert.Equal(t, defaultPackages, cfg.pkgs)
	assert.True(t, cfg.setDefault)
	assert.Empty(t, cfg.buildFlags)
	assert.Equal(t, []string{"-test.timeout=30m0s"}, cfg.runFlags)
}

func TestParseFlagsChoices(t *testing.T) {
	cfg, err := parseFlags(append(required, "-modes", "guard", "-race", "-short", "-run", "TestX",
		"-default-allocator=false", "./arrow/ipc/", "arrow/csv"))
	require.NoError(t, err)
	assert.Equal(t, []string{"guard"}, cfg.modes)
	assert.Equal(t, []string{"arrow/ipc", "arrow/csv"}, cfg.pkgs)
	assert.False(t, cfg.setDefault)
	assert.Equal(t, []string{"-race"}, cfg.buildFlags)
	assert.Equal(t, []string{"-test.timeout=30m0s", "-test.short", "-test.run=TestX"}, cfg.runFlags)
}

func TestParseFlagsKnownRunsOnDebugHeap(t *testing.T) {
	cfg, err := parseFlags(append(required, "-known"))
	require.NoError(t, err)
	assert.Equal(t, []string{"debug"}, cfg.modes)
	cfg, err = parseFlags(append(required, "-known", "-modes", "normal,guard"))
	require.NoError(t, err)
	assert.Equal(t, []string{"normal", "guard"}, cfg.modes)
}

func TestParseFlagsErrors(t *testing.T) {
	_, err := parseFlags(append(required, "-modes", "debug,fast"))
	assert.ErrorContains(t, err, `unknown mode "fast"`)
	_, err = parseFlags([]string{"-root", "/zmm"})
	assert.ErrorContains(t, err, "-known-bugs are required")
	_, err = parseFlags([]string{"-h"})
	assert.ErrorIs(t, err, flag.ErrHelp)
}
