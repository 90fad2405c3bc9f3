#!/bin/sh
# Asynchronous mirroring with MaxLagKiB 1024: 64 MiB of random writes from 4
# writers through the LUN; after the writers stop the lag drains to 0, the
# legs are byte-identical and every acknowledged write is on both; the lag
# never exceeded the bound.
# vm-timeout: 600
# vm-mem: 1024

PIPE=kmod-async
SRC=replipipe_0/vol1
MAX_LAG_KIB=1024
LIVE=/sys/module/replipipe/parameters/live_objects

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
pair_line() { rp-nlctl get $PIPE | grep "^pair "; }

vm_brd 2 128
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --mode async --max-lag-kib $MAX_LAG_KIB \
	--region-kib 64 --pair $SRC=/dev/ram1,clean || vm_fail "set-pipe refused"
rp-nlctl get $PIPE
lun=$(vm_tcm_loop_export $SRC)

vm_log "== 64 MiB of random writes, 4 writers; sampling the lag meanwhile"
rp-writer --dev "$lun" --log /tmp/w --threads 4 --bytes 64M --seed 51 > /tmp/writer.out 2>&1 &
writers=$!
max_lag=0
while kill -0 $writers 2> /dev/null; do
	lag=$(field "$(pair_line)" lag)
	[ -z "$lag" ] || [ "$lag" -le "$max_lag" ] || max_lag=$lag
	sleep 0.2
done
rc=0
wait $writers || rc=$?
cat /tmp/writer.out
[ $rc -eq 0 ] || vm_fail "writes failed (rc=$rc)"
vm_log "largest lag sampled: $max_lag bytes"
[ "$max_lag" -le $((MAX_LAG_KIB * 1024)) ] || vm_fail "lag $max_lag above MaxLagKiB $MAX_LAG_KIB"

vm_log "== waiting for the lag to drain"
i=0
while :; do
	pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
	[ "$(field "$pair" lag)" = 0 ] && break
	[ $i -lt 300 ] || vm_fail "lag did not drain within 30 s: $pair"
	sleep 0.1
	i=$((i + 1))
done
echo "$pair"
[ "$(field "$pair" state)" = InSync ] || vm_fail "pair not InSync: $pair"
[ "$(field "$pair" dirty)" = 0 ] || vm_fail "dirty regions: $pair"
[ "$(field "$pair" errors)" = 0 ] || vm_fail "target errors: $pair"
bytes=$(field "$(grep '^writer: acked' /tmp/writer.out)" bytes)
[ "$(field "$pair" bytes)" = "$bytes" ] ||
	vm_fail "bytes mirrored $(field "$pair" bytes) != bytes acknowledged $bytes"

rp-verify --dev "$lun" /tmp/w.* || vm_fail "data through the LUN"
rp-verify --dev /dev/ram0 /tmp/w.* || vm_fail "data on the primary"
rp-verify --dev /dev/ram1 /tmp/w.* || vm_fail "data on the replica"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "the legs differ"

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
live=$(cat $LIVE)
vm_log "live_objects: $live"
[ "$live" = "pipes=0 pairs=0 claims=0 async_bufs=0" ] || vm_fail "objects leaked: $live"
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-async done"
