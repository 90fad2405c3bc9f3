#!/usr/bin/env bash
# Runs one VM benchmark script, tests/bench/NAME.sh, as the guest's job of a
# VM boot (through tests/vm/run-scenario.sh) and prints its table: the lines
# the script printed with the "BENCH " prefix, prefix removed.
#
#   tests/bench/run-bench.sh NAME
#
# Environment as for tests/vm/run-scenario.sh (REPLIPIPE_BUILD_DIR, ...).
# The console log stays in $REPLIPIPE_BUILD_DIR/vm-logs/NAME.log.
# Exit status: that of the VM run (0 when the script finished cleanly).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 NAME   (tests/bench/NAME.sh)" >&2; exit 64; }
script=$here/$1.sh
[ -f "$script" ] || { echo "run-bench: no $script" >&2; exit 64; }
build=${REPLIPIPE_BUILD_DIR:-$repo/build}
mkdir -p "$build"
build=$(cd "$build" && pwd)
log=$build/vm-logs/$1.log

rc=0
REPLIPIPE_BUILD_DIR=$build REPLIPIPE_VM_QUIET=${REPLIPIPE_VM_QUIET:-1} \
	"$repo/tests/vm/run-scenario.sh" "$script" || rc=$?
echo "run-bench: $1, log $log"
tr -d '\r' < "$log" | sed -n 's/^BENCH //p'
exit "$rc"
