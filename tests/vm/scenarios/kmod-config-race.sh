#!/bin/sh
# A write to a backstore's control racing its enable (found in review).
# control checked "not enabled" with no lock, then set udev_path: a write
# that passed the check while enable opened the primary left the LUN on one
# device while udev_path (replipipe's, in info, and LIO's attribute, which
# a restore of the configuration opens; also the write-intent record's
# identity) named the other. Each try makes a backstore with udev_path
# /dev/ram0, starts a writer that sets udev_path to /dev/ram1 and
# /dev/ram0 in turn until control is refused, and a reader of info, then
# enables it: the device enable opened (info's %pg) must be the one both
# udev_paths name, and control refused afterwards, in every try. Each
# write repeats udev_path= about 190 times (most of a page): the parse
# between the check and the write then takes most of the store, and the
# race is hit far more often than with one (the review's reproducer: 3
# mismatches in 60 tries). On the debug kernel lockdep sees control,
# enable, info and destroy take the backstore's cfg_lock.
# vm-timeout: 300
# vm-cost: 30
# vm-debug-cost: 100

# 80 tries take 16 to 20 s on Debian's kernel, where the old module failed
# 14 of them; on the debug kernel (lockdep: /proc/lockdep) a try
# takes 1.1 to 1.4 s, and 40 are enough (the old module failed 10 of them).
TRIES=80
[ ! -e /proc/lockdep ] || TRIES=40
CORE=$VM_CFS/core/replipipe_0
STOP=/tmp/config-race.stop

vm_brd 2 16
vm_modprobe target_core_mod
vm_modprobe replipipe

# v0, v1: a control write whose last (and every) udev_path= is ram0, ram1.
v0='' v1='' k=0
while [ $k -lt 190 ]; do
	v0="${v0}udev_path=/dev/ram0,"
	v1="${v1}udev_path=/dev/ram1,"
	k=$((k + 1))
done

mism=0 raced=0 writes=0 i=0
t0=$(vm_now_ms)
while [ $i -lt $TRIES ]; do
	i=$((i + 1))
	d=$CORE/r$i
	mkdir -p "$d" || vm_fail "mkdir $d"
	echo udev_path=/dev/ram0 > "$d/control" || vm_fail "try $i: control refused before enable"
	rm -f $STOP
	# Builtins only: the loops must not fork (tens of ms on the debug kernel).
	(
		n=0
		while echo "$v1" > "$d/control" 2> /dev/null; do
			n=$((n + 1))
			echo "$v0" > "$d/control" 2> /dev/null || break
			n=$((n + 1))
		done
		echo $n > /tmp/config-race.n
	) &
	writer=$!
	(
		while [ ! -e $STOP ]; do
			read -r _ < "$d/info" || :
		done
	) &
	reader=$!
	sleep 0.0$((i % 5 + 1))
	echo 1 > "$d/enable" || vm_fail "try $i: enable refused"
	wait $writer
	: > $STOP
	wait $reader
	read -r n < /tmp/config-race.n
	writes=$((writes + n))
	[ "$n" -gt 0 ] && raced=$((raced + 1))

	# info: LIO's status line, then the backend's.
	{ read -r _; read -r line; } < "$d/info"
	case $line in
	"replipipe primary: /dev/"*" ("*) ;;
	*) vm_fail "try $i: info does not name an open primary: $line" ;;
	esac
	rest=${line#replipipe primary: }
	path=${rest%% *}
	opened=${rest#* (}
	opened=${opened%% *}
	read -r lio < "$d/udev_path"
	if [ "${path#/dev/}" != "$opened" ] || [ "$lio" != "$path" ]; then
		mism=$((mism + 1))
		vm_log "try $i: opened $opened, but udev_path $path (LIO's: $lio)"
	fi
	if echo udev_path=/dev/ram1 > "$d/control" 2> /dev/null; then
		vm_fail "try $i: control accepted once enabled"
	fi
	rmdir "$d" || vm_fail "rmdir $d"
done
vm_log "mismatches: $mism of $TRIES tries ($raced with a write to control" \
	"before enable, $writes writes) in $(($(vm_now_ms) - t0)) ms"
[ $raced -ge $((TRIES / 2)) ] || vm_fail "only $raced of $TRIES tries raced enable"
[ $mism -eq 0 ] || vm_fail "$mism of $TRIES enables opened another device than udev_path names"

rmdir "$CORE" || vm_fail "rmdir $CORE"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-config-race done"
