#!/bin/sh
# PAIR_SET Syncing on a Degraded pair whose target queues I/O instead of
# failing it (a suspended dm device, as an iSCSI session in recovery or
# multipath queue_if_no_path would): the probe is bounded. The resume fails
# with ETIMEDOUT within the bound (5 s) and the pair stays Degraded; each
# request meanwhile is answered EINPROGRESS within a quarter second, and nbd
# (a module with a genl family) loads meanwhile, on kernels that have it; a
# PIPE_DEL right after completes at once although the probe's bio is still
# queued; rmmod is refused while it is; once the dm device resumes, the bio
# ends, the probe lets the device go (dmsetup remove works) and the module
# unloads. Before the bound, PAIR_SET hung as long as the target did and a
# PIPE_DEL waited behind it under rp_config_lock. Before that step, a pause
# sent while a resume probes a slow target (dm-delay, 1.5 s) stands: the
# resume fails, saying the state changed during its probe (the module
# before resumed the pair), also when the pair was Paused already; a resume
# whose client asks only once is applied when its probe ends.
# Then the same for the flushes a write-intent record makes of the target
# before it clears chunks (a clear pass, and the pair going away): with a
# clear pass waiting for its flush of a target that queues I/O, a PIPE_DEL
# of the InSync pair returns within its own flush's bound (5 s), another
# netlink command answering meanwhile (the flush is not under the lock),
# the chunks stay marked, deleting the backstore ends the clear pass's
# wait at once, and the abandoned flushes let the target and the module go
# once they end. Before, that PIPE_DEL hung with rp_config_lock held, and
# every netlink command behind it; later it held the lock for its 5 s.
# Three such pairs in one pipe: its PIPE_DEL bounds their flushes together
# (5 s, not 5 s each).
# Then a PIPE_DEL of a pair with a write in flight to a target that queues
# it: another netlink command answers meanwhile, the PIPE_DEL returns after
# its 5 s bound, the pipe is gone but its pair is kept (its source and
# target stay taken: a new pipe on the source is refused, EBUSY, saying why;
# rmmod is refused) until the write ends when the target resumes; then it
# is freed and the source pairs again. Before, that PIPE_DEL waited with
# rp_config_lock held for as long as the target held the write.
# Last, a PIPE_SET that replaces such a pair's target: the same, with the
# new pair published at once and fenced (a resync claim on it waits, then
# fails with ETIMEDOUT, until the old pair's write ended; one granted once
# it ended has its whole time-out left). Before, that PIPE_SET waited with
# rp_config_lock held.
# Last, a PIPE_SET whose write-intent record (its own, or another
# backstore's that names a target it takes) queues I/O fails within 8 s
# with ETIMEDOUT, saying which, and changes nothing: no record bound nor
# invalidated, in memory or on its device, also when another new pair's
# taking would invalidate a record that answers; one whose record fails
# reads fails at once (EIO). Once the devices work it succeeds. Before, it hung until they resumed, holding rp_config_lock.
# vm-timeout: 300
# vm-cost: 40
# vm-debug-cost: 85
# vm-mem: 768
# vm-bins: dmsetup

PIPE=kmod-probe
SRC=replipipe_0/vol1
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
# resume_once [--again]: one PAIR_SET Syncing of $SRC, not asked again
# (rp-nlctl --once); prints how the kernel answered (ok, EINPROGRESS,
# EBUSY, ...), and logs it with its message to stderr.
resume_once() {
	rp-nlctl pair-state $PIPE $SRC resume --once "$@" > /tmp/once.out 2> /tmp/once.err ||
		vm_fail "rp-nlctl pair-state resume --once $*"
	cat /tmp/once.out /tmp/once.err >&2
	sed -n 's/^resume result=//p' /tmp/once.out
}
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# dmesg_count TEXT: how many kernel messages contain TEXT (0 too)
dmesg_count() { dmesg | awk -v m="$1" 'index($0, m) { n++ } END { print n + 0 }'; }
# wait_pid PID SECONDS: 0 if PID ended within SECONDS (its status in $rc)
wait_pid() {
	local i=0
	while kill -0 "$1" 2> /dev/null; do
		[ $i -lt $(($2 * 10)) ] || return 1
		sleep 0.1
		i=$((i + 1))
	done
	rc=0
	wait "$1" || rc=$?
	return 0
}

