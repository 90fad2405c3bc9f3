#!/bin/sh
# Benchmark (not pass/fail, not in CTest): the asynchronous copies of one
# block rewritten while the target holds them, against as many copies of
# distinct blocks, in one VM boot; run it with
# tests/bench/run-bench.sh kmod-async-hot.
# Legs: brd, R1=/dev/ram0, R2=/dev/ram1 behind dm-linear, MaxLagKiB 1 GiB.
# One writer (rp-writer), N 4 KiB writes through tcm_loop while the target
# is suspended (it queues every copy), then the target resumed:
#   D  random blocks of 256 MiB: mostly distinct, so few copies are held
#      up (each by the earlier copy of its block; 7 % of the writes at
#      10,000, a quarter at 40,000)
#   H  one 4 KiB block: each copy held up by the one before it, so the
#      copies reach the target one at a time
# for N = BENCH_N (default 10000) and 4 N. Timed: the writes (fill), and
# from the resume until the lag is 0 (drain). Each run's copies are checked
# on the target (rp-verify).
# Prints "BENCH |"-prefixed lines: the times, the ratios H/D of fill and of
# drain at each N, and how the times grow from N to 4 N (4: linear in the
# copies; 16: quadratic in the copies held up, as when each write and each
# ended copy looked at every copy held up, with interrupts off).
# vm-timeout: 1500
# vm-mem: 1536
# vm-bins: dmsetup

N=${BENCH_N:-10000}
PIPE=bench-hot
SRC=replipipe_0/hot
export DM_DISABLE_UDEV=1

vm_brd 2 272
vm_modprobe dm_mod
sectors=$(blockdev --getsz /dev/ram1)
tgt=$(vm_dm_create rphot "0 $sectors linear /dev/ram1 0")
vm_backstore replipipe replipipe_0 hot /dev/ram0 > /dev/null
rp-nlctl set-pipe --id $PIPE --mode async --max-lag-kib 1048576 \
	--region-kib 64 --pair $SRC=$tgt,clean || vm_fail "set-pipe refused"
lun=$(vm_tcm_loop_export $SRC)
: > /tmp/results

run() { # LABEL COUNT SPAN SEED
	local t0 t1 t2 pair
	dmsetup --noudevsync suspend --nolockfs rphot || vm_fail "dmsetup suspend"
	t0=$(vm_now_ms)
	rp-writer --dev "$lun" --log "/tmp/$1" --threads 1 --offset 0 --span "$3" \
		--min-size 4K --max-size 4K --count "$2" --seed "$4" > /tmp/writer.out 2>&1 ||
		vm_fail "writer $1: $(cat /tmp/writer.out)"
	t1=$(vm_now_ms)
	pair=$(rp-nlctl get $PIPE | grep "^pair ")
	[ "$(vm_field "$pair" lag)" = $(($2 * 4096)) ] ||
		vm_fail "$1: not every copy held by the suspended target: $pair"
	dmsetup --noudevsync resume rphot || vm_fail "dmsetup resume"
	pair=$(vm_lag_drained $PIPE 1200)
	t2=$(vm_now_ms)
	[ "$(vm_field "$pair" errors)" = 0 ] || vm_fail "$1: target errors: $pair"
	rp-verify --dev "$tgt" /tmp/$1.* > /tmp/verify.out 2>&1 ||
		vm_fail "$1: the copies on the target: $(head -n 5 /tmp/verify.out)"
	vm_log "$1: $2 writes in $((t1 - t0)) ms, drained in $((t2 - t1)) ms"
	echo "$1 $((t1 - t0)) $((t2 - t1))" >> /tmp/results
}

run D1 $N 256M 71
run H1 $N 4K 72
run D4 $((4 * N)) 256M 73
run H4 $((4 * N)) 4K 74

vm_tcm_loop_unexport $SRC
rp-nlctl del-pipe $PIPE || vm_fail "del-pipe"
vm_backstore_delete $SRC
dmsetup --noudevsync remove rphot || vm_fail "dmsetup remove"
vm_no_live_objects

awk -v n="$N" '
	{ fill[$1] = $2; drain[$1] = $3 }
	function r(a, b) { return b > 0 ? a / b : 0 }
	END {
		printf "BENCH | run | writes | fill ms | drain ms |\n"
		printf "BENCH |---|---|---|---|\n"
		printf "BENCH | D distinct blocks | %d | %d | %d |\n", n, fill["D1"], drain["D1"]
		printf "BENCH | H one block | %d | %d | %d |\n", n, fill["H1"], drain["H1"]
		printf "BENCH | D distinct blocks | %d | %d | %d |\n", 4 * n, fill["D4"], drain["D4"]
		printf "BENCH | H one block | %d | %d | %d |\n", 4 * n, fill["H4"], drain["H4"]
		printf "BENCH | ratio H/D at %d: fill, drain | | %.2f | %.2f |\n", n, r(fill["H1"], fill["D1"]), r(drain["H1"], drain["D1"])
		printf "BENCH | ratio H/D at %d: fill, drain | | %.2f | %.2f |\n", 4 * n, r(fill["H4"], fill["D4"]), r(drain["H4"], drain["D4"])
		printf "BENCH | growth of D from %d to %d: fill, drain | | %.2f | %.2f |\n", n, 4 * n, r(fill["D4"], fill["D1"]), r(drain["D4"], drain["D1"])
		printf "BENCH | growth of H from %d to %d: fill, drain | | %.2f | %.2f |\n", n, 4 * n, r(fill["H4"], fill["H1"]), r(drain["H4"], drain["H1"])
		printf "BENCH one writer, 4 KiB O_DIRECT writes; brd legs; the target suspended while writing\n"
	}' /tmp/results
vm_log "kmod-async-hot bench done"
