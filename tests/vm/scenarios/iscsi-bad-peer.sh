#!/bin/sh
# Bad peers are refused with the method's return value and leave no iSCSI
# session behind (docs/iscsi.md): a wrong IQN and a closed port (4, portal
# or target not there), a LUN smaller than the source (4, verification), a
# LUN number the target does not have (4), a write-protected LUN (4), a
# malformed URL (5, nothing run). After each: `iscsiadm -m session` shows
# none, and neither the store nor the kernel has a pipe. Then a good peer
# is accepted, to show the refusals were about the peers.
# vm-timeout: 600
# vm-cost: 25
# vm-mem: 1024
# vm-bins: /usr/sbin/iscsid /usr/sbin/iscsiadm
# vm-files: /etc/iscsi/iscsid.conf

BASE=iqn.2003-01.org.linux-iscsi.replipipe-vm
SRC=replipipe_0/vol1

vm_brd 2 64
vm_modprobe sd_mod
vm_modprobe crc32c_generic
vm_modprobe iscsi_target_mod
vm_modprobe iscsi_tcp

vm_backstore iblock iblock_0 peer /dev/ram1 > /dev/null
vm_backstore rd_mcp rd_mcp_0 small 16M > /dev/null
vm_backstore rd_mcp rd_mcp_1 ro 64M > /dev/null
vm_iscsi_export $BASE:peer 0 iblock_0/peer
vm_iscsi_export $BASE:small 0 rd_mcp_0/small
vm_iscsi_export $BASE:ro 0 rd_mcp_1/ro 1

vm_iscsid_start

vm_modprobe replipipe
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
mkdir -p /run/replipipe /var/lib/replipipe
replipiped --foreground --log-level debug > /tmp/replipiped.log 2>&1 &
daemon=$!
vm_wait_path /run/replipipe/replipiped.sock 50

no_sessions() {
	local list k
	if iscsiadm -m session 2>/dev/null; then
		vm_fail "$1: a session is left behind"
	fi
	[ -z "$(ls /sys/class/iscsi_session)" ] || vm_fail "$1: sysfs shows a session"
	list=$(replipipectl list) || vm_fail "$1: replipipectl list failed"
	[ -z "$(echo "$list" | grep -v '^no pipes')" ] || { echo "$list"; vm_fail "$1: a pipe was stored"; }
	k=$(rp-nlctl get) || vm_fail "$1: rp-nlctl get failed"
	[ -z "$(echo "$k" | grep '^pipe ')" ] || vm_fail "$1: the kernel has a pipe"
}

# refused CASE URL RV WORDS: create-or-modify must exit RV and say WORDS.
refused() {
	local rc=0 out t0 t1
	t0=$(date +%s)
	out=$(replipipectl --json create-or-modify --name bad --source-system localhost \
		--target-system 127.0.0.1 --pair "$SRC=$2") || rc=$?
	t1=$(date +%s)
	vm_log "$1: exit $rc after $((t1 - t0)) s: $out"
	[ "$rc" = "$3" ] || vm_fail "$1: exit $rc, expected $3"
	echo "$out" | grep -q "\"ReturnValue\": *$3" || vm_fail "$1: no ReturnValue $3"
	echo "$out" | grep -qi "$4" || vm_fail "$1: the error does not say '$4'"
	no_sessions "$1"
}

refused "wrong IQN" "iscsi://127.0.0.1:3260/$BASE:nosuch/0" 4 "does not offer target"
refused "closed port" "iscsi://127.0.0.1:3261/$BASE:peer/0" 4 "unreachable"
refused "LUN smaller than the source" "iscsi://127.0.0.1:3260/$BASE:small/0" 4 "smaller than"
refused "no such LUN" "iscsi://127.0.0.1:3260/$BASE:peer/5" 4 "no such LUN"
refused "write-protected LUN" "iscsi://127.0.0.1:3260/$BASE:ro/0" 4 "write-protected"
refused "malformed URL" "iscsi://127.0.0.1:3260/$BASE:peer/zero" 5 "is not a number"
refused "malformed IQN" "iscsi://127.0.0.1:3260/not-an-iqn/0" 5 "not an iSCSI name"

vm_log "== a good peer is accepted"
replipipectl create-or-modify --name good --source-system localhost \
	--target-system 127.0.0.1 --pair "$SRC=iscsi://127.0.0.1:3260/$BASE:peer/0" ||
	{ cat /tmp/replipiped.log; vm_fail "the good peer was refused"; }
[ "$(ls /sys/class/iscsi_session | wc -l)" = 1 ] || vm_fail "expected one session"
vm_log "== modify to a bad peer: refused, the good session stays"
rc=0
replipipectl create-or-modify --pipe good --name good --source-system localhost \
	--target-system 127.0.0.1 --pair "$SRC=iscsi://127.0.0.1:3260/$BASE:small/0" || rc=$?
[ $rc = 4 ] || vm_fail "modify to the small LUN: exit $rc, expected 4"
[ "$(ls /sys/class/iscsi_session | wc -l)" = 1 ] || { iscsiadm -m session; vm_fail "modify left a session or dropped the good one"; }
iscsiadm -m session | grep -q "$BASE:peer" || vm_fail "the good session is gone"
vm_log "== modify to no pairs logs the session out"
replipipectl create-or-modify --pipe good --name good --source-system localhost \
	--target-system 127.0.0.1 --clear-pairs || vm_fail "clear pairs"
if iscsiadm -m session 2>/dev/null; then vm_fail "session left after the pair went"; fi
replipipectl delete good || vm_fail "delete"
kill $daemon; wait $daemon || vm_fail "replipiped did not exit cleanly"
grep -i "iscsi\|peer" /tmp/replipiped.log | head -40
vm_log "iscsi-bad-peer done"
