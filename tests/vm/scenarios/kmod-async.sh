#!/bin/sh
# Asynchronous mirroring with MaxLagKiB 1024: 64 MiB of random writes from 4
# writers through the LUN; after the writers stop the lag drains to 0, the
# legs are byte-identical and every acknowledged write is on both; the lag
# never exceeded the bound.
# Then copies held by a target that queues them (a suspended dm device)
# while writes rewrite and partly overlap each other: once resumed, the
# target ends as the primary (each copy waited for the earlier ones it
# overlaps).
# Then the lag wait's bound: a target that holds writes 50 s, MaxLagKiB 64,
# a primary whose writes take 8 s; one write fills the lag; a second writer
# finds no room for 30 s and degrades the pair, and a third writer, waiting
# since 10 s later, must be released by the degrade: it ends with the
# second, not 8 s later (woken by the second's completion) nor after its
# own 30 s. Meanwhile the LUN answers: a read submitted on either CPU ends
# at once, not after the degrade (the waiting writes are parked off LIO's
# per-CPU submission work, which would otherwise hold every command queued
# behind them; on iSCSI, the connection's receiver).
# Then a target with one request tag, each request ended 3 s later: the
# writes are acknowledged at once (copies are sent off the submission), and
# the copies drain behind them. Switched to synchronous with copies still
# on their way, the pair's SYNCHRONIZE CACHE ends only once they have, or
# after 30 s with the pair degraded.
# Then a write waiting for lag room when a PIPE_SET gives its source a new
# pair, its target assumed clean: the write reaches the new target.
# vm-timeout: 600
# vm-cost: 120
# vm-debug-cost: 175
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-async
SRC=replipipe_0/vol1
MAX_LAG_KIB=1024
LIVE=/sys/module/replipipe/parameters/live_objects

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }

vm_brd 2 128
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --mode async --max-lag-kib $MAX_LAG_KIB \
	--region-kib 64 --pair $SRC=/dev/ram1,clean || vm_fail "set-pipe refused"
rp-nlctl get $PIPE
lun=$(vm_tcm_loop_export $SRC)

vm_log "== 64 MiB of random writes, 4 writers; sampling the lag meanwhile"
rp-writer --dev "$lun" --log /tmp/w --threads 4 --bytes 64M --seed 51 > /tmp/writer.out 2>&1 &
writers=$!
# Every sample must read the lag: one skipped would leave the bound
# unchecked. The writers run 1.2 s or more, a sample takes about 0.2 s
# (6 seen in 1.3 s): 3 samples at least, and a lag above 0 among them
# (the target was behind), or nothing was measured.
max_lag=0
samples=0
while kill -0 $writers 2> /dev/null; do
	pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get while writing"
	lag=$(vm_field "$pair" lag)
	[ -n "$lag" ] || vm_fail "no lag in the pair line: $pair"
	samples=$((samples + 1))
	[ "$lag" -le "$max_lag" ] || max_lag=$lag
	sleep 0.1
done
rc=0
wait $writers || rc=$?
cat /tmp/writer.out
[ $rc -eq 0 ] || vm_fail "writes failed (rc=$rc)"
vm_log "largest lag sampled: $max_lag bytes over $samples samples"
[ $samples -ge 3 ] || vm_fail "only $samples lag samples while the writers ran"
[ "$max_lag" -gt 0 ] || vm_fail "the lag was never seen above 0: nothing was measured"
[ "$max_lag" -le $((MAX_LAG_KIB * 1024)) ] || vm_fail "lag $max_lag above MaxLagKiB $MAX_LAG_KIB"

vm_log "== waiting for the lag to drain"
pair=$(vm_lag_drained $PIPE)
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "pair not InSync: $pair"
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "dirty regions: $pair"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"
summary=$(grep '^writer: acked' /tmp/writer.out) || vm_fail "no writer summary"
bytes=$(vm_field "$summary" bytes)
# both sides empty would compare equal
[ -n "$bytes" ] || vm_fail "no bytes in the writer summary: $summary"
[ "$(vm_field "$pair" bytes)" = "$bytes" ] ||
	vm_fail "bytes mirrored $(vm_field "$pair" bytes) != bytes acknowledged $bytes"

rp-verify --dev "$lun" /tmp/w.* || vm_fail "data through the LUN"
rp-verify --dev /dev/ram0 /tmp/w.* || vm_fail "data on the primary"
rp-verify --dev /dev/ram1 /tmp/w.* || vm_fail "data on the replica"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "the legs differ"

vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC

vm_log "== overlapping copies held by the target reach it in order"
# The target (dm-linear, suspended) queues every copy while 4 writers
# rewrite 64 KiB each with writes of 4 to 32 KiB: blocks rewritten, runs of
# copies with one start, partial overlaps, each copy held up by earlier
# ones. Resumed, the target must end as the primary: every block at its
# last write.
export DM_DISABLE_UDEV=1
vm_modprobe dm_mod
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rpord "0 $sectors linear /dev/ram1 0")
vm_backstore replipipe replipipe_0 vol3 /dev/ram0 > /dev/null
# the legs are identical since the check above
rp-nlctl set-pipe --id $PIPE-ord --mode async --max-lag-kib 65536 \
	--region-kib 64 --pair replipipe_0/vol3=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export replipipe_0/vol3)
ord_line() { rp-nlctl get $PIPE-ord | grep "^pair "; }
dmsetup --noudevsync suspend --nolockfs rpord || vm_fail "dmsetup suspend"
rp-writer --dev "$lun" --log /tmp/o --threads 4 --offset 1M --span 256K \
	--min-size 4K --max-size 32K --count 2000 --seed 53 > /tmp/writer.out 2>&1 ||
	vm_fail "overlapping writes: $(cat /tmp/writer.out)"
summary=$(grep '^writer: acked' /tmp/writer.out) || vm_fail "no writer summary: $(cat /tmp/writer.out)"
bytes=$(vm_field "$summary" bytes)
# both sides empty would compare equal
[ -n "$bytes" ] || vm_fail "no bytes in the writer summary: $summary"
pair=$(ord_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" lag)" = "$bytes" ] ||
	vm_fail "setup: not every copy held by the suspended target ($bytes bytes written): $pair"
t0=$(vm_now_ms)
dmsetup --noudevsync resume rpord || vm_fail "dmsetup resume"
pair=$(vm_lag_drained $PIPE-ord 60)
vm_log "$bytes bytes of copies drained in $(($(vm_now_ms) - t0)) ms"
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "pair not InSync: $pair"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"
rp-verify --dev $tgt /tmp/o.* || vm_fail "a copy overtook an earlier overlapping one"
rp-verify --cmp /dev/ram0 $tgt || vm_fail "the legs differ"
vm_tcm_loop_unexport replipipe_0/vol3
rp-nlctl del-pipe $PIPE-ord || vm_fail "del-pipe"
vm_backstore_delete replipipe_0/vol3
dmsetup --noudevsync remove rpord || vm_fail "dmsetup remove"

vm_log "== lag wait: a writer that degrades the pair releases the others"
vm_modprobe dm_delay
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rplag "0 $sectors delay /dev/ram1 0 0 /dev/ram1 0 50000")
pri=$(vm_dm_create rplagp "0 $sectors delay /dev/ram0 0 0 /dev/ram0 0 8000")
vm_backstore replipipe replipipe_0 vol2 $pri > /dev/null
rp-nlctl set-pipe --id $PIPE-lag --mode async --max-lag-kib 64 \
	--region-kib 64 --pair replipipe_0/vol2=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export replipipe_0/vol2)
