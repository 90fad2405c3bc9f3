#!/bin/sh
# The genl family refuses bad input: rp-nltest sends malformed and forbidden
# requests (unknown attributes, missing or oversize ones, ranges, bad
# endpoints, unprivileged callers) and checks each errno and extack message
# and that refusals change nothing. It also dumps vol1's dirty bitmap (BITMAP_GET,
# one chunk of 32768 regions per dump callback) while a PIPE_SET replaces the
# pair by one with fewer regions: the dump must end with EAGAIN, never carry on
# into the new pair's smaller bitmap. Afterwards a valid pipe still works; a
# PIPE_SET swaps the targets of its two pairs (new pairs take over the
# targets of the pairs they replace, every region dirty) but a kept pair's
# target, one device for two new pairs and a swap that assumes clean are
# refused with the pipe unchanged. A source of more than 2^31 - 1 regions
# (8 TiB of dm error at 4 KiB regions: bitmap_set() takes its count as an
# int, and setting 2^31 bits at once sets one word's) is refused before any
# bitmap is allocated, and so
# is a target with larger logical blocks than the source (null_blk, bs=4096:
# every 512-byte write would fail on it). A primary that grows while paired
# (dm-linear from 2 to 4 MiB) keeps, through LIO, the size the pair mirrors
# (a write past it could be neither tracked nor resynced) until it is paired
# again. A backstore whose HBA/name is too long for netlink to name (a
# truncated name could be another backstore's) is refused at enable with
# ENAMETOOLONG. A write to a backstore's control with a bad parameter, or
# a path too long to keep whole (512 bytes), changes nothing, not even the
# valid parameters before it in the same write; a relative udev_path is
# refused. Enable refuses intent_chunk_kib= without intent_path= and a
# primary that holds no block (an empty loop device). A primary of 4 KiB
# blocks gets WRITE SAME's limit in blocks, not 512-byte sectors, and at
# most 64 MiB; exported with LIO's block_size set to 512, a write or read
# that starts inside one of its 4 KiB blocks, or a write that ends inside
# one, is refused and the block is left as it was on both legs; a WRITE
# SAME with a 512-byte block over a whole 4 KiB one writes it eight times
# on both legs.
# The module unloads with no object left and no kernel warning.
# vm-timeout: 300
# vm-cost: 15
# vm-debug-cost: 55
# vm-mem: 1024
# vm-bins: dmsetup /sbin/losetup /usr/bin/dd sg_write_same

LIVE=/sys/module/replipipe/parameters/live_objects

# 512 MiB: 131072 regions of 4 KiB, a bitmap dump of four callbacks (brd
# allocates pages only when written; nothing here writes much).
vm_brd 4 512
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
vm_backstore replipipe replipipe_0 vol2 /dev/ram1 > /dev/null
rp-nlctl family

rp-nltest --source replipipe_0/vol1 --primary /dev/ram0 \
	--source2 replipipe_0/vol2 --target /dev/ram2 --target2 /dev/ram3 \
	--unpriv-uid 1000 || vm_fail "rp-nltest: some case failed (its line says FAIL)"

vm_log "== the module still works: a valid pipe with two pairs"
rp-nlctl set-pipe --id kmod-bad-input-ok --pair replipipe_0/vol1=/dev/ram2,clean \
	--pair replipipe_0/vol2=/dev/ram3,clean || vm_fail "valid set-pipe refused"
rp-nlctl get kmod-bad-input-ok
[ "$(rp-nlctl get kmod-bad-input-ok | grep -c '^pair ')" = 2 ] || vm_fail "expected 2 pairs"
rp-nlctl del-pipe kmod-bad-input-ok || vm_fail "del-pipe"

vm_log "== a PIPE_SET hands the targets of the pairs it replaces to new pairs, nothing else"
# nl_refused ERRNO MESSAGE SET-PIPE-ARGS...: rp-nlctl set-pipe must fail with
# ERRNO and the extack MESSAGE, and the pipe must stay as it was.
SWAP=kmod-bad-input-swap
nl_refused() {
	local errno=$1 message=$2 out
	shift 2
	if out=$(rp-nlctl set-pipe --id $SWAP "$@" 2>&1); then
		vm_fail "set-pipe $* was not refused"
	fi
	vm_log "refused: $out"
	case "$out" in
	*"$message"*"(errno $errno)"*) ;;
	*) vm_fail "set-pipe $*: expected $errno, '$message'" ;;
	esac
	[ "$(rp-nlctl get $SWAP)" = "$before" ] || vm_fail "set-pipe $* changed the pipe"
}
rp-nlctl set-pipe --id $SWAP --pair replipipe_0/vol1=/dev/ram2,clean \
	--pair replipipe_0/vol2=/dev/ram3,clean || vm_fail "set-pipe $SWAP"
