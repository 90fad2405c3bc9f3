#!/bin/bash
# resync-host.sh: the resync copier (io_uring, O_DIRECT, registered buffers)
# against dd (1 MiB, direct) and cp on this host, file to file.
#
#   tests/bench/resync-host.sh [SIZE_MIB (1024)] [DIR (/var/tmp)]
#
# Env: REPLIPIPE_BUILD_DIR (default build/) holds bin/rp-nlctl, whose "copy"
# command is the resync copier alone; RUNS (3); QDS ("1 4 16 32");
# CHUNKS_KIB ("256 1024").
# The target is a full-size file that every run overwrites in place, as a
# resync overwrites a block device (dd with conv=notrunc). cp cannot do that
# (it truncates), so it writes a new file, timed with the sync that makes its
# data durable as O_DIRECT's is. One more engine row copies into an empty
# file that grows: ext4 serializes O_DIRECT writes past EOF, which a block
# device never sees. Every run starts with a dropped page cache when this
# user may (cp reads through the cache, the others bypass it).
# Prints a table: median MB/s of RUNS runs, the single runs, ratio to dd.
# A benchmark: it prints numbers, it does not pass or fail.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${REPLIPIPE_BUILD_DIR:-$repo/build}
size_mib=${1:-1024}
dir=${2:-/var/tmp}
runs=${RUNS:-3}
qds=${QDS:-"1 4 16 32"}
chunks=${CHUNKS_KIB:-"256 1024"}

nlctl=$build/bin/rp-nlctl
[ -x "$nlctl" ] || { echo "resync-host: no $nlctl (build first)" >&2; exit 69; }

work=$(mktemp -d "$dir/replipipe-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/src
dst=$work/dst

drop_caches() {
	sync
	echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || cache_note="page cache NOT dropped (not root)"
}
cache_note="page cache dropped before every run"

empty_file() {
	rm -f "$1"
	: > "$1"
}

now() { date +%s.%N; }
rate() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.1f", b / (t1 - t0) / 1e6 }'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "resync-host: writing a ${size_mib} MiB source in $work" >&2
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$src"
head -c $((size_mib * 1024 * 1024)) /dev/zero > "$dst"
sync
bytes=$((size_mib * 1024 * 1024))

declare -A results
order=()
record() { # NAME RATE
	if [ -z "${results[$1]+x}" ]; then
		order+=("$1")
		results[$1]=""
	fi
	results[$1]="${results[$1]} $2"
}

for r in $(seq 1 "$runs"); do
	drop_caches
	t0=$(now)
	dd if="$src" of="$dst" bs=1M iflag=direct oflag=direct conv=notrunc status=none
	t1=$(now)
	record "dd bs=1M direct" "$(rate $bytes $t0 $t1)"

	empty_file "$work/cp"
	drop_caches
	t0=$(now)
	cp "$src" "$work/cp"
	sync
	t1=$(now)
	rm -f "$work/cp"
	record "cp + sync (new file)" "$(rate $bytes $t0 $t1)"

	for chunk in $chunks; do
		for qd in $qds; do
			drop_caches
			out=$("$nlctl" copy "$src" "$dst" --qd "$qd" --chunk-kib "$chunk")
			mbps=$(echo "$out" | tr ' ' '\n' | sed -n 's/^mb_per_s=//p')
			record "engine qd=$qd chunk=${chunk}KiB" "$mbps"
		done
	done
	cmp "$src" "$dst" || { echo "resync-host: engine copy differs!" >&2; exit 1; }

	empty_file "$work/grow"
	drop_caches
	out=$("$nlctl" copy "$src" "$work/grow" --qd 32 --chunk-kib 1024)
	rm -f "$work/grow"
	record "engine qd=32 1MiB (new file)" "$(echo "$out" | tr ' ' '\n' | sed -n 's/^mb_per_s=//p')"
done

dd_median=$(echo ${results["dd bs=1M direct"]} | median)
printf '\n%s MiB file to file in %s (%s), %s runs, %s\n' "$size_mib" "$dir" \
	"$(df --output=fstype "$dir" | tail -n 1 | tr -d ' ')" "$runs" "$cache_note"
printf '%-30s %10s %8s   %s\n' method "MB/s" "x dd" "runs (MB/s)"
for name in "${order[@]}"; do
	m=$(echo ${results[$name]} | median)
	ratio=$(awk -v a="$m" -v b="$dd_median" 'BEGIN { printf "%.2f", a / b }')
	printf '%-30s %10s %8s   %s\n' "$name" "$m" "$ratio" "$(echo ${results[$name]} | tr ' ' '/')"
done
