#!/bin/sh
# Initial resync under concurrent writes, 5 times with different seeds: a
# 256 MiB primary (random data), an empty target, 4 rp-writer threads
# (O_DIRECT, 4 KiB..1 MiB) writing through the tcm_loop LUN from before the
# pipe is created until after it is InSync; then the writers stop (SIGTERM:
# logs kept), the legs are byte-identical and every acknowledged write
# verifies on both legs.
# vm-timeout: 1500
# vm-cost: 60
# vm-mem: 1024
# vm-bins: jq

SRC=replipipe_0/vol1
MIB=256
REPS=5

vm_brd 2 $MIB
vm_modprobe replipipe
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2>/dev/null
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun"
mkdir -p /run/replipipe /var/lib/replipipe
replipiped --log-level info 2> /tmp/daemon.log || { cat /tmp/daemon.log >&2; vm_fail "replipiped did not start"; }

now() { cut -d' ' -f1 /proc/uptime; }
rep=1
while [ $rep -le $REPS ]; do
	seed=$((rep * 7919 + 13))
	pipe=race$rep
	vm_log "== run $rep/$REPS seed $seed"
	dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null
	rm -f /tmp/w.*
	rp-writer --dev "$lun" --log /tmp/w --threads 4 --min-size 4K --max-size 1M \
		--seconds 600 --seed $seed > /tmp/writer.out 2>&1 &
	wpid=$!
	sleep 1
	kill -0 $wpid 2>/dev/null || { cat /tmp/writer.out >&2; vm_fail "writer died early"; }
	t0=$(now)
	replipipectl create-or-modify --name $pipe \
		--source-system localhost --target-system localhost \
		--pair $SRC=/dev/ram1 \
		--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; };' > /dev/null ||
		vm_fail "create-or-modify $pipe"
	replipipectl wait $pipe --state InSync --timeout 600 > /tmp/wait.out 2>&1 ||
		{ cat /tmp/wait.out >&2; vm_fail "run $rep: wait InSync"; }
	t1=$(now)
	tail -n 2 /tmp/wait.out
	# the writers were running for the whole resync
	kill -0 $wpid 2>/dev/null || { cat /tmp/writer.out >&2; vm_fail "run $rep: writers ended before InSync"; }
	sleep 1 # mirrored writes after InSync too
	kill -TERM $wpid
	wait $wpid || { cat /tmp/writer.out >&2; vm_fail "run $rep: writer failed"; }
	cat /tmp/writer.out
	replipipectl --json status $pipe > /tmp/st.json
	jq -e '.pipes[0].pairs[0] | .state == "InSync" and .dirty_regions == 0' /tmp/st.json > /dev/null ||
		{ cat /tmp/st.json >&2; vm_fail "run $rep: not InSync/clean after the writers"; }
	jq -cM '.pipes[0].pairs[0].resync' /tmp/st.json
	if ! rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib 64 > /tmp/cmp.out; then
		head -n 20 /tmp/cmp.out >&2; vm_fail "run $rep: legs differ"
	fi
	cat /tmp/cmp.out
	rp-verify --dev /dev/ram0 /tmp/w.* || vm_fail "run $rep: acked writes bad on the primary"
	rp-verify --dev /dev/ram1 /tmp/w.* || vm_fail "run $rep: acked writes bad on the target"
	vm_log "run $rep: PASS, InSync after $(echo "$t1 $t0" | awk '{printf "%.1f", $1 - $2}') s under 4 writers"
	replipipectl delete $pipe > /dev/null || vm_fail "delete $pipe"
	rep=$((rep + 1))
done
grep -E "resync .*(done|failed)" /tmp/daemon.log || true
pid=$(pidof replipiped); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done
vm_tcm_loop_unexport $SRC
