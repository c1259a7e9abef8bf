#!/usr/bin/env bash
# zmm's modules as users get them: the root module github.com/gozmm/zmm and
# the nested modules that require it (zmmarrow, bench) at the version the
# next release will carry. Inside the repository go.work joins the three;
# a user's build sees only published versions, so these checks build a
# module proxy on the file system (.ci/modproxy) that serves this working
# tree at that version, and go through it.
#
#   bash .ci/modules.sh check     versions agree; every go.mod and go.sum is tidy
#   bash .ci/modules.sh tidy      makes every go.mod and go.sum tidy (go mod tidy, for the nested modules too)
#   bash .ci/modules.sh consume   modules outside the tree build and run zmm and zmmarrow from the proxy;
#                                 no zmm module requires modernc.org/memory (arrow-go does), and a
#                                 consumer of zmm alone resolves neither it nor arrow-go
#
# The release procedure (DESIGN.md, "Releasing") tags the root module
# first, then the nested modules.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ROOT_MODULE=github.com/gozmm/zmm
# The modules that require ROOT_MODULE, by directory.
NESTED=(zmmarrow bench)

if ! command -v go >/dev/null 2>&1; then
	export PATH="/usr/local/go/bin:$PATH"
fi

fail() {
	printf 'modules: FAILED: %s\n' "$*" >&2
	exit 1
}

# required_version DIR prints the version of ROOT_MODULE that DIR/go.mod
# requires (single-line or block form), or nothing.
required_version() {
	awk -v m="$ROOT_MODULE" '
		$1 == "require" && $2 == m { print $3; exit }
		$1 == m { print $2; exit }
	' "$1/go.mod"
}

# release_version prints the version the nested modules require, after
# checking that they all require the same one and that go.work points that
# version at the working tree (without the replace, workspace builds would
# try to download it).
release_version() {
	local v="" d dv
	for d in "${NESTED[@]}"; do
		dv=$(required_version "$d")
		[[ -n $dv ]] || fail "$d/go.mod does not require $ROOT_MODULE"
		[[ -z $v || $dv == "$v" ]] || fail "$d/go.mod requires $ROOT_MODULE $dv, ${NESTED[0]}/go.mod $v: the nested modules must require the same release"
		v=$dv
	done
	grep -qE "^[[:space:]]*(replace[[:space:]]+)?${ROOT_MODULE//./\\.}[[:space:]]+${v//./\\.}[[:space:]]+=>[[:space:]]+\./?[[:space:]]*$" go.work ||
		fail "go.work must replace $ROOT_MODULE $v (the version the nested modules require) with ./"
	if grep -qE '^[[:space:]]*replace|=>' go.mod "${NESTED[@]/%//go.mod}"; then
		fail "a go.mod has a replace directive: users' builds ignore it; development uses go.work"
	fi
	printf '%s\n' "$v"
}

