#!/bin/bash
# Build replipipe.ko against the newest kernel that has headers installed.
# Extra arguments go to make, e.g.: kmod/build.sh W=1 C=1
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

newest_kv() {
	local kv
	for kv in $(ls -1 /lib/modules 2>/dev/null | sort -V -r); do
		if [[ -e /lib/modules/$kv/build/Makefile ]]; then
			echo "$kv"
			return 0
		fi
	done
	return 1
}

kv=${KV:-$(newest_kv)} || {
	echo "build.sh: no /lib/modules/<version>/build found; install linux-headers" >&2
	exit 1
}
echo "build.sh: building against $kv" >&2
exec make -C "$here" KDIR="/lib/modules/$kv/build" "$@"
