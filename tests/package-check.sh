#!/usr/bin/env bash
# Package check (issue 8, first acceptance line), run as root on the host:
# builds the replipipe, replipipe-dkms and python3-replipipe .deb files
# (target `deb`), checks them with lintian, installs them with apt-get,
# checks what they put in place (binaries, unit, sysusers and tmpfiles
# entries, systemd-analyze verify, the DKMS build and install for every
# kernel with headers, man pages, the rtslib registration), then purges them
# and checks that nothing is left. A failed or interrupted run purges too.
#
# Usage: tests/package-check.sh [BUILD_DIR]
#   BUILD_DIR default: $REPLIPIPE_BUILD_DIR, else <repo>/build (configured
#   and built here when needed).
# Environment: REPLIPIPE_PACKAGE_CHECK_FORCE=1 purges an existing
#   installation of the packages (or DKMS registration of replipipe) first
#   instead of refusing to run.
# Exit status: 0 all checks passed, 1 a check failed, 2 cannot run here.
# The checks run in `bash -c '...' _ ARGS`: single quotes are meant.
# shellcheck disable=SC2016
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-${REPLIPIPE_BUILD_DIR:-$repo/build}}
build=$(realpath -m "$build")
name=replipipe
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o DPkg::Lock::Timeout=600)

