#!/usr/bin/env bash
# run.sh: replays the same traces on zmm and on every C allocator (glibc,
# jemalloc, mimalloc, PHP's Zend MM), and on the bump allocator that gives
# each replay loop its floor, and prints a Markdown table of each
# allocator's median ns/op and peak RSS, with ratios to the Zend MM (raw,
# and with each loop's floor taken off).
#
# Usage: bench/c/run.sh [-n REPS] [-o RESULTS.jsonl] [-c real|synthetic|all] [TRACE...]
#   -n REPS   runs of each allocator on each trace (default 3); each run is a
#             fresh process; the table shows medians
#   -o FILE   where the raw JSON lines go (default bench/c/results.jsonl);
#             one line per run, with "rep" added
#   -c SET    the traces when none are named: real (default), the corpus of
#             real PHP programs in bench/capture/traces (capture.sh makes
#             it); synthetic, trace/testdata/* and bench/traces/*; or
#             all of them
#   TRACE     .ztrace or .ztrace.gz files
# Environment:
#   RUN_PREFIX    command put before every measured run, e.g. "taskset -c 1"
#                 (default none)
#   NICE          prefix of the build steps (default "nice -n 10")
#   ZEND_REQUEST  heap (default) or php: how the Zend binary ends a request
#                 (see README.md)
#   ALLOCATORS    which to run (default "zmm zend glibc jemalloc mimalloc
#                 bump"); bump runs both floors, bump-go (zmmreplay's Go
#                 loop) and bump-c (the C loop), which can also be named
#                 on their own
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=3
out="$here/results.jsonl"
NICE=${NICE:-nice -n 10}
RUN_PREFIX=${RUN_PREFIX:-}
ZEND_REQUEST=${ZEND_REQUEST:-heap}
ALLOCATORS=${ALLOCATORS:-"zmm zend glibc jemalloc mimalloc bump"}
corpus=real

die() { echo "run.sh: $*" >&2; exit 1; }

while getopts "n:o:c:h" opt; do
	case $opt in
	n) reps=$OPTARG ;;
	o) out=$OPTARG ;;
	c) corpus=$OPTARG ;;
	h) sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "usage: run.sh [-n REPS] [-o RESULTS.jsonl] [-c real|synthetic|all] [TRACE...]" ;;
	esac
done
shift $((OPTIND - 1))
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive count, not $reps"
case $ZEND_REQUEST in heap | php) ;; *) die "ZEND_REQUEST must be heap or php" ;; esac

case $corpus in real | synthetic | all) ;; *) die "-c wants real, synthetic or all, not $corpus" ;; esac
# ALLOCATORS with bump spelled out as its two floors
allocs=()
for a in $ALLOCATORS; do
	case $a in
	bump) allocs+=(bump-go bump-c) ;;
	zmm | zend | glibc | jemalloc | mimalloc | bump-go | bump-c) allocs+=("$a") ;;
	*) die "unknown allocator $a in ALLOCATORS" ;;
	esac
done

traces=("$@")
if ((${#traces[@]} == 0)); then
	shopt -s nullglob
	if [[ $corpus != synthetic ]]; then
		traces+=("$root"/bench/capture/traces/*.ztrace.gz)
		((${#traces[@]})) || die "the real corpus is missing: run bench/capture/capture.sh (or -c synthetic)"
	fi
	if [[ $corpus != real ]]; then
		traces+=("$root"/trace/testdata/*.ztrace "$root"/trace/testdata/*.ztrace.gz \
			"$root"/bench/traces/*.ztrace "$root"/bench/traces/*.ztrace.gz)
	fi
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
	bump-go) echo "$here/build/zmmreplay -alloc bump" ;;
	bump-c) echo "$here/build/replay-bump" ;;
	zend) echo "$here/build/replay-zend --zend-request=$ZEND_REQUEST" ;;
	glibc | jemalloc | mimalloc) echo "$here/build/replay-$1" ;;
	*) die "unknown allocator $1" ;;
	esac
}

mkdir -p "$(dirname "$out")"
: >"$out"
echo "run.sh: $reps run(s) of [${allocs[*]}] on ${#traces[@]} trace(s) -> $out" >&2
for t in "${traces[@]}"; do
	for ((rep = 1; rep <= reps; rep++)); do
		# Allocators take turns within a repetition, so slow drifts of the
		# machine spread over all of them.
		for a in "${allocs[@]}"; do
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
	echo "$reps run(s) each, medians; runs prefixed with: ${RUN_PREFIX:-(nothing)}; Zend MM request end: $ZEND_REQUEST; $(go version | cut -d' ' -f3)," \
		"$(tr '\n' ',' <"$here/build/versions.txt" | sed 's/,$//; s/,/, /g')"
	echo
	"$here/build/zmmreplay" -table "$out"
}
# A floor whose arena wrapped around overwrote blocks on purpose (see
# replay.c): its mismatches are expected, and no allocator's.
if grep '"mismatches":[1-9]' "$out" | grep -v -q '"wraps":[1-9]'; then
	die "some runs counted mismatches (freed blocks that lost their id): see $out"
fi
