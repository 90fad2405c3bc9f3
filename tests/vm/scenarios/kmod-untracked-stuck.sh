#!/bin/sh
# A PIPE_SET whose new pair's source has a write in flight that found no
# pair, queued for good (a suspended dm device, as multipath with no path
# left would queue it). PIPE_SET waits for such writes under the lock every
# netlink command takes: a claim must not start while one is in flight, and
# a write-intent record's marks of them are in only once they ended.
#  1. The source (dm-linear over a null_blk, with a write-intent record) is
#     exported with no pipe; the dm device is suspended and one write W of
#     64 KiB is issued to the LUN: it marks the record and waits in dm.
#  2. PIPE_SET of a pipe with that source returns within its 250 ms bound
#     (RP_START_WAIT_MS: it holds the module's configuration lock and genl's
#     shared one), with the pair not started; PIPE_GET answers at once; a
#     claim waits claim_timeout_sec (2 s) and fails saying why. A claim waiting there
#     with claim_timeout_sec 30 is answered pending (the kernel waits
#     REPLIPIPE_CLAIM_WAIT_MS per request: nbd, a module with a genl
#     family, loads meanwhile, on kernels that have it) and ends at once
#     when killed (SIGKILL).
#  3. The dm device resumed: W ends, the pair starts on its own (its record
#     too: the start runs from a work item, under the lock), and a resync
#     of its regions, all dirty, makes the legs identical.
#  4. The pipe deleted (its record clean) and set again with a write W2 in
#     flight: the pair loads the record (only W2's chunk dirty) and waits
#     for its start. A PIPE_SET that gives its target to vol9 invalidates
#     the record (it names that target), then fails on vol9's record device
#     (it answers the PIPE_SET's probe, its writes go to an error table):
#     the pair stays, its record unbound. When W2 ends
#     the pair starts with every region dirty, since an unbound record
#     marks no write (writes that found no pair since the bind could be on
#     the primary only), and says so; the resync makes the legs identical.
#  4b. A pair bound anew and made clean (",clean", another region size)
#     with a write W4 in flight: PIPE_GET says Syncing, no region dirty,
#     until the pair starts (what a record marks for such writes reaches
#     the pair only then), also once paused and resumed, then InSync. The
#     module before said InSync at once; the one before decision 112 said
#     so after the resume.
#  5. An enable whose write-intent record sits on a suspended dm device
#     waits for it, holding the backstore's configuration lock: a read of
#     its info waits too, and ends at once when killed (the module before
#     read it in an unkillable wait, so targetcli's `ls` hung for good).
# The old module waited for W without a bound: the PIPE_SET and every
# netlink command after it (another pipe's too) hung until the resume; the
# one before decision 103 waited 5 s.
# Before step 4's fix the pair started with only W2's chunk dirty.
# vm-timeout: 300
# vm-cost: 25
# vm-debug-cost: 50
# vm-mem: 1024
# vm-bins: dmsetup

PIPE=kmod-untracked
SRC=replipipe_0/vol1
MIB=32
REGION_KIB=64
NULLB=$VM_NULLB
CLAIM_TIMEOUT=/sys/module/replipipe/parameters/claim_timeout_sec
export DM_DISABLE_UDEV=1

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
# held_write NAME OFFSET SEED: suspends the source's dm device and writes
# 64 KiB through the LUN in the background; it must still wait 1 s later.
held_write() {
	DM_DISABLE_UDEV=1 dmsetup --noudevsync suspend rpq || vm_fail "dmsetup suspend rpq"
	rm -f /tmp/$1.rc
	(rp-writer --dev "$lun" --log /tmp/$1 --threads 1 --offset $2 --span 64K \
		--min-size 64K --max-size 64K --count 1 --seed $3 > /tmp/$1.out 2>&1
		echo $? > /tmp/$1.rc) &
	sleep 1
	[ ! -e /tmp/$1.rc ] || vm_fail "$1 ended on a suspended source: $(cat /tmp/$1.out)"
}
# resume_and_start NAME STARTS: resumes the source; the write ends well
# and the kernel has logged STARTS starts of the pair.
resume_and_start() {
	local i=0
	DM_DISABLE_UDEV=1 dmsetup --noudevsync resume rpq || vm_fail "dmsetup resume rpq"
	until [ -e /tmp/$1.rc ]; do
		[ $i -lt 100 ] || vm_fail "$1 did not end within 10 s of the resume"
		sleep 0.1
		i=$((i + 1))
	done
	[ "$(cat /tmp/$1.rc)" = 0 ] || vm_fail "$1 failed: $(cat /tmp/$1.out)"
	i=0
	until [ "$(dmesg | grep -c "replipipe: $SRC: the writes from before pair $PIPE -> /dev/rptgt ended; it is started")" = $2 ]; do
		[ $i -lt 50 ] || vm_fail "the pair did not start within 5 s of $1's end"
		sleep 0.1
		i=$((i + 1))
	done
}