before=$(rp-nlctl get $SWAP)
ln -s /dev/ram2 /tmp/alias-ram2
ln -s /dev/ram3 /tmp/alias-ram3
# vol1 -> ram2 stays; ram2 (under another path) for vol2 too
nl_refused EBUSY "target is already the target of a pair" \
	--pair replipipe_0/vol1=/dev/ram2 --pair replipipe_0/vol2=/tmp/alias-ram2
# both pairs new; vol1 takes ram3 over from vol2, vol2 asks for it as well
nl_refused EBUSY "target is already the target of a pair" \
	--pair replipipe_0/vol1=/dev/ram3 --pair replipipe_0/vol2=/tmp/alias-ram3
# a swap cannot assume clean: the replaced pairs' last writes may still land
nl_refused EINVAL "a target taken over from a replaced pair cannot be assumed clean" \
	--pair replipipe_0/vol1=/dev/ram3,clean --pair replipipe_0/vol2=/dev/ram2,clean
rp-nlctl set-pipe --id $SWAP --pair replipipe_0/vol1=/dev/ram3 \
	--pair replipipe_0/vol2=/dev/ram2 || vm_fail "the swap of the targets was refused"
after=$(rp-nlctl get $SWAP)
echo "$after"
for p in "vol1 /dev/ram3" "vol2 /dev/ram2"; do
	set -- $p
	line=$(echo "$after" | grep "^pair .* source=replipipe_0/$1 target=$2 state=Syncing ") ||
		vm_fail "after the swap: no Syncing pair $1 -> $2"
	counts=$(echo "$line" | sed -n 's/.* regions=\([1-9][0-9]*\) dirty=\([0-9]*\) .*/\1 \2/p')
	[ -n "$counts" ] && [ "${counts% *}" = "${counts#* }" ] ||
		vm_fail "after the swap: $1 -> $2 does not have every region dirty ($counts)"
	echo "$before" | grep "source=replipipe_0/$1 " | grep -o " serial=[0-9]*" > /tmp/serial.old
	echo "$after" | grep "source=replipipe_0/$1 " | grep -o " serial=[0-9]*" > /tmp/serial.new
	cmp -s /tmp/serial.old /tmp/serial.new && vm_fail "after the swap: $1 kept its pair (same serial)"
done
rp-nlctl del-pipe $SWAP || vm_fail "del-pipe $SWAP"

vm_log "== pairs that the bitmaps or the target cannot serve"
# new_refused ERRNO MESSAGE SET-PIPE-ARGS...: a set-pipe of a new pipe fails
# with ERRNO and the extack MESSAGE, and leaves no pipe
NEW=kmod-bad-input-new
new_refused() {
	local errno=$1 message=$2 out
	shift 2
	if out=$(rp-nlctl set-pipe --id $NEW "$@" 2>&1); then
		vm_fail "set-pipe $* was not refused"
	fi
	vm_log "refused: $out"
	case "$out" in
	*"$message"*"(errno $errno)"*) ;;
	*) vm_fail "set-pipe $*: expected $errno, '$message'" ;;
	esac
	if rp-nlctl get $NEW > /dev/null 2>&1; then
		vm_fail "set-pipe $* left a pipe"
	fi
}
vm_modprobe dm_mod
# 2^34 sectors: 2^31 regions of 4 KiB; nothing reads or writes them
big=$(vm_dm_create rpbig "0 $((1 << 34)) error")
bigt=$(vm_dm_create rpbigt "0 $((1 << 34)) error")
vm_backstore replipipe replipipe_0 vol3 $big > /dev/null
new_refused EINVAL "the source has more than 2^31 - 1 regions of that size" \
	--region-kib 4 --pair replipipe_0/vol3=$bigt
