# Guest-side helpers for VM scenarios (busybox ash). Sourced by /init before the
# scenario, which runs under `set -e`: every helper either succeeds or calls
# vm_fail. Functions are listed in tests/vm/README.md.

VM_CFS=/sys/kernel/config/target
VM_STATE=/tmp/.vm-lib
mkdir -p "$VM_STATE"

# The helpers that scenarios call most (in loops, too) use shell builtins
# only: on the debug kernel a fork and exec costs 40 to 60 ms.

# vm_log MSG...: one line in the host log, tagged with the guest uptime
# (on stderr, so it also works inside $(...)).
vm_log() {
	local up _
	read -r up _ < /proc/uptime
	echo "[vm $up] $*" >&2
}

# vm_now_ms: the guest's uptime in milliseconds (for timing a step).
# /proc/uptime has two decimals: 12.34 is 12340 ms ("1" before the
# decimals keeps 08 from reading as octal).
vm_now_ms() {
	local up _
	read -r up _ < /proc/uptime
	echo $((${up%.*} * 1000 + 1${up#*.} * 10 - 1000))
}

# vm_fail MSG...: print the reason and exit 1 (ends the scenario).
vm_fail() {
	echo "[vm] FAIL: $*" >&2
	exit 1
}

# vm_field TEXT KEY: the value of KEY=VALUE in TEXT (rp-nlctl's "pair ..."
# lines, live_objects and the guest tools' summaries are KEY=VALUE words
# separated by blanks, over one line or more): of the first word that
# starts with KEY=; nothing when no word does.
vm_field() {
	local rest=" $1"
	case $rest in
	*[[:space:]]"$2="*)
		rest=${rest#*[[:space:]]"$2="}
		echo "${rest%%[[:space:]]*}"
		;;
	esac
}

# vm_lag_drained PIPE [SECONDS]: waits (30 s by default) until the async
# lag of PIPE's pair is 0, and prints that pair's line.
vm_lag_drained() {
	local pair i=0
	while :; do
		pair=$(rp-nlctl get "$1" | grep "^pair ") || vm_fail "no pair line in rp-nlctl get $1"
		[ "$(vm_field "$pair" lag)" = 0 ] && break
		[ $i -lt $((${2:-30} * 10)) ] || vm_fail "the lag of $1 did not drain within ${2:-30} s: $pair"
		sleep 0.1
		i=$((i + 1))
	done
	echo "$pair"
}

# vm_norm_ranges < FILE: "FIRST-LAST" lines from rp-verify's "F-L" or
# rp-nlctl's "dirty F[-L]" lines.
vm_norm_ranges() {
	sed -n 's/^dirty //; /^[0-9][0-9]*\(-[0-9][0-9]*\)\{0,1\}$/p' | sed 's/^\([0-9]*\)$/\1-\1/'
}

# vm_genl_loads_beside WHAT: loads nbd, a module with a generic netlink
# family, within 3 s while WHAT holds requests of this module's family, and
# unloads it. Generic netlink runs every request under the read side of a
# lock that all families share and a family's registration takes for
# writing: behind a request that waits long, every genl request of the
# host would queue. Says so and returns when the kernel has no nbd (the
# debug kernel).
vm_genl_loads_beside() {
	local t0 t1
	if [ -z "$(find /lib/modules/$(uname -r) -name 'nbd.ko*')" ]; then
		vm_log "no nbd module in this kernel: no genl family registered beside $1"
		return 0
	fi
	t0=$(vm_now_ms)
	modprobe nbd || vm_fail "modprobe nbd"
	t1=$(vm_now_ms)
	vm_log "RESULT nbd's genl family registered in $((t1 - t0)) ms beside $1"
	[ $((t1 - t0)) -lt 3000 ] ||
		vm_fail "loading nbd (a genl family) took $((t1 - t0)) ms beside $1"
	rmmod nbd || vm_fail "rmmod nbd"
}

# vm_kernel_stack_wait FUNCTION SECONDS: waits until a task's kernel stack
# holds FUNCTION (a request or a work item that reached a wait); fails
# after SECONDS.
vm_kernel_stack_wait() {
	local i=0
	until grep -qs "$1" /proc/[0-9]*/stack; do
		[ $i -lt $(($2 * 20)) ] || vm_fail "no task reached $1 within $2 s"
		sleep 0.05
		i=$((i + 1))
	done
}

# vm_modprobe MOD [ARGS...]: load a module or fail, saying why.
vm_modprobe() {
	local out
	if ! out=$(modprobe "$@" 2>&1); then
		[ -n "$out" ] && echo "$out" >&2
		if [ "$1" = replipipe ] && [ -s /lib/replipipe/kmod-status ]; then
			echo "[vm] replipipe.ko: $(cat /lib/replipipe/kmod-status)" >&2
		fi
		vm_fail "modprobe $*"
	fi
	return 0
}

# vm_wait_path PATH [TENTHS]: wait for PATH to exist (default 10 s).
vm_wait_path() {
	local i=0 max=${2:-100}
	while [ ! -e "$1" ]; do
		[ $i -ge "$max" ] && vm_fail "$1 did not appear within $((max / 10)) s"
		sleep 0.1
		i=$((i + 1))
	done
	return 0
}

# vm_brd COUNT SIZE_MIB: load brd with COUNT ramdisks of SIZE_MIB each:
# /dev/ram0 .. /dev/ram<COUNT-1>.
vm_brd() {
	[ -d /sys/module/brd ] && vm_fail "vm_brd: brd already loaded"
	vm_modprobe brd rd_nr="$1" rd_size=$(($2 * 1024)) max_part=0
	vm_wait_path /dev/ram$(($1 - 1))
}

# vm_size_bytes N[KMG]: print N with its binary suffix applied.
vm_size_bytes() {
	case "$1" in
	*[kK]) echo $((${1%?} * 1024)) ;;
	*[mM]) echo $((${1%?} * 1024 * 1024)) ;;
	*[gG]) echo $((${1%?} * 1024 * 1024 * 1024)) ;;
	*) echo $(($1)) ;;
	esac
}

