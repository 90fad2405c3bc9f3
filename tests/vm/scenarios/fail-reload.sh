#!/bin/sh
# Module reload with replipiped. A pipe (replipipe_0/vol1 -> /dev/ram1) is
# created through replipipectl and written through a tcm_loop LUN.
#  1. With the pipe present, `rmmod replipipe` is refused (the pipe holds a
#     module reference), the module and the pipe stay as they were, and the
#     kernel log says why nothing was unloaded (no replipipe "unloaded").
#  2. With the pipe gone from the kernel but the backstore present, rmmod is
#     still refused (LIO holds the backend module).
#  3. The daemon is stopped (the pipe stays in its store), the backstore is
#     removed: rmmod succeeds, live objects were 0.
#  4. modprobe again, the daemon starts before the backstore is back: its
#     start-up reconcile cannot push the pipe (status: not in the kernel).
#     The backstore is made again on the same primary: the daemon pushes the
#     pipe from its store by itself (full resync), without a restart; the
#     pair is InSync, the data verifies and the legs are identical; a second
#     unload cycle after `replipipectl delete` is clean.
# vm-timeout: 600
# vm-cost: 20
# vm-mem: 1024
# vm-bins: jq

PIPE=reload
SRC=replipipe_0/vol1
DLOG=/tmp/replipiped.log
STORE=/var/lib/replipipe/pipes.json
LIVE=/sys/module/replipipe/parameters/live_objects

daemon_fail() { vm_daemon_fail $DLOG "$@"; }
# rmmod_refused WHY: rmmod fails, the module is still there
rmmod_refused() {
	if rmmod replipipe > /tmp/rmmod.out 2>&1; then
		vm_fail "rmmod succeeded $1"
	fi
	vm_log "rmmod refused $1: $(cat /tmp/rmmod.out)"
	[ -d /sys/module/replipipe ] || vm_fail "module gone after a refused rmmod"
	vm_log "refcnt $(cat /sys/module/replipipe/refcnt), live_objects: $(cat $LIVE)"
}

vm_brd 2 64
vm_modprobe replipipe
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
vm_daemon_start $DLOG --log-level info
replipipectl create-or-modify --name $PIPE --source-system localhost \
	--target-system localhost --pair $SRC=/dev/ram1 ||
	daemon_fail "create-or-modify"
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "initial sync"
rp-writer --dev "$lun" --log /tmp/w1 --threads 4 --bytes 16M --seed 71 ||
	vm_fail "writes failed"
sync
rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "legs differ before the reload"

vm_log "== 1. rmmod with a pipe present"
rmmod_refused "with a pipe present"
rp-nlctl get | grep -q "^pair .*state=InSync" || vm_fail "the pipe changed after a refused rmmod"
rp-writer --dev "$lun" --log /tmp/w2 --threads 2 --bytes 4M --seed 72 ||
	vm_fail "writes failed after a refused rmmod"
dmesg | grep -q "replipipe: unloaded" && vm_fail "the module ran its exit"

vm_log "== 2. daemon stopped (pipe kept in its store), pipe deleted in the kernel only"
vm_daemon_stop $DLOG
jq -e '.pipes | length == 1' < $STORE > /dev/null || vm_fail "the store lost the pipe"
id=$(rp-nlctl get | sed -n 's/^pipe id=\([^ ]*\) .*/\1/p')
[ -n "$id" ] || vm_fail "no pipe in the kernel"
rp-nlctl del-pipe "$id" || vm_fail "del-pipe"
rmmod_refused "with the backstore present"

vm_log "== 3. backstore removed: rmmod"
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod after removing pipes and backstores"
[ ! -d /sys/module/replipipe ] || vm_fail "module still loaded"
dmesg | grep -q "replipipe: unloaded" || vm_fail "no unload message"

vm_log "== 4. modprobe; the daemon starts before the backstore is back"
vm_modprobe replipipe
vm_daemon_start $DLOG --log-level info
grep "reconcile:" $DLOG || daemon_fail "no reconcile report"
grep -q "reconcile:.*could not be pushed to the kernel" $DLOG ||
	daemon_fail "the pipe was pushed without its backstore"
replipipectl --json status $PIPE > /tmp/st.json || daemon_fail "status"
jq -e '.pipes[0].in_kernel == false' < /tmp/st.json > /dev/null ||
	daemon_fail "status: $(cat /tmp/st.json)"
vm_log "== 4b. the backstore again: the daemon pushes the pipe from its store by itself"
# the backstore's primary changes meanwhile (before or after the push):
# the pushed pair resyncs in full
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
rp-writer --dev "$lun" --log /tmp/w3 --threads 2 --bytes 4M --seed 73 ||
	vm_fail "writes while the daemon pushes the pipe"
replipipectl wait $PIPE --state InSync --timeout 120 || daemon_fail "not InSync after the reload"
grep -q "pushed to the kernel from the store" $DLOG ||
	daemon_fail "no push after the backstore came back"
replipipectl status $PIPE
rp-writer --dev "$lun" --log /tmp/w4 --threads 4 --bytes 8M --seed 74 ||
	vm_fail "writes after the reload"
rp-verify --dev /dev/ram0 /tmp/w1.* /tmp/w2.* /tmp/w3.* /tmp/w4.* || vm_fail "data on the primary"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "the legs differ after the reload"
vm_log "InSync after the reload, legs identical"

vm_log "== teardown: delete, stop, unload"
replipipectl delete $PIPE || daemon_fail "delete"
vm_daemon_stop $DLOG
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "fail-reload done"
