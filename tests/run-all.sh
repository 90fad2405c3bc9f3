#!/usr/bin/env bash
# The test command (README, "Run every test"): installs what it needs, builds,
# runs the unit tests under ASan+UBSan, builds the kernel module with DKMS,
# W=1 and sparse, checks the Debian packages, and runs every VM scenario,
# then the debug tier (tests/vm/debug-kernel.sh) on the debug kernel.
# Where steps can share the two cores they overlap: the ASan+UBSan build and
# its unit tests run beside the kernel-module and package checks, and the VM
# scenarios run REPLIPIPE_VM_SLOTS at a time (tests/vm/run-scenario.sh).
#
# Environment: REPLIPIPE_BUILD_DIR (default <repo>/build),
#              REPLIPIPE_SKIP_VM=1 to stop before the VM scenarios.
set -euo pipefail
# One { } block: bash reads it whole before running it, so editing this file
# during a run does not change the run.
{

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${REPLIPIPE_BUILD_DIR:-$repo/build}
asan_build=$build-asan
jobs=$(nproc)
# Two VMs per two cores, at most four: a TCG guest uses 0.7 to 0.9 of a core.
vm_slots=$((jobs < 2 ? 1 : jobs > 4 ? 4 : jobs))
started=$SECONDS

step() { printf '\n=== %s (%ds)\n' "$*" $((SECONDS - started)); }

step "dependencies"
"$repo/tools/setup-deps.sh"

# The debug kernel (tests/vm/debug-kernel.sh) builds in the background at
# nice 19 while the steps below run: on a machine without the cached build
# it takes about 13 minutes of both cores, and the steps below leave cycles
# idle (VM scenarios wait on devices and timers). Its own lock makes the
# vmdebug.kernel test wait for it; the debug tier step waits for it too.
dk_pid=
asan_pid=
# A failed step ends the run: nothing started in the background outlives it.
stop_background() {
	[ -z "$dk_pid" ] || kill -- -"$dk_pid" 2> /dev/null || :
	[ -z "$asan_pid" ] || pkill -P "$asan_pid" 2> /dev/null || :
	[ -z "$asan_pid" ] || kill "$asan_pid" 2> /dev/null || :
}
trap stop_background EXIT
mkdir -p "$build"
if [ "${REPLIPIPE_SKIP_VM:-0}" != 1 ]; then
	# setsid: a session of its own, so that a failed run can kill the
	# whole build. With autogroup scheduling (Debian's default) a new
	# session is also a scheduling group of its own, which gets its share of
	# the CPU whatever its tasks' nice; so the group's nice is set too, from
	# inside it (sched(7), "The autogroup feature").
	setsid bash -c '[ ! -e /proc/self/autogroup ] || echo 19 > /proc/self/autogroup
		exec nice -n 19 "$0"' "$repo/tests/vm/debug-kernel.sh" > "$build/debug-kernel.log" 2>&1 &
	dk_pid=$!
	echo "debug kernel: building or found cached in the background (log $build/debug-kernel.log)"
fi

# The release tree: the daemon, the CLI and the guest tools the VMs run and
# the packages ship. The unit tests are built and run in the ASan+UBSan tree
# only (the same tests, with the sanitizers' checks on top).
step "build"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DREPLIPIPE_UNIT_TESTS=OFF >/dev/null
cmake --build "$build" -j "$jobs"

step "unit tests under ASan+UBSan (in the background)"
asan_log=$build/unit-asan.log
(
	cmake -S "$repo" -B "$asan_build" -DCMAKE_BUILD_TYPE=Debug \
		-DREPLIPIPE_SANITIZE=ON >/dev/null &&
		cmake --build "$asan_build" -j "$jobs" --target replipipe_unit &&
		cd "$asan_build" && ctest -L unit --output-on-failure -j "$jobs"
) > "$asan_log" 2>&1 &
asan_pid=$!

step "kernel module: DKMS, W=1, sparse"
"$repo/tests/kbuild-check.sh"

step "Debian packages: build, install, verify, purge"
"$repo/tests/package-check.sh" "$build"

step "unit tests under ASan+UBSan: waiting"
if ! wait "$asan_pid"; then
	tail -n 60 "$asan_log"
	echo "unit tests under ASan+UBSan failed (log $asan_log)" >&2
	exit 1
fi
asan_pid=
tail -n 3 "$asan_log"

if [ "${REPLIPIPE_SKIP_VM:-0}" = 1 ]; then
	step "VM scenarios skipped (REPLIPIPE_SKIP_VM=1)"
	exit 0
fi

step "VM scenarios"
# -L takes a regular expression: "^vm$", or the vmdebug tests would run here too.
(cd "$build" && REPLIPIPE_BUILD_DIR=$build REPLIPIPE_VM_SLOTS=$vm_slots \
	ctest -L "^vm$" --output-on-failure -j "$vm_slots")

# The debug tier: the debug kernel (KASAN, lockdep, kmemleak, UBSAN, fault
# injection; built here when not cached), then the foundation and
# kernel-module scenarios and the fault-injection scenario on it.
step "debug kernel: waiting for the background build"
if ! wait "$dk_pid"; then
	tail -n 30 "$build/debug-kernel.log"
	echo "the debug kernel did not build (log $build/debug-kernel.log)" >&2
	exit 1
fi
dk_pid=
cat "$build/debug-kernel.log"

step "VM scenarios on the debug kernel"
(cd "$build" && REPLIPIPE_BUILD_DIR=$build REPLIPIPE_VM_SLOTS=$vm_slots \
	ctest -L "^vmdebug$" --output-on-failure -j "$vm_slots")

step "all tests passed"
exit 0
}
