#!/bin/sh
# Without replipipe's rtslib registration (Debian's python3-rtslib-fb and
# targetcli-fb as shipped): targetcli and targetctl work with an iblock
# backstore, and the moment one replipipe backstore exists they all fail with
# KeyError: 'replipipe' (rtslib_fb.tcm.so_mapping has no entry for it), i.e.
# one replipipe backstore breaks LIO configuration persistence for the host.
# Then the registration from tools/rtslib is installed the way the package
# installs it, and the very same commands work: it is what fixes them. The
# same goes for rtslib-fb's old package name, rtslib (Debian ships a copy of
# it); and a registration that fails is told on stderr and breaks nothing.
# vm-timeout: 600
# vm-cost: 30
# vm-mem: 1536
# vm-bins: /usr/bin/python3 ldconfig dbus-daemon
# vm-files: /usr/bin/targetcli /usr/bin/targetctl /usr/lib/python3.11 /usr/lib/python3/dist-packages/rtslib_fb /usr/lib/python3/dist-packages/rtslib /usr/lib/python3/dist-packages/targetcli /usr/lib/python3/dist-packages/configshell_fb /usr/lib/python3/dist-packages/six.py /usr/lib/python3/dist-packages/pyudev /usr/lib/python3/dist-packages/pyparsing /usr/lib/python3/dist-packages/gi /usr/lib/x86_64-linux-gnu/girepository-1.0 /usr/lib/x86_64-linux-gnu/libreadline.so.8* /usr/lib/x86_64-linux-gnu/libtinfo.so.6* /usr/lib/x86_64-linux-gnu/libffi.so.8* /usr/lib/x86_64-linux-gnu/libgirepository-1.0.so.1* /usr/lib/x86_64-linux-gnu/libgobject-2.0.so.0* /usr/lib/x86_64-linux-gnu/libglib-2.0.so.0* /usr/lib/x86_64-linux-gnu/libgmodule-2.0.so.0* /usr/lib/x86_64-linux-gnu/libgio-2.0.so.0* /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0* /usr/lib/x86_64-linux-gnu/libmount.so.1* /usr/lib/x86_64-linux-gnu/libblkid.so.1* /usr/lib/x86_64-linux-gnu/libudev.so.1* tools/rtslib

DIST=/usr/lib/python3/dist-packages

# The libraries were copied as real files: ldconfig makes their soname links
# and the cache ctypes.util.find_library (pyudev's libudev) reads.
printf '/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' > /etc/ld.so.conf
ldconfig
# targetcli asks the system bus for tcmu-runner's handlers on every refresh.
echo 5ce1e1ab0f0d4c4e8a0a2b3c4d5e6f70 > /etc/machine-id
mkdir -p /run/dbus /etc/rtslib-fb-target
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
dbus-daemon --config-file=/tmp/dbus-system.conf --fork --nopidfile ||
	vm_fail "dbus-daemon"
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
# As at boot: rtslib's dbroot is set before any device is registered.
vm_modprobe target_core_mod
echo /etc/rtslib-fb-target > /sys/kernel/config/target/dbroot

[ ! -e $DIST/replipipe_lio.pth ] && [ ! -e $DIST/replipipe_lio ] ||
	vm_fail "the registration is installed: this scenario needs plain rtslib"
python3 -c 'import rtslib_fb, targetcli; print("rtslib-fb", rtslib_fb.__version__)' ||
	vm_fail "python3 cannot import rtslib_fb and targetcli"

vm_brd 3 64
vm_log "== an iblock backstore exported through tcm_loop: the tools work"
vm_backstore iblock iblock_0 ib1 /dev/ram0 > /dev/null
vm_tcm_loop_export iblock_0/ib1 > /dev/null
targetcli ls > /tmp/ls.out 2>&1 || { cat /tmp/ls.out; vm_fail "targetcli ls with iblock only"; }
cat /tmp/ls.out
grep -q "ib1" /tmp/ls.out || vm_fail "targetcli ls does not list ib1"
targetctl save /tmp/iblock.json || vm_fail "targetctl save with iblock only"
grep -q '"plugin": "block"' /tmp/iblock.json || vm_fail "saved JSON lacks ib1"