# vm_backstore TYPE HBA NAME DEV [INTENT]: create and enable a configfs backstore.
#   vm_backstore iblock iblock_0 r1 /dev/ram0
#   vm_backstore replipipe replipipe_0 v1 /dev/ram0
#   vm_backstore replipipe replipipe_0 v1 /dev/vda /dev/vdc   (write-intent record on vdc)
#   vm_backstore replipipe replipipe_0 v1 /dev/vda /dev/vdc,intent_chunk_kib=64
#                                   (INTENT's own control parameters follow it)
#   vm_backstore fileio fileio_0 f1 /tmp/f:SIZE     (SIZE in bytes or N[KMG])
#   vm_backstore rd_mcp rd_mcp_0 m1 SIZE            (ramdisk, SIZE as above)
# HBA must be <TYPE>_<N>. Prints the backstore's configfs directory.
vm_backstore() {
	local type=$1 hba=$2 name=$3 dev=$4 intent=${5:-} dir ctl
	[ $# -eq 4 ] || { [ $# -eq 5 ] && [ "$type" = replipipe ]; } ||
		vm_fail "usage: vm_backstore TYPE HBA NAME DEV [INTENT (replipipe only)]"
	case "$hba" in
	"${type}"_[0-9]*) ;;
	*) vm_fail "vm_backstore: HBA '$hba' must be ${type}_<N>" ;;
	esac
	vm_modprobe target_core_mod
	case "$type" in
	iblock) vm_modprobe target_core_iblock; ctl="udev_path=$dev" ;;
	fileio)
		vm_modprobe target_core_file
		ctl="fd_dev_name=${dev%:*},fd_dev_size=$(vm_size_bytes "${dev##*:}")" ;;
	pscsi) vm_modprobe target_core_pscsi; ctl="udev_path=$dev" ;;
	rd_mcp) ctl="rd_pages=$(($(vm_size_bytes "$dev") / 4096))" ;;
	replipipe)
		vm_modprobe replipipe
		ctl="udev_path=$dev${intent:+,intent_path=$intent}" ;;
	*) vm_modprobe "target_core_$type"; ctl="udev_path=$dev" ;;
	esac
	dir=$VM_CFS/core/$hba/$name
	mkdir -p "$dir" || vm_fail "mkdir $dir"
	echo "$ctl" > "$dir/control" || vm_fail "$type $hba/$name: control '$ctl' refused"
	echo 1 > "$dir/enable" || vm_fail "$type $hba/$name: enable refused"
	echo "$dir"
}

