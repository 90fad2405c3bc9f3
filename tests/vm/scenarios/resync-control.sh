#!/bin/sh
# Resync control through the daemon, 256 MiB pairs: the rate limit
# (ResyncRateLimitKiBps) bounds the copy rate; pause stops the copy (the
# bitmap does not shrink) and resume finishes it; deleting the pipe mid-resync
# stops the job (the daemon lives on, the kernel's pipe is gone).
# vm-timeout: 600
# vm-cost: 40
# vm-serial: yes
# vm-mem: 1024
# vm-bins: jq

SRC=replipipe_0/vol1
MIB=256
SIZE=$((MIB * 1048576))
RATE_KIB=65536

vm_brd 2 $MIB
vm_modprobe replipipe
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2>/dev/null
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
mkdir -p /run/replipipe /var/lib/replipipe
replipiped --log-level info 2> /tmp/daemon.log || { cat /tmp/daemon.log >&2; vm_fail "replipiped did not start"; }
now() { cut -d' ' -f1 /proc/uptime; }
# done_bytes NAME: a failed status fails the scenario (an empty answer would
# end wait_done's loop at once)
done_bytes() {
	local js
	js=$(replipipectl --json status $1) || vm_fail "replipipectl --json status $1 failed"
	echo "$js" | jq -r '.pipes[0].pairs[0].resync.done_bytes // 0' ||
		vm_fail "status $1: no JSON: $js"
}
state() { replipipectl --json status $1 | jq -r '.pipes[0].pairs[0].state'; }
kdirty() {
	local k
	k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed"
	echo "$k" | sed -n 's/^pair .* dirty=\([0-9]*\) .*/\1/p'
}
create() { # NAME RATE_KIB
	replipipectl create-or-modify --name $1 --source-system localhost --target-system localhost \
		--pair $SRC=/dev/ram1 \
		--goal "instance of CIM_SettingData { Mode = \"Synchronous\"; RegionSizeKiB = 64; ResyncRateLimitKiBps = $2; };" > /dev/null ||
		vm_fail "create $1"
}
wait_done() { # NAME BYTES
	local i=0 d
	d=$(done_bytes $1)
	while [ "$d" -lt $2 ]; do
		[ $i -lt 600 ] || vm_fail "$1: done_bytes stuck below $2"
		sleep 0.1; i=$((i + 1))
		d=$(done_bytes $1)
	done
}

vm_log "== rate limit $RATE_KIB KiB/s"
dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null
t0=$(now); create rate $RATE_KIB
replipipectl wait rate --state InSync --timeout 300 > /dev/null || vm_fail "wait rate"
t1=$(now)
secs=$(echo "$t1 $t0" | awk '{print $1 - $2}')
rate=$(replipipectl --json status rate | jq -r '.pipes[0].pairs[0].resync.rate_bytes_per_s')
vm_log "RESULT rate limit: 256 MiB in $secs s (create to InSync), daemon rate $rate B/s, limit $((RATE_KIB * 1024)) B/s"
min=$(echo $SIZE $RATE_KIB | awk '{print $1 / ($2 * 1024) * 0.9}')
awk -v s=$secs -v m=$min 'BEGIN { exit !(s >= m) }' || vm_fail "faster than the limit: $secs s < $min s"
[ "$rate" -le $((RATE_KIB * 1024 * 11 / 10)) ] || vm_fail "reported rate $rate above the limit"
rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "rate: legs differ"
replipipectl delete rate > /dev/null

vm_log "== pause and resume"
dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null
create pr 32768
wait_done pr $((SIZE / 4))
replipipectl pause pr || vm_fail "pause"
sleep 0.5
d1=$(done_bytes pr); k1=$(kdirty); s1=$(state pr)
sleep 2
d2=$(done_bytes pr); k2=$(kdirty); s2=$(state pr)
vm_log "paused: state $s1/$s2, done_bytes $d1 -> $d2, kernel dirty $k1 -> $k2"
[ "$s2" = Paused ] || vm_fail "state after pause: $s2"
[ "$k1" = "$k2" ] || vm_fail "the bitmap shrank while paused: $k1 -> $k2"
[ "$k2" -gt 0 ] || vm_fail "nothing left dirty: paused too late"
replipipectl status pr
replipipectl resume pr || vm_fail "resume"
replipipectl wait pr --state InSync --timeout 300 > /dev/null || vm_fail "wait after resume"
rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "pause/resume: legs differ"
vm_log "resumed to InSync, identical"
replipipectl delete pr > /dev/null

vm_log "== pipe deleted mid-resync"
dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null
create del 32768
wait_done del $((SIZE / 4))
replipipectl delete del || vm_fail "delete mid-resync"
sleep 1
k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed after the delete"
[ -z "$k" ] || vm_fail "kernel pipe left: $k"
pidof replipiped > /dev/null || vm_fail "the daemon died"
replipipectl --json status > /tmp/st.json || vm_fail "status after delete"
[ "$(jq '.pipes | length' /tmp/st.json)" = 0 ] || vm_fail "pipes left in status"
grep "resync" /tmp/daemon.log | tail -n 4
grep -q "resync pipe .*: stopped" /tmp/daemon.log || vm_fail "no 'stopped' for the deleted pipe's job"
# the daemon still resyncs a new pipe
dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null
create again 0
replipipectl wait again --state InSync --timeout 300 > /dev/null || vm_fail "wait again"
rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "after delete: legs differ"
replipipectl delete again > /dev/null
pid=$(pidof replipiped); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done
