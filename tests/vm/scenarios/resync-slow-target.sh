#!/bin/sh
# Resync onto a bandwidth-bound target (iSCSI over a thin WAN link, played by
# a memory-backed null_blk with mbps=1 and 16 KiB requests: about 0.8 MB/s)
# with claim_timeout_sec lowered to 5 s. A 16 MiB pair starts fully dirty.
# Claims of a fixed size (one copier queue, 32 MiB: the whole 16 MiB dirty
# run here) took ~20 s, the kernel dropped every one after 5 s, RESYNC_DONE
# found no claim and the resync never ended. Sized from the measured speed
# they last about a second: InSync within a bound, no claim dropped, legs
# byte-identical; a writer through the LUN during the resync never waits
# anywhere near a claim time-out, and its acknowledged writes are on both
# legs.
# vm-timeout: 300
# vm-cost: 75
# vm-mem: 1024
# vm-bins: jq

SRC=replipipe_0/vol1
MIB=16
TIMEOUT_S=5    # claim_timeout_sec for the scenario
INSYNC_S=60    # bound for the resync (~20 s of copying at 0.8 MB/s)
MAX_WRITE_MS=4000
CFG=/sys/kernel/config/nullb/rpslow
TGT=/dev/rpslow # this null_blk names the disk after its configfs item

vm_brd 1 $MIB
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2>/dev/null

# null_blk 6.1 throttles with a budget of mbps MiB/50 (20971 bytes) per
# 20 ms tick, reset each tick: a request larger than that never passes, so
# requests are capped at 16 KiB (max_sectors 32), one per tick.
vm_modprobe null_blk nr_devices=0
mkdir $CFG || vm_fail "mkdir $CFG"
echo $MIB > $CFG/size
echo 1 > $CFG/memory_backed
echo 32 > $CFG/max_sectors
echo 1 > $CFG/mbps || vm_fail "null_blk has no mbps"
echo 1 > $CFG/power || vm_fail "cannot power on null_blk"
vm_wait_path $TGT
[ "$(vm_dev_bytes $TGT)" = $((MIB * 1048576)) ] || vm_fail "$TGT: $(vm_dev_bytes $TGT) bytes"
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/zero of=$TGT bs=64k count=8 oflag=direct 2>/dev/null
t1=$(cut -d' ' -f1 /proc/uptime)
vm_log "target $TGT: 512 KiB written in $(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}') s"

vm_modprobe replipipe
echo $TIMEOUT_S > /sys/module/replipipe/parameters/claim_timeout_sec ||
	vm_fail "cannot set claim_timeout_sec"
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
vm_daemon_start /tmp/daemon.log --log-level info

vm_log "== $MIB MiB dirty onto the slow target, claim_timeout_sec=$TIMEOUT_S"
dmesg -c > /dev/null
ts=$(cut -d' ' -f1 /proc/uptime)
replipipectl create-or-modify --name slow \
	--source-system localhost --target-system localhost --pair $SRC=$TGT \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; };' > /dev/null ||
	vm_daemon_fail /tmp/daemon.log "create-or-modify"
# Small writes all over the LUN while the resync runs (~15 s of it): each
# waits for any claim over its region, then for the slow target.
rp-writer --dev "$lun" --log /tmp/w --threads 1 --min-size 4K --max-size 4K \
	--seconds 15 --seed 77 > /tmp/writer.out 2>&1 &
wpid=$!
replipipectl wait slow --state InSync --timeout $INSYNC_S > /tmp/wait.out 2>&1 || {
	cat /tmp/wait.out >&2
	replipipectl status slow >&2 || true
	dmesg | grep -c 'dropped: timed out' | sed 's/^/kernel: claims timed out: /' >&2
	vm_daemon_fail /tmp/daemon.log "not InSync within $INSYNC_S s"
}
te=$(cut -d' ' -f1 /proc/uptime)
tail -n 1 /tmp/wait.out
vm_log "RESULT InSync after $(echo "$te $ts" | awk '{printf "%.1f", $1 - $2}') s"
wait $wpid || { cat /tmp/writer.out >&2; vm_fail "writer failed"; }
cat /tmp/writer.out

vm_log "== no claim dropped, writes never held for a time-out"
dropped=$(dmesg | grep -c 'dropped: timed out' || true)
grep 'kernel dropped' /tmp/daemon.log || true
[ "$dropped" = 0 ] || vm_fail "$dropped claims timed out in the kernel"
lat=$(sed -n 's/^writer: max_latency_ms=\([0-9.]*\) .*$/\1/p' /tmp/writer.out)
[ -n "$lat" ] || vm_fail "no latency report"
vm_log "RESULT max write latency ${lat} ms during the resync"
awk -v l=$lat -v m=$MAX_WRITE_MS 'BEGIN { exit !(l < m) }' ||
	vm_fail "a write took ${lat} ms (>= $MAX_WRITE_MS)"

vm_log "== the legs"
rp-verify --cmp /dev/ram0 $TGT --region-kib 64 | head -n 20
rp-verify --cmp /dev/ram0 $TGT > /dev/null || vm_fail "legs differ after InSync"
rp-verify --dev /dev/ram0 /tmp/w.* || vm_fail "acked writes bad on the primary"
rp-verify --dev $TGT /tmp/w.* || vm_fail "acked writes bad on the target"

replipipectl delete slow > /dev/null || vm_fail "delete"
vm_daemon_stop /tmp/daemon.log
vm_tcm_loop_unexport $SRC
