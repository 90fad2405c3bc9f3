#!/bin/sh
# replipipe.ko lifecycle: load, a backstore created through configfs (and
# exported through tcm_loop), the genl family resolved from user space by the
# project's netlink client, teardown, unload, and the same once more. The
# module must be pinned while a backstore exists and leave no live object.
# vm-timeout: 300
# vm-cost: 10
# vm-debug-cost: 40

CORE=/sys/kernel/config/target/core
vm_brd 1 16

for round in 1 2; do
	vm_log "round $round: modprobe replipipe"
	vm_modprobe replipipe
	[ -d /sys/module/replipipe ] || vm_fail "no /sys/module/replipipe after modprobe"

	dir=$(vm_backstore replipipe replipipe_0 lc$round /dev/ram0)
	vm_log "backstore $dir: $(tr '\n' ' ' < "$dir/info")"
	if rmmod replipipe 2> /dev/null; then
		vm_fail "rmmod replipipe succeeded while replipipe_0/lc$round exists"
	fi

	sd=$(vm_tcm_loop_export replipipe_0/lc$round)
	head -c 1048576 /dev/urandom > /tmp/data
	dd if=/tmp/data of="$sd" bs=64k oflag=direct conv=fsync 2> /dev/null
	vm_cmp_devs /tmp/data "$sd"
	vm_cmp_devs /tmp/data /dev/ram0
	vm_tcm_loop_unexport replipipe_0/lc$round

	# The generic netlink family, through the project's own client code.
	out=$(rp-nlctl family) || vm_fail "rp-nlctl family failed (exit $?)"
	vm_log "$out"
	case "$out" in
	*"name=replipipe "*) ;;
	*) vm_fail "unexpected family line: $out" ;;
	esac

	vm_backstore_delete replipipe_0/lc$round
	[ ! -d $CORE/replipipe_0 ] || vm_fail "$CORE/replipipe_0 still present"
	# all zeros after teardown (fails if the module has no live_objects)
	vm_no_live_objects
	rmmod replipipe || vm_fail "rmmod replipipe failed after teardown"
	[ ! -d /sys/module/replipipe ] || vm_fail "/sys/module/replipipe still present after rmmod"
done
vm_log "module-lifecycle done"
