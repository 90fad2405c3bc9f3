#!/bin/sh
# A write whose target leg is in the target's volatile cache while its
# primary leg still runs, when the target loses that cache. Both legs are
# memory-backed null_blk devices with a cache (as in kmod-target-cache);
# the primary is behind dm-delay (writes take DELAY_MS, flushes none), the
# target behind a dm device whose table is switched (flakey down all the
# time fails its flushes, error while it is power-cycled).
#  1. A synchronous pipe with policy FailIO. One plain write W of 64 KiB is
#     issued: its target leg lands in the target's cache at once, its
#     primary leg waits in dm-delay.
#  2. Meanwhile the target loses power (W is gone from it) and fails the
#     initiator's SYNCHRONIZE CACHE: under FailIO the command fails and the
#     pair stays mirroring; what the target held unflushed becomes dirty,
#     and W was not counted there yet.
#  3. The target comes back; W completes (still within its DELAY_MS: else
#     the window was missed and the scenario says so); the next SYNCHRONIZE
#     CACHE succeeds.
# The target lost W, so W's region must be dirty, and a resync makes the
# legs identical. The old module put W into the unflushed regions when it
# completed and the successful flush cleared them: the pair could go InSync
# over legs that differ (review finding, docs/decisions.md 64).
# vm-timeout: 300
# vm-cost: 20
# vm-debug-cost: 60
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-tcwin
SRC=replipipe_0/vol1
MIB=32
REGION_KIB=64
NULLB=$VM_NULLB
# W's primary leg must outlast step 2. That took 2 s on Debian's kernel and
# 6.4 s on the debug kernel with the machine busy (kmemleak, lockdep, two
# VMs on two cores), where 8 s once missed the window: 24 s there.
DELAY_MS=8000
case "$(uname -r)" in
*rpdebug*) DELAY_MS=24000 ;;
esac
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
# delay_table WRITE_MS: reads and flushes at once, writes after WRITE_MS
delay_table() { echo "0 $sectors delay /dev/rpsrc 0 0 /dev/rpsrc 0 $1 /dev/rpsrc 0 0"; }

vm_modprobe null_blk nr_devices=0
vm_modprobe dm_mod
vm_modprobe dm_delay
vm_modprobe dm_flakey
vm_nullb_cached rpsrc $MIB
vm_nullb_cached rptgt $MIB
sectors=$(blockdev --getsz /dev/rptgt)
src=$(vm_dm_create rpslow "$(delay_table 0)")
tgt=$(vm_dm_create rpdm "0 $sectors linear /dev/rptgt 0")
vm_backstore replipipe replipipe_0 vol1 "$src" > /dev/null
rp-nlctl set-pipe --id $PIPE --name tcwin --mode sync --policy failio \
	--region-kib $REGION_KIB --pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)
[ "$(cat /sys/block/${lun#/dev/}/queue/write_cache)" = "write back" ] ||
	vm_fail "LUN $lun: not write-back"

vm_log "== 1. W issued; its primary leg waits ${DELAY_MS} ms"
vm_dm_load rpslow "$(delay_table $DELAY_MS)"
rm -f /tmp/w.rc
(rp-writer --dev "$lun" --log /tmp/w --threads 1 --offset 1M --span 64K \
	--min-size 64K --max-size 64K --count 1 --seed 64 > /tmp/w.out 2>&1
	echo $? > /tmp/w.rc) &
sleep 0.5

vm_log "== 2. the target loses power and fails a SYNCHRONIZE CACHE"
vm_dm_load rpdm "0 $sectors error"
echo 0 > $NULLB/rptgt/power || vm_fail "cannot power off rptgt"
echo 1 > $NULLB/rptgt/power || vm_fail "cannot power on rptgt"
vm_wait_path /dev/rptgt
vm_dm_load rpdm "0 $sectors flakey /dev/rptgt 0 0 1 1 error_writes"
if dd if=/dev/null of="$lun" conv=notrunc,fsync 2> /tmp/out; then
	vm_fail "SYNCHRONIZE CACHE succeeded on a failing target under FailIO"
fi
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] ||
	vm_fail "FailIO: the pair left InSync on a failed flush: $pair"

vm_log "== 3. the target back, W completes, a flush succeeds"
vm_dm_load rpdm "0 $sectors linear /dev/rptgt 0"
[ ! -e /tmp/w.rc ] ||
	vm_fail "W completed before the target came back: the window was missed (DELAY_MS too short here)"
i=0
until [ -e /tmp/w.rc ]; do
	[ $i -lt $((DELAY_MS / 100 + 200)) ] || vm_fail "W did not complete within $((DELAY_MS / 1000 + 20)) s"
	sleep 0.1
	i=$((i + 1))
done
[ "$(cat /tmp/w.rc)" = 0 ] || vm_fail "W failed: $(cat /tmp/w.out)"
dd if=/dev/null of="$lun" conv=notrunc,fsync 2> /tmp/out ||
	vm_fail "SYNCHRONIZE CACHE on the target back failed: $(cat /tmp/out)"
vm_dm_load rpslow "$(delay_table 0)"

rc=0
rp-verify --cmp /dev/rpsrc /dev/rptgt --region-kib $REGION_KIB > /tmp/cmp || rc=$?
[ $rc -le 1 ] || vm_fail "rp-verify --cmp: rc=$rc"
head -n 1 /tmp/cmp
[ $rc = 1 ] || vm_fail "the target lost nothing: W did not reach its cache first"
rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
head -n 1 /tmp/bitmap
vm_norm_ranges < /tmp/cmp > /tmp/cmp.ranges
vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
awk -F- 'FILENAME == ARGV[1] { for (r = $1; r <= $2; r++) dirty[r] = 1; next }
	{ for (r = $1; r <= $2; r++) if (!(r in dirty)) { print "region " r; bad = 1 } }
	END { exit bad }' /tmp/bitmap.ranges /tmp/cmp.ranges > /tmp/missing ||
	vm_fail "the target lost $(tr '\n' ' ' < /tmp/missing), not dirty: the pair would go InSync over legs that differ"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = Syncing ] || vm_fail "not Syncing with W's region dirty: $pair"

rp-nlctl resync $PIPE $SRC > /tmp/resync || vm_fail "resync: $(cat /tmp/resync)"
tail -n 1 /tmp/resync
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the resync: $pair"
vm_cmp_devs /dev/rpsrc /dev/rptgt

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
dmsetup --noudevsync remove rpdm || vm_fail "dmsetup remove rpdm"
dmsetup --noudevsync remove rpslow || vm_fail "dmsetup remove rpslow"
for n in rpsrc rptgt; do
	echo 0 > $NULLB/$n/power
	rmdir $NULLB/$n || vm_fail "rmdir $NULLB/$n"
done
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-target-cache-window done"