# get_answers_while WHAT: another netlink command (PIPE_GET of all pipes)
# answers within 3 s while WHAT waits: WHAT does not hold rp_config_lock.
get_answers_while() {
	local t0
	t0=$(now_ms)
	rp-nlctl get > /tmp/list.out 2>&1 &
	wait_pid $! 3 || vm_fail "a netlink command waited behind $1"
	vm_log "rp-nlctl get (all pipes) answered in $(($(now_ms) - t0)) ms during $1 (rc=$rc)"
	[ "$rc" = 0 ] || vm_fail "rp-nlctl get failed: $(cat /tmp/list.out)"
}

# write_ends_on_resume LIVE WHAT: rptgt resumes, the write $w_pid that it
# held ends without error, and WHAT is freed: live_objects reads LIVE
# within 5 s.
write_ends_on_resume() {
	local i=0
	dmsetup --noudevsync resume rptgt || vm_fail "dmsetup resume"
	wait_pid $w_pid 10 || vm_fail "the write did not end after the target resumed"
	[ "$rc" = 0 ] || vm_fail "the write failed (rc=$rc)"
	until [ "$(cat $LIVE)" = "$1" ]; do
		[ $i -lt 50 ] || vm_fail "$2 was not freed after its write ended: $(cat $LIVE)"
		sleep 0.1
		i=$((i + 1))
	done
}

# del_pipe_within SECONDS MSG [DURING]: PIPE_DEL of $PIPE must succeed
# within SECONDS, or the scenario fails with MSG; with DURING, another
# netlink command answers 1 s into it (get_answers_while DURING).
del_pipe_within() {
	local t0 t1 del_pid
	t0=$(now_ms)
	rp-nlctl del-pipe $PIPE > /tmp/del.out 2>&1 &
	del_pid=$!
	if [ -n "${3:-}" ]; then
		sleep 1
		get_answers_while "$3"
	fi
	wait_pid $del_pid "$1" || vm_fail "$2"
	t1=$(now_ms)
	cat /tmp/del.out
	[ "$rc" -eq 0 ] || vm_fail "del-pipe failed (rc=$rc)"
	vm_log "PIPE_DEL took $((t1 - t0)) ms"
}

# held_until_resumed WHAT: WHAT, a bio abandoned to the suspended rptgt,
# still holds the target open (dm refuses to remove it) and the module
# (rmmod is refused, although no pipe nor backstore is left); once rptgt
# resumes the bio ends and both can go.
held_until_resumed() {
	if rmmod replipipe 2> /dev/null; then
		vm_fail "rmmod replipipe succeeded with $1 in flight"
	fi
	if dmsetup --noudevsync remove rptgt 2> /dev/null; then
		vm_fail "the dm device was removed under $1"
	fi
	vm_log "== the target resumes: $1 ends and lets go"
	dmsetup --noudevsync resume rptgt || vm_fail "dmsetup resume"
	i=0
	until dmsetup --noudevsync remove rptgt 2> /dev/null; do
		[ $i -lt 50 ] || vm_fail "$1 did not release the target after it ended"
		sleep 0.1
		i=$((i + 1))
	done
	i=0
	until rmmod replipipe 2> /dev/null; do
		[ $i -lt 50 ] || vm_fail "rmmod replipipe refused after $1 ended"
		sleep 0.1
		i=$((i + 1))
	done
}

vm_brd 3 16
vm_modprobe dm_mod
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rptgt "0 $sectors linear /dev/ram1 0")
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --mode sync --policy degrade --region-kib 64 \
	--pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)

vm_log "== the target fails: one write degrades the pair"
vm_dm_load rptgt "0 $sectors error"
dd if=/dev/urandom of="$lun" bs=64k count=4 oflag=direct 2> /dev/null ||
	vm_fail "write under policy degrade failed"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded: $pair"

vm_log "== a pause while a resume probes the target: the pause stands"
# The resume decided to probe on the pair's state before the probe, and
# applied itself after it whatever the state had become: an administrator's
# pause made meanwhile was undone, the pair mirroring again.
vm_modprobe dm_delay
vm_dm_load rptgt "0 $sectors delay /dev/ram1 0 1500"
rp-nlctl pair-state $PIPE $SRC resume --nl-timeout 60 > /tmp/rs.out 2> /tmp/rs.err &
rs_pid=$!
# the probe's read, held by the delay ("0 <len> delay <reads> <writes> ...")
i=0
until [ "$(dmsetup status rptgt | awk '{ print $4 }')" -ge 1 ]; do
	[ $i -lt 100 ] || vm_fail "the resume's probe read never reached the target"
	sleep 0.02; i=$((i + 1))
