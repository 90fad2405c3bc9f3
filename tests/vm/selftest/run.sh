#!/usr/bin/env bash
# Shows that the VM bench can fail: runs the runner on scenarios that must
# fail (wrong checksum, a module whose init WARNs, a hang) and on one that
# must pass, and checks the runner's exit status and reason for each; and
# that in a batch (several scenarios in one boot, decision 95) the guest is
# reset between two, a failure stops the batch, and so does a reset that
# cannot finish.
#   tests/vm/selftest/run.sh [--kernel-version KV] [CASE...]
#   tests/vm/selftest/run.sh --debug-kernel [CASE...]
# CASE: pass bad-checksum warn-module hang disks reboot reboot-nocrash
# reboot-fail batch batch-fail batch-unresettable
# (default: all of them); on the debug kernel pass bad-checksum hang
# leak-module batch batch-leak (default: leak-module, a leak that only
# kmemleak sees, and batch-leak, the same leak in a batch's first scenario).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vm_dir=$(cd "$here/.." && pwd)
# shellcheck source=../lib/host-common.sh
. "$vm_dir/lib/host-common.sh"

kv=
kernel_args=()
if [ "${1:-}" = --debug-kernel ]; then
	kernel_args=(--debug-kernel)
	shift
	cases=("$@")
	[ ${#cases[@]} -gt 0 ] || cases=(leak-module batch-leak)
else
	if [ "${1:-}" = --kernel-version ]; then
		kv=$2
		shift 2
	fi
	[ -n "$kv" ] || kv=$(rp_newest_kernel_version)
	kernel_args=(--kernel-version "$kv")
	cases=("$@")
	[ ${#cases[@]} -gt 0 ] || cases=(pass bad-checksum warn-module hang disks reboot reboot-nocrash reboot-fail
		batch batch-fail batch-unresettable)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rp-selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failures=0
# expect CASE WANT_RC REASON_REGEX [SCENARIO...]: run the runner on CASE.sh
# (or on the SCENARIOs, CASE.sh and so on, in one boot named after CASE),
# check its status (0 or nonzero) and that its output matches REASON_REGEX.
expect() {
	local case=$1 want=$2 reason=$3 rc=0 out=$tmp/$1.out t0 t1 files=() f
	shift 3
	for f in "${@:-$case}"; do files+=("$here/$f.sh"); done
	[ $# -eq 0 ] || files=(--name "selftest-$case" "${files[@]}")
	t0=$(date +%s)
	REPLIPIPE_VM_QUIET=1 "$vm_dir/run-scenario.sh" "${kernel_args[@]}" \
		"${files[@]}" > "$out" 2>&1 || rc=$?
	t1=$(date +%s)
	if [ "$want" = 0 ] && [ $rc -ne 0 ]; then
		echo "selftest: FAIL $case: runner returned $rc, expected 0"
		failures=$((failures + 1))
	elif [ "$want" != 0 ] && [ $rc -eq 0 ]; then
		echo "selftest: FAIL $case: runner returned 0, expected a failure"
		failures=$((failures + 1))
	elif ! grep -qE "$reason" "$out"; then
		echo "selftest: FAIL $case: runner output lacks /$reason/"
		failures=$((failures + 1))
	else
		echo "selftest: ok   $case (runner rc=$rc, $((t1 - t0))s)"
		return 0
	fi
	sed 's/^/    /' "$out" | tail -n 20
}

for c in "${cases[@]}"; do
	# The others build for Debian's kernel or read vm-logs/ directly.
	if [ -z "$kv" ]; then
		case "$c" in
		pass | bad-checksum | hang | leak-module | batch | batch-leak) ;;
		*) echo "selftest: $c is not a --debug-kernel case" >&2; exit 64 ;;
		esac
	fi
	case "$c" in
	pass) expect pass 0 'PASS: pass' ;;
	bad-checksum) expect bad-checksum 1 'FAIL rc=1' ;;
	warn-module)
		# Build the throw-away module against KV's headers in a temp dir.
		cp "$here"/warn-module/* "$tmp/"
		if ! make -C "/lib/modules/$kv/build" M="$tmp" modules > "$tmp/kbuild.log" 2>&1; then
			cat "$tmp/kbuild.log"
			echo "selftest: FAIL warn-module: cannot build rp_selftest_warn.ko"
			failures=$((failures + 1))
			continue
		fi
		REPLIPIPE_VM_EXTRA_KO=$tmp/rp_selftest_warn.ko \
			expect warn-module 1 'kernel problems in the log|tainted'
		;;
	leak-module | batch-leak)
		# Built against the debug kernel's tree (found cached or built
		# by debug-kernel.sh), in a temp dir. In a batch the leak must be
		# found though the next scenario loads modules (brd) after it.
		if [ -z "$kv" ] && dk=$("$vm_dir/debug-kernel.sh") &&
			cp "$here"/leak-module/* "$tmp/" &&
			make -C "$dk/build" M="$tmp" modules > "$tmp/kbuild.log" 2>&1; then
			if [ "$c" = leak-module ]; then
				REPLIPIPE_VM_EXTRA_KO=$tmp/rp_selftest_leak.ko \
					expect leak-module 1 'FAIL: kmemleak: objects allocated by replipipe'
			else
				REPLIPIPE_VM_EXTRA_KO=$tmp/rp_selftest_leak.ko \
					expect batch-leak 1 'FAIL: kmemleak: objects allocated by replipipe' leak-module pass
			fi
		else
			cat "$tmp/kbuild.log" 2> /dev/null
			echo "selftest: FAIL $c: cannot build rp_selftest_leak.ko for the debug kernel (--debug-kernel only)"
			failures=$((failures + 1))
		fi
		;;
	hang) expect hang 1 'time-out|FAIL rc=1(24|43)' ;;
	disks)
		# Fresh images, then kept ones: the marker must survive the reboot.
		REPLIPIPE_VM_KEEP_DISKS=0 expect disks 0 'PASS: disks' &&
			grep -q 'marker written' "${REPLIPIPE_BUILD_DIR:-$vm_dir/../../build}/vm-logs/disks.log" &&
			REPLIPIPE_VM_KEEP_DISKS=1 expect disks 0 'PASS: disks' &&
			grep -q 'marker persisted' "${REPLIPIPE_BUILD_DIR:-$vm_dir/../../build}/vm-logs/disks.log" ||
			{ echo "selftest: FAIL disks: the marker did not persist with REPLIPIPE_VM_KEEP_DISKS=1"; failures=$((failures + 1)); }
		;;
	reboot)
		# `# vm-boots: 2`: a marker written before sysrq b is there in boot 2.
		expect reboot 0 'boot 1 of 2: ok.*' &&
			grep -q 'marker survived the reset' "${REPLIPIPE_BUILD_DIR:-$vm_dir/../../build}/vm-logs/reboot.boot2.log" ||
			{ echo "selftest: FAIL reboot: boot 2 did not report the marker"; failures=$((failures + 1)); }
		;;
	reboot-nocrash) expect reboot-nocrash 1 'no REBOOT marker' ;;
	reboot-fail) expect reboot-fail 1 'the guest failed \(FAIL rc=1\)' ;;
	# What a scenario left is gone in the next one; the third runs too.
	batch) expect batch 0 '  pass: PASS' batch-leave batch-clean pass ;;
	batch-fail) expect batch-fail 1 '  pass: not run' bad-checksum pass ;;
	batch-unresettable)
		expect batch-unresettable 1 'batch-stuck-io: FAIL: the reset after it failed' batch-stuck-io pass &&
			grep -q '  pass: not run' "$tmp/batch-unresettable.out" ||
			{ echo "selftest: FAIL batch-unresettable: the scenario after the failed reset ran"; failures=$((failures + 1)); }
		;;
	*) echo "selftest: unknown case $c" >&2; exit 64 ;;
	esac
done

if [ $failures -ne 0 ]; then
	echo "selftest: $failures case(s) failed"
	exit 1
fi
echo "selftest: all cases behaved"
