#!/bin/sh
# Self-test: a scenario that never finishes (the runner must time out and
# return non-zero; the guest reports first, 10 s before the host limit).
# vm-timeout: 40
vm_log "sleeping past the time-out"
sleep 1000
