#!/bin/sh
# Self-test: a trivially passing scenario (the runner must return 0).
# vm-timeout: 120
vm_brd 1 4
head -c 1048576 /dev/urandom > /tmp/d
dd if=/tmp/d of=/dev/ram0 bs=1M oflag=direct 2> /dev/null
vm_cmp_devs /tmp/d /dev/ram0
vm_log "selftest pass: ok"