# the writers wait up to 30 s in the backstore: no SCSI time-out meanwhile
echo 120 > /sys/block/${lun#/dev/}/device/timeout
now10() { awk '{ printf "%d\n", $1 * 10 }' /proc/uptime; }
dd if=/dev/urandom of=$lun bs=64k count=1 oflag=direct 2> /dev/null ||
	vm_fail "the first write failed"
lag_line() { rp-nlctl get $PIPE-lag | grep "^pair "; }
[ "$(vm_field "$(lag_line)" lag)" = 65536 ] || vm_fail "setup: the lag is not full: $(lag_line)"
t0=$(now10)
(taskset -c 0 dd if=/dev/urandom of=$lun bs=4k count=1 seek=64 oflag=direct 2> /dev/null
	echo "$? $(now10)" > /tmp/w2.rc) &
sleep 10
(taskset -c 1 dd if=/dev/urandom of=$lun bs=4k count=1 seek=128 oflag=direct 2> /dev/null
	echo "$? $(now10)" > /tmp/w3.rc) &
sleep 2
for cpu in 0 1; do
	r0=$(now10)
	taskset -c $cpu rp-verify --dump $lun --offset $((512 * 4096)) --length 4096 > /dev/null 2>&1 ||
		vm_fail "a read on CPU $cpu failed while writes wait for lag room"
	r=$(($(now10) - r0))
	vm_log "a read on CPU $cpu, writes waiting for lag room: $((r * 100)) ms"
	[ $r -le 30 ] || vm_fail "a read on CPU $cpu took $((r * 100)) ms: writes waiting for lag room held the LUN's submission"
done
[ ! -s /tmp/w2.rc ] || vm_fail "setup: writer 2 ended before the reads: $(cat /tmp/w2.rc)"
i=0
until [ -s /tmp/w2.rc ] && [ -s /tmp/w3.rc ]; do
	[ $i -lt 600 ] || vm_fail "the writers did not end within 60 s"
	sleep 0.1
	i=$((i + 1))
done
w2=$(($(cut -d' ' -f2 /tmp/w2.rc) - t0))
w3=$(($(cut -d' ' -f2 /tmp/w3.rc) - t0))
vm_log "writer 2 (from +0 s) ended rc=$(cut -d' ' -f1 /tmp/w2.rc) at +$((w2 * 100)) ms, writer 3 (from +10 s) rc=$(cut -d' ' -f1 /tmp/w3.rc) at +$((w3 * 100)) ms"
[ "$(cut -d' ' -f1 /tmp/w2.rc)" = 0 ] && [ "$(cut -d' ' -f1 /tmp/w3.rc)" = 0 ] ||
	vm_fail "a write failed"
pair=$(lag_line)
echo "$pair"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded after the lag wait: $pair"
[ $w2 -ge 280 ] || vm_fail "setup: writer 2 got room before the 30 s bound"
[ $w3 -le $((w2 + 40)) ] ||
	vm_fail "writer 3 ended at +$((w3 * 100)) ms, not with writer 2 (+$((w2 * 100)) ms): the degrade did not release it"
# the target's held writes go through when its table changes
vm_dm_load rplag "0 $sectors linear /dev/ram1 0"
vm_tcm_loop_unexport replipipe_0/vol2
rp-nlctl del-pipe $PIPE-lag || vm_fail "del-pipe"
vm_backstore_delete replipipe_0/vol2
dmsetup --noudevsync remove rplag || vm_fail "dmsetup remove"
dmsetup --noudevsync remove rplagp || vm_fail "dmsetup remove"

vm_log "== a target out of request tags does not hold the writer"
# null_blk with one request tag, each request ended by a timer 3 s later: a
# copy sent from the writer's own submission would sleep there for the tag,
# 3 s per write, with the lag far from MaxLagKiB (no lag wait, no degrade).
# Sent from the pair's work item, the writes are acknowledged at once and
# the copies drain behind them.
vm_modprobe null_blk nr_devices=0
NB=$VM_NULLB/rptag
mkdir $NB || vm_fail "mkdir $NB"
echo 128 > $NB/size
echo 2 > $NB/irqmode
echo 3000000000 > $NB/completion_nsec
echo 1 > $NB/submit_queues
echo 1 > $NB/hw_queue_depth
echo 1 > $NB/power || vm_fail "cannot power on rptag"
vm_wait_path /dev/rptag
# no I/O scheduler: its tags would queue a second request
echo none > /sys/block/rptag/queue/scheduler || vm_fail "setup: scheduler none on rptag"
[ "$(cat /sys/block/rptag/queue/nr_requests)" = 1 ] ||
	vm_fail "setup: rptag has $(cat /sys/block/rptag/queue/nr_requests) requests, not one"
# a primary with a volatile write cache: the LUN is write-back, so an
# fsync sends SYNCHRONIZE CACHE (below)
vm_nullb_cached rpsrc 128
vm_backstore replipipe replipipe_0 vol4 /dev/rpsrc > /dev/null
rp-nlctl set-pipe --id $PIPE-tag --mode async --max-lag-kib 65536 \
	--region-kib 64 --pair replipipe_0/vol4=/dev/rptag,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export replipipe_0/vol4)
t0=$(vm_now_ms)
dd if=/dev/urandom of=$lun bs=4k count=5 oflag=direct 2> /dev/null ||
	vm_fail "the writes to the pair with a slow target failed"
took=$(($(vm_now_ms) - t0))
pair=$(rp-nlctl get $PIPE-tag | grep "^pair ")
vm_log "5 writes of 4 KiB acknowledged in $took ms, target ending one request per 3 s: $pair"
[ $took -lt 6000 ] ||
	vm_fail "5 writes took $took ms: the writer waited for the target's tag (copies sent from its submission)"
