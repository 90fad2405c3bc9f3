#!/bin/sh
# Degraded -> recovered through replipiped and replipipectl only (rp-nlctl
# only looks at the kernel). A synchronous pipe, policy Degrade, target a
# device-mapper device over /dev/ram1 (128 MiB). Writers hit about 1 % of the
# device (1.25 MiB at 64 MiB); meanwhile the target is switched to `error`:
# every write is still acknowledged and the pair goes Degraded. While the
# target fails, the daemon's probe (--probe-interval 3) and `replipipectl
# resume` are refused (the kernel probes the target). The target comes back:
# the probe resumes the pair, the resync copies only the dirty regions (at
# most 2 % of the device; the figure is logged from status --json
# resync.done_bytes), the pair is InSync, `replipipectl events` showed every
# transition, every acknowledged write verifies on the primary and the legs
# are identical. A second cycle recovers through `replipipectl resume`
# (probe disabled by a restart with --probe-interval 0).
# vm-timeout: 600
# vm-cost: 45
# vm-mem: 1024
# vm-bins: dmsetup jq

PIPE=recover
SRC=replipipe_0/vol1
REGION_KIB=64
DEV_MIB=128
DLOG=/tmp/replipiped.log
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get | grep "^pair "; }
daemon_fail() { vm_daemon_fail $DLOG "$@"; }

