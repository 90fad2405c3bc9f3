#!/bin/sh
# The pre-check refuses a target that is the source backstore itself
# exported back through this host's LIO (docs/decisions.md, 33): every
# mirrored write would come back into the source. A replipipe backstore on
# /dev/ram0 is exported through tcm_loop (/dev/sdX) and through LIO's iSCSI
# target on 127.0.0.1:3260 (LUN 0; LUN 1 is an iblock backstore on
# /dev/ram2). `replipipectl create-or-modify` is refused with ReturnValue 5
# (exit 5, "source = target", naming the LUN and the backstore) for the
# tcm_loop disk, for a dm-linear device on it, and for the iSCSI URL of LUN
# 0 (replipiped logs in, finds the disk is the source's own LUN and logs
# out again); each refusal leaves no pipe in the kernel, the store or
# `status --json`, and no iSCSI session. Then the same source with a
# legitimate target is paired: /dev/ram1, then the iSCSI URL of LUN 1 (the
# same target name, another backstore); both reach InSync with identical
# legs.
# vm-timeout: 300
# vm-cost: 25
# vm-mem: 1024
# vm-bins: jq dmsetup /usr/sbin/iscsid /usr/sbin/iscsiadm
# vm-files: /etc/iscsi/iscsid.conf

STORE=/var/lib/replipipe/pipes.json
DLOG=/tmp/replipiped.log
SRC=replipipe_0/v1
IQN=iqn.2003-01.org.linux-iscsi.replipipe-vm:loop
URL0=iscsi://127.0.0.1:3260/$IQN/0
URL1=iscsi://127.0.0.1:3260/$IQN/1

VM_DAEMON_LOG=$DLOG	# vm_expect_rc shows its end on a failure

# nothing_applied WHAT: no pipe in the kernel, the store, status --json;
# no iSCSI session.
nothing_applied() {
	local k
	k=$(rp-nlctl get) || vm_fail "rp-nlctl get"
	[ -z "$k" ] || { echo "$k"; vm_fail "$1: the kernel has a pipe"; }
	if [ -e $STORE ]; then
		jq -e '.pipes == []' $STORE > /dev/null ||
			{ cat $STORE; vm_fail "$1: the store has a pipe"; }
	fi
	replipipectl --json status | jq -e '.pipes == []' > /dev/null ||
		vm_fail "$1: status --json shows a pipe"
	[ -z "$(ls /sys/class/iscsi_session 2>/dev/null)" ] ||
		{ iscsiadm -m session; vm_fail "$1: an iSCSI session is left"; }
	vm_log "nothing applied after $1"
}

# refused TARGET WHAT PATTERN...: create-or-modify --json with the pair
# SRC=TARGET exits 5 with ReturnValue 5, an error that contains every
# PATTERN, and changes nothing.
refused() {
	local target=$1 what=$2 p
	shift 2
	vm_expect_rc 5 replipipectl --json create-or-modify --name loop \
		--source-system localhost --target-system 127.0.0.1 \
		--pair "$SRC=$target"
	echo "$OUT" | jq -e '.ReturnValue == 5' > /dev/null ||
		vm_fail "$what: not ReturnValue 5: $OUT"
	for p in "(source = target)" "$@"; do
		echo "$OUT" | jq -r .Error | grep -qF "$p" ||
			vm_fail "$what: the error does not say '$p': $OUT"
	done
	nothing_applied "$what"
}

# paired TARGET WHAT: create-or-modify with SRC=TARGET succeeds, the pair
# reaches InSync, the legs are identical, delete removes it.
paired() {
	local target=$1 what=$2 dev
	vm_expect_rc 0 replipipectl create-or-modify --name ok \
		--source-system localhost --target-system 127.0.0.1 \
		--pair "$SRC=$target"
	replipipectl wait ok --state InSync --timeout 240 ||
		{ replipipectl --json status >&2; vm_daemon_fail $DLOG "$what: not InSync"; }
	dev=$(rp-nlctl get | sed -n 's/^pair .* target=\([^ ]*\) .*/\1/p')
	[ -b "$dev" ] || { rp-nlctl get; vm_fail "$what: no kernel pair target"; }
	rp-verify --cmp /dev/ram0 "$dev" || vm_fail "$what: the legs differ"
	vm_log "$what: InSync, /dev/ram0 and $dev identical"
	vm_expect_rc 0 replipipectl delete ok
	nothing_applied "$what, deleted"
}

vm_brd 3 16
dd if=/dev/urandom of=/dev/ram0 bs=1M count=16 2>/dev/null
vm_modprobe replipipe
vm_backstore replipipe replipipe_0 v1 /dev/ram0 > /dev/null
vm_backstore iblock iblock_0 other /dev/ram2 > /dev/null

# --- the source's LUN through tcm_loop -----------------------------------
lun=$(vm_tcm_loop_export $SRC)
wwn=$(cat "$VM_STATE/tcm-loop-$(echo $SRC | tr / _)")
vm_log "tcm_loop: $SRC is $lun ($wwn)"

# --- the source's LUN 0 and iblock_0/other's LUN 1 through iSCSI ---------
vm_modprobe crc32c_generic
vm_modprobe iscsi_target_mod
vm_modprobe iscsi_tcp
vm_iscsi_export $IQN 0 $SRC
vm_iscsi_export $IQN 1 iblock_0/other
vm_iscsid_start
vm_log "iSCSI: $IQN on 127.0.0.1:3260, LUN 0 = $SRC, LUN 1 = iblock_0/other"

vm_daemon_start $DLOG --log-level debug
nothing_applied "start"

vm_log "== the source's own tcm_loop LUN"
refused "$lun" "tcm_loop LUN" "target $lun is tcm_loop $wwn/tpgt_1 LUN 0 of this host" \
	"which exports $SRC itself"

vm_log "== a dm-linear device on that LUN"
dm=$(vm_dm_create looped "0 $(blockdev --getsz "$lun") linear $lun 0")
refused "$dm" "dm-linear on the LUN" "target $dm (on ${lun#/dev/}) is tcm_loop" \
	"which exports $SRC itself"
DM_DISABLE_UDEV=1 dmsetup --noudevsync remove looped || vm_fail "dmsetup remove looped"

vm_log "== the source's own LUN over iSCSI to 127.0.0.1"
refused "$URL0" "iSCSI LUN 0" "is iSCSI $IQN/tpgt_1 LUN 0 (portal 127.0.0.1:3260) of this host" \
	"which exports $SRC itself" "($URL0 is /dev/sd"
grep -q "iSCSI .*logged in" $DLOG && grep -q "iSCSI .*logged out" $DLOG ||
	vm_daemon_fail $DLOG "replipiped did not log in and out to check $URL0"

vm_log "== legitimate targets: /dev/ram1, then LUN 1 of the same iSCSI target"
paired /dev/ram1 "/dev/ram1"
paired "$URL1" "iSCSI LUN 1"

vm_daemon_stop $DLOG
vm_iscsid_stop $VM_ISCSID
vm_tcm_loop_unexport $SRC
vm_log "cli-loop-target done"