# vm_nullb_cached NAME MIB: /dev/NAME, a memory-backed null_blk of MIB MiB
# with a volatile write cache of MIB MiB (a flush writes it back; powering
# it off through $VM_NULLB/NAME/power drops it). Needs null_blk loaded with
# nr_devices=0.
VM_NULLB=/sys/kernel/config/nullb
vm_nullb_cached() {
	mkdir "$VM_NULLB/$1" || vm_fail "mkdir $VM_NULLB/$1"
	echo "$2" > "$VM_NULLB/$1/size"
	echo 1 > "$VM_NULLB/$1/memory_backed"
	echo "$2" > "$VM_NULLB/$1/cache_size" || vm_fail "null_blk has no cache_size"
	echo 1 > "$VM_NULLB/$1/power" || vm_fail "cannot power on $1"
	vm_wait_path "/dev/$1"
	[ "$(cat "/sys/block/$1/queue/write_cache")" = "write back" ] ||
		vm_fail "$1 has no volatile write cache"
}

# vm_no_live_objects: replipipe.ko's live_objects (pipes, pairs, claims,
# async copies) are all back to zero, or the scenario fails; logs them.
vm_no_live_objects() {
	local live
	live=$(cat /sys/module/replipipe/parameters/live_objects) ||
		vm_fail "no live_objects: replipipe is not loaded"
	vm_log "live_objects: $live"
	[ "$live" = "pipes=0 pairs=0 claims=0 async_bufs=0" ] || vm_fail "objects leaked: $live"
}

