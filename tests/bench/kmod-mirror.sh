#!/bin/sh
# Benchmark (not pass/fail, not in CTest): the cost of replipipe's synchronous
# mirror, in one VM boot; run it with tests/bench/run-bench.sh kmod-mirror.
# Legs (see DESIGN.md, "Benchmarks under QEMU"):
#   latency-bound: null_blk, memory_backed=0 irqmode=2 completion_nsec=20 ms
#                  (nr_devices=3 gb=1 queue_mode=2): R1=/dev/nullb0, R2=/dev/nullb1
#   CPU-bound:     brd R1=/dev/ram0, R2=/dev/ram1 (under TCG every byte costs
#                  guest CPU and a mirror writes twice: says more about the
#                  emulator than about the module)
# For each pair: (A) iblock on R1, (B) replipipe on R1 mirrored synchronously
# to R2, (W) B with a write-intent record on R3 (docs/write-intent.md; the
# record starts empty, so the random writes keep marking new chunks: its
# worst case), (W64) W with one record bit per 64 KiB region instead of per
# 4 MiB chunk (intent_chunk_kib=64: what the record did before), (BM, BWC:
# null_blk only) B over memory-backed null_blk legs of 256 MiB without and
# with a volatile write cache: with one, every mirrored write is tracked as
# unflushed on the target until a flush (rp_pipe.c "Unflushed"), (S, SA:
# null_blk only) B to a target three times as slow (dm-delay adds 40 ms to
# R2's 20, as a far-away target would), synchronous (S) and asynchronous with
# a 64 MiB lag (SA): the asynchronous mirror should keep R1's speed while the
# lag has room, (C) iblock on dm-mirror(R1, R2) (`mirror core 2 1024 nosync`),
# all through tcm_loop; fio libaio direct 8 s: 4 KiB randwrite QD32 and 1 MiB
# sequential write QD8. A runs first (after a discarded warm-up) and again
# last (A2); B/A uses their mean. Prints "BENCH |"-prefixed table lines with
# IOPS, MB/s and the ratios B/A, B/C, W/B, W64/B, BWC/BM, S/A and SA/A.
# vm-timeout: 1200
# vm-mem: 2048
# vm-bins: fio dmsetup

RUNTIME=${BENCH_RUNTIME:-8}
export DM_DISABLE_UDEV=1

# fio_run DEV RW BS QD: prints "IOPS KiB/s" of the write side
fio_run() {
	fio --name=bench --filename="$1" --ioengine=libaio --direct=1 --rw="$2" \
		--bs="$3" --iodepth="$4" --runtime="$RUNTIME" --time_based \
		--output-format=terse --terse-version=3 2> /tmp/fio.err |
		awk -F';' '{ print $49, $48 }'
}

# measure LABEL DEV: both workloads on DEV; appends "LABEL IOPS MB/s" to /tmp/results
measure() {
	local r4 r1 iops mbs
	r4=$(fio_run "$2" randwrite 4k 32)
	r1=$(fio_run "$2" write 1M 8)
	[ -n "$r4" ] && [ -n "$r1" ] || vm_fail "fio on $2 failed: $(cat /tmp/fio.err)"
	iops=${r4% *}
	mbs=$(echo "${r1#* }" | awk '{ printf "%.1f", $1 * 1024 / 1000000 }')
	echo "$1 $iops $mbs" >> /tmp/results
	vm_log "$1: 4k randwrite QD32 $iops IOPS, 1M write QD8 $mbs MB/s"
}

