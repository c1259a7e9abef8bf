#!/usr/bin/env bash
# capture.sh: rebuilds the corpus of allocation traces of real PHP programs
# (README.md beside this script): installs the Debian packages, builds
# zcapture, runs each program under it, checks each trace, and writes the
# STATS.md table.
#
# Usage: bench/capture/capture.sh [--no-install] [NAME...]
#   NAME   capture only these programs (default: all; see PROGRAMS below)
#   --no-install   never run apt-get; stop if a package is missing
# Environment:
#   ZMM_CORPUS   where the traces go (default bench/capture/traces)
#   ZMM_WORK     scratch directory, emptied first (default /tmp/zmm-capture);
#                it keeps each run's output, summaries and checks
#   NICE         prefix of the builds and captures (default "nice -n 10")
#
# Each program runs twice, in a fresh working directory and home, with a
# fixed environment (so that the trace does not depend on the machine):
#   1. under zcapture, which writes the trace;
#   2. under zcapture --zend-peaks, on PHP's real Zend MM, which records the
#      program's own memory_get_peak_usage() per request.
# Then the checks, any of which stops the script:
#   - both runs exit with the program's expected status in every request,
#     print the line that says each request did its work, and the same
#     (lines with timings and memory figures aside): tracing did not change
#     what the program did;
#   - package trace's reader accepts the trace (ztracestat);
#   - the trace replayed on the Zend MM (bench/c's replay-zend) peaks where
#     the program itself peaked, within PEAK_TOLERANCE: the trace holds the
#     program's calls, all of them, with their sizes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
corpus=${ZMM_CORPUS:-$here/traces}
work=${ZMM_WORK:-/tmp/zmm-capture}
NICE=${NICE:-nice -n 10}
# The replayed peak may differ from the program's by this fraction: the
# program's peak is read just before the request's shutdown, the replay's
# at the request end, and the engine frees more than it allocates between.
PEAK_TOLERANCE=0.02

die() { echo "capture.sh: $*" >&2; exit 1; }

# PROGRAMS: name, requests (-r), expected exit status, a line (an extended
# regular expression) that the program prints once per request when it has
# done its work, then the command (run in the program's working directory).
# Inputs are files that the packages below install, and the drivers in
# programs/ are copied to $work/programs first, so that no path in the trace
# (the script's name is in $_SERVER and in every error message) depends on
# the checkout: with the same package versions and ZMM_WORK, the corpus
# comes out the same.
P=$work/programs
PROGRAMS=(
	"phpunit-psr7|8|0|^Tests: 141, |/usr/bin/phpunit -c $P/phpunit-psr7/phpunit.xml"
	"phpcs-psr12|1|2|^Time: |/usr/bin/phpcs --standard=PSR12 --report=full /usr/share/php/GuzzleHttp/Psr7"
	"phpmd|1|2|^/usr/share/php/Symfony/Component/Filesystem/Path.php:28 +ExcessiveClassComplexity|/usr/bin/phpmd /usr/share/php/Symfony/Component/Filesystem text cleancode,codesize,design,naming,unusedcode"
	"php-parser|1|0|^264 files, .*, 0 bad$|$P/php-parser/roundtrip.php /usr/share/php/PhpParser/Node /usr/share/php/Twig/Node"
	"commonmark|2|0|^34 files, |$P/commonmark/render.php /usr/share/doc/composer"
	"twig|3|0|^106 files, 105 classes, |$P/twig/render.php /usr/share/php/Symfony/Component/Console"
	"composer|2|0|^Generated optimized autoload files containing 532 classes|/usr/bin/composer dump-autoload --optimize"
)

# Debian package -> a file that proves it is installed.
declare -A probe=(
	[gcc]=/usr/bin/gcc
	[zlib1g-dev]=/usr/include/zlib.h
	[libphp8.2-embed]=/usr/lib/libphp8.2.so
	[php8.2-dev]=/usr/bin/php-config8.2
	[php8.2-xml]=/etc/php/8.2/mods-available/dom.ini
	[php8.2-mbstring]=/etc/php/8.2/mods-available/mbstring.ini
	[phpunit]=/usr/bin/phpunit
	[php-http-psr7-integration-tests]=/usr/share/php/Http/Psr7Test/autoload.php
	[php-guzzlehttp-psr7]=/usr/share/php/GuzzleHttp/Psr7/autoload.php
	[php-codesniffer]=/usr/bin/phpcs
	[phpmd]=/usr/bin/phpmd
	[php-parser]=/usr/share/php/PhpParser/autoload.php
	[php-league-commonmark]=/usr/share/php/League/CommonMark/autoload.php
	[php-twig]=/usr/share/php/Twig/autoload.php
	[php-symfony-console]=/usr/share/php/Symfony/Component/Console/Application.php
	[composer]=/usr/bin/composer
)
pkgs=(gcc zlib1g-dev libphp8.2-embed php8.2-dev php8.2-xml php8.2-mbstring phpunit php-http-psr7-integration-tests
	php-guzzlehttp-psr7 php-codesniffer phpmd php-parser php-league-commonmark php-twig php-symfony-console composer)

