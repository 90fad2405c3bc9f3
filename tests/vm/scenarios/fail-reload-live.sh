#!/bin/sh
# Module unloaded and reloaded while replipiped runs (docs/decisions.md, 60).
# The kernel gives a generic netlink family a new id at each registration
# (cyclically), so after `rmmod replipipe; modprobe replipipe` every socket the
# daemon opened names a family that is gone: before the fix each request got
# ENOENT (a create-or-modify failed, a PIPE_GET read as "no such pipe"), the
# events subscription was dead, and the new, empty module never got the
# stored pipes until someone restarted the daemon by hand.
#  1. replipiped runs two pipes: "gone" (replipipe_0/a -> /dev/ram1, through
#     a tcm_loop LUN) and "kept" (replipipe_0/b -> /dev/ram3). "gone" is
#     deleted with replipipectl, "kept" in the kernel only (the store keeps
#     it), both backstores are removed: the module can unload.
#  2. rmmod: nlctrl announces the family's removal and replipiped exits 69 at
#     once, saying that the module was unloaded, and without loading it
#     again (the old daemon runs on: the scenario then shows that a
#     create-or-modify after a modprobe fails, and fails). Started while the
#     module cannot be loaded (its file moved away), replipiped exits 69, as
#     it always did.
#  3. modprobe (the family has a new id), the backstores again, replipiped
#     started again: its reconcile pushes "kept" (full resync), a
#     create-or-modify of a new pipe on replipipe_0/a succeeds, both pipes
#     get InSync, the legs are identical, and kernel events reach the daemon.
#     A failed receive on its events socket (an error message sent to its
#     port) loses none of the events read before it, and a new socket
#     takes the next ones.
#  4. The daemon stopped (SIGSTOP) through a whole rmmod + modprobe, then
#     continued: it finds the family under another id, exits 1 saying that
#     the module was reloaded, and a start pushes both stored pipes.
# vm-timeout: 600
# vm-cost: 20
# vm-mem: 1024
# vm-bins: jq

SRC_A=replipipe_0/a
SRC_B=replipipe_0/b
DLOG=/tmp/replipiped.log
STORE=/var/lib/replipipe/pipes.json

daemon_fail() { vm_daemon_fail $DLOG "$@"; }

