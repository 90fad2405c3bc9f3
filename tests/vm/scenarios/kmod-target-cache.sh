#!/bin/sh
# A target with a volatile write cache that loses power while the pair does
# not mirror. Both legs are memory-backed null_blk devices with a cache as
# large as the device (data reach the backing store only on a flush or
# FUA; powering one off through configfs drops its cache and keeps the
# store), so the LUN has a write cache and the initiator's writes reach the
# target without FUA. The pair's target is a dm-linear device over the
# target null_blk: the pair keeps it open while the null_blk is power-
# cycled under an `error` table and comes back as a new disk.
# Phase 1, pause: writes flushed by an fdatasync (SYNCHRONIZE CACHE), writes
# with FUA (O_DSYNC) and plain writes; after the pause exactly the plain
# writes' regions are dirty. The target loses power: the legs differ, and
# only inside dirty regions; resumed and resynced, they are identical.
# Phase 2, degrade: plain writes, then the target fails (dm error) and more
# writes degrade the pair; both sets of regions are dirty; power loss,
# repair, resume, resync: identical. Phase 3, asynchronous: plain writes
# (target legs completing before or after the pause), pause: their regions
# are dirty; power loss, resume, resync: identical. Phase 4, a failed
# flush: synchronous again, flushed writes then plain writes; the target
# fails writes (dm-flakey) and the initiator's next SYNCHRONIZE CACHE fails
# on it:
# the pair degrades with exactly the plain writes' regions dirty (the
# flushed ones are durable); power loss, resume, resync: identical.
# Phase 5, a failed flush releases a writer waiting for lag room, and
# phase 6, a write-intent record's clear pass whose flush of the target
# fails (both below).
# The old module left the unflushed writes clean: the pair went InSync
# over legs that differ. Before session 10 a failed target flush made
# every region of the pair dirty.
# vm-timeout: 600
# vm-cost: 35
# vm-debug-cost: 150
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-tcache
SRC=replipipe_0/vol1
MIB=32
REGION_KIB=64
NULLB=$VM_NULLB
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
# subset A B: every region of the ranges in file A is in those of file B
subset() {
	awk -F- 'FILENAME == ARGV[1] { for (r = $1; r <= $2; r++) in_b[r] = 1; next }
		{ for (r = $1; r <= $2; r++) if (!(r in in_b)) { print "region " r; bad = 1 } }
		END { exit bad }' "$2" "$1"
}

# target_power_loss: the target null_blk loses its cache under the pair
# (dm table error meanwhile: no flush reaches it), then comes back.
target_power_loss() {
	vm_dm_load rpdm "0 $sectors error"
	echo 0 > $NULLB/rptgt/power || vm_fail "cannot power off rptgt"
	echo 1 > $NULLB/rptgt/power || vm_fail "cannot power on rptgt"
	vm_wait_path /dev/rptgt
	vm_dm_load rpdm "0 $sectors linear /dev/rptgt 0"
	vm_log "target power-cycled"
}

# expect_dirty WHEN LOG...: the pair's dirty bitmap is the regions the logs
# wrote
expect_dirty() {
	local when=$1
	shift
	rp-verify --regions $REGION_KIB "$@" > /tmp/expected
	rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
	vm_norm_ranges < /tmp/expected > /tmp/expected.ranges
	vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
	vm_log "dirty: $(head -n 1 /tmp/bitmap), expected $(head -n 1 /tmp/expected)"
	if ! diff /tmp/expected.ranges /tmp/bitmap.ranges > /tmp/ranges.diff; then
		head -n 20 /tmp/ranges.diff
		vm_fail "$when: the dirty regions are not those written since the last flush"
	fi
}

# lost_only_dirty: the target lost something, and only in dirty regions
lost_only_dirty() {
	rc=0
	rp-verify --cmp /dev/rpsrc $tgt --region-kib $REGION_KIB > /tmp/cmp || rc=$?
	[ $rc -le 1 ] || vm_fail "rp-verify --cmp: rc=$rc"
	head -n 1 /tmp/cmp
	[ $rc = 1 ] || vm_fail "the power loss lost nothing: no volatile cache to test"
	rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
	vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
	vm_norm_ranges < /tmp/cmp > /tmp/cmp.ranges
	subset /tmp/cmp.ranges /tmp/bitmap.ranges > /tmp/missing ||
		vm_fail "the target lost writes in regions that are not dirty: $(head -n 5 /tmp/missing | tr '\n' ' ')"
}

