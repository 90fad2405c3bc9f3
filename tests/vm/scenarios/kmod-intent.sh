#!/bin/sh
# The write-intent record over netlink alone (no daemon). Source /dev/ram0,
# target /dev/ram1, record on dm "rprec" (linear over /dev/ram2, switched to
# `error` in step 7). 64 MiB at 64 KiB regions: 1024 regions.
#  1. A fresh record tracks nothing; a new pair binds it: intent=new, every
#     region dirty and marked.
#  2. After the resync the lazy clear empties the record (0 marked).
#  3. 8 single-block writes to regions 100..107: right after each is
#     acknowledged the record device has its region's bit set and none of a
#     later region (bytes 12-13 of the bitmap); two clear passes later they
#     are cleared again (the pair is InSync).
#  4. Paused pair, writes to regions 200..203, pipe deleted, backstore
#     removed, module reloaded, backstore made again on the same record: it
#     holds exactly those 4 regions; the same pipe id and target take them
#     (intent=loaded, 4 dirty); the resync makes the legs identical.
#  5. Deleting an in-sync pipe leaves only what is dirty; writes while the
#     backstore is in no pipe (regions 300, 301) are tracked: the same pipe
#     again loads exactly those 2.
#  6. Another pipe id binds the record anew: everything dirty.
#  7. The record device fails: a write to an unmarked region fails and
#     reaches neither leg; a write to a marked region still works; repaired,
#     writes work again.
#  Steps 1-7 use chunks of one region (intent_chunk_kib=64), so marks count
#  exactly the regions written.
#  8. intent_chunk_kib=1024 (16 regions a bit): another chunk size binds the
#     record anew; 8 writes to regions 100..107 mark one chunk (16 regions,
#     bit 6 on the device); a paused write to region 200 leaves chunk 12
#     after delete-pipe, the same pipe loads regions 192..207 and the resync
#     copies 1 MiB. Chunk sizes that are not a power of two, below 4 KiB or
#     above 1 GiB are refused, and so is any control once enabled.
#  9. Two sources with records (2 MiB legs): P = {vol1->t1, vol2->t2}. vol1
#     taking t2 invalidates vol2's open record on disk (a) and, when vol2's
#     backstore was deleted meanwhile, when it is made again (b); going back
#     to {vol1->t1, vol2->t2} then resyncs all of t2. With nothing taken in
#     between, deleting and making vol2 again still loads its record (c),
#     but not when it is made again on another primary of the same size
#     (d, and back on its own primary), nor after it was made on an alias
#     of its primary and written (e): a header refused on open is
#     invalidated on the device, it no longer vouches for writes it did not
#     see. A record on a loop device, closed, t2 taken, another file set up
#     on that loop device as a record and closed, the first file back: it
#     does not load (f; the log of closes is by disk, not device number).
#     The same with the two records on two partitions of one disk (g; by
#     disk and partition).
# 10. A PIPE_SET that fails leaves the sources' own records as they were
#     (header and bitmap byte for byte), and the record of another source
#     whose target one of its new pairs would take: one refused for a
#     later pair's too small target after vol1's new pair would take t2;
#     one refused for a later pair's too small target after vol1's new
#     pair asked to assume t3 clean (a), after which P {vol1 -> t3}
#     without clean must resync all of t3, not load the binding the failed
#     call prepared (b); one whose second record cannot be written (vol2's,
#     whose writes go to dm error: vm_dm_writes_fail), so vol1's record,
#     written first, is written back (c);
#     vol2's own could not be written back either: its writes fail until
#     its header can be invalidated (d). Left so and closed (its last
#     invalidation failing too), then vol1 takes t2, the target the header
#     on its device still names: it does not load that header at its next
#     open (e). Open with its header not known, a taking of the target
#     of the binding it had (t2) invalidates it, or is refused while it
#     cannot be written, also after a second failed write-back; other
#     targets can be taken, the failed calls' own too (f).
# 11. vol2's record bound to (P, /tmp/t2link -> t2). Closed while vol1
#     takes t2, it opens with the link gone: a path that does not resolve
#     after a taking is invalidated (a); closed while vol1 takes
#     /tmp/t2link, it opens with the link naming a new device (t2 made
#     again, another minor) over the same blocks: invalidated by the path
#     (b); open while its link is moved to t3 and vol1 takes t3:
#     invalidated by what its path names now (c).
# 12. A pair of 2^28 regions and a record of 2^28 chunks (1 TiB of dm error
#     at 4 KiB): a new binding, clear passes over it, a load. Nothing may
#     walk the regions one by one with interrupts off (the old module spent
#     minutes there: soft lockup, RCU stall). A PIPE_GET of it, which any
#     user may send, costs what one of vol1's 32-chunk record does: the
#     marked count is kept, not counted over the 32 MiB bitmap with
#     interrupts off (the old module: about 10 ms each under TCG on 6.12).
#     b. The same record over 1 TiB of null_blk, bound clean: a dirty run
#     of 8192 regions (paused writes) and four mirrored writes to chunks
#     around it, right after it and far away; clear passes, which go in
#     steps of at most 4096 bits, clear exactly those four.
#     c. The same record on a device that takes 8 ms a request (dm delay),
#     its bitmap pages read and written in runs of up to 256 a request:
#     at open (12b's 8192 pages, loaded: 8192 marked), for a new binding
#     that assumes its target clean over a source of 8100.5 pages, for
#     the write-back of its empty bits (the write after it waits for
#     that), and at the next open; each within 10 s and the record
#     device's request count of those runs. (A page per request, the
#     module before: 8192 round trips, over 60 s.) Four writes on pages
#     0, 255, 256 and the last, then the load counts 4 marked, bit 9 of
#     page 256 is on the device, and writing the four again marks none:
#     every run landed where it belongs.
# 13. A PIPE_SET {vol1->t4 clean, vol2->t1} fails on vol2's record (dm
#     delay, then error) after vol1's was written, and vol1's cannot be
#     written back (switched to error meanwhile): the binding on its
#     device has every chunk marked, so after a module reload the same
#     pair loads 32 dirty regions and resyncs, not trusting t4. A clean
#     binding whose PIPE_SET succeeds gets its empty bits on the device.
# vm-timeout: 600
# vm-cost: 95
# vm-debug-cost: 225
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-intent
SRC=replipipe_0/vol1
INFO=/sys/kernel/config/target/core/replipipe_0/vol1/info
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

