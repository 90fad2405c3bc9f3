#!/bin/sh
# Self-test of `# vm-boots:`: boot 1 writes a marker to disk "a" with
# O_DIRECT (nothing synced) and hard-resets the VM with sysrq b; boot 2 (same
# disk images) finds the marker. vm_boot/vm_boots say which boot it is.
# vm-timeout: 120
# vm-boots: 2
# vm-disks: a:8
a=$(vm_disk a)
[ "$(vm_boots)" = 2 ] || vm_fail "vm_boots says $(vm_boots)"
case "$(vm_boot)" in
1)
	[ "$(head -c 16 "$a")" != "REPLIPIPE-REBOOT" ] || vm_fail "marker already on a fresh disk"
	printf 'REPLIPIPE-REBOOT%08d' "$$" | dd of="$a" bs=512 conv=sync oflag=direct 2> /dev/null
	vm_log "reboot: marker written to $a, crashing"
	vm_crash_reboot
	;;
2)
	[ "$(head -c 16 "$a")" = "REPLIPIPE-REBOOT" ] || vm_fail "marker lost across the reset"
	vm_log "reboot: marker survived the reset on $a"
	;;
*) vm_fail "vm_boot says $(vm_boot)" ;;
esac