pair=$(vm_lag_drained $PIPE-tag 60)
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "pair not InSync once the copies drained: $pair"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"

vm_log "== a SYNCHRONIZE CACHE after a switch to synchronous waits for the copies of before"
# Three writes acknowledged while asynchronous, their copies 3 s each on
# rptag; then the pipe is synchronous. A synchronous pair promises its
# target every write acknowledged before a SYNCHRONIZE CACHE, so the fsync
# must end with no copy left on its way. (rptag has no write cache: the
# block layer ends the target's flush at once, the fsync waits for the
# copies alone. Before, it ended at once with them still on their way.)
[ "$(cat /sys/block/${lun#/dev/}/queue/write_cache)" = "write back" ] ||
	vm_fail "setup: LUN $lun is not write-back: an fsync sends no SYNCHRONIZE CACHE"
dd if=/dev/urandom of=$lun bs=4k count=3 seek=16 oflag=direct 2> /dev/null ||
	vm_fail "the writes before the switch failed"
rp-nlctl set-pipe --id $PIPE-tag --mode sync --region-kib 64 \
	--pair replipipe_0/vol4=/dev/rptag || vm_fail "the switch to synchronous was refused"
pair=$(rp-nlctl get $PIPE-tag | grep "^pair ")
lag=$(vm_field "$pair" lag)
[ "${lag:-0}" -gt 0 ] || vm_fail "setup: the copies drained before the fsync: $pair"
t0=$(vm_now_ms)
dd if=/dev/null of=$lun conv=notrunc,fsync 2> /dev/null || vm_fail "the fsync failed"
took=$(($(vm_now_ms) - t0))
pair=$(rp-nlctl get $PIPE-tag | grep "^pair ")
vm_log "the fsync after the switch ended in $took ms, $lag bytes of copies before it: $pair"
[ "$(vm_field "$pair" lag)" = 0 ] ||
	vm_fail "the synchronous pair's SYNCHRONIZE CACHE ended with copies of writes acknowledged before it still on their way: $pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "pair not InSync: $pair"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"
vm_tcm_loop_unexport replipipe_0/vol4
rp-nlctl del-pipe $PIPE-tag || vm_fail "del-pipe"
vm_backstore_delete replipipe_0/vol4
echo 0 > $NB/power
rmdir $NB || vm_fail "rmdir $NB"

vm_log "== ... and for 30 s at most"
# The same with copies that take 40 s (dm-delay): like a write waiting for
# lag room, the flush waits RP_LAG_WAIT_SEC, then the pair degrades and the
# fsync ends on the primary's flush, before the initiator's error handling
# would abort it. (The copies still end; one that failed would leave its
# regions dirty.)
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rpslow "0 $sectors delay /dev/ram1 0 0 /dev/ram1 0 40000")
vm_backstore replipipe replipipe_0 vol6 /dev/rpsrc > /dev/null
rp-nlctl set-pipe --id $PIPE-slow --mode async --max-lag-kib 65536 \
	--region-kib 64 --pair replipipe_0/vol6=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export replipipe_0/vol6)
