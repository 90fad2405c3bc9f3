#!/bin/sh
# Asynchronous pairs whose targets hold their requests do not hold up the
# copies of a pair whose target is fine (docs/decisions.md 86).
# 258 asynchronous pairs have targets behind one dm-multipath device with a
# single request tag, no path and queue_if_no_path (a dead iSCSI portal
# under multipath): one write to each, and the submission of every copy but
# the first sleeps waiting for that tag. Then one write to a pair with a
# healthy target: its copy must be on the target within 10 s. (With one
# copy queue for all pairs, as the module had, its 256 workers were all
# asleep on the dead target and the healthy pair's copy waited for them.)
# Then the path comes back: every copy drains, every pair InSync.
# Then the same with WRITE SAME, which waits for both legs on a work item:
# the stuck pairs made synchronous, the path failed again, one WRITE SAME
# to each of their LUNs, then one (of 0xff bytes) to the healthy LUN,
# synchronous too, must end within 10 s, on both its legs (with one WRITE
# SAME queue for all backstores, it waited behind the stuck ones).
# The path back, every WRITE SAME ends GOOD.
# Not named kmod-*: the debug tier has no dm-multipath, and this one spends
# its time making 259 backstores and LUNs, not in the module.
# vm-timeout: 500
# vm-cost: 90
# vm-mem: 1024
# vm-bins: dmsetup sg_write_same

N=258
MIB_SECTORS=2048

grep -q "/dm-round-robin\.ko" /lib/modules/$(uname -r)/modules.dep ||
	vm_fail "no dm-multipath in kernel $(uname -r)"
vm_modprobe dm_mod
vm_modprobe dm_round_robin
vm_modprobe null_blk nr_devices=1 gb=1 memory_backed=0
vm_wait_path /dev/nullb0
# Sources: 1 MiB slices of ram0; the healthy pair's target: ram1.
vm_brd 2 $((N + 2))

