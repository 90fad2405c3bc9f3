#!/bin/sh
# Teardown under load: the pipe is deleted while 4 writers run through the
# LUN (sync mode, then again in async mode); the writes keep being
# acknowledged and land on the primary; then the LUN, the backstore and the
# module go, with live_objects back to zero before rmmod and no kernel warning.
# vm-timeout: 600
# vm-cost: 45
# vm-debug-cost: 65
# vm-mem: 1024

SRC=replipipe_0/vol1
LIVE=/sys/module/replipipe/parameters/live_objects

vm_brd 2 128
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun"

# round MODE SEED: a pipe in MODE, deleted 3 s into 12 s of writes
round() {
	local pipe=kmod-teardown-$1 out rc=0 k
	if [ "$1" = async ]; then
		rp-nlctl set-pipe --id $pipe --mode async --max-lag-kib 1024 \
			--pair $SRC=/dev/ram1,clean || vm_fail "set-pipe $1 refused"
	else
		rp-nlctl set-pipe --id $pipe --mode sync --pair $SRC=/dev/ram1,clean ||
			vm_fail "set-pipe $1 refused"
	fi
	rp-writer --dev "$lun" --log /tmp/log-$1 --threads 4 --seconds 12 --seed "$2" \
		> /tmp/out-$1 2>&1 &
	writers=$!
	sleep 3
	rp-nlctl get $pipe
	vm_log "deleting pipe $pipe under load"
	rp-nlctl del-pipe $pipe || vm_fail "del-pipe $pipe under load"
	k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed after del-pipe"
	[ -z "$(echo "$k" | grep '^pipe ')" ] || vm_fail "pipe still listed after del-pipe"
	wait $writers || rc=$?
	cat /tmp/out-$1
	[ $rc -eq 0 ] || vm_fail "writes failed around the pipe deletion ($1, rc=$rc)"
	grep -q '^writer: acked=[1-9]' /tmp/out-$1 || vm_fail "no write acknowledged ($1)"
	rp-verify --dev "$lun" /tmp/log-$1.* || vm_fail "data through the LUN ($1)"
	rp-verify --dev /dev/ram0 /tmp/log-$1.* || vm_fail "data on the primary ($1)"
	vm_log "live_objects after round $1: $(cat $LIVE)"
}

round sync 41
round async 42

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
[ ! -d /sys/module/replipipe ] || vm_fail "replipipe still loaded"
vm_log "kmod-teardown done"