# resume_resync: resume, resync, InSync with identical legs
resume_resync() {
	rp-nlctl pair-state $PIPE $SRC resume || vm_fail "pair-state resume"
	rp-nlctl resync $PIPE $SRC > /tmp/resync || vm_fail "resync: $(cat /tmp/resync)"
	tail -n 1 /tmp/resync
	pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
	echo "$pair"
	[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the resync: $pair"
	vm_cmp_devs /dev/rpsrc $tgt
}

vm_modprobe null_blk nr_devices=0
vm_modprobe dm_mod
vm_nullb_cached rpsrc $MIB
vm_nullb_cached rptgt $MIB
sectors=$(blockdev --getsz /dev/rptgt)
tgt=$(vm_dm_create rpdm "0 $sectors linear /dev/rptgt 0")
vm_log "target $tgt: linear over /dev/rptgt, $(cat /sys/block/${tgt#/dev/}/queue/write_cache)"

vm_backstore replipipe replipipe_0 vol1 /dev/rpsrc > /dev/null
# both legs are zeroes: clean
rp-nlctl set-pipe --id $PIPE --name tcache --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)
# A write-back LUN with FUA: the initiator's plain writes reach the target
# without FUA, its O_DSYNC writes with it.
[ "$(cat /sys/block/${lun#/dev/}/queue/write_cache)" = "write back" ] &&
	[ "$(cat /sys/block/${lun#/dev/}/queue/fua)" = 1 ] ||
	vm_fail "LUN $lun: not write-back with FUA"

vm_log "== phase 1: flushed, FUA and plain writes, then pause"
# one thread: its single fdatasync is the only flush, after all its writes
rp-writer --dev "$lun" --log /tmp/a --threads 1 --offset 0 --span 8M \
	--bytes 4M --seed 31 --fsync > /tmp/out || vm_fail "flushed writes: $(cat /tmp/out)"
rp-writer --dev "$lun" --log /tmp/f --threads 2 --offset 8M --span 8M \
	--bytes 4M --seed 32 --dsync > /tmp/out || vm_fail "FUA writes: $(cat /tmp/out)"
rp-writer --dev "$lun" --log /tmp/b --threads 4 --offset 16M --span 16M \
	--bytes 8M --seed 33 > /tmp/out || vm_fail "plain writes: $(cat /tmp/out)"
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "pause"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = Paused ] || vm_fail "not Paused: $pair"
target_power_loss
lost_only_dirty
expect_dirty "after the pause" /tmp/b.*
rp-verify --dev /dev/rptgt /tmp/a.* /tmp/f.* || vm_fail "flushed or FUA writes lost on the target"
resume_resync

vm_log "== phase 2: plain writes, then the target fails and the pair degrades"
rp-writer --dev "$lun" --log /tmp/c --threads 4 --offset 0 --span 16M \
	--bytes 4M --seed 34 > /tmp/out || vm_fail "plain writes: $(cat /tmp/out)"
vm_dm_load rpdm "0 $sectors error"
rp-writer --dev "$lun" --log /tmp/d --threads 4 --offset 16M --span 16M \
	--bytes 2M --seed 35 > /tmp/out || vm_fail "writes under policy degrade: $(cat /tmp/out)"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "not Degraded: $pair"
expect_dirty "after the degrade" /tmp/c.* /tmp/d.*
target_power_loss
lost_only_dirty
resume_resync

vm_log "== phase 3: asynchronous plain writes, then pause"
rp-nlctl set-pipe --id $PIPE --name tcache --mode async --policy degrade \
	--max-lag-kib 4096 --region-kib $REGION_KIB --pair $SRC=$tgt ||
	vm_fail "set-pipe async refused"
