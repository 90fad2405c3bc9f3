#!/bin/sh
# Self-test: loads rp_selftest_warn.ko (REPLIPIPE_VM_EXTRA_KO), whose init
# does WARN_ON(1). The scenario itself succeeds; the runner must still return
# non-zero because of the WARNING and the taint.
# vm-timeout: 120
vm_modprobe rp_selftest_warn
vm_log "rp_selftest_warn loaded"
