#!/bin/sh
# replipipe backstores as first-class citizens of targetcli-fb / rtslib-fb
# (Debian's packages, with replipipe's registration from tools/rtslib installed
# the way the package installs it), and a reboot simulated as boot does it:
#   targetcli creates replipipe backstores (the rtslib class loads
#   replipipe.ko), exports one through
#   tcm_loop and iSCSI; replipiped + replipipectl put them in pipes; writes
#   through the LUN reach both legs; `targetcli ls` lists /backstores/replipipe;
#   deleting a backstore that is in a pipe is refused; a backstore made by
#   hand beside vol1 in replipipe_0 is saved and restored there; a second
#   vol1 (in replipipe_7), a primary in use and a bad intent_chunk_kib are
#   refused with a message that names them; an ALUA group on vol1;
#   `targetctl save`; `targetctl restore` while the pipes exist (what
#   restarting rtslib-fb-targetctl does, as python3-rtslib-fb's upgrade
#   does) brings every LUN and vol1's ALUA group back and keeps the piped
#   backstores; a restore whose saved vol1 differs from the kept one (WWN,
#   HBA) leaves it as it is and exports no LUN on it; then daemon stopped,
#   kernel state dropped (what a reboot does), `targetctl clear`,
#   rmmod; `targetctl restore` + replipiped bring back the backstores under the
#   same replipipe_<N>/<name>, both LUNs and the pipes; writes through the
#   restored tcm_loop and iSCSI LUNs reach the target again, legs identical.
# (LIO never loads a backend module by its name: the rtslib class modprobes
# replipipe before it creates replipipe_<N>.)
# vm-timeout: 900
# vm-cost: 75
# vm-mem: 1536
# vm-bins: /usr/bin/python3 ldconfig dbus-daemon iscsid iscsiadm
# vm-files: /usr/bin/targetcli /usr/bin/targetctl /usr/lib/python3.11 /usr/lib/python3/dist-packages/rtslib_fb /usr/lib/python3/dist-packages/targetcli /usr/lib/python3/dist-packages/configshell_fb /usr/lib/python3/dist-packages/six.py /usr/lib/python3/dist-packages/pyudev /usr/lib/python3/dist-packages/pyparsing /usr/lib/python3/dist-packages/gi /usr/lib/x86_64-linux-gnu/girepository-1.0 /usr/lib/x86_64-linux-gnu/libreadline.so.8* /usr/lib/x86_64-linux-gnu/libtinfo.so.6* /usr/lib/x86_64-linux-gnu/libffi.so.8* /usr/lib/x86_64-linux-gnu/libgirepository-1.0.so.1* /usr/lib/x86_64-linux-gnu/libgobject-2.0.so.0* /usr/lib/x86_64-linux-gnu/libglib-2.0.so.0* /usr/lib/x86_64-linux-gnu/libgmodule-2.0.so.0* /usr/lib/x86_64-linux-gnu/libgio-2.0.so.0* /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0* /usr/lib/x86_64-linux-gnu/libmount.so.1* /usr/lib/x86_64-linux-gnu/libblkid.so.1* /usr/lib/x86_64-linux-gnu/libudev.so.1* tools/rtslib /etc/iscsi/iscsid.conf /etc/iscsi/initiatorname.iscsi

DIST=/usr/lib/python3/dist-packages
CFS=/sys/kernel/config/target
IQN=iqn.2003-01.org.replipipe:vol1
LOOP_WWN=naa.5001405000000ab1
SAVE=/etc/rtslib-fb-target/saveconfig.json
export REPLIPIPE_SOCKET=/run/replipipe/replipiped.sock

# ---- the Python environment, as on a Debian host ------------------------------
printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' > /etc/ld.so.conf
ldconfig
echo 5ce1e1ab0f0d4c4e8a0a2b3c4d5e6f70 > /etc/machine-id
mkdir -p /run/dbus /etc/rtslib-fb-target /run/replipipe /var/lib/replipipe /run/lock/iscsi
cat > /tmp/dbus-system.conf <<'CONF'
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/> <allow own="*"/>
    <allow send_destination="*"/> <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file=/tmp/dbus-system.conf --fork --nopidfile || vm_fail "dbus-daemon"
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
cp -r /lib/replipipe/repo/tools/rtslib/replipipe_lio $DIST/
cp /lib/replipipe/repo/tools/rtslib/replipipe_lio.pth $DIST/