# vm_dm_create NAME TABLE: a device-mapper device made without udev; prints
# its /dev/dm-N (there are no /dev/mapper links without udev).
vm_dm_create() {
	local d
	DM_DISABLE_UDEV=1 dmsetup --noudevsync create "$1" --table "$2" ||
		vm_fail "dmsetup create $1 '$2'"
	for d in /sys/block/dm-*; do
		[ "$(cat "$d/dm/name")" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	vm_fail "no /dev/dm-N for $1"
}

# vm_dm_load NAME TABLE: swap the table of a live device (e.g. linear ->
# error to fail it, and back): suspend, load, resume.
vm_dm_load() {
	DM_DISABLE_UDEV=1 dmsetup --noudevsync suspend "$1" &&
		DM_DISABLE_UDEV=1 dmsetup --noudevsync load "$1" --table "$2" &&
		DM_DISABLE_UDEV=1 dmsetup --noudevsync resume "$1" ||
		vm_fail "dmsetup: cannot switch $1 to '$2'"
}

# vm_dm_writes_fail NAME DEV OFFSET SECTORS ERRDEV [DELAY_MS]: dm device
# NAME (made by vm_dm_create) reads and flushes SECTORS of DEV from OFFSET
# and sends every write to ERRDEV, a dm error device at least as large,
# after DELAY_MS (default 0): a write-intent record that answers the
# module's probe (a read and a flush, docs/decisions.md 110) but cannot be
# written.
vm_dm_writes_fail() {
	vm_modprobe dm_delay
	vm_dm_load "$1" "0 $4 delay $2 $3 0 $5 0 ${6:-0} $2 $3 0"
}

# vm_events_listen OUT ERR [ARGS...]: `rp-nlctl events ARGS` in the
# background (its events to OUT, its messages to ERR), once it listens;
# its pid in VM_EVENTS_PID.
vm_events_listen() {
	local out=$1 err=$2 i=0
	shift 2
	rp-nlctl events "$@" > "$out" 2> "$err" &
	VM_EVENTS_PID=$!
	until grep -q listening "$err"; do
		[ $i -lt 100 ] || vm_fail "rp-nlctl events did not start: $(cat "$err")"
		sleep 0.1
		i=$((i + 1))
	done
}

# vm_backstore_delete HBA/NAME: remove a backstore (and its HBA when empty).
vm_backstore_delete() {
	local hba=${1%%/*}
	rmdir "$VM_CFS/core/$1" || vm_fail "rmdir core/$1"
	if [ -z "$(ls "$VM_CFS/core/$hba" | grep -v '^hba_')" ]; then
		rmdir "$VM_CFS/core/$hba" || vm_fail "rmdir core/$hba"
	fi
	return 0
}

# vm_wait_openable DEV: waits (10 s at most) until the block device DEV can
# be opened. add_disk() makes the node and the sysfs entry (device_add())
# before the disk can be opened (bdev_add(), after its queue's sysfs and
# more): in between, open() fails with ENXIO (block/genhd.c). Seen on the
# debug kernel under load: the first write to a new LUN failed.
vm_wait_openable() {
	local i=0
	until blockdev --getsz "$1" > /dev/null 2>&1; do
		[ $i -lt 100 ] || vm_fail "$1 cannot be opened 10 s after it appeared"
		sleep 0.1
		i=$((i + 1))
	done
}

# vm_scsi_disk H:C:T:L: print /dev/sdX of a SCSI address, once it can be
# opened (waits up to 10 s for each; sd_mod has to be loaded, there is no
# udev).
vm_scsi_disk() {
	vm_block_disk "/sys/bus/scsi/devices/$1/block/*" "SCSI address $1"
}

# vm_block_disk GLOB WHAT: waits (10 s) for a sysfs .../block/NAME that GLOB
# (unquoted: a pattern) matches, then prints /dev/NAME once it opens; WHAT
# names the device in the failure.
vm_block_disk() {
	local i=0 d
	while :; do
		for d in $1; do
			if [ -e "$d" ]; then
				vm_wait_path "/dev/${d##*/}"
				vm_wait_openable "/dev/${d##*/}"
				echo "/dev/${d##*/}"
				return 0
			fi
		done
		[ $i -ge 100 ] && vm_fail "no block device for $2"
		sleep 0.1
		i=$((i + 1))
	done
}

# vm_iscsi_export IQN LUN HBA/NAME [WRITE_PROTECT]: a backstore as LUN LUN of
# IQN's TPG 1 on 127.0.0.1:3260, demo mode without authentication (any
# initiator, write-protected if WRITE_PROTECT is 1); the portal and the
# TPG's enable come with its first LUN. Needs iscsi_target_mod.
vm_iscsi_export() {
	local t=$VM_CFS/iscsi/$1/tpgt_1 a
	mkdir -p "$t/lun/lun_$2" || vm_fail "mkdir $t/lun/lun_$2"
	ln -s "$VM_CFS/core/$3" "$t/lun/lun_$2/${3#*/}" || vm_fail "link $3 as LUN $2 of $1"
	[ -d "$t/np/127.0.0.1:3260" ] || mkdir "$t/np/127.0.0.1:3260" ||
		vm_fail "portal 127.0.0.1:3260 for $1"
	for a in generate_node_acls=1 authentication=0 \
		demo_mode_write_protect=${4:-0} cache_dynamic_acls=1; do
		echo "${a#*=}" > "$t/attrib/${a%=*}" || vm_fail "$1: attrib $a"
	done
	[ "$(cat "$t/enable")" = 1 ] || echo 1 > "$t/enable" || vm_fail "enable $t"
}

# vm_iscsi_unexport IQN LUN HBA/NAME: undo vm_iscsi_export IQN LUN HBA/NAME
# when it is the target's only LUN: the LUN, the portal, the TPG, the target.
vm_iscsi_unexport() {
	local t=$VM_CFS/iscsi/$1/tpgt_1
	echo 0 > "$t/enable" || vm_fail "disable $t"
	rm "$t/lun/lun_$2/${3#*/}" || vm_fail "unlink $3 from $t"
	rmdir "$t/lun/lun_$2" "$t/np/127.0.0.1:3260" "$t" "$VM_CFS/iscsi/$1" ||
		vm_fail "cannot remove the iSCSI target $1"
}

# vm_iscsid_start: the iSCSI initiator's daemon, in a session of its own
# (iscsid signals its whole process group when it stops), its log in
# /tmp/iscsid.log; VM_ISCSID is its pid.
vm_iscsid_start() {
	echo "InitiatorName=iqn.1993-08.org.debian:01:replipipe-vm" > /etc/iscsi/initiatorname.iscsi
	mkdir -p /run/lock/iscsi /var/lock /etc/iscsi/nodes /etc/iscsi/send_targets
	setsid iscsid -f > /tmp/iscsid.log 2>&1 &
	VM_ISCSID=$!
	sleep 1
	kill -0 $VM_ISCSID || { cat /tmp/iscsid.log; vm_fail "iscsid did not start"; }
}

# vm_iscsid_stop PID: stop iscsid (SIGTERM, 10 s). iscsid's own shutdown is
# not under test, and it has once outlived the 10 s under load with no
# session left: then its state and kernel stack are logged and it gets
# SIGKILL. Only an iscsid that survives that too (stuck in the kernel, the
# kernel side of the initiator or the target is) fails the scenario.
vm_iscsid_stop() {
	local i
	kill "$1"
	for i in $(seq 100); do
		kill -0 "$1" 2> /dev/null || return 0
		sleep 0.1
	done
	vm_log "iscsid (pid $1) still running 10 s after SIGTERM: $(sed -n 's/^State:[[:space:]]*//p' /proc/$1/status), wchan $(cat /proc/$1/wchan); its log and kernel stack:"
	cat /tmp/iscsid.log
	cat /proc/$1/stack 2> /dev/null || vm_log "(iscsid ended meanwhile)"
	# fails only if iscsid ended meanwhile
	kill -9 "$1" 2> /dev/null || return 0
	for i in $(seq 100); do
		kill -0 "$1" 2> /dev/null || return 0
		sleep 0.1
	done
	vm_fail "iscsid (pid $1) survived SIGKILL for 10 s: stuck in the kernel"
}

# vm_iscsi_login IQN: log in to IQN on 127.0.0.1:3260 (iscsid running,
# vm_iscsid_start) and print the disk of its LUN 0; the only session.
# Each iscsiadm is bounded (see vm_iscsi_logout).
vm_iscsi_login() {
	timeout 60 iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260 \
		> /tmp/iscsi-login.out 2>&1 || vm_fail "iSCSI discovery: $(cat /tmp/iscsi-login.out)"
	timeout 60 iscsiadm -m node -T "$1" -p 127.0.0.1:3260 --login \
		> /tmp/iscsi-login.out 2>&1 || vm_fail "iSCSI login to $1: $(cat /tmp/iscsi-login.out)"
	vm_block_disk "/sys/class/iscsi_session/session*/device/target*/*/block/*" \
		"the iSCSI login to $1"
}

# vm_iscsi_session_left IQN: the kernel still has a session to IQN.
vm_iscsi_session_left() {
	local t name
	for t in /sys/class/iscsi_session/session*/targetname; do
		[ -e "$t" ] && read -r name < "$t" && [ "$name" = "$1" ] && return 0
	done
	return 1
}

# vm_iscsi_logout IQN: log out of IQN; no session to it may be left.
# iscsiadm can wait for iscsid's answer without end (once in a session's
# final check, the guest hung there for 800 s with no task blocked in the
# kernel), so each try is bounded; after a try that timed out, the kernel's
# sessions say whether the logout happened, and one more try is made while
# one is left.
vm_iscsi_logout() {
	local try i
	for try in 1 2; do
		timeout 60 iscsiadm -m node -T "$1" -p 127.0.0.1:3260 --logout \
			> /tmp/iscsi-logout.out 2>&1 && ! vm_iscsi_session_left "$1" && return 0
		vm_log "iSCSI logout of $1, try $try: $(cat /tmp/iscsi-logout.out)"
		i=0
		while [ $i -lt 100 ]; do
			vm_iscsi_session_left "$1" || return 0
			sleep 0.1
			i=$((i + 1))
		done
	done
	cat /tmp/iscsid.log
	ps
	vm_fail "iSCSI logout of $1: the session is still there after two tries"
}

# vm_tcm_loop_export HBA/NAME: export a backstore through tcm_loop (one
# loopback target per backstore, LUN 0) and print its /dev/sdX.
vm_tcm_loop_export() {
	local so=$1 key n wwn tpg addr
	[ -d "$VM_CFS/core/$so" ] || vm_fail "vm_tcm_loop_export: no backstore core/$so"
	vm_modprobe sd_mod
	vm_modprobe tcm_loop
	key=$(echo "$so" | tr / _)
	n=$(cat "$VM_STATE/tcm-loop-count" 2>/dev/null || echo 0)
	n=$((n + 1))
	echo $n > "$VM_STATE/tcm-loop-count"
	wwn=$(printf 'naa.5001405%09x' "$n")
	tpg=$VM_CFS/loopback/$wwn/tpgt_1
	mkdir -p "$tpg/lun/lun_0" || vm_fail "mkdir $tpg/lun/lun_0"
	# The nexus first: linking the LUN makes tcm_loop scan it at once.
	printf 'naa.500140f%09x\n' "$n" > "$tpg/nexus" || vm_fail "nexus of $wwn"
	ln -s "$VM_CFS/core/$so" "$tpg/lun/lun_0/rp_$key" || vm_fail "link $so into $tpg"
	echo "$wwn" > "$VM_STATE/tcm-loop-$key"
	addr=$(cat "$tpg/address")
	vm_scsi_disk "$addr:0"
}

# vm_tcm_loop_unexport HBA/NAME: undo vm_tcm_loop_export.
vm_tcm_loop_unexport() {
	local key wwn tpg l
	key=$(echo "$1" | tr / _)
	wwn=$(cat "$VM_STATE/tcm-loop-$key" 2>/dev/null) ||
		vm_fail "vm_tcm_loop_unexport: $1 was not exported"
	tpg=$VM_CFS/loopback/$wwn/tpgt_1
	for l in "$tpg"/lun/lun_0/*; do
		[ -L "$l" ] && { rm "$l" || vm_fail "unlink $l"; }
	done
	echo NULL > "$tpg/nexus" 2>/dev/null || true
	rmdir "$tpg/lun/lun_0" "$tpg" "$VM_CFS/loopback/$wwn" ||
		vm_fail "cannot remove loopback target $wwn"
	rm -f "$VM_STATE/tcm-loop-$key"
}

# vm_dev_bytes DEV: print the size in bytes of a block device or file.
vm_dev_bytes() {
	if [ -b "$1" ]; then blockdev --getsize64 "$1"; else stat -c %s "$1"; fi
}

# vm_repeated FILE N OUT: OUT holds FILE's bytes 2^N times (what a WRITE
# SAME of FILE's block over 2^N blocks leaves), by doubling: N forks of cat,
# not 2^N.
vm_repeated() {
	local i=0
	cp "$1" "$3"
	while [ $i -lt "$2" ]; do
		cat "$3" "$3" > "$3.tmp"
		mv "$3.tmp" "$3"
		i=$((i + 1))
	done
}

# vm_cmp_devs A B [BYTES]: byte-compare two devices or files: the first BYTES
# (N[KMG] allowed), default the whole of A. Fails on the first difference.
#
# The kernel module writes the legs with bios, behind the back of the block
# devices' page cache: a buffered read can return pages cached before. So
# two block devices are compared with O_DIRECT (rp-verify --cmp, after a
# sync for what was written through the cache): it is also about 20 times
# faster under TCG than busybox cmp, which reads a byte at a time. Anything
# else (a file, a length that is not whole 4 KiB blocks) goes through cmp,
# with the caches written back and dropped first.
vm_cmp_devs() {
	local bytes
	bytes=$(vm_size_bytes "${3:-$(vm_dev_bytes "$1")}")
	sync
	if [ -b "$1" ] && [ -b "$2" ] && [ $((bytes % 4096)) -eq 0 ]; then
		rp-verify --cmp "$1" "$2" --length "$bytes" > /tmp/vm-cmp.out 2>&1 ||
			vm_fail "$1 and $2 differ in the first $bytes bytes: $(cat /tmp/vm-cmp.out)"
		return 0
	fi
	echo 3 > /proc/sys/vm/drop_caches
	cmp -n "$bytes" "$1" "$2" || vm_fail "$1 and $2 differ in the first $bytes bytes"
}

# vm_sum DEV [BYTES]: print the md5 of the first BYTES (default all) of DEV.
# A block device is read with O_DIRECT (rp-verify --dump: the module writes
# the legs with bios, behind the page cache, and busybox dd's iflag=direct
# quietly reads through that cache), anything else through the cache. A
# failed or short read fails the scenario: two failed reads would sum
# alike.
vm_sum() {
	local bytes sum
	bytes=$(vm_size_bytes "${2:-$(vm_dev_bytes "$1")}")
	if [ -b "$1" ]; then
		sum=$(rp-verify --dump "$1" --length "$bytes" 2> /tmp/vm-sum.err | md5sum | cut -d' ' -f1)
		grep -q "^dump: bytes=$bytes\$" /tmp/vm-sum.err ||
			vm_fail "vm_sum: cannot read $bytes bytes of $1: $(cat /tmp/vm-sum.err)"
	else
		sum=$(head -c "$bytes" "$1" | md5sum | cut -d' ' -f1)
		[ "$(vm_dev_bytes "$1")" -ge "$bytes" ] || vm_fail "vm_sum: $1 has fewer than $bytes bytes"
	fi
	echo "$sum"
}

# vm_read DEV BLOCK COUNT FILE [BS]: copy COUNT blocks of BS (default 4096)
# bytes from block BLOCK of block device DEV into FILE, with O_DIRECT as
# vm_sum; a failed or short read fails the scenario (a check that some data
# is *not* there would otherwise pass on a read that failed).
vm_read() {
	local bs=${5:-4096}
	rp-verify --dump "$1" --offset $(($2 * bs)) --length $(($3 * bs)) > "$4" 2> /tmp/vm-read.err ||
		vm_fail "vm_read: cannot read $1 at block $2: $(cat /tmp/vm-read.err)"
	[ "$(vm_dev_bytes "$4")" = $(($3 * bs)) ] ||
		vm_fail "vm_read: short read of $1 at block $2: $(cat /tmp/vm-read.err)"
}

# vm_disk NAME: print /dev/vdX of the disk NAME from the `# vm-disks:` header.
vm_disk() {
	local d
	for d in /sys/block/vd*; do
		[ -e "$d/serial" ] || continue
		if [ "$(cat "$d/serial")" = "$1" ]; then
			vm_wait_path "/dev/${d##*/}"
			echo "/dev/${d##*/}"
			return 0
		fi
	done
	vm_fail "no virtio disk with serial $1"
}

