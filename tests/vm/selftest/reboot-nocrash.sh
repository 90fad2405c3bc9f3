#!/bin/sh
# Must fail: a `# vm-boots: 2` scenario whose first boot passes instead of
# crashing with vm_crash_reboot (no REBOOT marker).
# vm-timeout: 120
# vm-boots: 2
vm_log "boot $(vm_boot) of $(vm_boots): not crashing"
