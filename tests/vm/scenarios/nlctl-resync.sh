#!/bin/sh
# rp-nlctl end to end: family, set/get/del, extack errors, bitmap, claims
# (failed, dropped with the socket, at most 64 at a time), events,
# pause/resume, and the resync engine bringing a fully dirty pair to InSync
# with identical legs; then a resync under concurrent writes through the
# LUN.
# vm-timeout: 600
# vm-cost: 20
# vm-mem: 1024

PIPE=nl-resync
SRC=replipipe_0/vol1
# O_DIRECT compare: a buffered cmp would read /dev/ram0 pages cached before the
# backend wrote the device with bios.
same() { rp-verify --cmp /dev/ram0 /dev/ram1 | tee /dev/stderr | grep -q "^cmp: identical"; }
# resync_clean WHAT [OPTIONS]: a resync of the pair that must end clean;
# prints its last line, keeps its output in /tmp/resync.
resync_clean() {
	what=$1
	shift
	rp-nlctl resync $PIPE $SRC "$@" > /tmp/resync 2>&1 || vm_fail "$what: $(tail -n 2 /tmp/resync)"
	grep -q "^resync .*result=clean " /tmp/resync || vm_fail "$what: $(tail -n 1 /tmp/resync)"
	tail -n 1 /tmp/resync
}

vm_brd 2 64
dd if=/dev/urandom of=/dev/ram0 bs=1M count=64 2>/dev/null
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
rp-nlctl family || vm_fail "family"

vm_events_listen /tmp/events /tmp/events.err --timeout 300
ev=$VM_EVENTS_PID

vm_log "== errors carry extack and errno names"
rc=0; rp-nlctl set-pipe --id bad --region-kib 3 --pair $SRC=/dev/ram1 2> /tmp/err || rc=$?
cat /tmp/err
[ $rc = 1 ] || vm_fail "bad region size: rc=$rc"
grep -q "errno E" /tmp/err || vm_fail "no errno name"
rc=0; rp-nlctl get no-such-pipe 2> /tmp/err || rc=$?
cat /tmp/err; [ $rc = 1 ] || vm_fail "get missing: rc=$rc"
rc=0; rp-nlctl del-pipe no-such-pipe 2> /tmp/err || rc=$?
cat /tmp/err; [ $rc = 1 ] || vm_fail "del missing: rc=$rc"
rc=0; rp-nlctl bogus 2> /dev/null || rc=$?
[ $rc = 64 ] || vm_fail "usage: rc=$rc"

vm_log "== a pair that starts fully dirty"
rp-nlctl set-pipe --id $PIPE --name "nl test" --mode sync --policy degrade \
	--region-kib 64 --max-lag-kib 4096 --pair $SRC=/dev/ram1 || vm_fail "set-pipe"
rp-nlctl get
rp-nlctl get $PIPE
pair=$(rp-nlctl get $PIPE | grep '^pair ')
[ "$(vm_field "$pair" dirty)" = 1024 ] || vm_fail "expected 1024 dirty: $pair"
rp-nlctl bitmap $PIPE $SRC | head -n 3

vm_log "== claims: failed keeps them dirty, a dropped socket too"
out=$(rp-nlctl claim $PIPE $SRC --hint 10 --max 4 --failed) || vm_fail "claim"
echo "$out"
echo "$out" | grep -q "^claim .*first=10 count=4" || vm_fail "claim first/count"
rp-nlctl claim $PIPE $SRC --max 8 || vm_fail "claim dropped"
[ "$(vm_field "$(rp-nlctl bitmap $PIPE $SRC | head -n 1)" dirty)" = 1024 ] ||
	vm_fail "claims changed the bitmap"
# a held claim blocks a second claim of the same regions
rp-nlctl claim $PIPE $SRC --max 16 --hold 2 > /tmp/held &
held=$!
sleep 0.5
out=$(rp-nlctl claim $PIPE $SRC --max 16 --failed) || vm_fail "second claim"
echo "held: $(cat /tmp/held)"; echo "second: $out"
echo "$out" | grep -q "first=16 " || vm_fail "second claim overlaps the held one"
wait $held
# at most REPLIPIPE_MAX_CLAIMS_PER_PAIR (64) claims of a pair at a time:
# every write walks them with interrupts off
holders=
i=0
while [ $i -lt 64 ]; do
	rp-nlctl claim $PIPE $SRC --hint $((100 + i)) --max 1 --hold 30 > /tmp/h.$i 2>&1 &
	holders="$holders $!"
	i=$((i + 1))
