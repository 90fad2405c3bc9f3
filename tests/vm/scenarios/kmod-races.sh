#!/bin/sh
# Races and error paths of the kernel module found in review, one step per
# bug; each step sets up its own pipe, backstore(s) and device-mapper
# targets over brd ram disks, and cleans them up when it passes.
#
#   bug 1  PAIR_SET resume vs PIPE_DEL: a resume probes the target of a
#          Paused pair (a read, slow on dm-delay) holding a pair reference;
#          del-pipe meanwhile holds rp_config_lock waiting for the pair's
#          references. Both must finish once the probe read is released.
#   bug 2  claim time-out vs PIPE_DEL: a claim whose in-flight write does not
#          drain within claim_timeout_sec ends itself while still holding a
#          pair reference; the pipe has two pairs and del-pipe holds
#          rp_config_lock while it waits for the first pair's slow write,
#          so the claim (on the second pair) times out under it. Both must
#          finish.
#   bug 3  async -> sync switch by PIPE_SET (same pair kept): W0 and W1 to
#          one range in async mode (W1's target leg queued behind W0's on a
#          slow target), the pipe switched to sync, W2 to the range; once
#          everything settles the range is identical on both legs or its
#          region is dirty.
#   bug 4  a write that fails on the primary (dm error table) but reaches
#          the target must leave its region dirty.
#   bug 5  the write-intent record clears a chunk only after both legs
#          flushed its write: legs with a volatile cache (virtio disks),
#          the target's flushes held 15 s by dm-delay; the chunk a write
#          marked stays marked while the target's flush is held, and is
#          cleared once it is through.
#   bug 6  a resync planned for a pair that a PIPE_SET replaced since (same
#          pipe and source, another target) must not claim the new pair:
#          a claim naming the old pair's serial fails with ESTALE, one
#          naming the new serial is granted.
#   bug 7  a pair that takes its bitmap from the source's write-intent
#          record must also get what writes with no pair marked on it before
#          the pair was published: a PIPE_SET of two pairs, the second
#          binding a record on a slow device, and a write to the first
#          source's LUN meanwhile; the first pair must have that region
#          dirty once the PIPE_SET is done.
#   bug 8  the NETLINK_URELEASE notifier took rp_config_lock for every
#          generic netlink socket that closed (nl80211, ethtool, ...) while
#          any claim existed: with a claim held on one pipe and a set-pipe
#          of another writing its source's write-intent record (slow) under
#          rp_config_lock (PIPE_DEL and a PIPE_SET that removes a pair
#          no longer wait for its writes under it), a socket
#          that owns no claim (`rp-nlctl family`) must close long before
#          set-pipe ends; the claim's own socket, closed, still drops its
#          claim.
#   bug 9  a RESYNC_CLAIM whose reply cannot be delivered (the socket's
#          receive buffer full, e.g. of events) left the claim alive with an id
#          nobody knows, its regions' writes held for claim_timeout_sec:
#          the claim must be gone while its socket is still open.
#   bug 10 WRITE SAME on a write-through LUN (primary without a volatile
#          cache, target with one) completed while its data could still sit
#          in the target's cache: normal writes get FUA there. The target
#          (dm-delay over a virtio disk) holds flushes 8 s: a WRITE SAME
#          (blkdiscard -z through the LUN) must send one and wait for it,
#          on a workqueue: a read on either CPU meanwhile ends at once.
#   bug 11 a claim took the first dirty regions whatever was in flight to
#          them, then held every new write to them while it waited for
#          those to drain: behind an asynchronous pair's copies to a slow
#          target, up to claim_timeout_sec (30 s, a SCSI command's
#          time-out) per claim, and a claim that timed out failed the job,
#          whose next one took the same regions. With a write in flight to
#          region 0 (its target leg held), a claim of all-dirty regions
#          must take regions after it, at once.
#
# The steps run in the order 3 4 5 6 7 8 9 10 11 1 2: the data steps cannot wedge the module,
# the deadlock steps can. A deadlocked del-pipe holds rp_config_lock in D
# state for good (`timeout` cannot kill it), so those steps run their
# commands in the background and poll them against a deadline (20 s after
# the slow I/O is released); past it they print the stuck commands' kernel
# stacks and fail, and the steps after them are reported as not run. A step
# that fails does not stop the others; the scenario fails if any step failed
# or did not run. A failure message starting "setup:" means the step could
# not set up its race (e.g. a guest too slow for the delays below), not that
# the module is wrong.
# vm-timeout: 400
# vm-cost: 115
# vm-debug-cost: 200
# vm-mem: 1024
# vm-bins: dmsetup blkdiscard
# vm-disks: rpflushp:16 rpflusht:16

BUGS="3 4 5 6 7 8 9 10 11 1 2"
LIVE=/sys/module/replipipe/parameters/live_objects
CLAIM_TIMEOUT=/sys/module/replipipe/parameters/claim_timeout_sec
WEDGED=/tmp/races.wedged
# Delays: long enough for the debug kernel (KASAN, lockdep) under TCG.
PROBE_MS=4000		# bug 1: read delay of the target (the probe's read)
CLAIM_WRITE_MS=7000	# bug 2: write delay of both targets
CLAIM_TIMEOUT_S=3	# bug 2: claim_timeout_sec during the step
IDLE_WRITE_MS=6000	# bug 11: write delay of the target
ASYNC_MS=5000		# bug 3: write delay of the target
FLUSH_MS=15000		# bug 5: flush delay of the target
BIND_MS=2000		# bug 7: write delay of the second pair's record
UREL_MS=5000		# bug 8: write delay of the record set-pipe binds
# bug 10: flush delay of the target. The reads start once the flush is
# seen held, and must end well before it is released: on the debug
# kernel with two more VMs, seeing it took 2 s and the two reads 2 s.
WS_FLUSH_MS=8000
export DM_DISABLE_UDEV=1