# tc CMD...: run targetcli, show its output, fail the scenario if it fails.
tc() {
	targetcli "$@" > /tmp/tc.out 2>&1 || { cat /tmp/tc.out; vm_fail "targetcli $*"; }
	cat /tmp/tc.out
}
# tc_refused WHAT PATTERN CMD...: targetcli CMD fails with a message that
# matches PATTERN, and not with a bare errno or a traceback.
tc_refused() {
	what=$1 pattern=$2
	shift 2
	if targetcli "$@" > /tmp/tc.out 2>&1; then
		cat /tmp/tc.out
		vm_fail "targetcli $*: $what accepted"
	fi
	cat /tmp/tc.out
	grep -q "$pattern" /tmp/tc.out || vm_fail "targetcli $*: not the refusal of $what"
	! grep -q "Errno\|Traceback" /tmp/tc.out || vm_fail "targetcli $*: a bare OSError"
}
# json_check FILE PYTHON-EXPR: assert EXPR over the saved config `c`.
json_check() {
	python3 -c "import json, sys; c = json.load(open('$1')); sys.exit(0 if ($2) else 1)" ||
		vm_fail "$1: not true: $2"
}
start_daemon() {
	replipiped --foreground --log-level info &
	daemon=$!
	for _ in $(seq 100); do [ -S $REPLIPIPE_SOCKET ] && return 0; sleep 0.1; done
	vm_fail "replipiped did not open its socket"
}
stop_daemon() {
	kill "$daemon"
	wait "$daemon" || vm_fail "replipiped did not exit cleanly on SIGTERM"
}
# lun_of_vol1 FABRIC/WWN: lun_0 of tpgt_1 there is linked to replipipe_0/vol1.
lun_of_vol1() {
	for l in $CFS/$1/tpgt_1/lun/lun_0/*; do
		[ -L "$l" ] && [ "$(readlink -f "$l")" = $CFS/core/replipipe_0/vol1 ] && return 0
	done
	return 1
}
# alua_of_loop_lun: the ALUA group of lun_0 of the tcm_loop target.
alua_of_loop_lun() {
	sed -n 's/^TG Port Alias: //p' $CFS/loopback/$LOOP_WWN/tpgt_1/lun/lun_0/alua_tg_pt_gp
}
# grp1_back WHEN: vol1's ALUA group grp1 is there with its tag, the tcm_loop
# LUN in it.
grp1_back() {
	[ "$(cat $CFS/core/replipipe_0/vol1/alua/grp1/tg_pt_gp_id 2>/dev/null)" = 2 ] ||
		vm_fail "$1: vol1's ALUA group grp1 (tag 2) is not there"
	[ "$(alua_of_loop_lun)" = grp1 ] ||
		vm_fail "$1: the tcm_loop LUN is in ALUA group '$(alua_of_loop_lun)', not grp1"
}
# restore_other WHAT PATTERN PYTHON: `targetctl restore` of the saved file
# with vol1's entry `s` changed by PYTHON, while vol1 is kept in its pipe:
# the restore says PATTERN, vol1 stays as it is, and neither saved LUN of
# vol1 is exported on it (rtslib binds a saved LUN to any backstore of its
# name); the targets themselves and vol3 are restored.
restore_other() {
	python3 -c "import json
c = json.load(open('$SAVE'))
for s in c['storage_objects']:
    if s['name'] == 'vol1':
        $3
json.dump(c, open('/tmp/other.json', 'w'))" || vm_fail "restore_other $1: cannot write the file"
	targetctl restore /tmp/other.json > /tmp/restore.out 2>&1 ||
		{ cat /tmp/restore.out; vm_fail "targetctl restore ($1)"; }
	cat /tmp/restore.out
	[ -d $CFS/loopback/$LOOP_WWN/tpgt_1 ] || vm_fail "restore ($1): the tcm_loop target is not restored"
	! lun_of_vol1 loopback/$LOOP_WWN || vm_fail "restore ($1): vol1 exported through tcm_loop"
	! lun_of_vol1 iscsi/$IQN || vm_fail "restore ($1): vol1 exported through iSCSI"
	grep -q "$2" /tmp/restore.out || vm_fail "restore ($1): the restore does not say '$2'"
	grep -q "LUN 0: its storage object /backstores/replipipe/vol1 was not restored" /tmp/restore.out ||
		vm_fail "restore ($1): the LUNs of vol1 not reported"
	[ "$(unit_serial replipipe_0/vol1)" = "$wwn1" ] || vm_fail "restore ($1): vol1's WWN changed"
	grep -q "pipe: " $CFS/core/replipipe_0/vol1/info || vm_fail "restore ($1): vol1 left its pipe"
	[ -d $CFS/core/replipipe_0/vol3 ] || vm_fail "restore ($1): vol3 not restored"
	[ ! -e $CFS/core/replipipe_7 ] || vm_fail "restore ($1): made replipipe_7"
}
# loop_disk: the disk of the tcm_loop target $LOOP_WWN.
loop_disk() {
	vm_scsi_disk "$(cat $CFS/loopback/$LOOP_WWN/tpgt_1/address):0"
}
# write_and_compare DEV PRIMARY TARGET SEED: 8 MiB of random data at 4 MiB
# into DEV (O_DIRECT); it must be on the primary, and the legs identical.
write_and_compare() {
	dd if=/dev/urandom of=/tmp/data.$4 bs=1M count=8 2>/dev/null
	dd if=/tmp/data.$4 of="$1" bs=1M seek=4 oflag=direct 2>/dev/null || vm_fail "write to $1"
	# O_DIRECT (vm_read): the module writes the primary behind its cache
	vm_read "$2" 4 8 /tmp/primary.$4 1048576
	cmp -s /tmp/primary.$4 /tmp/data.$4 || vm_fail "the data written through $1 is not on the primary $2"
	vm_cmp_devs "$2" "$3"
	vm_log "written through $1: on $2, legs $2 and $3 identical"
}

vm_brd 6 64
vm_modprobe target_core_mod
echo /etc/rtslib-fb-target > $CFS/dbroot
vm_modprobe sd_mod
vm_modprobe tcm_loop
vm_modprobe crc32c_generic
vm_modprobe iscsi_target_mod
vm_modprobe iscsi_tcp
grep -q '^replipipe ' /proc/modules && vm_fail "replipipe.ko loaded before any replipipe backstore"

vm_log "== targetcli creates replipipe backstores and gets replipipe.ko loaded"
# LIO does not load a backend for mkdir core/<backend>_<N>: it request_module()s
# only iblock, file, pscsi and user, once. Recorded, not asserted.
if mkdir $CFS/core/replipipe_9 2> /tmp/mkdir.out; then
	vm_log "LIO loaded replipipe.ko for mkdir core/replipipe_9 (MODULE_ALIAS)"
	rmdir $CFS/core/replipipe_9
	rmmod replipipe || vm_fail "rmmod replipipe"
else
	vm_log "mkdir core/replipipe_9 without replipipe.ko: $(cat /tmp/mkdir.out) (no autoload)"
fi
tc /backstores/replipipe create name=vol1 dev=/dev/ram0
grep -q '^replipipe ' /proc/modules || vm_fail "replipipe.ko not loaded by targetcli create"
[ -d $CFS/core/replipipe_0/vol1 ] || vm_fail "vol1 is not replipipe_0/vol1"
grep -q "replipipe primary: /dev/ram0" $CFS/core/replipipe_0/vol1/info || vm_fail "vol1 info"
tc /backstores/replipipe create name=vol2 dev=/dev/ram2 intent=/dev/ram4 intent_chunk_kib=1024
vol2=$(cd $CFS/core && ls -d replipipe_*/vol2) || vm_fail "no replipipe_<N>/vol2"
vm_log "vol2 is $vol2"
grep -q "intent: /dev/ram4 (tracks nothing).*intent_chunk_kib: 1024" $CFS/core/$vol2/info ||
	vm_fail "vol2 has no write-intent record: $(cat $CFS/core/$vol2/info)"