# dm_dev NAME: /dev/dm-N of a device-mapper device (no udev, no /dev/mapper links)
dm_dev() {
	local d
	for d in /sys/block/dm-*; do
		[ "$(cat "$d/dm/name")" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	vm_fail "no dm device $1"
}

# baseline LABEL TAG R1: iblock on R1 (config A)
baseline() {
	vm_backstore iblock iblock_0 "a$2" "$3" > /dev/null
	lun=$(vm_tcm_loop_export "iblock_0/a$2")
	if [ "$1" = A ]; then
		# warm-up, discarded: the first run of a boot is slower
		fio --name=warmup --filename="$lun" --ioengine=libaio --direct=1 \
			--rw=randwrite --bs=4k --iodepth=32 --runtime=2 --time_based > /dev/null 2>&1
	fi
	measure "$2-$1" "$lun"
	vm_tcm_loop_unexport "iblock_0/a$2"
	vm_backstore_delete "iblock_0/a$2"
}

# mirror LABEL TAG R1 R2 [R3]: replipipe on R1 mirrored to R2 (config B), with
# a write-intent record on R3 when given (config W); asynchronous with a
# 64 MiB lag when MIRROR_MODE=async
mirror() {
	local lun
	vm_backstore replipipe replipipe_0 "b$2" "$3" $5 > /dev/null
	rp-nlctl set-pipe --id "bench-$2" --mode "${MIRROR_MODE:-sync}" \
		--max-lag-kib 65536 --pair "replipipe_0/b$2=$4,clean" ||
		vm_fail "set-pipe refused"
	lun=$(vm_tcm_loop_export "replipipe_0/b$2")
	measure "$2-$1" "$lun"
	rp-nlctl get "bench-$2"
	vm_tcm_loop_unexport "replipipe_0/b$2"
	rp-nlctl del-pipe "bench-$2"
	vm_backstore_delete "replipipe_0/b$2"
}

# nullb_mem NAME CACHE_MIB: a null_blk with the module's timing (20 ms
# completions) that keeps its data (memory_backed: null_blk has a write
# cache only then), 256 MiB, with a volatile write cache of CACHE_MIB (0:
# none), made through configfs. A cache as large as the device never
# evicts, so the two kinds differ in the cache alone.
nullb_mem() {
	local d=/sys/kernel/config/nullb/$1
	mkdir "$d" || vm_fail "mkdir $d"
	echo 256 > "$d/size"
	echo 2 > "$d/queue_mode"
	echo 2 > "$d/irqmode"
	echo 20000000 > "$d/completion_nsec"
	echo 1 > "$d/memory_backed"
	echo "$2" > "$d/cache_size"
	echo 1 > "$d/power" || vm_fail "cannot power on $1"
	vm_wait_path "/dev/$1"
	[ "$2" = 0 ] || [ "$(cat "/sys/block/$1/queue/write_cache")" = "write back" ] ||
		vm_fail "$1 has no volatile write cache"
}

# nullb_mem_delete NAME...: frees their memory
nullb_mem_delete() {
	local n
	for n in "$@"; do
		echo 0 > "/sys/kernel/config/nullb/$n/power"
		rmdir "/sys/kernel/config/nullb/$n"
	done
}

# legs TAG R1 R2 R3: the four configurations on one set of devices, then the
# baseline once more (A2) to show the drift within the boot
legs() {
	local tag=$1 r1=$2 r2=$3 lun sectors mirror
	sectors=$(blockdev --getsz "$r1")

	baseline A "$tag" "$r1"
	mirror B "$tag" "$r1" "$r2"
	mirror W "$tag" "$r1" "$r2" "$4"
	mirror W64 "$tag" "$r1" "$r2" "$4,intent_chunk_kib=64"

	dmsetup --noudevsync create "m$tag" \
		--table "0 $sectors mirror core 2 1024 nosync 2 $r1 0 $r2 0" ||
		vm_fail "dmsetup create mirror"
	mirror=$(dm_dev "m$tag")
	vm_backstore iblock iblock_0 "c$tag" "$mirror" > /dev/null
	lun=$(vm_tcm_loop_export "iblock_0/c$tag")
	measure "$tag-C" "$lun"
	vm_tcm_loop_unexport "iblock_0/c$tag"
	vm_backstore_delete "iblock_0/c$tag"
	dmsetup --noudevsync remove "m$tag"

	baseline A2 "$tag" "$r1"
}

: > /tmp/results
vm_modprobe null_blk nr_devices=3 gb=1 memory_backed=0 irqmode=2 \
	completion_nsec=20000000 queue_mode=2
vm_wait_path /dev/nullb1
vm_modprobe dm_mirror
vm_modprobe replipipe
legs nullblk /dev/nullb0 /dev/nullb1 /dev/nullb2

# BM and BWC: the mirror over memory-backed null_blk legs without and with
# a volatile write cache, one after the other.
nullb_mem nullmb0 0
nullb_mem nullmb1 0
mirror BM nullblk /dev/nullmb0 /dev/nullmb1
nullb_mem_delete nullmb0 nullmb1
nullb_mem nullwc0 256
nullb_mem nullwc1 256
mirror BWC nullblk /dev/nullwc0 /dev/nullwc1
nullb_mem_delete nullwc0 nullwc1

# S and SA: synchronous and asynchronous to a target 40 ms slower than R1
vm_modprobe dm_delay
dmsetup --noudevsync create slowtgt \
	--table "0 $(blockdev --getsz /dev/nullb1) delay /dev/nullb1 0 40" ||
	vm_fail "dmsetup create delay"
mirror S nullblk /dev/nullb0 "$(dm_dev slowtgt)"
MIRROR_MODE=async mirror SA nullblk /dev/nullb0 "$(dm_dev slowtgt)"
dmsetup --noudevsync remove slowtgt

vm_brd 3 256
# brd allocates its pages on first write: fill them so no leg pays for that
# (dd stops with "no space left" at the end of each device: expected)
for r in 0 1 2; do
	dd if=/dev/zero of=/dev/ram$r bs=1M oflag=direct 2> /dev/null || true
done
legs brd /dev/ram0 /dev/ram1 /dev/ram2

# The table: one row per configuration, then the ratios, per device kind.
awk -v runtime="$RUNTIME" '
	{ split($1, k, "-"); iops[$1] = $2; mbs[$1] = $3; kinds[k[1]] = 1 }
	END {
		printf "BENCH | legs | config | 4k randwrite QD32 IOPS | 1M write QD8 MB/s |\n"
		printf "BENCH |---|---|---|---|\n"
		name["A"] = "iblock on R1"; name["B"] = "replipipe R1 -> R2 (sync)"
		name["C"] = "iblock on dm-mirror(R1,R2)"; name["A2"] = "iblock on R1, again"
		name["W"] = "replipipe R1 -> R2 (sync), write-intent record on R3 (4 MiB chunks)"
		name["W64"] = "W with 64 KiB chunks (a bit per region)"
		name["BM"] = "B over memory-backed null_blk legs (256 MiB)"
		name["BWC"] = "BM with a volatile write cache on both legs (unflushed tracking)"
		name["S"] = "replipipe R1 -> R2 + 40 ms (sync)"
		name["SA"] = "replipipe R1 -> R2 + 40 ms (async, 64 MiB lag)"
		split("A B W W64 C A2 BM BWC S SA", configs, " ")
		split("nullblk brd", order, " ")
		for (o = 1; o <= 2; o++) {
			t = order[o]
			if (!(t in kinds)) continue
			for (c = 1; c <= 10; c++) {
				l = configs[c]
				if (!((t "-" l) in iops)) continue
				printf "BENCH | %s | %s %s | %d | %.1f |\n", t, l, name[l], iops[t "-" l], mbs[t "-" l]
			}
			# A: the mean of the runs before and after B and C
			a_iops = (iops[t "-A"] + iops[t "-A2"]) / 2
			a_mbs = (mbs[t "-A"] + mbs[t "-A2"]) / 2
			printf "BENCH | %s | ratio B/A | %.3f | %.3f |\n", t,
				iops[t "-B"] / a_iops, mbs[t "-B"] / a_mbs
			printf "BENCH | %s | ratio B/C | %.3f | %.3f |\n", t,
				iops[t "-B"] / iops[t "-C"], mbs[t "-B"] / mbs[t "-C"]
			printf "BENCH | %s | ratio W/B | %.3f | %.3f |\n", t,
				iops[t "-W"] / iops[t "-B"], mbs[t "-W"] / mbs[t "-B"]
			printf "BENCH | %s | ratio W64/B | %.3f | %.3f |\n", t,
				iops[t "-W64"] / iops[t "-B"], mbs[t "-W64"] / mbs[t "-B"]
			if ((t "-BWC") in iops)
				printf "BENCH | %s | ratio BWC/BM | %.3f | %.3f |\n", t,
					iops[t "-BWC"] / iops[t "-BM"], mbs[t "-BWC"] / mbs[t "-BM"]
			if ((t "-SA") in iops) {
				printf "BENCH | %s | ratio S/A | %.3f | %.3f |\n", t,
					iops[t "-S"] / a_iops, mbs[t "-S"] / a_mbs
				printf "BENCH | %s | ratio SA/A | %.3f | %.3f |\n", t,
					iops[t "-SA"] / a_iops, mbs[t "-SA"] / a_mbs
			}
		}
		printf "BENCH fio libaio direct %d s per run; nullblk: null_blk completion_nsec=20000000 (latency-bound, measures the module); brd: ramdisks (CPU-bound under TCG, measures the emulator too)\n", runtime
	}' /tmp/results
vm_log "kmod-mirror bench done"
