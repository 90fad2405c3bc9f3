#!/bin/sh
# Resumable resync: replipiped SIGKILLed at about half way through the initial
# resync of a 256 MiB pair, started again: the pair reaches InSync, the legs
# are byte-identical, and the bytes copied over both runs stay below 1.6 x
# the device size. Bytes copied are counted twice: by the kernel (sectors
# written to the target, a dm-linear device over /dev/ram1 that nothing else
# writes to: /sys/block/dm-0/stat) and by the daemons (done_bytes of `status
# --json`, last value seen before the kill + final value of the second run).
# The resync is rate-limited (ResyncRateLimitKiBps 32768, ~8 s) so the kill
# lands mid-way whatever the emulator's speed.
# Then a kill with writes in flight: a dm-delay table holds the target's
# writes 10 s, and replipiped is killed with some in the kernel. Its process
# ends without waiting for them; the daemon started next must not write the
# target before they have landed (they could land over its newer copy, in
# regions it reported clean): the target's writes in flight must only go
# down from the kill until they are none, and the new daemon says why it
# waits. The legs end identical.
# vm-timeout: 600
# vm-cost: 40
# vm-mem: 1024
# vm-bins: jq dmsetup

SRC=replipipe_0/vol1
MIB=256
SIZE=$((MIB * 1048576))

vm_brd 2 $MIB
vm_modprobe replipipe
vm_modprobe dm_mod
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2>/dev/null
dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null
dmsetup --noudevsync create rptgt --table "0 $((SIZE / 512)) linear /dev/ram1 0" || vm_fail "dmsetup"
TGT=/dev/dm-0
vm_wait_path $TGT
written() { awk '{print $7 * 512}' /sys/block/dm-0/stat; }
[ "$(written)" = 0 ] || vm_fail "target written before the pipe: $(written)"
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
mkdir -p /run/replipipe /var/lib/replipipe

start_daemon() { # LOG
	replipiped --log-level info 2> "$1" || { cat "$1" >&2; vm_fail "replipiped did not start"; }
}
# done_bytes: a failed status fails the scenario (an empty answer would end
# the wait for half way at once, and count as 0 in the ratio below)
done_bytes() {
	local js
	js=$(replipipectl --json status crash 2> /tmp/status.err) ||
		vm_fail "replipipectl --json status crash: $(cat /tmp/status.err)"
	echo "$js" | jq -r '.pipes[0].pairs[0].resync.done_bytes // 0' ||
		vm_fail "status crash: no JSON: $js"
}
kernel_dirty() { rp-nlctl get | sed -n 's/^pair .* dirty=\([0-9]*\) .*/\1/p'; }

start_daemon /tmp/daemon1.log
replipipectl create-or-modify --name crash \
	--source-system localhost --target-system localhost --pair $SRC=$TGT \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; ResyncRateLimitKiBps = 32768; };' > /dev/null ||
	vm_fail "create-or-modify"

vm_log "== waiting for half way"
d1=0; i=0
while [ "$d1" -lt $((SIZE / 2)) ]; do
	[ $i -lt 1200 ] || vm_fail "resync did not reach half way: done_bytes=$d1"
	sleep 0.1; i=$((i + 1))
	d1=$(done_bytes)
done
pid=$(pidof replipiped)
kill -KILL $pid
while kill -0 $pid 2>/dev/null; do sleep 0.05; done
w1=$(written)
dirty=$(kernel_dirty)
vm_log "killed replipiped at done_bytes=$d1; kernel: target written $w1 bytes, dirty regions $dirty of $((SIZE / 65536))"
[ "$dirty" -gt 0 ] || vm_fail "nothing dirty after the kill: not mid-way"
[ "$((dirty * 65536 + w1))" -ge "$SIZE" ] || vm_fail "clean regions were not all written: dirty=$dirty written=$w1"
rp-nlctl get | grep '^pair '

vm_log "== restart"
start_daemon /tmp/daemon2.log
replipipectl wait crash --state InSync --timeout 300 > /tmp/wait.out 2>&1 ||
	{ cat /tmp/wait.out /tmp/daemon2.log >&2; vm_fail "wait InSync after the restart"; }