unit_serial() { sed 's/^T10 VPD Unit Serial Number: //' $CFS/core/$1/wwn/vpd_unit_serial; }
wwn1=$(unit_serial replipipe_0/vol1)

vm_log "== refused, and said why: vol1 again in replipipe_7, a primary in use, a bad chunk"
# targetcli lists /backstores/replipipe/<name> and saved LUNs name a
# backstore by its name alone: a second vol1 stops every targetcli command
# ("already used by a sibling") and a restore could bind vol1's LUNs to it.
tc_refused "a second vol1" "replipipe_0/vol1 exists: a name is used in one replipipe HBA only" \
	/backstores/replipipe create name=vol1 dev=/dev/ram5 index=7
[ ! -e $CFS/core/replipipe_7 ] || vm_fail "a refused vol1 was left in replipipe_7"
# What the kernel refuses with EBUSY or EINVAL alone is checked first.
tc_refused "a primary in use" "dev /dev/ram0 is in use" \
	/backstores/replipipe create name=vol9 dev=/dev/ram0
tc_refused "intent_chunk_kib=3" "intent_chunk_kib must be a power of two from 4 to 1048576" \
	/backstores/replipipe create name=vol9 dev=/dev/ram5 intent=/dev/ram1 intent_chunk_kib=3
[ -z "$(ls -d $CFS/core/replipipe_*/vol9 2>/dev/null)" ] || vm_fail "a refused vol9 was left in configfs"
# A second vol1 made by hand: targetcli works, shows replipipe_0/vol1 and
# says why replipipe_7/vol1 is not shown.
mkdir -p $CFS/core/replipipe_7/vol1 || vm_fail "mkdir replipipe_7/vol1"
tc ls /backstores/replipipe
grep -q "replipipe_7/vol1 not shown: replipipe_0/vol1 has its name" /tmp/tc.out ||
	vm_fail "targetcli ls: no word of the hidden replipipe_7/vol1"
