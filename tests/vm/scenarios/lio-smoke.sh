#!/bin/sh
# LIO smoke test: an iblock backstore on a brd ramdisk exported through
# tcm_loop; 32 MiB of random data written to the SCSI disk with O_DIRECT must
# read back identical, through the SCSI disk and on the ramdisk itself.
# vm-timeout: 300
# vm-cost: 15
# vm-debug-cost: 45
# vm-mem: 1024

vm_brd 1 64
vm_backstore iblock iblock_0 smoke /dev/ram0 > /dev/null
sd=$(vm_tcm_loop_export iblock_0/smoke)
vm_log "iblock_0/smoke on /dev/ram0 exported as $sd"

head -c 33554432 /dev/urandom > /tmp/src
want=$(md5sum < /tmp/src | cut -d' ' -f1)
dd if=/tmp/src of="$sd" bs=1M count=32 oflag=direct conv=fsync 2> /dev/null
got=$(vm_sum "$sd" 32M)
vm_log "source $want, read back via $sd $got"
[ "$got" = "$want" ] || vm_fail "data read back from $sd differs from what was written"
vm_cmp_devs /tmp/src /dev/ram0

vm_tcm_loop_unexport iblock_0/smoke
vm_backstore_delete iblock_0/smoke
[ ! -e "$sd" ] || vm_fail "$sd still present after unexport"
vm_log "lio-smoke done"