# pair_line PIPE SRC: the pair's line of `rp-nlctl get`
pair_line() { rp-nlctl get "$1" | grep "^pair .* source=$2 " | head -n 1; }
# now10: uptime in tenths of a second
now10() { awk '{ printf "%d\n", $1 * 10 }' /proc/uptime; }
# delayed NAME CLASS: bios dm-delay device NAME holds now (CLASS reads|writes)
delayed() {
	set -- "$2" $(dmsetup status "$1")
	case "$1" in
	reads) echo "$5" ;;
	writes) echo "$6" ;;
	esac
}
# delayed_flushes NAME: flushes dm-delay device NAME (9 arguments) holds now
delayed_flushes() {
	set -- $(dmsetup status "$1")
	echo "$6"
}
# wait_delayed NAME CLASS N SECONDS: until NAME holds >= N bios of CLASS
wait_delayed() {
	local i=0
	until [ "$(delayed "$1" "$2")" -ge "$3" ]; do
		[ $i -lt $(($4 * 10)) ] || return 1
		sleep 0.1
		i=$((i + 1))
	done
}
# wait_task_state PROG STATE TENTHS: polls the one process PROG until its
# state is STATE, for at most TENTHS tenths of a second (on a busy debug
# kernel a process started in the background may take seconds to exec);
# prints the last state seen, "none" while there was no such process.
wait_task_state() {
	local i=0 state=none pid
	while [ $i -le "$3" ]; do
		if pid=$(pidof "$1"); then
			[ "$pid" = "${pid% *}" ] || vm_fail "more than one $1: $pid"
			state=$(cut -d' ' -f3 /proc/$pid/stat 2> /dev/null) || state=none
			[ "$state" != "$2" ] || break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	echo "$state"
}
# last_region PIPE: the index of the last region of the pipe's pairs (on
# SECT-sector legs)
last_region() {
	local kib
	kib=$(rp-nlctl get "$1" | sed -n 's/^pipe .* region_kib=\([0-9]*\).*/\1/p')
	[ -n "$kib" ] || vm_fail "no region_kib for pipe $1"
	echo $(((SECT * 512 - 1) / (kib * 1024)))
}
# dm_remove NAME
dm_remove() { dmsetup --noudevsync remove "$1" || vm_fail "dmsetup remove $1"; }
# region_dirty PIPE SRC REGION: true if the pair's bitmap has REGION dirty
region_dirty() {
	rp-nlctl bitmap "$1" "$2" | sed -n 's/^dirty //p' |
		awk -F- -v r="$3" '{ l = NF > 1 ? $2 : $1 } $1 <= r && r <= l { f = 1 } END { exit !f }'
}