done
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "a pause during the resume's probe was refused"
wait_pid $rs_pid 15 || vm_fail "the resume did not end within 15 s"
cat /tmp/rs.err
[ "$rc" -ne 0 ] || vm_fail "a resume whose probe outlasted a pause succeeded"
grep -q "changed while its target was probed" /tmp/rs.err ||
	vm_fail "the refused resume does not say why"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = Paused ] ||
	vm_fail "the pause made during the resume's probe was undone: $pair"

vm_log "== a pause of a Paused pair whose resume probes the target stands too"
# The pause does not change the pair's state, nor so the state generation
# that decides whether a resume still applies when its probe ends: the
# pause drops the pending resume itself.
r=$(resume_once)
[ "$r" = EINPROGRESS ] ||
	vm_fail "a resume whose probe takes 1.5 s was answered '$r', not EINPROGRESS"
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "a pause of the Paused pair during its resume's probe"
i=0
while r=$(resume_once --again) && [ "$r" = EINPROGRESS ]; do
	[ $i -lt 40 ] || vm_fail "the resume's probe did not end"
	i=$((i + 1))
done
[ "$r" = EBUSY ] || vm_fail "asked again after a pause, the resume said '$r', not EBUSY"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = Paused ] ||
	vm_fail "the pause of a Paused pair made during its resume's probe was undone: $pair"

vm_log "== a resume nobody asks about again is applied when its probe ends"
# The request waits for the probe a quarter second at most and answers
# EINPROGRESS; the probe (1.5 s of delay) then resumes the pair by itself.
r=$(resume_once)
[ "$r" = EINPROGRESS ] ||
	vm_fail "a resume whose probe takes 1.5 s was answered '$r', not EINPROGRESS"
i=0
until [ "$(vm_field "$(pair_line)" state)" = Syncing ]; do
	[ $i -lt 100 ] || vm_fail "the resume was not applied when its probe ended: $(pair_line)"
	sleep 0.1; i=$((i + 1))
done
r=$(resume_once --again)
[ "$r" = ok ] || vm_fail "asked again after its probe, the resume said '$r', not ok"
# Degraded again, for what follows.
vm_dm_load rptgt "0 $sectors error"
dd if=/dev/urandom of="$lun" bs=64k count=4 oflag=direct 2> /dev/null ||
	vm_fail "write under policy degrade failed"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded again: $pair"

vm_log "== the target queues I/O (suspended dm device with a working table)"
dmsetup --noudevsync suspend rptgt || vm_fail "dmsetup suspend"
dmsetup --noudevsync load rptgt --table "0 $sectors linear /dev/ram1 0" ||
	vm_fail "dmsetup load"
dmsetup info rptgt | grep -i state

vm_log "== PAIR_SET Syncing: fails with ETIMEDOUT within the bound"
t0=$(now_ms)
rp-nlctl pair-state $PIPE $SRC resume --nl-timeout 60 > /tmp/ps.out 2> /tmp/ps.err &
ps_pid=$!
# The probe waits for the target on a work item, each request for it a
# quarter second at most (REPLIPIPE_RESUME_WAIT_MS): generic netlink runs a
# request under a lock that every family shares.
vm_kernel_stack_wait rp_probe_wait 5
vm_genl_loads_beside "a resume probing a target that queues its I/O"
for again in "" --again; do
	r=$(resume_once $again)
	[ "$r" = EINPROGRESS ] ||
		vm_fail "a resume $again beside a running probe was answered '$r', not EINPROGRESS"
done
kill -0 $ps_pid 2> /dev/null || vm_fail "the resume ended before its probe's bound: $(cat /tmp/ps.err)"
wait_pid $ps_pid 15 ||
	vm_fail "PAIR_SET Syncing still blocked after 15 s (the probe is not bounded)"
t1=$(now_ms)
cat /tmp/ps.err
vm_log "PAIR_SET returned rc=$rc after $((t1 - t0)) ms"
[ "$rc" -ne 0 ] || vm_fail "PAIR_SET Syncing succeeded on a target that does not answer"
grep -q "ETIMEDOUT" /tmp/ps.err || vm_fail "PAIR_SET failed without ETIMEDOUT"
grep -q "did not answer within 5 s" /tmp/ps.err || vm_fail "no extack message for the time-out"
[ $((t1 - t0)) -ge 4000 ] || vm_fail "PAIR_SET gave up before the 5 s bound"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair left Degraded: $pair"