# pair_line PIPE [SOURCE]: the pair line of SOURCE (default $SRC)
pair_line() { rp-nlctl get "$1" | grep "^pair .* source=${2:-$SRC} "; }
# expect_of PIPE SOURCE KEY=VALUE...: every field of that pair has that value
expect_of() {
	local id=$1 src=$2 line kv
	shift 2
	line=$(pair_line "$id" "$src") || vm_fail "no pair of $src in pipe $id"
	for kv in "$@"; do
		[ "$(vm_field "$line" "${kv%%=*}")" = "${kv#*=}" ] ||
			vm_fail "expected $kv: $line"
	done
	vm_log "ok: $line"
}
# expect_pair PIPE KEY=VALUE...: the same for the pair of $SRC
expect_pair() {
	local id=$1
	shift
	expect_of "$id" "$SRC" "$@"
}
# wait_marked PIPE N SECONDS [SOURCE]: the record of SOURCE (default $SRC)
# marks N regions within SECONDS
wait_marked() {
	local i=0
	until [ "$(vm_field "$(pair_line "$1" "${4:-}")" intent_marked)" = "$2" ]; do
		[ $i -lt $(($3 * 10)) ] || vm_fail "record did not reach $2 marked: $(pair_line "$1" "${4:-}")"
		sleep 0.1
		i=$((i + 1))
	done
}
# write_regions FIRST LAST: one 4 KiB O_DIRECT write at the start of each
write_regions() {
	local r=$1
	while [ "$r" -le "$2" ]; do
		dd if=/dev/urandom of="$lun" bs=4096 count=1 seek=$((r * 16)) \
			oflag=direct 2> /dev/null || vm_fail "write to region $r failed"
		r=$((r + 1))
	done
}
# record_bytes OFFSET COUNT: hex bytes of the record's bitmap
record_bytes() {
	vm_read "$rec" 1 1 /tmp/record-page
	dd if=/tmp/record-page bs=1 skip="$1" count="$2" 2> /dev/null | od -An -v -tx1 | tr -d ' \n'
}
# wait_record OFFSET COUNT HEX SECONDS: the record device holds HEX there
# (the clear pass writes its pages after it changed the bits in memory)
wait_record() {
	local i=0
	until [ "$(record_bytes "$1" "$2")" = "$3" ]; do
		[ $i -lt $(($4 * 10)) ] || vm_fail "record bytes $1+$2 on disk: $(record_bytes "$1" "$2"), not $3"
		sleep 0.1
		i=$((i + 1))
	done
}
# resync PIPE [SOURCE SOURCE-DEV TARGET-DEV]: default $SRC, /dev/ram0, /dev/ram1
resync() {
	rp-nlctl resync "$1" "${2:-$SRC}" --source-dev "${3:-/dev/ram0}" \
		--target-dev "${4:-/dev/ram1}" > /tmp/resync ||
		vm_fail "resync $1 ${2:-$SRC}: $(cat /tmp/resync)"
	tail -n 1 /tmp/resync
}
export_lun() { lun=$(vm_tcm_loop_export $SRC); vm_log "LUN $lun"; }
# paused_then_gone FIRST LAST DIRTY MARKED INFO: pause the pair, write
# regions FIRST..LAST (DIRTY dirty, MARKED marked after), delete the pipe
# (the record must match INFO in the backstore's info), unexport and delete
# the backstore
paused_then_gone() {
	rp-nlctl pair-state $PIPE $SRC pause || vm_fail "pause"
	write_regions "$1" "$2"
	expect_pair $PIPE state=Paused dirty="$3" intent_marked="$4"
	rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
	grep -q "$5" $INFO || vm_fail "after del-pipe: $(cat $INFO)"
	vm_tcm_loop_unexport $SRC
	vm_backstore_delete $SRC
}

vm_brd 3 64
vm_modprobe dm_mod
rec=$(vm_dm_create rprec "0 $(blockdev --getsz /dev/ram2) linear /dev/ram2 0")

vm_log "== 1. fresh record, new binding"
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 "$rec,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec (tracks nothing" $INFO || vm_fail "info: $(cat $INFO)"
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=/dev/ram1 || vm_fail "set-pipe"
expect_pair $PIPE intent=new dirty=1024 intent_marked=1024 state=Syncing
[ "$(record_bytes 0 4)" = ffffffff ] || vm_fail "record bitmap not all set: $(record_bytes 0 4)"

vm_log "== 2. resync, then the lazy clear"
resync $PIPE
expect_pair $PIPE state=InSync dirty=0
wait_marked $PIPE 0 30
wait_record 0 128 "$(printf '%0256d' 0)" 5