vm_modprobe null_blk nr_devices=0
vm_modprobe dm_mod
vm_nullb_cached rpsrc $MIB
vm_nullb_cached rptgt $MIB
vm_nullb_cached rpwi 4
sectors=$(blockdev --getsz /dev/rpsrc)
src=$(vm_dm_create rpq "0 $sectors linear /dev/rpsrc 0")
vm_backstore replipipe replipipe_0 vol1 "$src" /dev/rpwi > /dev/null
lun=$(vm_tcm_loop_export $SRC)

vm_log "== 1. W issued to a source with no pair, queued in a suspended dm device"
held_write W 1M 65

vm_log "== 2. PIPE_SET with W in flight"
t0=$(vm_now_ms)
rp-nlctl set-pipe --id $PIPE --name untracked --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=/dev/rptgt --nl-timeout 20 \
	> /tmp/set.out 2>&1 || vm_fail "set-pipe: $(cat /tmp/set.out)"
t1=$(vm_now_ms)
vm_log "PIPE_SET took $((t1 - t0)) ms"
# The rest of a PIPE_SET takes about half a second on the debug kernel under
# TCG; the module before waited 5 s here.
[ $((t1 - t0)) -lt 2500 ] || vm_fail "PIPE_SET took $((t1 - t0)) ms: past its 250 ms bound"
dmesg | grep -q "replipipe: $SRC: writes from before pair $PIPE -> /dev/rptgt still in flight after 250 ms; it starts when they end" ||
	vm_fail "the kernel log does not say the pair starts later"
t0=$(vm_now_ms)
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
t1=$(vm_now_ms)
echo "$pair"
[ $((t1 - t0)) -lt 2000 ] || vm_fail "PIPE_GET took $((t1 - t0)) ms"
# The wait is killable: a resync engine killed by systemd's SIGKILL must
# not stay in the kernel for claim_timeout_sec (up to an hour).
rp-nlctl claim $PIPE $SRC > /tmp/claimk.out 2>&1 &
cpid=$!
sleep 1
kill -0 $cpid 2> /dev/null || vm_fail "the claim did not wait: $(cat /tmp/claimk.out)"
# ... REPLIPIPE_CLAIM_WAIT_MS per request, not claim_timeout_sec: generic
# netlink runs a request under the read side of a lock every family
# shares, which a module registering a family takes for writing, and every
# genl request of the host then queued behind the claim.
grep -q "^claim-pending id=" /tmp/claimk.out ||
	vm_fail "the kernel did not answer the claim at the fence as pending: $(cat /tmp/claimk.out)"
vm_genl_loads_beside "a claim waiting at the fence"
kill -0 $cpid 2> /dev/null || vm_fail "the claim ended while nbd loaded: $(cat /tmp/claimk.out)"
t0=$(vm_now_ms)
kill -9 $cpid
rc=0
wait $cpid || rc=$?
t1=$(vm_now_ms)
vm_log "a killed claim ended after $((t1 - t0)) ms"
[ $rc = 137 ] || vm_fail "the claim ended by itself (rc=$rc), not by the kill: $(cat /tmp/claimk.out)"
[ $((t1 - t0)) -lt 3000 ] || vm_fail "a killed claim took $((t1 - t0)) ms to end"
echo 2 > $CLAIM_TIMEOUT
t0=$(vm_now_ms)
if rp-nlctl claim $PIPE $SRC > /tmp/claim.out 2>&1; then
	vm_fail "a claim was granted with a write from before the pair in flight: $(cat /tmp/claim.out)"
