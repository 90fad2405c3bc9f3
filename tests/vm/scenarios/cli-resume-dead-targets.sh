#!/bin/sh
# `replipipectl resume` of a pipe whose targets all queue I/O (suspended dm
# devices, as iSCSI sessions in recovery would). The kernel probes each
# target before it resumes the pair and gives up after 5 s; replipiped
# probes the pairs of a pipe several at a time (decision 38), so 6 dead
# targets cost about one bound, not six (30 s: one after the other, as
# before). The resume fails with exit 3 (ReturnValue Timeout) naming every
# pair, and every pair stays Paused. Once the targets resume, the
# abandoned probes end, the same resume succeeds, the pipe is InSync and
# the legs are identical. Then every pair Degraded with its target queuing
# I/O again: replipiped's periodic probe also tries them several at a time
# (decision 44), and resumes them once the targets answer. Then a seventh
# pair whose target queues I/O: its resync job waits on it, and
# replipiped, told to stop, gives up on the job after its bound (20 s,
# within systemd's 30) and exits 0 rather than wait for the target;
# started again once the target answers, it brings the pair InSync. The
# pipe, the devices and the module all go.
# vm-timeout: 300
# vm-cost: 45
# vm-mem: 768
# vm-bins: dmsetup

PIPE=deadtargets
PAIRS=6
DLOG=/tmp/replipiped.log
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

daemon_fail() { vm_daemon_fail $DLOG "$@"; }
# all_paused: every pair of the pipe is Paused in the kernel
all_paused() {
	rp-nlctl get > /tmp/get.out || vm_fail "rp-nlctl get"
	[ "$(grep -c "^pair .*state=Paused" /tmp/get.out)" = $PAIRS ] ||
		{ cat /tmp/get.out >&2; return 1; }
}
each_target() { # dmsetup verb for every target
	local i=0
	while [ $i -lt $PAIRS ]; do
		dmsetup --noudevsync "$1" rptgt$i || vm_fail "dmsetup $1 rptgt$i"
		i=$((i + 1))
	done
}

# Sources /dev/ram0..5, targets dm-linear over /dev/ram6..11; the
# seventh pair's /dev/ram12 and /dev/ram13.
vm_brd $((PAIRS * 2 + 2)) 4
vm_modprobe dm_mod
vm_modprobe replipipe
pairs=
i=0
while [ $i -lt $PAIRS ]; do
	dev=/dev/ram$((PAIRS + i))
	tgt=$(vm_dm_create rptgt$i "0 $(blockdev --getsz $dev) linear $dev 0")
	vm_backstore replipipe replipipe_0 v$i /dev/ram$i > /dev/null
	dd if=/dev/urandom of=/dev/ram$i bs=64k count=16 2> /dev/null || vm_fail "dd /dev/ram$i"
	pairs="$pairs --pair replipipe_0/v$i=$tgt"
	i=$((i + 1))
done

vm_daemon_start $DLOG --log-level info --probe-interval 0
# shellcheck disable=SC2086 # one --pair word each
replipipectl create-or-modify --name $PIPE --source-system localhost \
	--target-system localhost $pairs || daemon_fail "create-or-modify"
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "initial sync"
replipipectl pause $PIPE || daemon_fail "pause"
all_paused || vm_fail "not every pair Paused"

vm_log "== every target queues I/O: resume probes them, several at a time"
each_target suspend
t0=$(vm_now_ms)
rc=0
replipipectl resume $PIPE > /tmp/resume.out 2>&1 || rc=$?
t1=$(vm_now_ms)
cat /tmp/resume.out
vm_log "resume of $PAIRS pairs with dead targets: rc=$rc after $((t1 - t0)) ms"
[ $rc -eq 3 ] || daemon_fail "resume: exit $rc, not 3 (the kernel's time-out)"
grep -q "$PAIRS of $PAIRS pairs failed" /tmp/resume.out || vm_fail "resume: not every pair named"
[ $((t1 - t0)) -ge 4000 ] || vm_fail "resume gave up before the kernel's 5 s bound"
# One after the other they take 30 s; at once one bound, 5 s, plus what a
# loaded TCG guest adds.
[ $((t1 - t0)) -lt 15000 ] || vm_fail "resume probed the targets one after the other"
all_paused || vm_fail "a failed resume changed a state"

vm_log "== the targets answer again: the same resume succeeds"
each_target resume
replipipectl resume $PIPE || daemon_fail "resume after the targets came back"
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "not InSync after the resume"
i=0
while [ $i -lt $PAIRS ]; do
	vm_cmp_devs /dev/ram$i /dev/ram$((PAIRS + i))
	i=$((i + 1))
done

