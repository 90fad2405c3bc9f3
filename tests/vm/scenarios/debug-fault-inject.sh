#!/bin/sh
# Fault injection on the debug kernel (tests/vm/debug-kernel.sh), which the
# checkers watch the whole time (KASAN, lockdep, UBSAN, kmemleak after the
# scenario). A sync pair vol1 (/dev/ram0) -> /dev/ram1, policy Degrade:
#  A. fail_make_request on the target device during mirrored writes: every
#     write acknowledged and on the primary, the pair Degraded with target
#     errors counted, the legs differ only inside dirty regions.
#  B. resume, then the same injection during a resync (rp-nlctl resync) with
#     writers running: the resync does not report clean, the writes are all
#     acknowledged and on the primary, the pair Degraded, differences dirty.
#  C. injection off: resume and resync to InSync with identical legs; then
#     failslab limited to the module's own request cache (cache-filter;
#     the runner marks rp_req with slub_debug=A,rp_req) during writes: the request mempool
#     absorbs it, every write acknowledged, the pair stays InSync, the legs
#     stay identical.
#  D. the N-th allocation of one process fails (/proc/thread-self/fail-nth)
#     while it configures and enables a replipipe backstore through configfs
#     (the module's configure_device: device, bio set, request pool), N
#     swept until the whole path gets through; each round either works or
#     leaves nothing behind.
#  E. the same around `rp-nlctl set-pipe` (its --make-it-fail: the genl
#     request runs in that process): N rounds; a pipe the kernel reports
#     is whole, and deleting it returns live_objects to zero.
#  F. the pipe made asynchronous; the pages of its copies cannot be had
#     (the module's fail_async_copy, 5 %) during writes: every write
#     acknowledged and on the primary, the copies that were made reach the
#     target (the lag drains), the writes left uncopied are dirty regions
#     (the legs differ only inside them), and a resync makes the legs
#     identical.
#  G. the pair paused; a resume whose probe read ends with BLK_STS_TIMEOUT
#     (the module's fail_probe_timeout: a device's own timeout) is refused
#     at once, the pair stays Paused; the next resume works. The probe is
#     freed (kmemleak) and its open of the target ended: brd unloads.
#  H. a PIPE_SET whose lookup of its source sleeps 2 s (the module's
#     delay_dev_lookup) after it found the backstore: the backstore and its
#     HBA are removed meanwhile; the PIPE_SET is refused ("going away"),
#     and nothing is freed twice or late (KASAN, no WARNING).
#  I. an event whose message cannot be allocated (the module's fail_event):
#     a listener gets ENOBUFS, an overrun to rp-nlctl events, so that it
#     reads the state again; the next event comes as usual. (The module
#     gave ENOBUFS with the wrong sign: the listener's read returned 105
#     bytes that were never written.)
#  J. a write-intent record's clear pass sleeps 5 s in its pick (the
#     module's delay_clear_pick), as its walk over millions of chunks
#     takes seconds: a write to the source ends within 2 s meanwhile (the
#     pass held the record's clear_sem throughout, and every write of the
#     backstore waited for it: decision 107).
#  K. the same sleep in the next pick, which took the pair first; the pipe
#     is deleted meanwhile, its removal held 8 s between unpublishing the
#     pair and killing it (the module's delay_pair_kill), and a write to
#     the source finds no pair (it reaches the primary only). The pass wakes
#     in that window: it must not age that write's mark, so the same pipe
#     made again loads its chunk dirty (64 regions). A pass that aged it
#     let the pair's last clear drop it (decision 107).
# Then the module unloads. Every phase checks that failures were injected.
# vm-kernel: debug
# vm-timeout: 600
# vm-debug-cost: 70
# vm-mem: 1024

PIPE=fault-inject
SRC=replipipe_0/vol1
REGION_KIB=64
LIVE=/sys/module/replipipe/parameters/live_objects
FMR=/sys/kernel/debug/fail_make_request
FSL=/sys/kernel/debug/failslab
FAC=/sys/kernel/debug/replipipe/fail_async_copy
TIMES=1000000
ROUNDS=16

