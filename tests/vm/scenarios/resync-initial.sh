#!/bin/sh
# Initial resync through the daemon: a 256 MiB primary full of random data,
# a pipe created with replipipectl to an empty (zeroed) target, `wait --state
# InSync`, then the legs are byte-identical (O_DIRECT compare). Also: the
# progress `wait` prints when stdout is not a TTY, and `status` with the
# resync columns while it runs. Then a primary that grew after its pair was
# made (the kernel mirrors the old size, decision 29) with a target of the
# pair's size whose last region is short: the resync copies up to the
# pair's size and gets InSync (it used to write the whole last region, hit
# the target's end and fail on every try).
# vm-timeout: 600
# vm-cost: 20
# vm-mem: 1024
# vm-bins: jq dmsetup

SRC=replipipe_0/vol1
MIB=256

vm_brd 4 $MIB
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

vm_log "== a primary grown since its pair was made, the target of the pair's size"
# 4 MiB + 4 KiB: 65 regions of 64 KiB, the last one 4 KiB.
dd if=/dev/urandom of=/dev/ram2 bs=1M count=8 oflag=direct 2>/dev/null
grow=$(vm_dm_create rpgrow "0 8200 linear /dev/ram2 0")
gtgt=$(vm_dm_create rpgrowt "0 8200 linear /dev/ram3 0")
vm_backstore replipipe replipipe_0 vol2 $grow > /dev/null
# Claims of one region a second: the last region is still dirty when the
# primary grows.
ref=$(replipipectl create-or-modify --name grown \
	--source-system localhost --target-system localhost \
	--pair replipipe_0/vol2=$gtgt \
	--goal 'instance of CIM_SettingData { RegionSizeKiB = 64; ResyncRateLimitKiBps = 64; };') ||
	vm_fail "create-or-modify grown"
vm_dm_load rpgrow "0 16384 linear /dev/ram2 0"
[ "$(vm_dev_bytes $grow)" = 8388608 ] || vm_fail "the primary did not grow: $(vm_dev_bytes $grow)"
# The new rate restarts the job, which opens the grown primary.
replipipectl create-or-modify --pipe "$ref" --name "" \
	--source-system localhost --target-system localhost \
	--goal 'instance of CIM_SettingData { ResyncRateLimitKiBps = 0; };' > /dev/null ||
	vm_fail "modify grown"
replipipectl wait grown --state InSync --timeout 60 > /tmp/wait.out 2>&1 ||
	{ cat /tmp/wait.out >&2; replipipectl status grown >&2; grep grown /tmp/daemon.log | tail -n 5 >&2; vm_fail "the grown primary's pair is not InSync"; }
vm_cmp_devs $grow $gtgt $((8200 * 512)) || vm_fail "legs differ within the pair's size"
vm_log "InSync; the pair's 4,198,400 bytes identical"
replipipectl delete grown || vm_fail "delete grown"
pid=$(pidof replipiped); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done
