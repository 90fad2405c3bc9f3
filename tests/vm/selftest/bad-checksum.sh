#!/bin/sh
# Self-test: data is compared against a deliberately wrong checksum (the
# runner must return non-zero).
# vm-timeout: 120
vm_brd 1 4
head -c 1048576 /dev/urandom > /tmp/d
dd if=/tmp/d of=/dev/ram0 bs=1M oflag=direct 2> /dev/null
got=$(vm_sum /dev/ram0 1M)
want=00000000000000000000000000000000
[ "$got" = "$want" ] || vm_fail "checksum $got, expected $want"