rp-writer --dev "$lun" --log /tmp/e --threads 4 --offset 4M --span 16M \
	--bytes 4M --seed 36 > /tmp/out || vm_fail "async writes: $(cat /tmp/out)"
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "pause"
expect_dirty "after the async pause" /tmp/e.*
target_power_loss
lost_only_dirty
resume_resync

vm_log "== phase 4: flushed and plain writes, then a target flush fails"
rp-nlctl set-pipe --id $PIPE --name tcache --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=$tgt || vm_fail "set-pipe sync refused"
rp-writer --dev "$lun" --log /tmp/g --threads 1 --offset 0 --span 16M \
	--bytes 4M --seed 37 --fsync > /tmp/out || vm_fail "flushed writes: $(cat /tmp/out)"
rp-writer --dev "$lun" --log /tmp/h --threads 4 --offset 20M --span 8M \
	--bytes 2M --seed 38 > /tmp/out || vm_fail "plain writes: $(cat /tmp/out)"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync before the flush: $pair"
errors=$(vm_field "$pair" errors)
# dm's error target passes an empty flush (it takes no flush bios): flakey,
# down all the time, fails it
vm_dm_load rpdm "0 $sectors flakey /dev/rptgt 0 0 1 1 error_writes"
# no data: the fsync is one SYNCHRONIZE CACHE, which fails on the target only
dd if=/dev/null of="$lun" conv=notrunc,fsync 2> /tmp/out ||
	vm_fail "SYNCHRONIZE CACHE under policy degrade failed: $(cat /tmp/out)"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "not Degraded after the failed flush: $pair"
[ "$(vm_field "$pair" errors)" -gt "$errors" ] || vm_fail "no target error counted: $pair"
expect_dirty "after the failed flush" /tmp/h.*
target_power_loss
lost_only_dirty
resume_resync
rp-verify --dev /dev/rptgt /tmp/a.* /tmp/f.* /tmp/b.* /tmp/c.* /tmp/d.* /tmp/e.* \
	/tmp/g.* /tmp/h.* || vm_fail "the target after the resyncs"

vm_log "== phase 5: asynchronous, a writer waits for lag room, a target flush fails"
# The target holds writes 50 s (dm-delay) and fails flushes (its flush class
# goes to flakey, down all the time). One write fills MaxLagKiB 64; a second
# writer waits for room (up to 30 s, then it would degrade the pair itself).
# The initiator's SYNCHRONIZE CACHE fails on the target and degrades the
# pair: the waiting writer must go to the primary at once. Before, a failed
# flush woke nobody and the writer waited its 30 s. Policy FailIO: an
# asynchronous pair promises its target nothing at a flush, so the failed
# flush degrades it like a failed copy and the SYNCHRONIZE CACHE succeeds
# on the primary's flush (before, it failed, and the pair stayed Syncing).
vm_modprobe dm_delay
vm_modprobe dm_flakey
flk=$(vm_dm_create rpflk "0 $sectors flakey /dev/rptgt 0 0 1 1 error_writes")
vm_dm_load rpdm "0 $sectors delay /dev/rptgt 0 0 /dev/rptgt 0 50000 $flk 0 0"
rp-nlctl set-pipe --id $PIPE --name tcache --mode async --policy failio \
	--max-lag-kib 64 --region-kib $REGION_KIB --pair $SRC=$tgt ||
	vm_fail "set-pipe async refused"
# the writer waits in the backstore: no SCSI time-out meanwhile
echo 120 > /sys/block/${lun#/dev/}/device/timeout
dd if=/dev/urandom of=$lun bs=64k count=1 seek=40 oflag=direct 2> /dev/null ||
	vm_fail "the write that fills the lag failed"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" lag)" = 65536 ] || vm_fail "setup: the lag is not full: $pair"
rm -f /tmp/w.rc
t0=$(vm_now_ms)
# LIO runs a CPU's commands in one work item: the waiting writer and the
# flush on different CPUs
(taskset -c 0 dd if=/dev/urandom of=$lun bs=4k count=1 seek=700 oflag=direct 2> /dev/null
	echo "$? $(vm_now_ms)" > /tmp/w.rc) &
