#!/bin/sh
# replipiped killed with SIGKILL and started again: the pipes are still there
# (same references, names, settings, pairs), the kernel's pipes are adopted,
# an InSync pair is not resynced (no claim, dirty=0 throughout, no resync job,
# resync done_bytes 0) and writes keep being mirrored. Twice: once idle, once
# while a writer runs through the LUN.
# vm-timeout: 600
# vm-cost: 35
# vm-mem: 1024
# vm-bins: jq

STORE=/var/lib/replipipe/pipes.json
SOCK=/run/replipipe/replipiped.sock
SRC=replipipe_0/v1
LIVE=/sys/module/replipipe/parameters/live_objects

start_daemon() { # LOG
	replipiped --log-level debug 2> "$1" || { cat "$1" >&2; vm_fail "replipiped did not start"; }
	vm_log "replipiped running, pid $(pidof replipiped), log $1"
}

kill9_daemon() {
	local pid
	pid=$(pidof replipiped) || vm_fail "replipiped is not running"
	kill -KILL $pid
	while kill -0 $pid 2> /dev/null; do sleep 0.1; done
	vm_log "replipiped (pid $pid) killed with SIGKILL; socket file: $(ls -l $SOCK 2>&1)"
}

# The definition of every pipe, without counters and progress.
definitions() {
	replipipectl --json status | jq -S '[.pipes[] | {ref, instance_id, name,
		source_system, target_system, mode, failure_policy, max_lag_kib,
		region_kib, resync_rate_limit_kibps, in_kernel,
		pairs: [.pairs[] | {source, target, state}]}] | sort_by(.ref)'
}

# after_restart LOG WHAT: what must hold after a restart.
after_restart() {
	local log=$1 what=$2
	definitions > /tmp/defs.after || vm_fail "status --json after $what"
	if ! cmp /tmp/defs.before /tmp/defs.after; then
		diff /tmp/defs.before /tmp/defs.after >&2 || true
		vm_fail "the pipes' definitions differ after $what"
	fi
	vm_log "pipes, settings and pairs unchanged after $what"
	grep -q "$dbid\".*adopted from the kernel" "$log" ||
		{ cat "$log" >&2; vm_fail "pipe db not adopted after $what"; }
	grep -q "$emptyid\".*adopted from the kernel" "$log" ||
		{ cat "$log" >&2; vm_fail "pipe empty not adopted after $what"; }
	if grep -E "pushed|resync pipe .*started" "$log"; then
		cat "$log" >&2
		vm_fail "a pipe was pushed again or a resync started after $what"
	fi
	replipipectl --json status db > /tmp/st.json
	jq -e '.pipes[0].pairs[0] | .state == "InSync" and .dirty_regions == 0
		and .resync.done_bytes == 0 and .resync.total_bytes == 0
		and .resync.running == false' /tmp/st.json > /dev/null ||
		{ cat /tmp/st.json >&2; vm_fail "pair state or resync progress after $what"; }
	vm_log "pair InSync, dirty 0, resync done_bytes 0 after $what"
	cmp $STORE /tmp/store.before || vm_log "note: the store file was rewritten after $what"
}

vm_brd 2 64
vm_modprobe replipipe
dd if=/dev/urandom of=/dev/ram0 bs=1M count=64 2> /dev/null
vm_backstore replipipe replipipe_0 v1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun"

mkdir -p /run /var/lib
start_daemon /tmp/d1.log
dbref=$(replipipectl create-or-modify --name db --source-system localhost \
	--target-system backup1 --pair $SRC=/dev/ram1) || { cat /tmp/d1.log >&2; vm_fail "create db"; }
emptyref=$(replipipectl create-or-modify --name empty --source-system localhost \
	--target-system backup2 --goal 'instance of REPLIPIPE_PipeSettingData {
		Mode = "Asynchronous"; MaxLagKiB = 4096; RegionSizeKiB = 128; };') ||
	{ cat /tmp/d1.log >&2; vm_fail "create empty"; }
dbid=$(echo "$dbref" | sed -n 's/.*InstanceID="replipipe:\([0-9a-f-]*\)"$/\1/p')
emptyid=$(echo "$emptyref" | sed -n 's/.*InstanceID="replipipe:\([0-9a-f-]*\)"$/\1/p')
[ -n "$dbid" ] && [ -n "$emptyid" ] || vm_fail "references: '$dbref' '$emptyref'"
replipipectl wait db --timeout 240 || { cat /tmp/d1.log >&2; vm_fail "wait InSync"; }
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "legs differ after the initial resync"
out=$(rp-writer --dev "$lun" --log /tmp/w1 --bytes 16M --seed 1) || vm_fail "rp-writer: $out"
rp-verify --dev /dev/ram1 /tmp/w1.* || vm_fail "replica after the first writes"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "legs differ after the first writes"
replipipectl status
definitions > /tmp/defs.before
cat /tmp/defs.before
cp $STORE /tmp/store.before
replipipectl --json status db | jq -e '.pipes[0].pairs[0].resync.done_bytes == 67108864' > /dev/null ||
	vm_fail "the initial resync did not report 64 MiB"

