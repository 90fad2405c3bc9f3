#!/bin/sh
# Self-test, case `batch`: the first scenario of a batch (several scenarios
# in one boot, decision 95) leaves behind what a scenario may; the guest's
# reset (lib/guest-reset.sh) must remove all of it before batch-clean.sh,
# which checks.
# vm-timeout: 120
# vm-bins: dmsetup
vm_brd 2 16
vm_backstore iblock iblock_0 left /dev/ram0 > /dev/null
vm_tcm_loop_export iblock_0/left > /dev/null
vm_modprobe dm_mod
vm_dm_create rp-left "0 8192 linear /dev/ram1 0" > /dev/null
vm_modprobe loop
truncate -s 4M /tmp/left.img
losetup -f /tmp/left.img
mkdir -p /mnt/left
mount -t tmpfs none /mnt/left
echo left > /etc/rp-selftest-left
vm_modprobe replipipe
sleep 1000 &
echo "rp-selftest: left behind by batch-leave" > /dev/kmsg
if [ -w /sys/kernel/debug/fail_make_request/probability ]; then
	echo 3 > /sys/kernel/debug/fail_make_request/probability
fi
vm_log "batch-leave: a LUN, a dm and a loop device, a mount, a file, a process, brd and replipipe loaded"