sleep 3
[ ! -s /tmp/w.rc ] || vm_fail "setup: the writer did not wait for lag room: $(pair_line)"
taskset -c 1 dd if=/dev/null of="$lun" conv=notrunc,fsync 2> /tmp/out ||
	vm_fail "SYNCHRONIZE CACHE of an asynchronous pair under FailIO failed: $(cat /tmp/out)"
tf=$(vm_now_ms)
i=0
until [ -s /tmp/w.rc ]; do
	[ $i -lt 400 ] || vm_fail "the waiting writer did not end within 40 s"
	sleep 0.1
	i=$((i + 1))
done
read -r wrc wend < /tmp/w.rc
vm_log "flush failed at +$((tf - t0)) ms, the waiting writer ended rc=$wrc at +$((wend - t0)) ms"
[ "$wrc" = 0 ] || vm_fail "the waiting write failed"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "not Degraded after the failed flush: $pair"
[ $((wend - tf)) -le 5000 ] ||
	vm_fail "the writer ended $((wend - tf)) ms after the failed flush degraded the pair: nothing woke it"
# the held write reaches the target when the table changes
vm_dm_load rpdm "0 $sectors linear /dev/rptgt 0"
dmsetup --noudevsync remove rpflk || vm_fail "dmsetup remove rpflk"
resume_resync

vm_log "== phase 6: a write-intent record's clear pass finds the target's flush failing"
# A backstore with a record (vol2 on the same primary). The target takes
# writes but fails flushes (dm-delay, no delay, its flush class on flakey).
# Plain writes, then the record's clear pass (every second here) flushes
# both legs: the target's flush fails, and what it held unflushed must
# become dirty, the pair Degraded. Before, the pass only logged: the pair
# stayed InSync, and the next flush that worked made the writes the
# target's cache may have lost look durable.
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
PIPE=kmod-tcache-wi
SRC=replipipe_0/vol2
vm_nullb_cached rpwi 4
vm_backstore replipipe replipipe_0 vol2 /dev/rpsrc /dev/rpwi > /dev/null
flk=$(vm_dm_create rpflk "0 $sectors flakey /dev/rptgt 0 0 1 1 error_writes")
vm_dm_load rpdm "0 $sectors delay /dev/rptgt 0 0 /dev/rptgt 0 0 $flk 0 0"
# the legs are identical since phase 5
rp-nlctl set-pipe --id $PIPE --name tcache-wi --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=$tgt,clean || vm_fail "set-pipe with a record refused"
lun=$(vm_tcm_loop_export $SRC)
echo 1 > /sys/module/replipipe/parameters/intent_clear_sec
rp-writer --dev "$lun" --log /tmp/k --threads 4 --offset 4M --span 8M \
	--bytes 2M --seed 39 > /tmp/out || vm_fail "plain writes: $(cat /tmp/out)"
i=0
until [ "$(vm_field "$(pair_line)" state)" = Degraded ]; do
	[ $i -lt 150 ] || vm_fail "not Degraded 15 s after the writes, with the target failing flushes: $(pair_line)"
	sleep 0.1
	i=$((i + 1))
done
echo 5 > /sys/module/replipipe/parameters/intent_clear_sec
pair=$(pair_line)
echo "$pair"
vm_log "Degraded $((i * 100)) ms after the writes"
rp-verify --regions $REGION_KIB /tmp/k.* > /tmp/expected
vm_norm_ranges < /tmp/expected > /tmp/expected.ranges
rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
subset /tmp/expected.ranges /tmp/bitmap.ranges > /tmp/missing ||
	vm_fail "written regions not dirty after the failed flush: $(head -n 5 /tmp/missing | tr '\n' ' ')"
vm_dm_load rpdm "0 $sectors linear /dev/rptgt 0"
dmsetup --noudevsync remove rpflk || vm_fail "dmsetup remove rpflk"
target_power_loss
lost_only_dirty
resume_resync
rp-verify --dev /dev/rptgt /tmp/k.* || vm_fail "the target after the resync"

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
dmsetup --noudevsync remove rpdm || vm_fail "dmsetup remove"
for n in rpsrc rptgt rpwi; do
	echo 0 > $NULLB/$n/power
	rmdir $NULLB/$n || vm_fail "rmdir $NULLB/$n"
done
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-target-cache done"