grep -q "o- vol1 .*replipipe_0/vol1" /tmp/tc.out || vm_fail "targetcli ls: vol1 is not replipipe_0/vol1"
rmdir $CFS/core/replipipe_7/vol1 $CFS/core/replipipe_7 || vm_fail "rmdir replipipe_7"
# In one process (targetcli's shell, a script): a backstore made with an
# explicit index, then one without, which must not pick that index again.
python3 -c 'from rtslib_fb.tcm import so_mapping
cls = so_mapping["replipipe"]
a = cls("idx_a", "/dev/ram1")
b = cls("idx_b", "/dev/ram3", index=a.index + 1)
c = cls("idx_c", "/dev/ram5")
print(a.kernel_name, b.kernel_name, c.kernel_name)
for so in (c, b, a):
    so.delete()' || vm_fail "a backstore without index after one with an explicit index"
[ -z "$(ls -d $CFS/core/replipipe_*/idx_* 2>/dev/null)" ] || vm_fail "idx_* left in configfs"
# A second backstore in vol1's HBA, made by hand as DESIGN.md names them
# (rtslib itself makes one HBA per backstore).
mkdir $CFS/core/replipipe_0/vol3 || vm_fail "mkdir replipipe_0/vol3"
echo udev_path=/dev/ram5 > $CFS/core/replipipe_0/vol3/control
echo 1 > $CFS/core/replipipe_0/vol3/enable || vm_fail "enable replipipe_0/vol3"

vm_log "== vol1 exported through tcm_loop and iSCSI (targetcli)"
tc /loopback create wwn=$LOOP_WWN
tc /loopback/$LOOP_WWN/luns create /backstores/replipipe/vol1
tc /iscsi create $IQN
tc /iscsi/$IQN/tpg1/luns create /backstores/replipipe/vol1
tc /iscsi/$IQN/tpg1 set attribute generate_node_acls=1 authentication=0 \
	demo_mode_write_protect=0 cache_dynamic_acls=1
[ -d $CFS/iscsi/$IQN/tpgt_1/np/0.0.0.0:3260 ] || tc /iscsi/$IQN/tpg1/portals create 127.0.0.1 3260
lun=$(loop_disk)
vm_log "tcm_loop LUN: $lun"