# Watch the kernel from here on: the pair, the claims, and its events.
rm -f /tmp/mon.stop
(
	while [ ! -e /tmp/mon.stop ]; do
		echo "$(rp-nlctl get $dbid | grep '^pair ') $(cat $LIVE)"
		sleep 0.2
	done
) > /tmp/mon.txt 2>&1 &
monpid=$!
rp-nlctl events > /tmp/kev.txt 2>&1 &
evpid=$!
sleep 0.5

vm_log "== 1: SIGKILL while idle, start again"
kill9_daemon
start_daemon /tmp/d2.log
after_restart /tmp/d2.log "the idle restart"
# A second daemon on the same state directory (another socket) stops
# before it reads the store or pushes to the kernel (the kernel monitor
# and the event check below see nothing of it).
rc=0
replipiped --socket /run/replipipe/second.sock 2> /tmp/second.log || rc=$?
cat /tmp/second.log >&2
[ $rc = 1 ] || vm_fail "a second replipiped on the same state dir exited $rc, not 1"
grep -q "is in use by another replipiped" /tmp/second.log || vm_fail "the second daemon did not say why"
! grep -q "reconcile\|store " /tmp/second.log || vm_fail "the second daemon read the store or reconciled"
[ "$(pidof replipiped | wc -w)" = 1 ] || vm_fail "two replipiped running"
vm_log "a second daemon on the same state directory is refused"
w0=$(rp-nlctl get $dbid | sed -n 's/^pair .* writes=\([0-9]*\) .*/\1/p')
out=$(rp-writer --dev "$lun" --log /tmp/w2 --bytes 16M --seed 2) || vm_fail "rp-writer: $out"
echo "$out"
w1=$(rp-nlctl get $dbid | sed -n 's/^pair .* writes=\([0-9]*\) .*/\1/p')
[ "$w1" -gt "$w0" ] || vm_fail "writes_mirrored did not grow ($w0 -> $w1)"
rp-verify --dev /dev/ram1 /tmp/w1.* /tmp/w2.* || vm_fail "replica after the idle restart"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "legs differ after the idle restart"

vm_log "== 2: SIGKILL while a writer runs, start again"
rp-writer --dev "$lun" --log /tmp/w3 --seconds 10 --max-size 256K --seed 3 > /tmp/writer3.out 2>&1 &
wpid=$!
sleep 3
kill9_daemon
sleep 1
start_daemon /tmp/d3.log
after_restart /tmp/d3.log "the restart under writes"
wait $wpid || { cat /tmp/writer3.out; vm_fail "rp-writer during the restart"; }
cat /tmp/writer3.out
rp-verify --dev "$lun" /tmp/w1.* /tmp/w2.* /tmp/w3.* || vm_fail "LUN after the restart under writes"
rp-verify --dev /dev/ram1 /tmp/w1.* /tmp/w2.* /tmp/w3.* || vm_fail "replica after the restart under writes"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "legs differ after the restart under writes"
after_restart /tmp/d3.log "the writes that followed"

# still sampling: it watched the second restart too
kill -0 $monpid 2> /dev/null || vm_fail "the kernel monitor ended before the restarts did"
touch /tmp/mon.stop
wait $monpid || true
# One change the event listener must see (it shows the listener works).
replipipectl create-or-modify --name empty2 --source-system localhost \
	--target-system backup2 --pipe empty > /dev/null || vm_fail "rename empty"
i=0
until grep -q "^event type=pipe_changed pipe=$emptyid " /tmp/kev.txt; do
	sleep 0.1
	i=$((i + 1))
	[ $i -lt 100 ] || { cat /tmp/kev.txt >&2; vm_fail "the event listener saw no pipe_changed"; }
done
kill $evpid
wait $evpid || true
samples=$(wc -l < /tmp/mon.txt)
vm_log "kernel monitor: $samples samples"
# A sample every 0.2 s or so through both restarts and the 10 s writer
# (43 to 64 seen): fewer than 20 and it did not watch them.
[ "$samples" -ge 20 ] || { cat /tmp/mon.txt >&2; vm_fail "the kernel monitor took only $samples samples"; }
bad=$(grep -v ' state=InSync .* dirty=0 .*claims=0 ' /tmp/mon.txt || true)
[ -z "$bad" ] || { echo "$bad" | head -20 >&2; vm_fail "the pair left InSync/dirty=0/claims=0 during the restarts"; }
[ "$(grep -c '^pair ' /tmp/mon.txt)" = "$(wc -l < /tmp/mon.txt)" ] || vm_fail "a sample has no pair"
vm_log "kernel events during the restarts:"
cat /tmp/kev.txt >&2
if grep "^event " /tmp/kev.txt | grep -v "^event type=pipe_changed pipe=$emptyid name=empty2 " | grep -q .; then
	vm_fail "kernel events during the restarts (the only one expected is the rename afterwards)"
fi

vm_log "== stop"
kill -TERM $(pidof replipiped)
i=0
while pidof replipiped > /dev/null; do
	sleep 0.1
	i=$((i + 1))
	[ $i -lt 100 ] || vm_fail "replipiped did not stop on SIGTERM"
done
for l in /tmp/d1.log /tmp/d2.log /tmp/d3.log; do
	echo "---- $l" >&2
	cat $l >&2
done
vm_log "cli-restart done"
