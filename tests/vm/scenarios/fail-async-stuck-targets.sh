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
# Then writes released after a wait (decision 104): backstore ra, with a
# write-intent record on a suspended dm device, mirrors synchronously to a
# target on the failed path. 300 writes to it, all from CPU 0, wait for
# their record mark; the record's device resumed, its record write
# releases them, and each submission sleeps waiting for the path's tag.
# Then a write from CPU 0 to backstore rb (healthy devices, a record of its
# own) must end within 10 s. (On rp_wq, the module's one queue for short
# work, the released writes took all 256 active items of CPU 0 and rb's
# record write waited behind them until the path came back.)
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
# The released writes' step: ra (source, record, a target on the failed
# path) and rb (source, record, target, all on ram1).
spec="$spec;srcA,,,rw,0 $MIB_SECTORS linear /dev/ram0 $(((N + 1) * MIB_SECTORS))"
spec="$spec;awi,,,rw,0 $MIB_SECTORS linear /dev/ram1 $((3 * MIB_SECTORS))"
spec="$spec;tgtA,,,rw,0 $MIB_SECTORS linear $mp $((N * MIB_SECTORS))"
spec="$spec;srcB,,,rw,0 $MIB_SECTORS linear /dev/ram1 $((4 * MIB_SECTORS))"
spec="$spec;bwi,,,rw,0 $MIB_SECTORS linear /dev/ram1 $((2 * MIB_SECTORS))"
spec="$spec;tgtB,,,rw,0 $MIB_SECTORS linear /dev/ram1 $MIB_SECTORS"
DM_DISABLE_UDEV=1 dmsetup --noudevsync create --concise "${spec#;}" ||
	vm_fail "dmsetup create --concise of $((2 * N + 8)) slices"
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
# within_10s PID WHAT: PID's exit status; fails if it still runs after 10 s
# (WHAT waited for the stuck ones).
within_10s() {
	local i=0 rc=0
	while kill -0 "$1" 2> /dev/null; do
		[ $i -lt 100 ] || vm_fail "$2 waited 10 s behind the stuck ones"
		sleep 0.1
		i=$((i + 1))
	done
	wait "$1" || rc=$?
	return $rc
}
# all_still_waiting WHAT PID...: every PID (one of WHAT) still runs.
all_still_waiting() {
	local what=$1 pid
	shift
	for pid; do
		kill -0 "$pid" 2> /dev/null || vm_fail "$what did not wait"
	done
}
# all_ended_well WHAT PID...: every PID (one of WHAT) exits 0.
all_ended_well() {
	local what=$1 pid rc
	shift
	for pid; do
		rc=0
		wait "$pid" || rc=$?
		[ $rc = 0 ] || vm_fail "$what failed (rc=$rc) once its path was back"
	done
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
all_still_waiting "a WRITE SAME to a stuck pair, its target's path failed," "$@"
vm_log "$# WRITE SAMEs waiting for their targets; one to the healthy LUN"
t0=$(vm_now_ms)
sg_write_same --ff --lba=16 --num=8 "$hot_lun" > /tmp/ws.hot 2>&1 &
rc=0
within_10s $! "the healthy LUN's WRITE SAME" || rc=$?
vm_log "the healthy LUN's WRITE SAME ended after $(($(vm_now_ms) - t0)) ms, rc=$rc"
[ $rc = 0 ] || vm_fail "the healthy LUN's WRITE SAME failed: $(cat /tmp/ws.hot)"
vm_cmp_devs "$(dm src_$N)" "$(dm hot)"
dmsetup message rpmp 0 reinstate_path "$path" || vm_fail "reinstate_path $path"
all_ended_well "a WRITE SAME to a stuck pair" "$@"
rp-nlctl get > /tmp/all || vm_fail "rp-nlctl get"
[ "$(grep -c '^pair .* state=InSync regions=[0-9]* dirty=0 ' /tmp/all)" = $((N + 1)) ] ||
	vm_fail "not every pair is InSync and clean: $(grep '^pair ' /tmp/all | grep -v ' state=InSync regions=[0-9]* dirty=0 ' | head -3)"

vm_log "== released writes: 300 to ra wait for its record, then for the failed path"
vm_backstore replipipe replipipe_0 ra "$(dm srcA)" "$(dm awi)" > /dev/null
vm_backstore replipipe replipipe_0 rb "$(dm srcB)" "$(dm bwi)" > /dev/null
# A tcm_loop target (a SCSI host) of their own: the first one's 259 LUNs
# share its 1024 request tags, about 4 each once all have been busy.
tpg2=$VM_CFS/loopback/naa.500140500000000b/tpgt_1
mkdir -p "$tpg2/lun/lun_0" "$tpg2/lun/lun_1" || vm_fail "mkdir $tpg2's LUNs"
echo naa.500140f00000000b > "$tpg2/nexus" || vm_fail "nexus of $tpg2"
ln -s "$VM_CFS/core/replipipe_0/ra" "$tpg2/lun/lun_0/ra" || vm_fail "link ra as a LUN"
ln -s "$VM_CFS/core/replipipe_0/rb" "$tpg2/lun/lun_1/rb" || vm_fail "link rb as a LUN"
addr2=$(cat "$tpg2/address")
# Each record written clean now: a write then waits for its mark.
rp-nlctl set-pipe --id resubA --mode sync --pair replipipe_0/ra="$(dm tgtA)",clean ||
	vm_fail "set-pipe resubA"
rp-nlctl set-pipe --id resubB --mode sync --pair replipipe_0/rb="$(dm tgtB)",clean ||
	vm_fail "set-pipe resubB"
lun_a=$(vm_scsi_disk "$addr2:0")
lun_b=$(vm_scsi_disk "$addr2:1")
for l in $lun_a $lun_b; do
	# rb's LUN, added after ra's on this nexus, left ra a unit attention
	# (REPORTED LUNS DATA HAS CHANGED). Taken by a write below, sd's retry
	# would hold every other command to ra back (device_blocked) while
	# that write waits for its mark: a read takes it now.
	dd if="$l" of=/dev/null bs=4k count=1 iflag=direct 2> /dev/null ||
		vm_fail "cannot read $l"
	# no scheduler: every write a request at once, none held back
	echo none > /sys/block/${l#/dev/}/queue/scheduler ||
		vm_fail "cannot take the scheduler off $l"
done
dmsetup message rpmp 0 fail_path "$path" || vm_fail "fail_path $path"
DM_DISABLE_UDEV=1 dmsetup --noudevsync suspend awi || vm_fail "dmsetup suspend awi"
pids=
i=0
while [ $i -lt 300 ]; do
	taskset -c 0 dd if=/dev/urandom of="$lun_a" bs=512 count=1 seek=$i \
		oflag=direct 2> /dev/null &
	pids="$pids $!"
	i=$((i + 1))
done
sleep 2
set -- $pids
all_still_waiting "a write to ra, its record's device suspended," "$@"
# All 300 in the module, waiting for their mark (none submitted later, from
# LIO's own worker, which would count among the sleepers below).
i=0
until [ "$(awk '{ print $2 }' /sys/block/${lun_a#/dev/}/inflight)" = 300 ]; do
	[ $i -lt 50 ] || vm_fail "$(cat /sys/block/${lun_a#/dev/}/inflight) (reads, writes) in flight on ra, not 300 writes"
	sleep 0.2
	i=$((i + 1))
done
DM_DISABLE_UDEV=1 dmsetup --noudevsync resume awi || vm_fail "dmsetup resume awi"
# released_asleep: the kernel workers asleep for a request tag in the
# module's submission (a tail call may take the work function's own frame);
# two greps for all the tasks: a fork costs tens of ms under TCG
released_asleep() {
	grep -l blk_mq_get_tag /proc/[0-9]*/stack 2> /dev/null |
		xargs -r grep -l '\[replipipe\]' 2> /dev/null | wc -l
}
i=0
until [ "$(released_asleep)" -ge 256 ]; do
	[ $i -lt 50 ] || {
		grep -l '\[replipipe\]' /proc/[0-9]*/stack 2> /dev/null | wc -l
		grep -l '\[replipipe\]' /proc/[0-9]*/stack 2> /dev/null | head -4 | xargs cat
		grep -l 'blk_mq_get_tag' /proc/[0-9]*/stack 2> /dev/null | wc -l
		grep -l 'blk_mq_get_tag' /proc/[0-9]*/stack 2> /dev/null | head -2 | xargs cat
		grep -l 'sd\|scsi\|blk' /proc/[0-9]*/stack 2> /dev/null | head -2 | xargs cat
		cat /sys/block/${lun_a#/dev/}/device/queue_depth /sys/block/${lun_a#/dev/}/queue/nr_requests
		cat /sys/block/${lun_a#/dev/}/inflight
		vm_fail "only $(released_asleep) released writes to ra sleep after 10 s"
	}
	sleep 0.2
	i=$((i + 1))
done
vm_log "$(released_asleep) released writes to ra asleep in their submission; one write to rb"
t0=$(vm_now_ms)
taskset -c 0 dd if=/dev/urandom of="$lun_b" bs=4k count=1 oflag=direct 2> /dev/null &
rc=0
within_10s $! "the write to rb" || rc=$?
vm_log "the write to rb ended after $(($(vm_now_ms) - t0)) ms, rc=$rc"
[ $rc = 0 ] || vm_fail "the write to rb failed"
vm_cmp_devs "$(dm srcB)" "$(dm tgtB)"
dmsetup message rpmp 0 reinstate_path "$path" || vm_fail "reinstate_path $path"
all_ended_well "a write to ra" "$@"
# Its target is on nullb0 (no memory behind it): not compared.
pair=$(rp-nlctl get resubA | grep "^pair ") || vm_fail "no pair line for resubA"
[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" dirty)" = 0 ] &&
	[ "$(vm_field "$pair" writes)" = 300 ] ||
	vm_fail "ra's pair did not mirror its 300 writes: $pair"
for p in resubA resubB; do
	rp-nlctl del-pipe $p || vm_fail "del-pipe $p"
done

vm_log "== teardown"
for p in stuck stuck2 healthy; do
	rp-nlctl del-pipe $p || vm_fail "del-pipe $p"
done
vm_no_live_objects
vm_log "fail-async-stuck-targets done"