vm_backstore_delete replipipe_0/vol3
vm_modprobe null_blk nr_devices=1 bs=4096 gb=1
vm_wait_path /dev/nullb0
new_refused EINVAL "target's logical block size is larger than the source's" \
	--pair replipipe_0/vol1=/dev/nullb0
rmmod null_blk || vm_fail "rmmod null_blk"

vm_log "== a backstore name too long for netlink"
# "replipipe_0/" + 116 bytes = 128: one more than REPLIPIPE_SOURCE_MAX_LEN.
long=$(printf 'n%.0s' $(seq 116))
dir=$VM_CFS/core/replipipe_0/$long
mkdir "$dir" || vm_fail "mkdir of a backstore with a long name"
echo "udev_path=/dev/ram3" > "$dir/control" || vm_fail "control of the long-named backstore"
if out=$(echo 1 2>&1 > "$dir/enable"); then
	vm_fail "a backstore named replipipe_0/$long (128 bytes) was enabled"
fi
vm_log "enable refused: $out"
case "$out" in
*"too long"*) ;;
*) vm_fail "enable of the long-named backstore: expected ENAMETOOLONG, got '$out'" ;;
esac
dmesg | grep -q "backstore names longer than 127 bytes" || vm_fail "no kernel message for the long name"
rmdir "$dir" || vm_fail "rmdir $dir"

vm_log "== control: a refused write changes nothing, a path is never cut"
dir=$VM_CFS/core/replipipe_0/ctl
mkdir "$dir" || vm_fail "mkdir core/replipipe_0/ctl"
echo "udev_path=/dev/ram3,intent_path=/dev/ram4" > "$dir/control" ||
	vm_fail "control udev_path, intent_path"
# Valid, then bad, in one write; a bad one alone; a path of 512 bytes.
long=/dev/$(printf 'p%.0s' $(seq 507))
for bad in "intent_chunk_kib=64,intent_path=x" "intent_path=x" \
	"udev_path=$long" "intent_path=$long" "udev_path=dev/ram3"; do
	if echo "$bad" 2> /dev/null > "$dir/control"; then
		vm_fail "control accepted '$(echo "$bad" | cut -c1-40)...'"
	fi
done
info=$(cat "$dir/info")
echo "$info"
case "$info" in
*"udev_path: /dev/ram3"*"intent_path: /dev/ram4"*) ;;
*) vm_fail "a refused control write changed the backstore: $info" ;;
esac
case "$info" in
*intent_chunk_kib*) vm_fail "the valid part of a refused control write was applied: $info" ;;
esac
rmdir "$dir" || vm_fail "rmdir $dir"

vm_log "== enable refuses a chunk size without a record, and a primary of no block"
# enable_refused CONTROL MESSAGE: a backstore with CONTROL is not enabled,
# and the kernel says MESSAGE
enable_refused() {
	mkdir "$dir" || vm_fail "mkdir $dir"
	echo "$1" > "$dir/control" || vm_fail "control $1"
	if echo 1 2> /dev/null > "$dir/enable"; then
		vm_fail "enabled with control $1: $(cat "$dir/info")"
	fi
	dmesg | grep -q "$2" || vm_fail "no kernel message '$2' for control $1"
	rmdir "$dir" || vm_fail "rmdir $dir"
}
enable_refused "udev_path=/dev/ram3,intent_chunk_kib=64" "intent_chunk_kib= is a setting of the write-intent record"
vm_modprobe loop
: > /tmp/empty.img
losetup /dev/loop0 /tmp/empty.img || vm_fail "losetup /dev/loop0 /tmp/empty.img"
[ "$(blockdev --getsize64 /dev/loop0)" = 0 ] || vm_fail "/dev/loop0 is not empty"
# Enabled, LIO would export it with the last LBA 2^64 - 1.
enable_refused "udev_path=/dev/loop0" "/dev/loop0 holds no block"
losetup -d /dev/loop0 || vm_fail "losetup -d /dev/loop0"