pair_line() { rp-nlctl get $PIPE | grep "^pair "; }
# injected DIR: how many failures DIR's fault attributes injected since
# `times` was set to $TIMES.
injected() { echo $((TIMES - $(cat "$1/times"))); }
# fmr PERCENT: fail_make_request on the target device (0: off)
fmr() {
	echo 0 > $FMR/verbose
	echo 1 > $FMR/interval
	echo $TIMES > $FMR/times
	echo "$1" > $FMR/probability
	echo $(($1 > 0)) > /sys/block/ram1/make-it-fail
}
fmr_off() {
	echo 0 > $FMR/probability
	echo 0 > /sys/block/ram1/make-it-fail
}
# failslab MODE PERCENT: MODE cache (only caches marked failslab=1) or task
# (only processes with make-it-fail=1); sleeping allocations fail too.
failslab() {
	echo 0 > $FSL/verbose
	echo 1 > $FSL/interval
	echo N > $FSL/ignore-gfp-wait
	echo $TIMES > $FSL/times
	if [ "$1" = cache ]; then
		echo Y > $FSL/cache-filter
		echo N > $FSL/task-filter
	else
		echo N > $FSL/cache-filter
		echo Y > $FSL/task-filter
	fi
	echo "$2" > $FSL/probability
}
failslab_off() { echo 0 > $FSL/probability; }
# fault_once DIR: the module's fault DIR fires at its next chance, once
fault_once() {
	echo 0 > "$1/verbose"
	echo 1 > "$1/interval"
	echo 1 > "$1/times"
	echo 100 > "$1/probability"
}
# wait_fired DIR SECONDS WHY: fault_once's fault fired within SECONDS, or
# the scenario fails with WHY
wait_fired() {
	local i=0
	until [ "$(cat "$1/times")" = 0 ]; do
		[ $i -lt $(($2 * 10)) ] || vm_fail "$3"
		sleep 0.1
		i=$((i + 1))
	done
}
# pct ROUND: the failslab probability of an E round: 1, 2, 5, 10 % in
# turn, so that some rounds get far (into the module) and some fail early.
pct() {
	case $(($1 % 4)) in
	1) echo 1 ;;
	2) echo 2 ;;
	3) echo 5 ;;
	*) echo 10 ;;
	esac
}
# must_be_dirty FILE: every region range in FILE is dirty in the bitmap.
must_be_dirty() {
	rp-nlctl bitmap $PIPE $SRC > /tmp/bitmap || vm_fail "rp-nlctl bitmap"
	head -n 1 /tmp/bitmap
	vm_norm_ranges < /tmp/bitmap > /tmp/bitmap.ranges
	awk -F- 'FILENAME == ARGV[1] { for (r = $1; r <= $2; r++) dirty[r] = 1; next }
		{ for (r = $1; r <= $2; r++) if (!(r in dirty)) { print "region " r " not dirty"; bad = 1 } }
		END { exit bad }' /tmp/bitmap.ranges "$1"
}
# degraded_and_dirty PHASE WRITER_LOG...: the pair ($pair after the call) is
# Degraded, every write the logs acknowledge is on the primary, and the legs
# differ only inside dirty regions.
degraded_and_dirty() {
	local phase=$1
	shift
	pair=$(pair_line) || vm_fail "$phase: no pair line"
	echo "$pair"
	[ "$(vm_field "$pair" state)" = Degraded ] || vm_fail "$phase: pair not Degraded: $pair"
	rp-verify --dev /dev/ram0 "$@" || vm_fail "$phase: acknowledged writes not on the primary"
	cmp_ranges
	must_be_dirty /tmp/cmp.ranges || vm_fail "$phase: the legs differ outside the dirty regions"
}
cmp_ranges() { # rp-verify --cmp of the legs, as ranges in /tmp/cmp.ranges
	local rc=0
	rp-verify --cmp /dev/ram0 /dev/ram1 --region-kib $REGION_KIB > /tmp/cmp || rc=$?
	[ $rc -le 1 ] || vm_fail "rp-verify --cmp: rc=$rc"
	head -n 1 /tmp/cmp
	vm_norm_ranges < /tmp/cmp > /tmp/cmp.ranges
}

