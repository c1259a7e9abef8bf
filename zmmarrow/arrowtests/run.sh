#!/usr/bin/env bash
# Runs arrow-go's own test suites on zmm: the arrow-go version zmmarrow
# requires, each package's tests on Arrow's allocator (the baseline) and, with
# every memory.DefaultAllocator and memory.NewGoAllocator() of its test files,
# and memory.DefaultAllocator itself, swapped for a zmmarrow allocator
# (go test -overlay, on a copy of the module kept in the user cache
# directory), over a normal, a debug and a guard zmm.Shared (zmmarrow.NewShared).
#
#   bash zmmarrow/arrowtests/run.sh                      # the default packages, all modes
#   bash zmmarrow/arrowtests/run.sh arrow/ipc arrow/csv  # packages of arrow-go
#   bash zmmarrow/arrowtests/run.sh -modes debug -race arrow/array
#   bash zmmarrow/arrowtests/run.sh -known               # the known bugs must still fail
#   bash zmmarrow/arrowtests/run.sh -h                   # every flag
#
# It prints a table (package x mode: passed, failed, skipped, time, blocks
# live at exit, heap check) and the allocation sites of the blocks live at
# exit, and exits 1 if a test fails on zmm that passes on Arrow's allocator,
# a test binary dies, or a heap's Check fails. The Arrow bugs in
# known-bugs.txt, next to this script, are skipped on zmm by name.
#
# The copy of arrow-go is pointed at this checkout's zmm and zmmarrow by a
# go.work of the run's own, whatever the checkout's go.mod files or go.work
# say. Needs Go (at /usr/local/go if it is not on PATH) and the module proxy.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
if ! command -v go >/dev/null 2>&1; then
	export PATH="/usr/local/go/bin:$PATH"
fi
# The runner builds with the checkout's own layout: its go.work if it has one,
# else zmmarrow/go.mod alone (never a go.work found above the checkout).
if [[ -f $root/go.work ]]; then
	export GOWORK="$root/go.work"
else
	export GOWORK=off
fi
cd "$root/zmmarrow"
exec go run ./arrowtests/runner -root "$root" -known-bugs "$here/known-bugs.txt" "$@"
