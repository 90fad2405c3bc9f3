#!/bin/sh
# UNMAP through a replipipe LUN (emulate_tpu=1, emulate_tpws=1; blkdiscard on
# its tcm_loop disk), primaries on memory-backed null_blk with discard (it reads zeroes
# after one):
# 1. synchronous, the LUN reporting unmapped blocks as zeroes
#    (unmap_zeroes_data=1, LBPRZ), the target a virtio disk whose discard
#    keeps the data (QEMU's default discard=ignore, like an SSD or an array
#    that does not zero): after the UNMAP the pair counts its regions in
#    sync, so the target must read zeroes there too, as a failover would.
#    The LUN is write-through and the target has a volatile cache: those
#    zeroes are flushed on the target before the UNMAP completes (the
#    initiator sends no SYNCHRONIZE CACHE to a write-through LUN).
#    An UNMAP of more than 64 MiB leaves its regions dirty instead.
# 2. synchronous, without LBPRZ, the target a null_blk that zeroes on
#    discard: the UNMAP reaches the target (it reads zeroes), the pair
#    stays InSync.
# 3. the same pipe made asynchronous: the UNMAP goes to the primary only
#    and its four 64 KiB regions are dirty.
# 4. an asynchronous pair with a write-intent record of 64 KiB chunks over
#    4 GiB (two bitmap pages): an UNMAP of 2 GiB across the pages leaves
#    exactly its 32768 regions dirty and marked on the record.
# 5. a target that advertised UNMAP and then refuses it (sd turns discard
#    off): the pair does not degrade, the UNMAP's regions are dirty.
# 6. WRITE SAME (util-linux's blkdiscard -z) on a synchronous pair: one of
#    1 MiB reaches the target; one of 72 MiB, past the 64 MiB the module
#    writes on a target within the command (an administrator raised
#    max_write_same_len), leaves its 1152 regions dirty for the resync.
# vm-timeout: 300
# vm-cost: 20
# vm-debug-cost: 50
# vm-disks: lbprz:96
# vm-bins: blkdiscard

LIVE=/sys/module/replipipe/parameters/live_objects
MIB=1048576

