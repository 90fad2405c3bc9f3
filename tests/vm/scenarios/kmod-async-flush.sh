#!/bin/sh
# SYNCHRONIZE CACHE on an asynchronous pair whose target queues I/O (a
# suspended dm device, as multipath queue_if_no_path or an iSCSI session in
# recovery would): the command completes on the primary's flush, and the
# target's flush, still sent, is accounted when it ends. Both legs are
# memory-backed null_blk devices with a volatile write cache (on brd the
# block layer ends an empty flush at once: nothing would queue it), the
# target behind dm-linear.
# Phase 1: a plain write A, copied (its region unflushed on the target);
# the target suspended; a plain write B, acknowledged at once (its copy
# queued); an fsync of the LUN (one SYNCHRONIZE CACHE) ends within 3 s,
# with no flush on the target yet, the pair still InSync and B in its
# lag. Resumed, the target gets the flush; then a pause makes exactly B's
# region dirty: the flush's completion cleared A's (B's copy ended after
# the flush was issued), and A survives the loss of the target's cache.
# Phase 2: five fsyncs while the target is suspended all end at once; the
# target (its dm device) gets two flushes once resumed: the first fsync's,
# and one sent when it ends for the four that came meanwhile (a target that
# queues I/O holds one flush of the pair, not one per command). Its disk
# cannot tell: blk-mq makes one flush of those pending together.
# Phase 3: such a flush still queued when its pipe is deleted: PIPE_DEL
# ends after its 5 s bound, the pair lives on until the flush ends on the
# resume, then it is freed; nothing is left.
# Before, the fsync waited for as long as the target was suspended: for
# good here, and an initiator's SCSI error handling escalates after 30 s
# and may take the LUN offline.
# vm-timeout: 300
# vm-cost: 20
# vm-debug-cost: 45
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-aflush
SRC=replipipe_0/vol1
MIB=16
REGION_KIB=64
NULLB=$VM_NULLB
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
# stat_field DEV N: field N of /sys/block/DEV/stat
stat_field() {
	local f n=$2
	read -r f < "/sys/block/$1/stat"
	set -- $f
	eval echo "\${$n}"
}
# flushes DEV: the flush requests DEV (blk-mq) completed; several flushes
# pending together make one
flushes() { stat_field "$1" 16; }
# dm_bios: the write bios the target's dm device took, empty flushes
# included
dm_bios() { stat_field "${tgt#/dev/}" 5; }

# fsync_within NAME: an fsync of the LUN (one SYNCHRONIZE CACHE: no data)
# must end within 3 s; else the target is resumed (so that the fsync can
# end) and the scenario fails.
fsync_within() {
	local i=0 t0
	rm -f /tmp/fsync.rc
	t0=$(vm_now_ms)
	(dd if=/dev/null of="$lun" conv=notrunc,fsync 2> /tmp/fsync.err
		echo "$? $(vm_now_ms)" > /tmp/fsync.rc) &
	until [ -s /tmp/fsync.rc ]; do
		if [ $i -ge 30 ]; then
			vm_log "$1: the fsync still waits after 3 s: $(pair_line)"
			dmsetup --noudevsync resume rpdm
			wait
			vm_fail "$1: SYNCHRONIZE CACHE on an asynchronous pair waited for the suspended target (it ended once the target resumed: $(cat /tmp/fsync.rc))"
		fi
		sleep 0.1
		i=$((i + 1))
	done
	wait
	read -r frc fend < /tmp/fsync.rc
	vm_log "$1: the fsync ended rc=$frc after $((fend - t0)) ms"
	[ "$frc" = 0 ] || vm_fail "$1: the fsync failed: $(cat /tmp/fsync.err)"
}

vm_modprobe null_blk nr_devices=0
vm_modprobe dm_mod
vm_nullb_cached rpsrc $MIB
vm_nullb_cached rptgt $MIB
sectors=$(blockdev --getsz /dev/rptgt)
tgt=$(vm_dm_create rpdm "0 $sectors linear /dev/rptgt 0")
vm_backstore replipipe replipipe_0 vol1 /dev/rpsrc > /dev/null
# both legs are zeroes: clean
rp-nlctl set-pipe --id $PIPE --mode async --max-lag-kib 4096 \
	--region-kib $REGION_KIB --pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)
# Write-back LUN over write-back legs: plain writes reach the target
# without FUA, and fsync sends SYNCHRONIZE CACHE.
[ "$(cat /sys/block/${lun#/dev/}/queue/write_cache)" = "write back" ] &&
	[ "$(cat /sys/block/${tgt#/dev/}/queue/write_cache)" = "write back" ] ||
	vm_fail "LUN $lun or target $tgt: not write-back"

vm_log "== phase 1: SYNCHRONIZE CACHE with the target suspended"
rp-writer --dev "$lun" --log /tmp/a --threads 1 --offset 0 --span 64K \
	--min-size 64K --max-size 64K --count 1 --seed 61 > /tmp/out ||
	vm_fail "write A: $(cat /tmp/out)"
