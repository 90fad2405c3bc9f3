#!/usr/bin/env bash
# Boots Debian's kernel under QEMU with LIO, replipipe.ko and the project's
# binaries and runs one VM scenario, or several one after another in one boot
# (--name; decision 95); see tests/vm/README.md.
#
#   tests/vm/run-scenario.sh SCENARIO [--kernel-version KV | --default-kernel | --debug-kernel]
#   tests/vm/run-scenario.sh --name NAME SCENARIO... [--debug-kernel ...]
#
# Exit 0 only when the guest printed the PASS marker, the kernel log has no
# BUG:/WARNING:/Oops/Call Trace, the taint is at most O|E and the time-out did
# not expire. With `# vm-boots: N` the VM boots N times on the same disks;
# every boot but the last must end with the REBOOT marker (a deliberate crash).
# Environment:
#   REPLIPIPE_BUILD_DIR      CMake build dir holding bin/ (default <repo>/build)
#   REPLIPIPE_VM_KO          use this replipipe.ko instead of building kmod/
#   REPLIPIPE_VM_EXTRA_KO    more .ko files for /lib/modules/KV/extra/ (space-separated)
#   REPLIPIPE_VM_KEEP_DISKS  1: keep existing `# vm-disks:` images instead of recreating them
#   REPLIPIPE_VM_ACCEL       QEMU accelerator (default tcg)
#   REPLIPIPE_VM_NO_LOCK     1: do not wait for other VM runs on this host
#   REPLIPIPE_VM_SLOTS       how many VM runs may share this host (default 1)
#   REPLIPIPE_VM_QUIET       1: do not copy the console to stdout
#   REPLIPIPE_VM_INIT_DEADLINE seconds until a guest silent before /init is
#                            booted again, twice at most (default 60, debug
#                            kernel 120)
#   REPLIPIPE_VM_DEBUG_KERNEL 1: same as --debug-kernel (tests/vm/debug-kernel.sh:
#                            KASAN, lockdep, kmemleak, UBSAN, fault injection)
set -euo pipefail
# The whole script is one { } block, which bash reads to its end before it
# runs any of it: editing this file while scenarios run (two at a time, for
# minutes) cannot change what a running copy reads next.
{

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
# shellcheck source=lib/host-common.sh
. "$script_dir/lib/host-common.sh"

usage() {
	echo "usage: $0 [--name NAME] SCENARIO... [--kernel-version KV | --default-kernel | --debug-kernel]" >&2
	exit 64
}

say() { echo "run-scenario: $*" >&2; }
die() { say "error: $*"; exit 2; }

scenarios=()
name=
kv=
default_kernel=0
debug_kernel=${REPLIPIPE_VM_DEBUG_KERNEL:-0}
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel-version) [ $# -ge 2 ] || usage; kv=$2; shift 2 ;;
	--kernel-version=*) kv=${1#*=}; shift ;;
	--debug-kernel) debug_kernel=1; shift ;;
	--default-kernel) default_kernel=1; shift ;;
	--name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
	-h | --help) usage ;;
	-*) usage ;;
	*) scenarios+=("$1"); shift ;;
	esac
