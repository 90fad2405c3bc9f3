#!/bin/sh
# replipiped starts while three of its pipes' iSCSI peers accept TCP
# connections and never answer (socat on 127.0.0.1:3262). Its startup
# reconcile waits for them at most 10 s in all (decision 59), not 30 s per
# peer one after the other (a systemd start time-out, and a restart loop,
# with a few dead peers): the socket must answer within vm_daemon_start's
# 20 s, the pipe needing no peer must be pushed at once, the live peer's
# pipe pushed, and once the dead peers come back their pipes are pushed too.
# A stop while the logins to the silent peers go on ends within 5 s (their
# iscsiadm commands are killed), not at their 30 s bound, past systemd's
# TimeoutStopSec; the next start carries on, and its three logins to the
# silent portal, which take turns there, all fail within one bound: the two
# behind the first fail at once once it ran out of time (decision 101).
# vm-timeout: 900
# vm-cost: 75
# vm-mem: 1024
# vm-bins: /usr/sbin/iscsid /usr/sbin/iscsiadm socat
# vm-files: /etc/iscsi/iscsid.conf

BASE=iqn.2003-01.org.linux-iscsi.replipipe-vm
DLOG=/tmp/replipiped.log

vm_brd 10 16
vm_modprobe sd_mod
vm_modprobe crc32c_generic
vm_modprobe iscsi_target_mod
vm_modprobe iscsi_tcp
vm_backstore iblock iblock_0 peer /dev/ram1 > /dev/null
vm_iscsi_export $BASE:peer 0 iblock_0/peer
for i in 0 1 2; do
	vm_backstore iblock iblock_0 dr$i /dev/ram$((7 + i)) > /dev/null
	vm_iscsi_export $BASE:dr$i 0 iblock_0/dr$i
	mkdir "$VM_CFS/iscsi/$BASE:dr$i/tpgt_1/np/127.0.0.1:3262" || vm_fail "np 3262 dr$i"
done
vm_iscsid_start

vm_modprobe replipipe
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
vm_backstore replipipe replipipe_0 vol2 /dev/ram2 > /dev/null
for i in 0 1 2; do
	vm_backstore replipipe replipipe_0 vol$((3 + i)) /dev/ram$((4 + i)) > /dev/null
done
vm_daemon_start $DLOG --log-level info
for i in 0 1 2; do
	replipipectl create-or-modify --name dr$i --source-system localhost \
		--target-system 127.0.0.1 \
		--pair "replipipe_0/vol$((3 + i))=iscsi://127.0.0.1:3262/$BASE:dr$i/0" ||
		vm_daemon_fail $DLOG "create dr$i"
done
replipipectl create-or-modify --name live --source-system localhost \
	--target-system 127.0.0.1 --pair "replipipe_0/vol1=iscsi://127.0.0.1:3260/$BASE:peer/0" ||
	vm_daemon_fail $DLOG "create live"
replipipectl create-or-modify --name local --source-system localhost \
	--target-system localhost --pair "replipipe_0/vol2=/dev/ram3" ||
	vm_daemon_fail $DLOG "create local"
replipipectl list
iscsiadm -m session

vm_log "== the reboot: daemon stopped, kernel pipes and sessions gone, the DR peers silent"
vm_daemon_stop $DLOG
k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed after the daemon stopped"
for id in $(echo "$k" | sed -n 's/^pipe id=\([^ ]*\) .*/\1/p'); do
	rp-nlctl del-pipe "$id" || vm_fail "del-pipe $id"
done
k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed after del-pipe"
[ -z "$(echo "$k" | grep '^pipe ')" ] || vm_fail "kernel pipes left"
iscsiadm -m node -u > /dev/null 2>&1
[ -z "$(ls /sys/class/iscsi_session)" ] || vm_fail "sessions left"
for i in 0 1 2; do
	rmdir "$VM_CFS/iscsi/$BASE:dr$i/tpgt_1/np/127.0.0.1:3262" || vm_fail "rmdir np dr$i"
done
setsid socat TCP-LISTEN:3262,bind=127.0.0.1,fork,reuseaddr SYSTEM:'sleep 600' > /tmp/socat.log 2>&1 &
silent=$!
sleep 1