vm_log "== while the probe's bio is queued: PIPE_DEL is prompt"
vm_tcm_loop_unexport $SRC
del_pipe_within 5 "PIPE_DEL blocked behind the probe"
vm_backstore_delete $SRC
vm_no_live_objects
held_until_resumed "the probe's bio"

vm_log "== PIPE_DEL of a pair with a write-intent record, its target queueing I/O"
# A target with a volatile cache: for one without, the block layer ends an
# empty flush at once, before it reaches (and queues in) the dm device.
vm_modprobe null_blk nr_devices=0
vm_nullb_cached rpcache 16
tgt=$(vm_dm_create rptgt "0 $sectors linear /dev/rpcache 0")
vm_backstore replipipe replipipe_0 vol2 /dev/ram0 /dev/ram2 > /dev/null
rp-nlctl set-pipe --id $PIPE --mode sync --policy degrade --region-kib 64 \
	--pair replipipe_0/vol2=$tgt,clean || vm_fail "set-pipe with a record refused"
lun=$(vm_tcm_loop_export replipipe_0/vol2)
dd if=/dev/urandom of="$lun" bs=64k count=4 oflag=direct 2> /dev/null ||
	vm_fail "write to the pair with a record"
pair=$(rp-nlctl get $PIPE | grep "^pair ") || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "pair not InSync: $pair"
vm_tcm_loop_unexport replipipe_0/vol2
dmsetup --noudevsync suspend rptgt || vm_fail "dmsetup suspend"
# A clear pass (every second once the pass queued with the old 5 s has run)
# picks the quiet chunks at its second look and waits for the target's
# flush, up to 60 s, holding no pair reference.
echo 1 > /sys/module/replipipe/parameters/intent_clear_sec
sleep 8
pair=$(rp-nlctl get $PIPE | grep "^pair ") || vm_fail "no pair line"
[ "$(vm_field "$pair" intent_marked)" -ge 1 ] ||
	vm_fail "the record cleared chunks while the target's flush was queued: $pair"
# The PIPE_DEL's own flush is bounded at 5 s, it does not wait for the
# clear pass's, and it waits without rp_config_lock.
del_pipe_within 10 "PIPE_DEL blocked on the record's flush of a target that queues I/O" \
	"a PIPE_DEL flushing the record's target"
FLUSH_FAILED="vol2: write-intent record /dev/ram2: a leg's flush failed (-110); its chunks stay marked"
[ "$(dmesg | grep -c "$FLUSH_FAILED")" = 1 ] ||
	vm_fail "not one message that the record keeps its chunks after the PIPE_DEL's flush timed out"
# Closing the record ends the clear pass's wait within a second.
t0=$(now_ms)
vm_backstore_delete replipipe_0/vol2
t1=$(now_ms)
vm_log "the backstore with the record went in $((t1 - t0)) ms"
[ $((t1 - t0)) -lt 5000 ] || vm_fail "deleting the backstore waited $((t1 - t0)) ms for the clear pass's flush"
[ "$(dmesg | grep -c "$FLUSH_FAILED")" = 2 ] ||
	vm_fail "the clear pass was not waiting for its flush (no second message)"
vm_no_live_objects
held_until_resumed "the record's flush"

vm_log "== PIPE_DEL of three such pairs: one bound for their flushes together"
# Each idle InSync pair with a record flushes its target as it goes away.
# One after the other, each bounded alone, 256 such pairs took 21 minutes
# to delete; now the flushes of one removal share RP_PROBE_TIMEOUT_SEC, and
# a pair left without one keeps its record's marks.
pairs=
for i in 1 2 3; do
	for dev in rpsrc$i rprec$i; do
		mkdir $VM_NULLB/$dev || vm_fail "mkdir $VM_NULLB/$dev"
		echo 16 > $VM_NULLB/$dev/size
		echo 1 > $VM_NULLB/$dev/memory_backed
		echo 1 > $VM_NULLB/$dev/power || vm_fail "cannot power on $dev"
		vm_wait_path /dev/$dev
	done
	vm_nullb_cached rpc$i 16
	t=$(vm_dm_create rpt$i "0 $(blockdev --getsz /dev/rpc$i) linear /dev/rpc$i 0")
	vm_backstore replipipe replipipe_0 many$i /dev/rpsrc$i /dev/rprec$i > /dev/null
	pairs="$pairs --pair replipipe_0/many$i=$t,clean"
done
# shellcheck disable=SC2086 # $pairs is three --pair options
rp-nlctl set-pipe --id $PIPE --mode sync --policy degrade --region-kib 64 $pairs ||
	vm_fail "set-pipe of three pairs with records refused"
