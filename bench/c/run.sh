#!/usr/bin/env bash
# run.sh: replays the same traces on zmm and on every C allocator (glibc,
# jemalloc, mimalloc, PHP's Zend MM) and prints a Markdown table of each
# allocator's median ns/op and peak RSS, with ratios to the Zend MM.
#
# Usage: bench/c/run.sh [-n REPS] [-o RESULTS.jsonl] [TRACE...]
#   -n REPS   runs of each allocator on each trace (default 3); each run is a
#             fresh process; the table shows medians
#   -o FILE   where the raw JSON lines go (default bench/c/results.jsonl);
#             one line per run, with "rep" added
#   TRACE     .ztrace or .ztrace.gz files; default: trace/testdata/*
#             and bench/traces/* (when there are any)
# Environment:
#   RUN_PREFIX    command put before every measured run, e.g. "taskset -c 1"
#                 (default none)
#   NICE          prefix of the build steps (default "nice -n 10")
#   ZEND_REQUEST  heap (default) or php: how the Zend binary ends a request
#                 (see README.md)
#   ALLOCATORS    which to run (default "zmm zend glibc jemalloc mimalloc")
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=3
out="$here/results.jsonl"
NICE=${NICE:-nice -n 10}
RUN_PREFIX=${RUN_PREFIX:-}
ZEND_REQUEST=${ZEND_REQUEST:-heap}
ALLOCATORS=${ALLOCATORS:-"zmm zend glibc jemalloc mimalloc"}

die() { echo "run.sh: $*" >&2; exit 1; }

while getopts "n:o:h" opt; do
	case $opt in
	n) reps=$OPTARG ;;
	o) out=$OPTARG ;;
	h) sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "usage: run.sh [-n REPS] [-o RESULTS.jsonl] [TRACE...]" ;;
	esac
done
shift $((OPTIND - 1))
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive count, not $reps"
case $ZEND_REQUEST in heap | php) ;; *) die "ZEND_REQUEST must be heap or php" ;; esac

traces=("$@")
if ((${#traces[@]} == 0)); then
	shopt -s nullglob
	traces=("$root"/trace/testdata/*.ztrace "$root"/trace/testdata/*.ztrace.gz \
		"$root"/bench/traces/*.ztrace "$root"/bench/traces/*.ztrace.gz)
	shopt -u nullglob
	((${#traces[@]})) || die "no traces given and none found under trace/testdata or bench/traces"
fi
for t in "${traces[@]}"; do [[ -f $t ]] || die "no such trace: $t"; done

"$here/build.sh"
command -v go >/dev/null || die "go is not on PATH (needed for the zmm side)"
(cd "$root" && $NICE go build -o "$here/build/zmmreplay" ./bench/c/zmmreplay) || die "building zmmreplay failed"

bin_of() {
	case $1 in
	zmm) echo "$here/build/zmmreplay" ;;
	zend) echo "$here/build/replay-zend --zend-request=$ZEND_REQUEST" ;;
	glibc | jemalloc | mimalloc) echo "$here/build/replay-$1" ;;
	*) die "unknown allocator $1" ;;
	esac
}

mkdir -p "$(dirname "$out")"
: >"$out"
echo "run.sh: $reps run(s) of [$ALLOCATORS] on ${#traces[@]} trace(s) -> $out" >&2
for t in "${traces[@]}"; do
	for ((rep = 1; rep <= reps; rep++)); do
		# Allocators take turns within a repetition, so slow drifts of the
		# machine spread over all of them.
		for a in $ALLOCATORS; do
			# shellcheck disable=SC2046
			line=$($RUN_PREFIX $(bin_of "$a") "$t") || die "$a failed on $t"
			[[ $line == \{* ]] || die "$a printed no JSON on $t: $line"
			echo "${line/#\{/\{\"rep\":$rep,}" >>"$out"
			printf '.' >&2
		done
	done
	echo " $(basename "$t")" >&2
done

{
	echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -srm), $(nproc) CPUs:" \
		"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	echo "$reps run(s) each, medians; Zend MM request end: $ZEND_REQUEST; $(go version | cut -d' ' -f3)," \
		"$(tr '\n' ',' <"$here/build/versions.txt" | sed 's/,$//; s/,/, /g')"
	echo
	"$here/build/zmmreplay" -table "$out"
}
if grep -q '"mismatches":[1-9]' "$out"; then
	die "some runs counted mismatches (freed blocks that lost their id): see $out"
fi
