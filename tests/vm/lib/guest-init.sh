#!/bin/sh
# /init of the VM bench initramfs (busybox sh). Mounts the pseudo file systems,
# loads the virtio disks, then hands PID 1 to guest-run.sh (the scenario and
# its verdict), or with `# vm-init: systemd` to systemd, which runs
# guest-run.sh as a service. Never exits (init exiting would panic the
# kernel).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
RP=/lib/replipipe
umask 022
# The host's run-scenario.sh waits for this line: a guest that has not
# printed it in time hung in early boot and is booted again (decision 66).
echo "[vm] init"

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

# `# vm-init: systemd`: systemd is PID 1, as on a real host, so that a
# scenario can run the project's units with their sandboxing. Only the units
# below and the ones the scenario ships are there: replipipe-scenario.target
# pulls in guest-run.sh and nothing else starts on its own. The scenario's
# output goes to the console, as without systemd.
if [ -e $RP/init-systemd ]; then
	mkdir -p /etc/systemd/system
	[ -e /var/run ] || ln -s /run /var/run
	cat > /etc/systemd/system/replipipe-scenario.service <<-EOF
	[Unit]
	Description=replipipe VM scenario
	DefaultDependencies=no
	[Service]
	ExecStart=/bin/sh $RP/guest-run.sh
	StandardInput=null
	StandardOutput=tty
	StandardError=inherit
	TTYPath=/dev/console
	EOF
	cat > /etc/systemd/system/replipipe-scenario.target <<-EOF
	[Unit]
	Description=replipipe VM scenario
	Wants=replipipe-scenario.service
	EOF
	exec /lib/systemd/systemd --unit=replipipe-scenario.target \
		--show-status=false --log-target=console --log-level=notice
fi
exec /bin/sh $RP/guest-run.sh