[ "$(rp-nlctl get $PIPE | grep -c "^pair .* state=InSync ")" = 3 ] ||
	vm_fail "not three pairs InSync: $(rp-nlctl get $PIPE)"
n_failed=$(dmesg_count "a leg's flush failed (-110); its chunks stay marked")
for i in 1 2 3; do
	dmsetup --noudevsync suspend rpt$i || vm_fail "dmsetup suspend rpt$i"
done
del_pipe_within 9 "PIPE_DEL of three pairs took more than 9 s: their target flushes are not bounded together" \
	"a PIPE_DEL flushing three records' targets"
[ "$(dmesg_count "a leg's flush failed (-110); its chunks stay marked")" = $((n_failed + 3)) ] ||
	vm_fail "not one message for each of the three records that keep their chunks"
for i in 1 2 3; do
	dmsetup --noudevsync resume rpt$i || vm_fail "dmsetup resume rpt$i"
	n=0
	until dmsetup --noudevsync remove rpt$i 2> /dev/null; do
		[ $n -lt 50 ] || vm_fail "an abandoned flush did not release rpt$i after it resumed"
		sleep 0.1
		n=$((n + 1))
	done
	vm_backstore_delete replipipe_0/many$i
done
vm_no_live_objects

vm_log "== PIPE_DEL of a pair with a write in flight to a target that queues I/O"
tgt=$(vm_dm_create rptgt "0 $sectors linear /dev/ram1 0")
vm_backstore replipipe replipipe_0 vol3 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --mode sync --policy degrade --region-kib 64 \
	--pair replipipe_0/vol3=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export replipipe_0/vol3)
# the write waits for the target until it resumes: no SCSI time-out meanwhile
echo 120 > /sys/block/${lun#/dev/}/device/timeout
dmsetup --noudevsync suspend rptgt || vm_fail "dmsetup suspend"
dd if=/dev/urandom of="$lun" bs=64k count=1 oflag=direct 2> /dev/null &
w_pid=$!
sleep 2
kill -0 $w_pid 2> /dev/null || vm_fail "setup: the write ended although its target queues I/O"
del_pipe_within 10 "PIPE_DEL blocked on a write in flight to a target that queues I/O" \
	"a PIPE_DEL waiting for a write in flight"
# Gone, not unreadable: a get that fails for another reason proves nothing.
if out=$(rp-nlctl get $PIPE 2>&1); then
	vm_fail "the deleted pipe is still there: $out"
fi
echo "$out" | grep -q "errno ENOENT" ||
	vm_fail "rp-nlctl get of the deleted pipe failed, but not with ENOENT: $out"
dmesg | grep -q "pipe $PIPE deleted; writes to its targets still in flight after 5 s" ||
	vm_fail "no message that the deleted pipe's writes are still in flight"
kill -0 $w_pid 2> /dev/null || vm_fail "setup: the write ended before the target resumed"
live=$(cat $LIVE)
[ "$live" = "pipes=1 pairs=1 claims=0 async_bufs=0" ] ||
	vm_fail "the deleted pipe's pair is not kept while its write is in flight: $live"
grep -q "a removed pair still has writes in flight" $VM_CFS/core/replipipe_0/vol3/info ||
	vm_fail "the backstore's info does not say its deleted pair is kept: $(cat $VM_CFS/core/replipipe_0/vol3/info)"
# Its source and target stay taken until the write ends.
if rp-nlctl set-pipe --id $PIPE-again --mode sync \
	--pair replipipe_0/vol3=/dev/ram2 > /tmp/set.out 2>&1; then
	vm_fail "set-pipe on the source of a deleted pair with a write in flight succeeded"
fi
cat /tmp/set.out
case "$(cat /tmp/set.out)" in
*"removed pair still has writes in flight"*"(errno EBUSY)"*) ;;
*) vm_fail "set-pipe on the source refused without saying why" ;;
esac
if rmmod replipipe 2> /dev/null; then
	vm_fail "rmmod replipipe succeeded with a deleted pipe's write in flight"
fi
write_ends_on_resume "pipes=0 pairs=0 claims=0 async_bufs=0" "the deleted pipe"
# The target too: its claim went with the pair.
rp-nlctl set-pipe --id $PIPE-again --mode sync --pair replipipe_0/vol3=$tgt ||
	vm_fail "set-pipe of the source and target refused after the deleted pair was freed"
