#!/bin/sh
# Policy FailIO: the target is a device-mapper device over /dev/ram1 switched
# from `linear` to `error` between write phases. Phase 1 (healthy) is
# acknowledged and mirrored; in phase 2 (failing) every write fails at the
# initiator (HARDWARE ERROR: EREMOTEIO), and no acknowledged write is
# missing from the primary;
# the legs differ only inside dirty regions; through dm-multipath such a
# write fails and leaves the path up (HARDWARE ERROR, not NOT READY, which
# would fail the path). Phase 3: the target is repaired,
# the pair resumed, and writes are acknowledged and mirrored again.
# vm-timeout: 600
# vm-cost: 10
# vm-debug-cost: 45
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-failio
SRC=replipipe_0/vol1
REGION_KIB=64
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
# ended_within PID SECONDS: true once PID has ended, false if it still runs
# after SECONDS
ended_within() {
	local i=0
	while kill -0 $1 2> /dev/null; do
		[ $i -lt $(($2 * 10)) ] || return 1
		sleep 0.1
		i=$((i + 1))
	done
}

vm_brd 2 128
vm_modprobe dm_mod
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rptgt "0 $sectors linear /dev/ram1 0")

vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --name failio --mode sync --policy failio \
	--region-kib $REGION_KIB --pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
rp-nlctl get $PIPE
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun, target $tgt"

vm_log "== phase 1: 16 MiB, target healthy"
out=$(rp-writer --dev "$lun" --log /tmp/p1 --threads 4 --bytes 16M --seed 31) ||
	vm_fail "phase 1 writes failed: $out"
echo "$out"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after phase 1: $pair"

vm_log "== the target fails (linear -> error)"
vm_dm_load rptgt "0 $sectors error"

vm_log "== phase 2: 40 writes, target failing: every one must fail (EREMOTEIO)"
rc=0
out=$(rp-writer --dev "$lun" --log /tmp/p2 --threads 4 --count 40 --seed 32 \
	--continue-on-error) || rc=$?
echo "$out"
[ $rc -eq 3 ] || vm_fail "rp-writer rc=$rc, expected 3 (writes failed)"
summary=$(echo "$out" | grep '^writer: acked')
[ "$(vm_field "$summary" acked)" = 0 ] || vm_fail "writes acknowledged although the mirror failed: $summary"
[ "$(vm_field "$summary" failed)" = 40 ] || vm_fail "not every write failed: $summary"
# HARDWARE ERROR: Linux's sd fails the write as a target error, which
# reaches the application as EREMOTEIO (NOT READY was EIO, a path error).
echo "$out" | grep -q '^writer: first error EREMOTEIO ' ||
	vm_fail "the writes did not fail as target errors (EREMOTEIO)"

pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
# FailIO keeps the pair mirroring (not Degraded) with the failed writes'
# regions dirty: Syncing, named (a missing state is "not InSync" too).
[ "$(vm_field "$pair" state)" = Syncing ] || vm_fail "pair not Syncing after target failures under FailIO: $pair"
[ "$(vm_field "$pair" errors)" -ge 1 ] || vm_fail "no target error counted: $pair"

vm_log "== phase 2: a COMPARE AND WRITE fails too, and does not hold up the next one"
# LIO releases the device's caw_sem in the command's completion callback,
# which only its failure path calls for a failed command.
for n in 1 2; do
	rp-caw "$lun" 64 > /tmp/caw$n.out 2>&1 &
	cpid=$!
	ended_within $cpid 15 ||
		vm_fail "COMPARE AND WRITE $n still waits after 15 s (for LIO's caw_sem?)"
	rc=0
	wait $cpid || rc=$?
	cat /tmp/caw$n.out
	[ $rc -eq 1 ] || vm_fail "COMPARE AND WRITE $n under FailIO, target failing: rc=$rc, expected 1"
done

vm_log "== no acknowledged write missing"
rp-verify --dev "$lun" /tmp/p1.* /tmp/p2.* || vm_fail "data through the LUN"
rp-verify --dev /dev/ram0 /tmp/p1.* /tmp/p2.* || vm_fail "data on the primary"
rp-verify --dev /dev/ram1 /tmp/p1.* || vm_fail "phase 1 not on the replica"

