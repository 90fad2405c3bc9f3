#!/usr/bin/env bash
# The test command (README, "Run every test"): installs what it needs, builds,
# runs the unit tests (plain and under ASan+UBSan), builds the kernel module
# with DKMS, W=1 and sparse, and runs every VM scenario, then the debug tier
# (tests/vm/debug-kernel.sh) on the debug kernel.
#
# Environment: REPLIPIPE_BUILD_DIR (default <repo>/build),
#              REPLIPIPE_SKIP_VM=1 to stop before the VM scenarios.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${REPLIPIPE_BUILD_DIR:-$repo/build}
asan_build=$build-asan
jobs=$(nproc)
started=$SECONDS

step() { printf '\n=== %s (%ds)\n' "$*" $((SECONDS - started)); }

step "dependencies"
"$repo/tools/setup-deps.sh"

step "build"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$jobs"

step "unit tests"
(cd "$build" && ctest -L unit --output-on-failure -j "$jobs")

step "unit tests under ASan+UBSan"
cmake -S "$repo" -B "$asan_build" -DCMAKE_BUILD_TYPE=Debug \
	-DREPLIPIPE_SANITIZE=ON >/dev/null
cmake --build "$asan_build" -j "$jobs" --target replipipe_unit
(cd "$asan_build" && ctest -L unit --output-on-failure -j "$jobs")

step "kernel module: DKMS, W=1, sparse"
"$repo/tests/kbuild-check.sh"

step "Debian packages: build, install, verify, purge"
"$repo/tests/package-check.sh" "$build"

if [ "${REPLIPIPE_SKIP_VM:-0}" = 1 ]; then
	step "VM scenarios skipped (REPLIPIPE_SKIP_VM=1)"
	exit 0
fi

step "VM scenarios"
# -L takes a regular expression: "^vm$", or the vmdebug tests would run here too.
(cd "$build" && REPLIPIPE_BUILD_DIR=$build ctest -L "^vm$" --output-on-failure)

# The debug tier: the debug kernel (KASAN, lockdep, kmemleak, UBSAN, fault
# injection; built here when not cached), then the foundation and
# kernel-module scenarios and the fault-injection scenario on it.
step "VM scenarios on the debug kernel"
(cd "$build" && REPLIPIPE_BUILD_DIR=$build ctest -L "^vmdebug$" --output-on-failure)

step "all tests passed"