vm_log "== pipes through replipiped: vol1 -> /dev/ram1, $vol2 -> /dev/ram3"
start_daemon
replipipectl create-or-modify --name tc1 --source-system localhost --target-system localhost \
	--pair replipipe_0/vol1=/dev/ram1 || vm_fail "create pipe tc1"
replipipectl create-or-modify --name tc2 --source-system localhost --target-system localhost \
	--pair "$vol2=/dev/ram3" || vm_fail "create pipe tc2 with the targetcli-made $vol2"
replipipectl wait tc1 --state InSync --timeout 120 || vm_fail "tc1 not InSync"
replipipectl wait tc2 --state InSync --timeout 120 || vm_fail "tc2 not InSync"
write_and_compare "$lun" /dev/ram0 /dev/ram1 1
cat $CFS/core/replipipe_0/vol1/info

vm_log "== targetcli ls lists them under /backstores/replipipe"
tc ls
grep -q "o- replipipe .*Storage Objects: 3" /tmp/tc.out || vm_fail "no /backstores/replipipe with 3 objects"
grep -q "o- vol1 .*/dev/ram0.*replipipe_0/vol1 pipe " /tmp/tc.out || vm_fail "vol1 line"
grep -q "o- vol2 .*/dev/ram2.*$vol2 pipe " /tmp/tc.out || vm_fail "vol2 line"
grep -q "replipipe/vol1" /tmp/tc.out || vm_fail "no LUN on replipipe/vol1"

vm_log "== deleting a backstore that is in a pipe is refused, its LUNs stay"
for so in vol1 vol2; do
	if targetcli /backstores/replipipe delete $so > /tmp/del.out 2>&1; then
		cat /tmp/del.out
		vm_fail "targetcli deleted $so while it is in a pipe"
	fi
	cat /tmp/del.out
	grep -q "in pipe" /tmp/del.out || vm_fail "delete $so: not the in-a-pipe refusal"
done
[ -d $CFS/core/replipipe_0/vol1 ] && [ -d $CFS/core/$vol2 ] || vm_fail "a backstore went away"
lun_of_vol1 loopback/$LOOP_WWN || vm_fail "the tcm_loop LUN of vol1 went away"
lun_of_vol1 iscsi/$IQN || vm_fail "the iSCSI LUN of vol1 went away"
# What the module itself answers to a plain rmdir (no tool involved):
if rmdir $CFS/core/$vol2 2> /tmp/rmdir.out; then
	vm_fail "the kernel let rmdir remove $vol2 while it is in a pipe"
fi
vm_log "kernel on rmdir $vol2 in a pipe: $(cat /tmp/rmdir.out)"

vm_log "== an ALUA group on vol1, which is in a pipe; the tcm_loop LUN in it"
tc /backstores/replipipe/vol1/alua create name=grp1 tag=2
tc /loopback/$LOOP_WWN/luns/lun0 set alua alua_tg_pt_gp_name=grp1
grp1_back "targetcli"

vm_log "== targetctl save"
targetctl save || vm_fail "targetctl save"
cat $SAVE
json_check $SAVE "any(s['plugin'] == 'replipipe' and s['name'] == 'vol1' and s['index'] == 0 and s['dev'] == '/dev/ram0' and s['control'] == 'udev_path=/dev/ram0' and s['wwn'] == '$wwn1' for s in c['storage_objects'])"
json_check $SAVE "any(s['plugin'] == 'replipipe' and s['name'] == 'vol2' and s['control'] == 'udev_path=/dev/ram2,intent_path=/dev/ram4,intent_chunk_kib=1024' for s in c['storage_objects'])"
json_check $SAVE "sum(l['storage_object'] == '/backstores/replipipe/vol1' for t in c['targets'] for g in t['tpgs'] for l in g['luns']) == 2"
json_check $SAVE "set(t['fabric'] for t in c['targets']) == {'loopback', 'iscsi'}"
json_check $SAVE "any(s['plugin'] == 'replipipe' and s['name'] == 'vol3' and s['index'] == 0 and s['dev'] == '/dev/ram5' for s in c['storage_objects'])"
json_check $SAVE "any(s['name'] == 'vol1' and any(g['name'] == 'grp1' and g['tg_pt_gp_id'] == 2 for g in s['alua_tpgs']) for s in c['storage_objects'])"

