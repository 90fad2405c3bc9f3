#!/bin/sh
# replipiped.service under systemd itself (the guest's PID 1 is systemd): the
# unit as the package installs it, its sandbox in force (ProtectSystem=strict,
# the capability bounding set, NoNewPrivileges, the seccomp filter, the
# private /tmp), and the daemon still doing its whole job inside it:
# ExecStartPre= loads the modules (replipipe, iscsi_tcp), Type=notify
# start returns once it answers, a pipe's initial resync (io_uring under @system-service) reaches InSync,
# writes through a tcm_loop LUN reach both legs, an iscsi:// target is
# discovered, logged in and mirrored (iscsiadm, run by replipiped, locks
# under /run/lock), a member of group replipipe
# uses the socket, a reload is a SIGHUP to the same process, a SIGKILL is
# restarted (Restart=on-failure) with the pipe back from the StateDirectory,
# and a stop is clean. The package's postrm
# purge keeps the store while the kernel still mirrors a pipe it defines,
# and removes it once none is left. Without a module to load, the restarts
# end with the unit failed (its start limit).
# Only the unit's output goes elsewhere (a drop-in: there is no journald in
# the guest); nothing of its sandbox is changed.
# vm-init: systemd
# vm-timeout: 480
# vm-cost: 25
# vm-bins: /lib/systemd/systemd systemctl /usr/sbin/iscsid /usr/sbin/iscsiadm
# vm-files: /etc/iscsi/iscsid.conf controller/replipiped.service packaging/default/replipiped packaging/debian/replipipe/postrm.in /usr/lib/os-release /lib/systemd/system/sysinit.target /lib/systemd/system/basic.target /lib/systemd/system/multi-user.target /lib/systemd/system/sockets.target /lib/systemd/system/timers.target /lib/systemd/system/paths.target /lib/systemd/system/slices.target /lib/systemd/system/local-fs.target /lib/systemd/system/swap.target /lib/systemd/system/shutdown.target

REPO=/lib/replipipe/repo
UNIT=/lib/systemd/system/replipiped.service
SOCK=/run/replipipe/replipiped.sock
DLOG=/run/replipiped-test.log
SRC=replipipe_0/v1
SRC2=replipipe_0/v2
IQN=iqn.2003-01.org.linux-iscsi.replipipe-vm:peer
URL=iscsi://127.0.0.1:3260/$IQN/0

