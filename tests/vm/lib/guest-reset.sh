#!/bin/sh
# Between two scenarios of one boot (run-scenario.sh given several, as the
# debug tier does, decision 95): takes the guest back to what /init left, so
# that the next scenario starts as on a boot of its own. guest-run.sh runs it
# after each scenario but the last, with the snapshot `guest-reset.sh
# snapshot` took before the first.
#
# What a scenario may leave, removed in the order that lets go of it:
# processes, LIO's fabrics and backstores, null_blk devices, device-mapper
# and loop devices, mounts, the modules that scenarios load with their own
# parameters (replipipe, brd, null_blk; LIO, dm and the rest stay loaded, as
# a second scenario on a fresh boot would find them once it loaded them),
# fault-injection settings, new files. An iSCSI session left fails: ending
# one needs the scenario's iscsid.
#
# Exit 0 when all of it is gone; otherwise 1, each thing that stayed named
# (a module that will not unload, a process stuck in the kernel): the batch
# stops there, and that is a failure of the scenario before.
RP=/lib/replipipe
SNAP=$RP/reset-snapshot
CFS=/sys/kernel/config
FAULT_DIRS="/sys/kernel/debug/failslab /sys/kernel/debug/fail_make_request"
failed=0
fail() {
	echo "[vm] reset: FAIL: $*" >&2
	failed=1
}

# files_now: the root file system's paths (not the mounts on it), but for
# the runner's own /lib/replipipe.
files_now() {
	find / -xdev | grep -v "^$RP/"
}

# new_lines OLD: the lines of stdin that are not lines of the file OLD.
new_lines() {
	awk 'NR == FNR { old[$0] = 1; next } !($0 in old)' "$1" -
}

if [ "${1:-}" = snapshot ]; then
	mkdir -p "$SNAP"
	files_now > "$SNAP/files"
	cut -d' ' -f2 /proc/mounts > "$SNAP/mounts"
	: > "$SNAP/fault"
	for d in $FAULT_DIRS; do
		for f in "$d"/*; do
			[ -f "$f" ] && [ -r "$f" ] && [ -w "$f" ] || continue
			echo "$f $(cat "$f")" >> "$SNAP/fault"
		done
	done
	exit 0
fi
[ -d "$SNAP" ] || { echo "[vm] reset: no snapshot ($SNAP)" >&2; exit 1; }

# user_pids: every process but PID 1, this shell, its children (the command
# substitution reading this list) and kernel threads (PID 2, kthreadd, and
# its children); zombies hold nothing and are left to PID 1.
user_pids() {
	local d pid key val ppid state
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[ "$pid" = 1 ] || [ "$pid" = 2 ] || [ "$pid" = $$ ] && continue
		ppid= state=
		# (a process may end between the glob and the read)
		{ while read -r key val _; do
			case $key in
			State:) state=$val ;;
			PPid:) ppid=$val; break ;;
			esac
		done < "$d/status"; } 2> /dev/null
		[ -n "$ppid" ] || continue
		[ "$ppid" = 2 ] || [ "$ppid" = $$ ] || [ "$state" = Z ] && continue
		echo "$pid"
	done
}

# 1. Processes: SIGTERM, 3 s, SIGKILL, 10 s.
pids=$(user_pids)
if [ -n "$pids" ]; then
	echo "[vm] reset: stopping $(echo $pids | wc -w) process(es) the scenario left" >&2
	kill $pids 2> /dev/null
	i=0
	while [ -n "$(user_pids)" ] && [ $i -lt 30 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	pids=$(user_pids)
	[ -z "$pids" ] || kill -9 $pids 2> /dev/null
	i=0
	while [ -n "$(user_pids)" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	for pid in $(user_pids); do
		fail "process $pid ($(cat /proc/$pid/comm 2> /dev/null), $(sed -n 's/^State:[[:space:]]*//p' /proc/$pid/status 2> /dev/null)) survived SIGKILL for 10 s; kernel stack:"
		cat /proc/$pid/stack >&2 2> /dev/null
	done
fi

# 2. iSCSI initiator sessions.
for s in /sys/class/iscsi_session/session*; do
	[ -e "$s" ] && fail "iSCSI session ${s##*/} to $(cat "$s/targetname") left"
done