# alive PID: the process runs (a zombie does not).
alive() {
	[ -e "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"
}

# daemon_exit TENTHS: waits at most TENTHS tenths of a second for the daemon
# vm_daemon_start started to end, then sets $RC to its exit status; returns 1
# (RC unset) when it still runs.
daemon_exit() {
	local i=0
	RC=
	while alive "$VM_DAEMON_PID"; do
		[ $i -lt "$1" ] || return 1
		sleep 0.1
		i=$((i + 1))
	done
	RC=0
	wait "$VM_DAEMON_PID" || RC=$?
	VM_DAEMON_PID=
}

family_id() { vm_field "$(rp-nlctl family)" id; }

# remove_backstores: once the pipes are gone from the kernel, the backstores
# go from LIO, and rmmod can succeed.
remove_backstores() {
	vm_tcm_loop_unexport $SRC_A
	vm_backstore_delete $SRC_A
	vm_backstore_delete $SRC_B
	vm_no_live_objects
}

make_backstores() {
	vm_backstore replipipe replipipe_0 a /dev/ram0 > /dev/null
	vm_backstore replipipe replipipe_0 b /dev/ram2 > /dev/null
	lun=$(vm_tcm_loop_export $SRC_A)
}

vm_brd 4 64
dd if=/dev/urandom of=/dev/ram2 bs=1M count=64 2> /dev/null
vm_modprobe replipipe
make_backstores
vm_daemon_start $DLOG --log-level info
replipipectl create-or-modify --name gone --source-system localhost \
	--target-system localhost --pair $SRC_A=/dev/ram1 > /dev/null ||
	daemon_fail "create gone"
kept=$(replipipectl create-or-modify --name kept --source-system localhost \
	--target-system backup1 --pair $SRC_B=/dev/ram3) || daemon_fail "create kept"
kept=$(echo "$kept" | sed -n 's/.*InstanceID="replipipe:\([0-9a-f-]*\)"$/\1/p')
[ -n "$kept" ] || vm_fail "no InstanceID for kept"
replipipectl wait gone --state InSync --timeout 120 || daemon_fail "gone: initial sync"
replipipectl wait kept --state InSync --timeout 120 || daemon_fail "kept: initial sync"
rp-writer --dev "$lun" --log /tmp/w1 --threads 2 --bytes 4M --seed 81 ||
	vm_fail "writes through $SRC_A"
old_id=$(family_id)
vm_log "family id $old_id"

vm_log "== 1. gone deleted with replipipectl, kept in the kernel only, backstores removed"
replipipectl delete gone > /dev/null || daemon_fail "delete gone"
# The daemon pushes a stored pipe the kernel lacks 5 to 10 s after a refresh
# finds it missing: the backstore goes well before that, so the push fails.
rp-nlctl del-pipe "$kept" || vm_fail "del-pipe kept"
remove_backstores
jq -e '.pipes | length == 1' < $STORE > /dev/null || vm_fail "the store lost kept"

vm_log "== 2. rmmod while the daemon runs"
t0=$(vm_now_ms)
rmmod replipipe || daemon_fail "rmmod with no pipes and no backstores"
if ! daemon_exit 100; then
	# The daemon before the fix: it is still there, with sockets to a
	# family that is gone. What a user sees after loading the module again:
	vm_log "replipiped still runs 10 s after rmmod; modprobe, and a create-or-modify"
	vm_modprobe replipipe
	vm_log "family id $old_id -> $(family_id)"
	make_backstores
	rc=0
	replipipectl create-or-modify --name again --source-system localhost \
		--target-system localhost --pair $SRC_A=/dev/ram1 > /tmp/again.out 2>&1 || rc=$?
	vm_log "create-or-modify after the reload: exit $rc: $(cat /tmp/again.out)"
	replipipectl --json status kept > /tmp/st.json 2>&1 || true
	vm_log "kept: in_kernel $(jq -c '.pipes[0].in_kernel' < /tmp/st.json 2>&1)"
	daemon_fail "replipiped ran on after its module was unloaded"
fi
took=$(($(vm_now_ms) - t0))
vm_log "replipiped exited $RC, $took ms after rmmod began"
[ "$RC" = 69 ] || daemon_fail "replipiped exited $RC after the unload, not 69"
grep -q "nlctrl: generic netlink family replipipe (id $old_id) was unregistered" $DLOG ||
	daemon_fail "no line saying nlctrl announced the unload"
grep -q "the replipipe kernel module was unloaded (generic netlink family 'replipipe' id $old_id is gone)" $DLOG ||
	daemon_fail "no line saying the module was unloaded"
grep "module was unloaded" $DLOG >&2
# Its look-ups list the families: asking nlctrl for the family by name
# would have made the kernel load the module again (its genl alias).
[ ! -d /sys/module/replipipe ] || daemon_fail "the daemon's check loaded the module again"
# Not loadable (as between `dkms remove` and `dkms install`): a start exits
# 69 as it always did. With the module installed, a start loads it: the
# kernel's genl alias (and replipiped.service's ExecStartPre).
ko=$(find /lib/modules/"$(uname -r)" -name 'replipipe.ko*' | head -n 1)
[ -n "$ko" ] || vm_fail "no replipipe.ko under /lib/modules"
mv "$ko" /tmp/replipipe.ko.away
vm_expect_rc 69 replipiped --log-level info
echo "$OUT" | grep -q "replipipe kernel module not loaded" ||
	vm_fail "a start without the module did not say why"
mv /tmp/replipipe.ko.away "$ko"

vm_log "== 3. modprobe, backstores again, replipiped started again"
vm_modprobe replipipe
new_id=$(family_id)
vm_log "family id $old_id -> $new_id"
make_backstores
vm_daemon_start $DLOG --log-level debug
grep -q "reconcile: pipe .*$kept.*(\"kept\"): pushed to the kernel (1 pairs, full resync)" $DLOG ||
	daemon_fail "the start did not push kept"
replipipectl create-or-modify --name again --source-system localhost \
	--target-system localhost --pair $SRC_A=/dev/ram1 > /dev/null ||
	daemon_fail "create-or-modify after the reload"
replipipectl wait again --state InSync --timeout 120 || daemon_fail "again: initial sync"
replipipectl wait kept --state InSync --timeout 120 || daemon_fail "kept after the reload"
rp-writer --dev "$lun" --log /tmp/w2 --threads 2 --bytes 4M --seed 82 ||
	vm_fail "writes after the reload"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "again: the legs differ"
rp-verify --cmp /dev/ram2 /dev/ram3 || vm_fail "kept: the legs differ"
# The events subscription works: a pause made behind the daemon's back is a
# kernel event it reads (logged at debug level), not just a refresh's find.
rp-nlctl pair-state "$kept" $SRC_B pause || vm_fail "pause kept in the kernel"
i=0
until grep -q "kernel event pair_state pipe $kept" $DLOG; do
	[ $i -lt 50 ] || daemon_fail "no kernel event for the pause within 5 s"
	sleep 0.1
	i=$((i + 1))
done
replipipectl resume kept > /dev/null || daemon_fail "resume kept"
replipipectl wait kept --state InSync --timeout 60 || daemon_fail "kept after resume"
vm_log "both pipes InSync on family id $new_id, legs identical, events flow"

vm_log "== 3b. a failed receive on the daemon's events socket"
# An error message sent to the socket's port makes its receive fail. The
# pause queued before it is read in the same batch: it is a kernel event the
# daemon acts on (the old daemon dropped the batch), and the next events come
# on a new socket.
port=$(sed -n 's/.*netlink events: listening on port \([0-9]*\).*/\1/p' $DLOG | tail -n 1)
[ -n "$port" ] || daemon_fail "no port of the events socket in the log"
events_seen() { grep -c "kernel event pair_state pipe $kept" $DLOG; }
seen=$(events_seen)
kill -STOP "$VM_DAEMON_PID"
rp-nlctl pair-state "$kept" $SRC_B pause || vm_fail "pause kept in the kernel"
rp-nlctl send-error "$port" || vm_fail "send an error to port $port"
kill -CONT "$VM_DAEMON_PID"
i=0
until [ "$(events_seen)" -gt "$seen" ]; do
	[ $i -lt 50 ] || daemon_fail "the pause read before the failed receive was dropped"
	sleep 0.1
	i=$((i + 1))
done
grep -q "netlink events: receive: .*; the events after it are lost" $DLOG ||
	daemon_fail "the failed receive was not logged"
grep -q "netlink events: listening on a new socket (port" $DLOG ||
	daemon_fail "no new events socket after the failed receive"
replipipectl resume kept > /dev/null || daemon_fail "resume kept"
replipipectl wait kept --state InSync --timeout 60 || daemon_fail "kept after resume"
seen=$(events_seen)
rp-nlctl pair-state "$kept" $SRC_B pause || vm_fail "pause kept in the kernel"
i=0
until [ "$(events_seen)" -gt "$seen" ]; do
	[ $i -lt 50 ] || daemon_fail "no kernel event on the new socket within 5 s"
	sleep 0.1
	i=$((i + 1))
done
replipipectl resume kept > /dev/null || daemon_fail "resume kept"
replipipectl wait kept --state InSync --timeout 60 || daemon_fail "kept after resume"
vm_log "the event before the failed receive was kept; events flow on a new socket"

# stop_daemon_between_dumps: SIGSTOP the daemon at a moment it has no netlink
# dump open. A dump it had begun holds a reference on replipipe until it
# reads the end (netlink_dump_start()), and rmmod then fails with EAGAIN, as
# it would under any process stopped so (seen once on a loaded host).
# /proc/net/netlink's Dump column tells; it is read once /proc shows the
# daemon stopped (the signal takes effect on its way back to user space:
# until then it could still begin a dump).
stop_daemon_between_dumps() {
	local i=0 j
	while :; do
		kill -STOP "$VM_DAEMON_PID"
		j=0
		until grep -q '^State:[[:space:]]*T' /proc/$VM_DAEMON_PID/status; do
			j=$((j + 1))
			[ $j -lt 100 ] || vm_fail "replipiped not stopped 10 s after SIGSTOP"
			sleep 0.1
		done
		awk '$2 == 16 && $7 != 0 { dumping = 1 } END { exit !dumping }' /proc/net/netlink || break
		kill -CONT "$VM_DAEMON_PID"
		i=$((i + 1))
		[ $i -lt 50 ] || vm_fail "replipiped was in a netlink dump at each of 50 stops"
		sleep 0.1
	done
	[ $i -eq 0 ] || vm_log "replipiped stopped between dumps after $i tries"
}

vm_log "== 4. rmmod + modprobe while the daemon is stopped (SIGSTOP)"
again=$(replipipectl --json status again | jq -r '.pipes[0].instance_id')
stop_daemon_between_dumps
rp-nlctl del-pipe "${again#replipipe:}" || vm_fail "del-pipe again"
rp-nlctl del-pipe "$kept" || vm_fail "del-pipe kept"
remove_backstores
rmmod replipipe || vm_fail "rmmod under a stopped daemon"
vm_modprobe replipipe
newer_id=$(family_id)
vm_log "family id $new_id -> $newer_id"
make_backstores
kill -CONT "$VM_DAEMON_PID"
daemon_exit 100 || daemon_fail "replipiped ran on after the reload"
[ "$RC" = 1 ] || daemon_fail "replipiped exited $RC after the reload, not 1"
grep -q "the replipipe kernel module was reloaded (generic netlink family 'replipipe' id $new_id is gone, the module now has id $newer_id)" $DLOG ||
	daemon_fail "no line saying the module was reloaded"
grep "module was reloaded" $DLOG >&2
vm_daemon_start $DLOG --log-level info
[ "$(grep -c "reconcile: .*pushed to the kernel (1 pairs, full resync)" $DLOG)" = 3 ] ||
	daemon_fail "the start after the reload did not push both pipes"
replipipectl wait again --state InSync --timeout 120 || daemon_fail "again after the second reload"
replipipectl wait kept --state InSync --timeout 120 || daemon_fail "kept after the second reload"
rp-writer --dev "$lun" --log /tmp/w3 --threads 2 --bytes 4M --seed 83 ||
	vm_fail "writes after the second reload"
rp-verify --dev /dev/ram1 /tmp/w2.* /tmp/w3.* || vm_fail "again: the data on the target"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "again: the legs differ after the second reload"
rp-verify --cmp /dev/ram2 /dev/ram3 || vm_fail "kept: the legs differ after the second reload"

vm_log "== teardown"
replipipectl delete again > /dev/null || daemon_fail "delete again"
replipipectl delete kept > /dev/null || daemon_fail "delete kept"
vm_daemon_stop $DLOG
remove_backstores
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "fail-reload-live done"
