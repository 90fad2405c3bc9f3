#!/bin/sh
# The genl family refuses bad input: rp-nltest sends malformed and forbidden
# requests (unknown attributes, missing or oversize ones, ranges, bad
# endpoints, unprivileged callers) and checks each errno and extack message
# and that refusals change nothing. It also dumps vol1's dirty bitmap (BITMAP_GET,
# one chunk of 32768 regions per dump callback) while a PIPE_SET replaces the
# pair by one with fewer regions: the dump must end with EAGAIN, never carry on
# into the new pair's smaller bitmap. Afterwards a valid pipe still works and
# the module unloads with no object left and no kernel warning.
# vm-timeout: 300
# vm-cost: 20
# vm-mem: 1024

LIVE=/sys/module/replipipe/parameters/live_objects

# 512 MiB: 131072 regions of 4 KiB, a bitmap dump of four callbacks (brd
# allocates pages only when written; nothing here writes much).
vm_brd 4 512
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
vm_backstore replipipe replipipe_0 vol2 /dev/ram1 > /dev/null
rp-nlctl family

rp-nltest --source replipipe_0/vol1 --primary /dev/ram0 \
	--source2 replipipe_0/vol2 --target /dev/ram2 --target2 /dev/ram3 \
	--unpriv-uid 1000 || vm_fail "rp-nltest: some case failed (its line says FAIL)"

vm_log "== the module still works: a valid pipe with two pairs"
rp-nlctl set-pipe --id kmod-bad-input-ok --pair replipipe_0/vol1=/dev/ram2,clean \
	--pair replipipe_0/vol2=/dev/ram3,clean || vm_fail "valid set-pipe refused"
rp-nlctl get kmod-bad-input-ok
[ "$(rp-nlctl get kmod-bad-input-ok | grep -c '^pair ')" = 2 ] || vm_fail "expected 2 pairs"
rp-nlctl del-pipe kmod-bad-input-ok || vm_fail "del-pipe"

vm_backstore_delete replipipe_0/vol1
vm_backstore_delete replipipe_0/vol2
live=$(cat $LIVE)
vm_log "live_objects: $live"
[ "$live" = "pipes=0 pairs=0 claims=0 async_bufs=0" ] || vm_fail "objects leaked: $live"
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-bad-input done"