[ -d $FMR ] && [ -d $FSL ] || vm_fail "no $FMR or $FSL: this scenario needs the debug kernel"

vm_brd 5 32
vm_backstore replipipe replipipe_0 vol1 /dev/ram0 > /dev/null
[ "$(cat /sys/kernel/slab/rp_req/failslab)" = 1 ] ||
	vm_fail "the rp_req cache is not marked for failslab (the runner boots the debug kernel with slub_debug=A,rp_req)"
rp-nlctl set-pipe --id $PIPE --name fault-inject --mode sync --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=/dev/ram1,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun, target /dev/ram1"

vm_log "== A: fail_make_request on the target (25%) during mirrored writes"
fmr 25
out=$(rp-writer --dev "$lun" --log /tmp/pa --threads 4 --bytes 8M --seed 41) ||
	vm_fail "writes failed under policy degrade with target failures: $out"
n=$(injected $FMR)
fmr_off
echo "$out"
vm_log "fail_make_request injected $n failures"
[ "$n" -ge 1 ] || vm_fail "no failure injected into the target device"
degraded_and_dirty A /tmp/pa.*
[ "$(vm_field "$pair" errors)" -ge 1 ] || vm_fail "A: no target error counted: $pair"
[ "$(vm_field "$pair" dirty)" -ge 1 ] || vm_fail "A: no dirty region after target failures: $pair"
rp-verify --dev "$lun" /tmp/pa.* || vm_fail "A: data through the LUN"

vm_log "== B: resume, then fail_make_request (25%) during a resync with writers"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "pair-state resume"
pair=$(pair_line) || vm_fail "no pair line"
echo "$pair"
[ "$(vm_field "$pair" state)" = Syncing ] || vm_fail "resumed pair with dirty regions not Syncing: $pair"
fmr 25
rp-writer --dev "$lun" --log /tmp/pb --threads 4 --seconds 6 --seed 42 > /tmp/out-pb 2>&1 &
writers=$!
rc=0
timeout 300 rp-nlctl resync $PIPE $SRC --qd 8 --chunk-kib 256 > /tmp/resync 2>&1 || rc=$?
wrc=0
wait $writers || wrc=$?
n=$(injected $FMR)
fmr_off
tail -n 3 /tmp/resync
cat /tmp/out-pb
vm_log "resync rc=$rc, writers rc=$wrc, fail_make_request injected $n failures"
[ "$n" -ge 1 ] || vm_fail "B: no failure injected"
[ $rc -ne 124 ] || vm_fail "B: the resync hung under target failures"
! grep -q "^resync .*result=clean" /tmp/resync || vm_fail "B: resync reported clean although target writes failed"
[ $wrc -eq 0 ] || vm_fail "B: writes failed under policy degrade during the resync (rc=$wrc)"
degraded_and_dirty B /tmp/pa.* /tmp/pb.*
i=0
until [ "$(sed -n 's/.*claims=\([0-9]*\).*/\1/p' $LIVE)" = 0 ]; do
	[ $i -lt 300 ] || vm_fail "B: claims left behind: $(cat $LIVE)"
	sleep 0.1
	i=$((i + 1))
done

vm_log "== C: no injection: resync to InSync; then failslab on rp_req (50%) during writes"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "pair-state resume"
timeout 300 rp-nlctl resync $PIPE $SRC --qd 8 --chunk-kib 256 > /tmp/resync 2>&1 ||
	vm_fail "C: resync without injection: $(tail -n 3 /tmp/resync)"
tail -n 1 /tmp/resync
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "C: not InSync after a clean resync: $pair"
rp-verify --cmp /dev/ram0 /dev/ram1 | grep -q "^cmp: identical" || vm_fail "C: legs differ after resync"
failslab cache 50
out=$(rp-writer --dev "$lun" --log /tmp/pc --threads 4 --bytes 8M --seed 43) ||
	vm_fail "C: writes failed with rp_req allocations failing: $out"