vm_log "== one replipipe backstore: the tools fail with KeyError 'replipipe'"
vm_backstore replipipe replipipe_0 vol1 /dev/ram1 > /dev/null
# expect_keyerror WHAT CMD...: CMD fails and its output names KeyError 'replipipe'.
expect_keyerror() {
	what=$1
	shift
	if "$@" > /tmp/out 2>&1; then
		cat /tmp/out
		vm_fail "$what succeeded with a replipipe backstore and plain rtslib"
	fi
	cat /tmp/out
	grep -q "KeyError: 'replipipe'" /tmp/out || vm_fail "$what: not the KeyError"
	vm_log "$what: fails with KeyError: 'replipipe' (as expected)"
}
expect_keyerror "rtslib RTSRoot().dump()" \
	python3 -c 'from rtslib_fb import RTSRoot; RTSRoot().dump()'
expect_keyerror "rtslib (old name) RTSRoot().dump()" \
	python3 -c 'from rtslib import RTSRoot; RTSRoot().dump()'
expect_keyerror "targetctl save" targetctl save /tmp/broken.json
# clear deletes the targets first, then dies on the storage objects: the
# tcm_loop export is gone, the backstores stay.
expect_keyerror "targetctl clear" targetctl clear
# targetcli catches the exception and prints only str(KeyError): 'replipipe'.
if targetcli ls > /tmp/out 2>&1; then
	cat /tmp/out
	vm_fail "targetcli ls succeeded with a replipipe backstore and plain rtslib"
fi
cat /tmp/out
grep -qx "'replipipe'" /tmp/out || vm_fail "targetcli ls: not the KeyError 'replipipe'"
vm_log "targetcli ls: fails with the KeyError message 'replipipe' (as expected)"
[ ! -e /tmp/broken.json ] || vm_fail "targetctl save wrote a file anyway"

vm_log "== the registration installed as the package installs it: the same commands work"
cp -r /lib/replipipe/repo/tools/rtslib/replipipe_lio $DIST/
cp /lib/replipipe/repo/tools/rtslib/replipipe_lio.pth $DIST/
targetcli ls > /tmp/ls.out 2>&1 || { cat /tmp/ls.out; vm_fail "targetcli ls with the registration"; }
cat /tmp/ls.out
grep -q "o- replipipe " /tmp/ls.out || vm_fail "targetcli ls has no /backstores/replipipe"
grep -q "o- vol1 " /tmp/ls.out || vm_fail "targetcli ls does not list vol1"
targetctl save /tmp/fixed.json || vm_fail "targetctl save with the registration"
grep -q '"plugin": "replipipe"' /tmp/fixed.json || vm_fail "saved JSON lacks vol1"
python3 -c 'from rtslib import RTSRoot
assert any(s["plugin"] == "replipipe" for s in RTSRoot().dump()["storage_objects"])' ||
	vm_fail "rtslib (old name) with the registration"
# A register function that fails (as one would on an rtslib-fb without
# what it uses) is told on stderr; rtslib_fb still imports and works.
python3 -c 'import replipipe_lio._hook as hook
def fail(module):
    raise AttributeError("no bs_cache")
hook._AFTER_IMPORT["rtslib_fb.tcm"] = fail
from rtslib_fb import RTSRoot
print("targets:", list(RTSRoot().targets))' > /tmp/out 2>&1 ||
	{ cat /tmp/out; vm_fail "rtslib_fb fails with a failed registration"; }
cat /tmp/out
grep -q "replipipe_lio: replipipe backstores are not registered with rtslib_fb.tcm: AttributeError: no bs_cache" /tmp/out ||
	vm_fail "a failed registration is not told"
targetctl clear || vm_fail "targetctl clear with the registration"
left=$(ls /sys/kernel/config/target/core | grep -v '^alua$' || true)
[ -z "$left" ] || vm_fail "targetctl clear left $left"
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "targetcli-plain done"
