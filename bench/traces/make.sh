#!/usr/bin/env bash
# Regenerates the committed synthetic traces (see README.md beside this
# file). bench/gen's TestCommitted checks that they match the generator.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
gen() { go run ./bench/gen/cmd/ztracegen "$@"; }
gen -kind small -n 30000 -seed 1 -o bench/traces/small.ztrace.gz
gen -kind large -n 20000 -seed 1 -o bench/traces/large.ztrace.gz
gen -kind huge -n 8000 -seed 1 -o bench/traces/huge.ztrace.gz
gen -kind request -n 30000 -seed 1 -per-request 1000 -o bench/traces/request.ztrace.gz
