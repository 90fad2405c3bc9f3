#!/usr/bin/env bash
# Build checks of replipipe.ko on the host (no module loading):
#   dkms   DKMS add/build for every installed kernel version with headers,
#          from a temporary /usr/src/replipipe-<version>/, removed afterwards
#   w1     make W=1 KCFLAGS=-Werror (warnings are errors)
#   sparse make C=1; any sparse warning/error in our files fails
#          (with w1: one build per kernel, make W=1 C=1 KCFLAGS=-Werror)
# Usage: tests/kbuild-check.sh [--kernel-version KV] [CHECK...] (default: all)
# KV (default: every version with headers) applies to all checks.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=vm/lib/host-common.sh
. "$repo_root/tests/vm/lib/host-common.sh"

say() { echo "kbuild-check: $*"; }

kvs=()
if [ "${1:-}" = --kernel-version ]; then
	kvs=("$2")
	shift 2
fi
[ ${#kvs[@]} -gt 0 ] || mapfile -t kvs < <(rp_header_kernel_versions)
[ ${#kvs[@]} -gt 0 ] || { say "no kernel headers installed (/lib/modules/*/build)"; exit 2; }
checks=("$@")
[ ${#checks[@]} -gt 0 ] || checks=(dkms w1 sparse)

[ -f "$repo_root/kmod/Makefile" ] || { say "FAIL: kmod/Makefile missing"; exit 1; }
[ -f "$repo_root/dkms.conf" ] || { say "FAIL: dkms.conf missing"; exit 1; }
version=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$repo_root/dkms.conf")
[ -n "$version" ] || { say "FAIL: no PACKAGE_VERSION in dkms.conf"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rp-kbuild.XXXXXX")
usr_src=/usr/src/replipipe-$version
dkms_added=0
# Set once this run made $usr_src: only then does its exit remove it (a
# run of the w1 or sparse checks alone once removed the copy a test
# command's dkms check was building from).
usr_src_ours=0
cleanup() {
	if [ $dkms_added = 1 ]; then
		dkms remove "replipipe/$version" --all > /dev/null 2>&1 ||
			say "warning: dkms remove replipipe/$version --all failed"
	fi
	if [ $usr_src_ours = 1 ] && [ -f "$usr_src/.replipipe-kbuild-check" ]; then
		rm -rf "$usr_src"
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# copy_sources DEST: kmod/, uapi/ and dkms.conf without build products.
copy_sources() {
	local files=()
	mapfile -t files < <(cd "$repo_root" && find kmod uapi -type f \
		! -name '*.o' ! -name '*.ko' ! -name '*.mod' ! -name '*.mod.c' ! -name '*.cmd' \
		! -name '*.order' ! -name Module.symvers ! -name '*.o.d' ! -name '*.dwo' | LC_ALL=C sort)
	mkdir -p "$1"
	(cd "$repo_root" && tar -cf - dkms.conf "${files[@]}") | tar -C "$1" -xf -
}

failures=0
fail() { say "FAIL: $*"; failures=$((failures + 1)); }

check_dkms() {
	local kv log
	exec {lock}> "${TMPDIR:-/tmp}/replipipe-dkms.lock"
	flock "$lock"
	if [ -e "$usr_src" ] && [ ! -f "$usr_src/.replipipe-kbuild-check" ]; then
		fail "dkms: $usr_src exists and is not ours; not touching it"
		return
	fi
	# Leftovers of an interrupted run of this script: removed with the
	# sources in place, which dkms needs to remove a module (it reads
	# their dkms.conf), so that a registration whose sources went away
	# does not make the add below fail.
	rm -rf "$usr_src"
	usr_src_ours=1
	copy_sources "$usr_src"
	touch "$usr_src/.replipipe-kbuild-check"
	dkms remove "replipipe/$version" --all > /dev/null 2>&1 || true
	dkms_added=1
	if ! dkms add "replipipe/$version"; then
		fail "dkms add replipipe/$version"
		return
	fi
	for kv in "${kvs[@]}"; do
		if dkms build "replipipe/$version" -k "$kv"; then
			say "ok: dkms build replipipe/$version -k $kv"
		else
			log=/var/lib/dkms/replipipe/$version/build/make.log
			[ ! -f "$log" ] || tail -n 40 "$log"
			fail "dkms build replipipe/$version -k $kv"
		fi
	done
	# A kernel older than 6.1 is skipped (exit 77: BUILD_EXCLUSIVE_KERNEL),
	# not a failure: headers left from an older release must not fail the
	# package's configure. Named older, built against headers that exist.
	local rc=0
	dkms build "replipipe/$version" -k 5.10.0-28-amd64 \
		--kernelsourcedir "/lib/modules/${kvs[0]}/build" > "$tmp/dkms-old.log" 2>&1 || rc=$?
	if [ $rc -eq 77 ]; then
		say "ok: dkms build replipipe/$version -k 5.10.0-28-amd64 is skipped (exit 77)"
	else
		cat "$tmp/dkms-old.log"
		fail "dkms build for a 5.10 kernel: exit $rc, not 77 (skipped)"
	fi
	dkms status replipipe || true
	dkms remove "replipipe/$version" --all > /dev/null || fail "dkms remove replipipe/$version --all"
	dkms_added=0
	rm -rf "$usr_src"
	[ -z "$(dkms status replipipe 2>/dev/null)" ] || fail "dkms still lists replipipe after remove"
}

# make_in DIR KV ARGS...: a clean build of a fresh copy of the sources.
make_in() {
	local dir=$1 kv=$2
	shift 2
	rm -rf "$dir"
	copy_sources "$dir"
	make -C "$dir/kmod" KDIR="/lib/modules/$kv/build" -j"$(nproc)" "$@"
}

# sparse_clean KV DIR LOG: sparse ran in LOG's build and said nothing about
# our sources.
sparse_clean() {
	local kv=$1 dir=$2 log=$3 bad
	grep -q '^  CHECK ' "$log" || { fail "make C=1 ($kv): sparse did not run"; return; }
	# Diagnostics about our sources (kmod/, uapi/), wherever sparse printed them.
	bad=$(grep -E ':[0-9]+:[0-9]+: (warning|error):' "$log" |
		grep -E "(^|/)(kmod|uapi)/" || true)
	if [ -n "$bad" ]; then
		printf '%s\n' "$bad" | sed "s|$dir/||g"
		fail "sparse ($kv): $(printf '%s\n' "$bad" | wc -l) diagnostic(s) in our files"
	else
		say "ok: make C=1, sparse clean ($kv)"
	fi
}

# check_make W1 SPARSE (each 0 or 1): one clean build per kernel with
# W=1 KCFLAGS=-Werror (warnings are errors) and/or C=1 (sparse checks each
# file the build compiles); both in one build when both are asked, a third
# fewer module builds in the test command.
check_make() {
	local w1=$1 sparse=$2 kv dir args=()
	[ "$w1" = 0 ] || args+=(W=1 KCFLAGS=-Werror)
	[ "$sparse" = 0 ] || args+=(C=1)
	for kv in "${kvs[@]}"; do
		dir=$tmp/make-$kv
		if ! make_in "$dir" "$kv" "${args[@]}" > "$dir.log" 2>&1; then
			cat "$dir.log"
			fail "make ${args[*]} ($kv): the build failed"
			continue
		fi
		[ "$w1" = 0 ] || say "ok: make W=1 KCFLAGS=-Werror ($kv)"
		[ "$sparse" = 0 ] || sparse_clean "$kv" "$dir" "$dir.log"
	done
}

want() { [[ " ${checks[*]} " == *" $1 "* ]]; }
for c in "${checks[@]}"; do
	case "$c" in
	dkms | w1 | sparse) ;;
	*) say "unknown check $c (dkms, w1, sparse)"; exit 64 ;;
	esac
done
! want dkms || check_dkms
w1=0 sparse=0
! want w1 || w1=1
! want sparse || sparse=1
[ "$w1$sparse" = 00 ] || check_make $w1 $sparse

if [ $failures -ne 0 ]; then
	say "$failures check(s) failed"
	exit 1
fi
say "all checks passed for ${kvs[*]}"
