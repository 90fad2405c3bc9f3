#!/bin/sh
# The scenarios and their verdict, as PID 1 (exec'd by guest-init.sh) or as a
# systemd service (`# vm-init: systemd`): runs each scenario of
# /lib/replipipe/scenarios with `sh -e` after sourcing guest-lib.sh, prints
# the verdict marker the host runner looks for, the kernel log and the taint
# mask, then powers off. With several scenarios in one boot (decision 95)
# guest-reset.sh takes the guest back to what /init left between two (up
# to 120 s), kmemleak scans after each reset, the kernel log of each
# scenario is printed and cleared after it, and the first that fails (or a
# reset that fails) ends the boot.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb
RP=/lib/replipipe
umask 022

batch=$(cat $RP/scenario-name)
count=$(wc -l < $RP/scenarios)
# `# vm-boots: N`: the runner says which boot this is (rp.boot=K rp.boots=N).
boot=$(sed -n 's/.*[[:space:]]rp\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)
boots=$(sed -n 's/.*[[:space:]]rp\.boots=\([0-9]*\).*/\1/p' /proc/cmdline)
export RP_BOOT=${boot:-1} RP_BOOTS=${boots:-1}
[ "$count" -eq 1 ] || {
	echo "[vm] $batch: $count scenarios in one boot: $(cut -d' ' -f1 $RP/scenarios | tr '\n' ' ')"
	sh $RP/guest-reset.sh snapshot
}
# Debug kernel (tests/vm/debug-kernel.sh): kmemleak scans only on request
# (no auto scan). The host runner fails the scenario when an object listed
# after the scans has a backtrace through replipipe.
# - Two scans: kmemleak lists an unreferenced object only if its contents
#   did not change since the previous scan (a scan that finds a new or
#   changed one leaves it for the next), and only if it was older than
#   5 s when the scan started. So the second starts at least 5.1 s after
#   the first did: whatever the scenario left behind qualifies by then.
#   The first scan takes longer than that under TCG, or nobody sleeps.
# - A scan stops early, and lists nothing new, when the process that asked
#   for it has a signal pending. This shell is PID 1: every orphan that
#   exits signals it, busybox timeout's watchdog within 1 s of the
#   scenario's end among them. The first scan, whose job is to record
#   every object's contents, does that even when it stops early (it often
#   does, after about 1.3 s instead of 5.5: cheaper). The second one, which
#   decides, is asked for by a child shell, which nothing signals. (The
#   cost of the cheap first scan: an object is listed when the second scan
#   alone finds it unreferenced, so a pointer out of sight during that one
#   scan could list a live object. That never happened in the scenarios;
#   the runner would name it.)
# In a batch this runs after each reset (decision 95), before the next
# scenario loads anything: a frame in a module unloaded since (replipipe,
# or what the reset unloaded) is still a bare address then, not a name of
# whatever module a later scenario loaded at the same place. `clear`
# after each report: an object is listed once.
kmemleak=/sys/kernel/debug/kmemleak
kmemleak_report() {
	[ -e $kmemleak ] || return 0
	echo "[vm $(cut -d' ' -f1 /proc/uptime)] kmemleak: scanning"
	scan_start=$(cut -d' ' -f1 /proc/uptime)
	echo scan > $kmemleak
	rest=$(awk -v s="$scan_start" '{ r = s + 5.1 - $1; printf "%.1f", (r > 0 ? r : 0) }' /proc/uptime)
	echo "[vm $(cut -d' ' -f1 /proc/uptime)] kmemleak: first scan done; second in ${rest}s"
	sleep "$rest"
	sh -c "echo scan > $kmemleak"
	echo "[vm $(cut -d' ' -f1 /proc/uptime)] kmemleak: second scan done"
	echo "----- REPLIPIPE-KMEMLEAK-BEGIN -----"
	cat $kmemleak
	echo "----- REPLIPIPE-KMEMLEAK-END -----"
	echo clear > $kmemleak
}
rc=0
k=0
# Each line: NAME LIMIT (the guest's seconds for it; the host's time-out is
# theirs summed, and 30 s more each, so that the guest can still report).
while read -r name limit; do
	k=$((k + 1))
	if [ $k -gt 1 ]; then
		echo "[vm $(cut -d' ' -f1 /proc/uptime)] reset after $prev"
		timeout 120 sh $RP/guest-reset.sh < /dev/null
		rc=$?
		if [ $rc -ne 0 ]; then
			echo "[vm] $batch: the guest could not be reset after $prev (rc=$rc)"
			[ $rc -ne 124 ] && [ $rc -ne 143 ] || {
				echo "[vm] the reset took over 120 s; blocked tasks:"
				echo w > /proc/sysrq-trigger 2>/dev/null
			}
			echo "REPLIPIPE-SCENARIO-RESULT: $prev FAIL: the reset after it failed"
			rc=1
			break
		fi
		kmemleak_report
	fi
	if [ -n "$boot" ]; then
		echo "[vm] scenario $name: start boot $boot of $boots (kernel $(uname -r), guest limit ${limit}s)"
	else
		echo "[vm] scenario $name: start (kernel $(uname -r), guest limit ${limit}s)"
	fi
	cd /tmp
	timeout "$limit" sh -e -c '. /lib/replipipe/guest-lib.sh; . /lib/replipipe/scenario.d/$0.sh' "$name" < /dev/null
	rc=$?
	cd /
	# The last PID the kernel handed out: how many processes and threads the
	# scenario started (each fork costs tens of ms on the debug kernel).
	read -r _ _ _ _ last_pid < /proc/loadavg
	echo "[vm $(cut -d' ' -f1 /proc/uptime)] scenario $name: ended, rc=$rc, last PID $last_pid"
	if [ $rc -ne 0 ] && { [ $rc -eq 143 ] || [ $rc -eq 124 ]; }; then
		echo "[vm] scenario $name: guest time-out after ${limit}s; blocked tasks:"
		echo w > /proc/sysrq-trigger 2>/dev/null
	fi
	if [ "$count" -gt 1 ]; then
		echo "REPLIPIPE-SCENARIO-RESULT: $name $([ $rc -eq 0 ] && echo PASS || echo FAIL) rc=$rc"
		echo "----- REPLIPIPE-DMESG-BEGIN $name -----"
		dmesg -c
		echo "----- REPLIPIPE-DMESG-END $name -----"
	fi
	[ $rc -eq 0 ] || break
	prev=$name
done < $RP/scenarios
kmemleak_report
if [ $rc -eq 0 ]; then
	echo "REPLIPIPE-SCENARIO: PASS"
else
	echo "REPLIPIPE-SCENARIO: FAIL rc=$rc"
fi
echo "----- REPLIPIPE-DMESG-BEGIN -----"
dmesg
echo "----- REPLIPIPE-DMESG-END -----"
echo "REPLIPIPE-TAINTED: $(cat /proc/sys/kernel/tainted)"
echo "[vm $(cut -d' ' -f1 /proc/uptime)] powering off"
sync
poweroff -f
sleep 30