t0=$(vm_now_ms)
vm_daemon_start $DLOG --log-level info
t1=$(vm_now_ms)
vm_log "control socket answered $((t1 - t0)) ms after the start"
grep 'reconcile:' $DLOG | tail -12
rp-nlctl get | grep '^pipe ' || true
rp-nlctl get | grep -q 'name=local' || vm_daemon_fail $DLOG "the local pipe was not pushed at start"
[ "$(grep -c 'its peers were not connected within 10 s' $DLOG)" -ge 3 ] ||
	vm_daemon_fail $DLOG "the dead peers' pipes are not reported as waiting"

vm_log "== a stop while the logins to the silent peers run: prompt"
t0=$(vm_now_ms)
vm_daemon_stop $DLOG
t1=$(vm_now_ms)
vm_log "RESULT stopped $((t1 - t0)) ms after SIGTERM, three logins to silent peers in progress"
[ $((t1 - t0)) -lt 5000 ] ||
	vm_daemon_fail $DLOG "the stop waited $((t1 - t0)) ms for the logins to silent peers"
grep 'replipiped is stopping' $DLOG | head -n 3
t0=$(vm_now_ms)
n0=$(wc -l < $DLOG)
vm_daemon_start $DLOG --log-level info
rp-nlctl get | grep -q 'name=local' || vm_daemon_fail $DLOG "the local pipe is not in the kernel after the restart"
# since_restart: the daemon's log since this start
since_restart() { tail -n +$((n0 + 1)) $DLOG; }

vm_log "== the logins to the silent portal run out of time: one bound for the three"
# Their iscsiadm sequences take turns at the portal (a discovery rewrites
# its node records); once the first ran out of its 30 s, the two that
# waited for their turn fail at once instead of taking 30 s each.
i=0
until [ "$(since_restart | grep -c 'reconcile: .*("dr[012]"): peer iscsi://127.0.0.1:3262/')" -ge 3 ]; do
	[ $i -lt 1200 ] || vm_daemon_fail $DLOG "the logins to the silent portal had not all failed 120 s after the start"
	sleep 0.1
	i=$((i + 1))
done
t1=$(vm_now_ms)
since_restart | grep 'reconcile: .*("dr[012]"): peer iscsi://127.0.0.1:3262/'
vm_log "RESULT the three logins to the silent portal failed $((t1 - t0)) ms after the start"
[ "$(since_restart | grep -c 'ran out of time while this call waited for its turn')" -ge 2 ] ||
	vm_daemon_fail $DLOG "the calls behind the first time-out at the silent portal did not fail at once"
[ $((t1 - t0)) -lt 50000 ] ||
	vm_daemon_fail $DLOG "the logins to the silent portal took $((t1 - t0)) ms: one bound each"

vm_log "== the DR peers come back"
kill -- -$silent
for i in 0 1 2; do
	n=0
	until mkdir "$VM_CFS/iscsi/$BASE:dr$i/tpgt_1/np/127.0.0.1:3262" 2> /dev/null; do
		[ $n -lt 100 ] || vm_fail "np 3262 dr$i again"
		sleep 0.1
		n=$((n + 1))
	done
done
t0=$(vm_now_ms)
i=0
until [ "$(rp-nlctl get | grep -c '^pipe ')" = 5 ]; do
	[ $i -lt 3000 ] || { rp-nlctl get; vm_daemon_fail $DLOG "not every pipe pushed 300 s after the peers came back"; }
	sleep 0.1
	i=$((i + 1))
done
vm_log "every pipe in the kernel $(($(vm_now_ms) - t0)) ms after the peers came back"
grep 'reconcile:\|pushed to the kernel from the store\|is not in the kernel' $DLOG | tail -20
for p in dr0 dr1 dr2 live local; do
	replipipectl wait $p --state InSync --timeout 120 || vm_daemon_fail $DLOG "$p not InSync"
done
rp-verify --cmp /dev/ram4 /dev/ram7 || vm_fail "dr0 legs differ"
for p in dr0 dr1 dr2 live local; do
	replipipectl delete $p || vm_daemon_fail $DLOG "delete $p"
done
vm_daemon_stop $DLOG
vm_log "iscsi-dead-peers-at-start done"
