#!/usr/bin/env bash
# build.sh: installs what the C replay harness needs (Debian bookworm
# packages) and builds one replay binary per allocator into bench/c/build/:
#   replay-glibc  replay-jemalloc  replay-mimalloc  replay-zend
# and replay-bump, the C loop's floor (a bump allocator: see replay.c).
# Usage: bench/c/build.sh [--no-install]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/build"
NICE=${NICE:-nice -n 10}

die() { echo "build.sh: $*" >&2; exit 1; }

# Debian package -> a file that proves it is installed.
pkgs=(gcc zlib1g-dev libjemalloc-dev libmimalloc-dev libphp8.2-embed php8.2-dev)
declare -A probe=(
	[gcc]=/usr/bin/gcc
	[zlib1g-dev]=/usr/include/zlib.h
	[libjemalloc-dev]=/usr/include/jemalloc/jemalloc.h
	[libmimalloc-dev]=/usr/include/mimalloc.h
	[libphp8.2-embed]=/usr/lib/libphp8.2.so
	[php8.2-dev]=/usr/bin/php-config8.2
)

install=1
[[ "${1:-}" == "--no-install" ]] && install=0

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || [[ ! -e "${probe[$p]}" ]]; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	((install)) || die "missing Debian packages: ${missing[*]} (run without --no-install, as root)"
	[[ $(id -u) == 0 ]] || die "missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install -y ${missing[*]})"
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: this script expects Debian 12 (bookworm)"
	echo "build.sh: installing ${missing[*]}" >&2
	$NICE apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive $NICE apt-get install -y -qq "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
fi
for p in "${pkgs[@]}"; do
	[[ -e "${probe[$p]}" ]] || die "package $p is installed but ${probe[$p]} is missing"
done

mkdir -p "$out"
CC=${CC:-gcc}
CFLAGS=${CFLAGS:-"-O2 -g -std=gnu11 -Wall -Wextra -Wno-unused-parameter"}
src="$here/replay.c"

build() { # name, extra flags...
	local name=$1; shift
	echo "build.sh: $name" >&2
	$NICE $CC $CFLAGS -o "$out/$name" "$src" "$@" || die "compiling $name failed"
}

build replay-glibc -DALLOC_GLIBC -lz
build replay-jemalloc -DALLOC_JEMALLOC -lz -ljemalloc
build replay-mimalloc -DALLOC_MIMALLOC -lz -lmimalloc
build replay-bump -DALLOC_BUMP -lz

phpinc=$(php-config8.2 --includes) || die "php-config8.2 --includes failed"
phplib=$(dirname "$(readlink -f /usr/lib/libphp8.2.so)")
# shellcheck disable=SC2086
build replay-zend -DALLOC_ZEND $phpinc -lz -L"$phplib" -lphp8.2 -Wl,-rpath,"$phplib"

dpkg-query -W -f='${Package} ${Version}\n' "${pkgs[@]}" libjemalloc2 libmimalloc2.0 >"$out/versions.txt" 2>/dev/null || true

# Each binary must run: a missing shared library shows up here, not later.
for b in glibc jemalloc mimalloc zend bump; do
	"$out/replay-$b" --version >/dev/null || die "$out/replay-$b does not run"
done
echo "build.sh: built $out/replay-{glibc,jemalloc,mimalloc,zend,bump}" >&2