fi
t1=$(vm_now_ms)
cat /tmp/claim.out
case "$(cat /tmp/claim.out)" in
*"writes to the source from before the pair are still in flight"*"(errno ETIMEDOUT)"*) ;;
*) vm_fail "the claim failed without saying why" ;;
esac
[ $((t1 - t0)) -ge 1500 ] || vm_fail "the claim gave up after $((t1 - t0)) ms, before claim_timeout_sec"
echo 30 > $CLAIM_TIMEOUT

vm_log "== 3. the source resumed: W ends, the pair starts"
resume_and_start W 1
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
# both fields missing would compare equal
[ "$(vm_field "$pair" regions)" = $((MIB * 1024 / REGION_KIB)) ] ||
	vm_fail "regions is not $MIB MiB / $REGION_KIB KiB: $pair"
[ "$(vm_field "$pair" dirty)" = "$(vm_field "$pair" regions)" ] ||
	vm_fail "a new pair not given as clean has clean regions: $pair"
rp-nlctl resync $PIPE $SRC > /tmp/resync || vm_fail "resync: $(cat /tmp/resync)"
tail -n 1 /tmp/resync
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the resync: $pair"
vm_cmp_devs /dev/rpsrc /dev/rptgt

vm_log "== 4. a pair waiting for its start whose record a failed PIPE_SET unbinds"
vm_nullb_cached rpsrc9 $MIB
vm_nullb_cached rpwi9 4
rec9=$(vm_dm_create rpwi9d "0 $(blockdev --getsz /dev/rpwi9) linear /dev/rpwi9 0")
vm_backstore replipipe replipipe_0 vol9 /dev/rpsrc9 "$rec9" > /dev/null
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe before step 4"
held_write W2 8M 66
rp-nlctl set-pipe --id $PIPE --name untracked --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=/dev/rptgt --nl-timeout 20 \
	> /tmp/set.out 2>&1 || vm_fail "set-pipe again: $(cat /tmp/set.out)"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
regions=$((MIB * 1024 / REGION_KIB))
[ "$(vm_field "$pair" intent)" = loaded ] || vm_fail "the pair set again did not load its record: $pair"
loaded=$(vm_field "$pair" dirty)
[ -n "$loaded" ] && [ "$loaded" -gt 0 ] && [ "$loaded" -lt $regions ] ||
	vm_fail "the loaded pair is not dirty at W2's chunk only: $pair"
# vol9's record answers the PIPE_SET's probe (a read and a flush) but
# takes no write: the PIPE_SET fails on it after it invalidated vol1's
# record, which names the target (docs/decisions.md 110)
sz9=$(blockdev --getsz /dev/rpwi9)
err9=$(vm_dm_create rpwi9err "0 $sz9 error")
vm_dm_writes_fail rpwi9d /dev/rpwi9 0 $sz9 $err9
if rp-nlctl set-pipe --id $PIPE --name untracked --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair replipipe_0/vol9=/dev/rptgt --nl-timeout 20 \
	> /tmp/set9.out 2>&1; then
	vm_fail "a PIPE_SET whose record device fails succeeded"
fi
vm_log "PIPE_SET giving the target to vol9: $(tail -n 1 /tmp/set9.out)"
pair=$(pair_line) || vm_fail "no pair line after the failed PIPE_SET"
[ "$(vm_field "$pair" source)" = $SRC ] || vm_fail "the failed PIPE_SET changed the pair: $pair"
resume_and_start W2 2
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" dirty)" = $regions ] ||
	vm_fail "a pair whose record lost its binding started with $(vm_field "$pair" dirty) of $regions regions dirty: $pair"
dmesg | grep "lost its binding before pair $PIPE" ||
	vm_fail "the kernel log does not say why every region is dirty"
rp-nlctl resync $PIPE $SRC > /tmp/resync || vm_fail "resync: $(cat /tmp/resync)"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "not InSync after the resync: $pair"
vm_cmp_devs /dev/rpsrc /dev/rptgt

