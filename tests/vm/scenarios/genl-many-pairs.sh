#!/bin/sh
# PIPE_GET of large pipes, a small pipe beside them. Phase 1: 200 pairs with
# short target paths (~58 KiB of pairs: more than the dump's skb of at most
# 32 KiB, which failed the dump with EMSGSIZE from ~60 pairs on, ~15 under
# fragmentation). Phase 2: REPLIPIPE_MAX_PAIRS (256) pairs with long source
# and target names: ~100 KiB of pairs, more than an attribute's 16-bit
# length, so PIPE_SET and the replies carry them in several
# REPLIPIPE_A_PIPE_PAIRS nests. The dump and the doit list every pair, in
# order. Devices: null_blk without memory.
# Not named kmod-*: the debug tier runs every kmod-* scenario, and this one
# spends ~540 s there (256 backstores made through configfs under KASAN and
# lockdep). It passed there once, kmemleak clean (session 8); the debug
# tier keeps its budget for the interleavings (kmod-races).
# vm-timeout: 400
# vm-cost: 35
# vm-mem: 1024

N=256
N1=200
BIG=genl-many-pairs
SMALL=genl-many-pairs-small
LIVE=/sys/module/replipipe/parameters/live_objects
# a backstore name of 93 characters (a source of ~107) ...
pad=$(printf '%090d' 0)
# ... and target paths of ~216 characters: symlinks to the null_blk disks
tdir=/tmp/$(printf 't%0199d' 0)

# check_get PAIRS LAST_TARGET: the dump and the doit list every pair
check_get() {
	local pipes pairs
	rp-nlctl get > /tmp/dump 2> /tmp/dump.err ||
		vm_fail "PIPE_GET dump failed: $(cat /tmp/dump.err)"
	pipes=$(grep -c '^pipe ' /tmp/dump)
	pairs=$(grep -c '^pair ' /tmp/dump)
	vm_log "dump: $pipes pipes, $pairs pairs, $(wc -c < /tmp/dump) bytes of output"
	[ "$pipes" = 2 ] || vm_fail "dump lists $pipes pipes, not 2"
	[ "$pairs" = $(($1 + 1)) ] || vm_fail "dump lists $pairs pairs, not $(($1 + 1))"
	grep "^pair pipe=$BIG " /tmp/dump | sed -n 's/.* source=\([^ ]*\) .*/\1/p' > /tmp/order
	seq 0 $(($1 - 1)) | sed "s|^|replipipe_0/v${pad}_|" | cmp -s - /tmp/order ||
		vm_fail "the dump lists the pairs of $BIG out of order, or not all of them"
	grep -q "^pair .*target=$2 " /tmp/dump ||
		vm_fail "the last pair of the large pipe is missing from the dump"
	rp-nlctl get $BIG > /tmp/get 2> /tmp/get.err ||
		vm_fail "PIPE_GET $BIG failed: $(cat /tmp/get.err)"
	[ "$(grep -c '^pair ' /tmp/get)" = "$1" ] ||
		vm_fail "PIPE_GET $BIG lists $(grep -c '^pair ' /tmp/get) pairs, not $1"
}

vm_modprobe null_blk nr_devices=$((2 * N + 2)) gb=1 memory_backed=0
vm_wait_path /dev/nullb$((2 * N + 1))
mkdir -p "$tdir"
vm_log "== $N backstores, $N targets"
args=
args1=
i=0
while [ $i -lt $N ]; do
	vm_backstore replipipe replipipe_0 "v${pad}_$i" /dev/nullb$i > /dev/null
	ln -s /dev/nullb$((N + i)) "$tdir/target_$i"
	args="$args --pair replipipe_0/v${pad}_$i=$tdir/target_$i,clean"
	[ $i -ge $N1 ] || args1="$args1 --pair replipipe_0/v${pad}_$i=/dev/nullb$((N + i)),clean"
	i=$((i + 1))
done
vm_backstore replipipe replipipe_0 small /dev/nullb$((2 * N)) > /dev/null
rp-nlctl set-pipe --id $SMALL --region-kib 65536 \
	--pair replipipe_0/small=/dev/nullb$((2 * N + 1)),clean ||
	vm_fail "set-pipe of the small pipe refused"

vm_log "== phase 1: $N1 pairs, short target paths"
# shellcheck disable=SC2086
rp-nlctl set-pipe --id $BIG --name "$pad" --region-kib 65536 $args1 ||
	vm_fail "set-pipe of $N1 pairs refused"
check_get $N1 /dev/nullb$((N + N1 - 1))
rp-nlctl del-pipe $BIG || vm_fail "del-pipe $BIG"

vm_log "== phase 2: $N pairs, long target paths"
# shellcheck disable=SC2086
rp-nlctl set-pipe --id $BIG --name "$pad" --region-kib 65536 $args ||
	vm_fail "set-pipe of $N pairs refused"
check_get $N "$tdir/target_$((N - 1))"

vm_log "== teardown"
rp-nlctl del-pipe $BIG || vm_fail "del-pipe $BIG"
rp-nlctl del-pipe $SMALL || vm_fail "del-pipe $SMALL"
i=0
while [ $i -lt $N ]; do
	rmdir "$VM_CFS/core/replipipe_0/v${pad}_$i" || vm_fail "rmdir backstore $i"
	i=$((i + 1))
done
vm_backstore_delete replipipe_0/small
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "genl-many-pairs done"