done
i=0
until [ "$(cat /tmp/h.* | grep -c '^claim .* count=1 ')" = 64 ]; do
	[ $i -lt 300 ] || vm_fail "64 claims not all granted within 30 s: $(cat /tmp/h.* | grep -v '^claim ' | head -3)"
	sleep 0.1
	i=$((i + 1))
done
if out=$(rp-nlctl claim $PIPE $SRC --hint 500 --max 1 --failed 2>&1); then
	vm_fail "a 65th claim of the pair was granted: $out"
fi
echo "65th claim: $out"
case "$out" in
*REPLIPIPE_MAX_CLAIMS_PER_PAIR*EBUSY*) ;;
*) vm_fail "the 65th claim failed without saying why: $out" ;;
esac
# their sockets closed, their claims are gone
kill $holders
for p in $holders; do
	rc=0
	wait $p || rc=$?
	[ $rc = 143 ] || vm_fail "a claim holder ended with rc=$rc, not by the kill"
done
rp-nlctl claim $PIPE $SRC --hint 500 --max 1 --failed > /dev/null ||
	vm_fail "no claim once the 64 holders were gone"

vm_log "== resync to clean"
rp-nlctl resync $PIPE $SRC --qd 16 --chunk-kib 1024 > /tmp/resync || vm_fail "resync: $(cat /tmp/resync)"
cat /tmp/resync
grep -q "^resync .*result=clean bytes=67108864 " /tmp/resync || vm_fail "resync bytes"
pair=$(rp-nlctl get $PIPE | grep '^pair ')
echo "$pair"
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "dirty after resync"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after resync"
same || vm_fail "legs differ after resync"
resync_clean "second resync" > /dev/null
grep -q "^resync .*result=clean bytes=0 " /tmp/resync || vm_fail "second resync copied"

vm_log "== pause, write, resume, resync under writes"
rp-nlctl pair-state $PIPE $SRC pause || vm_fail pause
[ "$(vm_field "$(rp-nlctl get $PIPE | grep '^pair ')" state)" = Paused ] || vm_fail "not Paused"
lun=$(vm_tcm_loop_export $SRC)
dd if=/dev/urandom of=$lun bs=64k count=100 seek=37 oflag=direct 2>/dev/null
pair=$(rp-nlctl get $PIPE | grep '^pair ')
echo "$pair"
[ "$(vm_field "$pair" dirty)" -ge 100 ] || vm_fail "paused writes not dirty"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail resume
vm_log "== resync without concurrent writes"
resync_clean "resync after pause" --qd 8 --chunk-kib 256
same || vm_fail "legs differ after pause+resync (no concurrent writes)"
vm_log "== pause, write again, resume, resync under writes"
rp-nlctl pair-state $PIPE $SRC pause || vm_fail pause
dd if=/dev/urandom of=$lun bs=64k count=100 seek=237 oflag=direct 2>/dev/null
rp-nlctl pair-state $PIPE $SRC resume || vm_fail resume
rp-writer --dev "$lun" --log /tmp/w --threads 2 --bytes 32M --min-size 4K --max-size 256K --seed 5 > /tmp/writer &
wpid=$!
resync_clean "resync under writes" --qd 8 --chunk-kib 256
wait $wpid || vm_fail "writer: $(cat /tmp/writer)"
cat /tmp/writer
# A synchronous pair: writes during the resync were mirrored, so the resync
# alone made it InSync with identical legs (a later one would hide a miss).
pair=$(rp-nlctl get $PIPE | grep '^pair ')
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the resync under writes"
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "dirty after the resync under writes"
if ! same; then
	rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib 64 > /tmp/cmp
	head -n 20 /tmp/cmp
	vm_fail "legs differ after resync under writes"
fi
# Both legs hold every write the writer logged (not lost on both sides).
for dev in /dev/ram0 /dev/ram1; do
	rp-verify --dev $dev /tmp/w.* > /tmp/verify 2>&1 || { tail -n 5 /tmp/verify; vm_fail "$dev lacks the writer's writes"; }
	tail -n 1 /tmp/verify
done
resync_clean "final resync" > /dev/null
grep -q "^resync .*result=clean bytes=0 " /tmp/resync || vm_fail "the final resync copied: $(tail -n 1 /tmp/resync)"

vm_log "== events"
sleep 0.5
kill $ev; wait $ev || true
cat /tmp/events
grep -q "^event type=pipe_added pipe=$PIPE" /tmp/events || vm_fail "no pipe_added"
grep -q "^event type=pair_state pipe=$PIPE source=$SRC .*state=InSync" /tmp/events || vm_fail "no InSync event"
grep -q "^event type=pair_state pipe=$PIPE source=$SRC .*state=Paused" /tmp/events || vm_fail "no Paused event"

vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed after del-pipe"
[ -z "$k" ] || vm_fail "pipes left"
