#!/bin/sh
# Self-test, case `batch-unresettable`: leaves a process that SIGKILL cannot
# end (an O_DIRECT read held by a suspended device-mapper device): the reset
# after it must fail, and the batch must stop there.
# vm-timeout: 120
# vm-bins: dmsetup
vm_brd 1 16
vm_modprobe dm_mod
dev=$(vm_dm_create rp-stuck "0 8192 linear /dev/ram0 0")
DM_DISABLE_UDEV=1 dmsetup --noudevsync suspend rp-stuck
rp-verify --dump "$dev" --length 4096 > /dev/null &
i=0
until grep -q '^State:.*D' /proc/$!/status; do
	[ $i -lt 100 ] || vm_fail "the read of the suspended $dev did not block"
	sleep 0.1
	i=$((i + 1))
done
vm_log "batch-stuck-io: pid $! waits, unkillable, on the suspended $dev"