install=1
if [[ ${1:-} == --no-install ]]; then
	install=0
	shift
fi
wanted=("$@")

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || [[ ! -e ${probe[$p]} ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	((install)) || die "missing Debian packages: ${missing[*]} (run without --no-install, as root)"
	[[ $(id -u) == 0 ]] || die "missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install -y ${missing[*]})"
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: this script expects Debian 12 (bookworm)"
	echo "capture.sh: installing ${missing[*]}" >&2
	$NICE apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive $NICE apt-get install -y -qq "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
fi

# The tools: zcapture, the Go validator, and replay-zend (bench/c).
mkdir -p "$here/build"
CC=${CC:-gcc}
CFLAGS=${CFLAGS:-"-O2 -g -std=gnu11 -Wall -Wextra -Wno-unused-parameter"}
phplib=$(dirname "$(readlink -f /usr/lib/libphp8.2.so)")
# shellcheck disable=SC2046,SC2086
$NICE $CC $CFLAGS $(php-config8.2 --includes) -o "$here/build/zcapture" "$here/capture.c" -lz \
	-L"$phplib" -lphp8.2 -Wl,-rpath,"$phplib" || die "compiling zcapture failed"
"$here/build/zcapture" --self-test || die "zcapture's self-test failed: the handlers do not see every call"
command -v go >/dev/null || die "go is not on PATH (needed for the trace checks)"
(cd "$root" && $NICE go build -o "$here/build/ztracestat" ./bench/capture/ztracestat) || die "building ztracestat failed"
if ((install)); then "$root/bench/c/build.sh"; else "$root/bench/c/build.sh" --no-install; fi

# The scratch directory is emptied, but only if it is one of ours.
if [[ -e $work && ! -e $work/.zmm-capture ]] && [[ -n $(ls -A "$work" 2>/dev/null) ]]; then
	die "$work is not empty and not a capture.sh scratch directory: set ZMM_WORK elsewhere"
fi
rm -rf "$work"
mkdir -p "$work" "$corpus"
touch "$work/.zmm-capture"
cp -r "$here/programs" "$P"

# run MODE NAME REQUESTS CMD...: runs the program once under zcapture, in a
# fresh working directory and home, with a fixed environment.
run() {
	local mode=$1 name=$2 requests=$3
	shift 3
	local dir=$work/$name.$mode
	mkdir -p "$dir/home"
	[[ $name == composer ]] && cp "$P/composer/composer.json" "$dir/"
	local args=(-r "$requests" -s "$work/$name.$mode.json")
	if [[ $mode == trace ]]; then args+=(-o "$corpus/$name.ztrace.gz"); else args+=(--zend-peaks); fi
	# shellcheck disable=SC2086
	(cd "$dir" && env -i PATH=/usr/bin:/bin HOME="$dir/home" LANG=C.UTF-8 TZ=UTC TERM=dumb COLUMNS=100 \
		COMPOSER_HOME="$dir/home/composer" COMPOSER_ALLOW_SUPERUSER=1 COMPOSER_DISABLE_NETWORK=1 \
		COMPOSER_NO_INTERACTION=1 COMPOSER_ROOT_VERSION=1.0.0 $NICE "$here/build/zcapture" "${args[@]}" "$@" \
		>"$work/$name.$mode.out" 2>"$work/$name.$mode.err") ||
		die "$name: zcapture ($mode) failed: see $work/$name.$mode.err"
}

# exit_statuses FILE: the summary's exit statuses, one line.
exit_statuses() { sed -n 's/.*"exit_status":\[\([0-9,]*\)\].*/\1/p' "$1"; }

# comparable FILE: the output without the lines that carry timings or
# memory figures (memory_get_usage() is 0 under the tracing handlers).
comparable() { grep -v -E 'Time: |Memory: |[0-9.]+ ?(ms|secs?|seconds)\b' "$1" || true; }

names=()
for entry in "${PROGRAMS[@]}"; do
	IFS='|' read -r name requests status mark cmd <<<"$entry"
	if ((${#wanted[@]})); then
		found=0
		for w in "${wanted[@]}"; do [[ $w == "$name" ]] && found=1; done
		((found)) || continue
	fi
	names+=("$name")
	echo "capture.sh: $name: $cmd (x$requests)" >&2
	# shellcheck disable=SC2086
	run trace "$name" "$requests" $cmd
	# shellcheck disable=SC2086
	run zend "$name" "$requests" $cmd

	want=$(printf "$status,%.0s" $(seq "$requests") | sed 's/,$//')
	for mode in trace zend; do
		got=$(exit_statuses "$work/$name.$mode.json")
		[[ $got == "$want" ]] || die "$name: exit statuses $got under $mode, want $want: see $work/$name.$mode.out and .err"
	done
	for mode in trace zend; do
		n=$(grep -c -E "$mark" "$work/$name.$mode.out" || true)
		((n >= requests)) || die "$name: under $mode, $n of $requests requests printed /$mark/: see $work/$name.$mode.out"
	done
	if ! diff <(comparable "$work/$name.trace.out") <(comparable "$work/$name.zend.out") >"$work/$name.diff"; then
		die "$name: the program printed other things when traced: see $work/$name.diff"
	fi
	"$here/build/ztracestat" -json "$corpus/$name.ztrace.gz" >"$work/$name.stat.json" ||
		die "$name: the trace is invalid"
	"$root/bench/c/build/replay-zend" "$corpus/$name.ztrace.gz" >"$work/$name.replay-zend.json" ||
		die "$name: replay-zend failed on the trace"
done
((${#names[@]})) || die "no program named ${wanted[*]}"

# The realism check, and the table.
traces=()
for name in "${names[@]}"; do traces+=("$corpus/$name.ztrace.gz"); done
"$here/build/ztracestat" -json -work "$work" "${traces[@]}" >"$work/stats.jsonl"
bad=$(awk -v tol="$PEAK_TOLERANCE" '
	{
		match($0, /"trace":"[^"]*"/); name = substr($0, RSTART + 9, RLENGTH - 10)
		match($0, /"program_peak_usage":[0-9]+/); p = substr($0, RSTART + 21, RLENGTH - 21)
		match($0, /"replayed_peak_usage":[0-9]+/); r = substr($0, RSTART + 22, RLENGTH - 22)
		if (p == 0 || r / p < 1 - tol || r / p > 1 + tol) printf "%s (program %d, replayed %d) ", name, p, r
	}' "$work/stats.jsonl")
[[ -z $bad ]] || die "replayed peaks differ from the programs' own by more than $PEAK_TOLERANCE: $bad"

if ((${#wanted[@]} == 0)); then
	{
		echo "# The real-program trace corpus"
		echo
		echo "Written by \`bench/capture/capture.sh\` on $(date -u '+%Y-%m-%d') ($(uname -m), $(sed -n 's/^PRETTY_NAME="\(.*\)"/\1/p' /etc/os-release))."
		echo "Do not edit: rerun the script. README.md says what each column means."
		echo
		echo "| trace | program (requests) |"
		echo "|---|---|"
		for entry in "${PROGRAMS[@]}"; do
			IFS='|' read -r name requests _ _ cmd <<<"$entry"
			echo "| $name.ztrace.gz | \`${cmd//$P/bench/capture/programs}\` (×$requests) |"
		done
		echo
		"$here/build/ztracestat" -work "$work" "${traces[@]}"
		echo
		echo "Sizes: $(cd "$corpus" && du -cb "${traces[@]##*/}" | awk 'END { printf "%.1f MB", $1 / 1e6 }') gzip'd in all."
		echo
		echo "Package versions:"
		echo
		dpkg-query -W -f='- ${Package} ${Version}\n' "${pkgs[@]}" php8.2-common php8.2-cli | sort -u
	} >"$here/STATS.md"
	echo "capture.sh: wrote $here/STATS.md" >&2
fi
echo "capture.sh: ${#names[@]} trace(s) in $corpus; runs and checks in $work" >&2
