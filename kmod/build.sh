#!/bin/bash
# Build replipipe.ko against a kernel that has headers installed: KV if set,
# else the running kernel, else the newest one that also has an image in
# /boot (a headers-only flavour, such as linux-headers-*-rt pulled in beside
# the generic ones, is no kernel this host boots).
# Extra arguments go to make, e.g.: kmod/build.sh W=1 C=1
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

has_headers() { [[ -e /lib/modules/$1/build/Makefile ]]; }

pick_kv() {
	local kv
	kv=$(uname -r)
	if has_headers "$kv"; then
		echo "$kv"
		return 0
	fi
	for kv in $(ls -1 /lib/modules 2>/dev/null | sort -V -r); do
		if has_headers "$kv" && [[ -e /boot/vmlinuz-$kv ]]; then
			echo "$kv"
			return 0
		fi
	done
	return 1
}

kv=${KV:-$(pick_kv)} || {
	echo "build.sh: no headers for $(uname -r) nor for a kernel in /boot; install linux-headers, or set KV" >&2
	exit 1
}
echo "build.sh: building against $kv" >&2
exec make -C "$here" KDIR="/lib/modules/$kv/build" "$@"
