#!/usr/bin/env bash
# Builds the VM bench's debug kernel (KASAN, lockdep, kmemleak, UBSAN, fault
# injection) from Debian's linux-source-6.1 with the fragment
# tests/vm/debug-kernel.config on allnoconfig, or reuses the cached build.
#
#   tests/vm/debug-kernel.sh [--cached-only]
#
# Prints the build's directory on stdout (progress goes to stderr):
#   DIR/bzImage            the kernel
#   DIR/kernelrelease      its version (KV)
#   DIR/modules/lib/modules/KV/   `make modules_install` output (depmod'ed)
#   DIR/build/             the configured tree for external modules:
#                          make -C DIR/build M=<dir> modules
#   DIR/config, DIR/build.log, DIR/build-seconds
# --cached-only: print DIR when the build is cached, else exit 1 (no build).
#
# The cache key is the hash of the linux-source-6.1 package version, the
# compiler version, the fragment and this script. The cache lives outside the
# repository: $REPLIPIPE_DEBUG_KERNEL_CACHE, else /var/cache/replipipe/debug-kernel
# when writable, else ~/.cache/replipipe/debug-kernel. A build is published
# with one rename, so a reader sees a complete build or none.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$script_dir/debug-kernel.config
src_pkg=linux-source-6.1
src_tar=/usr/src/$src_pkg.tar.xz

say() { echo "debug-kernel: $*" >&2; }
die() { say "error: $*"; exit 2; }

cached_only=0
case "${1:-}" in
'') ;;
--cached-only) cached_only=1 ;;
*) echo "usage: $0 [--cached-only]" >&2; exit 64 ;;
esac

cache_root() {
	local d
	if [ -n "${REPLIPIPE_DEBUG_KERNEL_CACHE:-}" ]; then
		echo "$REPLIPIPE_DEBUG_KERNEL_CACHE"
		return
	fi
	d=/var/cache/replipipe/debug-kernel
	if mkdir -p "$d" 2>/dev/null && [ -w "$d" ]; then
		echo "$d"
		return
	fi
	echo "${XDG_CACHE_HOME:-$HOME/.cache}/replipipe/debug-kernel"
}

pkg_version() {
	dpkg-query -W -f='${Status} ${Version}\n' "$src_pkg" 2>/dev/null |
		sed -n 's/^install ok installed //p'
}

version=$(pkg_version)
if [ -z "$version" ] || [ ! -f "$src_tar" ]; then
	[ "$cached_only" = 0 ] || exit 1
	die "$src_pkg is not installed (tools/setup-deps.sh installs it)"
fi
cc_version=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)
hash=$( {
	echo "$src_pkg $version gcc $cc_version"
	cat "$fragment" "${BASH_SOURCE[0]}"
} | sha256sum | cut -c1-16)
cache=$(cache_root)
dir=$cache/$version-$hash

if [ -f "$dir/bzImage" ]; then
	echo "$dir"
	exit 0
fi
[ "$cached_only" = 0 ] || exit 1

mkdir -p "$cache"
# One builder at a time; whoever waited finds the build published.
exec {lock}> "$cache/.lock"
if ! flock -n "$lock"; then
	say "waiting for another build of the debug kernel"
	flock "$lock"
fi
if [ -f "$dir/bzImage" ]; then
	echo "$dir"
	exit 0
fi

for t in bc bison flex gcc make perl pahole; do
	command -v "$t" > /dev/null || die "$t is not installed (tools/setup-deps.sh)"
done
[ -e /usr/include/openssl/ssl.h ] || die "libssl-dev is not installed"
[ -e /usr/include/libelf.h ] || die "libelf-dev is not installed"

started=$SECONDS
tmp=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log=$tmp/build.log
say "building $src_pkg $version into $dir (log: $log while it runs)"
mkdir -p "$tmp/build"
tar -C "$tmp/build" --strip-components=1 -xf "$src_tar"
cd "$tmp/build"

# allnoconfig with the fragment as the starting values: every symbol not in
# the fragment takes its "no" (or the default of a hidden symbol).
make -s allnoconfig KCONFIG_ALLCONFIG="$fragment" >> "$log" 2>&1
bad=0
while read -r line; do
	if ! grep -qxF "$line" .config; then
		sym=$(echo "$line" | grep -oE 'CONFIG_[A-Z0-9_]+')
		say "fragment asks '$line', the config has '$(grep -E "^(# )?$sym[= ]" .config || echo "nothing")'"
		bad=1
	fi
done < <(grep -E '^(CONFIG_[A-Z0-9_]+=.*|# CONFIG_[A-Z0-9_]+ is not set)$' "$fragment")
[ "$bad" = 0 ] || die "the fragment does not hold on $src_pkg $version (dependencies changed?)"

# The checkers' own machinery is built without KASAN and UBSAN (the kernel
# already builds KASAN itself without either, and SLUB, the stack depot
# and stacktrace.c without KASAN):
# lockdep (every lock taken), kmemleak (every allocation, and its scans),
# debug objects (every timer, work item, RCU head) and the ORC unwinder
# (the stack trace kmemleak and KASAN save for every allocation and free).
# They run for every operation of the module under test, and their checks
# found nothing but cost guest CPU under TCG: a report there would be about
# the checker, not about replipipe. The module's own code, and the code it
# calls, keep every check (decision 78).
unchecked=(kmemleak lockdep lockdep_proc debugobjects unwind_orc)
unchecked_vars=()
for o in "${unchecked[@]}"; do
	unchecked_vars+=("KASAN_SANITIZE_$o.o=n" "UBSAN_SANITIZE_$o.o=n")
done
kv=$(make -s kernelrelease)
say "configured $kv; make -j$(nproc) bzImage modules (nice 19)"
if ! nice -n 19 make -j"$(nproc)" "${unchecked_vars[@]}" bzImage modules >> "$log" 2>&1; then
	tail -n 40 "$log" >&2
	cp "$log" "$cache/failed.log"
	die "kernel build failed (log kept: $cache/failed.log)"
fi
make -s modules_install INSTALL_MOD_PATH="$tmp/modules" INSTALL_MOD_STRIP=1 >> "$log" 2>&1
rm -f "$tmp/modules/lib/modules/$kv/build" "$tmp/modules/lib/modules/$kv/source"
[ -f "$tmp/modules/lib/modules/$kv/modules.dep" ] || die "modules_install left no modules.dep"
cp arch/x86/boot/bzImage "$tmp/bzImage.new"
cp .config "$tmp/config"
echo "$kv" > "$tmp/kernelrelease"

# Keep what `make -C build M=... modules` needs (config, headers, scripts,
# objtool, Module.symvers, the sources' Makefiles/Kconfig); drop the objects.
rm -f vmlinux vmlinux.o vmlinux.a arch/x86/boot/bzImage
find . \( -path ./scripts -o -path ./tools \) -prune -o \
	\( -name '*.o' -o -name '*.ko' -o -name '*.a' -o -name '.*.cmd' -o -name '*.mod.c' \) -type f -print0 |
	xargs -0 rm -f
rm -rf Documentation
cd /

echo $((SECONDS - started)) > "$tmp/build-seconds"
mv "$tmp/bzImage.new" "$tmp/bzImage"
mv -T "$tmp" "$dir"
trap - EXIT
say "built $kv in $((SECONDS - started)) s ($(du -sm "$dir" | cut -f1) MiB in $dir)"
echo "$dir"
