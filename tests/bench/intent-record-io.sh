#!/bin/sh
# Benchmark (not pass/fail, not in CTest): what a write-intent record's own
# I/O costs when its device is slow to answer, in one VM boot; run it with
# tests/bench/run-bench.sh intent-record-io.
# A 1 TiB source (null_blk, no memory) at 4 KiB regions and 4 KiB chunks:
# 2^28 chunks, a bitmap of 8192 pages (32 MiB), the record on dm over ram0.
# Three operations, each timed from the shell (ms of guest uptime):
#   open   the backstore made and enabled: the record's bitmap is read
#   bind   a PIPE_SET of a new pipe id: the new binding (every chunk
#          marked) is written
#   clean  a PIPE_SET of a new pipe id with `clean`, then one 4 KiB write
#          through a tcm_loop LUN, which waits until the record's empty
#          bits are written (write_work, FUA)
# on the record device as it is (F, the baseline) and behind dm-delay 2 ms
# a request (D2; a jiffy at HZ=250, so 0 to 4 ms). Prints "BENCH |"-prefixed
# lines: the median of RUNS runs of each (3; edit it here), and D2/F.
# A module that moves a bitmap page per request takes about half a minute
# per operation under D2.
# vm-timeout: 1800
# vm-mem: 1024
# vm-bins: dmsetup

RUNS=3
SRC=replipipe_0/vol
PARAMS=/sys/module/replipipe/parameters
export DM_DISABLE_UDEV=1

vm_modprobe replipipe
vm_modprobe dm_mod
vm_modprobe dm_delay
vm_modprobe null_blk nr_devices=2 gb=1024 memory_backed=0
vm_wait_path /dev/nullb1
vm_brd 1 64
rec=$(vm_dm_create rec "0 98304 linear /dev/ram0 0")
# no clear pass during a run: the passes are not what is measured
echo 3600 > $PARAMS/intent_clear_sec
n=0

# once CONFIG: one run of the three operations, "CONFIG OP MS" lines to
# /tmp/results
once() {
	local t0 lun
	n=$((n + 1))
	t0=$(vm_now_ms)
	vm_backstore replipipe replipipe_0 vol /dev/nullb0 "$rec,intent_chunk_kib=4" > /dev/null
	echo "$1 open $(($(vm_now_ms) - t0))" >> /tmp/results
	t0=$(vm_now_ms)
	rp-nlctl set-pipe --id bind$n --region-kib 4 --pair $SRC=/dev/nullb1 \
		--nl-timeout 600 > /dev/null || vm_fail "set-pipe bind$n"
	echo "$1 bind $(($(vm_now_ms) - t0))" >> /tmp/results
	rp-nlctl del-pipe bind$n || vm_fail "del-pipe bind$n"
	lun=$(vm_tcm_loop_export $SRC)
	t0=$(vm_now_ms)
	rp-nlctl set-pipe --id clean$n --region-kib 4 --pair $SRC=/dev/nullb1,clean \
		--nl-timeout 600 > /dev/null || vm_fail "set-pipe clean$n"
	dd if=/dev/zero of="$lun" bs=4096 count=1 seek=$n oflag=direct 2> /dev/null ||
		vm_fail "write after set-pipe clean$n"
	echo "$1 clean $(($(vm_now_ms) - t0))" >> /tmp/results
	vm_tcm_loop_unexport $SRC
	rp-nlctl del-pipe clean$n || vm_fail "del-pipe clean$n"
	vm_backstore_delete $SRC
}

: > /tmp/results
for config in F D2; do
	case $config in
	F) vm_dm_load rec "0 98304 linear /dev/ram0 0" ;;
	D2) vm_dm_load rec "0 98304 delay /dev/ram0 0 2" ;;
	esac
	i=0
	while [ $i -lt "$RUNS" ]; do
		once $config
		i=$((i + 1))
	done
	vm_log "$config: $(grep "^$config " /tmp/results | tr '\n' ' ')"
done
echo 5 > $PARAMS/intent_clear_sec

# the median of each CONFIG OP, then the table
sort -k1,1 -k2,2 -k3,3n /tmp/results | awk -v runs="$RUNS" '
	{ v[$1 " " $2, ++c[$1 " " $2]] = $3 }
	END {
		m = int((runs + 1) / 2)
		split("open bind clean", ops, " ")
		printf "BENCH | op | F ms | D2 ms | D2/F |\n"
		printf "BENCH |---|---|---|---|\n"
		for (i = 1; i <= 3; i++) {
			o = ops[i]
			f = v["F " o, m]; d2 = v["D2 " o, m]
			printf "BENCH | %s | %d | %d | %.2f |\n", o, f, d2,
				d2 / (f ? f : 1)
		}
		printf "BENCH medians of %d runs; 2^28 chunks, 8192 bitmap pages\n", runs
	}'
