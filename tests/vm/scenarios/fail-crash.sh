#!/bin/sh
# Crash during writes, then only the write-intent regions are resynced.
# Two boots on the same qemu disk images: primary and target (256 MiB each),
# the backstore's write-intent record (16 MiB), and an ext4 file system
# ("persist") holding the daemon's state dir (bind-mounted on
# /var/lib/replipipe) and the writers' logs.
#  Boot 1: a replipipe backstore on the primary WITH the record, exported
#   through tcm_loop; replipiped; a synchronous pipe (64 KiB regions) made
#   with replipipectl, InSync; 4 writer threads through the LUN on a 4 MiB
#   window (1.6 % of the device) with durable logs (rp-writer --log-sync:
#   each acknowledged write is on disk before the thread's next write); after
#   a few seconds of writes the VM is hard-reset (sysrq b, no sync).
#  Boot 2: the backstore again on the same disks and record, replipiped with
#   the same state dir restores the pipe from its store; the pair resyncs
#   from the record only: bytes copied to the target, counted by the kernel
#   (/sys/block/<target>/stat, sectors written), at most 2 x the window (a
#   full resync would copy the whole 256 MiB: the scenario fails then). Then
#   every logged write verifies on the primary, through the LUN and on the
#   target (rp-verify --crashed: a block holds its last logged write or, only
#   when its thread had one more write beyond its log, that one), and the
#   legs are identical. A last short write run checks that the pair mirrors.
# vm-timeout: 400
# vm-cost: 40
# vm-mem: 1024
# vm-boots: 2
# vm-disks: primary:256 target:256 intent:16 persist:64
# vm-bins: mkfs.ext4 jq

PIPE=crash
SRC=replipipe_0/vol1
CFS=/sys/kernel/config/target/core/$SRC
REGION_KIB=64
OFFSET_MIB=64
SPAN_MIB=4
DLOG=/tmp/replipiped.log
STORE=/var/lib/replipipe/pipes.json
LOGS=/persist/logs
LIVE=/sys/module/replipipe/parameters/live_objects

P=$(vm_disk primary)
T=$(vm_disk target)
I=$(vm_disk intent)
S=$(vm_disk persist)
TNAME=${T#/dev/}
DEV_BYTES=$(vm_dev_bytes "$P")
SPAN_BYTES=$((SPAN_MIB * 1048576))

pair_line() { rp-nlctl get | grep "^pair "; }
daemon_fail() { vm_daemon_fail $DLOG "$@"; }
target_written() { awk '{print $7 * 512}' "/sys/block/$TNAME/stat"; }
acked_records() { cat $LOGS/w.* 2> /dev/null | awk '/^A / { n++ } END { print n + 0 }'; }

mount_persist() {
	vm_modprobe ext4
	mkdir -p /persist
	mount -t ext4 "$S" /persist || vm_fail "mount $S (ext4)"
	mkdir -p /persist/replipipe $LOGS /var/lib/replipipe /run/replipipe
	mount -o bind /persist/replipipe /var/lib/replipipe || vm_fail "bind-mount the state dir"
}
# make_backstore: the backstore on the primary with the write-intent record
make_backstore() {
	vm_backstore replipipe replipipe_0 vol1 "$P" "$I" > /dev/null
	vm_log "backstore info: $(cat $CFS/info)"
	grep -q "intent: $I" $CFS/info || vm_fail "the backstore's info does not show its record $I"
}

vm_log "boot $(vm_boot) of $(vm_boots): primary $P, target $T, record $I, persist $S"
case "$(vm_boot)" in
1)
	mkfs.ext4 -q -F "$S" || vm_fail "mkfs.ext4 $S"
	mount_persist
	[ "$(target_written)" = 0 ] || vm_fail "target written before the pipe"
	make_backstore
	lun=$(vm_tcm_loop_export $SRC)
	vm_daemon_start $DLOG --log-level info
	replipipectl create-or-modify --name $PIPE --source-system localhost \
		--target-system localhost --pair "$SRC=$T" \
		--goal "instance of CIM_SettingData { Mode = \"Synchronous\"; RegionSizeKiB = $REGION_KIB; };" ||
		daemon_fail "create-or-modify"
	replipipectl wait $PIPE --state InSync --timeout 400 || daemon_fail "initial sync"
	pair=$(pair_line) || vm_fail "no pair in the kernel"
	vm_log "InSync: $pair"
	# The backstore has a record (a new disk): this pair binds it anew.
	intent=$(vm_field "$pair" intent)
	[ "$intent" = new ] || vm_fail "boot 1: the pair's record is '$intent', not new: $pair"
	initial=$(target_written)
	vm_log "initial sync wrote $initial bytes to the target"
	[ "$initial" -ge "$DEV_BYTES" ] || vm_fail "the initial sync wrote less than the device"
	[ -s $STORE ] || vm_fail "no $STORE"
	jq -e '.pipes | length == 1' < $STORE > /dev/null || vm_fail "the store does not hold the pipe"

	vm_log "== writes through $lun on ${SPAN_MIB} MiB at ${OFFSET_MIB} MiB, then the crash"
	rp-writer --dev "$lun" --log $LOGS/w --log-sync --threads 4 \
		--offset ${OFFSET_MIB}M --span ${SPAN_MIB}M --min-size 4K --max-size 64K \
		--seconds 600 --seed 61 > /tmp/writer.out 2>&1 &
	writer=$!
	# At least 5 s and 400 logged writes; and the record's marks of the
	# initial sync (every region) cleared lazily, so that it marks about the
	# written window only (the kernel reports intent_marked).
	t0=$(cut -d. -f1 /proc/uptime)
	while :; do
		sleep 0.5
		kill -0 $writer 2> /dev/null || { cat /tmp/writer.out >&2; vm_fail "the writer stopped"; }
		el=$(($(cut -d. -f1 /proc/uptime) - t0))
		pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get while the writers run"
		marked=$(vm_field "$pair" intent_marked)
		[ "$el" -lt 5 ] || [ "$(acked_records)" -lt 400 ] ||
			[ "${marked:-0}" -gt $((2 * SPAN_BYTES / (REGION_KIB * 1024))) ] || break
		[ "$el" -lt 120 ] || vm_fail "after 120 s: $(acked_records) writes logged, $marked regions marked in the record"
	done
	kill -0 $writer 2> /dev/null || { cat /tmp/writer.out >&2; vm_fail "the writer stopped"; }
	vm_log "$(acked_records) writes logged after $el s; pair: $(pair_line)"
	vm_log "crashing with the writers running"
	vm_crash_reboot
	;;