vm_log "== Degraded pairs whose targets queue I/O: the probe tries them several at a time"
# A write through a LUN to each source while its target fails degrades the
# pair; then the target queues I/O (suspended, its good table loaded).
i=0
while [ $i -lt $PAIRS ]; do
	sz=$(blockdev --getsz /dev/ram$((PAIRS + i)))
	vm_dm_load rptgt$i "0 $sz error"
	lun=$(vm_tcm_loop_export replipipe_0/v$i)
	dd if=/dev/urandom of=$lun bs=4k count=1 seek=$i oflag=direct 2> /dev/null ||
		vm_fail "write to v$i under policy degrade failed"
	vm_tcm_loop_unexport replipipe_0/v$i
	dmsetup --noudevsync suspend rptgt$i &&
		dmsetup --noudevsync load rptgt$i --table "0 $sz linear /dev/ram$((PAIRS + i)) 0" ||
		vm_fail "dmsetup: cannot suspend rptgt$i with its table"
	i=$((i + 1))
done
rp-nlctl get > /tmp/get.out || vm_fail "rp-nlctl get"
[ "$(grep -c "^pair .*state=Degraded" /tmp/get.out)" = $PAIRS ] ||
	{ cat /tmp/get.out; vm_fail "not every pair Degraded"; }
probe_tries() { grep -c "probe: pipe .* pair replipipe_0/v[0-9]*: " $DLOG || :; }
vm_daemon_stop $DLOG
: > $DLOG
t0=$(vm_now_ms)
vm_daemon_start $DLOG --log-level info --probe-interval 1
i=0
until [ "$(probe_tries)" -ge $PAIRS ]; do
	[ $i -lt 600 ] || daemon_fail "the probe did not try every pair within 60 s"
	sleep 0.1
	i=$((i + 1))
done
t1=$(vm_now_ms)
vm_log "the probe tried $PAIRS Degraded pairs with dead targets within $((t1 - t0)) ms of the start"
grep -q "target answers, resumed" $DLOG && daemon_fail "the probe resumed a pair whose target queues I/O"
# One after the other they take 30 s; at once one bound, 5 s, plus the
# daemon's start and what a loaded TCG guest adds.
[ $((t1 - t0)) -lt 20000 ] || daemon_fail "the probe tried the Degraded pairs one after the other"
each_target resume
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "the probe did not resume the pairs"
[ "$(grep -c "target answers, resumed" $DLOG)" -ge $PAIRS ] || daemon_fail "not every pair resumed by the probe"
i=0
while [ $i -lt $PAIRS ]; do
	vm_cmp_devs /dev/ram$i /dev/ram$((PAIRS + i))
	i=$((i + 1))
done

vm_log "== a stop while a resync job waits on a target that queues its I/O"
stuck=$(vm_dm_create rpstuck "0 $(blockdev --getsz /dev/ram13) linear /dev/ram13 0")
vm_backstore replipipe replipipe_0 v$PAIRS /dev/ram12 > /dev/null
dd if=/dev/urandom of=/dev/ram12 bs=64k count=16 2> /dev/null || vm_fail "dd /dev/ram12"
dmsetup --noudevsync suspend rpstuck || vm_fail "dmsetup suspend rpstuck"
# shellcheck disable=SC2086 # one --pair word each
replipipectl create-or-modify --name $PIPE --pipe $PIPE --source-system localhost \
	--target-system localhost $pairs --pair replipipe_0/v$PAIRS=$stuck ||
	daemon_fail "adding the seventh pair"
i=0
until grep -q "claims=[1-9]" $LIVE; do
	[ $i -lt 100 ] || daemon_fail "no resync claim on the seventh pair: $(cat $LIVE)"
	sleep 0.1
	i=$((i + 1))
done
# The claim comes before the copy's first write: a stop in between (a
# loaded TCG guest can take 100 ms there) ends the job before it waits on
# the target. The job cannot end by itself: its target queues its I/O.
sleep 1
t0=$(vm_now_ms)
kill "$VM_DAEMON_PID" || vm_fail "replipiped is gone"
i=0
while kill -0 "$VM_DAEMON_PID" 2> /dev/null; do
	[ $i -lt 300 ] || daemon_fail "replipiped still waits for its resync job 30 s after SIGTERM"
	sleep 0.1
	i=$((i + 1))
done
t1=$(vm_now_ms)
rc=0
wait "$VM_DAEMON_PID" || rc=$?
VM_DAEMON_PID=
vm_log "replipiped stopped after $((t1 - t0)) ms, rc=$rc"
[ $rc -eq 0 ] || daemon_fail "replipiped exited $rc on SIGTERM"
grep -q "stopped with resync jobs still waiting for their targets" $DLOG ||
	daemon_fail "no word of the job left behind"
dmsetup --noudevsync resume rpstuck || vm_fail "dmsetup resume rpstuck"
vm_daemon_start $DLOG --log-level info --probe-interval 0
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "seventh pair not InSync"
vm_cmp_devs /dev/ram12 /dev/ram13

vm_log "== teardown"
replipipectl delete $PIPE || daemon_fail "delete"
vm_daemon_stop $DLOG
i=0
while [ $i -le $PAIRS ]; do
	vm_backstore_delete replipipe_0/v$i
	i=$((i + 1))
done
# The abandoned probes' bios ended when their targets resumed: the devices
# and the module are free.
each_target remove
dmsetup --noudevsync remove rpstuck || vm_fail "dmsetup remove rpstuck"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "cli-resume-dead-targets done"