TMP=""
cleanup() {
	if [[ -n $TMP ]]; then
		# The module cache is read-only; go clean empties it.
		if [[ -d $TMP/modcache ]]; then
			GOMODCACHE=$TMP/modcache go clean -modcache >/dev/null 2>&1 || chmod -R u+w "$TMP/modcache"
		fi
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT

# use_proxy VERSION builds the proxy serving the working tree's root and
# nested modules at VERSION and points the go command at it, in module mode.
# A fresh module cache keeps the proxy's copies, which change with every
# edit, out of the user's cache (a cached github.com/gozmm/zmm@VERSION would
# also hide this tree); the user's cache still serves everything else, as a
# proxy, before the network does.
use_proxy() {
	local v=$1 cache proxy sumdb
	TMP=$(mktemp -d)
	cache=$(go env GOMODCACHE)
	proxy=$(go env GOPROXY)
	sumdb=$(go env GONOSUMDB)
	(cd .ci/modproxy && GOWORK=off go run . -o "$TMP/proxy" -version "$v" -repo "$ROOT" . "${NESTED[@]}")
	export GOWORK=off
	export GOMODCACHE=$TMP/modcache
	export GOPROXY="file://$TMP/proxy,file://$cache/cache/download${proxy:+,$proxy}"
	# The proxy's versions are not (yet) in the checksum database.
	export GONOSUMDB="${sumdb:+$sumdb,}$ROOT_MODULE"
	# Without -trimpath the build cache keys hold the module cache's path,
	# which is new on every run: arrow-go would be compiled afresh each time.
	GOFLAGS="$(go env GOFLAGS) -trimpath"
	export GOFLAGS
}

# expected_sum DIR TIDIED prints the go.sum that DIR should have, given the
# go.sum TIDIED that go mod tidy wrote for it through the proxy: the lines
# for ROOT_MODULE hash this working tree, not the release, so they are
# replaced by DIR/go.sum's own lines for it (written at release time, see
# DESIGN.md) or dropped if it has none.
expected_sum() {
	local committed=$1/go.sum
	[[ -f $committed ]] || committed=/dev/null
	awk -v m="$ROOT_MODULE" -v committed="$committed" '
		FILENAME == committed { if ($1 == m) keep[$1 " " $2] = $0; next }
		$1 == m { if (($1 " " $2) in keep) print keep[$1 " " $2]; next }
		{ print }
	' "$committed" "$2"
}

# tidy_nested DIR MODE runs go mod tidy for the nested module in DIR on a
# copy of its go.mod and go.sum; MODE check compares, write writes back.
tidy_nested() {
	local d=$1 mode=$2 work
	work=$TMP/tidy/$d
	mkdir -p "$work"
	cp "$d/go.mod" "$work/go.mod"
	# Without the root module's own lines: once a release wrote them, they
	# hash the release, and the proxy's copy of this tree would not match.
	if [[ -f $d/go.sum ]]; then
		grep -v "^$ROOT_MODULE " "$d/go.sum" >"$work/go.sum" || true
	else
		: >"$work/go.sum"
	fi
	local log
	log=$(cd "$d" && go mod tidy -modfile="$work/go.mod" 2>&1) || {
		printf '%s\n' "$log" >&2
		fail "go mod tidy failed for $d through the proxy of this tree"
	}
	expected_sum "$d" "$work/go.sum" >"$work/expected.sum"
	case $mode in
	write)
		cp "$work/go.mod" "$d/go.mod"
		cp "$work/expected.sum" "$d/go.sum"
		;;
	check)
		local bad=0
		diff -u "$d/go.mod" "$work/go.mod" || bad=1
		diff -u "$d/go.sum" "$work/expected.sum" || bad=1
		((bad == 0)) || fail "$d/go.mod or go.sum is not tidy (diff above); run: bash .ci/modules.sh tidy"
		;;
	esac
}

cmd_tidy() {
	local mode=$1 v d
	v=$(release_version)
	# The root module and the proxy tool need nothing unpublished.
	if [[ $mode == check ]]; then
		GOWORK=off go mod tidy -diff || fail "go.mod or go.sum is not tidy (diff above); run: bash .ci/modules.sh tidy"
		(cd .ci/modproxy && GOWORK=off go mod tidy -diff) || fail ".ci/modproxy is not tidy (diff above); run: bash .ci/modules.sh tidy"
	else
		GOWORK=off go mod tidy
		(cd .ci/modproxy && GOWORK=off go mod tidy)
	fi
	use_proxy "$v"
	for d in "${NESTED[@]}"; do
		tidy_nested "$d" "$mode"
	done
	printf 'modules: %s tidy; the nested modules require %s %s\n' \
		"$([[ $mode == check ]] && echo every module is || echo made every module)" "$ROOT_MODULE" "$v"
}

# graph_lacks DIR MODULE... fails if the module graph of the consumer in
# DIR (what its build resolves) mentions any MODULE.
graph_lacks() {
	local dir=$1 m graph
	shift
	graph=$(cd "$dir" && go mod graph && go list -m all)
	for m in "$@"; do
		if grep -F "$m" <<<"$graph" >&2; then
			fail "the module graph of the consumer in ${dir##*/} holds $m (lines above)"
		fi
	done
}

# graph_edge_lacks DIR FROM TO fails if, in the module graph of the
# consumer in DIR, a module whose path starts with FROM requires one whose
# path starts with TO.
graph_edge_lacks() {
	local dir=$1 from=$2 to=$3 edges
	edges=$(cd "$dir" && go mod graph | awk -v f="$from" -v t="$to" 'index($1, f) == 1 && index($2, t) == 1')
	[[ -z $edges ]] || fail "in the module graph of the consumer in ${dir##*/}, $from requires $to: $edges"
}