say() { echo "package-check: $*"; }
passed=0
failed=0
pass() { say "PASS: $*"; passed=$((passed + 1)); }
fail() { say "FAIL: $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: PASS if the command succeeds.
check() {
	local what=$1
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() {
	say "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}

[ "$(id -u)" = 0 ] || { say "must run as root"; exit 2; }
for tool in apt-get dpkg-deb dkms cmake systemd-analyze lintian; do
	command -v "$tool" > /dev/null || { say "missing $tool"; exit 2; }
done

version=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$repo/dkms.conf")
[ -n "$version" ] || { say "no PACKAGE_VERSION in dkms.conf"; exit 2; }
usr_src=/usr/src/$name-$version

# Every kernel with headers, the ones the -dkms postinst builds for, less
# those without LIO (dkms.conf's BUILD_EXCLUSIVE_CONFIG skips them).
kvs=()
for d in /lib/modules/*/build; do
	[ -f "$d/Makefile" ] || continue
	kv=${d%/build}
	kv=${kv##*/}
	if [ -f "$d/.config" ] && ! grep -Eq '^CONFIG_TARGET_CORE=[ym]' "$d/.config"; then
		say "kernel $kv has no LIO (CONFIG_TARGET_CORE): DKMS skips it"
		continue
	fi
	kvs+=("$kv")
done
[ ${#kvs[@]} -gt 0 ] || { say "no kernel with headers and LIO (/lib/modules/*/build)"; exit 2; }

# tests/kbuild-check.sh uses the same DKMS name and version: one at a time.
exec {lock}> "${TMPDIR:-/tmp}/replipipe-dkms.lock"
flock "$lock"

packages=(replipipe replipipe-dkms python3-replipipe)
pkg_installed() { # PACKAGE: installed or half-installed in any way
	local status
	status=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2> /dev/null) || return 1
	[ -n "$status" ] && [ "$status" != not-installed ]
}
purge_all() {
	local p pkgs=()
	for p in "${packages[@]}"; do
		pkg_installed "$p" && pkgs+=("$p")
	done
	[ ${#pkgs[@]} -eq 0 ] || apt-get purge "${apt_opts[@]}" "${pkgs[@]}"
}

# --- preconditions: nothing of ours may be here yet -------------------------
leftover=()
for p in "${packages[@]}"; do
	! pkg_installed "$p" || leftover+=("package $p")
done
if [ -f "$usr_src/.replipipe-kbuild-check" ]; then
	# An interrupted tests/kbuild-check.sh (it holds the lock when running).
	dkms remove "$name/$version" --all > /dev/null 2>&1 || true
	rm -rf "$usr_src"
fi
[ ! -e "$usr_src" ] || leftover+=("$usr_src")
# dkms failing prints nothing too: that is not "nothing registered"
dkms_st=$(dkms status "$name") || { say "dkms status $name failed"; exit 2; }
[ -z "$dkms_st" ] || leftover+=("a DKMS registration of $name")
[ ! -e "/var/lib/dkms/$name" ] || leftover+=("/var/lib/dkms/$name")
if [ ${#leftover[@]} -gt 0 ]; then
	if [ "${REPLIPIPE_PACKAGE_CHECK_FORCE:-0}" != 1 ]; then
		say "this machine already has: ${leftover[*]}"
		say "remove them (apt-get purge ${packages[*]}; dkms remove $name/$version --all)" \
			"or set REPLIPIPE_PACKAGE_CHECK_FORCE=1"
		exit 2
	fi
	say "REPLIPIPE_PACKAGE_CHECK_FORCE=1: removing ${leftover[*]}"
	purge_all
	dkms remove "$name/$version" --all > /dev/null 2>&1 || true
	rm -rf "$usr_src" "/var/lib/dkms/$name"
fi
group_existed=0
getent group replipipe > /dev/null && group_existed=1

# --- cleanup: a failed or interrupted run leaves the machine as it found it -
installed=0
cleanup() {
	local rc=$?
	trap - EXIT
	if [ "$installed" = 1 ]; then
		say "cleanup: purging the packages"
		purge_all > /dev/null 2>&1 || say "cleanup: apt-get purge failed"
		dkms remove "$name/$version" --all > /dev/null 2>&1 || true
		rm -rf "/var/lib/dkms/$name"
	fi
	if [ "$group_existed" = 0 ] && getent group replipipe > /dev/null; then
		groupdel replipipe || say "cleanup: groupdel replipipe failed"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- build -------------------------------------------------------------------
if [ ! -f "$build/CMakeCache.txt" ]; then
	cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
fi
rm -f "$build"/replipipe_*.deb "$build"/replipipe-dkms_*.deb "$build"/python3-replipipe_*.deb
if cmake --build "$build" -j "$(nproc)" --target deb > "$build/package-check-build.log" 2>&1; then
	pass "cmake --build $build --target deb"
else
	tail -n 40 "$build/package-check-build.log"
	fail "cmake --build $build --target deb (log: $build/package-check-build.log)"
	finish
	exit 1
fi
shopt -s nullglob
debs=("$build"/replipipe_"$version"-*_*.deb)
dkms_debs=("$build"/replipipe-dkms_"$version"-*_all.deb)
py_debs=("$build"/python3-replipipe_"$version"-*_all.deb)
shopt -u nullglob
if [ ${#debs[@]} -ne 1 ] || [ ${#dkms_debs[@]} -ne 1 ] || [ ${#py_debs[@]} -ne 1 ]; then
	fail "exactly one replipipe_$version-*.deb, replipipe-dkms_$version-*_all.deb and python3-replipipe_$version-*_all.deb (found: ${debs[*]} ${dkms_debs[*]} ${py_debs[*]})"
	finish
	exit 1
fi
deb=${debs[0]}
dkms_deb=${dkms_debs[0]}
py_deb=${py_debs[0]}
pass "built $(basename "$deb"), $(basename "$dkms_deb") and $(basename "$py_deb")"

# --- lintian -------------------------------------------------------------------
# Every finding fails the check but these, which only the project's owner
# can settle (docs/decisions.md, 45): the licence of the user-space code
# (no copyright file), a real maintainer address, and an ITP bug to close
# should the packages go to Debian.
owner_tags='no-copyright-file|bogus-mail-host|bogus-mail-host-in-debian-changelog|initial-upload-closes-no-bugs'
lintian_out=$(lintian --tag-display-limit 0 "$deb" "$dkms_deb" "$py_deb" 2>&1 |
	grep -v '^running with root privileges' || :)
lintian_left=$(grep -Ev "^[EWIP]: [^ ]+: ($owner_tags)( |$)" <<< "$lintian_out" | sed '/^$/d' || :)
if [ -z "$lintian_left" ]; then
	pass "lintian: no findings beyond the owner's ($(grep -c . <<< "$lintian_out") of those)"
else
	printf '%s\n' "$lintian_left" | sed 's/^/    /'
	fail "lintian findings"
fi

# --- the packages' metadata and contents ---------------------------------------
depends=$(dpkg-deb -f "$deb" Depends)
check "replipipe Depends from dpkg-shlibdeps (libc6, libnl-genl-3-200, liburing2, libsystemd0): $depends" \
	bash -c 'for lib in libc6 libnl-genl-3-200 liburing2 libsystemd0; do
		grep -Eq "(^|, )$lib( |,|$)" <<< "$1" || exit 1; done' _ "$depends"
check "replipipe-dkms is Architecture: all and Depends: dkms" \
	bash -c '[ "$(dpkg-deb -f "$1" Architecture)" = all ] &&
		grep -Eq "(^|, )dkms( |,|$)" <<< "$(dpkg-deb -f "$1" Depends)"' _ "$dkms_deb"
check "replipipe-dkms Recommends the headers that follow each kernel (linux-headers-amd64)" \
	bash -c 'grep -Eq "(^|, )linux-headers-amd64( |$)" <<< "$(dpkg-deb -f "$1" Recommends)"' _ "$dkms_deb"
dkms_files=$(dpkg-deb -c "$dkms_deb" | awk '{print $6}')
check "replipipe-dkms holds dkms.conf, kmod/Kbuild, kmod/Makefile, uapi/linux/replipipe.h" \
	bash -c 'for f in dkms.conf kmod/Kbuild kmod/Makefile uapi/linux/replipipe.h; do
		grep -qx "\./usr/src/$2/$f" <<< "$1" || exit 1; done' _ "$dkms_files" "$name-$version"
check "replipipe-dkms holds no build products (*.o, *.ko, *.cmd, *.mod*)" \
	bash -c '! grep -Eq "\.(o|ko|cmd|mod|mod\.c|order)$|Module\.symvers" <<< "$1"' _ "$dkms_files"
check "replipipe marks /etc/default/replipiped as a conffile" \
	bash -c 'dpkg-deb --ctrl-tarfile "$1" | tar -xOf - ./conffiles | grep -qx /etc/default/replipiped' _ "$deb"
check "python3-replipipe is Architecture: all and Depends: python3, python3-rtslib-fb" \
	bash -c '[ "$(dpkg-deb -f "$1" Architecture)" = all ] && d=$(dpkg-deb -f "$1" Depends) &&
		grep -Eq "(^|, )python3(:any)?( |,|$)" <<< "$d" &&
		grep -Eq "(^|, )python3-rtslib-fb( |,|$)" <<< "$d"' _ "$py_deb"
# The listings first: a dpkg-deb that fails lists nothing, no dist-packages.
check "the rtslib registration is in python3-replipipe, not in replipipe" \
	bash -c 'py=$(dpkg-deb -c "$1") && main=$(dpkg-deb -c "$2") &&
		grep -q "/dist-packages/replipipe_lio.pth$" <<< "$py" &&
		! grep -q "/dist-packages/" <<< "$main"' _ "$py_deb" "$deb"

# --- install -------------------------------------------------------------------
installed=1
install_log=$(mktemp)
if apt-get install "${apt_opts[@]}" "$deb" "$dkms_deb" "$py_deb" 2>&1 | tee "$install_log"; then
	pass "apt-get install ./$(basename "$deb") ./$(basename "$dkms_deb") ./$(basename "$py_deb")"
else
	fail "apt-get install of the packages"
fi
# The -dkms postinst says when the running kernel got no module (its headers
# are missing: linux-headers-amd64 follows the newest kernel), and only then.
running=$(uname -r)
not_built="replipipe-dkms: $name/$version is not built for the running kernel $running"
if [ -e "/lib/modules/$running/build/Makefile" ]; then
	check "the -dkms postinst does not warn about the running kernel $running (it has headers)" \
		bash -c '! grep -qF "$1" "$2"' _ "$not_built" "$install_log"
else
	check "the -dkms postinst says the running kernel $running has no module and names linux-headers-$running" \
		bash -c 'grep -F "$1" "$2" | grep -qF "install linux-headers-$3,"' _ "$not_built" "$install_log" "$running"
fi
rm -f "$install_log"

check "replipiped --version prints \"replipiped $version\"" \
	bash -c '[ "$(/usr/sbin/replipiped --version)" = "replipiped $1" ]' _ "$version"
check "replipipectl --version prints \"replipipectl $version\"" \
	bash -c '[ "$(/usr/bin/replipipectl --version)" = "replipipectl $1" ]' _ "$version"
# The CLI's contract: daemon unreachable exits 69.
check "replipipectl against a missing socket exits 69" \
	bash -c '/usr/bin/replipipectl --socket /nonexistent/replipiped.sock list > /dev/null 2>&1; [ $? = 69 ]'

unit=/lib/systemd/system/replipiped.service
check "unit $unit installed" test -f "$unit"
check "sysusers.d entry /usr/lib/sysusers.d/replipipe.conf installed" \
	test -f /usr/lib/sysusers.d/replipipe.conf
check "tmpfiles.d entry /usr/lib/tmpfiles.d/replipipe.conf installed" \
	test -f /usr/lib/tmpfiles.d/replipipe.conf
check "default configuration /etc/default/replipiped installed" test -f /etc/default/replipiped
check "group replipipe exists (sysusers)" bash -c 'getent group replipipe > /dev/null'
check "/var/lib/replipipe is a directory, mode 700 (tmpfiles)" \
	bash -c '[ -d /var/lib/replipipe ] && [ "$(stat -c %a /var/lib/replipipe)" = 700 ]'
check "/run/replipipe is a directory, mode 755 (tmpfiles)" \
	bash -c '[ -d /run/replipipe ] && [ "$(stat -c %a /run/replipipe)" = 755 ]'
check "the unit's Documentation= file exists" test -f /usr/share/doc/replipipe/cli.md
# Debian's interpreter, which targetcli runs: a python3 earlier on PATH
# (pyenv's, say) does not read dist-packages.
# As targetctl at boot does, it may write bytecode beside the modules (not
# with PYTHONDONTWRITEBYTECODE, which some environments set): the purge
# below must remove that too.
check "rtslib_fb knows the replipipe backstore once python3-replipipe is installed" \
	env -u PYTHONDONTWRITEBYTECODE /usr/bin/python3 -c 'import rtslib_fb.tcm as t; assert "replipipe" in t.so_mapping'
check "a root Python wrote replipipe_lio's bytecode (what the purge must remove)" \
	test -d /usr/lib/python3/dist-packages/replipipe_lio/__pycache__
check "the unit is enabled (multi-user.target.wants)" \
	test -L /etc/systemd/system/multi-user.target.wants/replipiped.service

if verify_out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$verify_out" ]; then
	pass "systemd-analyze verify $unit: clean"
else
	printf '%s\n' "$verify_out" | sed 's/^/    /'
	fail "systemd-analyze verify $unit"
fi

for kv in "${kvs[@]}"; do
	st=$(dkms status "$name/$version" -k "$kv" 2> /dev/null || true)
	# The version as a literal in the pattern: 6.12's has a "+".
	kv_re=$(sed 's/[][\.*^$+?(){}|]/\\&/g' <<< "$kv")
	check "dkms status lists $name/$version installed for $kv ($st)" \
		grep -Eq "^$name/$version, $kv_re, [^:]*: installed" <<< "$st"
	# Compressed as the kernel's own modules are (xz on Debian's 6.12).
	ko=$(compgen -G "/lib/modules/$kv/updates/dkms/$name.ko*" | head -n 1) ||
		ko=/lib/modules/$kv/updates/dkms/$name.ko
	check "$ko installed, vermagic $kv" \
		bash -c '[ -f "$1" ] && modinfo -F vermagic "$1" | grep -q "^$2 "' _ "$ko" "$kv"
	check "modinfo -k $kv $name finds the DKMS module (depmod ran)" \
		bash -c '[ "$(modinfo -k "$1" -F filename replipipe 2> /dev/null)" = "$2" ]' _ "$kv" "$ko"
done

if command -v man > /dev/null && [ -x /usr/bin/mandb ]; then
	for page in replipiped.8 replipipectl.1; do
		sec=${page##*.}
		page=${page%.*}
		check "man -w $sec $page finds the installed page" \
			bash -c '[ "$(man -w "$2" "$1")" = "/usr/share/man/man$2/$1.$2.gz" ]' _ "$page" "$sec"
		check "man page $page($sec) renders without warnings" \
			bash -c 'out=$(MANWIDTH=80 man --warnings "$2" "$1" 2>&1 > /dev/null); [ -z "$out" ] || { echo "$out"; exit 1; }' _ "$page" "$sec"
	done
else
	say "man-db not installed: man page checks skipped"
fi

# --- remove, then purge -------------------------------------------------------
# remove runs prerm (dkms remove --all) alone: DKMS itself must leave nothing.
if apt-get remove "${apt_opts[@]}" replipipe-dkms; then
	pass "apt-get remove replipipe-dkms"
else
	fail "apt-get remove replipipe-dkms"
fi
check "after remove: no /var/lib/dkms/$name, no $name.ko* under /lib/modules/*/updates/dkms" \
	bash -c '[ ! -e "/var/lib/dkms/$1" ] && ! compgen -G "/lib/modules/*/updates/dkms/$1.ko*" > /dev/null' _ "$name"
if apt-get purge "${apt_opts[@]}" "${packages[@]}"; then
	pass "apt-get purge ${packages[*]}"
	installed=0
else
	fail "apt-get purge ${packages[*]}"
fi
check "dpkg knows none of the packages any more" \
	bash -c '! dpkg-query -W -f="\${db:Status-Status}\n" "$@" 2> /dev/null | grep -qv "^not-installed$"' _ "${packages[@]}"
left=()
for f in /usr/sbin/replipiped /usr/bin/replipipectl "$unit" \
	/usr/lib/sysusers.d/replipipe.conf /usr/lib/tmpfiles.d/replipipe.conf \
	/etc/default/replipiped /usr/share/doc/replipipe /usr/share/doc/replipipe-dkms \
	/usr/share/doc/python3-replipipe /usr/lib/python3/dist-packages/replipipe_lio \
	/usr/lib/python3/dist-packages/replipipe_lio.pth \
	/usr/share/man/man8/replipiped.8.gz /usr/share/man/man1/replipipectl.1.gz \
	/etc/systemd/system/multi-user.target.wants/replipiped.service \
	/var/lib/replipipe /run/replipipe "/var/lib/dkms/$name" "/usr/src/$name"-*; do
	[ ! -e "$f" ] && [ ! -L "$f" ] || left+=("$f")
done
for ko in /lib/modules/*/updates/dkms/"$name".ko*; do
	[ ! -e "$ko" ] || left+=("$ko")
done
if [ ${#left[@]} -eq 0 ]; then
	pass "purge left nothing behind (binaries, unit, entries, DKMS tree, modules)"
else
	fail "purge left: ${left[*]}"
fi
check "dkms status no longer lists $name" bash -c 'st=$(dkms status "$1") && [ -z "$st" ]' _ "$name"
# depmod ran: modules.dep has no replipipe.ko* entry (grep: 1 = none; 0 =
# one, 2 = no readable modules.dep; `! modinfo` passed on any error).
for kv in "${kvs[@]}"; do
	check "/lib/modules/$kv/modules.dep lists no $name module after purge (depmod ran)" \
		bash -c 'grep -Eq "^([^:]*/)?$2\.ko(\.[a-z0-9]+)?:" "/lib/modules/$1/modules.dep"; [ $? = 1 ]' _ "$kv" "$name"
done

finish