vm_log "== a primary of 4 KiB blocks: WRITE SAME's limit in blocks"
truncate -s 64M /tmp/4kn.img
/sbin/losetup -b 4096 /dev/loop1 /tmp/4kn.img || vm_fail "losetup -b 4096 /dev/loop1"
wz=$(cat /sys/block/loop1/queue/write_zeroes_max_bytes)
[ "$wz" -gt 0 ] || vm_fail "/dev/loop1 has no write zeroes"
vm_backstore replipipe replipipe_0 vol4k /dev/loop1 > /dev/null
ws=$(cat $VM_CFS/core/replipipe_0/vol4k/attrib/max_write_same_len)
vm_log "write_zeroes_max_bytes $wz, max_write_same_len $ws"
# 512-byte sectors taken for blocks: 8 times the device's own limit; and
# at most 64 MiB, what a mirrored WRITE SAME writes on its target within
# the command
[ "$wz" -lt $((64 << 20)) ] || wz=$((64 << 20))
[ "$ws" = $((wz / 4096)) ] || vm_fail "max_write_same_len $ws, not $((wz / 4096)) blocks of 4 KiB"

vm_log "== a LUN of 512-byte blocks over legs of 4 KiB: only whole 4 KiB blocks go through"
# LIO takes block_size=512 until the LUN is exported. A write of part of
# a 4 KiB block would need a read-modify-write: padded with zeroes it
# would wipe the rest of the block on both legs.
truncate -s 64M /tmp/4knt.img
/sbin/losetup -b 4096 /dev/loop2 /tmp/4knt.img || vm_fail "losetup -b 4096 /dev/loop2"
echo 512 > $VM_CFS/core/replipipe_0/vol4k/attrib/block_size || vm_fail "block_size 512 refused"
BS=kmod-bad-input-bs
rp-nlctl set-pipe --id $BS --pair replipipe_0/vol4k=/dev/loop2,clean || vm_fail "set-pipe $BS"
lun=$(vm_tcm_loop_export replipipe_0/vol4k)
[ "$(blockdev --getss $lun)" = 512 ] || vm_fail "$lun: $(blockdev --getss $lun)-byte blocks, not 512"
# coreutils' dd (vm-bins, by its path: busybox sh runs its own applet for
# a bare "dd"): busybox's dd falls back to the page cache, which would turn
# a write of 512 bytes into one of the whole 4 KiB page
DD=/usr/bin/dd
$DD --version 2> /dev/null | grep -q coreutils || vm_fail "$DD is not coreutils' dd"
dd if=/dev/urandom of=/tmp/blk bs=4096 count=1 2> /dev/null
$DD if=/tmp/blk of=$lun bs=4096 seek=1 count=1 oflag=direct 2> /dev/null ||
	vm_fail "a whole 4 KiB block at LBA 8 was refused"
if $DD if=/dev/zero of=$lun bs=512 seek=9 count=1 oflag=direct 2> /dev/null; then
	vm_fail "a write of 512 bytes at LBA 9 (inside a 4 KiB block) was accepted"
fi
if $DD if=/dev/zero of=$lun bs=512 seek=8 count=1 oflag=direct 2> /dev/null; then
	vm_fail "a write of 512 bytes at LBA 8 (the head of a 4 KiB block) was accepted"
fi
if $DD if=/dev/zero of=$lun bs=4096 seek=4608 count=1 oflag=direct,seek_bytes 2> /dev/null; then
	vm_fail "a write of 4 KiB at LBA 9 (across two 4 KiB blocks) was accepted"
fi
for leg in /dev/loop1 /dev/loop2; do
	rp-verify --dump $leg --offset 4096 --length 4096 2> /dev/null > /tmp/leg ||
		vm_fail "cannot read $leg"
	cmp -s /tmp/leg /tmp/blk ||
		vm_fail "$leg: the block at 4 KiB is not what was written (refused writes touched it)"
done
# A read may end inside a block (the legs read it whole), not start there.
rp-verify --dump $lun --offset 4096 --length 512 2> /dev/null > /tmp/head ||
	vm_fail "a read of 512 bytes at LBA 8 failed"
head -c 512 /tmp/blk | cmp -s - /tmp/head || vm_fail "the read of 512 bytes at LBA 8 is not the block's head"
if rp-verify --dump $lun --offset 4608 --length 512 > /dev/null 2>&1; then
	vm_fail "a read at LBA 9 (inside a 4 KiB block) was accepted"