vm_log "== targetctl restore while the kernel has the pipes (a restart of rtslib-fb-targetctl)"
# It clears first: the targets and vol3 go, vol1 and vol2 (in pipes) stay,
# then everything comes back from the saved file, vol1 and vol2 as they are;
# vol1's ALUA group, which the clear kept with vol1, is made again (rtslib
# makes a saved group in 'create' mode: one left there stopped the restore).
targetctl restore > /tmp/restore.out 2>&1 || { cat /tmp/restore.out; vm_fail "targetctl restore with pipes"; }
cat /tmp/restore.out
grep -q "replipipe_0/vol1 kept: .* in pipe" /tmp/restore.out || vm_fail "restore: vol1 not reported kept"
lun_of_vol1 loopback/$LOOP_WWN || vm_fail "restore with pipes: the tcm_loop LUN of vol1 is not back"
lun_of_vol1 iscsi/$IQN || vm_fail "restore with pipes: the iSCSI LUN of vol1 is not back"
[ "$(unit_serial replipipe_0/vol1)" = "$wwn1" ] || vm_fail "restore with pipes: vol1 WWN changed"
grep -q "pipe: " $CFS/core/replipipe_0/vol1/info || vm_fail "restore with pipes: vol1 left its pipe"
grep -q "pipe: " $CFS/core/$vol2/info || vm_fail "restore with pipes: vol2 left its pipe"
grep -q "replipipe primary: /dev/ram5" $CFS/core/replipipe_0/vol3/info ||
	vm_fail "restore with pipes: vol3 not back in replipipe_0"
grp1_back "restore with pipes"
replipipectl wait tc1 --state InSync --timeout 60 || vm_fail "tc1 not InSync after the restore"
lun=$(loop_disk)
write_and_compare "$lun" /dev/ram0 /dev/ram1 4

vm_log "== a restore whose saved vol1 is not the kept one: vol1 kept as it is, none of its LUNs"
restore_other "another WWN" "replipipe_0/vol1 is in pipe .*: kept as it is, and no saved LUN of vol1 is exported on it" \
	"s['wwn'] = '0badc0de-0000-4000-8000-000000000001'"
restore_other "another HBA" "replipipe_0/vol1 exists: a name is used in one replipipe HBA only" \
	"s['index'] = 7"
targetctl restore > /tmp/restore.out 2>&1 || { cat /tmp/restore.out; vm_fail "targetctl restore, the saved file again"; }
cat /tmp/restore.out
lun_of_vol1 loopback/$LOOP_WWN && lun_of_vol1 iscsi/$IQN ||
	vm_fail "restore of the saved file again: the LUNs of vol1 are not back"
grp1_back "restore of the saved file again"

vm_log "== reboot, simulated: daemon stopped, kernel pipes gone, targetctl clear, rmmod"
stop_daemon
vm_log "kernel pipes after replipiped stopped:"
rp-nlctl get
# targetctl clear while the kernel still has the pipes: LIO refuses to remove
# their sources (what the host's ExecStop=targetctl clear meets at shutdown).
if targetctl clear > /tmp/clear.out 2>&1; then
	vm_fail "targetctl clear removed backstores that are in kernel pipes"
fi
tail -n 3 /tmp/clear.out
grep -q "in pipe" /tmp/clear.out || vm_fail "targetctl clear: not the in-a-pipe refusal"
grep -q "not cleared, in a pipe: .*replipipe_0/vol1" /tmp/clear.out ||
	vm_fail "targetctl clear: does not name vol1 as not cleared"
# Everything else is cleared: the targets and vol3, which is in no pipe.
[ -z "$(ls $CFS/loopback 2>/dev/null | grep naa)" ] || vm_fail "targetctl clear left the loopback target"
[ ! -e $CFS/core/replipipe_0/vol3 ] || vm_fail "targetctl clear stopped before vol3"
# A reboot loses the kernel's pipes; replipiped's store keeps them.
for id in $(rp-nlctl get | sed -n 's/^pipe id=\([^ ]*\).*/\1/p'); do
	rp-nlctl del-pipe "$id" || vm_fail "rp-nlctl del-pipe $id"
