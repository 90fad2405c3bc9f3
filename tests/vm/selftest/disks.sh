#!/bin/sh
# Self-test of `# vm-disks:`: two virtio disks found by name with the right
# sizes; a marker written to disk "a" is found again on the next boot when
# run.sh boots this twice with REPLIPIPE_VM_KEEP_DISKS=1.
# vm-timeout: 120
# vm-disks: a:8 b:16
a=$(vm_disk a)
b=$(vm_disk b)
[ "$(vm_dev_bytes "$a")" -eq 8388608 ] || vm_fail "disk a is $(vm_dev_bytes "$a") bytes"
[ "$(vm_dev_bytes "$b")" -eq 16777216 ] || vm_fail "disk b is $(vm_dev_bytes "$b") bytes"
if [ "$(head -c 16 "$a")" = "REPLIPIPE-MARKER" ]; then
	vm_log "disks: marker persisted on $a"
else
	printf 'REPLIPIPE-MARKER' | dd of="$a" bs=512 conv=sync,fsync 2> /dev/null
	vm_log "disks: marker written to $a"
fi