# vm_as USER 'SHELL COMMAND': run a shell command line as USER (rpuser uid
# 1000, rpadmin uid 1001 in group replipipe, or nobody); returns its status.
vm_as() {
	su -s /bin/sh -c "$2" "$1"
}

# vm_daemon_start LOG [ARGS...]: start `replipiped --foreground ARGS` in the
# background, its output appended to LOG, and wait (at most 20 s) until its
# control socket answers `replipipectl list`. The pid is in $VM_DAEMON_PID.
# On failure the tail of LOG is printed.
vm_daemon_start() {
	local log=$1 i=0
	shift
	mkdir -p /run/replipipe /var/lib/replipipe
	replipiped --foreground "$@" >> "$log" 2>&1 &
	VM_DAEMON_PID=$!
	until [ -S /run/replipipe/replipiped.sock ] &&
		replipipectl list > /dev/null 2>&1; do
		kill -0 "$VM_DAEMON_PID" 2> /dev/null ||
			vm_daemon_fail "$log" "replipiped $* exited at start"
		[ $i -lt 200 ] || vm_daemon_fail "$log" "replipiped $* did not answer within 20 s"
		sleep 0.1
		i=$((i + 1))
	done
	vm_log "replipiped running, pid $VM_DAEMON_PID, options: $*"
}