vm_log "== 4b. a pair made clean is Syncing until its start, not InSync"
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe before step 4b"
held_write W4 2M 67
rp-nlctl set-pipe --id $PIPE --name untracked --mode sync --policy degrade \
	--region-kib $((2 * REGION_KIB)) --pair $SRC=/dev/rptgt,clean --nl-timeout 20 \
	> /tmp/set.out 2>&1 || vm_fail "set-pipe 4b: $(cat /tmp/set.out)"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state) $(vm_field "$pair" dirty)" = "Syncing 0" ] ||
	vm_fail "a clean pair waiting for its start is not Syncing with no region dirty: $pair"
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "4b: pause"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "4b: resume"
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state) $(vm_field "$pair" dirty)" = "Syncing 0" ] ||
	vm_fail "a clean pair waiting for its start, paused and resumed, is not Syncing with no region dirty: $pair"
resume_and_start W4 3
pair=$(pair_line) || vm_fail "no pair line in rp-nlctl get"
echo "$pair"
[ "$(vm_field "$pair" state) $(vm_field "$pair" dirty)" = "InSync 0" ] ||
	vm_fail "the clean pair, started, is not InSync with no region dirty: $pair"

vm_log "== 5. an enable waits for its record's device: reading its info can be killed"
vm_nullb_cached rpsrc5 4
vm_nullb_cached rpwi5 4
rec5=$(vm_dm_create rpwi5d "0 $(blockdev --getsz /dev/rpwi5) linear /dev/rpwi5 0")
DM_DISABLE_UDEV=1 dmsetup --noudevsync suspend rpwi5d || vm_fail "dmsetup suspend rpwi5d"
dir5=$VM_CFS/core/replipipe_0/vol5
mkdir $dir5 || vm_fail "mkdir $dir5"
echo "udev_path=/dev/rpsrc5,intent_path=$rec5" > $dir5/control || vm_fail "5: control refused"
rm -f /tmp/en5.rc
(echo 1 > $dir5/enable; echo $? > /tmp/en5.rc) &
sleep 1
[ ! -e /tmp/en5.rc ] || vm_fail "5: the enable did not wait for its record's device"
cat $dir5/info > /tmp/info5 2>&1 &
cpid=$!
sleep 1
[ "$(awk '{ print $3 }' /proc/$cpid/stat)" = D ] ||
	vm_fail "5: reading info did not wait for the enable: $(cat /tmp/info5)"
t0=$(vm_now_ms)
kill -9 $cpid
i=0
# until it is a zombie or gone (kill -0 succeeds on a zombie)
while [ "$(awk '{ print $3 }' /proc/$cpid/stat 2> /dev/null || echo gone)" = D ]; do
	[ $i -lt 50 ] || {
		DM_DISABLE_UDEV=1 dmsetup --noudevsync resume rpwi5d
		vm_fail "5: a read of info killed 5 s ago is still waiting for the enable"
	}
	sleep 0.1; i=$((i + 1))
done
t1=$(vm_now_ms)
rc=0
wait $cpid || rc=$?
[ $rc = 137 ] || vm_fail "5: the read of info ended with $rc, not by the kill: $(cat /tmp/info5)"
vm_log "a killed read of info ended after $((t1 - t0)) ms"
DM_DISABLE_UDEV=1 dmsetup --noudevsync resume rpwi5d || vm_fail "dmsetup resume rpwi5d"
i=0
until [ -e /tmp/en5.rc ]; do
	[ $i -lt 100 ] || vm_fail "5: the enable did not end within 10 s of the resume"
	sleep 0.1; i=$((i + 1))
done
[ "$(cat /tmp/en5.rc)" = 0 ] || vm_fail "5: the enable failed after the resume"
grep -q "replipipe primary: /dev/rpsrc5" $dir5/info || vm_fail "5: info after the enable: $(cat $dir5/info)"
vm_backstore_delete replipipe_0/vol5
dmsetup --noudevsync remove rpwi5d || vm_fail "dmsetup remove rpwi5d"

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
vm_backstore_delete replipipe_0/vol9
dmsetup --noudevsync remove rpq || vm_fail "dmsetup remove rpq"
dmsetup --noudevsync remove rpwi9d || vm_fail "dmsetup remove rpwi9d"
dmsetup --noudevsync remove rpwi9err || vm_fail "dmsetup remove rpwi9err"
for n in rpsrc rptgt rpwi rpsrc9 rpwi9 rpsrc5 rpwi5; do
	echo 0 > $NULLB/$n/power
	rmdir $NULLB/$n || vm_fail "rmdir $NULLB/$n"
done
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-untracked-stuck done"
