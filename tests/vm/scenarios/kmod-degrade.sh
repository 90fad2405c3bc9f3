#!/bin/sh
# Policy Degrade: the target is a device-mapper device over /dev/ram1 that is
# switched from `linear` to `error` between two write phases (the phases do
# not overlap the switch, so which writes came after the failure is exact).
# Phase 1 mirrors cleanly; in phase 2 every write is still acknowledged, the
# pair goes Degraded, a pair_state event announces it, and the dirty bitmap is
# exactly the set of regions that phase 2 wrote. Every acknowledged write is
# on the primary; the replica (/dev/ram1) still holds phase 1; the legs differ
# only inside dirty regions. Phase 3: the target is repaired and the pair
# resumed (Syncing), then the target fails again while writers run: every
# write is still acknowledged and on the primary, the pair is Degraded, and
# every region that differs or that phase 2 wrote is dirty.
# vm-timeout: 600
# vm-cost: 25
# vm-debug-cost: 60
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-degrade
SRC=replipipe_0/vol1
REGION_KIB=64
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }

vm_brd 2 128
vm_modprobe dm_mod
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rptgt "0 $sectors linear /dev/ram1 0")
vm_log "target $tgt: linear over /dev/ram1"

vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --name degrade --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun"

vm_log "== phase 1: 16 MiB, target healthy"
out=$(rp-writer --dev "$lun" --log /tmp/p1 --threads 4 --bytes 16M --seed 21) ||
	vm_fail "phase 1 writes failed: $out"
echo "$out"
sync
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after phase 1: $pair"
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "dirty after phase 1: $pair"
rp-verify --dev /dev/ram1 /tmp/p1.* || vm_fail "phase 1 not on the replica"

vm_log "== event listener, then the target fails (linear -> error)"
vm_events_listen /tmp/events /tmp/events.err --timeout 300
events_pid=$VM_EVENTS_PID
vm_dm_load rptgt "0 $sectors error"
dmsetup table rptgt

vm_log "== phase 2: 16 MiB, target failing: still acknowledged"
out=$(rp-writer --dev "$lun" --log /tmp/p2 --threads 4 --bytes 16M --seed 22) ||
	vm_fail "phase 2 writes failed under policy degrade: $out"
echo "$out"

pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded: $pair"
[ "$(vm_field "$pair" errors)" -ge 1 ] || vm_fail "no target error counted: $pair"

i=0
until grep -q "^event type=pair_state .*source=$SRC .*state=Degraded" /tmp/events; do
	[ $i -lt 100 ] || vm_fail "no pair_state Degraded event; got: $(cat /tmp/events /tmp/events.err)"
	sleep 0.1
	i=$((i + 1))
done
kill $events_pid 2> /dev/null || true
wait $events_pid || true
vm_log "events:"
cat /tmp/events

vm_log "== data: all acknowledged writes on the primary, phase 1 alone on the replica"
rp-verify --dev "$lun" /tmp/p1.* /tmp/p2.* || vm_fail "data through the LUN"
rp-verify --dev /dev/ram0 /tmp/p1.* /tmp/p2.* || vm_fail "data on the primary"
# phase-1 blocks that phase 2 overwrote must still hold phase 1 on the replica
rp-verify --dev /dev/ram1 /tmp/p1.* || vm_fail "the replica lost phase 1 data"

vm_log "== dirty bitmap = regions written in phase 2"
rp-verify --regions $REGION_KIB /tmp/p2.* > /tmp/expected
rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
head -n 1 /tmp/bitmap
vm_norm_ranges < /tmp/expected > /tmp/expected.ranges
vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
want=$(sed -n 's/^regions: count=//p' /tmp/expected)
got=$(vm_field "$(head -n 1 /tmp/bitmap)" dirty)
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
vm_log "expected dirty regions: $want, bitmap: $got, pair: $(vm_field "$pair" dirty)"
if ! diff /tmp/expected.ranges /tmp/bitmap.ranges > /tmp/ranges.diff; then
	head -n 40 /tmp/ranges.diff
	vm_fail "dirty bitmap differs from the regions written after the failure"
fi
[ "$got" = "$want" ] || vm_fail "bitmap dirty=$got, expected $want"
[ "$(vm_field "$pair" dirty)" = "$want" ] || vm_fail "pair dirty count != $want: $pair"

# the legs may differ only inside dirty regions
rc=0
rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib $REGION_KIB > /tmp/cmp || rc=$?
[ $rc -le 1 ] || vm_fail "rp-verify --cmp: rc=$rc"
head -n 1 /tmp/cmp
vm_norm_ranges < /tmp/cmp > /tmp/cmp.ranges
awk -F- 'FILENAME == ARGV[1] { for (r = $1; r <= $2; r++) dirty[r] = 1; next }
	{ for (r = $1; r <= $2; r++) if (!(r in dirty)) { print "clean region " r " differs"; bad = 1 } }
	END { exit bad }' /tmp/bitmap.ranges /tmp/cmp.ranges ||
	vm_fail "the legs differ outside the dirty regions"

vm_log "== phase 3: target repaired, pair resumed, then failed again mid-run"
vm_dm_load rptgt "0 $sectors linear /dev/ram1 0"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "pair-state resume"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = Syncing ] || vm_fail "resumed pair with dirty regions not Syncing: $pair"
rp-writer --dev "$lun" --log /tmp/p3 --threads 4 --seconds 8 --seed 23 > /tmp/out-p3 2>&1 &
writers=$!
sleep 3
vm_dm_load rptgt "0 $sectors error"
vm_log "target failed under load"
rc=0
wait $writers || rc=$?
cat /tmp/out-p3
[ $rc -eq 0 ] || vm_fail "writes failed when the target failed mid-run (rc=$rc)"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded after the second failure: $pair"
rp-verify --dev /dev/ram0 /tmp/p1.* /tmp/p2.* /tmp/p3.* || vm_fail "data on the primary after phase 3"
rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
head -n 1 /tmp/bitmap
vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
rc=0
rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib $REGION_KIB > /tmp/cmp || rc=$?
[ $rc -le 1 ] || vm_fail "rp-verify --cmp: rc=$rc"
head -n 1 /tmp/cmp
vm_norm_ranges < /tmp/cmp > /tmp/cmp.ranges
# phase 2's regions were never resynced: they must still be dirty
cat /tmp/expected.ranges /tmp/cmp.ranges > /tmp/must-be-dirty.ranges
awk -F- 'FILENAME == ARGV[1] { for (r = $1; r <= $2; r++) dirty[r] = 1; next }
	{ for (r = $1; r <= $2; r++) if (!(r in dirty)) { print "region " r " not dirty"; bad = 1 } }
	END { exit bad }' /tmp/bitmap.ranges /tmp/must-be-dirty.ranges ||
	vm_fail "regions that differ, or that phase 2 wrote, are not dirty"

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
dmsetup --noudevsync remove rptgt || vm_fail "dmsetup remove"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-degrade done"