vm_lag_drained $PIPE > /dev/null
f0=$(flushes rptgt)
dmsetup --noudevsync suspend --nolockfs rpdm || vm_fail "dmsetup suspend"
rp-writer --dev "$lun" --log /tmp/b --threads 1 --offset 1M --span 64K \
	--min-size 64K --max-size 64K --count 1 --seed 62 > /tmp/out ||
	vm_fail "write B, the target suspended: $(cat /tmp/out)"
fsync_within "phase 1"
pair=$(pair_line)
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the fsync: $pair"
[ "$(vm_field "$pair" lag)" = 65536 ] || vm_fail "B's copy is not the lag: $pair"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"
[ "$(flushes rptgt)" = "$f0" ] ||
	vm_fail "setup: a flush reached the suspended target ($f0 -> $(flushes rptgt))"

dmsetup --noudevsync resume rpdm || vm_fail "dmsetup resume"
vm_lag_drained $PIPE > /dev/null
i=0
until [ "$(flushes rptgt)" -gt "$f0" ]; do
	[ $i -lt 100 ] || vm_fail "no flush reached the target 10 s after its resume"
	sleep 0.1
	i=$((i + 1))
done
vm_log "flushes of the target: $f0 before the suspend, $(flushes rptgt) after the resume"
# The flush's own completion ran when the target completed it, before the
# count above was read: this pause sees what it accounted.
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "pause"
rp-verify --regions $REGION_KIB /tmp/b.* > /tmp/expected
rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
vm_norm_ranges < /tmp/expected > /tmp/expected.ranges
vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
vm_log "dirty after the pause: $(head -n 1 /tmp/bitmap), expected $(head -n 1 /tmp/expected)"
diff /tmp/expected.ranges /tmp/bitmap.ranges ||
	vm_fail "the dirty regions after the pause are not B's alone: the target's flush was not accounted"
# the target loses its cache: A was flushed
vm_dm_load rpdm "0 $sectors error"
echo 0 > $NULLB/rptgt/power || vm_fail "cannot power off rptgt"
echo 1 > $NULLB/rptgt/power || vm_fail "cannot power on rptgt"
vm_wait_path /dev/rptgt
vm_dm_load rpdm "0 $sectors linear /dev/rptgt 0"
rp-verify --dev /dev/rptgt /tmp/a.* || vm_fail "write A lost with the target's cache: never flushed"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "pair-state resume"
rp-nlctl resync $PIPE $SRC > /tmp/resync || vm_fail "resync: $(cat /tmp/resync)"
pair=$(pair_line)
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the resync: $pair"
vm_cmp_devs /dev/rpsrc $tgt

vm_log "== phase 2: more SYNCHRONIZE CACHEs while the target's flush is queued"
f0=$(flushes rptgt)
b0=$(dm_bios)
dmsetup --noudevsync suspend --nolockfs rpdm || vm_fail "dmsetup suspend"
for n in 1 2 3 4 5; do
	fsync_within "phase 2, fsync $n"
done
pair=$(pair_line)
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the fsyncs: $pair"
dmsetup --noudevsync resume rpdm || vm_fail "dmsetup resume"
i=0
until [ "$(flushes rptgt)" -ge $((f0 + 2)) ]; do
	[ $i -lt 100 ] || vm_fail "the target got $(($(flushes rptgt) - f0)) flushes, not 2, 10 s after its resume"
	sleep 0.1
	i=$((i + 1))
done
sleep 1
vm_log "5 fsyncs while suspended: $(($(dm_bios) - b0)) flushes sent to the target, $(($(flushes rptgt) - f0)) done by its disk"
[ "$(dm_bios)" = $((b0 + 2)) ] ||
	vm_fail "$(($(dm_bios) - b0)) flushes sent to the target for 5 fsyncs: the first and one after it expected"

vm_log "== phase 3: the pipe deleted while the target's flush is queued"
dmsetup --noudevsync suspend --nolockfs rpdm || vm_fail "dmsetup suspend"
fsync_within "phase 3"
t0=$(vm_now_ms)
rp-nlctl del-pipe $PIPE --nl-timeout 30 || vm_fail "del-pipe"
vm_log "del-pipe took $(($(vm_now_ms) - t0)) ms"
dmesg | grep -q "pipe $PIPE deleted; writes to its targets still in flight" ||
	vm_fail "the pipe's pair was not kept for its queued flush"
dmsetup --noudevsync resume rpdm || vm_fail "dmsetup resume"
i=0
until [ "$(cat /sys/module/replipipe/parameters/live_objects)" = \
	"pipes=0 pairs=0 claims=0 async_bufs=0" ]; do
	[ $i -lt 100 ] || vm_fail "the deleted pipe's pair not freed 10 s after the resume: $(cat /sys/module/replipipe/parameters/live_objects)"
	sleep 0.1
	i=$((i + 1))
done
dmesg | grep -q "the last writes to removed target $tgt ended" ||
	vm_fail "no message that the removed pair's flush ended"

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
dmsetup --noudevsync remove rpdm || vm_fail "dmsetup remove"
for n in rpsrc rptgt; do
	echo 0 > $NULLB/$n/power
	rmdir $NULLB/$n || vm_fail "rmdir $NULLB/$n"
done
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-async-flush done"