# consumer DIR MODULE... makes an empty module in DIR that requires each
# MODULE at the release version. Its go directive starts below zmm's, so
# that go get raises it to exactly what the dependencies declare.
consumer() {
	local dir=$1 m
	shift
	mkdir -p "$dir"
	(
		cd "$dir"
		go mod init example.com/zmmconsumer >/dev/null 2>&1
		go mod edit -go=1.21
		for m in "$@"; do
			go get "$m@$VERSION"
		done
	)
}

cmd_consume() {
	VERSION=$(release_version)
	use_proxy "$VERSION"
	local want_go
	want_go=$(awk '$1 == "go" { print $2; exit }' go.mod)

	# zmm and zmmarrow together: an Arrow array in a zmm heap.
	local dir=$TMP/consumer-arrow
	consumer "$dir" "$ROOT_MODULE" "$ROOT_MODULE/zmmarrow"
	cat >"$dir/main.go" <<'EOF'
package main

import (
	"fmt"
	"os"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/gozmm/zmm/zmm"
	"github.com/gozmm/zmm/zmmarrow"
)

func main() {
	h, err := zmm.New(zmm.WithLimit(64 << 20))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer h.Close()
	b := array.NewInt64Builder(zmmarrow.New(h))
	for i := range 1000 {
		b.Append(int64(i))
	}
	arr := b.NewInt64Array()
	b.Release()
	inHeap := h.Usage()
	var sum int64
	for i := range arr.Len() {
		sum += arr.Value(i)
	}
	arr.Release()
	fmt.Printf("sum %d, %d bytes in the zmm heap while the array lived, %d after\n", sum, inHeap, h.Usage())
	if sum != 499500 || inHeap == 0 || h.Usage() != 0 {
		os.Exit(1)
	}
}
EOF
	(
		cd "$dir"
		go mod tidy
		go vet ./...
		go run .
	) || fail "a module outside the tree could not build or run zmm with zmmarrow from $ROOT_MODULE@$VERSION"
	# arrow-go itself requires modernc.org/memory: zmm's modules must not.
	graph_edge_lacks "$dir" "$ROOT_MODULE" modernc.org/memory
	grep -q "^go $want_go\$" "$dir/go.mod" ||
		fail "requiring zmm and zmmarrow raised a consumer's go directive to $(awk '$1 == "go" {print $2}' "$dir/go.mod"), above zmm's go $want_go"

	# zmm alone: no Arrow, no benchmark peers in the graph.
	dir=$TMP/consumer-zmm
	consumer "$dir" "$ROOT_MODULE"
	cat >"$dir/main.go" <<'EOF'
package main

import (
	"fmt"
	"os"

	"github.com/gozmm/zmm/zmm"
)

func main() {
	h, err := zmm.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer h.Close()
	buf := h.AllocBytes(100)
	copy(buf, "hello from a zmm heap")
	fmt.Printf("%s (%d bytes in use)\n", buf[:21], h.Usage())
	h.FreeBytes(buf)
	if h.Usage() != 0 {
		os.Exit(1)
	}
}
EOF
	(
		cd "$dir"
		go mod tidy
		go vet ./...
		go run .
	) || fail "a module outside the tree could not build or run zmm from $ROOT_MODULE@$VERSION"
	graph_lacks "$dir" modernc.org/memory github.com/apache/arrow-go
	grep -q "^go $want_go\$" "$dir/go.mod" ||
		fail "requiring zmm raised a consumer's go directive to $(awk '$1 == "go" {print $2}' "$dir/go.mod"), above zmm's go $want_go"
	printf 'modules: consumers outside the tree build and run %s and %s/zmmarrow at %s (go %s); zmm'"'"'s modules require no modernc.org/memory, and zmm alone brings neither it nor arrow-go\n' \
		"$ROOT_MODULE" "$ROOT_MODULE" "$VERSION" "$want_go"
}

case ${1:-} in
check) cmd_tidy check ;;
tidy) cmd_tidy write ;;
consume) cmd_consume ;;
*)
	printf 'usage: bash .ci/modules.sh check|tidy|consume\n' >&2
	exit 2
	;;
esac