n=$(injected $FSL)
failslab_off
echo "$out"
vm_log "failslab (rp_req only) injected $n failures"
[ "$n" -ge 1 ] || vm_fail "C: no allocation failure injected"
pair=$(pair_line) || vm_fail "no pair line"
echo "$pair"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "C: pair left InSync: $pair"
[ "$(vm_field "$pair" dirty)" = 0 ] || vm_fail "C: dirty regions: $pair"
rp-verify --dev /dev/ram0 /tmp/pa.* /tmp/pb.* /tmp/pc.* || vm_fail "C: acknowledged writes not on the primary"
rp-verify --cmp /dev/ram0 /dev/ram1 | grep -q "^cmp: identical" || vm_fail "C: legs differ"

vm_log "== D: the Nth allocation of one task fails (fail-nth), N swept, while a backstore is configured and enabled"
# /proc/thread-self/fail-nth = N: the N-th fault-injection point this task
# passes fails (failslab: every slab allocation, sleeping ones included, no
# cache filter; kmemleak's own metadata allocations count too and fall back
# to its pool). N grows by about 1/8 a round until the task gets through
# the whole path (control, enable: LIO's and the module's configure_device
# with its bio set and request pool) without reaching the N-th point, which
# the task reads back as a fail-nth left over.
failslab task 0
trace=
n=1
rounds=0
refused=0
while :; do
	[ $rounds -lt 200 ] || vm_fail "D: the path did not end before N=$n ($rounds rounds)"
	d=$VM_CFS/core/replipipe_1/fi$n
	mkdir -p $d
	(
		echo $n > /proc/thread-self/fail-nth
		st=0
		echo "udev_path=/dev/ram2" > $d/control || st=1
		echo 1 > $d/enable || st=2
		read -r left < /proc/thread-self/fail-nth
		echo "$st $left"
	) 2> /dev/null > /tmp/round
	read -r st left < /tmp/round
	en=$(cat $d/enable)
	[ "$st" != 0 ] || [ "$en" = 1 ] || vm_fail "D: N=$n: enable succeeded but enable reads '$en'"
	[ "$st" = 0 ] || refused=$((refused + 1))
	rmdir $d || vm_fail "D: N=$n: rmdir $d (enable=$en, st=$st)"
	trace="$trace $n:$st"
	rounds=$((rounds + 1))
	if [ "$left" -gt 0 ]; then
		# no failure was injected in this round: it must have worked
		[ "$st" = 0 ] || vm_fail "D: N=$n: refused (step $st) without an injected failure"
		break
	fi
	n=$((n + (n + 7) / 8))
done
failslab_off
rmdir $VM_CFS/core/replipipe_1 || vm_fail "rmdir replipipe_1"
vm_log "D: the path passes fewer than $n injection points; $rounds rounds, $refused refused (N:step$trace)"
[ $refused -ge 1 ] || vm_fail "D: no round was refused: fail-nth injected nothing"
# the module still makes backstores
vm_backstore replipipe replipipe_1 ok /dev/ram2 > /dev/null
vm_backstore_delete replipipe_1/ok

