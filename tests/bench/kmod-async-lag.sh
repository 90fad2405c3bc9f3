#!/bin/sh
# Benchmark (not pass/fail, not in CTest): the asynchronous mirror with many
# copies in flight, in one VM boot; run it with
# tests/bench/run-bench.sh kmod-async-lag.
# Legs: null_blk, memory_backed=0 irqmode=2 completion_nsec=20 ms
# (nr_devices=2 gb=1 queue_mode=2), R1=/dev/nullb0, R2=/dev/nullb1, as in
# kmod-mirror. Configurations, all through tcm_loop, fio libaio direct
# 4 KiB randwrite QD32 for 12 s:
#   A   iblock on R1 (after a discarded warm-up), and again last (A2)
#   SA  replipipe R1 -> R2 behind dm-delay +40 ms, asynchronous, 64 MiB lag:
#       about 80 copies in flight (IOPS x 60 ms)
#   SF  the same with dm-delay +15 s: the copies pile up, about 1,100 more
#       every second, towards the lag's 16,384 (64 MiB of 4 KiB): what each
#       write and each ended copy costs the module with that many in flight
#       (issuing a copy used to walk all of them with interrupts off)
# Prints "BENCH |"-prefixed lines: IOPS per configuration, SA/A and SF/A
# against the mean of A and A2.
# vm-timeout: 600
# vm-mem: 2048
# vm-bins: fio dmsetup

RUNTIME=${BENCH_RUNTIME:-12}
export DM_DISABLE_UDEV=1

# iops DEV: 4 KiB random writes at QD32, prints IOPS
iops() {
	fio --name=bench --filename="$1" --ioengine=libaio --direct=1 \
		--rw=randwrite --bs=4k --iodepth=32 --runtime="$RUNTIME" \
		--time_based --output-format=terse --terse-version=3 2> /tmp/fio.err |
		awk -F';' '{ print $49 }'
}

measure() { # LABEL LUN
	local n
	n=$(iops "$2")
	[ -n "$n" ] || vm_fail "fio on $2 failed: $(cat /tmp/fio.err)"
	echo "$1 $n" >> /tmp/results
	vm_log "$1: $n IOPS"
}

baseline() { # LABEL
	local lun
	vm_backstore iblock iblock_0 a /dev/nullb0 > /dev/null
	lun=$(vm_tcm_loop_export iblock_0/a)
	if [ "$1" = A ]; then
		fio --name=warmup --filename="$lun" --ioengine=libaio --direct=1 \
			--rw=randwrite --bs=4k --iodepth=32 --runtime=2 --time_based > /dev/null 2>&1
	fi
	measure "$1" "$lun"
	vm_tcm_loop_unexport iblock_0/a
	vm_backstore_delete iblock_0/a
}

wait_closed() { # TARGET: until the last copy to a removed pair's target ended
	local i=0
	until dmesg | grep -q "the last writes to removed target $1 ended" ||
		! dmesg | grep -q "writes to removed target $1 still in flight"; do
		[ $i -lt 600 ] || vm_fail "copies to $1 still in flight 60 s after its pipe was deleted"
		sleep 0.1
		i=$((i + 1))
	done
}

async_mirror() { # LABEL DELAY_MS
	local lun tgt
	tgt=$(vm_dm_create "slow$1" "0 $(blockdev --getsz /dev/nullb1) delay /dev/nullb1 0 $2")
	vm_backstore replipipe replipipe_0 "b$1" /dev/nullb0 > /dev/null
	rp-nlctl set-pipe --id "bench-$1" --mode async --max-lag-kib 65536 \
		--pair "replipipe_0/b$1=$tgt,clean" || vm_fail "set-pipe refused"
	lun=$(vm_tcm_loop_export "replipipe_0/b$1")
	measure "$1" "$lun"
	vm_log "at the end: $(rp-nlctl get "bench-$1" | grep '^pair ')"
	vm_tcm_loop_unexport "replipipe_0/b$1"
	rp-nlctl del-pipe "bench-$1" --nl-timeout 120 || vm_fail "del-pipe bench-$1"
	# PIPE_DEL waits 5 s at most for the copies in flight; the backstore
	# stays busy until the last of them ended (up to the delay).
	wait_closed "$tgt"
	vm_backstore_delete "replipipe_0/b$1"
	dmsetup --noudevsync remove "slow$1"
}

vm_modprobe null_blk nr_devices=2 gb=1 queue_mode=2 memory_backed=0 irqmode=2 \
	completion_nsec=20000000
vm_wait_path /dev/nullb1
vm_modprobe dm_delay
vm_modprobe replipipe
: > /tmp/results
baseline A
async_mirror SA 40
async_mirror SF 15000
baseline A2

awk -v runtime="$RUNTIME" '
	{ iops[$1] = $2 }
	END {
		a = (iops["A"] + iops["A2"]) / 2
		printf "BENCH | config | 4k randwrite QD32 IOPS |\n"
		printf "BENCH |---|---|\n"
		printf "BENCH | A iblock on R1 | %d |\n", iops["A"]
		printf "BENCH | SA replipipe R1 -> R2 + 40 ms (async, 64 MiB lag) | %d |\n", iops["SA"]
		printf "BENCH | SF replipipe R1 -> R2 + 15 s (async, 64 MiB lag) | %d |\n", iops["SF"]
		printf "BENCH | A2 iblock on R1, again | %d |\n", iops["A2"]
		printf "BENCH | ratio SA/A | %.3f |\n", iops["SA"] / a
		printf "BENCH | ratio SF/A | %.3f |\n", iops["SF"] / a
		printf "BENCH fio libaio direct %d s per run; null_blk completion_nsec=20000000\n", runtime
	}' /tmp/results
vm_log "kmod-async-lag bench done"
