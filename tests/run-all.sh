#!/usr/bin/env bash
# The test command (README, "Run every test"): installs what it needs, builds,
# runs the unit tests under ASan+UBSan, builds the kernel module with DKMS,
# W=1 and sparse, checks the Debian packages, and runs every VM scenario on
# the newest Debian kernel (some also on Debian 12's default one), then the
# debug tier (tests/vm/debug-kernel.sh) on the debug kernel; both
# in one ctest pass when that kernel is cached.
# Where steps can share the two cores they overlap: the VM scenarios run
# REPLIPIPE_VM_SLOTS at a time (tests/vm/run-scenario.sh), and beside them, at
# nice 19, the debug kernel's build, the ASan+UBSan build of the unit tests
# and the kernel-module and package checks.
#
# Environment: REPLIPIPE_BUILD_DIR (default <repo>/build),
#              REPLIPIPE_VM_SLOTS (VMs at a time; default: the cores, 1 to 4),
#              REPLIPIPE_SKIP_VM=1 to stop before the VM scenarios.
set -euo pipefail
# One { } block: bash reads it whole before running it, so editing this file
# during a run does not change the run.
{

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${REPLIPIPE_BUILD_DIR:-$repo/build}
asan_build=$build-asan
jobs=$(nproc)
# One VM more than cores, at most four: Debian's guests run one TCG thread
# each and sleep on timers and slow devices (kmod-races: 37 s of CPU in
# 107 s). On 2 cores 3 slots took the whole command from 23 min 32 s to
# 19 min 58 s (decision 37). REPLIPIPE_VM_SLOTS overrides it.
vm_slots=${REPLIPIPE_VM_SLOTS:-$((jobs < 2 ? 1 : jobs + 1 > 4 ? 4 : jobs + 1))}
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
checks_pid=
# A failed step ends the run: nothing started in the background outlives it.
# A background step is a session of its own (setsid): its group is killed
# (with REPLIPIPE_SKIP_VM=1 the steps are plain children: the process).
stop_background() {
	local pid
	for pid in $dk_pid $asan_pid $checks_pid; do
		kill -- -"$pid" 2> /dev/null || kill "$pid" 2> /dev/null || :
	done
}
trap stop_background EXIT
mkdir -p "$build"
export repo build asan_build jobs
# run_niced FUNCTION LOG: FUNCTION (which sees the exported variables) in the
# background at nice 19, its output to LOG; sets bg_pid. setsid: a session of
# its own, so that a failed run can kill all of it. With autogroup scheduling
# (Debian's default) a new session is also a scheduling group of its own,
# which gets its share of the CPU whatever its tasks' nice; so the group's
# nice is set too, from inside it (sched(7), "The autogroup feature").
run_niced() {
	setsid bash -c '[ ! -e /proc/self/autogroup ] || echo 19 > /proc/self/autogroup
		renice -n 19 -p $$ > /dev/null
		eval "$1"; "$2"' _ "$(declare -f "$1")" "$1" > "$2" 2>&1 &
	bg_pid=$!
}
debug_kernel_build() { "$repo/tests/vm/debug-kernel.sh"; }
if [ "${REPLIPIPE_SKIP_VM:-0}" != 1 ]; then
	run_niced debug_kernel_build "$build/debug-kernel.log"
	dk_pid=$bg_pid
	echo "debug kernel: building or found cached in the background (log $build/debug-kernel.log)"
fi

# The release tree: the daemon, the CLI and the guest tools the VMs run and
# the packages ship. The unit tests are built and run in the ASan+UBSan tree
# only (the same tests, with the sanitizers' checks on top).
# The default build type's -O2 without its -g: the guests get the binaries
# with their debug info stripped and the packages strip theirs
# (CPACK_STRIP_FILES), so nothing here reads it, and it was a third of this
# step: 224 CPU-seconds and 116 s with -g, 154 and 81 s without.
step "build"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release \
	-DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
	-DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" \
	-DREPLIPIPE_UNIT_TESTS=OFF >/dev/null
cmake --build "$build" -j "$jobs"

# The checks that do not need the VMs run in the background beside them, at
# nice 19 like the kernel build: the ASan+UBSan build of the unit tests, the
# kernel-module build checks and the package check. They take the cycles the
# VM scenarios leave idle (guests wait on timers and slow devices) and never
# slow a guest with timing assertions. The unit tests themselves run in the
# foreground once the VM scenarios are done: some of them bound how long a
# call may take, which a starved nice-19 process cannot promise.
asan_log=$build/unit-asan.log
checks_log=$build/checks.log
# -g1: the sanitizers' reports need function names and line tables only;
# full debug info made each file of the unit tests take about 25 % longer
# to compile (pipe_service_test.cc: 14.7 s of CPU with -g, 11.5 with -g1).
asan_build_step() {
	cmake -S "$repo" -B "$asan_build" -DCMAKE_BUILD_TYPE=Debug \
		-DCMAKE_CXX_FLAGS_DEBUG=-g1 -DCMAKE_C_FLAGS_DEBUG=-g1 \
		-DREPLIPIPE_SANITIZE=ON > /dev/null &&
		cmake --build "$asan_build" -j "$jobs" --target replipipe_unit
}
host_checks() {
	local rc=0
	echo "=== kernel module: DKMS, W=1, sparse"
	"$repo/tests/kbuild-check.sh" || rc=1
	echo "=== Debian packages: build, install, verify, purge"
	"$repo/tests/package-check.sh" "$build" || rc=1
	return $rc
}
# wait_for PID LOG WHAT: the background step's status; its log's end if it failed.
wait_for() {
	if ! wait "$1"; then
		tail -n 60 "$2"
		echo "$3 failed (log $2)" >&2
		exit 1
	fi
}
# unit_failures LOG: the end of a failed unit run's LOG, then what failed.
# A shard's output runs to thousands of lines, and CI keeps only the end of
# what the run prints: name what failed there.
unit_failures() {
	tail -n 60 "$1"
	echo "--- the failures (GoogleTest's, the sanitizers'):"
	if grep -E -A 12 ': Failure$|runtime error:|==[0-9]+==ERROR' \
		"$1" > "$1.failures"; then
		head -n 120 "$1.failures"
	else
		echo "(none in the log)"
	fi
	echo "--- the failed tests:"
	grep -E '\[  FAILED  \] [A-Za-z]' "$1" |
		sed -E 's/ \([0-9]+ ms\)$//' | sort -u ||
		echo "(none named: a shard crashed or timed out)"
	# A shard that crashed or timed out names no failed test: the
	# last test it started is the one.
	echo "--- the last test each shard started:"
	awk 'match($0, /Test +#[0-9]+: unit\.shard[0-9]+/) {
			shard = substr($0, RSTART, RLENGTH)
			sub(/.* /, "", shard)
		}
		/\[ RUN      \]/ { last[shard] = $0 }
		END { for (s in last) print s ": " last[s] }' "$1"
}
unit_tests() {
	step "unit tests under ASan+UBSan: waiting for their build"
	wait_for "$asan_pid" "$asan_log" "the ASan+UBSan build of the unit tests"
	asan_pid=
	step "unit tests under ASan+UBSan"
	# All shards at once: they mostly wait (tests/unit/CMakeLists.txt).
	(cd "$asan_build" && ctest -L unit --output-on-failure -j 8) >> "$asan_log" 2>&1 || {
		unit_failures "$asan_log"
		echo "unit tests under ASan+UBSan failed (log $asan_log)" >&2
		exit 1
	}
	tail -n 3 "$asan_log"
}
checks_done() {
	step "kernel module and package checks: waiting"
	wait_for "$checks_pid" "$checks_log" "the kernel-module or package checks"
	checks_pid=
	grep -E '^(===|kbuild-check: (ok|all)|package-check: [0-9]+ passed)' "$checks_log"
}