echo 120 > /sys/block/${lun#/dev/}/device/timeout
dd if=/dev/urandom of=$lun bs=4k count=2 seek=16 oflag=direct 2> /dev/null ||
	vm_fail "the writes before the switch failed"
rp-nlctl set-pipe --id $PIPE-slow --mode sync --region-kib 64 \
	--pair replipipe_0/vol6=$tgt || vm_fail "the switch to synchronous was refused"
t0=$(vm_now_ms)
dd if=/dev/null of=$lun conv=notrunc,fsync 2> /dev/null || vm_fail "the fsync failed"
took=$(($(vm_now_ms) - t0))
pair=$(rp-nlctl get $PIPE-slow | grep "^pair ")
vm_log "the fsync, copies of 40 s on their way, ended in $took ms: $pair"
[ $took -ge 29000 ] || vm_fail "the fsync ended after $took ms, before the copies or the 30 s bound"
[ $took -lt 38000 ] || vm_fail "the fsync waited $took ms for the copies: no 30 s bound"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded after the bound: $pair"
dmesg | grep -q "replipipe_0/vol6: target $tgt: copies from before the switch to synchronous still on their way after 30 s" ||
	vm_fail "no kernel message says why the pair degraded"
# the held copies go through when the table changes
vm_dm_load rpslow "0 $sectors linear /dev/ram1 0"
pair=$(vm_lag_drained $PIPE-slow 60)
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"
vm_tcm_loop_unexport replipipe_0/vol6
rp-nlctl del-pipe $PIPE-slow || vm_fail "del-pipe"
vm_backstore_delete replipipe_0/vol6
dmsetup --noudevsync remove rpslow || vm_fail "dmsetup remove"
echo 0 > $VM_NULLB/rpsrc/power
rmdir $VM_NULLB/rpsrc || vm_fail "rmdir rpsrc"

vm_log "== a write waiting for lag room in a replaced pair reaches the new pair"
# The old pair's target queues its copies (a suspended dm device) and its
# lag is full, so a second write waits for room. A PIPE_SET gives the
# source a new pair whose target is assumed clean: no resync will ever
# copy to it, so the waiting write, let go by the old pair's removal, must
# be mirrored by the new pair. Before, it went to the primary alone.
vm_nullb_cached rpnew 128
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rpold "0 $sectors linear /dev/ram1 0")
vm_backstore replipipe replipipe_0 vol5 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE-swap --mode async --max-lag-kib 64 \
	--region-kib 64 --pair replipipe_0/vol5=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export replipipe_0/vol5)
swap_line() { rp-nlctl get $PIPE-swap | grep "^pair "; }
dmsetup --noudevsync suspend --nolockfs rpold || vm_fail "dmsetup suspend"
dd if=/dev/urandom of=$lun bs=64k count=1 oflag=direct 2> /dev/null ||
	vm_fail "the write that fills the lag failed"
[ "$(vm_field "$(swap_line)" lag)" = 65536 ] || vm_fail "setup: the lag is not full: $(swap_line)"
W2_OFF=$((256 * 4096))
dd if=/dev/urandom of=/tmp/w2.data bs=4k count=1 2> /dev/null
dd if=/tmp/w2.data of=$lun bs=4k seek=256 oflag=direct 2> /dev/null &
w2=$!
# waiting: dd asleep in its O_DIRECT write, which has not reached the primary
i=0
until [ "$(cut -d' ' -f3 /proc/$w2/stat 2> /dev/null)" = D ]; do
	[ $i -lt 100 ] || vm_fail "setup: the second write is not waiting after 10 s"
	sleep 0.1
	i=$((i + 1))
done
sleep 0.5
rp-verify --dump /dev/ram0 --offset $W2_OFF --length 4096 > /tmp/w2.pri ||
	vm_fail "reading the primary"
! cmp -s /tmp/w2.data /tmp/w2.pri ||
	vm_fail "setup: the second write reached the primary: it did not wait for lag room"
rp-nlctl set-pipe --id $PIPE-swap --mode async --max-lag-kib 64 \
	--region-kib 64 --pair replipipe_0/vol5=/dev/rpnew,clean ||
	vm_fail "the new pair was refused"
rc=0
wait $w2 || rc=$?
[ $rc -eq 0 ] || vm_fail "the write that waited for lag room failed (rc=$rc)"
pair=$(vm_lag_drained $PIPE-swap 60)
echo "$pair"
rp-verify --dump /dev/rpnew --offset $W2_OFF --length 4096 > /tmp/w2.new ||
	vm_fail "reading the new target"
cmp -s /tmp/w2.data /tmp/w2.new ||
	vm_fail "the write that waited for lag room in the replaced pair is not on the new pair's target, which no resync copies to"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "new pair not InSync: $pair"
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "dirty regions on the new pair: $pair"
[ "$(vm_field "$pair" bytes)" = 4096 ] || vm_fail "the new pair did not mirror the write: $pair"
# the old pair's copy ends once its target resumes; then it is freed
dmsetup --noudevsync resume rpold || vm_fail "dmsetup resume"
vm_tcm_loop_unexport replipipe_0/vol5
rp-nlctl del-pipe $PIPE-swap || vm_fail "del-pipe"
vm_backstore_delete replipipe_0/vol5
i=0
until dmsetup --noudevsync remove rpold 2> /dev/null; do
	[ $i -lt 100 ] || vm_fail "the replaced pair still holds its target 10 s after its resume"
	sleep 0.1
	i=$((i + 1))
done
echo 0 > $VM_NULLB/rpnew/power
rmdir $VM_NULLB/rpnew || vm_fail "rmdir rpnew"

vm_log "== teardown"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-async done"
