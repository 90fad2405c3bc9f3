#!/bin/sh
# Synchronous mirroring through LIO: a replipipe backstore on /dev/ram0 paired
# with /dev/ram1 (rp-nlctl, no daemon), exported through tcm_loop; 64 MiB of
# random O_DIRECT writes of 4 KiB..1 MiB from 4 parallel writers (rp-writer).
# Every acknowledged write must be on the LUN, on /dev/ram0 and on /dev/ram1,
# the legs byte-identical, the pair InSync with its counters matching the
# writes. Then writes and reads whose buffer is aligned to 64 bytes only
# (what sd demands for O_DIRECT; tcm_loop hands the buffer on as it is):
# the same on both legs and through the LUN, and no warning from brd about
# segments of no whole sector; a READ into a buffer longer than its block,
# and a READ of no blocks with a buffer of 4 KiB. A WRITE SAME with a pattern
# (sg_write_same): both legs hold its block repeated. Then teardown down to
# rmmod with live_objects back to zero.
# vm-timeout: 600
# vm-cost: 10
# vm-debug-cost: 40
# vm-mem: 1024
# vm-bins: sg_write_same

PIPE=kmod-sync
SRC=replipipe_0/vol1
LIVE=/sys/module/replipipe/parameters/live_objects

vm_brd 2 128
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
vm_log "live_objects after load: $(cat $LIVE)"

# Both ramdisks start zeroed, so the pair may start clean (InSync).
rp-nlctl set-pipe --id $PIPE --name sync-mirror --mode sync --policy degrade \
	--region-kib 64 --pair $SRC=/dev/ram1,clean || vm_fail "set-pipe refused"
rp-nlctl get $PIPE
vm_log "backstore info: $(cat /sys/kernel/config/target/core/$SRC/info)"
grep -q "$PIPE" /sys/kernel/config/target/core/$SRC/info ||
	vm_fail "backstore info does not name the pipe"
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun"

vm_log "== 64 MiB of random writes, 4 writers, 4 KiB..1 MiB"
out=$(rp-writer --dev "$lun" --log /tmp/w --threads 4 --bytes 64M \
	--min-size 4K --max-size 1M --seed 11) || vm_fail "rp-writer: $out"
echo "$out"
summary=$(echo "$out" | grep '^writer: acked') || vm_fail "no writer summary: $out"
acked=$(vm_field "$summary" acked)
bytes=$(vm_field "$summary" bytes)
# compared with the pair's counters below: empty would match an empty field
[ -n "$acked" ] && [ -n "$bytes" ] || vm_fail "no acked or bytes in the writer summary: $summary"

vm_log "== verify: the LUN, the primary, the replica"
rp-verify --dev "$lun" /tmp/w.* || vm_fail "data through the LUN"
rp-verify --dev /dev/ram0 /tmp/w.* || vm_fail "data on the primary /dev/ram0"
rp-verify --dev /dev/ram1 /tmp/w.* || vm_fail "data on the replica /dev/ram1"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "the legs differ"

vm_log "== pair status"
rp-nlctl get
pair=$(rp-nlctl get $PIPE | grep "^pair ") || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" source)" = $SRC ] || vm_fail "pair source: $pair"
[ "$(vm_field "$pair" target)" = /dev/ram1 ] || vm_fail "pair target: $pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "pair not InSync: $pair"
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "dirty regions after a clean sync run: $pair"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"
[ "$(vm_field "$pair" lag)" = 0 ] || vm_fail "lag in sync mode: $pair"
[ "$(vm_field "$pair" bytes)" = "$bytes" ] ||
	vm_fail "bytes mirrored $(vm_field "$pair" bytes) != bytes acknowledged $bytes"
[ "$(vm_field "$pair" writes)" -ge "$acked" ] ||
	vm_fail "writes mirrored $(vm_field "$pair" writes) < writes acknowledged $acked"
[ "$(vm_field "$pair" source_bytes)" = "$(blockdev --getsize64 /dev/ram0)" ] ||
	vm_fail "source_bytes is not the size of /dev/ram0: $pair"
[ "$(vm_field "$pair" regions)" = $(($(blockdev --getsize64 /dev/ram0) / 65536)) ] ||
	vm_fail "regions is not size / 64 KiB: $pair"

vm_log "== a buffer aligned to 64 bytes only: the module bounces it"
out=$(rp-writer --dev "$lun" --log /tmp/m --threads 2 --bytes 16M --min-size 4K \
	--max-size 1M --offset 64M --span 64M --misalign 64 --seed 12) ||
	vm_fail "rp-writer --misalign 64: $out"
echo "$out"
rp-verify --dev "$lun" --misalign 64 /tmp/m.* || vm_fail "misaligned reads through the LUN"
rp-verify --dev /dev/ram0 /tmp/m.* || vm_fail "misaligned writes on the primary /dev/ram0"
rp-verify --dev /dev/ram1 /tmp/m.* || vm_fail "misaligned writes on the replica /dev/ram1"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "the legs differ after misaligned writes"
pair=$(rp-nlctl get $PIPE | grep "^pair ") || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" dirty)" = 0 ] ||
	vm_fail "pair not InSync and clean after misaligned writes: $pair"
# A READ of the last block whose initiator's buffer is 1000 bytes: LIO moves
# the block's 512 (tcm_loop hands over the whole buffer), and the primary
# is read that block only, not past the end of the device.
last=$(($(blockdev --getsz "$lun") - 1))
rp-sg-read "$lun" $last 1000 || vm_fail "a READ of the last block into a buffer of 1000 bytes"
# A READ of no blocks that comes with a buffer (LIO keeps the pages, the
# data length is 0): nothing is read into it.
rp-sg-read "$lun" 0 4096 0 || vm_fail "a READ of no blocks with a buffer of 4096 bytes"

vm_log "== WRITE SAME with a pattern: both legs repeat its block"
# sd sends WRITE SAME with a block of zeroes only (blkdev_issue_zeroout());
# any other initiator may send any block. 1 MiB from LBA 65553: across
# regions, at no region's boundary. /tmp/want: the block 2048 times.
head -c 512 /dev/urandom > /tmp/pat
vm_repeated /tmp/pat 11 /tmp/want
sg_write_same --in=/tmp/pat --lba=65553 --num=2048 "$lun" ||
	vm_fail "a WRITE SAME of 2048 blocks with a pattern through $lun failed"
for dev in "$lun" /dev/ram0 /dev/ram1; do
	rp-verify --dump $dev --offset $((65553 * 512)) --length 1048576 > /tmp/got ||
		vm_fail "cannot read $dev"
	cmp -s /tmp/got /tmp/want ||
		vm_fail "$dev does not hold the WRITE SAME's block 2048 times from LBA 65553"
done
pair=$(rp-nlctl get $PIPE | grep "^pair ") || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" dirty)" = 0 ] &&
	[ "$(vm_field "$pair" errors)" = 0 ] ||
	vm_fail "pair not InSync and clean after a WRITE SAME with a pattern: $pair"

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed after del-pipe"
[ -z "$(echo "$k" | grep "^pipe ")" ] || vm_fail "pipe still listed after del-pipe"
vm_backstore_delete $SRC
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-sync-mirror done"
