#!/bin/sh
# /init of the VM bench initramfs (busybox sh). Mounts the pseudo file systems,
# runs the scenario with `sh -e` after sourcing guest-lib.sh, prints the verdict
# marker the host runner looks for, the kernel log and the taint mask, then
# powers off. Never exits (init exiting would panic the kernel).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
RP=/lib/replipipe
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/tmp /var/lib /var/log
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
modprobe configfs 2>/dev/null
mount -t configfs configfs /sys/kernel/config
mount -t debugfs debugfs /sys/kernel/debug
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
hostname replipipe-vm
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# Kernel warnings (level 4) reach the console live, not only in the dmesg dump.
dmesg -n 5
# Kernel hung-task reports after 60 s instead of 120 s.
echo 60 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null

# Virtio disks from the scenario's `# vm-disks:` header.
if [ -s $RP/disks ]; then
	modprobe virtio_pci && modprobe virtio_blk || echo "[vm] cannot load virtio_blk"
	n=$(wc -l < $RP/disks)
	i=0
	while [ "$(ls /sys/block | grep -c '^vd')" -lt "$n" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
fi

name=$(cat $RP/scenario-name)
# Leave the host time to get the verdict and the kernel log after a hang.
limit=$(cat $RP/guest-timeout)
# `# vm-boots: N`: the runner says which boot this is (rp.boot=K rp.boots=N).
boot=$(sed -n 's/.*[[:space:]]rp\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)
boots=$(sed -n 's/.*[[:space:]]rp\.boots=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$boot" ]; then
	echo "[vm] scenario $name: start boot $boot of $boots (kernel $(uname -r), guest limit ${limit}s)"
else
	echo "[vm] scenario $name: start (kernel $(uname -r), guest limit ${limit}s)"
fi
export RP_BOOT=${boot:-1} RP_BOOTS=${boots:-1}
cd /tmp
timeout "$limit" sh -e -c '. /lib/replipipe/guest-lib.sh; . /lib/replipipe/scenario.sh' "$name" < /dev/null
rc=$?
cd /
# Debug kernel (tests/vm/debug-kernel.sh): kmemleak scans only on request
# (no auto scan). Two scans, as kmemleak's documentation recommends, so that
# objects in flight are not reported; the host runner fails the scenario when
# a report's backtrace names replipipe. kmemleak reports only objects older
# than 5 s at the start of a scan, so the second one starts at least 5 s
# after the first: then whatever the scenario left behind is old enough. The
# first scan takes longer than that under TCG, so usually nobody sleeps.
if [ -e /sys/kernel/debug/kmemleak ]; then
	echo "[vm] kmemleak: scanning"
	scan_start=$(cut -d' ' -f1 /proc/uptime)
	echo scan > /sys/kernel/debug/kmemleak
	rest=$(awk -v s="$scan_start" '{ r = s + 5.1 - $1; printf "%.1f", (r > 0 ? r : 0) }' /proc/uptime)
	echo "[vm] kmemleak: first scan done; second in ${rest}s"
	sleep "$rest"
	echo scan > /sys/kernel/debug/kmemleak
	echo "----- REPLIPIPE-KMEMLEAK-BEGIN -----"
	cat /sys/kernel/debug/kmemleak
	echo "----- REPLIPIPE-KMEMLEAK-END -----"
fi
if [ $rc -eq 0 ]; then
	echo "REPLIPIPE-SCENARIO: PASS"
else
	if [ $rc -eq 143 ] || [ $rc -eq 124 ]; then
		echo "[vm] scenario $name: guest time-out after ${limit}s; blocked tasks:"
		echo w > /proc/sysrq-trigger 2>/dev/null
	fi
	echo "REPLIPIPE-SCENARIO: FAIL rc=$rc"
fi
echo "----- REPLIPIPE-DMESG-BEGIN -----"
dmesg
echo "----- REPLIPIPE-DMESG-END -----"
echo "REPLIPIPE-TAINTED: $(cat /proc/sys/kernel/tainted)"
sync
poweroff -f
sleep 30