rp-nlctl del-pipe $PIPE-again || vm_fail "del-pipe $PIPE-again"

vm_log "== PIPE_SET replacing the target of a pair with a write in flight to a target that queues I/O"
STILL_IN_FLIGHT="vol3: writes to removed target $tgt still in flight after 5 s"
CLOSED="vol3: the last writes to removed target $tgt ended; it is closed"
# the PIPE_DEL above logged them too
n_in_flight=$(dmesg_count "$STILL_IN_FLIGHT")
n_closed=$(dmesg_count "$CLOSED")
rp-nlctl set-pipe --id $PIPE --mode sync --policy degrade --region-kib 64 \
	--pair replipipe_0/vol3=$tgt,clean || vm_fail "set-pipe refused"
dmsetup --noudevsync suspend rptgt || vm_fail "dmsetup suspend"
dd if=/dev/urandom of="$lun" bs=64k count=1 oflag=direct 2> /dev/null &
w_pid=$!
sleep 2
kill -0 $w_pid 2> /dev/null || vm_fail "setup: the write ended although its target queues I/O"
rp-nlctl set-pipe --id $PIPE --mode sync --policy degrade --region-kib 64 \
	--pair replipipe_0/vol3=/dev/ram2 > /tmp/set.out 2>&1 &
set_pid=$!
sleep 1
get_answers_while "a PIPE_SET waiting for its replaced pair's write in flight"
wait_pid $set_pid 10 || vm_fail "PIPE_SET blocked on its replaced pair's write in flight"
cat /tmp/set.out
[ "$rc" = 0 ] || vm_fail "set-pipe replacing the target failed (rc=$rc)"
[ "$(dmesg_count "$STILL_IN_FLIGHT")" = $((n_in_flight + 1)) ] ||
	vm_fail "no message that the replaced pair's write is still in flight"
kill -0 $w_pid 2> /dev/null || vm_fail "setup: the write ended before the target resumed"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" target)" = /dev/ram2 ] || vm_fail "the new pair is not published: $pair"
[ "$(vm_field "$pair" state)" = Syncing ] || vm_fail "the new pair is not Syncing: $pair"
live=$(cat $LIVE)
[ "$live" = "pipes=1 pairs=2 claims=0 async_bufs=0" ] ||
	vm_fail "the replaced pair is not kept while its write is in flight: $live"
grep -q "a removed pair still has writes in flight" $VM_CFS/core/replipipe_0/vol3/info ||
	vm_fail "the backstore's info does not say its replaced pair is kept: $(cat $VM_CFS/core/replipipe_0/vol3/info)"
# The new pair is fenced: its resync would read a primary the old pair's
# write may still change.
echo 3 > /sys/module/replipipe/parameters/claim_timeout_sec
t0=$(now_ms)
if rp-nlctl claim $PIPE replipipe_0/vol3 > /tmp/claim.out 2>&1; then
	vm_fail "a claim was granted on a pair whose replaced pair has a write in flight: $(cat /tmp/claim.out)"
fi
t1=$(now_ms)
cat /tmp/claim.out
case "$(cat /tmp/claim.out)" in
*"removed pair with this source or target still has writes in flight"*"(errno ETIMEDOUT)"*) ;;
*) vm_fail "the fenced claim failed without saying why" ;;
esac
[ $((t1 - t0)) -ge 2500 ] || vm_fail "the fenced claim gave up after $((t1 - t0)) ms, before claim_timeout_sec"
# The source is taken by the replaced pair until its write ends.
if rp-nlctl set-pipe --id $PIPE --mode sync --pair replipipe_0/vol3=$tgt \
	> /tmp/set.out 2>&1; then
	vm_fail "a second PIPE_SET replaced the pair while the first's replaced pair had a write in flight"
