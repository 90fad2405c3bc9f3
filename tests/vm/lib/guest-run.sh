#!/bin/sh
# The scenario and its verdict, as PID 1 (exec'd by guest-init.sh) or as a
# systemd service (`# vm-init: systemd`): runs the scenario with `sh -e` after
# sourcing guest-lib.sh, prints the verdict marker the host runner looks for,
# the kernel log and the taint mask, then powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
RP=/lib/replipipe
umask 022

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