if [ "${REPLIPIPE_SKIP_VM:-0}" = 1 ]; then
	# Nothing to share the cores with: the same steps in the foreground.
	step "unit tests under ASan+UBSan: build"
	asan_build_step > "$asan_log" 2>&1 &
	asan_pid=$!
	host_checks > "$checks_log" 2>&1 &
	checks_pid=$!
	unit_tests
	checks_done
	step "VM scenarios skipped (REPLIPIPE_SKIP_VM=1)"
	exit 0
fi

step "in the background: the ASan+UBSan build, the kernel-module and package checks"
run_niced asan_build_step "$asan_log"
asan_pid=$bg_pid
run_niced host_checks "$checks_log"
checks_pid=$bg_pid

# At most one debug-kernel VM per core (the vmdebug tests each take a
# debug_vm slot, tests/vm/CMakeLists.txt). Its guest runs two TCG threads,
# one per vCPU, and spins on locks whose holder the host descheduled: on 2
# cores three of them at once (kmod-target-cache) took 145 to 162 s of CPU
# each, two at once 106 and 107 s, one alone 99 s.
vm_resources=$build/vm-resources.json
printf '{ "version": { "major": 1, "minor": 0 },\n  "local": [ { "debug_vm": [ { "id": "0", "slots": %d } ] } ] }\n' \
	"$jobs" > "$vm_resources"
# -L takes a regular expression: "^vm$", or the vmdebug tests would run too.
vm_ctest() {
	(cd "$build" && REPLIPIPE_BUILD_DIR=$build REPLIPIPE_VM_SLOTS=$vm_slots \
		ctest --output-on-failure -j "$vm_slots" \
		--resource-spec-file "$vm_resources" "$@")
}
# debug_kernel_ready: the debug kernel's background step is over (a kernel
# found cached is, by now); fails the run if it did not build.
debug_kernel_ready() {
	if ! wait "$dk_pid"; then
		tail -n 30 "$build/debug-kernel.log"
		echo "the debug kernel did not build (log $build/debug-kernel.log)" >&2
		exit 1
	fi
	dk_pid=
	cat "$build/debug-kernel.log"
}

# The debug tier: the debug kernel (KASAN, lockdep, kmemleak, UBSAN, fault
# injection; built here when not cached), then the foundation and
# kernel-module scenarios and the fault-injection scenario on it.
if ! kill -0 "$dk_pid" 2> /dev/null; then
	# Found cached: both tiers in one pass, longest first (`# vm-cost:`,
	# `# vm-debug-cost:`), so that neither tier's tail leaves a slot idle
	# (in two passes about 90 s of one slot). vmdebug.kernel, which only
	# finds the kernel again, is left out with its fixture.
	debug_kernel_ready
	step "VM scenarios, on Debian's kernels and on the debug kernel"
	vm_ctest -L "^(vm|vmdefault|vmdebug)$" -E "^vmdebug\.kernel$" -FS debug_kernel
	unit_tests
else
	# Building: the Debian-kernel scenarios and the unit tests first.
	step "VM scenarios, on Debian's kernels"
	vm_ctest -L "^(vm|vmdefault)$"
	unit_tests
	step "debug kernel: waiting for the background build"
	debug_kernel_ready
	step "VM scenarios on the debug kernel"
	vm_ctest -L "^vmdebug$"
fi

checks_done

step "all tests passed"
exit 0
}
