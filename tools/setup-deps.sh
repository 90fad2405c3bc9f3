#!/usr/bin/env bash
# Installs every Debian package replipipe needs to build, test and run its VM bench.
# Idempotent: packages already present are skipped by apt-get; safe to run again.
set -euo pipefail

build_pkgs=(
	build-essential cmake g++ pkg-config
	libnl-3-dev libnl-genl-3-dev liburing-dev
	libboost-program-options-dev nlohmann-json3-dev libgtest-dev
	libsystemd-dev
)
vm_pkgs=(
	qemu-system-x86 linux-image-amd64 linux-headers-amd64
	linux-headers-rt-amd64
	busybox-static cpio kmod dkms sparse lintian fio xz-utils
	dmsetup systemd util-linux coreutils jq socat
	python3 python3-rtslib-fb targetcli-fb dbus-daemon open-iscsi
	prometheus
	# the guests' SCSI commands Linux's sd never sends (a WRITE SAME with
	# a pattern) or sends only from its error handler (a LUN RESET)
	sg3-utils
)
# The VM bench's debug kernel (tests/vm/debug-kernel.sh): Debian's kernel
# source and what building it needs.
debug_kernel_pkgs=(
	linux-source-6.1 bc bison flex libssl-dev libelf-dev dwarves
)

# The newest kernel series Debian 12 offers besides its default 6.1
# (bookworm-security carries 6.12, the kernel of Debian 13): the VM bench
# boots the newest installed kernel and the module checks build against
# every installed header tree, so replipipe is tested on both. An archive
# without it leaves the bench on 6.1 (the vmdefault tier is then skipped),
# and each run looks again (apt-get update). dkms compresses the module for
# 6.12 with xz, which the bench undoes (xz-utils).
newer_kernel_pkgs=(linux-image-6.12-amd64 linux-headers-6.12-amd64)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in "${build_pkgs[@]}" "${vm_pkgs[@]}" "${debug_kernel_pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done
wanted=()
for p in "${newer_kernel_pkgs[@]}"; do
	installed "$p" || wanted+=("$p")
done

if [ "${#missing[@]}" -eq 0 ] && [ "${#wanted[@]}" -eq 0 ]; then
	echo "setup-deps: all packages present"
	exit 0
fi

# Through env, not export: sudo's env_reset drops exported variables, and a
# package's debconf question would then wait for an answer.
sudo_cmd=(env DEBIAN_FRONTEND=noninteractive)
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo > /dev/null ||
		{ echo "setup-deps: installing ${missing[*]} ${wanted[*]} needs root: run it as root, or install sudo" >&2; exit 1; }
	sudo_cmd=(sudo env DEBIAN_FRONTEND=noninteractive)
fi
"${sudo_cmd[@]}" apt-get update -q
for p in "${wanted[@]}"; do
	# Read whole first: grep -q would stop early and fail the pipe (pipefail).
	policy=$(apt-cache policy "$p" 2> /dev/null)
	if grep -q '^  Candidate: [0-9]' <<< "$policy"; then
		missing+=("$p")
	else
		echo "setup-deps: $p is not in the package archive: the VM bench stays on Debian's default kernel"
	fi
done
[ "${#missing[@]}" -gt 0 ] || exit 0

echo "setup-deps: installing ${missing[*]}"
# A system with no kernel in /boot boots none of Debian's (a container, a
# chroot: a fresh CI machine). There the initramfs that linux-image-amd64's
# hook builds, and the initramfs-tools trigger then rebuilds, would never be
# used (the VM bench makes its own), and the two cost about 150 s of the
# install. INITRD=No makes the kernel's hook skip it; the trigger updates
# only initramfs images that exist, so it has nothing to do. A host that
# boots from /boot keeps its initramfs as Debian makes it.
install_env=()
if ! compgen -G '/boot/vmlinuz-*' > /dev/null; then
	echo "setup-deps: no kernel in /boot: no initramfs will be built for the one installed"
	install_env=(INITRD=No)
fi
"${sudo_cmd[@]}" "${install_env[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
