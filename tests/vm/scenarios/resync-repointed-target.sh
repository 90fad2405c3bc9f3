#!/bin/sh
# A resync never copies through a path that names another device than the
# kernel mirrors. The pair's target is a symlink (as /dev/disk/by-id/...
# paths are) to /dev/ram1. replipiped is killed during the initial resync,
# the symlink is re-pointed to /dev/ram2 (a disk that is not the pair's),
# and replipiped starts again: its job opens the path, finds ram2's device
# number where the kernel mirrors ram1's (REPLIPIPE_A_PAIR_TGT_DEV), and
# fails without writing a byte; ram2 is unchanged, and status says why.
# Before, the job copied the source over ram2 and cleared the dirty bits,
# so the pair went InSync with ram1 never written. Once the symlink is
# back, a retry finishes the resync and the legs are identical.
# vm-timeout: 300
# vm-cost: 20
# vm-mem: 512
# vm-bins: jq

SRC=replipipe_0/vol1
MIB=32
LINK=/dev/rp-target

vm_brd 3 $MIB
vm_modprobe replipipe
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2> /dev/null
dd if=/dev/urandom of=/dev/ram2 bs=1M count=$MIB oflag=direct 2> /dev/null
ram2_sum=$(vm_sum /dev/ram2)
ln -s /dev/ram1 $LINK
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null

# done_bytes: a failed status fails the scenario (an empty answer would end
# the wait for the resync's start at once)
done_bytes() {
	local js
	js=$(replipipectl --json status repoint 2> /tmp/status.err) ||
		vm_fail "replipipectl --json status repoint: $(cat /tmp/status.err)"
	echo "$js" | jq -r '.pipes[0].pairs[0].resync.done_bytes // 0' ||
		vm_fail "status repoint: no JSON: $js"
}
pair_state() { vm_field "$(rp-nlctl get | grep '^pair ')" state; }

vm_daemon_start /tmp/daemon1.log --log-level info
# 4 MiB/s: the 32 MiB copy lasts about 8 s, long enough to stop it midway.
replipipectl create-or-modify --name repoint \
	--source-system localhost --target-system localhost --pair $SRC=$LINK \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; ResyncRateLimitKiBps = 4096; };' > /dev/null ||
	vm_fail "create-or-modify"
i=0
d=$(done_bytes)
while [ "$d" -eq 0 ]; do
	[ $i -lt 300 ] || vm_fail "the initial resync did not start"
	sleep 0.1
	i=$((i + 1))
	d=$(done_bytes)
done
kill -KILL $VM_DAEMON_PID
rc=0
wait $VM_DAEMON_PID 2> /dev/null || rc=$?
[ $rc = 137 ] || vm_fail "replipiped ended with $rc, not killed by SIGKILL"
VM_DAEMON_PID=
[ "$(pair_state)" = Syncing ] || vm_fail "setup: the pair is $(pair_state), not Syncing, after the kill"
rp-nlctl get | grep '^pair '

vm_log "== the target's symlink now names /dev/ram2"
ln -sfn /dev/ram2 $LINK
vm_daemon_start /tmp/daemon2.log --log-level info
MISMATCH="$LINK is block device $(cat /sys/block/ram2/dev) but the kernel mirrors block device $(cat /sys/block/ram1/dev)"
# Until a job refuses the path, or the pair is no longer Syncing (a job
# that copied through the path).
i=0
until grep -q "$MISMATCH" /tmp/daemon2.log || [ "$(pair_state)" != Syncing ]; do
	[ $i -lt 200 ] || break
	sleep 0.1
	i=$((i + 1))
done
# Let any retry run too.
sleep 3
[ "$(vm_sum /dev/ram2)" = "$ram2_sum" ] || vm_fail "the resync wrote /dev/ram2, a disk that is not the pair's"
[ "$(pair_state)" = Syncing ] || vm_fail "the pair is $(pair_state) although its target was not copied"
grep "$MISMATCH" /tmp/daemon2.log | head -n 1 | grep . ||
	vm_daemon_fail /tmp/daemon2.log "no resync job said why it refused the re-pointed target"
# status tells the administrator too, without the log.
replipipectl status repoint
st=$(replipipectl --json status repoint) || vm_fail "status --json"
echo "$st" | jq -e '.pipes[0].pairs[0].resync.failures >= 1' > /dev/null ||
	vm_fail "status does not count the failed jobs: $st"
echo "$st" | jq -r '.pipes[0].pairs[0].resync.last_error' | grep -qF "$MISMATCH" ||
	vm_fail "status does not say why the resync fails: $st"

vm_log "== the symlink is back: a retry finishes the resync"
ln -sfn /dev/ram1 $LINK
replipipectl wait repoint --state InSync --timeout 120 > /tmp/wait.out 2>&1 ||
	{ cat /tmp/wait.out; vm_daemon_fail /tmp/daemon2.log "no InSync after the symlink was restored"; }
rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "legs differ after the resync"
[ "$(vm_sum /dev/ram2)" = "$ram2_sum" ] || vm_fail "/dev/ram2 changed"
replipipectl delete repoint > /dev/null || vm_fail "delete"
vm_daemon_stop /tmp/daemon2.log
vm_log "resync-repointed-target done"
