#!/usr/bin/env bash
# threads.sh: issue 18's concurrency benchmarks. Runs the same workloads
# (churn, xmalloc, larson, cache-scratch, mstress: threads.c describes them)
# on the C allocators (threads.c on pthreads, linked with glibc, jemalloc or
# mimalloc) and on zmm's Shared (zmmthreads, goroutines), on 1, 2, 4, ...
# threads up to the CPUs available, and prints a Markdown table of each
# allocator's median ns/op with its speedup over one thread.
#
# Usage: bench/c/threads.sh [-n REPS] [-o RESULTS.jsonl] [-N OPS] [-w WORKLOADS] [-t THREADS]
#   -n REPS       runs of each allocator per workload and thread count
#                 (default 3); each run is a fresh process; the table shows
#                 medians
#   -o FILE       where the raw JSON lines go (default
#                 bench/c/results-threads.jsonl, overwritten); one line per
#                 run, with "rep" added
#   -N OPS        operations per run, over all its threads (default 2000000)
#   -w WORKLOADS  which workloads, e.g. "churn larson" (default "churn
#                 xmalloc larson cache-scratch mstress")
#   -t THREADS    thread counts, e.g. "1 2 8" (default 1, 2, 4, ... up to
#                 nproc, and nproc itself)
# Environment:
#   RUN_PREFIX  command put before every measured run, e.g. "taskset -c 0-3"
#               (default none)
#   NICE        prefix of the build steps (default "nice -n 10")
#   ALLOCATORS  which to run (default "glibc jemalloc mimalloc zmm")
# Needs gcc, the Debian packages libjemalloc-dev and libmimalloc-dev (build.sh
# installs them, with the rest of the C harness's), and go. The Go
# benchmarks of the same churn, producer/consumer, cache-scratch and mstress
# workloads, which also time zmm's package-level functions, a Heap behind a
# mutex, a heap per goroutine (churn only) and Go's own allocator:
#   cd bench && go test -run XXX -bench 'Shared(LocalChurn|ProducerConsumer|CacheScratch|Mstress)' -cpu 1,2,4
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$here/build"
reps=3
out="$here/results-threads.jsonl"
ops=2000000
workloads="churn xmalloc larson cache-scratch mstress"
threads=""
NICE=${NICE:-nice -n 10}
RUN_PREFIX=${RUN_PREFIX:-}
ALLOCATORS=${ALLOCATORS:-"glibc jemalloc mimalloc zmm"}

die() { echo "threads.sh: $*" >&2; exit 1; }
positive() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

while getopts "n:o:N:w:t:h" opt; do
	case $opt in
	n) reps=$OPTARG ;;
	o) out=$OPTARG ;;
	N) ops=$OPTARG ;;
	w) workloads=$OPTARG ;;
	t) threads=$OPTARG ;;
	h) sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "usage: threads.sh [-n REPS] [-o RESULTS.jsonl] [-N OPS] [-w WORKLOADS] [-t THREADS]" ;;
	esac
done
shift $((OPTIND - 1))
(($# == 0)) || die "unexpected arguments: $* (see -h)"
positive "$reps" || die "-n wants a positive count, not $reps"
positive "$ops" || die "-N wants a positive count, not $ops"
for w in $workloads; do
	case $w in
	churn | xmalloc | larson | cache-scratch | mstress) ;;
	*) die "unknown workload $w (churn, xmalloc, larson, cache-scratch, mstress)" ;;
	esac
done
if [[ -z $threads ]]; then
	cpus=$(nproc)
	for ((t = 1; t <= cpus; t *= 2)); do threads+="$t "; done
	((t / 2 == cpus)) || threads+="$cpus"
	threads=${threads% }
fi
for t in $threads; do positive "$t" || die "-t wants positive thread counts, not $t"; done

# The headers of the libraries the binaries link (build.sh's probes).
declare -A header=([jemalloc]=/usr/include/jemalloc/jemalloc.h [mimalloc]=/usr/include/mimalloc.h)
declare -A package=([jemalloc]=libjemalloc-dev [mimalloc]=libmimalloc-dev)
declare -A link=([glibc]="" [jemalloc]=-ljemalloc [mimalloc]=-lmimalloc)
for a in $ALLOCATORS; do
	case $a in
	glibc | zmm) ;;
	jemalloc | mimalloc)
		[[ -e ${header[$a]} ]] ||
			die "${header[$a]} is missing: install ${package[$a]} (bench/c/build.sh does, as root)" ;;
	*) die "unknown allocator $a in ALLOCATORS (glibc, jemalloc, mimalloc, zmm)" ;;
	esac
done
command -v go >/dev/null || die "go is not on PATH (needed for zmmthreads, which also prints the table)"

mkdir -p "$build"
CC=${CC:-gcc}
CFLAGS=${CFLAGS:-"-O2 -g -std=gnu11 -Wall -Wextra"}
for a in $ALLOCATORS; do
	[[ $a == zmm ]] && continue
	echo "threads.sh: threads-$a" >&2
	# shellcheck disable=SC2086
	$NICE $CC $CFLAGS -pthread -DALLOC_${a^^} -o "$build/threads-$a" "$here/threads.c" ${link[$a]} ||
		die "compiling threads-$a failed"
done
(cd "$root" && $NICE go build -o "$build/zmmthreads" ./bench/c/zmmthreads) || die "building zmmthreads failed"

bin_of() {
	case $1 in
	zmm) echo "$build/zmmthreads" ;;
	*) echo "$build/threads-$1" ;;
	esac
}

mkdir -p "$(dirname "$out")"
: >"$out"
echo "threads.sh: $reps run(s) of [$ALLOCATORS] on [$workloads] x [$threads] threads, $ops ops each -> $out" >&2
for w in $workloads; do
	for t in $threads; do
		for ((rep = 1; rep <= reps; rep++)); do
			# Allocators take turns within a repetition, so slow drifts of
			# the machine spread over all of them.
			for a in $ALLOCATORS; do
				# shellcheck disable=SC2046
				line=$($RUN_PREFIX $(bin_of "$a") "$w" "$t" "$ops") || die "$a failed on $w, $t threads"
				[[ $line == \{* ]] || die "$a printed no JSON on $w, $t threads: $line"
				echo "${line/#\{/\{\"rep\":$rep,}" >>"$out"
				printf '.' >&2
			done
		done
		echo " $w, threads=$t" >&2
	done
done

{
	echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -srm), $(nproc) CPUs:" \
		"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	echo "$reps run(s) each of $ops ops, medians; runs prefixed with: ${RUN_PREFIX:-(nothing)}; $(go version | cut -d' ' -f3)," \
		"$(dpkg-query -W -f='${Package} ${Version}, ' libc6 libjemalloc2 libmimalloc2.0 2>/dev/null | sed 's/, $//')"
	echo "ns/op over all threads: per alloc+free pair (churn), per block (xmalloc), per step (larson)," \
		"per alloc+writes+free (cache-scratch), per block allocated (mstress);" \
		"(N×): speedup over the same allocator on 1 thread. xmalloc on 1 thread runs one producer and one consumer."
	echo
	"$build/zmmthreads" -table "$out"
}