# vm_daemon_stop LOG: SIGTERM the daemon vm_daemon_start started and fail
# unless it exits with status 0.
vm_daemon_stop() {
	kill "$VM_DAEMON_PID" || vm_daemon_fail "$1" "replipiped (pid $VM_DAEMON_PID) is gone"
	wait "$VM_DAEMON_PID" || vm_daemon_fail "$1" "replipiped did not exit cleanly on SIGTERM"
	VM_DAEMON_PID=
}

# vm_daemon_fail LOG MSG...: the last 40 lines of the daemon's LOG, then vm_fail.
vm_daemon_fail() {
	local log=$1
	shift
	echo "---- last lines of $log" >&2
	tail -n 40 "$log" >&2
	vm_fail "$@"
}

# vm_expect_rc WANT CMD...: runs CMD and fails the scenario unless it exits
# WANT (showing the end of the daemon's log when VM_DAEMON_LOG names it);
# CMD's output (stdout and stderr) is in $OUT, its status in $RC.
vm_expect_rc() {
	local want=$1
	shift
	set +e
	OUT=$("$@" 2>&1)
	RC=$?
	set -e
	echo "$OUT" >&2
	if [ "$RC" != "$want" ]; then
		[ -z "${VM_DAEMON_LOG:-}" ] ||
			vm_daemon_fail "$VM_DAEMON_LOG" "exit $RC (want $want): $*"
		vm_fail "exit $RC (want $want): $*"
	fi
	vm_log "ok, exit $RC: $*"
}