2)
	mount_persist
	[ -s $STORE ] || vm_fail "the state dir lost $STORE in the crash"
	jq -e '.pipes | length == 1' < $STORE > /dev/null || vm_fail "the store lost the pipe"
	ls $LOGS/w.0 $LOGS/w.1 $LOGS/w.2 $LOGS/w.3 > /dev/null || vm_fail "writer logs lost"
	logged=$(acked_records)
	vm_log "writer logs: $logged acknowledged writes survived the crash"
	[ "$logged" -ge 400 ] || vm_fail "only $logged logged writes survived (>= 400 were logged before the crash)"
	w0=$(target_written)
	make_backstore
	k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed before the daemon started"
	echo "$k" | grep -q '^pipe ' && vm_fail "a pipe in the kernel before the daemon started"
	lun=$(vm_tcm_loop_export $SRC)

	vm_log "== replipiped restores the pipe from its store"
	vm_daemon_start $DLOG --log-level info
	grep -q "reconcile:.*pushed to the kernel" $DLOG || daemon_fail "the pipe was not pushed from the store"
	pair=$(pair_line) || daemon_fail "no pair after the daemon started"
	vm_log "restored: $pair"
	replipipectl wait $PIPE --state InSync --timeout 400 || daemon_fail "not InSync after the crash"
	w1=$(target_written)
	copied=$((w1 - w0))
	pair=$(pair_line) || daemon_fail "no pair after the resync"
	vm_log "InSync: $pair"
	intent=$(vm_field "$pair" intent)
	loaded=$(vm_field "$pair" intent_regions)
	pct=$(awk -v c=$copied -v d="$DEV_BYTES" 'BEGIN { printf "%.2f", 100 * c / d }')
	vm_log "fail-crash: resync copied $copied bytes ($pct % of the device; written window $SPAN_BYTES bytes," \
		"record gave ${loaded:-?} regions of $REGION_KIB KiB)"

	vm_log "== every logged write, on the primary, through the LUN and on the target"
	rp-verify --dev "$P" --crashed $LOGS/w.* || vm_fail "logged writes not on the primary"
	rp-verify --dev "$lun" --crashed $LOGS/w.* || vm_fail "logged writes not read back through the LUN"
	rp-verify --dev "$T" --crashed $LOGS/w.* || vm_fail "logged writes not on the target"
	rp-verify --cmp "$P" "$T" --region-kib $REGION_KIB > /tmp/cmp ||
		{ head -n 20 /tmp/cmp; vm_fail "the legs differ after the resync"; }
	cat /tmp/cmp

	vm_log "== only the write-intent regions were resynced"
	[ "$copied" -gt 0 ] || vm_fail "the resync copied nothing: writes were in flight at the crash"
	[ "$copied" -le $((2 * SPAN_BYTES)) ] ||
		vm_fail "the resync copied $copied bytes, more than 2 x the written window ($SPAN_BYTES): not from the record"
	# The same pair on the same record: its marks are loaded, always.
	[ "$intent" = loaded ] || vm_fail "the pair did not load the record (intent=$intent): $pair"
	[ "$loaded" -ge 1 ] || vm_fail "the record gave no dirty region (intent_regions=$loaded)"
	[ "$copied" -le $((loaded * REGION_KIB * 1024)) ] ||
		vm_fail "copied $copied bytes, more than the $loaded regions the record gave"

	vm_log "== the pair mirrors after the recovery"
	rp-writer --dev "$lun" --log /tmp/after --threads 2 --offset 128M --span 2M \
		--max-size 64K --bytes 4M --seed 62 || vm_fail "writes after the recovery"
	rp-verify --dev "$T" /tmp/after.* || vm_fail "writes after the recovery not on the target"
	rp-verify --cmp "$P" "$T" > /dev/null || vm_fail "the legs differ after the last writes"

	vm_log "== teardown"
	replipipectl delete $PIPE || daemon_fail "delete"
	vm_daemon_stop $DLOG
	vm_tcm_loop_unexport $SRC
	vm_backstore_delete $SRC
	vm_no_live_objects
	rmmod replipipe || vm_fail "rmmod replipipe"
	umount /var/lib/replipipe /persist || vm_fail "umount"
	vm_log "fail-crash done"
	;;
esac
