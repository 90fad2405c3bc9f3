#!/bin/sh
# Initial resync through the daemon: a 256 MiB primary full of random data,
# a pipe created with replipipectl to an empty (zeroed) target, `wait --state
# InSync`, then the legs are byte-identical (O_DIRECT compare). Also: the
# progress `wait` prints when stdout is not a TTY, and `status` with the
# resync columns while it runs.
# vm-timeout: 600
# vm-mem: 1024
# vm-bins: jq

SRC=replipipe_0/vol1
MIB=256

vm_brd 2 $MIB
vm_modprobe replipipe
vm_log "== $MIB MiB of random data on the primary, the target zeroed"
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2>/dev/null
dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null
! rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "legs equal before the resync"
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null

mkdir -p /run/replipipe /var/lib/replipipe
replipiped --log-level info 2> /tmp/daemon.log || { cat /tmp/daemon.log >&2; vm_fail "replipiped did not start"; }

vm_log "== create the pipe, wait for InSync"
t0=$(cut -d' ' -f1 /proc/uptime)
replipipectl create-or-modify --name initial \
	--source-system localhost --target-system localhost \
	--pair $SRC=/dev/ram1 \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; };' > /dev/null ||
	vm_fail "create-or-modify"
replipipectl status || true
replipipectl wait initial --state InSync --timeout 400 > /tmp/wait.out 2>&1 ||
	{ cat /tmp/wait.out >&2; vm_fail "wait InSync"; }
t1=$(cut -d' ' -f1 /proc/uptime)
cat /tmp/wait.out
# not a TTY: plain lines, no escape sequences, no carriage returns
! grep -q "$(printf '\r')" /tmp/wait.out || vm_fail "wait drew a bar into a file"
vm_log "InSync after $(echo "$t1 $t0" | awk '{printf "%.1f", $1 - $2}') s"
replipipectl status
replipipectl --json status initial > /tmp/st.json
jq -e '.pipes[0].pairs[0] | .state == "InSync" and .dirty_regions == 0' /tmp/st.json > /dev/null ||
	{ cat /tmp/st.json >&2; vm_fail "pair not InSync/clean in status"; }
jq -cM '.pipes[0].pairs[0].resync' /tmp/st.json
grep "resync" /tmp/daemon.log || true

vm_log "== the legs"
rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib 64 | head -n 20
rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "legs differ after InSync"
vm_log "byte-identical: $MIB MiB"

replipipectl delete initial || vm_fail "delete"
pid=$(pidof replipiped); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done
