#!/bin/sh
# Self-test, case `batch`: the second scenario of the batch finds nothing of
# what batch-leave.sh left (lib/guest-reset.sh removed it) and an empty
# kernel log.
# vm-timeout: 120
for m in brd replipipe; do
	[ ! -d /sys/module/$m ] || vm_fail "$m is still loaded"
done
left=$(ls "$VM_CFS/core" "$VM_CFS/loopback" 2> /dev/null | grep -E '_[0-9]|^naa\.' || true)
[ -z "$left" ] || vm_fail "LIO objects left: $left"
! ls -d /sys/block/dm-* > /dev/null 2>&1 || vm_fail "device-mapper devices left"
for l in /sys/block/loop*/loop; do
	[ ! -d "$l" ] || vm_fail "a loop device is still attached: $l"
done
! grep -q " /mnt/left " /proc/mounts || vm_fail "/mnt/left is still mounted"
for f in /mnt/left /etc/rp-selftest-left /tmp/left.img; do
	[ ! -e "$f" ] || vm_fail "$f is still there"
done
for d in /proc/[0-9]*; do
	[ "$(tr '\0' ' ' < "$d/cmdline" 2> /dev/null)" != "sleep 1000 " ] ||
		vm_fail "batch-leave's process ${d#/proc/} is still running"
done
! dmesg | grep -q "left behind by batch-leave" || vm_fail "the kernel log was not cleared"
if [ -r /sys/kernel/debug/fail_make_request/probability ]; then
	p=$(cat /sys/kernel/debug/fail_make_request/probability)
	[ "$p" = 0 ] || vm_fail "fail_make_request's probability is $p, not 0"
fi
vm_log "batch-clean: the guest is as /init left it"