vm_log "== the legs differ only inside dirty regions"
rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
head -n 1 /tmp/bitmap
vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
rc=0
rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib $REGION_KIB > /tmp/cmp || rc=$?
[ $rc -le 1 ] || vm_fail "rp-verify --cmp: rc=$rc"
head -n 1 /tmp/cmp
vm_norm_ranges < /tmp/cmp > /tmp/cmp.ranges
awk -F- 'FILENAME == ARGV[1] { for (r = $1; r <= $2; r++) dirty[r] = 1; next }
	{ for (r = $1; r <= $2; r++) if (!(r in dirty)) { print "clean region " r " differs"; bad = 1 } }
	END { exit bad }' /tmp/bitmap.ranges /tmp/cmp.ranges ||
	vm_fail "the legs differ outside the dirty regions"

vm_log "== phase 2b: through dm-multipath, a write the mirror failed leaves its path up"
# The module answers HARDWARE ERROR (a failure of the logical unit), not
# NOT READY, which dm-multipath takes for a path error: it would fail the
# path and, with queue_if_no_path and no path left, queue every I/O to the
# LUN, reads too, until a path came back. (Not in the debug kernel, which
# is built without dm-multipath.)
if grep -q "/dm-round-robin\.ko" /lib/modules/$(uname -r)/modules.dep; then
	vm_modprobe dm_round_robin
	majmin=$(cat /sys/block/${lun#/dev/}/dev)
	mp=$(vm_dm_create rpmp "0 $(blockdev --getsz $lun) multipath 1 queue_if_no_path 0 1 1 round-robin 0 1 1 $majmin 1")
	rp-writer --dev "$mp" --log /tmp/p2m --threads 1 --count 1 --seed 34 \
		--continue-on-error > /tmp/mp-writer.out 2>&1 &
	wpid=$!
	if ! ended_within $wpid 30; then
		status=$(dmsetup status rpmp)
		# let the queued write fail, so that rp-writer ends
		dmsetup message rpmp 0 fail_if_no_path
		rc=0
		wait $wpid || rc=$?
		vm_fail "a write through dm-multipath still waited after 30 s, queued for a path (rp-writer rc=$rc once let fail): $status"
	fi
	rc=0
	wait $wpid || rc=$?
	cat /tmp/mp-writer.out
	[ $rc -eq 3 ] || vm_fail "rp-writer through dm-multipath: rc=$rc, expected 3 (the write failed)"
	status=$(dmsetup status rpmp)
	echo "$status"
	case "$status" in
	*" $majmin A "*) ;;
	*) vm_fail "dm-multipath failed its path on a write the mirror failed: $status" ;;
	esac
	rp-verify --dev "$mp" /tmp/p1.* /tmp/p2.* /tmp/p2m.* ||
		vm_fail "reads through dm-multipath after the failed write"
	dmsetup --noudevsync remove rpmp || vm_fail "dmsetup remove rpmp"
else
	vm_log "no dm-multipath in kernel $(uname -r): step left out"
fi

vm_log "== phase 3: target repaired, pair resumed, writes mirrored again"
vm_dm_load rptgt "0 $sectors linear /dev/ram1 0"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "pair-state resume"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
case "$(vm_field "$pair" state)" in
Syncing | InSync) ;;
*) vm_fail "pair not mirroring after resume: $pair" ;;
esac
out=$(rp-writer --dev "$lun" --log /tmp/p3 --threads 4 --bytes 8M --seed 33) ||
	vm_fail "phase 3 writes failed after repair and resume: $out"
echo "$out"
rp-verify --dev /dev/ram0 /tmp/p1.* /tmp/p2.* /tmp/p3.* || vm_fail "data on the primary"
rp-verify --dev /dev/ram1 /tmp/p3.* || vm_fail "phase 3 not mirrored to the replica"

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
dmsetup --noudevsync remove rptgt || vm_fail "dmsetup remove"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-failio done"
