#!/usr/bin/env bash
# bigheap.sh: issue 20's big-heap comparison. Makes the large-mix traces
# (bench/gen, kind large-mix) for a growing live set, replays them on zmm,
# the Zend MM, glibc, jemalloc and mimalloc with run.sh, and draws the cost
# against the heap's size.
#
# Usage: bench/c/bigheap.sh [-n REPS] [-N ALLOCS] [LIVE...]
#   -n REPS    runs of each allocator on each trace (default 3)
#   -N ALLOCS  allocations per trace (default 200000)
#   LIVE       live-set sizes in blocks (default 400 4000 12000: about
#              0.36, 3.6 and 11 GB of live blocks)
# Writes bench/c/results-bigheap.jsonl (the runs), bench/c/results-bigheap.md
# (the table) and docs/bigheap.svg (the chart). The traces go to
# bench/c/build/bigheap/. The replays touch only the first and last page of
# a block (and what a moving realloc copies), so a heap of 11 GB costs
# address space, not as much RSS. RUN_PREFIX and ALLOCATORS are passed on to
# run.sh (default ALLOCATORS here: zmm zend glibc jemalloc mimalloc; the bump
# floors are left out, their arena would have to hold the whole heap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=3
allocs=200000
while getopts "n:N:h" opt; do
	case $opt in
	n) reps=$OPTARG ;;
	N) allocs=$OPTARG ;;
	h) sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "usage: bigheap.sh [-n REPS] [-N ALLOCS] [LIVE...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
lives=("$@")
((${#lives[@]})) || lives=(400 4000 12000)

dir="$here/build/bigheap"
mkdir -p "$dir"
traces=()
for live in "${lives[@]}"; do
	[[ $live =~ ^[1-9][0-9]*$ ]] || { echo "bigheap.sh: LIVE must be a positive count, not $live" >&2; exit 2; }
	t="$dir/large-mix-live$live.ztrace.gz"
	(cd "$root/bench" && go run ./gen/cmd/ztracegen -kind large-mix -n "$allocs" -live "$live" -seed 1 -o "$t")
	traces+=("$t")
done

export ALLOCATORS=${ALLOCATORS:-"zmm zend glibc jemalloc mimalloc"}
"$here/run.sh" -n "$reps" -o "$here/results-bigheap.jsonl" "${traces[@]}" | tee "$here/results-bigheap.md"

workloads=$(printf 'large-mix-live%s,' "${lives[@]}")
(cd "$root/bench" && go run ./chart -i "$here/results-bigheap.jsonl" \
	-allocators "$(echo "$ALLOCATORS" | tr ' ' ',')" -workloads "${workloads%,}" -o "$root/docs/bigheap.svg")
echo "bigheap.sh: chart in docs/bigheap.svg" >&2
