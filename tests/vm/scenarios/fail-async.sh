#!/bin/sh
# Asynchronous mode end to end through replipiped/replipipectl (Goal Mode =
# "Asynchronous", MaxLagKiB = 1024). The target is two device-mapper layers
# over /dev/ram1: rptgt = `delay` (20 ms) over rpinner = `linear`. 4 writers
# run for 14 s on 16 MiB of the 128 MiB device; the lag is sampled from `replipipectl --json status`
# (pairs[].lag_bytes) and must stay within MaxLagKiB and be seen above 0.
# Mid-run rpinner becomes `error`: the copies queued in dm-delay (acknowledged
# to the initiator, in flight to the target) fail. Every write is still
# acknowledged and on the primary, the pair is Degraded, and every region in
# which the legs differ is dirty (so the failed in-flight copies were marked).
# rpinner is repaired; the daemon's probe resumes the pair; after the resync
# the pair is InSync and the legs are identical.
# vm-timeout: 600
# vm-cost: 35
# vm-mem: 1024
# vm-bins: dmsetup jq

PIPE=async
SRC=replipipe_0/vol1
REGION_KIB=64
MAX_LAG_KIB=1024
DLOG=/tmp/replipiped.log
LIVE=/sys/module/replipipe/parameters/live_objects
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get | grep "^pair "; }
daemon_fail() { vm_daemon_fail $DLOG "$@"; }
dm_swap() { # NAME TABLE
	vm_dm_load "$1" "$2"
	vm_log "$1: $2"
}
dm_dev() {
	for d in /sys/block/dm-*; do
		[ "$(cat "$d/dm/name")" = "$1" ] && echo /dev/${d##*/}
	done
}
wait_event() {
	i=0
	until grep -q "$1" /tmp/events; do
		[ $i -lt "${2:-300}" ] || { cat /tmp/events >&2; daemon_fail "no event matching '$1'"; }
		sleep 0.1
		i=$((i + 1))
	done
}

vm_brd 2 128
vm_modprobe dm_mod
vm_modprobe dm_delay
vm_modprobe replipipe
sectors=$(blockdev --getsz /dev/ram1)
dmsetup --noudevsync create rpinner --table "0 $sectors linear /dev/ram1 0" ||
	vm_fail "dmsetup create rpinner"
inner=$(dm_dev rpinner)
dmsetup --noudevsync create rptgt --table "0 $sectors linear $inner 0" ||
	vm_fail "dmsetup create rptgt"
tgt=$(dm_dev rptgt)
[ -b "$tgt" ] || vm_fail "no /dev/dm-N for rptgt"

vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
vm_daemon_start $DLOG --log-level info --probe-interval 3
replipipectl create-or-modify --name $PIPE --source-system localhost \
	--target-system localhost --pair $SRC=$tgt \
	--goal "instance of CIM_SettingData { Mode = \"Asynchronous\"; MaxLagKiB = $MAX_LAG_KIB; FailurePolicy = \"Degrade\"; RegionSizeKiB = $REGION_KIB; };" ||
	daemon_fail "create-or-modify"
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "initial sync"
replipipectl status $PIPE
replipipectl events > /tmp/events 2> /tmp/events.err &
events_pid=$!

vm_log "== target throttled (dm-delay 20 ms), 4 writers, lag sampled"
dm_swap rptgt "0 $sectors delay $inner 0 20"
rp-writer --dev "$lun" --log /tmp/w --threads 4 --min-size 4K --max-size 256K \
	--offset 32M --span 16M --seconds 14 --seed 61 > /tmp/writer.out 2>&1 &
writers=$!
max_lag=0
samples=0
failed_at=$(($(date +%s) + 7))
failed=
while kill -0 $writers 2> /dev/null; do
	replipipectl --json status $PIPE > /tmp/st.json 2> /dev/null || continue
	lag=$(jq -r '.pipes[0].pairs[0].lag_bytes' < /tmp/st.json)
	samples=$((samples + 1))
	[ "$lag" -le "$max_lag" ] || max_lag=$lag
	[ "$lag" -le $((MAX_LAG_KIB * 1024)) ] || vm_fail "lag $lag above MaxLagKiB $MAX_LAG_KIB"
	if [ -z "$failed" ] && [ "$(date +%s)" -ge $failed_at ]; then
		vm_log "lag before the failure: $lag bytes (max so far $max_lag)"
		# the copies queued in dm-delay now fail when they reach rpinner
		dmsetup --noudevsync load rpinner --table "0 $sectors error"
		dmsetup --noudevsync suspend --nolockfs rpinner
		dmsetup --noudevsync resume rpinner
		vm_log "rpinner: error, with copies in flight (lag $lag)"
		failed=1
	fi
done
rc=0
wait $writers || rc=$?
cat /tmp/writer.out
[ $rc -eq 0 ] || vm_fail "writes failed in async mode (rc=$rc)"
vm_log "FIGURE max lag sampled: $max_lag bytes over $samples samples (MaxLagKiB $MAX_LAG_KIB = $((MAX_LAG_KIB * 1024)) bytes)"
[ "$max_lag" -gt 0 ] || vm_fail "the lag was never seen above 0: the target was not throttled"
[ -n "$failed" ] || vm_fail "the writers ended before the failure"
replipipectl status $PIPE

pair=$(pair_line)
echo "$pair"
[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "pair not Degraded: $pair"
[ "$(vm_field "$pair" lag)" = 0 ] || vm_fail "lag left after the failure: $pair"
rp-verify --dev /dev/ram0 /tmp/w.* || vm_fail "acknowledged writes not on the primary"

vm_log "== every region in which the legs differ is dirty"
rp-nlctl bitmap $(jq -r '.pipes[0].instance_id' < /tmp/st.json | sed 's/^replipipe://') $SRC > /tmp/bitmap ||
	vm_fail "rp-nlctl bitmap"
head -n 1 /tmp/bitmap
vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
rc=0
rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib $REGION_KIB > /tmp/cmp || rc=$?
[ $rc -le 1 ] || vm_fail "rp-verify --cmp: rc=$rc"
head -n 1 /tmp/cmp
[ $rc -eq 1 ] || vm_fail "the legs do not differ after a failure with copies in flight"
dirty=$(vm_field "$pair" dirty)
[ "$dirty" -lt 2048 ] || vm_fail "the whole device is dirty: the check below proves nothing"
vm_norm_ranges < /tmp/cmp > /tmp/cmp.ranges
awk -F- 'FILENAME == ARGV[1] { for (r = $1; r <= $2; r++) dirty[r] = 1; next }
	{ for (r = $1; r <= $2; r++) if (!(r in dirty)) { print "region " r " differs, not dirty"; bad = 1 } }
	END { exit bad }' /tmp/bitmap.ranges /tmp/cmp.ranges ||
	vm_fail "the legs differ outside the dirty regions"

vm_log "== rpinner repaired: the probe resumes, the resync converges"
dm_swap rpinner "0 $sectors linear /dev/ram1 0"
wait_event "probe .*: resumed" 150
replipipectl wait $PIPE --state InSync --timeout 180 ||
	{ replipipectl status >&2; daemon_fail "not InSync after the repair"; }
replipipectl --json status $PIPE > /tmp/st.json
vm_log "FIGURE async recovery resync copied $(jq -r '.pipes[0].pairs[0].resync.done_bytes' < /tmp/st.json) bytes"
rp-verify --dev /dev/ram0 /tmp/w.* || vm_fail "data on the primary after the recovery"
rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib $REGION_KIB > /tmp/cmp ||
	{ head -n 5 /tmp/cmp; vm_fail "the legs differ after the recovery"; }
vm_log "InSync, legs identical"
kill $events_pid 2> /dev/null || true
wait $events_pid 2> /dev/null || true
grep -E "pair_state|probe|resync" /tmp/events | grep -v "probe .*failed" || true

vm_log "== teardown"
replipipectl delete $PIPE || daemon_fail "delete"
vm_daemon_stop $DLOG
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
dmsetup --noudevsync remove rptgt || vm_fail "dmsetup remove rptgt"
dmsetup --noudevsync remove rpinner || vm_fail "dmsetup remove rpinner"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "fail-async done"