vm_log "== E: failslab (1-10%, rp-nlctl only) during set-pipe, $ROUNDS rounds"
vm_backstore replipipe replipipe_0 vol2 /dev/ram2 > /dev/null
base=$(cat $LIVE)
failslab task 0
ok=0
k=1
while [ $k -le $ROUNDS ]; do
	pct $k > $FSL/probability
	rc=0
	rp-nlctl set-pipe --make-it-fail --id fi$k --name "fi $k" --mode sync --policy degrade \
		--region-kib $REGION_KIB --pair replipipe_0/vol2=/dev/ram3 > /tmp/set.out 2>&1 || rc=$?
	case $rc in
	0) ok=$((ok + 1)) ;;
	1 | 69) ;;
	*) cat /tmp/set.out; vm_fail "E: round $k: rp-nlctl set-pipe exited $rc" ;;
	esac
	# without injection: a pipe the kernel has is whole
	failslab_off
	if rp-nlctl get fi$k > /tmp/get.out 2>&1; then
		grep -q "^pair .*source=replipipe_0/vol2 .*target=/dev/ram3" /tmp/get.out ||
			vm_fail "E: round $k (rc=$rc): pipe fi$k without its pair: $(cat /tmp/get.out)"
		rp-nlctl del-pipe fi$k || vm_fail "E: round $k: del-pipe"
	elif [ $rc -eq 0 ]; then
		vm_fail "E: round $k: set-pipe succeeded but the kernel has no pipe fi$k: $(cat /tmp/get.out)"
	fi
	[ "$(cat $LIVE)" = "$base" ] || vm_fail "E: round $k (rc=$rc): live_objects $(cat $LIVE), was $base"
	k=$((k + 1))
done
n=$(injected $FSL)
failslab_off
vm_log "E: $ok of $ROUNDS set-pipe calls succeeded; failslab injected $n failures"
[ "$n" -ge 1 ] || vm_fail "E: no allocation failure injected"
rp-nlctl set-pipe --id fi-final --mode sync --policy degrade --region-kib $REGION_KIB \
	--pair replipipe_0/vol2=/dev/ram3,clean || vm_fail "E: set-pipe without injection"
rp-nlctl del-pipe fi-final || vm_fail "E: del-pipe fi-final"
vm_backstore_delete replipipe_0/vol2

vm_log "== F: async pipe; fail_async_copy (5%) during writes"
[ -d $FAC ] || vm_fail "no $FAC: the module was built without CONFIG_FAULT_INJECTION_DEBUG_FS"
# The legs are identical since C: the async pair may start clean.
rp-nlctl del-pipe $PIPE || vm_fail "F: del-pipe of the sync pipe"
rp-nlctl set-pipe --id $PIPE --name fault-inject --mode async --policy degrade \
	--region-kib $REGION_KIB --pair $SRC=/dev/ram1,clean || vm_fail "F: async set-pipe refused"
echo 0 > $FAC/verbose
echo 1 > $FAC/interval
echo $TIMES > $FAC/times
echo 5 > $FAC/probability
out=$(rp-writer --dev "$lun" --log /tmp/pf --threads 4 --bytes 4M --min-size 4K --max-size 64K --seed 46) ||
	vm_fail "F: writes failed with async copies failing: $out"
n=$(injected $FAC)
echo 0 > $FAC/probability
echo "$out"
vm_log "fail_async_copy injected $n failures"
[ "$n" -ge 1 ] || vm_fail "F: no failure injected"
pair=$(vm_lag_drained $PIPE)
echo "$pair"
[ "$(vm_field "$pair" state)" = Syncing ] || vm_fail "F: pair not Syncing: $pair"
[ "$(vm_field "$pair" dirty)" -ge 1 ] || vm_fail "F: no dirty region for the writes left uncopied: $pair"
[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "F: target errors: $pair"
rp-verify --dev /dev/ram0 /tmp/pa.* /tmp/pb.* /tmp/pc.* /tmp/pf.* ||
	vm_fail "F: acknowledged writes not on the primary"
cmp_ranges
must_be_dirty /tmp/cmp.ranges || vm_fail "F: the legs differ outside the dirty regions"
timeout 300 rp-nlctl resync $PIPE $SRC --qd 8 --chunk-kib 256 > /tmp/resync 2>&1 ||
	vm_fail "F: resync: $(tail -n 3 /tmp/resync)"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "F: not InSync after the resync: $pair"
rp-verify --cmp /dev/ram0 /dev/ram1 | grep -q "^cmp: identical" || vm_fail "F: legs differ after the resync"

vm_log "== G: a resume whose probe read ends with BLK_STS_TIMEOUT (fail_probe_timeout)"
FPT=/sys/kernel/debug/replipipe/fail_probe_timeout
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "G: pause"
fault_once $FPT
t0=$(vm_now_ms)
rp-nlctl pair-state $PIPE $SRC resume > /tmp/out 2>&1 &&
	vm_fail "G: the resume succeeded although its probe read failed"
t1=$(vm_now_ms)
echo 0 > $FPT/probability
[ "$(cat $FPT/times)" = 0 ] || vm_fail "G: no failure injected"
vm_log "resume refused after $((t1 - t0)) ms: $(cat /tmp/out)"
[ $((t1 - t0)) -lt 4000 ] || vm_fail "G: the resume waited for the probe's bound, not for its failed bio"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = Paused ] || vm_fail "G: not Paused after the failed probe: $pair"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "G: the next resume"
pair=$(pair_line) || vm_fail "no pair line"
[ "$(vm_field "$pair" state)" = InSync ] || vm_fail "G: not InSync after the resume: $pair"