unit_fail() {
	echo "---- systemctl status replipiped" >&2
	systemctl --no-pager status replipiped >&2
	vm_daemon_fail $DLOG "$@"
}
# wait_restarted OLD_PID WHEN: until the unit is active again under another
# main process (30 s at most; WHEN completes the failure message)
wait_restarted() {
	local i=0
	until [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$1" ] &&
		[ "$(prop MainPID)" != 0 ]; do
		[ $i -lt 300 ] || unit_fail "not restarted within 30 s$2 (state $(prop ActiveState))"
		sleep 0.1
		i=$((i + 1))
	done
}

# prop NAME: a property of replipiped.service as systemd has it.
prop() { systemctl show -P "$1" replipiped.service; }

# status_field PID KEY: a field of /proc/PID/status.
status_field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"; }

vm_log "== systemd is PID 1"
[ "$(cat /proc/1/comm)" = systemd ] || vm_fail "PID 1 is $(cat /proc/1/comm)"
systemctl is-system-running > /dev/null 2>&1 || :
vm_log "systemd $(systemctl --version | head -n 1 | cut -d' ' -f2), state $(systemctl is-system-running 2> /dev/null)"

vm_log "== the package's files at their installed paths"
mkdir -p /usr/sbin /etc/default /etc/systemd/system/replipiped.service.d
cp $REPO/controller/replipiped.service $UNIT
cp $REPO/packaging/default/replipiped /etc/default/replipiped
ln -sf /usr/local/bin/replipiped /usr/sbin/replipiped
printf '[Service]\nStandardOutput=append:%s\nStandardError=inherit\n' $DLOG \
	> /etc/systemd/system/replipiped.service.d/test-output.conf
systemctl daemon-reload
[ "$(prop LoadState)" = loaded ] || vm_fail "replipiped.service: LoadState $(prop LoadState)"
[ "$(prop FragmentPath)" = $UNIT ] || vm_fail "the unit comes from $(prop FragmentPath)"
[ ! -d /sys/module/replipipe ] || vm_fail "replipipe is loaded before the unit starts"

vm_log "== systemctl start replipiped"
# as on every Debian host (initramfs-tools' init, tmpfiles.d/legacy.conf)
mkdir -p /run/lock
systemctl start replipiped || unit_fail "systemctl start replipiped"
[ "$(prop ActiveState)" = active ] || unit_fail "ActiveState $(prop ActiveState) after start"
# Type=notify: start returned after READY=1, so the socket answers now.
[ -S $SOCK ] || unit_fail "no socket $SOCK after start returned"
replipipectl list > /dev/null || unit_fail "replipipectl list right after start"
[ -d /sys/module/replipipe ] || unit_fail "ExecStartPre= did not load replipipe"
pid=$(prop MainPID)
[ "$pid" -gt 1 ] || unit_fail "MainPID '$pid'"
[ "$(readlink /proc/$pid/exe)" = /usr/local/bin/replipiped ] ||
	unit_fail "MainPID $pid is $(readlink /proc/$pid/exe)"
vm_log "replipiped pid $pid"

vm_log "== the sandbox is in force"
[ "$(status_field $pid NoNewPrivs)" = 1 ] || vm_fail "NoNewPrivs $(status_field $pid NoNewPrivs)"
[ "$(status_field $pid Seccomp)" = 2 ] || vm_fail "Seccomp mode $(status_field $pid Seccomp), not 2 (filter)"
# CAP_CHOWN 0, CAP_NET_ADMIN 12, CAP_SYS_RAWIO 17, CAP_SYS_ADMIN 21.
capbnd=$(status_field $pid CapBnd)
[ "$capbnd" = 0000000000221001 ] || vm_fail "CapBnd $capbnd, not 0000000000221001"
[ "$(status_field $pid CapEff)" = 0000000000221001 ] ||
	vm_fail "CapEff $(status_field $pid CapEff)"
# ProtectSystem=strict: / is read-only for it, the directories it owns and
# /sys/kernel/config are writable; PrivateTmp: its /tmp is not ours.
nsenter -t $pid -m sh -c 'touch /usr/rp-probe' 2> /dev/null &&
	vm_fail "replipiped can write /usr"
nsenter -t $pid -m sh -c 'touch /var/lib/replipipe/.rp-probe && rm /var/lib/replipipe/.rp-probe' ||
	vm_fail "replipiped cannot write its StateDirectory"
nsenter -t $pid -m sh -c 'touch /etc/rp-probe' 2> /dev/null &&
	vm_fail "replipiped can write /etc"
touch /tmp/rp-host-tmp
nsenter -t $pid -m sh -c '[ ! -e /tmp/rp-host-tmp ]' || vm_fail "replipiped sees the host's /tmp"
# Room for 64 resumes of 16 probes each (replipiped.service).
grep -q "^Max open files *4096 *4096 " /proc/$pid/limits ||
	vm_fail "open files limit: $(grep '^Max open files' /proc/$pid/limits)"
[ "$(stat -c %a /var/lib/replipipe)" = 700 ] || vm_fail "StateDirectory mode $(stat -c %a /var/lib/replipipe)"
[ "$(stat -c %a:%G $SOCK)" = 660:replipipe ] || vm_fail "socket mode/group $(stat -c %a:%G $SOCK)"

vm_log "== a pipe: initial resync with io_uring inside the seccomp filter"
vm_brd 4 64
dd if=/dev/urandom of=/dev/ram0 bs=1M count=64 2> /dev/null
dd if=/dev/urandom of=/dev/ram2 bs=1M count=16 2> /dev/null
vm_backstore replipipe replipipe_0 v1 /dev/ram0 > /dev/null
dev=$(vm_tcm_loop_export $SRC)
ref=$(replipipectl create-or-modify --name unit --source-system localhost \
	--target-system backup1 --pair $SRC=/dev/ram1) || unit_fail "create"
id=$(echo "$ref" | sed -n 's/^CIM_NetworkPipe\.InstanceID="\(replipipe:[0-9a-f-]*\)"$/\1/p')
[ -n "$id" ] || vm_fail "create printed '$ref'"
replipipectl wait "$id" --state InSync --timeout 240 ||
	{ replipipectl --json status >&2; unit_fail "wait InSync"; }
dd if=/dev/urandom of=$dev bs=1M count=16 seek=8 oflag=direct 2> /dev/null ||
	vm_fail "write through $dev"
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "legs differ after the initial resync and 16 MiB of writes"
# The resync's buffers are registered with io_uring (their pages pinned
# once, not per I/O): the unit's memlock limit holds four jobs' 32 MiB.
! grep "io_uring_register_buffers" $DLOG ||
	vm_fail "the resync could not register its buffers under the unit"
vm_as rpadmin "replipipectl status $id" > /dev/null ||
	vm_fail "a member of group replipipe cannot use the socket"
vm_as rpuser "replipipectl status $id" > /dev/null 2>&1 &&
	vm_fail "a user outside group replipipe can use the socket"

vm_log "== an iscsi:// target: iscsiadm runs inside the sandbox"
# The peer is this guest's own LIO iSCSI target; iscsid runs outside the
# unit, as iscsid.service would. /run/lock/iscsi (iscsiadm's lock of its
# node database) is not made beforehand, as after a boot.
vm_modprobe iscsi_target_mod
# iscsi_tcp is the unit's to load (ExecStartPre=): iscsiadm cannot, inside
# the sandbox, and nothing else does at boot.
[ -d /sys/module/iscsi_tcp ] || unit_fail "the unit did not load iscsi_tcp"
vm_backstore iblock iblock_0 peer /dev/ram3 > /dev/null
vm_iscsi_export $IQN 0 iblock_0/peer
vm_iscsid_start
rm -rf /run/lock/iscsi
vm_backstore replipipe replipipe_0 v2 /dev/ram2 > /dev/null
ref=$(replipipectl create-or-modify --name peer --source-system localhost \
	--target-system 127.0.0.1 --pair "$SRC2=$URL") || unit_fail "create with $URL"
iid=$(echo "$ref" | sed -n 's/^CIM_NetworkPipe\.InstanceID="\(replipipe:[0-9a-f-]*\)"$/\1/p')
replipipectl wait "$iid" --state InSync --timeout 240 ||
	{ replipipectl --json status >&2; unit_fail "wait InSync over iSCSI"; }
[ -f /run/lock/iscsi/lock ] || vm_fail "iscsiadm did not lock in /run/lock/iscsi"
vm_cmp_devs /dev/ram2 /dev/ram3 || vm_fail "the iSCSI peer's disk differs from its source"
replipipectl delete "$iid" > /dev/null || unit_fail "delete the iscsi:// pipe"
if iscsiadm -m session > /dev/null 2>&1; then vm_fail "a session is left after delete"; fi
vm_backstore_delete $SRC2

vm_log "== SIGKILL: Restart=on-failure brings it back with the pipe"
systemctl kill -s KILL replipiped
wait_restarted "$pid" ""
[ "$(prop NRestarts)" = 1 ] || unit_fail "NRestarts $(prop NRestarts)"
vm_log "restarted: pid $(prop MainPID)"
replipipectl wait "$id" --state InSync --timeout 120 ||
	{ replipipectl --json status >&2; unit_fail "the pipe after the restart"; }
dd if=/dev/urandom of=$dev bs=1M count=8 seek=40 oflag=direct 2> /dev/null ||
	vm_fail "write through $dev after the restart"
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "legs differ after the restart"

vm_log "== systemctl reload: SIGHUP, the same process re-reads the kernel's state"
pid=$(prop MainPID)
hups=$(grep -c "SIGHUP: re-reading the kernel's state" $DLOG || :)
systemctl reload replipiped || unit_fail "systemctl reload"
i=0
until [ "$(grep -c "SIGHUP: re-reading the kernel's state" $DLOG)" -gt "$hups" ]; do
	[ $i -lt 100 ] || unit_fail "no SIGHUP line within 10 s of the reload"
	sleep 0.1
	i=$((i + 1))
done
[ "$(prop MainPID)" = "$pid" ] || unit_fail "the reload replaced pid $pid by $(prop MainPID)"
[ "$(prop ActiveState)" = active ] || unit_fail "ActiveState $(prop ActiveState) after reload"
replipipectl wait "$id" --state InSync --timeout 60 ||
	{ replipipectl --json status >&2; unit_fail "the pipe after the reload"; }

vm_log "== the module unloaded under the daemon: the unit starts it again, which pushes the pipe"
# Once the pipe is gone from the kernel and its backstore from LIO (a DKMS
# upgrade's reload): replipiped exits 69 at once (decision 60),
# Restart=on-failure starts it again and ExecStartPre= loads the module.
rp-nlctl del-pipe "${id#replipipe:}" || vm_fail "del-pipe $id"
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
pid=$(prop MainPID)
rmmod replipipe || unit_fail "rmmod with no pipe and no backstore"
wait_restarted "$pid" " of the unload"
[ "$(prop NRestarts)" = 2 ] || unit_fail "NRestarts $(prop NRestarts) after the unload"
grep -q "the replipipe kernel module was unloaded (.*); stopping with exit status 69" $DLOG ||
	unit_fail "no line saying the module was unloaded"
[ -d /sys/module/replipipe ] || unit_fail "the restart did not load the module again"
vm_log "restarted after the unload: pid $(prop MainPID), module loaded again"
vm_backstore replipipe replipipe_0 v1 /dev/ram0 > /dev/null
dev=$(vm_tcm_loop_export $SRC)
replipipectl wait "$id" --state InSync --timeout 120 ||
	{ replipipectl --json status >&2; unit_fail "the pipe after the module came back"; }
dd if=/dev/urandom of=$dev bs=1M count=8 seek=24 oflag=direct 2> /dev/null ||
	vm_fail "write through $dev after the module came back"
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "legs differ after the module came back"

vm_log "== systemctl stop is clean"
systemctl stop replipiped || unit_fail "systemctl stop"
[ "$(prop ActiveState)" = inactive ] || unit_fail "ActiveState $(prop ActiveState) after stop"
[ "$(prop Result)" = success ] || unit_fail "Result $(prop Result) after stop"
[ ! -e $SOCK ] || vm_fail "the socket is left after stop"
systemctl start replipiped || unit_fail "start again"
replipipectl wait "$id" --state InSync --timeout 120 ||
	{ replipipectl --json status >&2; unit_fail "the pipe after stop and start"; }

vm_log "== purge: the store stays while the kernel mirrors its pipe"
# What dpkg runs: prerm stops the daemon, then postrm purge. The pipe goes
# on in the kernel; its definition must not go with the package.
POSTRM=$REPO/packaging/debian/replipipe/postrm.in
systemctl stop replipiped || unit_fail "stop before purge"
sh $POSTRM purge 2> /tmp/postrm.err || vm_fail "postrm purge failed: $(cat /tmp/postrm.err)"
[ -d /var/lib/replipipe ] || vm_fail "postrm purge removed the store of a pipe the kernel mirrors"
grep -q "keeps /var/lib/replipipe.* $SRC" /tmp/postrm.err ||
	vm_fail "postrm purge did not say it kept the store for $SRC: $(cat /tmp/postrm.err)"
vm_log "postrm purge: $(cat /tmp/postrm.err)"
systemctl start replipiped || unit_fail "start after the purge that kept the store"
replipipectl wait "$id" --state InSync --timeout 120 ||
	{ replipipectl --json status >&2; unit_fail "the pipe from the kept store"; }
replipipectl delete "$id" > /dev/null || unit_fail "delete"
systemctl stop replipiped || unit_fail "the last stop"
[ "$(prop Result)" = success ] || unit_fail "Result $(prop Result) after the last stop"
sh $POSTRM purge 2> /tmp/postrm.err || vm_fail "postrm purge failed: $(cat /tmp/postrm.err)"
[ ! -e /var/lib/replipipe ] || vm_fail "postrm purge kept the store with no pipe in the kernel"
[ ! -s /tmp/postrm.err ] || vm_fail "postrm purge with no pipe said: $(cat /tmp/postrm.err)"

vm_log "== no module to load: the restarts end with the unit failed"
# As between `dkms remove` and `dkms install`, or a kernel without the
# module: each start exits 69, and the start limit (5 in 30 s) must leave
# the unit failed, not restarting every 2 s for ever; replipipe-dkms's
# postinst starts such a unit again once the module is there.
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
rmmod replipipe || vm_fail "rmmod with no pipe and no backstore"
KO=/lib/modules/$(uname -r)/extra/replipipe.ko
mv $KO /tmp/replipipe.ko.away || vm_fail "move $KO away"
systemctl reset-failed replipiped 2> /dev/null || :
if systemctl start replipiped 2> /dev/null; then unit_fail "started without a module"; fi
# 5 starts about 3 s apart under TCG (RestartSec=2s); each `systemctl show`
# takes a while then, so the bound is a time, not a count of polls.
until_ms=$(($(vm_now_ms) + 60000))
until [ "$(prop ActiveState)" = failed ]; do
	[ "$(vm_now_ms)" -lt $until_ms ] ||
		unit_fail "still $(prop ActiveState) after 60 s without a module (NRestarts $(prop NRestarts))"
	sleep 0.2
done
# systemd 252 keeps the last start's result (exit-code) when the limit
# refuses the next one; later versions say start-limit-hit.
case $(prop Result) in
exit-code | start-limit-hit) ;;
*) unit_fail "failed with Result $(prop Result)" ;;
esac
[ "$(prop ExecMainStatus)" = 69 ] || unit_fail "the last start exited $(prop ExecMainStatus), not 69"
vm_log "failed after $(prop NRestarts) restarts: Result $(prop Result), last exit $(prop ExecMainStatus)"
mv /tmp/replipipe.ko.away $KO
systemctl reset-failed replipiped || unit_fail "reset-failed"
systemctl start replipiped || unit_fail "start once the module is back"
[ -d /sys/module/replipipe ] || unit_fail "the start did not load the module"
systemctl stop replipiped || unit_fail "stop after the module came back"
vm_log "pkg-systemd: all steps passed"