fi
# A WRITE SAME with a block of 512 bytes (sg_write_same: sd never sends
# one with a pattern): over a whole 4 KiB block the legs get it eight
# times (the module repeats it to fill their block); one that starts or
# ends inside a block is refused, and the next block stays zeroes.
head -c 512 /dev/urandom > /tmp/pat
vm_repeated /tmp/pat 3 /tmp/pat8
head -c 4096 /dev/zero > /tmp/zero4k
sg_write_same --in=/tmp/pat --lba=16 --num=8 $lun > /dev/null ||
	vm_fail "a WRITE SAME of the 4 KiB block at LBA 16 was refused"
if sg_write_same --in=/tmp/pat --lba=25 --num=7 $lun > /dev/null 2>&1; then
	vm_fail "a WRITE SAME from LBA 25 (inside a 4 KiB block) was accepted"
fi
if sg_write_same --in=/tmp/pat --lba=24 --num=4 $lun > /dev/null 2>&1; then
	vm_fail "a WRITE SAME ending at LBA 27 (inside a 4 KiB block) was accepted"
fi
for leg in /dev/loop1 /dev/loop2; do
	rp-verify --dump $leg --offset 8192 --length 8192 2> /dev/null > /tmp/leg ||
		vm_fail "cannot read $leg"
	head -c 4096 /tmp/leg | cmp -s - /tmp/pat8 ||
		vm_fail "$leg: the block at 8 KiB is not the WRITE SAME's 512 bytes eight times"
	tail -c 4096 /tmp/leg | cmp -s - /tmp/zero4k ||
		vm_fail "$leg: the block at 12 KiB is not zeroes (refused WRITE SAMEs touched it)"
done
pair=$(rp-nlctl get $BS | grep "^pair ") || vm_fail "no pair line for $BS"
[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" dirty)" = 0 ] ||
	vm_fail "refused commands changed the pair: $pair"
vm_tcm_loop_unexport replipipe_0/vol4k
rp-nlctl del-pipe $BS || vm_fail "del-pipe $BS"
vm_backstore_delete replipipe_0/vol4k
/sbin/losetup -d /dev/loop1 || vm_fail "losetup -d /dev/loop1"
/sbin/losetup -d /dev/loop2 || vm_fail "losetup -d /dev/loop2"

vm_log "== a primary that grows while paired"
GROW=kmod-bad-input-grow
grow=$(vm_dm_create rpgrow "0 4096 linear /dev/ram2 0")
vm_backstore replipipe replipipe_0 vol4 $grow > /dev/null
rp-nlctl set-pipe --id $GROW --pair replipipe_0/vol4=/dev/ram3 || vm_fail "set-pipe $GROW"
lun=$(vm_tcm_loop_export replipipe_0/vol4)
# lun_size BYTES WHEN: the LUN's size, read again by the initiator, is BYTES
lun_size() {
	echo 1 > /sys/block/${lun##*/}/device/rescan || vm_fail "rescan $lun"
	[ "$(blockdev --getsize64 $lun)" = "$1" ] ||
		vm_fail "$2: $lun has $(blockdev --getsize64 $lun) bytes, not $1"
}
lun_size 2097152 "paired"
vm_dm_load rpgrow "0 8192 linear /dev/ram2 0"
lun_size 2097152 "the primary grown to 4 MiB while paired"
if dd if=/dev/zero of=$lun bs=4096 seek=768 count=1 oflag=direct 2> /dev/null; then
	vm_fail "a write at 3 MiB was accepted"
fi
rp-nlctl del-pipe $GROW || vm_fail "del-pipe $GROW"
lun_size 4194304 "not paired"
rp-nlctl set-pipe --id $GROW --pair replipipe_0/vol4=/dev/ram3 || vm_fail "set-pipe $GROW again"
rp-nlctl get $GROW | grep -q " source_bytes=4194304 " || vm_fail "paired again: $(rp-nlctl get $GROW)"
lun_size 4194304 "paired again"
rp-nlctl del-pipe $GROW || vm_fail "del-pipe $GROW"
vm_tcm_loop_unexport replipipe_0/vol4
vm_backstore_delete replipipe_0/vol4
for d in rpgrow rpbigt rpbig; do
	DM_DISABLE_UDEV=1 dmsetup --noudevsync remove $d || vm_fail "dmsetup remove $d"
done

vm_backstore_delete replipipe_0/vol1
vm_backstore_delete replipipe_0/vol2
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-bad-input done"
