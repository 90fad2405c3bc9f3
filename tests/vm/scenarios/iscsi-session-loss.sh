#!/bin/sh
# An iSCSI peer lost mid-run (docs/iscsi.md, "Lifecycle"): the pipe mirrors
# replipipe_0/vol1 (/dev/ram0) to iscsi://127.0.0.1:3260/<iqn>/0 (the peer's
# /dev/ram1); while 4 writers run, the peer's portal is disabled
# (tpgt_1/enable = 0): after the replacement timeout the pair is Degraded
# and the writes keep completing. The portal is enabled again: open-iscsi
# logs in again, the daemon's probe resumes the pair, the dirty regions are
# resynced, the pair is InSync and both ramdisks are identical.
# vm-timeout: 900
# vm-cost: 50
# vm-serial: yes
# vm-mem: 1024
# vm-bins: /usr/sbin/iscsid /usr/sbin/iscsiadm
# vm-files: /etc/iscsi/iscsid.conf

IQN=iqn.2003-01.org.linux-iscsi.replipipe-vm:peer
URL=iscsi://127.0.0.1:3260/$IQN/0
SRC=replipipe_0/vol1

vm_brd 2 64
vm_modprobe sd_mod
vm_modprobe crc32c_generic
vm_modprobe iscsi_target_mod
vm_modprobe iscsi_tcp
vm_backstore iblock iblock_0 peer /dev/ram1 > /dev/null
T=$VM_CFS/iscsi/$IQN/tpgt_1
vm_iscsi_export $IQN 0 iblock_0/peer

vm_iscsid_start

vm_modprobe replipipe
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
mkdir -p /run/replipipe /var/lib/replipipe
replipiped --foreground --log-level debug --probe-interval 3 > /tmp/replipiped.log 2>&1 &
daemon=$!
vm_wait_path /run/replipipe/replipiped.sock 50

replipipectl create-or-modify --name iscsi --source-system localhost \
	--target-system 127.0.0.1 --pair "$SRC=$URL" ||
	{ cat /tmp/replipiped.log; vm_fail "create-or-modify refused"; }
replipipectl wait iscsi --state InSync --timeout 240 || vm_fail "initial resync"
replipipectl status iscsi

vm_log "== writers start; the peer's portal goes away"
# By time, not by size: on a fast host 48 MiB is written before the portal
# goes away, and the pair would never see the peer gone.
rp-writer --dev "$lun" --log /tmp/w --threads 4 --seconds 25 \
	--min-size 4K --max-size 256K --seed 5 > /tmp/writer.out 2>&1 &
writer=$!
sleep 2
echo 0 > "$T/enable" || vm_fail "disable the portal"
t0=$(date +%s)
replipipectl wait iscsi --state Degraded --timeout 120 ||
	{ replipipectl status iscsi; vm_fail "the pair did not degrade"; }
vm_log "Degraded after $(($(date +%s) - t0)) s"
replipipectl status iscsi
wait $writer || { cat /tmp/writer.out; vm_fail "writes failed while the peer was gone"; }
cat /tmp/writer.out
vm_log "writes completed with the peer gone"
replipipectl --json status iscsi | grep '"session"'

vm_log "== the portal comes back"
echo 1 > "$T/enable" || vm_fail "enable the portal"
t0=$(date +%s)
replipipectl wait iscsi --state InSync --timeout 300 ||
	{ replipipectl status iscsi; iscsiadm -m session; tail -50 /tmp/replipiped.log; vm_fail "not InSync after the peer returned"; }
vm_log "InSync $(($(date +%s) - t0)) s after the portal returned"
replipipectl status iscsi
replipipectl --json status iscsi | grep -q '"session": *"LOGGED_IN"' || vm_fail "session not LOGGED_IN"

rp-verify --dev "$lun" /tmp/w.* || vm_fail "data through the LUN"
rp-verify --dev /dev/ram1 /tmp/w.* || vm_fail "data on the peer /dev/ram1"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "source and peer ramdisks differ"
vm_log "source and peer ramdisks byte-identical"

replipipectl delete iscsi || vm_fail "delete"
if iscsiadm -m session 2>/dev/null; then vm_fail "a session is left after delete"; fi
kill $daemon; wait $daemon || vm_fail "replipiped did not exit cleanly"
vm_tcm_loop_unexport $SRC
vm_log "iscsi-session-loss done"