tail -n 2 /tmp/wait.out
grep resync /tmp/daemon2.log || true
d2=$(done_bytes)
w2=$(written)
vm_log "second run: done_bytes=$d2; kernel: target written $w2 bytes in total"
rp-verify --cmp /dev/ram0 $TGT --region-kib 64 | head -n 20
rp-verify --cmp /dev/ram0 $TGT > /dev/null || vm_fail "legs differ after the restarted resync"
rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "legs differ (ram1)"
ratio_k=$(echo "$w2 $SIZE" | awk '{printf "%.3f", $1 / $2}')
ratio_d=$(echo "$d1 $d2 $SIZE" | awk '{printf "%.3f", ($1 + $2) / $3}')
vm_log "RESULT bytes copied over both runs: kernel (target sectors written) $w2 = ${ratio_k} x device; daemons (done_bytes $d1 + $d2) = ${ratio_d} x device"
awk -v r=$ratio_k 'BEGIN { exit !(r < 1.6) }' || vm_fail "copied ${ratio_k} x the device (>= 1.6)"
awk -v r=$ratio_d 'BEGIN { exit !(r < 1.6) }' || vm_fail "daemons report ${ratio_d} x the device (>= 1.6)"
replipipectl delete crash > /dev/null || vm_fail "delete"

vm_log "== kill with writes in flight"
vm_modprobe dm_delay
# W: the target's writes the delay holds ("0 <len> delay <reads> <writes>
# <flushes>"; dm-0's inflight counts none of them)
writes_in_flight() { W=$(dmsetup status rptgt | awk '$3 == "delay" { print $5 }'); }
# 8 MiB/s: the whole copy would take 32 s, so it is still going when the
# delay is set.
replipipectl create-or-modify --name inflight \
	--source-system localhost --target-system localhost --pair $SRC=$TGT \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; ResyncRateLimitKiBps = 8192; };' > /dev/null ||
	vm_fail "create-or-modify inflight"
i=0
until [ "$(replipipectl --json status inflight | jq -r '.pipes[0].pairs[0].resync.done_bytes // 0')" -gt 0 ]; do
	[ $i -lt 600 ] || vm_fail "the resync of inflight did not start"
	sleep 0.1; i=$((i + 1))
done
# Writes held 10 s; reads and flushes not (a flush held would keep the
# copier's thread in fdatasync, which SIGKILL waits for).
dmsetup --noudevsync reload rptgt --table "0 $((SIZE / 512)) delay /dev/ram1 0 0 /dev/ram1 0 10000 /dev/ram1 0 0" &&
	dmsetup --noudevsync resume rptgt || vm_fail "dmsetup: delay the target's writes"
vm_log "target's writes delayed 10 s"
i=0
writes_in_flight
until [ "$W" -ge 1 ]; do
	[ $i -lt 400 ] || vm_fail "no resync write reached the delayed target"
	sleep 0.05; i=$((i + 1))
	writes_in_flight
done
pid=$(pidof replipiped)
kill -KILL $pid
while kill -0 $pid 2>/dev/null; do sleep 0.05; done
writes_in_flight
left=$W
vm_log "replipiped killed; the target still has $left writes of it in flight"
[ "$left" -ge 1 ] || vm_fail "the killed daemon's writes did not outlive it: nothing to wait for"
start_daemon /tmp/daemon3.log
i=0
while :; do
	writes_in_flight
	[ "$W" -le "$left" ] ||
		{ cat /tmp/daemon3.log >&2; vm_fail "the restarted daemon wrote the target while the killed one's writes were in flight ($left in flight, then $W)"; }
	left=$W
	[ "$W" -gt 0 ] || break
	[ $i -lt 600 ] || vm_fail "the killed daemon's writes never landed"
	sleep 0.05; i=$((i + 1))
done
vm_log "the killed daemon's writes landed; the new daemon wrote nothing before"
grep -q "is locked by another open of it (flock): pid [0-9]*, which has exited: writes it left in flight" /tmp/daemon3.log ||
	{ cat /tmp/daemon3.log >&2; vm_fail "the restarted daemon did not say why it waited"; }
grep "is locked by another open" /tmp/daemon3.log | head -n 1
# The rest at full speed: the check is done.
replipipectl create-or-modify --name "" --pipe inflight \
	--source-system localhost --target-system localhost \
	--goal 'instance of CIM_SettingData { ResyncRateLimitKiBps = 0; };' > /dev/null ||
	vm_fail "modify inflight: no rate limit"
dmsetup --noudevsync reload rptgt --table "0 $((SIZE / 512)) linear /dev/ram1 0" &&
	dmsetup --noudevsync resume rptgt || vm_fail "dmsetup: target back to linear"
replipipectl wait inflight --state InSync --timeout 300 > /tmp/wait.out 2>&1 ||
	{ cat /tmp/wait.out /tmp/daemon3.log >&2; vm_fail "wait InSync after the second restart"; }
rp-verify --cmp /dev/ram0 $TGT > /dev/null || vm_fail "legs differ after the writes in flight landed"
replipipectl delete inflight > /dev/null || vm_fail "delete inflight"
pid=$(pidof replipiped); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done