# vm_boot: print which boot of a `# vm-boots: N` scenario this is (1..N; 1
# for a single-boot scenario). vm_boots: print N. Also in $RP_BOOT/$RP_BOOTS.
vm_boot() {
	echo "${RP_BOOT:-1}"
}
vm_boots() {
	echo "${RP_BOOTS:-1}"
}

# vm_crash_reboot: hard-reset the VM now (sysrq b: no sync, no unmount, the
# page cache is lost; what reached the virtio disks survives into the next
# boot). Prints the taint and the REBOOT marker the runner wants from every
# boot of a `# vm-boots:` scenario but the last, then waits a second for the
# console to drain: whatever runs meanwhile (writers) keeps running.
vm_crash_reboot() {
	[ "$(vm_boot)" -lt "$(vm_boots)" ] ||
		vm_fail "vm_crash_reboot in the last boot ($(vm_boot) of $(vm_boots))"
	echo 1 > /proc/sys/kernel/sysrq || vm_fail "cannot enable sysrq"
	echo "REPLIPIPE-TAINTED: $(cat /proc/sys/kernel/tainted)"
	echo "REPLIPIPE-SCENARIO: REBOOT"
	sleep 1
	echo b > /proc/sysrq-trigger
	sleep 10
	vm_fail "still running 10 s after sysrq b"
}