start_daemon() { vm_daemon_start $DLOG --log-level info --probe-interval "$1"; }
set_target() { # linear | error
	if [ "$1" = linear ]; then
		table="0 $sectors linear /dev/ram1 0"
	else
		table="0 $sectors error"
	fi
	vm_dm_load rptgt "$table"
	vm_log "target: $1"
}
# wait_event REGEX [TENTHS]: a line of the events stream matches
wait_event() {
	i=0
	until grep -q "$1" /tmp/events; do
		[ $i -lt "${2:-300}" ] || { cat /tmp/events >&2; daemon_fail "no event matching '$1'"; }
		sleep 0.1
		i=$((i + 1))
	done
}
# degrade_phase SEED: writers on ~1 % of the device, target fails meanwhile
degrade_phase() {
	rp-writer --dev "$lun" --log /tmp/w$1 --threads 4 --offset 64M --span 1280K \
		--min-size 4K --max-size 64K --seconds 6 --seed "$1" > /tmp/out$1 2>&1 &
	writers=$!
	sleep 2
	set_target error
	rc=0
	wait $writers || rc=$?
	cat /tmp/out$1
	[ $rc -eq 0 ] || vm_fail "writes failed while Degraded (rc=$rc)"
	# Writes after the failure for certain: on a loaded host the table
	# switch (a suspend that drains the writes in flight) once ended
	# after the timed writers had. Its logs sort after theirs.
	rp-writer --dev "$lun" --log /tmp/w$1.post --threads 2 --offset 64M --span 1280K \
		--min-size 4K --max-size 64K --count 32 --seed "$(($1 + 100))" > /tmp/out$1.post 2>&1 ||
		{ cat /tmp/out$1.post; vm_fail "writes failed after the target failed"; }
	cat /tmp/out$1.post
	pair=$(pair_line) || vm_fail "no pair in the kernel"
	echo "$pair"
	[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded: $pair"
	dirty=$(vm_field "$pair" dirty)
	[ "$dirty" -ge 1 ] || vm_fail "no dirty region after the failure: $pair"
	vm_log "dirty regions while Degraded: $dirty ($((dirty * REGION_KIB)) KiB)"
	rp-verify --dev /dev/ram0 /tmp/w$1.* || vm_fail "acknowledged writes not on the primary"
}
# check_recovered WHAT: InSync, copied <= 2 %, data verifies, legs identical
check_recovered() {
	replipipectl wait $PIPE --state InSync --timeout 120 ||
		{ replipipectl status >&2; daemon_fail "$1: not InSync again"; }
	replipipectl --json status $PIPE > /tmp/st.json || vm_fail "status --json"
	done_bytes=$(jq -r '.pipes[0].pairs[0].resync.done_bytes' < /tmp/st.json)
	total_bytes=$(jq -r '.pipes[0].pairs[0].resync.total_bytes' < /tmp/st.json)
	dev_bytes=$(vm_dev_bytes /dev/ram0)
	limit=$((dev_bytes / 50))
	vm_log "FIGURE $1: partial resync copied $done_bytes bytes (total $total_bytes) of $dev_bytes;" \
		"$((done_bytes * 10000 / dev_bytes)) / 10000 of the device; limit 2 % = $limit"
	[ "$done_bytes" -gt 0 ] || vm_fail "$1: resync copied nothing"
	[ "$done_bytes" -le "$limit" ] || vm_fail "$1: resync copied more than 2 % of the device"
	[ "$done_bytes" -le $((dirty * REGION_KIB * 1024)) ] ||
		vm_fail "$1: resync copied more than the dirty regions"
	pair=$(pair_line)
	[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "$1: dirty regions left: $pair"
	rp-verify --dev /dev/ram0 /tmp/w*.* || vm_fail "$1: data on the primary"
	rp-verify --dev /dev/ram1 /tmp/w*.* || vm_fail "$1: data on the replica"
	rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib $REGION_KIB > /tmp/cmp ||
		{ head -n 5 /tmp/cmp; vm_fail "$1: the legs differ"; }
	vm_log "$1: InSync, legs identical"
}

vm_brd 2 $DEV_MIB
vm_modprobe dm_mod
vm_modprobe replipipe
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rptgt "0 $sectors linear /dev/ram1 0")

vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
start_daemon 3
replipipectl create-or-modify --name $PIPE --source-system localhost \
	--target-system localhost --pair $SRC=$tgt \
	--goal "instance of CIM_SettingData { Mode = \"Synchronous\"; FailurePolicy = \"Degrade\"; RegionSizeKiB = $REGION_KIB; };" ||
	daemon_fail "create-or-modify"
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "initial sync"
replipipectl events > /tmp/events 2> /tmp/events.err &
events_pid=$!
wait_event "pair_state.*InSync"

vm_log "== cycle 1: the target fails during writes, the probe recovers it"
degrade_phase 31
wait_event "pair_state.*: Degraded"
wait_event "probe .*: failed" 100
replipipectl resume $PIPE > /tmp/resume.out 2>&1 && vm_fail "resume accepted while the target fails"
cat /tmp/resume.out
grep -q "does not answer" /tmp/resume.out || vm_fail "resume refused without the reason"
[ "$(vm_field "$(pair_line)" state)" = Degraded ] || vm_fail "a refused resume changed the state"
set_target linear
wait_event "probe .*: resumed" 100
wait_event "resync_done"
check_recovered cycle1
wait_event "pair_state.*: Syncing"
wait_event "resync_started"
n=$(grep -c "pair_state.*: InSync" /tmp/events)
[ "$n" -ge 2 ] || { cat /tmp/events >&2; vm_fail "no InSync event after the recovery"; }

vm_log "== cycle 2: no automatic probe; replipipectl resume"
vm_daemon_stop $DLOG
start_daemon 0
degrade_phase 32
replipipectl resume $PIPE > /tmp/resume.out 2>&1 && vm_fail "resume accepted while the target fails"
cat /tmp/resume.out
sleep 4
[ "$(vm_field "$(pair_line)" state)" = Degraded ] || vm_fail "resumed without a probe or a resume"
set_target linear
replipipectl resume $PIPE || daemon_fail "replipipectl resume after the repair"
check_recovered cycle2

kill $events_pid 2> /dev/null || true
wait $events_pid 2> /dev/null || true
vm_log "events:"
cat /tmp/events

vm_log "== teardown"
replipipectl delete $PIPE || daemon_fail "delete"
vm_daemon_stop $DLOG
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
dmsetup --noudevsync remove rptgt || vm_fail "dmsetup remove"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
grep -q "probe:.*resumed" $DLOG || daemon_fail "no probe in the daemon's log"
vm_log "fail-degrade-recover done"