vm_log "== the stuck targets: dm-multipath with one request tag over nullb0"
DM_PARAM=/sys/module/dm_mod/parameters/dm_mq_queue_depth
depth=$(cat $DM_PARAM)
echo 1 > $DM_PARAM
path=$(cat /sys/block/nullb0/dev)
mp=$(vm_dm_create rpmp "0 $(blockdev --getsz /dev/nullb0) multipath 1 queue_if_no_path 0 1 1 round-robin 0 1 1 $path 1")
echo "$depth" > $DM_PARAM
echo none > /sys/block/${mp#/dev/}/queue/scheduler ||
	vm_fail "cannot take the scheduler off $mp"
[ "$(cat /sys/block/${mp#/dev/}/queue/nr_requests)" = 1 ] ||
	vm_fail "$mp has $(cat /sys/block/${mp#/dev/}/queue/nr_requests) request tags, not 1"

# One dmsetup call for all slices (dmsetup --concise): src_I on ram0, tgt_I
# on the multipath device; the healthy pair: src_N -> hot (on ram1).
spec=
i=0
while [ $i -le $N ]; do
	spec="$spec;src_$i,,,rw,0 $MIB_SECTORS linear /dev/ram0 $((i * MIB_SECTORS))"
	[ $i -lt $N ] &&
		spec="$spec;tgt_$i,,,rw,0 $MIB_SECTORS linear $mp $((i * MIB_SECTORS))"
	i=$((i + 1))
done
spec="$spec;hot,,,rw,0 $MIB_SECTORS linear /dev/ram1 0"
DM_DISABLE_UDEV=1 dmsetup --noudevsync create --concise "${spec#;}" ||
	vm_fail "dmsetup create --concise of $((2 * N + 2)) slices"
# /dev/dm-N of each name (no udev, no /dev/mapper links)
for d in /sys/block/dm-*; do
	echo "$(cat "$d/dm/name") /dev/${d##*/}"
done > /tmp/dm-names
dm() { sed -n "s|^$1 ||p" /tmp/dm-names; }

vm_log "== $((N + 1)) backstores, each a LUN of one tcm_loop target"
vm_modprobe sd_mod
vm_modprobe tcm_loop
tpg=$VM_CFS/loopback/naa.500140500000000a/tpgt_1
mkdir -p "$tpg" || vm_fail "mkdir $tpg"
echo naa.500140f00000000a > "$tpg/nexus" || vm_fail "nexus of $tpg"
i=0
while [ $i -le $N ]; do
	vm_backstore replipipe replipipe_0 s$i "$(dm src_$i)" > /dev/null
	mkdir "$tpg/lun/lun_$i" || vm_fail "mkdir lun_$i"
	ln -s "$VM_CFS/core/replipipe_0/s$i" "$tpg/lun/lun_$i/s$i" ||
		vm_fail "link s$i as LUN $i"
	i=$((i + 1))
done
addr=$(cat "$tpg/address")

vm_log "== three asynchronous pipes: 256 + 2 pairs with stuck targets, 1 healthy"
args=
i=0
while [ $i -lt 256 ]; do
	args="$args --pair replipipe_0/s$i=$(dm tgt_$i),clean"
	i=$((i + 1))
done
# set_pipes MODE: the three pipes made, or their mode changed
set_pipes() {
	# shellcheck disable=SC2086
	rp-nlctl set-pipe --id stuck --mode "$1" $args || vm_fail "set-pipe stuck $1"
	rp-nlctl set-pipe --id stuck2 --mode "$1" \
		--pair replipipe_0/s256="$(dm tgt_256)",clean \
		--pair replipipe_0/s257="$(dm tgt_257)",clean ||
		vm_fail "set-pipe stuck2 $1"
	rp-nlctl set-pipe --id healthy --mode "$1" \
		--pair replipipe_0/s$N="$(dm hot)",clean || vm_fail "set-pipe healthy $1"
}
set_pipes async

# lag_total PIPE: the sum of the lags of PIPE's pairs
lag_total() {
	rp-nlctl get "$1" | sed -n 's/^pair .* lag=\([0-9]*\) .*/\1/p' |
		awk '{ s += $1 } END { print s + 0 }'
}
# stuck_lag: the lag of the stuck pairs, both pipes
stuck_lag() {
	echo $(($(lag_total stuck) + $(lag_total stuck2)))
}

vm_log "== the path fails; one 4 KiB write to each of the $N stuck pairs"
dmsetup message rpmp 0 fail_path "$path" || vm_fail "fail_path $path"
i=0
while [ $i -lt $N ]; do
	lun=$(vm_scsi_disk "$addr:$i")
	dd if=/dev/urandom of="$lun" bs=4k count=1 oflag=direct 2> /dev/null ||
		vm_fail "the write to LUN $i ($lun) failed"
	i=$((i + 1))
done
stuck=$(stuck_lag)
vm_log "copies not on their targets: $stuck bytes"
[ "$stuck" = $((N * 4096)) ] ||
	vm_fail "the stuck pairs' lag is $stuck bytes, not $((N * 4096)): some copies were not held"

vm_log "== one write to the healthy pair: its copy must not wait for the stuck ones"
hot_lun=$(vm_scsi_disk "$addr:$N")
t0=$(vm_now_ms)
dd if=/dev/urandom of="$hot_lun" bs=4k count=1 seek=5 oflag=direct 2> /dev/null ||
	vm_fail "the write to the healthy pair failed"
pair=$(vm_lag_drained healthy 10)
vm_log "healthy pair's copy on its target after $(($(vm_now_ms) - t0)) ms: $pair"
[ "$(vm_field "$pair" writes)" = 1 ] || vm_fail "the healthy pair mirrored not 1 write: $pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "the healthy pair is not InSync: $pair"
vm_cmp_devs "$(dm src_$N)" "$(dm hot)"
stuck=$(stuck_lag)
[ "$stuck" = $((N * 4096)) ] ||
	vm_fail "the stuck pairs' lag is $stuck bytes, not $((N * 4096)), before the path is back"

vm_log "== the path comes back: every copy drains"
dmsetup message rpmp 0 reinstate_path "$path" || vm_fail "reinstate_path $path"
i=0
until [ "$(stuck_lag)" = 0 ]; do
	[ $i -lt 600 ] || vm_fail "the stuck pairs' copies did not drain within 60 s of the path's return"
	sleep 0.1
	i=$((i + 1))
done
rp-nlctl get > /tmp/all || vm_fail "rp-nlctl get"
[ "$(grep -c '^pair .* state=InSync ' /tmp/all)" = $((N + 1)) ] ||
	vm_fail "not every pair is InSync: $(grep '^pair ' /tmp/all | grep -v ' state=InSync ' | head -3)"
[ "$(grep -c '^pair .* writes=1 ' /tmp/all)" = $((N + 1)) ] ||
	vm_fail "not every pair mirrored its one write: $(grep '^pair ' /tmp/all | grep -v ' writes=1 ' | head -3)"

vm_log "== WRITE SAME: the stuck pairs synchronous, the path failed again"
# The healthy pipe synchronous too: its WRITE SAME then reaches its target
# within the command (an asynchronous pair marks the regions dirty instead).
set_pipes sync
dmsetup message rpmp 0 fail_path "$path" || vm_fail "fail_path $path"
pids=
i=0
while [ $i -lt $N ]; do
	lun=$(vm_scsi_disk "$addr:$i")
	sg_write_same --lba=16 --num=8 "$lun" > /tmp/ws.$i 2>&1 &
	pids="$pids $!"
	i=$((i + 1))
done
sleep 3
set -- $pids
for pid; do
	kill -0 "$pid" 2> /dev/null || vm_fail "a WRITE SAME to a stuck pair ended with its target's path failed"
done
vm_log "$# WRITE SAMEs waiting for their targets; one to the healthy LUN"
t0=$(vm_now_ms)
sg_write_same --ff --lba=16 --num=8 "$hot_lun" > /tmp/ws.hot 2>&1 &
hot=$!
i=0
while kill -0 $hot 2> /dev/null; do
	[ $i -lt 100 ] || vm_fail "the healthy LUN's WRITE SAME waited 10 s for the stuck ones"
	sleep 0.1
	i=$((i + 1))
done
rc=0
wait $hot || rc=$?
vm_log "the healthy LUN's WRITE SAME ended after $(($(vm_now_ms) - t0)) ms, rc=$rc"
[ $rc = 0 ] || vm_fail "the healthy LUN's WRITE SAME failed: $(cat /tmp/ws.hot)"
vm_cmp_devs "$(dm src_$N)" "$(dm hot)"
dmsetup message rpmp 0 reinstate_path "$path" || vm_fail "reinstate_path $path"
for pid; do
	rc=0
	wait "$pid" || rc=$?
	[ $rc = 0 ] || vm_fail "a WRITE SAME to a stuck pair failed (rc=$rc) once its path was back"
done
rp-nlctl get > /tmp/all || vm_fail "rp-nlctl get"
[ "$(grep -c '^pair .* state=InSync regions=[0-9]* dirty=0 ' /tmp/all)" = $((N + 1)) ] ||
	vm_fail "not every pair is InSync and clean: $(grep '^pair ' /tmp/all | grep -v ' state=InSync regions=[0-9]* dirty=0 ' | head -3)"

vm_log "== teardown"
for p in stuck stuck2 healthy; do
	rp-nlctl del-pipe $p || vm_fail "del-pipe $p"
done
vm_no_live_objects
vm_log "fail-async-stuck-targets done"