# bg NAME CMD...: CMD in the background, output to /tmp/bg.NAME.out; its exit
# status and the uptime (tenths) it ended at go to /tmp/bg.NAME.rc. Polled,
# not waited for: a command stuck in the kernel (D state) cannot be killed.
bg() {
	local name=$1
	shift
	rm -f /tmp/bg.$name.rc /tmp/bg.$name.out
	(
		rc=0
		"$@" > /tmp/bg.$name.out 2>&1 || rc=$?
		echo "$rc $(now10)" > /tmp/bg.$name.rc
	) &
}
bg_done() { [ -s /tmp/bg.$1.rc ]; }
bg_rc() { cut -d' ' -f1 /tmp/bg.$1.rc; }
bg_end() { cut -d' ' -f2 /tmp/bg.$1.rc; }
bg_out() { tr '\n' ' ' < /tmp/bg.$1.out 2> /dev/null; }
# bg_wait NAME DEADLINE10: until the job ended (0) or uptime reaches
# DEADLINE10 tenths (1)
bg_wait() {
	while ! bg_done "$1"; do
		[ "$(now10)" -lt "$2" ] || return 1
		sleep 0.1
	done
}
# ended_or_stuck DEADLINE10 T0 STEP SINCE CAUSE NAME:JOB...: every background
# JOB ends before uptime DEADLINE10, or the step fails as the deadlock CAUSE:
# the stuck commands' kernel stacks, then how long after SINCE (at T0) which
# of them (NAME) still run.
ended_or_stuck() {
	local deadline=$1 t0=$2 step=$3 since=$4 cause=$5 nj states= ok=1
	shift 5
	for nj in "$@"; do
		bg_wait "${nj#*:}" "$deadline" || ok=0
	done
	[ $ok = 0 ] || return 0
	for nj in "$@"; do
		states="$states${states:+, }${nj%%:*} $(bg_done "${nj#*:}" && echo ended || echo 'still running')"
	done
	stuck_report "$step left $cause"
	vm_fail "$step: $((($(now10) - t0) / 10)) s after $since: $states: $cause"
}
# stuck_report MSG: the module is deadlocked: the kernel stacks of every
# rp-nlctl, then the later steps are skipped
stuck_report() {
	local p
	echo "$1" > $WEDGED
	for p in /proc/[0-9]*; do
		[ "$(cat "$p/comm" 2> /dev/null)" = rp-nlctl ] || continue
		vm_log "stuck rp-nlctl pid ${p#/proc/} ($(tr '\0' ' ' < "$p/cmdline")), state $(sed -n 's/^State:[[:space:]]*//p' "$p/status"), kernel stack:"
		sed 's/^/    /' "$p/stack" >&2 2> /dev/null || true
	done
}

# ---- bug 1: PAIR_SET resume (slow target probe) vs del-pipe
step_bug1() {
	local pipe=races-pairset src=replipipe_0/s1 tgt t0 state k
	vm_backstore replipipe replipipe_0 s1 /dev/ram0 > /dev/null
	tgt=$(vm_dm_create rp1tgt "0 $SECT delay /dev/ram1 0 0")
	rp-nlctl set-pipe --id $pipe --mode sync --pair $src=$tgt,clean ||
		vm_fail "bug 1: set-pipe refused"
	rp-nlctl pair-state $pipe $src pause || vm_fail "bug 1: pause refused"
	state=$(vm_field "$(pair_line $pipe $src)" state)
	[ "$state" = Paused ] || vm_fail "bug 1: setup: pair $state, not Paused"
	vm_dm_load rp1tgt "0 $SECT delay /dev/ram1 0 $PROBE_MS /dev/ram1 0 0"
	vm_log "pair Paused, target $tgt reads delayed ${PROBE_MS} ms; resume in the background"
	bg b1resume rp-nlctl pair-state $pipe $src resume --nl-timeout 120
	wait_delayed rp1tgt reads 1 10 ||
		vm_fail "bug 1: setup: the resume's probe read did not reach the target within 10 s ($(bg_out b1resume))"
	! bg_done b1resume || vm_fail "bug 1: setup: the resume ended before its probe read was released: $(bg_out b1resume)"
	vm_log "the resume's probe read is held by dm-delay; del-pipe now"
	t0=$(now10)
	bg b1del rp-nlctl del-pipe $pipe --nl-timeout 120
	ended_or_stuck $((t0 + PROBE_MS / 100 + 200)) $t0 "bug 1" \
		"del-pipe started (the probe read was released after $((PROBE_MS / 1000)) s)" \
		"PAIR_SET's probe and PIPE_DEL deadlock" del-pipe:b1del resume:b1resume
	vm_log "del-pipe ended rc=$(bg_rc b1del) after $((($(bg_end b1del) - t0) * 100)) ms, resume rc=$(bg_rc b1resume) ($(bg_out b1resume))"
	[ "$(bg_rc b1del)" = 0 ] || vm_fail "bug 1: del-pipe failed: $(bg_out b1del)"
	k=$(rp-nlctl get) || vm_fail "bug 1: rp-nlctl get failed after del-pipe"
	[ -z "$(echo "$k" | grep "^pipe id=$pipe ")" ] || vm_fail "bug 1: pipe still listed after del-pipe"
	vm_backstore_delete $src
	dm_remove rp1tgt
}

# ---- bug 2: claim time-out vs del-pipe (two pairs; the claim on the second)
step_bug2() {
	local pipe=races-claim a=replipipe_0/s2a b=replipipe_0/s2b ta tb luna lunb
	local t0 t1 claim_state last k
	vm_backstore replipipe replipipe_0 s2a /dev/ram2 > /dev/null
	vm_backstore replipipe replipipe_0 s2b /dev/ram4 > /dev/null
	ta=$(vm_dm_create rp2a "0 $SECT delay /dev/ram3 0 0")
	tb=$(vm_dm_create rp2b "0 $SECT delay /dev/ram5 0 0")
	# pair b without ,clean: every region dirty; the claim names the last
	# one, the only one at or after its hint, so it takes it although a
	# write is in flight there (bug 11: an idle region would come first)
	rp-nlctl set-pipe --id $pipe --mode sync --pair $a=$ta,clean --pair $b=$tb ||
		vm_fail "bug 2: set-pipe refused"
	rp-nlctl get $pipe
	[ "$(rp-nlctl get $pipe | grep '^pair ' | head -n 1 | grep -c " source=$a ")" = 1 ] ||
		vm_fail "bug 2: setup: pair $a is not the pipe's first pair"
	luna=$(vm_tcm_loop_export $a)
	lunb=$(vm_tcm_loop_export $b)
	echo $CLAIM_TIMEOUT_S > $CLAIM_TIMEOUT || vm_fail "bug 2: cannot set claim_timeout_sec"
	vm_dm_load rp2a "0 $SECT delay /dev/ram3 0 0 /dev/ram3 0 $CLAIM_WRITE_MS"
	vm_dm_load rp2b "0 $SECT delay /dev/ram5 0 0 /dev/ram5 0 $CLAIM_WRITE_MS"
	last=$(last_region $pipe)
	vm_log "targets' writes delayed ${CLAIM_WRITE_MS} ms; one write in flight per pair ($a: region 0, $b: region $last)"
	bg b2wa dd if=/dev/urandom of=$luna bs=4k count=1 oflag=direct
	bg b2wb dd if=/dev/urandom of=$lunb bs=4k count=1 seek=$((SECT / 8 - 1)) oflag=direct
	wait_delayed rp2a writes 1 10 && wait_delayed rp2b writes 1 10 ||
		vm_fail "bug 2: setup: the writes' target legs did not reach dm-delay within 10 s"
	vm_log "claim_timeout_sec=$CLAIM_TIMEOUT_S; claim of region $last of $b (waits for its write), del-pipe 0.5 s later"
	t0=$(now10)
	bg b2claim rp-nlctl claim $pipe $b --hint $last --max 1 --nl-timeout 120
	# It waits TASK_IDLE ("I"), not uninterruptibly ("D"): with
	# claim_timeout_sec past two minutes the hung-task watchdog would
	# report it (and panic with hung_task_panic=1). Polled: a fixed 0.5 s
	# found no process yet once on a busy debug kernel.
	claim_state=$(wait_task_state rp-nlctl I 20)
	[ "$claim_state" = I ] ||
		vm_fail "bug 2: the claim waits for the drain in state '$claim_state', not I (TASK_IDLE)"
	# t1 first: a claim still running at the check was running at t1.
	t1=$(now10)
	! bg_done b2claim || vm_fail "bug 2: setup: the claim ended before del-pipe: $(bg_out b2claim)"
	bg b2del rp-nlctl del-pipe $pipe --nl-timeout 120
	ended_or_stuck $((t0 + CLAIM_WRITE_MS / 100 + 200)) $t0 "bug 2" \
		"the claim started (its time-out ${CLAIM_TIMEOUT_S} s, the writes released after $((CLAIM_WRITE_MS / 1000)) s)" \
		"the claim's time-out path and PIPE_DEL deadlock" del-pipe:b2del claim:b2claim
	vm_log "claim ended rc=$(bg_rc b2claim) at +$((($(bg_end b2claim) - t0) * 100)) ms ($(bg_out b2claim)); del-pipe (started at +$(((t1 - t0) * 100)) ms) ended rc=$(bg_rc b2del) at +$((($(bg_end b2del) - t0) * 100)) ms"
	# The claim must still run when del-pipe starts. In tenths: the
	# PIPE_DEL drops the draining claim, which can then end in the tenth
	# del-pipe started in (with statically linked tools, it did).
	[ "$(bg_end b2claim)" -ge "$t1" ] ||
		vm_fail "bug 2: setup: the claim ended before del-pipe started; the race was not exercised"
	[ "$(bg_rc b2del)" = 0 ] || vm_fail "bug 2: del-pipe failed: $(bg_out b2del)"
	k=$(rp-nlctl get) || vm_fail "bug 2: rp-nlctl get failed after del-pipe"
	[ -z "$(echo "$k" | grep "^pipe id=$pipe ")" ] || vm_fail "bug 2: pipe still listed after del-pipe"
	bg_wait b2wa $(($(now10) + 200)) && bg_wait b2wb $(($(now10) + 200)) ||
		vm_fail "bug 2: the writes did not end"
	[ "$(bg_rc b2wa)" = 0 ] && [ "$(bg_rc b2wb)" = 0 ] ||
		vm_fail "bug 2: a write failed: $(bg_out b2wa) / $(bg_out b2wb)"
	echo 30 > $CLAIM_TIMEOUT
	vm_tcm_loop_unexport $a
	vm_tcm_loop_unexport $b
	vm_backstore_delete $a
	vm_backstore_delete $b
	dm_remove rp2a
	dm_remove rp2b
}

# ---- bug 3: async -> sync switch with async target legs still queued
step_bug3() {
	local pipe=races-mode src=replipipe_0/s3 tgt lun w n pair lag have= i=0
	vm_backstore replipipe replipipe_0 s3 /dev/ram6 > /dev/null
	tgt=$(vm_dm_create rp3tgt "0 $SECT delay /dev/ram7 0 0")
	rp-nlctl set-pipe --id $pipe --mode async --region-kib 64 --pair $src=$tgt,clean ||
		vm_fail "bug 3: set-pipe refused"
	lun=$(vm_tcm_loop_export $src)
	for w in W0 W1 W2; do
		dd if=/dev/urandom of=/tmp/b3.$w bs=64k count=1 2> /dev/null
	done
	vm_dm_load rp3tgt "0 $SECT delay /dev/ram7 0 0 /dev/ram7 0 $ASYNC_MS"
	vm_log "async pipe, target writes delayed ${ASYNC_MS} ms; W0 then W1 to region 0 (64 KiB at 0)"
	dd if=/tmp/b3.W0 of=$lun bs=64k count=1 oflag=direct 2> /dev/null || vm_fail "bug 3: W0 failed"
	wait_delayed rp3tgt writes 1 10 || vm_fail "bug 3: setup: W0's async leg did not reach dm-delay"
	dd if=/tmp/b3.W1 of=$lun bs=64k count=1 oflag=direct 2> /dev/null || vm_fail "bug 3: W1 failed"
	# As few commands as possible until W2: on a module that lets W2's
	# target leg overtake, it must reach the target before W0's completes.
	rp-nlctl set-pipe --id $pipe --mode sync --region-kib 64 --pair $src=$tgt ||
		vm_fail "bug 3: set-pipe to sync refused"
	bg b3w2 dd if=/tmp/b3.W2 of=$lun bs=64k count=1 oflag=direct
	# Either W2's target leg joins W0's async leg at the target while W0's
	# and W1's are still pending (lag W0+W1 = 131072): then it lands before
	# W1's, which is issued only once W0's completes. Or the module keeps W2
	# off the target (primary only and dirty, or after the async legs), and
	# W2 ends or W0's leg completes first.
	while :; do
		n=$(delayed rp3tgt writes)
		pair=$(pair_line $pipe $src)
		lag=$(vm_field "$pair" lag)
		if [ "$n" -ge 2 ] && [ "$lag" = 131072 ]; then
			vm_log "W2 issued after the switch to sync: its target leg is at the target with W0's async leg, W1's queued behind W0's ($n writes held; $pair)"
			break
		fi
		if [ "$lag" != 131072 ] || bg_done b3w2; then
			vm_log "W2 issued after the switch to sync: its target leg did not join W0's async leg at the target (W2 $(bg_done b3w2 && echo ended || echo running), $n writes held; $pair)"
			break
		fi
		[ $i -lt 100 ] || vm_fail "bug 3: setup: W2 neither reached the target nor ended within 10 s ($pair)"
		sleep 0.1
		i=$((i + 1))
	done
	rp-nlctl get $pipe | grep -q "^pipe id=$pipe .*mode=sync " || vm_fail "bug 3: the pipe is not sync"
	bg_wait b3w2 $(($(now10) + ASYNC_MS * 3 / 100 + 200)) || vm_fail "bug 3: W2 did not end"
	[ "$(bg_rc b3w2)" = 0 ] || vm_fail "bug 3: W2 failed: $(bg_out b3w2)"
	i=0
	while :; do
		pair=$(pair_line $pipe $src)
		[ "$(vm_field "$pair" lag)" = 0 ] && [ "$(delayed rp3tgt writes)" = 0 ] && break
		[ $i -lt $((ASYNC_MS / 100 * 3 + 200)) ] || vm_fail "bug 3: lag did not drain: $pair"
		sleep 0.1
		i=$((i + 1))
	done
	vm_log "settled: $pair"
	vm_read /dev/ram6 0 1 /tmp/b3.pri 65536
	vm_read /dev/ram7 0 1 /tmp/b3.tgt 65536
	cmp -s /tmp/b3.pri /tmp/b3.W2 || vm_fail "bug 3: the primary does not hold W2, the last write"
	for w in W0 W1 W2; do
		cmp -s /tmp/b3.tgt /tmp/b3.$w && have=$w
	done
	vm_log "region 0: primary holds W2, target holds ${have:-none of W0/W1/W2}"
	if cmp -s /tmp/b3.pri /tmp/b3.tgt; then
		vm_log "region 0 identical on both legs"
	elif region_dirty $pipe $src 0; then
		vm_log "region 0 differs and is dirty (the resync copies it)"
	else
		vm_fail "bug 3: region 0 differs between the legs (target holds ${have:-none of W0/W1/W2}, primary W2) and is clean ($pair): the async->sync switch let W2 overtake W1's queued async leg"
	fi
	rp-nlctl del-pipe $pipe || vm_fail "bug 3: del-pipe"
	vm_tcm_loop_unexport $src
	vm_backstore_delete $src
	dm_remove rp3tgt
}

# ---- bug 4: a write that fails on the primary only
step_bug4() {
	local pipe=races-primary src=replipipe_0/s4 pri lun pair rc=0
	pri=$(vm_dm_create rp4pri "0 $SECT linear /dev/ram8 0")
	vm_backstore replipipe replipipe_0 s4 $pri > /dev/null
	rp-nlctl set-pipe --id $pipe --mode sync --region-kib 64 --pair $src=/dev/ram9,clean ||
		vm_fail "bug 4: set-pipe refused"
	lun=$(vm_tcm_loop_export $src)
	pair=$(pair_line $pipe $src)
	[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" dirty)" = 0 ] ||
		vm_fail "bug 4: setup: pair not InSync and clean: $pair"
	dd if=/dev/urandom of=/tmp/b4.w bs=64k count=1 2> /dev/null
	vm_dm_load rp4pri "0 $SECT error"
	vm_log "primary $pri (over /dev/ram8) fails every I/O; a 64 KiB write to region 16 (1 MiB)"
	dd if=/tmp/b4.w of=$lun bs=64k count=1 seek=16 oflag=direct 2> /tmp/b4.err || rc=$?
	vm_dm_load rp4pri "0 $SECT linear /dev/ram8 0"
	[ $rc -ne 0 ] || vm_fail "bug 4: setup: the write succeeded although the primary failed"
	vm_log "the write failed as it should: $(tr '\n' ' ' < /tmp/b4.err)"
	vm_read /dev/ram9 16 1 /tmp/b4.tgt 65536
	vm_read /dev/ram8 16 1 /tmp/b4.pri 65536
	cmp -s /tmp/b4.tgt /tmp/b4.w && vm_log "the target holds the failed write's data"
	cmp -s /tmp/b4.pri /tmp/b4.w && vm_log "the primary holds the failed write's data"
	cmp -s /tmp/b4.pri /tmp/b4.tgt && vm_log "region 16 identical on both legs"
	pair=$(pair_line $pipe $src)
	vm_log "$pair"
	[ "$(vm_field "$pair" dirty)" -ge 1 ] && region_dirty $pipe $src 16 ||
		vm_fail "bug 4: a write that failed on the primary left region 16 clean although its target leg ran ($pair): the legs may differ there"
	rp-nlctl del-pipe $pipe || vm_fail "bug 4: del-pipe"
	vm_tcm_loop_unexport $src
	vm_backstore_delete $src
	dm_remove rp4pri
}

# ---- bug 5: the record cleared a chunk before the legs flushed its write
step_bug5() {
	local pipe=races-flush src=replipipe_0/s5 pri tdisk tgt lun t0 pair i=0
	pri=$(vm_disk rpflushp)
	tdisk=$(vm_disk rpflusht)
	[ "$(cat /sys/block/${pri#/dev/}/queue/write_cache)" = "write back" ] ||
		vm_fail "bug 5: setup: $pri has no volatile write cache"
	tgt=$(vm_dm_create rp5tgt "0 $(blockdev --getsz $tdisk) delay $tdisk 0 0 $tdisk 0 0 $tdisk 0 $FLUSH_MS")
	vm_backstore replipipe replipipe_0 s5 $pri /dev/ram10 > /dev/null
	rp-nlctl set-pipe --id $pipe --mode sync --pair $src=$tgt,clean ||
		vm_fail "bug 5: set-pipe refused"
	lun=$(vm_tcm_loop_export $src)
	pair=$(pair_line $pipe $src)
	[ "$(vm_field "$pair" state)" = InSync ] && [ "$(vm_field "$pair" intent_marked)" = 0 ] ||
		vm_fail "bug 5: setup: pair not InSync with nothing marked: $pair"
	dd if=/dev/urandom of=$lun bs=4k count=1 seek=256 oflag=direct 2> /dev/null ||
		vm_fail "bug 5: the write through $lun failed"
	t0=$(now10)
	pair=$(pair_line $pipe $src)
	[ "$(vm_field "$pair" intent_marked)" -ge 1 ] ||
		vm_fail "bug 5: setup: the write marked nothing: $pair"
	vm_log "4 KiB written at 1 MiB, its chunk marked; target $tgt holds flushes ${FLUSH_MS} ms"
	# Two clear passes (intent_clear_sec 5) clear a quiet chunk within
	# 10 s; the target's flush is held until t0 + 15 s at the earliest.
	while [ "$(now10)" -lt $((t0 + 130)) ]; do sleep 0.5; done
	pair=$(pair_line $pipe $src)
	vm_log "13 s after the write: $pair; target holds $(delayed_flushes rp5tgt) flush(es)"
	[ "$(vm_field "$pair" intent_marked)" -ge 1 ] ||
		vm_fail "bug 5: the record cleared the chunk 13 s after the write while the target had not flushed it ($pair)"
	until [ "$(vm_field "$(pair_line $pipe $src)" intent_marked)" = 0 ]; do
		[ $i -lt 400 ] || vm_fail "bug 5: the chunk stayed marked 40 s after the flush could pass: $(pair_line $pipe $src)"
		sleep 0.1
		i=$((i + 1))
	done
	vm_log "cleared $((($(now10) - t0) / 10)) s after the write, after the target's flush"
	# del-pipe flushes both legs too: not held any more.
	vm_dm_load rp5tgt "0 $(blockdev --getsz $tdisk) delay $tdisk 0 0"
	rp-nlctl del-pipe $pipe || vm_fail "bug 5: del-pipe"
	vm_tcm_loop_unexport $src
	vm_backstore_delete $src
	dm_remove rp5tgt
}

# ---- bug 6: a claim for a replaced pair
step_bug6() {
	local pipe=races-serial src=replipipe_0/s6 old new out
	vm_backstore replipipe replipipe_0 s6 /dev/ram11 > /dev/null
	rp-nlctl set-pipe --id $pipe --mode sync --pair $src=/dev/ram12 ||
		vm_fail "bug 6: set-pipe refused"
	old=$(vm_field "$(pair_line $pipe $src)" serial)
	rp-nlctl set-pipe --id $pipe --mode sync --pair $src=/dev/ram13 ||
		vm_fail "bug 6: set-pipe to the new target refused"
	new=$(vm_field "$(pair_line $pipe $src)" serial)
	vm_log "pair serial $old, after the target changed $new"
	[ -n "$old" ] && [ -n "$new" ] && [ "$old" != "$new" ] ||
		vm_fail "bug 6: the replaced pair kept its serial ($old, $new)"
	if out=$(rp-nlctl claim $pipe $src --max 1 --serial "$old" --failed 2>&1); then
		vm_fail "bug 6: a claim for the replaced pair (serial $old) was granted on the new one: $out"
	fi
	echo "$out" | grep -q ESTALE ||
		vm_fail "bug 6: the claim for the replaced pair failed, but not with ESTALE: $out"
	vm_log "claim with serial $old: $out"
	out=$(rp-nlctl claim $pipe $src --max 1 --serial "$new" --failed) ||
		vm_fail "bug 6: a claim with the current serial $new was refused"
	vm_log "claim with serial $new: $out"
	rp-nlctl del-pipe $pipe || vm_fail "bug 6: del-pipe"
	vm_backstore_delete $src
}

# ---- bug 8: a socket that owns no claim closes without rp_config_lock
claims_now() { sed -n 's/.*claims=\([0-9]*\).*/\1/p' $LIVE; }
step_bug8() {
	local pa=races-urel pb=races-urelc a=replipipe_0/s8a b=replipipe_0/s8b
	local rec t0 t1 i=0
	rec=$(vm_dm_create rp8rec "0 $SECT linear /dev/ram21 0")
	vm_backstore replipipe replipipe_0 s8a /dev/ram20 $rec > /dev/null
	vm_backstore replipipe replipipe_0 s8b /dev/ram22 > /dev/null
	# pair b without ,clean: every region dirty, so a claim gets region 0
	rp-nlctl set-pipe --id $pb --mode sync --pair $b=/dev/ram23 ||
		vm_fail "bug 8: set-pipe $pb refused"
	t0=$(now10)
	bg b8claim rp-nlctl claim $pb $b --max 1 --hold 20
	until [ "$(claims_now)" = 1 ]; do
		[ $i -lt 100 ] || vm_fail "bug 8: setup: no claim after 10 s ($(bg_out b8claim))"
		sleep 0.1
		i=$((i + 1))
	done
	vm_dm_load rp8rec "0 $SECT delay /dev/ram21 0 0 /dev/ram21 0 $UREL_MS"
	# A PIPE_SET whose pair binds its source's record anew writes the
	# record, a write after the other, under rp_config_lock
	# (rp_intent_commit()).
	bg b8set rp-nlctl set-pipe --id $pa --mode sync --pair $a=/dev/ram27,clean \
		--nl-timeout 120
	wait_delayed rp8rec writes 1 10 ||
		vm_fail "bug 8: setup: the record's binding did not reach dm-delay within 10 s ($(bg_out b8set))"
	sleep 1
	! bg_done b8set || vm_fail "bug 8: setup: set-pipe ended before the record's writes were released: $(bg_out b8set)"
	[ "$(claims_now)" = 1 ] || vm_fail "bug 8: setup: the claim ended early ($(cat $LIVE))"
	vm_log "a claim on $pb, set-pipe $pa writes its record (${UREL_MS} ms a write) under rp_config_lock; an unrelated genl socket opens and closes"
	t1=$(now10)
	bg b8fam rp-nlctl family
	# (not wedged: it would end with set-pipe, once the write is released)
	bg_wait b8fam $((t1 + 80)) ||
		vm_fail "bug 8: closing a generic netlink socket that owns no claim waited more than 8 s (for rp_config_lock, held by set-pipe)"
	vm_log "family ended rc=$(bg_rc b8fam) after $((($(bg_end b8fam) - t1) * 100)) ms"
	[ "$(bg_rc b8fam)" = 0 ] || vm_fail "bug 8: rp-nlctl family failed: $(bg_out b8fam)"
	ended_or_stuck $((t1 + 4 * UREL_MS / 100 + 200)) $t1 "bug 8" \
		"the family command" "set-pipe does not end" set-pipe:b8set
	[ "$(bg_rc b8set)" = 0 ] || vm_fail "bug 8: set-pipe failed: $(bg_out b8set)"
	vm_log "set-pipe ended after $((($(bg_end b8set) - t1) * 100)) ms"
	# a close that waited for the lock would end with set-pipe
	[ "$(bg_end b8fam)" -le $(($(bg_end b8set) - 30)) ] ||
		vm_fail "bug 8: the unrelated socket's close ended only with set-pipe"
	# the claim's socket closes (--hold ends): its claim is dropped
	bg_wait b8claim $((t0 + 300)) || vm_fail "bug 8: the claim command did not end"
	vm_log "claim: $(bg_out b8claim)"
	i=0
	until [ "$(claims_now)" = 0 ]; do
		[ $i -lt 50 ] || vm_fail "bug 8: the claim outlived its socket ($(cat $LIVE))"
		sleep 0.1
		i=$((i + 1))
	done
	vm_dm_load rp8rec "0 $SECT linear /dev/ram21 0"
	rp-nlctl del-pipe $pa || vm_fail "bug 8: del-pipe $pa"
	rp-nlctl del-pipe $pb || vm_fail "bug 8: del-pipe $pb"
	vm_backstore_delete $a
	vm_backstore_delete $b
	dm_remove rp8rec
}

# ---- bug 9: a claim whose reply is not delivered is dropped
step_bug9() {
	local pipe=races-noreply b=replipipe_0/s9 i=0 t0
	vm_backstore replipipe replipipe_0 s9 /dev/ram24 > /dev/null
	# without ,clean: every region dirty, so a claim gets region 0
	rp-nlctl set-pipe --id $pipe --mode sync --pair $b=/dev/ram25 ||
		vm_fail "bug 9: set-pipe refused"
	t0=$(now10)
	# --hold: long enough for a guest starved of CPU for seconds (the
	# debug tier with two more VMs on two cores once took that long
	# between the claim and the check below)
	bg b9claim rp-nlctl claim $pipe $b --max 1 --full-rcvbuf 20 --hold 20 \
		--nl-timeout 2
	until grep -q listening /tmp/bg.b9claim.out 2> /dev/null; do
		[ $i -lt 100 ] || vm_fail "bug 9: setup: the claimer did not start: $(bg_out b9claim)"
		sleep 0.1
		i=$((i + 1))
	done
	# the claimer fills its small receive buffer itself, then claims
	i=0
	until grep -q claim-sent /tmp/bg.b9claim.out 2> /dev/null; do
		[ $i -lt 300 ] || vm_fail "bug 9: setup: the claim was not sent: $(bg_out b9claim)"
		sleep 0.1
		i=$((i + 1))
	done
	vm_log "claimer: $(bg_out b9claim); live: $(cat $LIVE)"
	grep -q "claim-sent result=ok" /tmp/bg.b9claim.out &&
		vm_fail "bug 9: setup: the claim's reply was delivered (the receive buffer was not full)"
	sleep 1
	! bg_done b9claim || vm_fail "bug 9: setup: the claimer's socket closed too early"
	[ "$(claims_now)" = 0 ] ||
		vm_fail "bug 9: a claim whose reply was not delivered is still alive with its socket open ($(cat $LIVE))"
	bg_wait b9claim $((t0 + 600)) || vm_fail "bug 9: the claimer did not end"
	rp-nlctl del-pipe $pipe || vm_fail "bug 9: del-pipe"
	vm_backstore_delete $b
}

# ---- bug 10: WRITE SAME on a write-through LUN flushes the target
step_bug10() {
	local pipe=races-wsame src=replipipe_0/s10 tdisk tgt lun sd t0 i=0 cpu r0 reads_end
	tdisk=$(vm_disk rpflusht)
	[ "$(cat /sys/block/${tdisk#/dev/}/queue/write_cache)" = "write back" ] ||
		vm_fail "bug 10: setup: $tdisk has no volatile write cache"
	tgt=$(vm_dm_create rp10tgt "0 $SECT delay $tdisk 0 0 $tdisk 0 0 $tdisk 0 $WS_FLUSH_MS")
	vm_backstore replipipe replipipe_0 s10 /dev/ram26 > /dev/null
	rp-nlctl set-pipe --id $pipe --mode sync --pair $src=$tgt,clean ||
		vm_fail "bug 10: set-pipe refused"
	lun=$(vm_tcm_loop_export $src)
	sd=${lun#/dev/}
	[ "$(cat /sys/block/$sd/queue/write_cache)" = "write through" ] ||
		vm_fail "bug 10: setup: the LUN is not write-through"
	[ "$(cat /sys/block/$sd/queue/write_zeroes_max_bytes)" -gt 0 ] ||
		vm_fail "bug 10: setup: the LUN takes no WRITE SAME (write_zeroes_max_bytes 0)"
	vm_log "WRITE SAME (zeroes, 64 KiB) through $lun; target $tgt holds flushes ${WS_FLUSH_MS} ms"
	t0=$(now10)
	bg b10ws /usr/sbin/blkdiscard -z -o 0 -l 65536 $lun
	until [ "$(delayed_flushes rp10tgt)" -ge 1 ]; do
		if [ $i -ge 100 ] || bg_done b10ws; then
			vm_fail "bug 10: the WRITE SAME ended (or ran 10 s) without a flush of the target ($(bg_out b10ws))"
		fi
		sleep 0.1
		i=$((i + 1))
	done
	# Meanwhile the LUN answers on either CPU: the WRITE SAME waits on
	# a workqueue, not in LIO's submission work of the CPU it came from. A read
	# held behind it would end with it; these must end while the flush is
	# still held. (At offset 0: dd's lseek would wait for the bdev's inode
	# lock, which blkdiscard -z holds.)
	reads_end=0
	for cpu in 0 1; do
		r0=$(now10)
		taskset -c $cpu rp-verify --dump $lun --length 4096 > /dev/null 2>&1 ||
			vm_fail "bug 10: a read on CPU $cpu failed"
		reads_end=$(now10)
		vm_log "a read on CPU $cpu while the WRITE SAME waits: $(((reads_end - r0) * 100)) ms"
	done
	bg_wait b10ws $((t0 + 300)) || vm_fail "bug 10: the WRITE SAME did not end"
	[ "$reads_end" -le $(($(bg_end b10ws) - 5)) ] ||
		vm_fail "bug 10: the reads ended at +$(((reads_end - t0) * 100)) ms, with the WRITE SAME (+$((($(bg_end b10ws) - t0) * 100)) ms): they waited for its target flush"
	vm_log "WRITE SAME ended rc=$(bg_rc b10ws) after $((($(bg_end b10ws) - t0) * 100)) ms"
	[ "$(bg_rc b10ws)" = 0 ] || vm_fail "bug 10: blkdiscard -z failed: $(bg_out b10ws)"
	[ $(($(bg_end b10ws) - t0)) -ge $((WS_FLUSH_MS / 100 - 5)) ] ||
		vm_fail "bug 10: the WRITE SAME completed before the target's flush was released"
	vm_dm_load rp10tgt "0 $SECT delay $tdisk 0 0"
	rp-nlctl del-pipe $pipe || vm_fail "bug 10: del-pipe"
	vm_tcm_loop_unexport $src
	vm_backstore_delete $src
	dm_remove rp10tgt
}

# ---- bug 7: writes with no pair between a record's bind and the publish
step_bug7() {
	local pipe=races-bind a=replipipe_0/s7a b=replipipe_0/s7b recb luna t0 pair
	vm_backstore replipipe replipipe_0 s7a /dev/ram14 /dev/ram15 > /dev/null
	vm_backstore replipipe replipipe_0 s7b /dev/ram16 \
		"$(vm_dm_create rp7rec "0 $(blockdev --getsz /dev/ram17) linear /dev/ram17 0")" > /dev/null
	# a's record bound to its pair, nothing marked, the pipe gone again
	rp-nlctl set-pipe --id $pipe --mode sync --region-kib 64 --pair $a=/dev/ram18,clean ||
		vm_fail "bug 7: set-pipe refused"
	rp-nlctl del-pipe $pipe || vm_fail "bug 7: del-pipe"
	luna=$(vm_tcm_loop_export $a)
	vm_dm_load rp7rec "0 $(blockdev --getsz /dev/ram17) delay /dev/ram17 0 0 /dev/ram17 0 $BIND_MS"
	vm_log "PIPE_SET of $a (its record loads) and $b (its record binds anew, writes held ${BIND_MS} ms)"
	bg b7set rp-nlctl set-pipe --id $pipe --mode sync --region-kib 64 \
		--pair $a=/dev/ram18,clean --pair $b=/dev/ram19,clean --nl-timeout 120
	wait_delayed rp7rec writes 1 20 ||
		vm_fail "bug 7: setup: the second record's bind wrote nothing within 20 s ($(bg_out b7set))"
	dd if=/dev/urandom of=$luna bs=4k count=1 seek=$((5 * 16)) oflag=direct 2> /dev/null ||
		vm_fail "bug 7: the write to $luna failed"
	bg_done b7set && vm_fail "bug 7: setup: the PIPE_SET ended before the write: $(bg_out b7set)"
	vm_log "region 5 of $a written while the PIPE_SET binds $b's record"
	t0=$(now10)
	bg_wait b7set $((t0 + 600)) || vm_fail "bug 7: the PIPE_SET did not end within 60 s"
	[ "$(bg_rc b7set)" = 0 ] || vm_fail "bug 7: set-pipe failed: $(bg_out b7set)"
	pair=$(pair_line $pipe $a)
	vm_log "$pair"
	[ "$(vm_field "$pair" dirty)" -ge 1 ] && region_dirty $pipe $a 5 ||
		vm_fail "bug 7: a write with no pair, made after $a's pair took its bitmap from the record, is not dirty on the pair ($pair): the legs differ there"
	vm_dm_load rp7rec "0 $(blockdev --getsz /dev/ram17) linear /dev/ram17 0"
	rp-nlctl del-pipe $pipe || vm_fail "bug 7: del-pipe"
	vm_tcm_loop_unexport $a
	vm_backstore_delete $a
	vm_backstore_delete $b
	dm_remove rp7rec
}

# ---- bug 11: a claim takes regions with no write in flight first
step_bug11() {
	local pipe=races-idle b=replipipe_0/s11 tgt lun t0 out first count
	vm_backstore replipipe replipipe_0 s11 /dev/ram28 > /dev/null
	tgt=$(vm_dm_create rp11 "0 $SECT delay /dev/ram29 0 0")
	# without ,clean: every region dirty
	rp-nlctl set-pipe --id $pipe --mode async --max-lag-kib 1024 --pair $b=$tgt ||
		vm_fail "bug 11: set-pipe refused"
	lun=$(vm_tcm_loop_export $b)
	vm_dm_load rp11 "0 $SECT delay /dev/ram29 0 0 /dev/ram29 0 $IDLE_WRITE_MS"
	bg b11w dd if=/dev/urandom of=$lun bs=4k count=1 oflag=direct
	bg_wait b11w $(($(now10) + 100)) || vm_fail "bug 11: setup: the async write did not complete on the primary"
	wait_delayed rp11 writes 1 10 ||
		vm_fail "bug 11: setup: the write's copy did not reach dm-delay within 10 s"
	t0=$(now10)
	out=$(rp-nlctl claim $pipe $b --max 4 --failed) || vm_fail "bug 11: claim failed: $out"
	vm_log "claim after $((($(now10) - t0) * 100)) ms: $out"
	first=$(vm_field "$out" first)
	count=$(vm_field "$out" count)
	[ "$first" = 1 ] && [ "$count" = 4 ] ||
		vm_fail "bug 11: the claim took regions $first+$count, not 1+4: region 0 has a copy in flight"
	[ "$(delayed rp11 writes)" -ge 1 ] ||
		vm_fail "bug 11: setup: the copy was released before the claim ended; the race was not exercised"
	vm_dm_load rp11 "0 $SECT delay /dev/ram29 0 0"
	rp-nlctl del-pipe $pipe || vm_fail "bug 11: del-pipe"
	vm_tcm_loop_unexport $b
	vm_backstore_delete $b
	dm_remove rp11
}

vm_brd 30 4
vm_modprobe dm_mod
vm_modprobe dm_delay
vm_modprobe replipipe
SECT=$(blockdev --getsz /dev/ram0)
rm -f $WEDGED
results=
failed=
for bug in $BUGS; do
	if [ -e $WEDGED ]; then
		vm_log "== bug $bug: NOT RUN: $(cat $WEDGED)"
		results="$results bug$bug=not-run"
		failed="$failed $bug"
		continue
	fi
	vm_log "== bug $bug"
	set +e
	(
		set -e
		step_bug$bug
	)
	rc=$?
	set -e
	if [ $rc -eq 0 ]; then
		vm_log "== bug $bug: PASS"
		results="$results bug$bug=pass"
	else
		vm_log "== bug $bug: FAIL"
		results="$results bug$bug=FAIL"
		failed="$failed $bug"
	fi
done
vm_log "results:$results"
[ -z "$failed" ] || vm_fail "bugs not fixed (or steps failed):$failed"

vm_log "== teardown"
k=$(rp-nlctl get) || vm_fail "rp-nlctl get failed at the teardown"
[ -z "$k" ] || vm_fail "pipes left: $k"
vm_no_live_objects
rmmod replipipe || vm_fail "rmmod replipipe"
vm_log "kmod-races done"