vm_log "== H: a backstore and its HBA removed while a PIPE_SET looks it up (delay_dev_lookup)"
# The lookup once held a reference to the backstore's configfs item across
# that window: its put freed the device after LIO had freed the HBA
# (WARNING in core_delete_hba, then KASAN's use-after-free).
DDL=/sys/kernel/debug/replipipe/delay_dev_lookup
vm_backstore replipipe replipipe_9 gone /dev/ram2 > /dev/null
fault_once $DDL
rp-nlctl set-pipe --id fault-gone --pair replipipe_9/gone=/dev/ram3 > /tmp/gone.out 2>&1 &
gone=$!
sleep 0.5
# Both rmdirs succeed only while the lookup has not pinned the backstore
# yet; after it, the pair's dependency would refuse the first (EBUSY).
vm_backstore_delete replipipe_9/gone
[ ! -d $VM_CFS/core/replipipe_9 ] || vm_fail "H: the HBA replipipe_9 is still there"
rc=0
wait $gone || rc=$?
echo 0 > $DDL/probability
[ "$(cat $DDL/times)" = 0 ] || vm_fail "H: the lookup found no backstore to delay (set-pipe too slow to start?)"
vm_log "H: set-pipe rc=$rc: $(cat /tmp/gone.out)"
[ $rc != 0 ] || vm_fail "H: a PIPE_SET of a removed backstore succeeded"
grep -q "source backstore is going away" /tmp/gone.out ||
	vm_fail "H: expected 'source backstore is going away': $(cat /tmp/gone.out)"
if rp-nlctl get fault-gone > /dev/null 2>&1; then
	vm_fail "H: the refused PIPE_SET left a pipe"
fi

vm_log "== I: an event that cannot be allocated (fail_event): its listeners get ENOBUFS"
FEV=/sys/kernel/debug/replipipe/fail_event
vm_events_listen /tmp/ev.out /tmp/ev.err
ev=$VM_EVENTS_PID
fault_once $FEV
rp-nlctl pair-state $PIPE $SRC pause || vm_fail "I: pause"
echo 0 > $FEV/probability
[ "$(cat $FEV/times)" = 0 ] || vm_fail "I: the pause's event was not failed"
rp-nlctl pair-state $PIPE $SRC resume || vm_fail "I: resume"
i=0
until grep -q "state=InSync" /tmp/ev.out; do
	kill -0 $ev 2> /dev/null ||
		vm_fail "I: the listener ended: $(cat /tmp/ev.err) / $(cat /tmp/ev.out)"
	[ $i -lt 100 ] || vm_fail "I: no event of the resume: $(cat /tmp/ev.out)"
	sleep 0.1; i=$((i + 1))
done
kill $ev
rc=0
wait $ev || rc=$?
[ $rc = 143 ] || vm_fail "I: the listener ended with $rc before it was stopped: $(cat /tmp/ev.err)"
cat /tmp/ev.out
[ "$(head -n 1 /tmp/ev.out)" = "event type=overrun" ] ||
	vm_fail "I: the lost event was not reported as an overrun first: $(cat /tmp/ev.err)"