fi
case "$(cat /tmp/set.out)" in
*"removed pair still has writes in flight"*"(errno EBUSY)"*) ;;
*) vm_fail "the second PIPE_SET refused without saying why: $(cat /tmp/set.out)" ;;
esac
# A claim made at the fence has all of claim_timeout_sec once granted: its
# time starts after the wait (CLAIM_TIME_LEFT_MS), or a resync engine
# timing it from its request would give up on its copy early.
echo 10 > /sys/module/replipipe/parameters/claim_timeout_sec
t0=$(now_ms)
rp-nlctl claim $PIPE replipipe_0/vol3 --max 1 --done --nl-timeout 60 > /tmp/claim.out 2>&1 &
c_pid=$!
sleep 3
kill -0 $c_pid 2> /dev/null || vm_fail "setup: the claim did not wait at the fence: $(cat /tmp/claim.out)"
write_ends_on_resume "pipes=1 pairs=1 claims=0 async_bufs=0" "the replaced pair"
wait_pid $c_pid 10 || vm_fail "the claim at the fence did not end after the fence was lifted"
t1=$(now_ms)
cat /tmp/claim.out
[ "$rc" = 0 ] || vm_fail "the claim at the fence failed once the fence was lifted (rc=$rc)"
left=$(sed -n 's/^claim .* count=[1-9][0-9]* left_ms=\([0-9]*\)$/\1/p' /tmp/claim.out)
[ -n "$left" ] || vm_fail "the claim granted after the fence reports no time left"
vm_log "RESULT claim granted after $((t1 - t0)) ms at the fence with $left ms of 10000 left"
[ $((t1 - t0)) -ge 2500 ] || vm_fail "setup: the claim waited only $((t1 - t0)) ms at the fence"
[ "$left" -ge 9000 ] && [ "$left" -le 10000 ] ||
	vm_fail "the claim's time started before its wait at the fence: $left ms of 10000 left"
[ "$(dmesg_count "$CLOSED")" = $((n_closed + 1)) ] ||
	vm_fail "no message that the replaced pair was freed"
# The fence is lifted: the new pair resyncs.
rp-nlctl claim $PIPE replipipe_0/vol3 --done > /tmp/claim.out 2>&1 ||
	vm_fail "no claim granted once the replaced pair was freed: $(cat /tmp/claim.out)"
cat /tmp/claim.out
grep -q "^claim .* count=[1-9]" /tmp/claim.out || vm_fail "the claim after the fence claimed nothing"
echo 30 > /sys/module/replipipe/parameters/claim_timeout_sec
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe $PIPE"
vm_tcm_loop_unexport replipipe_0/vol3
vm_backstore_delete replipipe_0/vol3
dmsetup --noudevsync remove rptgt || vm_fail "dmsetup remove"

vm_log "== PIPE_SET writing a write-intent record whose device queues I/O"
# Quarters of the ram disks: sources s4, s5, s6 (ram0) of vol4, vol5,
# vol6, their records recA, recB, recC (ram2), targets t45 and t6 (ram1).
q=$((sectors / 4))
s4=$(vm_dm_create s4 "0 $q linear /dev/ram0 0")
s5=$(vm_dm_create s5 "0 $q linear /dev/ram0 $q")
s6=$(vm_dm_create s6 "0 $q linear /dev/ram0 $((2 * q))")
recA=$(vm_dm_create recA "0 $q linear /dev/ram2 0")
recB=$(vm_dm_create recB "0 $q linear /dev/ram2 $q")
recC=$(vm_dm_create recC "0 $q linear /dev/ram2 $((2 * q))")
t45=$(vm_dm_create t45 "0 $q linear /dev/ram1 0")
t6=$(vm_dm_create t6 "0 $q linear /dev/ram1 $q")
vm_backstore replipipe replipipe_0 vol4 $s4 $recA > /dev/null
vm_backstore replipipe replipipe_0 vol5 $s5 $recB > /dev/null
vm_backstore replipipe replipipe_0 vol6 $s6 $recC > /dev/null
INFO4=$VM_CFS/core/replipipe_0/vol4/info
INFO5=$VM_CFS/core/replipipe_0/vol5/info
# names_on_disk REC TARGET: REC's header on its device names TARGET
names_on_disk() {
	dd if="$1" bs=4096 count=1 iflag=direct 2> /dev/null | tr '\000' '\n' | grep -qxF "$2"
}
# set_pipe_fails WHAT MSG ERRNO PAIR...: PIPE_SET of the PAIRs fails
# within 8 s with ERRNO and MSG, leaving no pipe, vol4's record unbound
# and recB bound (in memory: its device may be the suspended one;
# resume_names_t45 reads it)
set_pipe_fails() {
	local what=$1 msg=$2 errno=$3 t0 p args=
	shift 3
	for p in "$@"; do args="$args --pair $p"; done
	t0=$(now_ms)
	# shellcheck disable=SC2086
	rp-nlctl set-pipe --id $PIPE --region-kib 64 $args > /tmp/set.out 2>&1 &
	wait_pid $! 8 || vm_fail "PIPE_SET hung on $what"
	cat /tmp/set.out
	vm_log "PIPE_SET ended after $(($(now_ms) - t0)) ms, rc=$rc"
	[ "$rc" != 0 ] || vm_fail "PIPE_SET succeeded with $what"
	case "$(cat /tmp/set.out)" in
	*"$msg"*"(errno $errno)"*) ;;
	*) vm_fail "PIPE_SET failed on $what without saying so" ;;
	esac
	if rp-nlctl get $PIPE > /dev/null 2>&1; then
		vm_fail "the PIPE_SET that failed on $what left pipe $PIPE"
	fi
	grep -q "intent: $recA (tracks nothing" $INFO4 ||
		vm_fail "the PIPE_SET that failed on $what bound vol4's record: $(cat $INFO4)"
	grep -q "intent: $recB (bound," $INFO5 ||
		vm_fail "the PIPE_SET that failed on $what made vol5's record forget t45: $(cat $INFO5)"
}
# set_pipe_times_out WHAT MSG PAIR...: set_pipe_fails with ETIMEDOUT
set_pipe_times_out() {
	local what=$1 msg=$2
	shift 2
	set_pipe_fails "$what" "$msg" ETIMEDOUT "$@"
}
# resume_names_t45 DEV: DEV resumes; on their devices recB's header still
# names t45, recC's t6, and recA has none that names t45
resume_names_t45() {
	dmsetup --noudevsync resume $1 || vm_fail "dmsetup resume $1"
	names_on_disk $recB $t45 ||
		vm_fail "a PIPE_SET that failed invalidated vol5's record on its device"
	names_on_disk $recC $t6 ||
		vm_fail "a PIPE_SET that failed invalidated vol6's record on its device"
	if names_on_disk $recA $t45; then
		vm_fail "a PIPE_SET that failed bound vol4's record on its device"
	fi
}
# recB bound to {other: vol5 -> t45}, recC to {other: vol6 -> t6}, left
# so when their pipe goes
rp-nlctl set-pipe --id other --region-kib 64 --pair replipipe_0/vol5=$t45 \
	--pair replipipe_0/vol6=$t6 || vm_fail "set-pipe other"