vm_modprobe null_blk nr_devices=0
# nullb NAME [MIB]: /dev/NAME, MIB (32) MiB, memory-backed, with discard.
nullb() {
	mkdir "$VM_NULLB/$1" || vm_fail "mkdir $VM_NULLB/$1"
	echo "${2:-32}" > "$VM_NULLB/$1/size"
	echo 1 > "$VM_NULLB/$1/memory_backed"
	echo 1 > "$VM_NULLB/$1/discard" || vm_fail "null_blk has no discard"
	echo 1 > "$VM_NULLB/$1/power" || vm_fail "cannot power on $1"
	vm_wait_path "/dev/$1"
}
# zeroes DEV OFFSET_KIB KIB: true if those KIB of DEV (64 KiB units) read as
# zeroes.
zeroes() {
	vm_read "$1" $(($2 / 64)) $(($3 / 64)) /tmp/zeroes.data 65536
	[ "$(md5sum < /tmp/zeroes.data)" = "$(dd if=/dev/zero bs=1k count="$3" 2> /dev/null | md5sum)" ]
}
# tpu_backstore NAME DEV LBPRZ: a replipipe backstore taking UNMAP.
tpu_backstore() {
	local dir
	dir=$(vm_backstore replipipe replipipe_0 "$1" "$2")
	echo 1 > "$dir/attrib/emulate_tpu" || vm_fail "$1: emulate_tpu refused"
	# sd sends WRITE SAME with UNMAP, not UNMAP, to a LUN with LBPRZ;
	# LIO runs both through the backend's execute_unmap.
	echo 1 > "$dir/attrib/emulate_tpws" || vm_fail "$1: emulate_tpws refused"
	echo "$3" > "$dir/attrib/unmap_zeroes_data" ||
		vm_fail "$1: unmap_zeroes_data=$3 refused"
}
# unmap LUN OFFSET_MIB BYTES: blkdiscard through the LUN.
unmap() {
	[ "$(cat "/sys/block/${1#/dev/}/queue/discard_max_bytes")" -gt 0 ] ||
		vm_fail "setup: $1 takes no discard (UNMAP)"
	blkdiscard -o $(($2 * MIB)) -l "$3" "$1" || vm_fail "UNMAP through $1 failed"
}
pair_line() { rp-nlctl get "$1" | grep "^pair "; }
# flushes DEV: flush requests DEV completed (field 16 of its stat)
flushes() {
	set -- $(cat "/sys/block/${1#/dev/}/stat")
	echo "${16:?no flush count in /sys/block/.../stat}"
}

vm_log "== 1. LBPRZ LUN, target that keeps data on discard"
nullb rpu1 96
tgt=$(vm_disk lbprz)
t=${tgt#/dev/}
[ "$(cat /sys/block/$t/queue/discard_max_bytes)" -gt 0 ] ||
	vm_fail "setup: $tgt has no discard"
[ "$(cat /sys/block/$t/queue/write_zeroes_max_bytes)" -gt 0 ] ||
	vm_fail "setup: $tgt has no write zeroes"
# The target really keeps data on discard: this is what the UNMAP meets.
dd if=/dev/urandom of=$tgt bs=$MIB count=1 oflag=direct 2> /dev/null ||
	vm_fail "setup: write $tgt"
blkdiscard $tgt || vm_fail "setup: discard on $tgt"
zeroes $tgt 0 1024 && vm_fail "setup: $tgt zeroes on discard (QEMU discard=ignore expected)"
dd if=/dev/zero of=$tgt bs=$MIB count=1 oflag=direct 2> /dev/null ||
	vm_fail "setup: zero $tgt"
tpu_backstore u1 /dev/rpu1 1
# Both legs start zeroed: the pair may start clean.
rp-nlctl set-pipe --id unmap-lbprz --mode sync --region-kib 64 \
	--pair replipipe_0/u1=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export replipipe_0/u1)
dd if=/dev/urandom of=$lun bs=$MIB count=2 oflag=direct 2> /dev/null ||
	vm_fail "write through $lun"
vm_cmp_devs /dev/rpu1 $tgt
[ "$(cat /sys/block/${lun#/dev/}/queue/write_cache)" = "write through" ] ||
	vm_fail "setup: $lun is not write-through"
[ "$(cat /sys/block/$t/queue/write_cache)" = "write back" ] ||
	vm_fail "setup: $tgt has no volatile write cache"
f0=$(flushes $tgt)
unmap $lun 0 $MIB
f1=$(flushes $tgt)
vm_log "flushes of $tgt during the UNMAP: $((f1 - f0))"
[ "$f1" -gt "$f0" ] ||
	vm_fail "the UNMAP wrote zeroes to the target of a write-through LUN and completed without flushing them"
zeroes /dev/rpu1 0 1024 || vm_fail "setup: the primary does not read zeroes after UNMAP"
pair=$(pair_line unmap-lbprz)
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" dirty)" = 0 ] ||
	vm_fail "pair not InSync and clean after the UNMAP: $pair"
zeroes $tgt 0 1024 ||
	vm_fail "the pair counts the unmapped regions in sync, but the target still holds the old data where the LUN reports zeroes"
vm_cmp_devs /dev/rpu1 $tgt
# More than the 64 MiB an UNMAP zeroes on the target in LIO's submission
# context: its regions go dirty instead, for the resync. sd sends WRITE
# SAME with UNMAP to an LBPRZ LUN, in pieces of at most its maximum WRITE
# SAME length (here 32 MiB); other initiators send UNMAP, up to the
# primary's maximum discard.
dd if=/dev/urandom of=$lun bs=$MIB count=1 seek=40 oflag=direct 2> /dev/null ||
	vm_fail "write through $lun"
for m in /sys/block/${lun#/dev/}/device/scsi_disk/*/provisioning_mode; do
	echo unmap > $m || vm_fail "setup: provisioning_mode unmap refused"
done
unmap $lun 8 $((80 * MIB))
pair=$(pair_line unmap-lbprz)
echo "$pair"
[ "$(vm_field "$pair" state)" = Syncing ] && [ "$(vm_field "$pair" dirty)" = 1280 ] ||
	vm_fail "an UNMAP of 80 MiB did not leave its 1280 regions dirty: $pair"
zeroes /dev/rpu1 40960 1024 || vm_fail "setup: the primary does not read zeroes after UNMAP"
zeroes $tgt 40960 1024 && vm_fail "the UNMAP of 80 MiB zeroed the target in the submission context"

vm_log "== 2. LUN without LBPRZ, target that zeroes on discard"
nullb rpu2
nullb rpt2
tpu_backstore u2 /dev/rpu2 0
rp-nlctl set-pipe --id unmap --mode sync --region-kib 64 \
	--pair replipipe_0/u2=/dev/rpt2,clean || vm_fail "set-pipe refused"
lun2=$(vm_tcm_loop_export replipipe_0/u2)
dd if=/dev/urandom of=$lun2 bs=$MIB count=2 oflag=direct 2> /dev/null ||
	vm_fail "write through $lun2"
unmap $lun2 0 $MIB
pair=$(pair_line unmap)
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" dirty)" = 0 ] ||
	vm_fail "pair not InSync and clean after the UNMAP: $pair"
zeroes /dev/rpt2 0 1024 || vm_fail "the UNMAP did not reach the target"
vm_cmp_devs /dev/rpu2 /dev/rpt2

vm_log "== 3. asynchronous: the UNMAP marks its regions dirty"
rp-nlctl set-pipe --id unmap --mode async --region-kib 64 \
	--pair replipipe_0/u2=/dev/rpt2 || vm_fail "set-pipe (async) refused"
unmap $lun2 1 262144
pair=$(vm_lag_drained unmap)
echo "$pair"
[ "$(vm_field "$pair" dirty)" = 4 ] ||
	vm_fail "an async UNMAP of 256 KiB left dirty=$(vm_field "$pair" dirty), not its 4 regions"
zeroes /dev/rpu2 1024 256 || vm_fail "setup: the primary does not read zeroes after UNMAP"
zeroes /dev/rpt2 1024 64 && vm_fail "the async UNMAP reached the target"

vm_log "== 4. an UNMAP across the write-intent record's bitmap pages marks every chunk"
# 64 KiB chunks of a 4 GiB primary: 65536 bits, two 4 KiB bitmap pages; the
# UNMAP covers 1 GiB to 3 GiB, across the boundary at 2 GiB.
mkdir "$VM_NULLB/rpu4" || vm_fail "mkdir $VM_NULLB/rpu4"
echo 4096 > "$VM_NULLB/rpu4/size"
echo 1 > "$VM_NULLB/rpu4/memory_backed"
echo 1 > "$VM_NULLB/rpu4/discard"
echo 1 > "$VM_NULLB/rpu4/power" || vm_fail "cannot power on rpu4"
vm_wait_path /dev/rpu4
nullb rpi4
mkdir "$VM_NULLB/rpt4big" && echo 4096 > "$VM_NULLB/rpt4big/size" &&
	echo 1 > "$VM_NULLB/rpt4big/power" || vm_fail "cannot make rpt4big"
vm_wait_path /dev/rpt4big
dir=$(vm_backstore replipipe replipipe_0 u4 /dev/rpu4 /dev/rpi4,intent_chunk_kib=64)
echo 1 > "$dir/attrib/emulate_tpu" && echo 1 > "$dir/attrib/emulate_tpws" ||
	vm_fail "u4: thin provisioning refused"
rp-nlctl set-pipe --id unmap-intent --mode async --region-kib 64 \
	--pair replipipe_0/u4=/dev/rpt4big,clean || vm_fail "set-pipe refused"
lun4=$(vm_tcm_loop_export replipipe_0/u4)
unmap $lun4 1024 $((2048 * MIB))
pair=$(vm_lag_drained unmap-intent)
echo "$pair"
[ "$(vm_field "$pair" dirty)" = 32768 ] ||
	vm_fail "an async UNMAP of 2 GiB left dirty=$(vm_field "$pair" dirty), not its 32768 regions"
[ "$(vm_field "$pair" intent_marked)" = 32768 ] ||
	vm_fail "the record marks $(vm_field "$pair" intent_marked) regions, not the UNMAP's 32768"

vm_log "== 5. a target that advertised UNMAP, then refuses it"
# The target: an iblock LUN that sd scans while it advertises UNMAP, which
# then takes it back (emulate_tpu=0: LIO answers UNMAP with ILLEGAL
# REQUEST, and sd turns discard off and fails the discard). That is a
# target without discard, not a failed one: the pair does not degrade,
# the UNMAP's regions are dirty.
nullb rpu5
nullb rpt5
tdir=$(vm_backstore iblock iblock_0 t5 /dev/rpt5)
echo 1 > "$tdir/attrib/emulate_tpu" || vm_fail "setup: t5: emulate_tpu refused"
tgt5=$(vm_tcm_loop_export iblock_0/t5)
[ "$(cat "/sys/block/${tgt5#/dev/}/queue/discard_max_bytes")" -gt 0 ] ||
	vm_fail "setup: $tgt5 does not advertise discard"
echo 0 > "$tdir/attrib/emulate_tpu" || vm_fail "setup: t5: emulate_tpu=0 refused"
tpu_backstore u5 /dev/rpu5 0
rp-nlctl set-pipe --id unmap-refused --mode sync --policy degrade --region-kib 64 \
	--pair replipipe_0/u5=$tgt5,clean || vm_fail "set-pipe refused"
lun5=$(vm_tcm_loop_export replipipe_0/u5)
unmap $lun5 0 $MIB
[ "$(cat "/sys/block/${tgt5#/dev/}/queue/discard_max_bytes")" = 0 ] ||
	vm_fail "setup: sd did not turn discard off on $tgt5 (the target leg's UNMAP was not refused)"
pair=$(pair_line unmap-refused)
echo "$pair"
[ "$(vm_field "$pair" state)" != Degraded ] && [ -n "$(vm_field "$pair" state)" ] ||
	vm_fail "a target refusing an UNMAP it had advertised degraded the pair: $pair"
[ "$(vm_field "$pair" dirty)" = 16 ] ||
	vm_fail "the refused UNMAP of 1 MiB left dirty=$(vm_field "$pair" dirty), not its 16 regions"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "the refused UNMAP counted as a target error: $pair"

vm_log "== 6. WRITE SAME: at most 64 MiB on the target within the command"
nullb rpu6 96
nullb rpt6 96
dir6=$(vm_backstore replipipe replipipe_0 u6 /dev/rpu6)
echo 196608 > "$dir6/attrib/max_write_same_len" ||
	vm_fail "setup: max_write_same_len=196608 (96 MiB) refused"
rp-nlctl set-pipe --id wsame --mode sync --region-kib 64 \
	--pair replipipe_0/u6=/dev/rpt6,clean || vm_fail "set-pipe refused"
lun6=$(vm_tcm_loop_export replipipe_0/u6)
# sd took 65535 blocks from the LUN; it may send up to what it advertises
for m in /sys/block/${lun6#/dev/}/device/scsi_disk/*/max_write_same_blocks; do
	echo 196608 > $m || vm_fail "setup: max_write_same_blocks=196608 refused"
done
[ "$(cat "/sys/block/${lun6#/dev/}/queue/write_zeroes_max_bytes")" -ge $((72 * MIB)) ] ||
	vm_fail "setup: $lun6 zeroes $(cat "/sys/block/${lun6#/dev/}/queue/write_zeroes_max_bytes") bytes per WRITE SAME, less than 72 MiB"
for m in 71 80; do
	dd if=/dev/urandom of=$lun6 bs=$MIB count=1 seek=$m oflag=direct 2> /dev/null ||
		vm_fail "write through $lun6"
done
vm_cmp_devs /dev/rpu6 /dev/rpt6
/usr/sbin/blkdiscard -z -o $((80 * MIB)) -l $MIB $lun6 ||
	vm_fail "WRITE SAME of 1 MiB through $lun6 failed"
zeroes /dev/rpt6 $((80 * 1024)) 1024 || vm_fail "the WRITE SAME of 1 MiB did not reach the target"
[ "$(vm_field "$(pair_line wsame)" dirty)" = 0 ] ||
	vm_fail "the mirrored WRITE SAME of 1 MiB left regions dirty: $(pair_line wsame)"
/usr/sbin/blkdiscard -z -o 0 -l $((72 * MIB)) $lun6 ||
	vm_fail "WRITE SAME of 72 MiB through $lun6 failed"
pair=$(pair_line wsame)
echo "$pair"
[ "$(vm_field "$pair" state)" = Syncing ] && [ "$(vm_field "$pair" dirty)" = 1152 ] ||
	vm_fail "a WRITE SAME of 72 MiB did not leave its 1152 regions dirty: $pair"
zeroes /dev/rpu6 $((71 * 1024)) 1024 || vm_fail "the primary does not read zeroes after WRITE SAME"
zeroes /dev/rpt6 $((71 * 1024)) 1024 &&
	vm_fail "the WRITE SAME of 72 MiB wrote the target within the command"
rp-nlctl resync wsame replipipe_0/u6 > /tmp/resync 2>&1 || vm_fail "resync: $(cat /tmp/resync)"
grep -q "^resync .*result=clean " /tmp/resync || vm_fail "resync: $(tail -n 1 /tmp/resync)"
vm_cmp_devs /dev/rpu6 /dev/rpt6

vm_log "== teardown"
vm_tcm_loop_unexport replipipe_0/u6
rp-nlctl del-pipe wsame || vm_fail "del-pipe wsame"
vm_backstore_delete replipipe_0/u6
vm_tcm_loop_unexport replipipe_0/u5
rp-nlctl del-pipe unmap-refused || vm_fail "del-pipe unmap-refused"
vm_backstore_delete replipipe_0/u5
vm_tcm_loop_unexport iblock_0/t5
vm_backstore_delete iblock_0/t5
vm_tcm_loop_unexport replipipe_0/u1
vm_tcm_loop_unexport replipipe_0/u2
vm_tcm_loop_unexport replipipe_0/u4
rp-nlctl del-pipe unmap-lbprz || vm_fail "del-pipe unmap-lbprz"
rp-nlctl del-pipe unmap || vm_fail "del-pipe unmap"
rp-nlctl del-pipe unmap-intent || vm_fail "del-pipe unmap-intent"
vm_backstore_delete replipipe_0/u1
vm_backstore_delete replipipe_0/u2
vm_backstore_delete replipipe_0/u4
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-unmap done"