vm_log "== J: a clear pass that sleeps in its pick (delay_clear_pick) holds up no write"
DCP=/sys/kernel/debug/replipipe/delay_clear_pick
vm_backstore replipipe replipipe_0 vol4 /dev/ram2 /dev/ram4 > /dev/null
rp-nlctl set-pipe --id fault-pick --pair replipipe_0/vol4=/dev/ram3,clean ||
	vm_fail "J: set-pipe {vol4->ram3 clean}"
lun4=$(vm_tcm_loop_export replipipe_0/vol4)
# a marked chunk, so that the pass has one to look at
dd if=/dev/urandom of=$lun4 bs=4k count=1 oflag=direct 2> /dev/null || vm_fail "J: first write"
fault_once $DCP
echo 1 > /sys/module/replipipe/parameters/intent_clear_sec
wait_fired $DCP 10 "J: no clear pass picked within 10 s"
t0=$(vm_now_ms)
dd if=/dev/urandom of=$lun4 bs=4k count=1 oflag=direct 2> /dev/null || vm_fail "J: the write during the pick"
t1=$(vm_now_ms)
echo 0 > $DCP/probability
vm_log "J: a write while the pick slept took $((t1 - t0)) ms"
[ $((t1 - t0)) -lt 2000 ] ||
	vm_fail "J: the write waited $((t1 - t0)) ms for the clear pass"

vm_log "== K: a write that finds no pair while a pass holds the removed pair keeps its mark"
# Passes (every second) clear chunk 0 of J's writes first.
i=0
until [ "$(vm_field "$(rp-nlctl get fault-pick | grep '^pair ')" intent_marked)" = 0 ]; do
	[ $i -lt 150 ] || vm_fail "K: J's chunk not cleared within 15 s: $(rp-nlctl get fault-pick)"
	sleep 0.1
	i=$((i + 1))
done
# The next pick sleeps 5 s with the pair taken, before it ages the marks;
# the removal then sleeps 8 s with the pair unpublished but not dead.
DPK=/sys/kernel/debug/replipipe/delay_pair_kill
fault_once $DPK
echo 1 > $DCP/times
echo 100 > $DCP/probability
wait_fired $DCP 10 "K: no clear pass picked within 10 s"
rp-nlctl del-pipe fault-pick > /tmp/del-k.out 2>&1 &
delk=$!
wait_fired $DPK 3 "K: the removal did not reach its pairs within 3 s"
# chunk 4 (16 MiB): no pair, so on the primary only
dd if=/dev/urandom of=$lun4 bs=4k count=1 seek=4096 oflag=direct 2> /dev/null ||
	vm_fail "K: the write with no pair"
wait $delk || vm_fail "K: del-pipe: $(cat /tmp/del-k.out)"
echo 0 > $DCP/probability
echo 0 > $DPK/probability
echo 5 > /sys/module/replipipe/parameters/intent_clear_sec
# The same pipe loads the record: chunk 4's 64 regions must be dirty.
i=0
until rp-nlctl set-pipe --id fault-pick --pair replipipe_0/vol4=/dev/ram3 2> /tmp/set-k.err; do
	[ $i -lt 100 ] || vm_fail "K: set-pipe again: $(cat /tmp/set-k.err)"
	sleep 0.1
	i=$((i + 1))
done
pair=$(rp-nlctl get fault-pick | grep '^pair ') || vm_fail "K: no pair line"
vm_log "K: $pair"
[ "$(vm_field "$pair" intent)" = loaded ] && [ "$(vm_field "$pair" dirty)" = 64 ] ||
	vm_fail "K: the write with no pair lost its mark (want intent=loaded dirty=64): $pair"
vm_tcm_loop_unexport replipipe_0/vol4
rp-nlctl del-pipe fault-pick || vm_fail "K: del-pipe"
vm_backstore_delete replipipe_0/vol4

vm_log "== teardown"
vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
# Every open of the legs ended: a probe's own open of the target too (G:
# the module freed a probe whose bio failed with -ETIMEDOUT as if the bio
# still had it, and the open and the probe leaked).
rmmod brd || vm_fail "the ram disks are still open after the module went"
vm_log "debug-fault-inject done"