rp-nlctl del-pipe other || vm_fail "del-pipe other"
names_on_disk $recB $t45 && names_on_disk $recC $t6 ||
	vm_fail "setup: recB does not name t45, or recC t6"
OTHER_MSG="the write-intent record of another backstore that names the target did not answer within 5 s"
# a new pair on t45 invalidates recB, whose device queues I/O
dmsetup --noudevsync suspend recB || vm_fail "dmsetup suspend recB"
set_pipe_times_out "recB queueing I/O" "$OTHER_MSG" replipipe_0/vol4=$t45
resume_names_t45 recB
# two new pairs: vol4's on t45 invalidates recB, which answers; vol5's on
# t6 recC, which queues I/O: nothing is invalidated, recB included
dmsetup --noudevsync suspend recC || vm_fail "dmsetup suspend recC"
set_pipe_times_out "recC queueing I/O, after a pair whose taking invalidates recB" \
	"$OTHER_MSG" replipipe_0/vol4=$t45 replipipe_0/vol5=$t6
resume_names_t45 recC
# vol4's own record queues I/O
dmsetup --noudevsync suspend recA || vm_fail "dmsetup suspend recA"
set_pipe_times_out "its own write-intent record queueing I/O" \
	"the source's write-intent record did not answer within 5 s" replipipe_0/vol4=$t45
resume_names_t45 recA
# vol4's own record fails reads: the probe fails at once, saying so
vm_dm_load recA "0 $q error"
set_pipe_fails "its own write-intent record failing reads" \
	"the source's write-intent record failed its probe (open, read or flush)" EIO \
	replipipe_0/vol4=$t45
vm_dm_load recA "0 $q linear /dev/ram2 0"
# all answer: the PIPE_SET binds recA and invalidates recB
rp-nlctl set-pipe --id $PIPE --region-kib 64 --pair replipipe_0/vol4=$t45 ||
	vm_fail "set-pipe {vol4 -> t45} with every record answering"
grep -q "intent: $recB (tracks nothing" $INFO5 ||
	vm_fail "vol5's record still names t45: $(cat $INFO5)"
names_on_disk $recB $t45 && vm_fail "vol5's record still names t45 on its device"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe $PIPE"
for v in vol4 vol5 vol6; do
	vm_backstore_delete replipipe_0/$v
done
for d in s4 s5 s6 recA recB recC t45 t6; do
	dmsetup --noudevsync remove $d || vm_fail "dmsetup remove $d"
done
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-probe-timeout done"