done
targetctl clear || vm_fail "targetctl clear"
left=$(ls $CFS/core | grep -v '^alua$' || true)
[ -z "$left" ] || vm_fail "targetctl clear left core/$left"
[ -z "$(ls $CFS/loopback 2>/dev/null | grep naa)" ] || vm_fail "targetctl clear left the loopback target"
rmmod replipipe || vm_fail "rmmod replipipe"

vm_log "== boot: targetctl restore, then replipiped"
targetctl restore || vm_fail "targetctl restore"
grep -q '^replipipe ' /proc/modules || vm_fail "targetctl restore did not load replipipe.ko"
[ -d $CFS/core/replipipe_0/vol1 ] || vm_fail "vol1 not back as replipipe_0/vol1"
[ -d $CFS/core/$vol2 ] || vm_fail "vol2 not back as $vol2"
[ -d $CFS/core/replipipe_0/vol3 ] || vm_fail "vol3 not back as replipipe_0/vol3"
[ "$(unit_serial replipipe_0/vol1)" = "$wwn1" ] || vm_fail "vol1 WWN changed"
lun_of_vol1 loopback/$LOOP_WWN || vm_fail "tcm_loop LUN not back"
lun_of_vol1 iscsi/$IQN || vm_fail "iSCSI LUN not back"
grp1_back "boot restore"
# The boot window: LUNs are live before replipiped pushes the pipes back, so
# an initiator may write to the primary alone; the pair must not come back
# InSync with that write missing on the target.
lun=$(loop_disk)
dd if=/dev/urandom of=$lun bs=1M seek=1 count=1 oflag=direct 2>/dev/null ||
	vm_fail "write through the restored LUN before replipiped starts"
start_daemon
replipipectl wait tc1 --state InSync --timeout 120 || vm_fail "tc1 not back InSync"
replipipectl wait tc2 --state InSync --timeout 120 || vm_fail "tc2 not back InSync"
replipipectl status
grep -q "pipe: " $CFS/core/replipipe_0/vol1/info || vm_fail "vol1 not in a pipe after restore"
cat $CFS/core/replipipe_0/vol1/info
# vol2 came back with its record, which knew tc2's pair: no full resync.
grep -q "intent: /dev/ram4 (bound, [0-9]* regions marked, 1024 KiB chunks)" $CFS/core/$vol2/info ||
	vm_fail "vol2's record after restore: $(cat $CFS/core/$vol2/info)"
rp-nlctl get | grep "^pair .* source=$vol2 " | grep -q " intent=loaded " ||
	vm_fail "tc2 did not load vol2's record: $(rp-nlctl get)"
vm_cmp_devs /dev/ram0 /dev/ram1
vm_cmp_devs /dev/ram2 /dev/ram3
vm_log "tcm_loop LUN after restore: $lun"
write_and_compare "$lun" /dev/ram0 /dev/ram1 2
# Its own session: iscsid signals its whole process group when it stops.
setsid iscsid -f > /tmp/iscsid.log 2>&1 &
iscsid=$!
sleep 1
ilun=$(vm_iscsi_login $IQN)
vm_log "iSCSI LUN after restore: $ilun"
write_and_compare "$ilun" /dev/ram0 /dev/ram1 3
# A READ of one block whose initiator expects 100 bytes: iSCSI moves 100
# (an underflow) from pages of LIO's own, no whole block; the primary must
# still be read a whole block. (tcm_loop refuses such a command itself.)
rp-sg-read "$ilun" 2048 100 || vm_fail "a READ expecting 100 bytes of its block, over iSCSI"
vm_iscsi_logout $IQN
vm_iscsid_stop $iscsid
tc ls

vm_log "== teardown"
replipipectl delete tc1 || vm_fail "delete tc1"
replipipectl delete tc2 || vm_fail "delete tc2"
stop_daemon
tc /backstores/replipipe delete vol2
# vol3 goes, replipipe_0 stays to vol1.
tc /backstores/replipipe delete vol3
[ ! -e $CFS/core/replipipe_0/vol3 ] && [ -d $CFS/core/replipipe_0/vol1 ] ||
	vm_fail "deleting vol3 did not leave replipipe_0/vol1 alone"
targetctl clear || vm_fail "targetctl clear at the end"
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "targetcli-replipipe done"
