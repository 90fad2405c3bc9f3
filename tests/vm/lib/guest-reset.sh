#!/bin/sh
# Between two scenarios of one boot (run-scenario.sh given several, as the
# debug tier does, decision 95): takes the guest back to what /init left, so
# that the next scenario starts as on a boot of its own. guest-run.sh runs it
# after each scenario but the last, with the snapshot `guest-reset.sh
# snapshot` took before the first.
#
# What a scenario may leave: processes, fault-injection settings, replipipe
# pipes, mounts, device-mapper and loop devices, LIO's fabrics and
# backstores, null_blk devices, the modules that scenarios load with their
# own parameters (replipipe, brd, null_blk; LIO, dm and the rest stay
# loaded, as a second scenario on a fresh boot would find them once it
# loaded them), new files. Devices stack both ways (dm on a LUN, a
# backstore on dm), so they are removed in two passes, and only what the
# second could not remove fails. An iSCSI session left fails: ending one
# needs the scenario's iscsid.
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
	cat /proc/mounts > "$SNAP/mounts"
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

# 1. Processes: SIGTERM, 3 s, then SIGKILL (again to any forked meanwhile)
# for up to 10 s.
pids=$(user_pids)
if [ -n "$pids" ]; then
	echo "[vm] reset: stopping $(echo $pids | wc -w) process(es) the scenario left" >&2
	kill $pids 2> /dev/null
	i=0
	while [ -n "$(user_pids)" ] && [ $i -lt 30 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	i=0
	while pids=$(user_pids) && [ -n "$pids" ] && [ $i -lt 100 ]; do
		kill -9 $pids 2> /dev/null
		sleep 0.1
		i=$((i + 1))
	done
	for pid in $(user_pids); do
		fail "process $pid ($(cat /proc/$pid/comm 2> /dev/null), $(sed -n 's/^State:[[:space:]]*//p' /proc/$pid/status 2> /dev/null)) survived SIGKILL for 10 s; kernel stack:"
		cat /proc/$pid/stack >&2 2> /dev/null
	done
fi

# 2. Fault injection back to its settings at boot (before anything else:
# a failure injected into the teardown would fail it for nothing).
while read -r f val; do
	[ "$(cat "$f")" = "$val" ] || echo "$val" > "$f" ||
		fail "cannot set $f back to $val"
done < "$SNAP/fault"
for f in /sys/block/*/make-it-fail; do
	[ -f "$f" ] && echo 0 > "$f"
done

# 3. iSCSI initiator sessions.
for s in /sys/class/iscsi_session/session*; do
	[ -e "$s" ] && fail "iSCSI session ${s##*/} to $(cat "$s/targetname") left"
done

# 4. replipipe's pipes (each holds its backstores in configfs).
if [ -d /sys/module/replipipe ]; then
	for id in $(rp-nlctl get 2> /dev/null | sed -n 's/^pipe id=\([^ ]*\) .*/\1/p'); do
		echo "[vm] reset: deleting pipe $id" >&2
		rp-nlctl del-pipe "$id" > /dev/null || fail "cannot delete pipe $id"
	done
fi

# try CMD...: CMD, whose failure counts in the second pass only.
try() {
	"$@" 2> /dev/null && return 0
	[ "$pass" = 1 ] || fail "$* failed"
	return 1
}

# remove_devices: mounts (newest first), dm, loop, LIO (the fabrics'
# targets, whose LUNs hold the backstores, then the backstores and their
# HBAs, then user-made ALUA groups), null_blk.
remove_devices() {
	local m d l fabric wwn tpg acl hba dev g
	for m in $(new_lines "$SNAP/mounts" < /proc/mounts | cut -d' ' -f2 | tac); do
		try umount "$m"
	done
	if ls -d /sys/block/dm-* > /dev/null 2>&1; then
		for d in /sys/block/dm-*; do
			DM_DISABLE_UDEV=1 dmsetup --noudevsync resume "$(cat "$d/dm/name")" 2> /dev/null
		done
		try env DM_DISABLE_UDEV=1 dmsetup --noudevsync remove_all
	fi
	for l in /sys/block/loop*/loop; do
		[ -d "$l" ] || continue
		d=${l%/loop}
		try losetup -d "/dev/${d##*/}"
	done
	for fabric in "$CFS"/target/*/; do
		fabric=${fabric%/}
		[ "${fabric##*/}" = core ] && continue
		for wwn in "$fabric"/*/; do
			wwn=${wwn%/}
			[ -d "$wwn" ] && [ "${wwn##*/}" != discovery_auth ] || continue
			for tpg in "$wwn"/tpgt_*; do
				[ -d "$tpg" ] || continue
				[ ! -f "$tpg/enable" ] || echo 0 > "$tpg/enable" 2> /dev/null
				for acl in "$tpg"/acls/*/; do
					[ -d "$acl" ] || continue
					for l in "$acl"lun_*/*; do
						[ -L "$l" ] && try rm "$l"
					done
					for l in "$acl"lun_*; do
						[ -d "$l" ] && try rmdir "$l"
					done
					try rmdir "$acl"
				done
				for l in "$tpg"/lun/lun_*/*; do
					[ -L "$l" ] && try rm "$l"
				done
				for l in "$tpg"/lun/lun_* "$tpg"/np/*; do
					[ -d "$l" ] && try rmdir "$l"
				done
				# tcm_loop lets its nexus go once no LUN is left.
				[ ! -f "$tpg/nexus" ] || echo NULL > "$tpg/nexus" 2> /dev/null
				try rmdir "$tpg"
			done
			try rmdir "$wwn"
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
				[ -d "$g" ] && [ "${g##*/}" != default_tg_pt_gp ] && try rmdir "$g"
			done
			try rmdir "$dev"
		done
		try rmdir "$hba"
	done
	for g in "$CFS"/target/core/alua/lu_gps/*/; do
		g=${g%/}
		[ -d "$g" ] && [ "${g##*/}" != default_lu_gp ] && try rmdir "$g"
	done
	for d in "$CFS"/nullb/*/; do
		d=${d%/}
		[ -d "$d" ] || continue
		echo 0 > "$d/power" 2> /dev/null
		try rmdir "$d"
	done
	return 0
}

# 5. Devices, in two passes; then whatever is still there is named.
for pass in 1 2; do
	remove_devices
done
for d in /sys/block/dm-*; do
	[ -e "$d" ] && fail "device-mapper device $(cat "$d/dm/name") (${d##*/}) left"
done
for l in /sys/block/loop*/loop; do
	[ -d "$l" ] && fail "loop device ${l%/loop} still attached"
done

# 6. Modules that scenarios load with parameters of their own.
for m in replipipe null_blk brd; do
	[ -d "/sys/module/$m" ] || continue
	rmmod "$m" || fail "cannot unload $m (refcount $(cat "/sys/module/$m/refcnt" 2> /dev/null))"
done

# 7. Files: everything new on the root file system (not under a mount that
# stayed), and all of /tmp, /run, /dev/shm and /var/tmp.
if [ $failed = 0 ]; then
	files_now | new_lines "$SNAP/files" | while read -r f; do
		rm -rf "$f"
	done
	for d in /tmp /run /dev/shm /var/tmp; do
		find "$d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
	done
fi

exit $failed
