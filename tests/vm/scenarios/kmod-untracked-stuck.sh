#!/bin/sh
# A PIPE_SET whose new pair's source has a write in flight that found no
# pair, queued for good (a suspended dm device, as multipath with no path
# left would queue it). PIPE_SET waits for such writes under the lock every
# netlink command takes: a claim must not start while one is in flight, and
# a write-intent record's marks of them are in only once they ended.
#  1. The source (dm-linear over a null_blk, with a write-intent record) is
#     exported with no pipe; the dm device is suspended and one write W of
#     64 KiB is issued to the LUN: it marks the record and waits in dm.
#  2. PIPE_SET of a pipe with that source returns within its 5 s bound,
#     with the pair not started; PIPE_GET answers at once; a claim waits
#     claim_timeout_sec (2 s) and fails saying why. A claim waiting there
#     with claim_timeout_sec 30 ends at once when killed (SIGKILL).
#  3. The dm device resumed: W ends, the pair starts on its own (its record
#     too: the start runs from a work item, under the lock), and a resync
#     of its regions, all dirty, makes the legs identical.
# The old module waited for W without a bound: the PIPE_SET and every
# netlink command after it (another pipe's too) hung until the resume.
# vm-timeout: 300
# vm-cost: 25
# vm-debug-cost: 50
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-untracked
SRC=replipipe_0/vol1
MIB=32
REGION_KIB=64
NULLB=$VM_NULLB
CLAIM_TIMEOUT=/sys/module/replipipe/parameters/claim_timeout_sec
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }

vm_modprobe null_blk nr_devices=0
vm_modprobe dm_mod
vm_nullb_cached rpsrc $MIB
vm_nullb_cached rptgt $MIB
vm_nullb_cached rpwi 4
sectors=$(blockdev --getsz /dev/rpsrc)
src=$(vm_dm_create rpq "0 $sectors linear /dev/rpsrc 0")
vm_backstore replipipe replipipe_0 vol1 "$src" /dev/rpwi > /dev/null
lun=$(vm_tcm_loop_export $SRC)

vm_log "== 1. W issued to a source with no pair, queued in a suspended dm device"
DM_DISABLE_UDEV=1 dmsetup --noudevsync suspend rpq || vm_fail "dmsetup suspend rpq"
rm -f /tmp/w.rc
(rp-writer --dev "$lun" --log /tmp/w --threads 1 --offset 1M --span 64K \
	--min-size 64K --max-size 64K --count 1 --seed 65 > /tmp/w.out 2>&1
	echo $? > /tmp/w.rc) &
sleep 1
[ ! -e /tmp/w.rc ] || vm_fail "W ended on a suspended source: $(cat /tmp/w.out)"

vm_log "== 2. PIPE_SET with W in flight"
t0=$(vm_now_ms)
rp-nlctl set-pipe --id $PIPE --name untracked --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=/dev/rptgt --nl-timeout 20 \
	> /tmp/set.out 2>&1 || vm_fail "set-pipe: $(cat /tmp/set.out)"
t1=$(vm_now_ms)
vm_log "PIPE_SET took $((t1 - t0)) ms"
[ $((t1 - t0)) -lt 9000 ] || vm_fail "PIPE_SET took $((t1 - t0)) ms: past its 5 s bound"
dmesg | grep -q "replipipe: $SRC: writes from before pair $PIPE -> /dev/rptgt still in flight after 5 s; it starts when they end" ||
	vm_fail "the kernel log does not say the pair starts later"
t0=$(vm_now_ms)
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
t1=$(vm_now_ms)
echo "$pair"
[ $((t1 - t0)) -lt 2000 ] || vm_fail "PIPE_GET took $((t1 - t0)) ms"
# The wait is killable: a resync engine killed by systemd's SIGKILL must
# not stay in the kernel for claim_timeout_sec (up to an hour).
rp-nlctl claim $PIPE $SRC > /tmp/claimk.out 2>&1 &
cpid=$!
sleep 1
kill -0 $cpid 2> /dev/null || vm_fail "the claim did not wait: $(cat /tmp/claimk.out)"
t0=$(vm_now_ms)
kill -9 $cpid
rc=0
wait $cpid || rc=$?
t1=$(vm_now_ms)
vm_log "a killed claim ended after $((t1 - t0)) ms"
[ $rc = 137 ] || vm_fail "the claim ended by itself (rc=$rc), not by the kill: $(cat /tmp/claimk.out)"
[ $((t1 - t0)) -lt 3000 ] || vm_fail "a killed claim took $((t1 - t0)) ms to end"
echo 2 > $CLAIM_TIMEOUT
t0=$(vm_now_ms)
if rp-nlctl claim $PIPE $SRC > /tmp/claim.out 2>&1; then
	vm_fail "a claim was granted with a write from before the pair in flight: $(cat /tmp/claim.out)"
fi
t1=$(vm_now_ms)
cat /tmp/claim.out
case "$(cat /tmp/claim.out)" in
*"writes to the source from before the pair are still in flight"*"(errno ETIMEDOUT)"*) ;;
*) vm_fail "the claim failed without saying why" ;;
esac
[ $((t1 - t0)) -ge 1500 ] || vm_fail "the claim gave up after $((t1 - t0)) ms, before claim_timeout_sec"
echo 30 > $CLAIM_TIMEOUT

vm_log "== 3. the source resumed: W ends, the pair starts"
DM_DISABLE_UDEV=1 dmsetup --noudevsync resume rpq || vm_fail "dmsetup resume rpq"
i=0
until [ -e /tmp/w.rc ]; do
	[ $i -lt 100 ] || vm_fail "W did not end within 10 s of the resume"
	sleep 0.1
	i=$((i + 1))
done
[ "$(cat /tmp/w.rc)" = 0 ] || vm_fail "W failed: $(cat /tmp/w.out)"
i=0
until dmesg | grep -q "replipipe: $SRC: the writes from before pair $PIPE -> /dev/rptgt ended; it is started"; do
	[ $i -lt 50 ] || vm_fail "the pair did not start within 5 s of W's end"
	sleep 0.1
	i=$((i + 1))
done
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
# both fields missing would compare equal
[ "$(vm_field "$pair" regions)" = $((MIB * 1024 / REGION_KIB)) ] ||
	vm_fail "regions is not $MIB MiB / $REGION_KIB KiB: $pair"
[ "$(vm_field "$pair" dirty)" = "$(vm_field "$pair" regions)" ] ||
	vm_fail "a new pair not given as clean has clean regions: $pair"
rp-nlctl resync $PIPE $SRC > /tmp/resync || vm_fail "resync: $(cat /tmp/resync)"
tail -n 1 /tmp/resync
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the resync: $pair"
vm_cmp_devs /dev/rpsrc /dev/rptgt

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
dmsetup --noudevsync remove rpq || vm_fail "dmsetup remove rpq"
for n in rpsrc rptgt rpwi; do
	echo 0 > $NULLB/$n/power
	rmdir $NULLB/$n || vm_fail "rmdir $NULLB/$n"
done
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-untracked-stuck done"