# 3. LIO: the fabrics' targets (their LUNs hold the backstores), then the
# backstores and their HBAs, then user-made ALUA groups.
for fabric in "$CFS"/target/*/; do
	fabric=${fabric%/}
	[ "${fabric##*/}" = core ] && continue
	for wwn in "$fabric"/*/; do
		wwn=${wwn%/}
		[ -d "$wwn" ] && [ "${wwn##*/}" != discovery_auth ] || continue
		for tpg in "$wwn"/tpgt_*; do
			[ -d "$tpg" ] || continue
			[ ! -f "$tpg/enable" ] || echo 0 > "$tpg/enable" 2> /dev/null
			[ ! -f "$tpg/nexus" ] || echo NULL > "$tpg/nexus" 2> /dev/null
			for acl in "$tpg"/acls/*/; do
				[ -d "$acl" ] || continue
				for l in "$acl"lun_*/*; do
					[ -L "$l" ] && rm "$l"
				done
				for l in "$acl"lun_*; do
					[ -d "$l" ] && rmdir "$l"
				done
				rmdir "$acl"
			done
			for l in "$tpg"/lun/lun_*/*; do
				[ -L "$l" ] && rm "$l"
			done
			for l in "$tpg"/lun/lun_* "$tpg"/np/*; do
				[ -d "$l" ] && rmdir "$l"
			done
			rmdir "$tpg" || fail "cannot remove $tpg"
		done
		rmdir "$wwn" || fail "cannot remove $wwn"
	done
done
for hba in "$CFS"/target/core/*_[0-9]*/; do
	hba=${hba%/}
	[ -d "$hba" ] || continue
	for dev in "$hba"/*/; do
		dev=${dev%/}
		[ -d "$dev" ] || continue
		for g in "$dev"/alua/*/; do
			g=${g%/}
			[ -d "$g" ] && [ "${g##*/}" != default_tg_pt_gp ] && rmdir "$g"
		done
		rmdir "$dev" || fail "cannot remove the backstore $dev"
	done
	rmdir "$hba" || fail "cannot remove the HBA $hba"
done
for g in "$CFS"/target/core/alua/lu_gps/*/; do
	g=${g%/}
	[ -d "$g" ] && [ "${g##*/}" != default_lu_gp ] && rmdir "$g"
done

# 4. null_blk devices made through configfs.
for d in "$CFS"/nullb/*/; do
	d=${d%/}
	[ -d "$d" ] || continue
	echo 0 > "$d/power" 2> /dev/null
	rmdir "$d" || fail "cannot remove null_blk device $d"
done

# 5. Mounts the scenario made, newest first.
for m in $(cut -d' ' -f2 /proc/mounts | new_lines "$SNAP/mounts" | tac); do
	umount "$m" || fail "cannot unmount $m"
done

# 6. Device-mapper devices (resumed first: a suspended one holds its I/O),
# then loop devices.
if ls -d /sys/block/dm-* > /dev/null 2>&1; then
	if command -v dmsetup > /dev/null; then
		for d in /sys/block/dm-*; do
			DM_DISABLE_UDEV=1 dmsetup --noudevsync resume "$(cat "$d/dm/name")" 2> /dev/null
		done
		DM_DISABLE_UDEV=1 dmsetup --noudevsync remove_all --force > /dev/null ||
			fail "dmsetup remove_all failed"
	fi
	for d in /sys/block/dm-*; do
		[ -e "$d" ] && fail "device-mapper device $(cat "$d/dm/name") (${d##*/}) left"
	done
fi
for l in /sys/block/loop*/loop; do
	[ -d "$l" ] || continue
	d=${l%/loop}
	losetup -d "/dev/${d##*/}" || fail "cannot detach /dev/${d##*/}"
done

# 7. Modules that scenarios load with parameters of their own.
for m in replipipe null_blk brd; do
	[ -d "/sys/module/$m" ] || continue
	rmmod "$m" || fail "cannot unload $m (refcount $(cat "/sys/module/$m/refcnt" 2> /dev/null))"
done

# 8. Fault injection back to its settings at boot; the disks that stay.
while read -r f val; do
	[ "$(cat "$f")" = "$val" ] || echo "$val" > "$f" ||
		fail "cannot set $f back to $val"
done < "$SNAP/fault"
for f in /sys/block/*/make-it-fail; do
	[ -f "$f" ] && echo 0 > "$f"
done

# 9. Files: everything new on the root file system, and all of /tmp, /run,
# /dev/shm and /var/tmp.
files_now | new_lines "$SNAP/files" | while read -r f; do
	rm -rf "$f"
done
for d in /tmp /run /dev/shm /var/tmp; do
	find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
done

exit $failed