done
[ ${#scenarios[@]} -gt 0 ] || usage
for i in "${!scenarios[@]}"; do
	[ -f "${scenarios[i]}" ] || die "no scenario file ${scenarios[i]}"
	scenarios[i]=$(cd "$(dirname "${scenarios[i]}")" && pwd)/$(basename "${scenarios[i]}")
done
# One scenario: the log and disks are named after it. Several (a batch):
# after --name, which they need.
if [ ${#scenarios[@]} -eq 1 ]; then
	name=${name:-$(basename "${scenarios[0]}" .sh)}
else
	[ -n "$name" ] || die "several scenarios need --name NAME for their log"
fi
[[ $name =~ ^[A-Za-z0-9_.+-]+$ ]] || die "bad name '$name'"

# ---- the kernel ------------------------------------------------------------
# Debian's (the default) or the debug kernel. kernel_image boots, mod_root is
# the prefix of lib/modules/KV (empty: the host's /lib/modules), kernel_build
# is the tree external modules build against, kernel_id goes into cache keys.
kernel_image= mod_root= kernel_build= kernel_id= log_subdir= kernel_append=
machine=pc

# The debug kernel: built (or found cached) by tests/vm/debug-kernel.sh;
# `# vm-kernel: debug` in a scenario asks for it too.
use_debug_kernel() {
	local dir
	[ -z "$kv" ] || die "--kernel-version and --debug-kernel exclude each other"
	dir=$("$script_dir/debug-kernel.sh") || die "the debug kernel is not available"
	kv=$(cat "$dir/kernelrelease")
	kernel_image=$dir/bzImage
	mod_root=$dir/modules
	kernel_build=$dir/build
	kernel_id=debug:${dir##*/}
	log_subdir=debug-kernel # vm-logs/debug-kernel/<scenario>.log
	# replipipe's request cache carries SLAB_FAILSLAB (failslab's
	# cache-filter; the sysfs flag is read-only in 6.1). Inert until a
	# scenario sets a failslab probability (debug-fault-inject).
	kernel_append="slub_debug=A,rp_req"
	# q35, not i440fx (pc): i440fx's \_SB.PCI0._PRT builds its table in an
	# AML loop of 128 rounds, which ACPICA under this kernel's checkers and
	# TCG takes about 25 s to run for each virtio disk (and can end in
	# AE_AML_LOOP_TIMEOUT): a boot with two virtio disks reached /init
	# after 58 s, on q35 (whose table is a constant) after 7. Routing PCI interrupts without ACPI
	# (pci=noacpi, acpi=noirq) also drops the MADT: one CPU instead of two.
	machine=q35
	[ -d "$mod_root/lib/modules/$kv/kernel" ] || die "no $mod_root/lib/modules/$kv/kernel"
	# Under TCG the checkers cost time (KASAN shadow checks, lockdep): the
	# same scenario gets more wall time before it counts as hung.
	timeout_factor=${REPLIPIPE_VM_DEBUG_TIMEOUT_FACTOR:-3}
}

timeout_factor=1
# header_of FILE KEY: the value of FILE's first `# vm-KEY:` line, or nothing.
header_of() {
	sed -n "s/^#[[:space:]]*vm-$2:[[:space:]]*//p" "$1" | head -n 1 | sed 's/[[:space:]]*$//'
}
for f in "${scenarios[@]}"; do
	scenario_kernel=$(header_of "$f" kernel)
	case "$scenario_kernel" in
	'') ;;
	debug) debug_kernel=1 ;;
	*) die "bad vm-kernel '$scenario_kernel' in ${f##*/} (only: debug)" ;;
	esac
done
# --default-kernel: the kernel of Debian's linux-image-amd64 (the vmdefault
# tier), when a newer one is installed (the vm tier boots the newest). With
# none newer the vm tier already boots it: exit 77, which CTest reports as
# skipped.
if [ "$default_kernel" = 1 ]; then
	[ -z "$kv" ] && [ "$debug_kernel" = 0 ] ||
		die "--default-kernel excludes --kernel-version and --debug-kernel"
	if ! kv=$(rp_default_kernel_version); then
		say "skipped: no kernel of Debian's linux-image-amd64 to boot"
		exit 77
	fi
	if [ "$kv" = "$(rp_newest_kernel_version)" ]; then
		say "skipped: Debian's default kernel $kv is the newest installed, which the vm tier boots"
		exit 77
	fi
	log_subdir=default-kernel # vm-logs/default-kernel/<scenario>.log
fi
if [ "$debug_kernel" = 1 ]; then
	use_debug_kernel
else
	[ -n "$kv" ] || kv=$(rp_newest_kernel_version)
	[ -e "/boot/vmlinuz-$kv" ] || die "no /boot/vmlinuz-$kv"
	[ -d "/lib/modules/$kv/kernel" ] || die "no /lib/modules/$kv/kernel"
	kernel_image=/boot/vmlinuz-$kv
	kernel_build=/lib/modules/$kv/build
fi
modprobe_root=()
[ -z "$mod_root" ] || modprobe_root=(-d "$mod_root")

build_dir=${REPLIPIPE_BUILD_DIR:-$repo_root/build}
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
cache_dir=$build_dir/vm-cache
log_dir=$build_dir/vm-logs${log_subdir:+/$log_subdir}
mkdir -p "$cache_dir" "$log_dir"
log=$log_dir/$name.log

# ---- scenario header ----------------------------------------------------
# One scenario: its header. A batch: the time-outs summed (each scenario
# keeps its own in the guest), the most memory any asks for, all their
# vm-bins and vm-files, and dmsetup (guest-reset.sh); at most one of them
# with vm-disks, and none with vm-init, vm-ko or vm-boots, which are about
# the whole boot.
timeout_s=0
mem_mib=0
vm_bins=() vm_files=() vm_disks=() limits=()
for f in "${scenarios[@]}"; do
	t=$(header_of "$f" timeout); t=${t:-300}
	[[ $t =~ ^[0-9]+$ ]] || die "bad vm-timeout '$t' in ${f##*/}"
	t=$((t * timeout_factor))
	timeout_s=$((timeout_s + t))
	# The guest gives up 30 s before the host so it can still report.
	limits+=($((t > 60 ? t - 30 : t * 3 / 4)))
	m=$(header_of "$f" mem); m=${m:-1024}
	[[ $m =~ ^[0-9]+$ ]] || die "bad vm-mem '$m' in ${f##*/}"
	[ "$m" -le "$mem_mib" ] || mem_mib=$m
	read -r -a a <<< "$(header_of "$f" bins)"; vm_bins+=("${a[@]}")
	read -r -a a <<< "$(header_of "$f" files)"; vm_files+=("${a[@]}")
	read -r -a a <<< "$(header_of "$f" disks)"
	if [ ${#a[@]} -gt 0 ]; then
		[ ${#vm_disks[@]} -eq 0 ] || die "at most one scenario of a batch may have vm-disks (${f##*/})"
		vm_disks=("${a[@]}")
	fi
done
vm_ko=$(header_of "${scenarios[0]}" ko)
# `# vm-init: systemd`: systemd is the guest's PID 1 (guest-init.sh); the
# scenario ships systemd and the units it needs (vm-bins, vm-files).
vm_init=$(header_of "${scenarios[0]}" init)
boots=$(header_of "${scenarios[0]}" boots); boots=${boots:-1}
if [ ${#scenarios[@]} -gt 1 ]; then
	for f in "${scenarios[@]}"; do
		for k in init ko boots; do
			[ -z "$(header_of "$f" $k)" ] || die "${f##*/}: a scenario with vm-$k runs alone, not in a batch"
		done
	done
	# The runner's boot time-out: 30 s more for each reset between two.
	timeout_s=$((timeout_s + 30 * (${#scenarios[@]} - 1)))
	vm_bins+=(dmsetup)
fi
[ -z "$vm_init" ] || [ "$vm_init" = systemd ] || die "bad vm-init '$vm_init' (only: systemd)"
[ -z "$vm_ko" ] || [ "$vm_ko" = dkms ] || die "bad vm-ko '$vm_ko' (only: dkms)"
[[ $boots =~ ^[1-9][0-9]?$ ]] || die "bad vm-boots '$boots' (1 to 99)"

work=$(mktemp -d "${TMPDIR:-/tmp}/rp-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP

# ---- replipipe.ko -------------------------------------------------------
# Built in a copy of kmod/ and uapi/ under the build dir (never in the source
# tree others edit), cached by the hash of the sources and KV.
kmod_status=
kmod_ko=
kmod_origin="make"

# headers_id DIR: names the header tree a module builds against, for the
# build caches: a tree installed or rebuilt anew under the same kernel
# version (its Module.symvers) builds anew.
headers_id() {
	{ echo "$1"; cat "$1/Module.symvers" 2> /dev/null; } | sha256sum | cut -c1-16
}

# build_failed_lately FILE: a failed build of the same sources and headers
# (FILE, its log) within the last hour: not tried again for every scenario
# of one run, but a later run tries again (the failure may have been the
# machine's: a full disk, no memory).
build_failed_lately() {
	[ -f "$1" ] && [ $(($(date +%s) - $(stat -c %Y "$1"))) -lt 3600 ]
}

# `# vm-ko: dkms`: replipipe.ko as DKMS builds it from the packaged tree
# (dkms.conf, kmod/, uapi/): `dkms add` + `dkms build -k KV` in a private
# DKMS tree, source tree and install tree under a temporary directory, and
# a private signing key (dkms signs what it builds; its default key lives in
# /var/lib/dkms), so the host's DKMS state is never touched. Cached like the
# make build, by KV and the hash of the sources.
build_kmod_dkms() {
	local files=() hash dir tmp ko version log
	version=$(sed -n 's/^PACKAGE_VERSION="\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$repo_root/dkms.conf")
	[ -n "$version" ] || die "vm-ko: dkms: no PACKAGE_VERSION in dkms.conf"
	command -v dkms > /dev/null || die "vm-ko: dkms: dkms is not installed"
	kmod_origin="dkms"
	mapfile -t files < <(cd "$repo_root" && find kmod uapi -type f \( -name '*.[ch]' -o -name Makefile \
		-o -name Kbuild -o -name Kconfig -o -name '*.mk' -o -name '*.sh' \) ! -name '*.mod.c' | LC_ALL=C sort)
	files=(dkms.conf "${files[@]}")
	hash=$( (echo "$kv dkms $(headers_id "/lib/modules/$kv/build")"; cd "$repo_root" && tar -cf - --mtime=@0 --owner=0 --group=0 "${files[@]}") |
		sha256sum | cut -c1-16)
	dir=$cache_dir/kmod-dkms/$kv-$hash
	log=$cache_dir/kmod-dkms-build-$kv.log
	if [ -f "$dir/replipipe.ko" ]; then
		kmod_ko=$dir/replipipe.ko
		return 0
	fi
	if build_failed_lately "$dir.failed"; then
		kmod_status="not built: dkms build of these sources failed within the hour, see $dir.failed"
		say "WARNING: replipipe.ko $kmod_status"
		return 0
	fi
	mkdir -p "$cache_dir/kmod-dkms"
	tmp=$(mktemp -d "$cache_dir/kmod-dkms/build.XXXXXX")
	mkdir -p "$tmp/src/replipipe-$version" "$tmp/tree" "$tmp/install"
	(cd "$repo_root" && tar -cf - "${files[@]}") | tar -C "$tmp/src/replipipe-$version" -xf -
	say "building replipipe.ko with dkms for $kv (log: $log)"
	local trees=(--dkmstree "$tmp/tree" --sourcetree "$tmp/src" --installtree "$tmp/install")
	if ! (export mok_signing_key=$tmp/mok.key mok_certificate=$tmp/mok.pub
		dkms add "replipipe/$version" "${trees[@]}" &&
			dkms build "replipipe/$version" -k "$kv" "${trees[@]}") > "$log" 2>&1; then
		cat "$tmp"/tree/replipipe/"$version"/build/make.log >> "$log" 2>/dev/null || true
		tail -n 30 "$log" >&2
		cp "$log" "$dir.failed"
		kmod_status="not built: dkms build failed, see $dir.failed"
		say "WARNING: replipipe.ko $kmod_status"
		rm -rf "$tmp"
		return 0
	fi
	# dkms compresses the module as the kernel's own are
	# (CONFIG_MODULE_COMPRESS_*: none on Debian's 6.1, xz on its 6.12).
	ko=$(find "$tmp/tree/replipipe/$version/$kv" -path '*/module/replipipe.ko*' | head -n 1)
	[ -n "$ko" ] || die "dkms build succeeded but left no module/replipipe.ko* under $tmp/tree"
	mkdir -p "$dir.tmp.$$"
	case "$ko" in
	*.ko) cp "$ko" "$dir.tmp.$$/replipipe.ko" ;;
	*.ko.xz) xz -dc "$ko" > "$dir.tmp.$$/replipipe.ko" ;;
	*.ko.gz) gzip -dc "$ko" > "$dir.tmp.$$/replipipe.ko" ;;
	*.ko.zst) zstd -qdc "$ko" > "$dir.tmp.$$/replipipe.ko" ;;
	*) die "dkms left $ko, a module compressed in a way this script does not know" ;;
	esac || die "cannot decompress $ko"
	cp "$log" "$dir.tmp.$$/build.log"
	mv -T "$dir.tmp.$$" "$dir" 2>/dev/null || rm -rf "$dir.tmp.$$"
	rm -rf "$tmp"
	kmod_ko=$dir/replipipe.ko
}

build_kmod() {
	local src=$repo_root/kmod files=() hash dir tmp ko
	if [ "$vm_ko" = dkms ]; then
		[ -z "${REPLIPIPE_VM_KO:-}" ] || say "note: vm-ko: dkms, REPLIPIPE_VM_KO ignored"
		[ -z "$mod_root" ] || die "vm-ko: dkms builds against /lib/modules/KV/build, not the debug kernel"
		build_kmod_dkms
		return 0
	fi
	if [ -n "${REPLIPIPE_VM_KO:-}" ]; then
		kmod_origin="given"
		[ -f "$REPLIPIPE_VM_KO" ] || die "REPLIPIPE_VM_KO=$REPLIPIPE_VM_KO does not exist"
		kmod_ko=$REPLIPIPE_VM_KO
		return 0
	fi
	if [ ! -f "$src/Makefile" ] && [ ! -f "$src/build.sh" ]; then
		kmod_status="not built: kmod/ has no Makefile nor build.sh"
		return 0
	fi
	mapfile -t files < <(cd "$repo_root" && find kmod uapi -type f \( -name '*.[ch]' -o -name Makefile \
		-o -name Kbuild -o -name Kconfig -o -name '*.mk' -o -name '*.sh' \) ! -name '*.mod.c' | LC_ALL=C sort)
	hash=$( (echo "$kv${kernel_id:+ $kernel_id} $(headers_id "$kernel_build")"; cd "$repo_root" && tar -cf - --mtime=@0 --owner=0 --group=0 "${files[@]}") |
		sha256sum | cut -c1-16)
	dir=$cache_dir/kmod/$kv-$hash
	if [ -f "$dir/replipipe.ko" ]; then
		kmod_ko=$dir/replipipe.ko
		return 0
	fi
	if build_failed_lately "$dir.failed"; then
		kmod_status="not built: the build of these sources failed within the hour, see $dir.failed"
		say "WARNING: replipipe.ko $kmod_status"
		return 0
	fi
	tmp=$(mktemp -d "$cache_dir/kmod-build.XXXXXX")
	(cd "$repo_root" && tar -cf - "${files[@]}") | tar -C "$tmp" -xf -
	say "building replipipe.ko for $kv (log: $cache_dir/kmod-build-$kv.log)"
	if [ -f "$tmp/kmod/Makefile" ]; then
		make -C "$tmp/kmod" KDIR="$kernel_build" -j"$(nproc)" \
			> "$cache_dir/kmod-build-$kv.log" 2>&1 || true
	else
		(cd "$tmp/kmod" && KDIR="$kernel_build" ./build.sh KDIR="$kernel_build") \
			> "$cache_dir/kmod-build-$kv.log" 2>&1 || true
	fi
	ko=$(find "$tmp/kmod" -name replipipe.ko | head -n 1)
	if [ -z "$ko" ]; then
		tail -n 30 "$cache_dir/kmod-build-$kv.log" >&2 || true
		mkdir -p "$cache_dir/kmod"
		cp "$cache_dir/kmod-build-$kv.log" "$dir.failed"
		kmod_status="not built: the build failed, see $dir.failed"
		say "WARNING: replipipe.ko $kmod_status"
		rm -rf "$tmp"
		return 0
	fi
	if ! modinfo -F vermagic "$ko" | grep -q "^$kv "; then
		kmod_status="not used: built for '$(modinfo -F vermagic "$ko")', not $kv"
		say "WARNING: replipipe.ko $kmod_status"
		rm -rf "$tmp"
		return 0
	fi
	mkdir -p "$dir.tmp.$$"
	cp "$ko" "$dir.tmp.$$/replipipe.ko"
	cp "$cache_dir/kmod-build-$kv.log" "$dir.tmp.$$/build.log"
	mv -T "$dir.tmp.$$" "$dir" 2>/dev/null || rm -rf "$dir.tmp.$$"
	rm -rf "$tmp"
	kmod_ko=$dir/replipipe.ko
}

# ---- initramfs ------------------------------------------------------------
# copy_libs ROOT FILE: copy the shared libraries ldd lists for FILE, and the
# dynamic loader, to the same paths under ROOT. A static FILE (the guest
# tools, busybox) has none.
copy_libs() {
	local lib libs
	if ! libs=$(LC_ALL=C ldd "$2" 2>&1); then
		[[ $libs == *"not a dynamic executable"* ]] && return 0
		die "ldd $2: $libs"
	fi
	sed -n 's/.*=> *\(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' <<< "$libs" |
		while read -r lib; do
			[ -e "$1$lib" ] && continue
			mkdir -p "$1$(dirname "$lib")"
			cp -L --preserve=mode "$lib" "$1$lib"
		done
}

# copy_with_libs ROOT FILE...: copy host files to the same path under ROOT,
# with their libraries.
copy_with_libs() {
	local root=$1 f
	shift
	for f in "$@"; do
		mkdir -p "$root$(dirname "$f")"
		cp -L --preserve=mode "$f" "$root$f"
		copy_libs "$root" "$f"
	done
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

guest_modules=(scsi_mod sd_mod target_core_mod target_core_iblock target_core_file
	tcm_loop iscsi_target_mod iscsi_tcp crc32c_generic brd null_blk dm_mod
	dm_flakey dm_mirror dm_delay loop virtio_pci virtio_blk configfs)
optional_modules=(target_core_pscsi target_core_user drbd nbd dm_log_writes crc32c_intel ext4
	dm_multipath dm_round_robin)

module_files() { # the .ko files of the guest modules with dependencies
	local m out
	for m in "${guest_modules[@]}"; do
		out=$(modprobe "${modprobe_root[@]}" -S "$kv" --show-depends "$m") || die "module $m not found for $kv"
		printf '%s\n' "$out"
	done
	for m in "${optional_modules[@]}"; do
		modprobe "${modprobe_root[@]}" -S "$kv" --show-depends "$m" 2>/dev/null || true
	done
} 

write_etc() { # ROOT
	mkdir -p "$1/etc"
	cat > "$1/etc/passwd" <<-'EOF'
	root:x:0:0:root:/root:/bin/sh
	rpuser:x:1000:1000:unprivileged test user:/tmp:/bin/sh
	rpadmin:x:1001:1001:member of group replipipe:/tmp:/bin/sh
	nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
	EOF
	cat > "$1/etc/group" <<-'EOF'
	root:x:0:
	rpuser:x:1000:
	rpadmin:x:1001:
	replipipe:x:990:rpadmin
	nogroup:x:65534:
	EOF
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' > "$1/etc/nsswitch.conf"
	printf '127.0.0.1 localhost replipipe-vm\n::1 localhost\n' > "$1/etc/hosts"
	echo replipipe-vm > "$1/etc/hostname"
}

# The base archive: busybox, kmod, /etc, the kernel modules. Everything that
# only depends on KV and host packages; cached by content hash.
build_base() {
	local kmods hash base root busybox kmod_bin a
	busybox=$(command -v busybox) || die "busybox not installed (busybox-static)"
	kmod_bin=$(command -v kmod) || die "kmod not installed"
	mapfile -t kmods < <(module_files | sed -n 's/^insmod \([^ ]*\).*/\1/p' | sort -u)
	hash=$( {
		echo "$kv"
		declare -f write_etc copy_with_libs copy_libs build_base
		sha256sum "$busybox" "$kmod_bin" "${kmods[@]}" "$mod_root"/lib/modules/"$kv"/modules.builtin* \
			"$mod_root"/lib/modules/"$kv"/modules.order
	} | sha256sum | cut -c1-16)
	base=$cache_dir/base-$kv-$hash
	base_cpio=$base.cpio
	base_root=$base.root
	if [ -f "$base_cpio" ] && [ -d "$base_root" ]; then
		say "initramfs base: cached ($base_cpio)"
		return 0
	fi
	say "initramfs base: building ($base_cpio)"
	local tb
	tb=$(date +%s.%N)
	root=$(mktemp -d "$cache_dir/base-build.XXXXXX")
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,dev,tmp,run,root,mnt,var/tmp,var/lib,lib/replipipe}
	chmod 1777 "$root/tmp" "$root/var/tmp"
	cp "$busybox" "$root/bin/busybox"
	"$busybox" --list-full | while read -r a; do
		[ "$a" = bin/busybox ] && continue
		mkdir -p "$root/$(dirname "$a")"
		ln -sf /bin/busybox "$root/$a"
	done
	copy_with_libs "$root" "$kmod_bin"
	for a in modprobe insmod rmmod lsmod depmod modinfo; do
		rm -f "$root/sbin/$a" "$root/bin/$a" "$root/usr/sbin/$a" "$root/usr/bin/$a"
		ln -s "$kmod_bin" "$root/sbin/$a"
	done
	write_etc "$root"
	mkdir -p "$root/lib/modules/$kv"
	for a in "${kmods[@]}"; do
		mkdir -p "$root$(dirname "${a#"$mod_root"}")"
		cp "$a" "$root${a#"$mod_root"}"
	done
	cp "$mod_root"/lib/modules/"$kv"/modules.builtin* "$mod_root"/lib/modules/"$kv"/modules.order "$root/lib/modules/$kv/"
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$root.cpio"
	# Publish atomically; a concurrent builder may have won the race.
	mv "$root.cpio" "$base_cpio"
	if ! mv -T "$root" "$base_root" 2>/dev/null; then
		rm -rf "$root"
	fi
	say "initramfs base: built in $(elapsed "$tb" "$(date +%s.%N)")s"
}

# The project's binaries (build/bin) with their libraries, debug info
# stripped: the same for every scenario of a build, so archived once and
# cached by the files' names, sizes and times (stripping and ldd-ing the
# 50 MiB of them took 3 to 10 s before each boot). Sets bins_cpio.
build_bins() {
	local hash root f
	hash=$( {
		declare -f copy_libs build_bins
		[ ! -d "$build_dir/bin" ] || find "$build_dir/bin" -maxdepth 1 -type f -printf '%f %s %T@\n' | LC_ALL=C sort
	} | sha256sum | cut -c1-16)
	bins_cpio=$cache_dir/bins-$hash.cpio
	if [ -f "$bins_cpio" ]; then
		say "initramfs project binaries: cached ($bins_cpio)"
		return 0
	fi
	root=$(mktemp -d "$cache_dir/bins-build.XXXXXX")
	mkdir -p "$root/usr/local/bin"
	if [ -d "$build_dir/bin" ]; then
		for f in "$build_dir"/bin/*; do
			[ -f "$f" ] || continue
			# Debug info only makes the image big: the guest has no debugger.
			if ! objcopy --strip-debug "$f" "$root/usr/local/bin/${f##*/}" 2>/dev/null; then
				cp -L --preserve=mode "$f" "$root/usr/local/bin/"
			fi
			copy_libs "$root" "$f"
		done
	else
		say "note: no $build_dir/bin (project binaries not built)"
	fi
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$root.cpio"
	# Atomic: a concurrent scenario may publish the same archive.
	mv "$root.cpio" "$bins_cpio"
	rm -rf "$root"
	# Archives of binaries since rebuilt (not those a scenario may be
	# reading right now). Scenarios started together prune together: an
	# archive another one removed first is gone already (a `find -delete`
	# over the directory failed the scenario on it: ENOENT).
	for f in "$cache_dir"/bins-*.cpio; do
		[ "$f" != "$bins_cpio" ] || continue
		[ -n "$(find "$f" -maxdepth 0 -mmin +10 2> /dev/null)" ] || continue
		rm -f "$f"
	done
	say "initramfs project binaries: archived ($(du -k "$bins_cpio" | cut -f1) KiB)"
}

# The per-scenario archive, appended to the base: /init, guest-lib, the
# scenario, replipipe.ko + depmod output, the project's binaries, vm-bins.
build_overlay() {
	local ov=$work/overlay f b mods=$work/depmod to
	to=$(date +%s.%N)
	mkdir -p "$ov/lib/replipipe" "$ov/usr/local/bin"
	cp "$script_dir/lib/guest-init.sh" "$ov/init"
	chmod 755 "$ov/init"
	cp "$script_dir/lib/guest-run.sh" "$ov/lib/replipipe/guest-run.sh"
	cp "$script_dir/lib/guest-lib.sh" "$ov/lib/replipipe/guest-lib.sh"
	cp "$script_dir/lib/guest-reset.sh" "$ov/lib/replipipe/guest-reset.sh"
	[ "$vm_init" != systemd ] || : > "$ov/lib/replipipe/init-systemd"
	# scenario.d/<name>.sh each; `scenarios`, their names in order, each
	# with its guest limit (header, above).
	mkdir -p "$ov/lib/replipipe/scenario.d"
	local i
	for i in "${!scenarios[@]}"; do
		b=$(basename "${scenarios[i]}" .sh)
		[ ! -e "$ov/lib/replipipe/scenario.d/$b.sh" ] || die "scenario $b given twice"
		cp "${scenarios[i]}" "$ov/lib/replipipe/scenario.d/$b.sh"
		echo "$b ${limits[i]}" >> "$ov/lib/replipipe/scenarios"
	done
	echo "$name" > "$ov/lib/replipipe/scenario-name"
	echo "$kmod_status" > "$ov/lib/replipipe/kmod-status"
	# How replipipe.ko was made (make, dkms, given) and its checksum, so
	# that a scenario can check which module it runs.
	echo "$kmod_origin" > "$ov/lib/replipipe/kmod-origin"
	if [ -n "$kmod_ko" ]; then
		sha256sum "$kmod_ko" | cut -d' ' -f1 > "$ov/lib/replipipe/kmod-sha256"
	fi
	: > "$ov/lib/replipipe/disks"
	for f in "${vm_disks[@]}"; do echo "${f%%:*}" >> "$ov/lib/replipipe/disks"; done

	# Modules: extra/ and a depmod run over the whole tree.
	mkdir -p "$mods/lib/modules"
	cp -al "$base_root/lib/modules/$kv" "$mods/lib/modules/$kv"
	mkdir -p "$mods/lib/modules/$kv/extra"
	[ -z "$kmod_ko" ] || cp "$kmod_ko" "$mods/lib/modules/$kv/extra/replipipe.ko"
	for f in ${REPLIPIPE_VM_EXTRA_KO:-}; do
		[ -f "$f" ] || die "REPLIPIPE_VM_EXTRA_KO: no file $f"
		cp "$f" "$mods/lib/modules/$kv/extra/"
	done
	depmod -b "$mods" "$kv"
	mkdir -p "$ov/lib/modules/$kv"
	cp -r "$mods/lib/modules/$kv/extra" "$ov/lib/modules/$kv/"
	cp "$mods/lib/modules/$kv"/modules.* "$ov/lib/modules/$kv/"

	# The scenario's vm-bins, with their libraries (the project's binaries
	# are bins_cpio, build_bins).
	for b in "${vm_bins[@]}"; do
		f=$(PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin command -v "$b") ||
			die "vm-bins: '$b' not found on the host"
		copy_with_libs "$ov" "$(readlink -f "$f")"
		[ "$(readlink -f "$f")" = "$f" ] || { mkdir -p "$ov$(dirname "$f")"; cp -p "$ov$(readlink -f "$f")" "$ov$f"; }
	done
	# vm-files: absolute host paths land at the same path (a glob may stand
	# for versioned library names); paths relative to the repository land
	# under /lib/replipipe/repo/ so that no checkout location is hard-coded.
	local pat matches dest
	for pat in "${vm_files[@]}"; do
		if [[ $pat == /* ]]; then
			mapfile -t matches < <(compgen -G "$pat" || true)
		else
			mapfile -t matches < <(cd "$script_dir/../.." && compgen -G "$pat" || true)
		fi
		[ ${#matches[@]} -gt 0 ] || die "vm-files: no host file matches $pat"
		for f in "${matches[@]}"; do
			if [[ $f == /* ]]; then
				dest=$ov$f
			else
				dest=$ov/lib/replipipe/repo/$f
				f=$script_dir/../../$f
			fi
			mkdir -p "$(dirname "$dest")"
			cp -a "$f" "$dest"
		done
	done
	(cd "$ov" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$work/overlay.cpio"
	cat "$base_cpio" "$bins_cpio" "$work/overlay.cpio" > "$work/initrd"
	say "initramfs scenario part: $(du -k "$work/overlay.cpio" | cut -f1) KiB in $(elapsed "$to" "$(date +%s.%N)")s"
}

# ---- disks ----------------------------------------------------------------
disk_args=()
make_disks() {
	# One directory per kernel tier as for the logs: the same scenario on
	# two kernels may run at once, and `# vm-boots:` reopens its disks.
	local d dname size img ddir=$build_dir/vm-disks${log_subdir:+/$log_subdir}/$name
	[ ${#vm_disks[@]} -gt 0 ] || return 0
	mkdir -p "$ddir"
	for d in "${vm_disks[@]}"; do
		dname=${d%%:*}
		size=${d#*:}
		[[ $dname =~ ^[A-Za-z0-9_-]+$ && $size =~ ^[0-9]+$ ]] || die "bad vm-disks entry '$d' (NAME:SIZE_MIB)"
		img=$ddir/$dname.img
		if [ "${REPLIPIPE_VM_KEEP_DISKS:-0}" != 1 ] || [ ! -f "$img" ]; then
			rm -f "$img"
			truncate -s "${size}M" "$img"
		fi
		disk_args+=(-drive "file=$img,format=raw,if=none,id=disk-$dname,cache=unsafe"
			-device "virtio-blk-pci,drive=disk-$dname,serial=$dname")
	done
}

# ---- verdict -------------------------------------------------------------
# check_kmemleak CLEAN_LOG: the debug kernel's guest prints kmemleak's report
# after the scenario (guest-init.sh); an unreferenced object whose allocation
# backtrace runs through replipipe fails. Leaks elsewhere are only counted.
# A frame kallsyms cannot name (a bare 0xffffffffa... address) is code of a
# module unloaded since: the scenarios unload only replipipe (rmmod at the
# end), and a batch's reset replipipe, brd and null_blk (guest-reset.sh), so
# such a backtrace counts as replipipe's.
check_kmemleak() {
	local report n mine
	grep -q -- '----- REPLIPIPE-KMEMLEAK-BEGIN -----' "$1" || return 0
	report=$(sed -n '/----- REPLIPIPE-KMEMLEAK-BEGIN -----/,/----- REPLIPIPE-KMEMLEAK-END -----/p' "$1")
	n=$(grep -c 'unreferenced object' <<< "$report" || true)
	mine=$(awk '/unreferenced object/ { if (hit) print blk; blk = ""; hit = 0 }
		/----- REPLIPIPE-KMEMLEAK-(BEGIN|END)/ { if (hit) print blk; blk = ""; hit = 0; next }
		{ blk = blk $0 "\n"; if ($0 ~ /\[replipipe\]/ || $0 ~ /^ *\[<[0-9a-f]+>\] 0x[0-9a-f]+ *$/) hit = 1 }' <<< "$report")
	if [ -n "$mine" ]; then
		say "FAIL: kmemleak: objects allocated by replipipe (or by a module unloaded since) are unreferenced ($n reported in all); first:"
		printf '%b' "$mine" | awk '/unreferenced object/ { k++ } k == 1' | head -n 25 >&2
		return 1
	fi
	say "kmemleak: $n unreferenced object(s), none allocated through replipipe"
}

# during CLEAN_LOG LINE: in a batch, " (during NAME)" for the scenario that
# was running at line LINE of the log (or " (before the first scenario)").
during() {
	[ ${#scenarios[@]} -gt 1 ] || return 0
	awk -v at="$2" 'NR > at { exit }
		/^\[vm\] scenario [^ ]*: start/ { s = $3; sub(/:$/, "", s) }
		/^\[vm [0-9.]*\] reset after / { s = "the reset after " $5 }
		END { printf " (%s)", s == "" ? "before the first scenario" : "during " s }' "$1"
}

# batch_results CLEAN_LOG: one line per scenario of a batch: PASS or FAIL
# (from the guest), or not run.
batch_results() {
	local f b r
	[ ${#scenarios[@]} -gt 1 ] || return 0
	for f in "${scenarios[@]}"; do
		b=$(basename "$f" .sh)
		r=$(sed -n "s/^REPLIPIPE-SCENARIO-RESULT: $b //p" "$1" | tail -n 1)
		say "  $b: ${r:-not run}"
	done
}

# check_log LOG [MARKER]: 0 when the guest printed MARKER (default PASS) and
# the kernel stayed clean. A boot that crashes on purpose (`# vm-boots:`) ends
# with REBOOT instead of PASS; vm_crash_reboot printed its taint before that.
check_log() {
	local clean=$work/clean.log ok=0 taint bad fail_line want=${2:-PASS}
	tr -d '\r' < "$1" > "$clean"
	# A FAIL marker fails the boot whatever else it printed: a boot that
	# wanted REBOOT prints that marker before sysrq b, and when the reset
	# does not happen, fails and powers off cleanly; its next boot would
	# then run on disks shut down cleanly, not crashed.
	fail_line=$(grep -o 'REPLIPIPE-SCENARIO: FAIL.*' "$clean" | head -n 1 || true)
	if [ -n "$fail_line" ]; then
		say "FAIL: the guest failed (${fail_line#REPLIPIPE-SCENARIO: })"
		ok=1
	elif ! grep -q "REPLIPIPE-SCENARIO: $want" "$clean"; then
		say "FAIL: no $want marker"
		ok=1
	fi
	if [ "$want" = REBOOT ] && grep -q 'REPLIPIPE-SCENARIO: PASS' "$clean"; then
		say "FAIL: the guest passed instead of crashing (sysrq b did not reset it?)"
		ok=1
	fi
	# Debian 6.12's iSCSI initiator flushes a runtime-PM work item from
	# its WQ_MEM_RECLAIM control queue when it unbinds a session, and the
	# workqueue's check WARNs (taint W) whenever that item happens to be
	# pending (seen once in about 40 iSCSI logouts). The kernel's, not the
	# module's: a log whose every WARNING is that one passes, with its
	# traces and taint W (docs/decisions.md 77). Any other WARNING fails.
	local known='workqueue: WQ_MEM_RECLAIM iscsi_ctrl_[0-9:]+:__iscsi_unbind_session \[scsi_transport_iscsi\] is flushing !WQ_MEM_RECLAIM pm:pm_runtime_work'
	local patterns='BUG:|WARNING:|UBSAN:|Oops|Call Trace|general protection fault|Kernel panic|hung_task|blocked for more than'
	local flags_ok=' GOE' taint_ok=$((4096 | 8192)) nwarn nknown
	nwarn=$(grep -c 'WARNING:' "$clean" || true)
	nknown=$(grep -cE "$known" "$clean" || true)
	if [ "$nknown" -gt 0 ] && [ "$nwarn" -eq "$nknown" ]; then
		say "note: Debian's iSCSI initiator WARNed at a logout (flushing pm_runtime_work from iscsi_ctrl; not replipipe's)"
		patterns='BUG:|UBSAN:|Oops|general protection fault|Kernel panic|hung_task|blocked for more than'
		flags_ok=' GOEW'
		taint_ok=$((taint_ok | 512))
	fi
	bad=$(grep -nE "$patterns" "$clean" | head -n 5 || true)
	if [ -n "$bad" ]; then
		say "FAIL: kernel problems in the log$(during "$clean" "${bad%%:*}"):"
		printf '%s\n' "$bad" >&2
		ok=1
	fi
	bad=$(sed -n 's/.*Tainted: \([A-Z ]*\) [0-9].*/\1/p' "$clean" | tr -d "$flags_ok\n" || true)
	if [ -n "$bad" ]; then
		say "FAIL: kernel tainted with flags '$bad'"
		ok=1
	fi
	taint=$(sed -n 's/.*REPLIPIPE-TAINTED: \([0-9]*\).*/\1/p' "$clean" | tail -n 1)
	if [ -z "$taint" ]; then
		say "FAIL: the guest did not report its taint (it did not finish)"
		ok=1
	elif [ $((taint & ~taint_ok)) -ne 0 ]; then
		say "FAIL: /proc/sys/kernel/tainted = $taint (only 4096 O and 8192 E are allowed)"
		ok=1
	fi
	check_kmemleak "$clean" || ok=1
	batch_results "$clean"
	return $ok
}

# ---- main ---------------------------------------------------------------
t0=$(date +%s.%N)
build_kmod
build_base
build_bins
build_overlay
make_disks
t1=$(date +%s.%N)
say "scenario $name, kernel $kv, ${mem_mib} MiB, time-out ${timeout_s}s, initramfs $(du -m "$work/initrd" | cut -f1) MiB in $(elapsed "$t0" "$t1")s"
[ -z "$kmod_status" ] || say "replipipe.ko $kmod_status"

accel=${REPLIPIPE_VM_ACCEL:-tcg}
cpu=max
# Debian's kernels: one TCG thread for both vCPUs. With a thread per vCPU
# (QEMU 7.2), Debian's 6.12 sometimes took an int3 Oops early in its boot,
# where one CPU flips a static key (text_poke_bp) while the other runs the
# patched code: in one run 2 of about 45 boots. One thread runs code that
# the other vCPU patched only after its translation is invalidated. With
# two VMs on two cores it is also quicker: on 6.12, the 33 scenarios that
# passed both ways took 1,001 test-seconds instead of 1,127, 29 of them
# less. The debug kernel keeps a thread per vCPU: its tier is where two
# CPUs really run at once (decision 37).
if [ "$accel" = tcg ]; then
	if [ "$debug_kernel" = 1 ]; then
		accel=tcg,thread=multi
	else
		accel=tcg,thread=single
	fi
fi
# -no-reboot: a guest reset (sysrq b) makes QEMU exit; see `# vm-boots:`.
qemu=(qemu-system-x86_64 -machine "$machine" -accel "$accel" -cpu "$cpu" -m "$mem_mib" -smp 2 -nographic -nic none -vga none -no-reboot
	-kernel "$kernel_image" -initrd "$work/initrd"
	"${disk_args[@]}")
# The debug kernel boots without `quiet`: should it hang before /init again
# (decision 66), its console says where. Its boot messages cost no
# measurable time (module-lifecycle: 61 s with `quiet`, 52 s without).
quiet=quiet
[ "$debug_kernel" != 1 ] || quiet=
append="console=ttyS0${quiet:+ $quiet} panic=-1 rdinit=/init${kernel_append:+ $kernel_append}"

# VM slots: at most REPLIPIPE_VM_SLOTS VMs at a time on this host (default
# 1: one at a time, so that benchmarks and concurrent runs neither skew nor
# slow each other into time-outs). The test command runs two at a time: a
# TCG guest mostly waits on timers and I/O (0.7 to 0.9 of a core on average
# measured here), so two share two cores well. Slot 0 is the lock file that
# single runs always used.
lock_fd=
acquire_vm_slot() {
	local slots=${REPLIPIPE_VM_SLOTS:-1} i tw file waiting=
	[[ $slots =~ ^[1-9][0-9]*$ ]] || die "bad REPLIPIPE_VM_SLOTS '$slots'"
	tw=$(date +%s.%N)
	while :; do
		for ((i = 0; i < slots; i++)); do
			file=${TMPDIR:-/tmp}/replipipe-vm.lock
			[ "$i" -eq 0 ] || file=$file.$i
			exec {lock_fd}> "$file"
			if flock -n "$lock_fd"; then
				[ -z "$waiting" ] ||
					say "waited $(elapsed "$tw" "$(date +%s.%N)")s for a VM slot"
				return 0
			fi
			exec {lock_fd}>&-
		done
		[ -n "$waiting" ] || say "waiting for one of $slots VM slot(s) on this host"
		waiting=1
		sleep 1
	done
}
[ "${REPLIPIPE_VM_NO_LOCK:-0}" = 1 ] || acquire_vm_slot

# A guest that has not printed /init's first line (`[vm] init`) this long
# after QEMU started is hung in early boot, before any of the project's code
# runs: killed and booted again, twice at most (decision 66). Default
# kernel: /init in 2 to 4 s here; the debug kernel in about 7 s.
init_deadline=60
[ "$debug_kernel" != 1 ] || init_deadline=120
init_deadline=${REPLIPIPE_VM_INIT_DEADLINE:-$init_deadline}
[[ $init_deadline =~ ^[1-9][0-9]*$ ]] || die "bad REPLIPIPE_VM_INIT_DEADLINE '$init_deadline'"

# watch_init LOG PID: kill PID (the time-out wrapper of QEMU) when LOG has no
# /init line after init_deadline seconds, and leave $work/silent behind.
watch_init() {
	local i
	for ((i = 0; i < init_deadline; i++)); do
		sleep 1
		grep -qF '[vm] init' "$1" 2> /dev/null && return 0
		kill -0 "$2" 2> /dev/null || return 0
	done
	: > "$work/silent"
	kill "$2" 2> /dev/null
}

# watch_batch LOG PID: in a batch, kill PID (the time-out wrapper of QEMU)
# when the scenario running has had its guest limit and 90 s more, and
# leave its name in $work/stuck. The guest ends a scenario at its limit and
# reports (30 s), then resets (30 s); one that does neither has hung in its
# kernel, and the boot's time-out (all the scenarios' summed) would wait
# for the ones that did not run.
watch_batch() {
	local n=0 seen since=$SECONDS name_n
	while kill -0 "$2" 2> /dev/null; do
		sleep 5
		seen=$(grep -c '^\[vm\] scenario [^ ]*: start' "$1" 2> /dev/null) || seen=0
		if [ "$seen" -ne "$n" ]; then
			n=$seen
			since=$SECONDS
		elif [ "$n" -gt 0 ] && [ $((SECONDS - since)) -gt $((limits[n - 1] + 90)) ]; then
			name_n=$(basename "${scenarios[n - 1]}" .sh)
			if grep -q "^REPLIPIPE-SCENARIO-RESULT: $name_n " "$1"; then
				echo "the reset after $name_n, or the kmemleak scans after it," > "$work/stuck"
			else
				echo "$name_n" > "$work/stuck"
			fi
			kill "$2" 2> /dev/null
			return 0
		fi
	done
}

# boot_once LOG ARGS...: QEMU once, console to LOG (and to stdout unless
# REPLIPIPE_VM_QUIET=1); sets qrc, silent=1 when watch_init stopped it, and
# stuck to the scenario watch_batch stopped it in.
boot_once() {
	local log_file=$1 qpid wpid bpid= tpid=
	shift
	rm -f "$work/silent" "$work/stuck"
	set +e
	timeout -k 5 "$timeout_s" "${qemu[@]}" "$@" < /dev/null > "$log_file" 2>&1 &
	qpid=$!
	[ "${REPLIPIPE_VM_QUIET:-0}" = 1 ] || { tail -n +1 -f --pid="$qpid" "$log_file" & tpid=$!; }
	watch_init "$log_file" "$qpid" &
	wpid=$!
	[ ${#scenarios[@]} -eq 1 ] || { watch_batch "$log_file" "$qpid" & bpid=$!; }
	wait "$qpid"
	qrc=$?
	kill "$wpid" $bpid 2> /dev/null
	wait "$wpid" $bpid
	[ -z "$tpid" ] || wait "$tpid"
	set -e
	silent=0
	[ ! -e "$work/silent" ] || silent=1
	stuck=
	[ ! -e "$work/stuck" ] || stuck=$(cat "$work/stuck")
}

# add_boot_cpu: adds to cpu_s the CPU seconds `time` wrote as the last line
# of boot-cpu; what else the boot wrote to stderr before them (a shell's
# note on a job it killed) goes on to ours instead of into the sum.
add_boot_cpu() {
	head -n -1 "$work/boot-cpu" >&2
	cpu_s=$(tail -n 1 "$work/boot-cpu" | awk -v prev="$cpu_s" '{ printf "%.1f", prev + $1 + $2 }')
}

# boot K LOG: one boot, console to LOG; sets qrc and boot_s. With more than
# one boot the guest is told which one it is (rp.boot=K rp.boots=N). A boot
# that stays silent before /init, or ends before it (a crash of the kernel's
# or the emulator's early boot: Debian's 6.12 took a double fault in SLUB's
# cmpxchg16b at its thermal initcall once under TCG), goes again, up to
# early_boots in all, 10 s apart: the debug kernel hung twice in a row at
# its PMU probe in the busiest minute of a test command (session 34). Its
# console is kept in LOG.silent or LOG.early (LOG.silent2 ...) (decision
# 66). Nothing of the project has run before /init.
early_boots=3
boot() {
	local args=(-append "$append") t
	if [ "$boots" -eq 1 ]; then
		say "booting; console log: $2"
	else
		args=(-append "$append rp.boot=$1 rp.boots=$boots")
		say "booting ($1 of $boots); console log: $2"
	fi
	rm -f "$2.silent" "$2.early"
	t=$(date +%s.%N)
	# `time` on the group: the CPU (user + system) QEMU used, which is what
	# two VMs at a time share, unlike their wall time spent waiting.
	local TIMEFORMAT='%3U %3S'
	{ time boot_once "$2" "${args[@]}"; } 2> "$work/boot-cpu"
	local kept what tries=1 sfx
	while :; do
		# LOG.silent, then LOG.silent2 ...
		sfx=
		[ "$tries" -eq 1 ] || sfx=$tries
		if [ "$silent" = 1 ]; then
			kept=$2.silent$sfx
			what="printed no line of /init in ${init_deadline}s (an early-boot hang"
		elif ! grep -qF '[vm] init' "$2"; then
			kept=$2.early$sfx
			what="ended before /init (an early-boot crash"
		else
			break
		fi
		if [ "$tries" -ge "$early_boots" ]; then
			# A crash's log fails check_log (no PASS marker).
			[ "$silent" = 0 ] || say "FAIL: the guest stayed silent before /init $tries times"
			break
		fi
		mv "$2" "$kept"
		say "the guest $what; console in $kept): booting again in 10 s ($((tries + 1)) of $early_boots)"
		add_boot_cpu
		sleep 10
		{ time boot_once "$2" "${args[@]}"; } 2> "$work/boot-cpu"
		tries=$((tries + 1))
	done
	boot_s=$(elapsed "$t" "$(date +%s.%N)")
	add_boot_cpu
}

# Single boot: <name>.log as always. Several: <name>.boot<K>.log each, and
# <name>.log is their concatenation. A boot that fails ends the run.
rc=0
boot_k=1
cpu_s=0 # QEMU's CPU seconds over all boots
t2=$(date +%s.%N)
[ "$boots" -eq 1 ] || rm -f "$log_dir/$name".boot*.log
while [ "$boot_k" -le "$boots" ]; do
	if [ "$boots" -eq 1 ]; then
		blog=$log
		want=PASS
	else
		blog=$log_dir/$name.boot$boot_k.log
		want=REBOOT
		[ "$boot_k" -lt "$boots" ] || want=PASS
	fi
	boot "$boot_k" "$blog"
	if [ "$silent" = 1 ]; then
		rc=1
	elif [ -n "$stuck" ]; then
		say "FAIL: $stuck did not end within the scenario's guest limit and 90 s: stopped"
		rc=1
	elif [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
		say "FAIL: time-out after ${timeout_s}s"
		rc=1
	elif [ "$qrc" -ne 0 ]; then
		say "FAIL: qemu exited with $qrc"
		rc=1
	fi
	check_log "$blog" "$want" || rc=1
	[ "$boots" -eq 1 ] || say "boot $boot_k of $boots: $([ $rc -eq 0 ] && echo ok || echo FAIL) (${boot_s}s wall, log $blog)"
	[ $rc -eq 0 ] || break
	boot_k=$((boot_k + 1))
done
if [ "$boots" -gt 1 ]; then
	for k in $(seq 1 "$boots"); do
		blog=$log_dir/$name.boot$k.log
		[ -f "$blog" ] || break
		echo "===== run-scenario: boot $k of $boots (${blog##*/}) ====="
		cat "$blog"
	done > "$log"
	boot_s=$(elapsed "$t2" "$(date +%s.%N)")
fi
[ -z "$lock_fd" ] || exec {lock_fd}>&-

if [ $rc -eq 0 ]; then
	say "PASS: $name (boot ${boot_s}s wall, ${cpu_s}s CPU, log $log)"
else
	say "FAIL: $name (boot ${boot_s}s wall, ${cpu_s}s CPU, log $log)"
fi
exit $rc
}
