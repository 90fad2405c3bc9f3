#!/bin/sh
# Must fail: a `# vm-boots: 2` scenario whose first boot prints the REBOOT
# marker, as vm_crash_reboot does before sysrq b, and then fails, as it does
# when the reset does not happen. Its second boot would pass.
# vm-timeout: 120
# vm-boots: 2
if [ "$(vm_boot)" = 1 ]; then
	echo "REPLIPIPE-SCENARIO: REBOOT"
	vm_fail "the reset did not happen"
fi
vm_log "boot $(vm_boot) of $(vm_boots): passing"