vm_log "== 3. 8 writes: marked before they are acknowledged"
export_lun
# Right after each write is acknowledged its region's bit is on the record
# device, and no bit of a region not written yet; those written earlier
# may be gone already: a clear pass clears a quiet chunk of an InSync pair
# at its second look, 5 to 10 s after its write, and under load the eight
# writes take longer than that.
r=100
while [ $r -le 107 ]; do
	write_regions $r $r
	hex=$(record_bytes 12 2)
	bits=$(( 0x${hex%??} | 0x${hex#??} << 8 ))
	[ $(( bits >> (r - 96) )) = 1 ] && [ $(( bits & 15 )) = 0 ] ||
		vm_fail "after the write to region $r, record bytes 12-13 on disk: $hex"
	r=$((r + 1))
done
expect_pair $PIPE dirty=0 state=InSync
# No more than the eight written; a clear pass may have cleared any of
# them by now (on the debug kernel, all of them between two PIPE_GETs).
marked=$(vm_field "$(rp-nlctl get $PIPE | grep '^pair ')" intent_marked)
[ "$marked" -le 8 ] || vm_fail "the record marks $marked regions, more than the 8 written"
wait_marked $PIPE 0 30
wait_record 12 2 0000 5

vm_log "== 4. paused writes survive a module reload"
paused_then_gone 200 203 4 4 "bound, 4 regions marked"
rmmod replipipe || vm_fail "rmmod: $(cat $LIVE 2> /dev/null)"
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 "$rec,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec (bound, 4 regions marked, 64 KiB chunks" $INFO || vm_fail "after reload: $(cat $INFO)"
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=/dev/ram1 || vm_fail "set-pipe again"
expect_pair $PIPE intent=loaded intent_regions=4 dirty=4 state=Syncing
rp-nlctl bitmap $PIPE $SRC | grep -qx "dirty 200-203" || vm_fail "bitmap: $(rp-nlctl bitmap $PIPE $SRC)"
resync $PIPE | grep -q "bytes=262144 " || vm_fail "resync did not copy 4 regions: $(tail -n 1 /tmp/resync)"
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "legs differ after the partial resync"

vm_log "== 5. writes with no pair are tracked"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
export_lun
write_regions 300 301
grep -q "bound, [0-9]* regions marked" $INFO || vm_fail "info: $(cat $INFO)"
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=/dev/ram1 || vm_fail "set-pipe"
# 200..203 were cleared when the pipe was deleted in sync (exact clear).
expect_pair $PIPE intent=loaded intent_regions=2 dirty=2
rp-nlctl bitmap $PIPE $SRC | grep -qx "dirty 300-301" || vm_fail "regions 300-301 not dirty: $(rp-nlctl bitmap $PIPE $SRC)"
resync $PIPE
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "legs differ after writes without a pair"

vm_log "== 6. another pipe binds anew"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
rp-nlctl set-pipe --id other --region-kib 64 --pair $SRC=/dev/ram1 || vm_fail "set-pipe other"
expect_pair other intent=new dirty=1024 intent_marked=1024
resync other
wait_marked other 0 30

vm_log "== 7. the record device fails"
# Read with O_DIRECT: the module writes the legs behind their page cache.
vm_read /dev/ram0 $((500 * 16)) 1 /tmp/before
vm_dm_load rprec "0 $(blockdev --getsz /dev/ram2) error"
if dd if=/dev/urandom of="$lun" bs=4096 count=1 seek=$((500 * 16)) oflag=direct 2> /dev/null; then
	vm_fail "a write was acknowledged without its intent mark"
fi
vm_read /dev/ram0 $((500 * 16)) 1 /tmp/after
cmp -s /tmp/before /tmp/after || vm_fail "the refused write reached the primary"
vm_read /dev/ram1 $((500 * 16)) 1 /tmp/after
cmp -s /tmp/before /tmp/after || vm_fail "the refused write reached the target"
vm_dm_load rprec "0 $(blockdev --getsz /dev/ram2) linear /dev/ram2 0"
write_regions 500 500
sync
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "legs differ after the record was repaired"

vm_log "== 8. chunks of 1 MiB"
for bad in 3 2 2097152 1000; do
	mkdir -p $VM_CFS/core/replipipe_0/bad
	if echo "udev_path=/dev/ram2,intent_chunk_kib=$bad" > $VM_CFS/core/replipipe_0/bad/control 2> /dev/null; then
		vm_fail "intent_chunk_kib=$bad accepted"
	fi
	rmdir $VM_CFS/core/replipipe_0/bad || vm_fail "rmdir bad"
done
rp-nlctl del-pipe other || vm_fail "del-pipe other"
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 "$rec,intent_chunk_kib=1024" > /dev/null
grep -q "intent_chunk_kib: 1024" $INFO || vm_fail "info: $(cat $INFO)"
if echo "intent_chunk_kib=64" > ${INFO%/info}/control 2> /dev/null; then
	vm_fail "control accepted once the backstore is enabled"
fi
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=/dev/ram1 || vm_fail "set-pipe"
expect_pair $PIPE intent=new dirty=1024 intent_marked=1024
grep -q "bound, 1024 regions marked, 1024 KiB chunks" $INFO || vm_fail "info: $(cat $INFO)"
# 64 chunks: 8 bytes of bits, nothing after them
[ "$(record_bytes 0 9)" = ffffffffffffffff00 ] || vm_fail "record bitmap: $(record_bytes 0 9)"
resync $PIPE
wait_marked $PIPE 0 30
export_lun
# Checked right after the first write: a clear pass clears the quiet chunk
# 5 to 10 s after its last write (step 3), and on the debug kernel the
# eight writes and a PIPE_GET took longer than that.
write_regions 100 100
expect_pair $PIPE intent_marked=16
[ "$(record_bytes 0 2)" = 4000 ] || vm_fail "record bytes 0-1 on disk: $(record_bytes 0 2) (want chunk 6 only)"
write_regions 101 107
expect_pair $PIPE dirty=0 state=InSync
wait_marked $PIPE 0 30
paused_then_gone 200 200 1 16 "bound, 16 regions marked, 1024 KiB chunks"
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 "$rec,intent_chunk_kib=1024" > /dev/null
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=/dev/ram1 || vm_fail "set-pipe again"
expect_pair $PIPE intent=loaded intent_regions=16 dirty=16 state=Syncing
rp-nlctl bitmap $PIPE $SRC | grep -qx "dirty 192-207" || vm_fail "bitmap: $(rp-nlctl bitmap $PIPE $SRC)"
resync $PIPE | grep -q "bytes=1048576 " || vm_fail "resync did not copy one chunk: $(tail -n 1 /tmp/resync)"
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "legs differ after the chunk resync"

vm_log "== 9. a record whose target another pair took"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
# 2 MiB legs (32 regions) carved from ram1, records from ram2
SRC2=replipipe_0/vol2
INFO2=${INFO%/vol1/info}/vol2/info
vm_dm_load rprec "0 16384 linear /dev/ram2 0"
rec2=$(vm_dm_create rprec2 "0 16384 linear /dev/ram2 16384")
s1=$(vm_dm_create s1 "0 4096 linear /dev/ram1 0")
t1=$(vm_dm_create t1 "0 4096 linear /dev/ram1 4096")
s2=$(vm_dm_create s2 "0 4096 linear /dev/ram1 8192")
t2=$(vm_dm_create t2 "0 4096 linear /dev/ram1 12288")
for d in $s1 $s2; do
	dd if=/dev/urandom of=$d bs=1M count=2 oflag=direct 2> /dev/null || vm_fail "fill $d"
done
vm_backstore replipipe replipipe_0 vol1 $s1 "$rec,intent_chunk_kib=64" > /dev/null
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
# both_pairs: P = {vol1 -> t1, vol2 -> t2}, resynced, legs identical
both_pairs() {
	rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t1 --pair $SRC2=$t2 ||
		vm_fail "set-pipe {vol1->t1, vol2->t2}"
	expect_of $PIPE $SRC2 "$@"
	resync $PIPE $SRC $s1 $t1 > /dev/null
	resync $PIPE $SRC2 $s2 $t2 > /dev/null
	vm_cmp_devs $s1 $t1 || vm_fail "vol1's legs differ"
	vm_cmp_devs $s2 $t2 || vm_fail "vol2's legs differ"
}
# header_valid DEV: the record's header has its magic on the device
header_valid() {
	vm_read "$1" 0 1 /tmp/header
	[ "$(head -c 8 /tmp/header)" = RPINTENT ]
}
# header_names DEV TARGET: that header names TARGET (a field of its own
# between NUL bytes, which busybox grep does not match across)
header_names() {
	header_valid "$1" && tr '\000' '\n' < /tmp/header | grep -qxF "$2"
}
both_pairs intent=new dirty=32
header_valid $rec2 || vm_fail "vol2's record has no header after its binding"

vm_log "== 9a. vol1 takes vol2's target while vol2's record is open"
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t2 || vm_fail "set-pipe {vol1->t2}"
grep -q "intent: $rec2 (tracks nothing" $INFO2 || vm_fail "vol2's record still vouches for t2: $(cat $INFO2)"
header_valid $rec2 && vm_fail "vol2's record header still valid on the device"
resync $PIPE $SRC $s1 $t2 > /dev/null
# Loaded, vol2's record (no marks) would leave vol1's data on t2.
both_pairs intent=new dirty=32

vm_log "== 9b. vol1 takes vol2's target while vol2's record is closed"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
grep -q "intent: $rec2 (bound, 0 regions marked" $INFO2 || vm_fail "vol2's record after del-pipe: $(cat $INFO2)"
vm_backstore_delete $SRC2
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t2 || vm_fail "set-pipe {vol1->t2}"
resync $PIPE $SRC $s1 $t2 > /dev/null
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
header_valid $rec2 || vm_fail "vol2's closed record lost its header before it opened"
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec2 (tracks nothing" $INFO2 || vm_fail "vol2's record loaded although t2 was taken: $(cat $INFO2)"
header_valid $rec2 && vm_fail "vol2's record header still valid on the device"
both_pairs intent=new dirty=32

vm_log "== 9c. closed and opened again, nobody took t2: it loads"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC2
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec2 (bound, 0 regions marked" $INFO2 || vm_fail "vol2's record: $(cat $INFO2)"
both_pairs intent=loaded dirty=0 state=InSync

vm_log "== 9d. vol2 made again on another primary of the same size: no load"
s2b=$(vm_dm_create s2b "0 4096 linear /dev/ram1 28672")
dd if=/dev/urandom of=$s2b bs=1M count=2 oflag=direct 2> /dev/null || vm_fail "fill $s2b"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC2
vm_backstore replipipe replipipe_0 vol2 $s2b "$rec2,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec2 (tracks nothing" $INFO2 || vm_fail "vol2's record of $s2 loaded for $s2b: $(cat $INFO2)"
header_valid $rec2 && vm_fail "vol2's record, refused for $s2b, kept its valid header for $s2"
# Loaded, its bits (none marked) would call t2, a copy of s2, in sync with s2b.
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t1 --pair $SRC2=$t2 ||
	vm_fail "set-pipe {vol1->t1, vol2(s2b)->t2}"
expect_of $PIPE $SRC2 intent=new dirty=32
resync $PIPE $SRC2 $s2b $t2 > /dev/null
vm_cmp_devs $s2b $t2 || vm_fail "vol2's legs differ on $s2b"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC2
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec2 (tracks nothing" $INFO2 || vm_fail "vol2's record of $s2b loaded for $s2: $(cat $INFO2)"
both_pairs intent=new dirty=32

vm_log "== 9e. vol2 made on an alias of its primary, written, made again: no load"
wait_marked $PIPE 0 30 $SRC2
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC2
ln -s $s2 /tmp/s2alias
vm_backstore replipipe replipipe_0 vol2 /tmp/s2alias "$rec2,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec2 (tracks nothing" $INFO2 || vm_fail "vol2's record of $s2 loaded for /tmp/s2alias: $(cat $INFO2)"
header_valid $rec2 &&
	vm_fail "vol2's record, refused for /tmp/s2alias, kept its valid header for $s2: the writes through the alias are marked nowhere"
lun2=$(vm_tcm_loop_export $SRC2)
dd if=/dev/urandom of=$lun2 bs=4096 count=1 seek=80 oflag=direct 2> /dev/null ||
	vm_fail "write to region 5 of vol2 on /tmp/s2alias"
vm_tcm_loop_unexport $SRC2
vm_backstore_delete $SRC2
rm /tmp/s2alias
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec2 (tracks nothing" $INFO2 ||
	vm_fail "vol2's record loaded without the write made through /tmp/s2alias: $(cat $INFO2)"
both_pairs intent=new dirty=32

vm_log "== 9f. the record's device number taken by another medium meanwhile"
wait_marked $PIPE 0 30 $SRC2
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC2
vm_modprobe loop
for f in recA recB; do
	dd if=/dev/zero of=/tmp/$f bs=64k count=1 2> /dev/null || vm_fail "make /tmp/$f"
done
# vol2_on_loop FILE: vol2 on s2 with its record on /dev/loop0 over FILE
vol2_on_loop() {
	losetup /dev/loop0 "$1" || vm_fail "losetup /dev/loop0 $1"
	vm_backstore replipipe replipipe_0 vol2 $s2 "/dev/loop0,intent_chunk_kib=64" > /dev/null
}
vol2_off_loop() {
	vm_backstore_delete $SRC2
	losetup -d /dev/loop0 || vm_fail "losetup -d /dev/loop0"
}
# A: bound to (P, t2), closed with nothing marked
vol2_on_loop /tmp/recA
both_pairs intent=new dirty=32
wait_marked $PIPE 0 30 $SRC2
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vol2_off_loop
# t2 taken while A is away; then B on the same loop device, opened, closed
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t2 || vm_fail "set-pipe {vol1->t2}"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vol2_on_loop /tmp/recB
vol2_off_loop
# A back on the loop device: B's close, later than the taking, is not A's
vol2_on_loop /tmp/recA
grep -q "intent: /dev/loop0 (tracks nothing" $INFO2 ||
	vm_fail "A's record loaded on the loop device B was closed on after t2 was taken: $(cat $INFO2)"
vol2_off_loop
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
both_pairs intent=new dirty=32

vm_log "== 9g. a record on a partition; another partition of its disk closed after the taking"
wait_marked $PIPE 0 30 $SRC2
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC2
# A 3 MiB disk image with an MBR: partitions 1 and 2, 128 KiB each
dd if=/dev/zero of=/tmp/recdisk bs=1M count=3 2> /dev/null || vm_fail "make /tmp/recdisk"
printf '\000\000\000\000\203\000\000\000\000\010\000\000\000\001\000\000\000\000\000\000\203\000\000\000\000\020\000\000\000\001\000\000' |
	dd of=/tmp/recdisk bs=1 seek=446 conv=notrunc 2> /dev/null || vm_fail "partition /tmp/recdisk"
printf '\125\252' | dd of=/tmp/recdisk bs=1 seek=510 conv=notrunc 2> /dev/null ||
	vm_fail "sign /tmp/recdisk"
losetup -P /dev/loop1 /tmp/recdisk || vm_fail "losetup -P /dev/loop1"
vm_wait_path /dev/loop1p1
vm_wait_path /dev/loop1p2
# vol2_on_part N: vol2 on s2 with its record on /dev/loop1pN
vol2_on_part() {
	vm_backstore replipipe replipipe_0 vol2 $s2 "/dev/loop1p$1,intent_chunk_kib=64" > /dev/null
}
# A on partition 1: bound to (P, t2), closed with nothing marked
vol2_on_part 1
both_pairs intent=new dirty=32
wait_marked $PIPE 0 30 $SRC2
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC2
# t2 taken while A is away; then B on partition 2, opened, closed
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t2 || vm_fail "set-pipe {vol1->t2}"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vol2_on_part 2
vm_backstore_delete $SRC2
# A back: B's close, later than the taking, is not A's (one diskseq)
vol2_on_part 1
grep -q "intent: /dev/loop1p1 (tracks nothing" $INFO2 ||
	vm_fail "A's record on /dev/loop1p1 loaded although t2 was taken, since B closed on /dev/loop1p2: $(cat $INFO2)"
vm_backstore_delete $SRC2
losetup -d /dev/loop1 || vm_fail "losetup -d /dev/loop1"
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
both_pairs intent=new dirty=32
# step 10 wants both records settled, as 9c left them
wait_marked $PIPE 0 30 $SRC2

vm_log "== 10. a PIPE_SET that fails leaves the sources' own records as they were"
t3=$(vm_dm_create t3 "0 4096 linear /dev/ram1 16384")
t4=$(vm_dm_create t4 "0 4096 linear /dev/ram1 20480")
small=$(vm_dm_create small "0 2048 linear /dev/ram1 24576")
# record_sum DEV: md5 of the record's header and first bitmap page
record_sum() { vm_read "$1" 0 2 /tmp/record-head && md5sum < /tmp/record-head; }
# set_refused ERRNO MESSAGE SET-PIPE-ARGS...: set-pipe P fails with ERRNO
# and MESSAGE, and neither P nor vol1's record (in memory, on disk) changed
set_refused() {
	local errno=$1 message=$2 out before sum
	shift 2
	# the clear passes are done with vol1's chunks: nothing changes the record
	wait_marked $PIPE 0 30
	wait_record 0 4 00000000 5
	before=$(rp-nlctl get $PIPE)
	sum=$(record_sum $rec)
	if out=$(rp-nlctl set-pipe --id $PIPE --region-kib 64 "$@" 2>&1); then
		vm_fail "set-pipe $* was not refused"
	fi
	vm_log "refused: $out"
	case "$out" in
	*"$message"*"(errno $errno)"*) ;;
	*) vm_fail "set-pipe $*: expected $errno, '$message'" ;;
	esac
	[ "$(rp-nlctl get $PIPE)" = "$before" ] || vm_fail "set-pipe $* changed the pipe: $(rp-nlctl get $PIPE)"
	grep -q "intent: $rec (bound, 0 regions marked" $INFO || vm_fail "vol1's record after the refusal: $(cat $INFO)"
	[ "$(record_sum $rec)" = "$sum" ] || vm_fail "set-pipe $* rewrote vol1's record on the device"
}
# vol1's new pair would take t2, which vol2's record names; the call fails
# on vol2's new pair, made after it: vol2's record must not forget t2.
header2=$(vm_sum $rec2 4096)
set_refused ENOSPC "target is smaller than the source" --pair $SRC=$t2 --pair $SRC2=$small
grep -q "intent: $rec2 (bound" $INFO2 ||
	vm_fail "a refused PIPE_SET in which vol1 would take t2 made vol2's record forget it: $(cat $INFO2)"
[ "$(vm_sum $rec2 4096)" = "$header2" ] ||
	vm_fail "a refused PIPE_SET in which vol1 would take t2 rewrote vol2's record header"
set_refused ENOSPC "target is smaller than the source" --pair $SRC=$t3,clean --pair $SRC2=$small
# vol2's record from here on (c to f) answers the probes of a PIPE_SET
# (docs/decisions.md 110) but takes no write: rperr
rperr=$(vm_dm_create rperr "0 16384 error")
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t3 --pair $SRC2=$t2 ||
	vm_fail "set-pipe {vol1->t3, vol2->t2}"
expect_of $PIPE $SRC intent=new dirty=32 target=$t3
resync $PIPE $SRC $s1 $t3 > /dev/null
vm_cmp_devs $s1 $t3 || vm_fail "vol1's legs differ"
vm_dm_writes_fail rprec2 /dev/ram2 16384 16384 $rperr
set_refused EIO "cannot write the source's write-intent record" --pair $SRC=$t1 --pair $SRC2=$t4
# vol2's own record could not be written back either: what header it has
# is not known, so vol2's writes fail until it can be invalidated (d).
grep -q "intent: $rec2 (header not known" $INFO2 ||
	vm_fail "vol2's record after its failed write-back: $(cat $INFO2)"
lun2=$(vm_tcm_loop_export $SRC2)
dd if=/dev/urandom of=$lun2 bs=4096 count=1 seek=16 oflag=direct 2> /dev/null &&
	vm_fail "a write to vol2 went on while its record's header was not known"
vm_dm_load rprec2 "0 16384 linear /dev/ram2 16384"
dd if=/dev/urandom of=$lun2 bs=4096 count=1 seek=16 oflag=direct 2> /dev/null ||
	vm_fail "a write to vol2 failed once its record could be invalidated"
grep -q "intent: $rec2 (tracks nothing" $INFO2 ||
	vm_fail "vol2's record after the write: $(cat $INFO2)"
header_valid $rec2 && vm_fail "vol2's record header still valid after the write"
vm_tcm_loop_unexport $SRC2

vm_log "== 10e. closed while its header is not known, after its target was taken"
# vol2's record bound to (P, t2) again, that header on the device
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t3 --pair $SRC2=$t2 ||
	vm_fail "set-pipe {vol1->t3, vol2->t2}"
expect_of $PIPE $SRC2 intent=new dirty=32
resync $PIPE $SRC $s1 $t3 > /dev/null
resync $PIPE $SRC2 $s2 $t2 > /dev/null
header_valid $rec2 || vm_fail "vol2's record has no header after its binding"
wait_marked $PIPE 0 30 $SRC2
vm_dm_writes_fail rprec2 /dev/ram2 16384 16384 $rperr
set_refused EIO "cannot write the source's write-intent record" --pair $SRC=$t1 --pair $SRC2=$t4
grep -q "intent: $rec2 (header not known" $INFO2 ||
	vm_fail "vol2's record after its failed write-back: $(cat $INFO2)"
# vol2 leaves P (vol1 keeps t3), its backstore goes (its last fix fails),
# vol1 takes t2, the device works again: the header on it still names
# (P, t2), and t2 holds vol1's data.  (While vol2's record is open, that
# taking is refused: 10f.)
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t3 || vm_fail "set-pipe {vol1->t3}"
vm_backstore_delete $SRC2
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t2 || vm_fail "set-pipe {vol1->t2}"
resync $PIPE $SRC $s1 $t2 > /dev/null
vm_dm_load rprec2 "0 16384 linear /dev/ram2 16384"
header_valid $rec2 || vm_fail "vol2's record lost its header: nothing left to test"
vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
grep -q "intent: $rec2 (tracks nothing" $INFO2 ||
	vm_fail "vol2's record, closed while its header was not known, loaded it although t2 was taken: $(cat $INFO2)"

vm_log "== 10f. open while its header is not known, the target it had taken"
# vol2's record bound to (P, t2); a PIPE_SET {vol1->t1, vol2->t4} fails on
# it and cannot write it back: the header on its device may be that of
# (P, t2), with the bits it had, or that of (P, t4), every chunk marked.
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t3 --pair $SRC2=$t2 ||
	vm_fail "set-pipe {vol1->t3, vol2->t2}"
expect_of $PIPE $SRC2 intent=new dirty=32
resync $PIPE $SRC $s1 $t3 > /dev/null
resync $PIPE $SRC2 $s2 $t2 > /dev/null
wait_marked $PIPE 0 30 $SRC2
vm_dm_writes_fail rprec2 /dev/ram2 16384 16384 $rperr
set_refused EIO "cannot write the source's write-intent record" --pair $SRC=$t1 --pair $SRC2=$t4
grep -q "intent: $rec2 (header not known" $INFO2 ||
	vm_fail "vol2's record after its failed write-back: $(cat $INFO2)"
# The device still fails: t2 cannot be taken (that header cannot be
# invalidated), other targets can; a binding a PIPE_SET wrote, marked in
# full, costs a full resync if it loads, not a stale one.
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t1 ||
	vm_fail "set-pipe {vol1->t1} refused: vol2's record cannot name t1"
resync $PIPE $SRC $s1 $t1 > /dev/null
taken_refused="cannot invalidate the write-intent record of another backstore"
set_refused EIO "$taken_refused" --pair $SRC=$t2
# A second PIPE_SET fails on vol2's record: (P, t2) may still be there.
set_refused EIO "cannot write the source's write-intent record" --pair $SRC=$t1 --pair $SRC2=$t4
set_refused EIO "$taken_refused" --pair $SRC=$t2
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t4 ||
	vm_fail "set-pipe {vol1->t4} refused: only failed calls' bindings, marked in full, name t4"
resync $PIPE $SRC $s1 $t4 > /dev/null
grep -q "intent: $rec2 (header not known" $INFO2 ||
	vm_fail "vol2's record after the refusals: $(cat $INFO2)"
# The device works again and no write reached vol2, so nothing invalidated
# its header, still (P, t2): vol1 taking t2 must, before it writes t2 (a
# restart would load it, vol1's data on t2 unseen).
vm_dm_load rprec2 "0 16384 linear /dev/ram2 16384"
header_valid $rec2 || vm_fail "vol2's record lost its header: nothing left to test"
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t2 || vm_fail "set-pipe {vol1->t2}"
header_valid $rec2 &&
	vm_fail "vol2's record, its header not known, still holds a valid header after vol1 took t2"
grep -q "intent: $rec2 (tracks nothing" $INFO2 ||
	vm_fail "vol2's record after vol1 took t2: $(cat $INFO2)"
resync $PIPE $SRC $s1 $t2 > /dev/null

vm_log "== 11. a record whose target path names another device or none"
# vol2_link: P = {vol2 -> /tmp/t2link}, resynced, deleted: vol2's record
# bound to that identity with nothing marked
vol2_link() {
	rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC2=/tmp/t2link ||
		vm_fail "set-pipe {vol2->/tmp/t2link}"
	expect_of $PIPE $SRC2 "$@"
	resync $PIPE $SRC2 $s2 /tmp/t2link > /dev/null
	vm_cmp_devs $s2 /tmp/t2link || vm_fail "vol2's legs differ"
	rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
	grep -q "intent: $rec2 (bound, 0 regions marked" $INFO2 || vm_fail "vol2's record: $(cat $INFO2)"
}
# vol1_takes TARGET: P = {vol1 -> TARGET}, resynced, deleted
vol1_takes() {
	rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$1 || vm_fail "set-pipe {vol1->$1}"
	resync $PIPE $SRC $s1 $1 > /dev/null
	rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
}
# vol2_reopens WHY: vol2's backstore made again; its record must track nothing
vol2_reopens() {
	vm_backstore replipipe replipipe_0 vol2 $s2 "$rec2,intent_chunk_kib=64" > /dev/null
	grep -q "intent: $rec2 (tracks nothing" $INFO2 || vm_fail "vol2's record loaded although $1: $(cat $INFO2)"
}
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
ln -s $t2 /tmp/t2link
vol2_link intent=new dirty=32
vm_log "== 11a. closed, t2 taken, its path gone when it opens"
vm_backstore_delete $SRC2
vol1_takes $t2
rm /tmp/t2link
vol2_reopens "its target did not resolve and t2 was taken"
ln -s $t2 /tmp/t2link
vol2_link intent=new dirty=32
vm_log "== 11b. closed, its path taken, then made again with another minor"
vm_backstore_delete $SRC2
vol1_takes /tmp/t2link
t2b=$(vm_dm_create t2b "0 4096 linear /dev/ram1 12288")
dmsetup --noudevsync remove t2 || vm_fail "dmsetup remove t2"
ln -sfn $t2b /tmp/t2link
vm_log "/tmp/t2link: $t2 -> $t2b"
vol2_reopens "its target path was taken"
vol2_link intent=new dirty=32
vm_log "== 11c. open, its path moved to t3, t3 taken"
ln -sfn $t3 /tmp/t2link
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t3 || vm_fail "set-pipe {vol1->t3}"
grep -q "intent: $rec2 (tracks nothing" $INFO2 || vm_fail "vol2's record still vouches for what /tmp/t2link names: $(cat $INFO2)"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"

vm_log "== 12. 2^28 regions, 2^28 chunks"
# nothing reads or writes the legs; the record (32 MiB + 4 KiB) on ram2
big=$(vm_dm_create big "0 $((1 << 31)) error")
bigt=$(vm_dm_create bigt "0 $((1 << 31)) error")
rec3=$(vm_dm_create rprec3 "0 98304 linear /dev/ram2 32768")
SRC3=replipipe_0/vol3
vm_backstore replipipe replipipe_0 vol3 $big "$rec3,intent_chunk_kib=4" > /dev/null
rp-nlctl set-pipe --id big --region-kib 4 --pair $SRC3=$bigt --nl-timeout 120 ||
	vm_fail "set-pipe big"
expect_of big $SRC3 intent=new dirty=268435456 intent_marked=268435456
# get_us PIPE: microseconds of 20 PIPE_GETs of PIPE in one process
get_us() { rp-nlctl get "$1" --repeat 20 | sed -n 's/^get-repeat n=20 us=\([0-9]*\) .*/\1/p'; }
# vol1's record as step 11c left it bound: the same pipe loads it
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t3 || vm_fail "set-pipe {vol1->t3}"
small_us= big_us=
for i in 1 2 3; do
	small_us="$small_us $(get_us $PIPE)"
	big_us="$big_us $(get_us big)"
done
vm_log "20 PIPE_GETs, 3 rounds (us): 2^28 chunks:$big_us; 32 chunks:$small_us"
small_us=$(printf '%s\n' $small_us | sort -n | sed -n 2p)
big_us=$(printf '%s\n' $big_us | sort -n | sed -n 2p)
[ "$big_us" -le $((3 * small_us + 10000)) ] ||
	vm_fail "20 PIPE_GETs of the 2^28-chunk record took $big_us us, of vol1's $small_us us (medians): its marks are counted per request"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
# two clear passes (intent_clear_sec 5) over every chunk marked, every region dirty
sleep 11
# the legs cannot be flushed (dm error): every chunk stays marked
rp-nlctl del-pipe big || vm_fail "del-pipe big"
rp-nlctl set-pipe --id big --region-kib 4 --pair $SRC3=$bigt --nl-timeout 120 ||
	vm_fail "set-pipe big again"
expect_of big $SRC3 intent=loaded dirty=268435456 intent_regions=268435456
rp-nlctl del-pipe big || vm_fail "del-pipe big"
vm_backstore_delete $SRC3

vm_log "== 12b. clear passes over 2^28 chunks in bounded steps clear exactly the quiet ones"
# legs that take writes and flushes (null_blk without memory: the debug
# kernel has no dm zero); the record of step 12
vm_modprobe null_blk nr_devices=2 gb=1024 memory_backed=0
zs=/dev/nullb0 zt=/dev/nullb1
vm_backstore replipipe replipipe_0 vol3 $zs "$rec3,intent_chunk_kib=4" > /dev/null
rp-nlctl set-pipe --id big --region-kib 4 --pair $SRC3=$zt,clean --nl-timeout 120 ||
	vm_fail "set-pipe big {vol3->zt clean}"
expect_of big $SRC3 state=InSync dirty=0 intent_marked=0
lun3=$(vm_tcm_loop_export $SRC3)
# a dirty run of 8192 regions from region 2^20: two steps' worth of skip
rp-nlctl pair-state big $SRC3 pause || vm_fail "pause big"
dd if=/dev/urandom of=$lun3 bs=1M count=32 seek=4096 oflag=direct 2> /dev/null ||
	vm_fail "32 MiB to regions 1048576..1056767"
rp-nlctl pair-state big $SRC3 resume || vm_fail "resume big"
# mirrored writes to quiet chunks: near the start, right after the run, far
# away, the last
for r in 5 1056768 134217728 268435455; do
	dd if=/dev/urandom of=$lun3 bs=4096 count=1 seek=$r oflag=direct 2> /dev/null ||
		vm_fail "write to region $r"
done
expect_of big $SRC3 state=Syncing dirty=8192 intent_marked=8196
echo 1 > /sys/module/replipipe/parameters/intent_clear_sec
wait_marked big 8192 30 $SRC3
echo 5 > /sys/module/replipipe/parameters/intent_clear_sec
expect_of big $SRC3 state=Syncing dirty=8192 intent_marked=8192
vm_tcm_loop_unexport $SRC3
rp-nlctl del-pipe big || vm_fail "del-pipe big"
vm_backstore_delete $SRC3

vm_log "== 12c. 8192 bitmap pages on a device of 8 ms a request: read and written in runs"
# no clear pass takes a write below before the load that counts it
echo 3600 > /sys/module/replipipe/parameters/intent_clear_sec
vm_modprobe dm_delay
vm_dm_load rprec3 "0 98304 delay /dev/ram2 32768 8"
# rec_ios: the requests (reads and writes) rec3 completed so far
rec_ios() {
	local r w
	read -r r _ _ _ w _ < /sys/block/${rec3#/dev/}/stat
	echo $((r + w))
}
# slow_step WHAT START IOS MAX: WHAT, begun at START (ms) when rec3 had
# completed IOS requests, took at most MAX requests and 10 s
slow_step() {
	local ms=$(($(vm_now_ms) - $2)) ios=$(($(rec_ios) - $3))
	vm_log "$1: $ms ms, $ios requests to the record"
	[ $ios -le $4 ] ||
		vm_fail "$1 took $ios requests of the record device, not at most $4: a bitmap page per request"
	[ $ms -le 10000 ] ||
		vm_fail "$1 took $ms ms on a record of 8 ms a request"
}
# open_and_load WHAT DEV PIPE KEY=VALUE...: vol3 made on DEV with rec3
# (the open a slow_step WHAT of 40 requests at most: a header and 32 runs
# for 8192 pages), then PIPE {vol3->zt} set: its pair has each KEY=VALUE
open_and_load() {
	local what=$1 dev=$2 id=$3 t0 ios0
	shift 3
	t0=$(vm_now_ms) ios0=$(rec_ios)
	vm_backstore replipipe replipipe_0 vol3 $dev "$rec3,intent_chunk_kib=4" > /dev/null
	slow_step "$what" $t0 $ios0 40
	rp-nlctl set-pipe --id $id --region-kib 4 --pair $SRC3=$zt --nl-timeout 120 ||
		vm_fail "set-pipe $id {vol3->zt}"
	expect_of $id $SRC3 "$@"
}
open_and_load "open, 12b's binding loaded" $zs big intent=loaded intent_marked=8192
rp-nlctl del-pipe big || vm_fail "del-pipe big"
vm_backstore_delete $SRC3
# A source of 8100.5 bitmap pages (128 MiB each): 31 runs of 256 pages
# and one of 165, whose last page is half used.
zs2=$(vm_dm_create zs2 "0 $((1036864 * 2048)) linear $zs 0")
vm_backstore replipipe replipipe_0 vol3 $zs2 "$rec3,intent_chunk_kib=4" > /dev/null
lun3=$(vm_tcm_loop_export $SRC3)
# A clean binding, then a write: the PIPE_SET's probe read, the binding
# (two headers and 32 runs), the write-back of its empty bits (32 runs),
# the write's page.
t0=$(vm_now_ms) ios0=$(rec_ios)
rp-nlctl set-pipe --id big2 --region-kib 4 --pair $SRC3=$zt,clean --nl-timeout 120 ||
	vm_fail "set-pipe big2 {vol3->zt clean}"
dd if=/dev/urandom of=$lun3 bs=4096 count=1 seek=7 oflag=direct 2> /dev/null ||
	vm_fail "write to region 7"
slow_step "set-pipe big2 clean, then a write" $t0 $ios0 100
# regions on page 0, the last of run 1, the first of run 2, the last one
R12C="7 8355845 8388617 265437183"
write_12c() {
	local r
	for r in $R12C; do
		dd if=/dev/urandom of=$lun3 bs=4096 count=1 seek=$r oflag=direct 2> /dev/null ||
			vm_fail "write to region $r"
	done
}
write_12c
expect_of big2 $SRC3 state=InSync intent_marked=4
vm_tcm_loop_unexport $SRC3
rp-nlctl del-pipe big2 || vm_fail "del-pipe big2"
vm_backstore_delete $SRC3
# region 8388617: bit 9 of bitmap page 256, the record's block 257
[ "$(dd if=$rec3 bs=4096 skip=257 count=1 iflag=direct 2> /dev/null | od -An -v -tx1 -N2 | tr -d ' \n')" = 0002 ] ||
	vm_fail "bitmap page 256 on the record device does not start 00 02"
open_and_load "open again" $zs2 big2 intent=loaded intent_marked=4 dirty=4
# the same regions again: a bit read back anywhere else than where it
# was written would leave one of them unmarked, and marking it counts
lun3=$(vm_tcm_loop_export $SRC3)
write_12c
expect_of big2 $SRC3 intent_marked=4
vm_tcm_loop_unexport $SRC3
rp-nlctl del-pipe big2 || vm_fail "del-pipe big2"
vm_backstore_delete $SRC3
vm_dm_load rprec3 "0 98304 linear /dev/ram2 32768"
echo 5 > /sys/module/replipipe/parameters/intent_clear_sec

vm_log "== 13. a binding that assumed its target clean, left by a failed PIPE_SET"
# vol2's record holds its writes (dm delay), then fails them (error
# below). Meanwhile vol1's record, written first with a binding that
# assumes t4 clean, fails too, so its old binding (P, t3) cannot be
# written back: the header on its device is the new one. Nothing wrote t4
# for vol1.
vm_dm_writes_fail rprec2 /dev/ram2 16384 16384 $rperr 60000
recsz=$(blockdev --getsz $rec)
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t4,clean --pair $SRC2=$t1 > /tmp/set13 2>&1 &
setpid=$!
i=0
until header_names $rec "$t4"; do
	[ $i -lt 300 ] || vm_fail "vol1's record did not get the binding to t4 within 30 s"
	sleep 0.1
	i=$((i + 1))
done
vm_dm_load rprec "0 $recsz error"
# A suspend sends on what dm-delay holds: vol2's write fails now.
vm_dm_load rprec2 "0 16384 error"
wait $setpid && vm_fail "set-pipe {vol1->t4 clean, vol2->t1} succeeded: $(cat /tmp/set13)"
grep -q "cannot write the source's write-intent record" /tmp/set13 ||
	vm_fail "set-pipe {vol1->t4 clean, vol2->t1}: $(cat /tmp/set13)"
grep -q "intent: $rec (header not known" $INFO || vm_fail "vol1's record: $(cat $INFO)"
# Both backstores go while their devices fail (their last invalidation
# fails too), the module is reloaded: nothing in memory recalls the failed
# call, the header on the device is all a restart has.
vm_backstore_delete $SRC
vm_backstore_delete $SRC2
cat $LIVE
rmmod replipipe || vm_fail "rmmod"
vm_dm_load rprec "0 $recsz linear /dev/ram2 0"
vm_dm_load rprec2 "0 16384 linear /dev/ram2 16384"
header_names $rec "$t4" ||
	vm_fail "vol1's record does not hold the binding to t4: nothing left to test"
[ "$(record_bytes 0 4)" = ffffffff ] ||
	vm_fail "the binding that assumed t4 clean is on the device with bits $(record_bytes 0 4), not every chunk marked: a restart would trust t4"
vm_backstore replipipe replipipe_0 vol1 $s1 "$rec,intent_chunk_kib=64" > /dev/null
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t4 || vm_fail "set-pipe {vol1->t4}"
expect_of $PIPE $SRC intent=loaded dirty=32 target=$t4
resync $PIPE $SRC $s1 $t4 > /dev/null
vm_cmp_devs $s1 $t4 || vm_fail "vol1's legs differ"
# A PIPE_SET with clean that succeeds: its empty bits reach the device.
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair $SRC=$t3,clean || vm_fail "set-pipe {vol1->t3 clean}"
expect_of $PIPE $SRC intent=new dirty=0 intent_marked=0
wait_record 0 4 00000000 10
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"

vm_backstore_delete $SRC
cat $LIVE
rmmod replipipe || vm_fail "final rmmod"
for d in rperr zs2 rprec3 bigt big small t4 t3 t2b s2b s2 t1 s1 rprec2 rprec; do
	dmsetup --noudevsync remove $d || vm_fail "dmsetup remove $d"
done
vm_log "kmod-intent: all steps passed"
