#!/bin/sh
# COMPARE AND WRITE on an asynchronous pair. LIO holds the device's
# caw_sem from the command's read until its write ends, and takes it for
# the next COMPARE AND WRITE in the submitting thread: a write that waits
# for lag room (up to 30 s) would stall every command behind it (VMware's
# ATS heartbeat gives up after about 8 s). So its write never waits: with
# room it is mirrored like any write; without room (the target holds the
# copies, here dm-delay of 50 s, and the lag is full) it goes to the
# primary at once with its region dirty, and a resync carries it over.
# Before, it waited for room: about 30 s, until the lag wait degraded the
# pair.
# vm-timeout: 300
# vm-cost: 30
# vm-debug-cost: 60
# vm-bins: dmsetup

PIPE=kmod-caw
SRC=replipipe_0/vol1
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

vm_brd 2 64
vm_modprobe dm_mod
vm_modprobe dm_delay
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rptgt "0 $sectors linear /dev/ram1 0")
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --mode async --max-lag-kib 64 --region-kib 64 \
	--pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)
# a write that waits for lag room waits up to 30 s: no SCSI time-out before
echo 120 > /sys/block/${lun#/dev/}/device/timeout
bs=$(blockdev --getss "$lun")
blocks_per_region=$((65536 / bs))

vm_log "== with lag room: mirrored like any write"
lba=$((100 * blocks_per_region))
rp-caw "$lun" $lba || vm_fail "COMPARE AND WRITE on a mirroring pair failed"
vm_lag_drained $PIPE 10 > /dev/null
vm_read /dev/ram0 $lba 1 /tmp/primary "$bs"
vm_read /dev/ram1 $lba 1 /tmp/target "$bs"
cmp -s /tmp/primary /tmp/target || vm_fail "the target lacks the COMPARE AND WRITE's block"
pair=$(pair_line)
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "a mirrored COMPARE AND WRITE left regions dirty: $pair"

vm_log "== without lag room: to the primary at once, its region dirty"
vm_dm_load rptgt "0 $sectors delay /dev/ram1 0 50000"
dd if=/dev/urandom of="$lun" bs=64k count=1 oflag=direct 2> /dev/null ||
	vm_fail "the write that fills the lag failed"
[ "$(vm_field "$(pair_line)" lag)" = 65536 ] || vm_fail "setup: the lag is not full: $(pair_line)"
lba=$((200 * blocks_per_region))
vm_read /dev/ram0 $lba 1 /tmp/before "$bs"
t0=$(now_ms)
rp-caw "$lun" $lba > /tmp/caw.out || vm_fail "COMPARE AND WRITE without lag room failed: $(cat /tmp/caw.out)"
t=$(($(now_ms) - t0))
cat /tmp/caw.out
vm_log "COMPARE AND WRITE with the lag full took $t ms"
[ $t -lt 5000 ] || vm_fail "COMPARE AND WRITE waited $t ms for lag room, holding LIO's caw_sem"
vm_read /dev/ram0 $lba 1 /tmp/after "$bs"
cmp -s /tmp/before /tmp/after && vm_fail "the COMPARE AND WRITE did not write the primary"
pair=$(pair_line)
echo "$pair"
[ "$(vm_field "$pair" dirty)" -ge 1 ] || vm_fail "the COMPARE AND WRITE without lag room left no region dirty: $pair"
[ "$(vm_field "$pair" state)" != Degraded ] || vm_fail "the pair degraded: $pair"

vm_log "== the target answers again: a resync carries the write over"
# dm-delay sends what it holds on at the suspend of the table swap
vm_dm_load rptgt "0 $sectors linear /dev/ram1 0"
vm_lag_drained $PIPE 10 > /dev/null
rp-nlctl resync $PIPE $SRC > /tmp/resync 2>&1 || vm_fail "resync: $(cat /tmp/resync)"
grep -q "^resync .*result=clean " /tmp/resync || vm_fail "resync: $(tail -n 1 /tmp/resync)"
vm_cmp_devs /dev/ram0 "$tgt"

vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
dmsetup --noudevsync remove rptgt || vm_fail "dmsetup remove"
vm_no_live_objects
