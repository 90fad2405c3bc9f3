#!/bin/sh
# Self-test on the debug kernel: loads rp_selftest_leak.ko
# (REPLIPIPE_VM_EXTRA_KO), whose init leaks 16 objects, and unloads it. The
# scenario itself succeeds; the runner must still return non-zero because
# kmemleak lists the objects (allocated by a module unloaded since, which the
# runner counts as replipipe's).
# vm-timeout: 300
vm_modprobe rp_selftest_leak
rmmod rp_selftest_leak || vm_fail "rmmod rp_selftest_leak"
vm_log "rp_selftest_leak loaded and unloaded"
