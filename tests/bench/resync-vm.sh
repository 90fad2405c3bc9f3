#!/bin/sh
# Benchmark (not pass/fail, not in CTest): resync throughput in one VM boot;
# run it with tests/bench/run-bench.sh resync-vm.
# Devices (DESIGN.md, "Benchmarks under QEMU"): two 256 MiB brd ramdisks,
# each behind dm-delay with 5 ms on reads and writes (`0 <sectors> delay
# /dev/ramN 0 5`): SRC=/dev/dm-0 over /dev/ram0, DST=/dev/dm-1 over /dev/ram1.
# Latency-bound legs with real data: a copy that keeps enough requests in
# flight gets near the devices' bandwidth; brd alone is memcpy-bound under TCG.
# Rows (MB/s = 1e6 bytes/s, each over the whole 256 MiB):
#   fio read SRC / write DST: libaio direct, 1 MiB sequential, QD 32 and 64,
#     time-based 6 s (wraps around), DST written once before (brd allocates
#     its pages on the first write); the limit of a copy is the smaller of the
#     best read and the best write
#   dd: bs=1M iflag=direct oflag=direct SRC -> DST (coreutils' dd, called by
#     its path: busybox sh runs its own applet for a bare "dd", and busybox's
#     dd falls back to the page cache with its unaligned buffer, decision 70)
#   copy QDxCHUNK: `rp-nlctl copy` (the io_uring RegionCopier alone)
#   resync, claims of N MiB: `rp-nlctl resync` of a fully dirty pair (replipipe
#     backstore on SRC, target DST): the claim loop over netlink, the engine
#     the daemon runs (default claim one queue: 32 MiB, QD 32 x 1 MiB)
#   daemon: replipiped's initial resync of a new pipe, `replipipectl wait`
# then ratios to the limit and to dd. Every copy is checked (O_DIRECT cmp) once.
# vm-timeout: 1500
# vm-mem: 1536
# vm-bins: fio dmsetup jq /usr/bin/dd

export DM_DISABLE_UDEV=1
DD=/usr/bin/dd
$DD --version 2> /dev/null | grep -q coreutils || vm_fail "$DD is not coreutils' dd"
MIB=256
SIZE=$((MIB * 1048576))
SECT=$((SIZE / 512))
SRC=/dev/dm-0
DST=/dev/dm-1

vm_brd 2 $MIB
vm_modprobe dm_mod
vm_modprobe dm_delay
vm_modprobe replipipe
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2>/dev/null
dmsetup --noudevsync create rpsrc --table "0 $SECT delay /dev/ram0 0 5" || vm_fail "dm-delay src"
dmsetup --noudevsync create rpdst --table "0 $SECT delay /dev/ram1 0 5" || vm_fail "dm-delay dst"
vm_wait_path $SRC; vm_wait_path $DST

now() { cut -d' ' -f1 /proc/uptime; }
mbps() { echo "$1 $2" | awk '{ printf "%.1f", $1 / $2 / 1e6 }'; }
zero_dst() { dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2>/dev/null; }
row() { echo "BENCH | $1 | $2 |"; vm_log "$1: $2 MB/s"; }
check() { rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "$1: copy differs"; }

# fio_bw DEV RW: MB/s (1e6) of the read or write side
fio_bw() {
	fio --name=bench --filename="$1" --ioengine=libaio --direct=1 --rw="$2" \
		--bs=1M --iodepth=$3 --size=$SIZE --runtime=6 --time_based \
		--output-format=terse \
		--terse-version=3 2> /tmp/fio.err |
		awk -F';' -v rw="$2" '{ kib = (rw == "read") ? $7 : $48; printf "%.1f", kib * 1024 / 1e6 }'
}

echo "BENCH resync-vm: 256 MiB, dm-delay 5 ms over brd, $(nproc) vCPUs"
echo "BENCH | what | MB/s |"
echo "BENCH |---|---|"
zero_dst
rd=0; wr=0
for qd in 32 64; do
	r=$(fio_bw $SRC read $qd); row "fio read SRC (1 MiB QD$qd)" "$r"
	w=$(fio_bw $DST write $qd); row "fio write DST (1 MiB QD$qd)" "$w"
	rd=$(echo "$rd $r" | awk '{ print ($1 > $2) ? $1 : $2 }')
	wr=$(echo "$wr $w" | awk '{ print ($1 > $2) ? $1 : $2 }')
done
limit=$(echo "$rd $wr" | awk '{ print ($1 < $2) ? $1 : $2 }')

zero_dst
t0=$(now); $DD if=$SRC of=$DST bs=1M count=$MIB iflag=direct oflag=direct 2>/dev/null; t1=$(now)
ddr=$(mbps $SIZE $(echo "$t1 $t0" | awk '{ print $1 - $2 }')); row "dd bs=1M direct" "$ddr"
check dd

copy_row() { # QD CHUNK_KIB
	zero_dst
	out=$(rp-nlctl copy $SRC $DST --qd $1 --chunk-kib $2) || vm_fail "copy: $out"
	echo "$out" >&2
	r=$(echo "$out" | sed -n 's/.* mb_per_s=\([0-9.]*\) .*/\1/p')
	row "copy QD$1 x $2 KiB" "$r"
	[ "$1/$2" != 32/1024 ] || { check copy; copy_def=$r; }
}
copy_row 32 1024
copy_row 16 1024
copy_row 8 1024
copy_row 64 1024
copy_row 32 256
copy_row 64 256
copy_row 16 4096

vm_backstore replipipe replipipe_0 vol1 $SRC > /dev/null
resync_row() { # BATCH_REGIONS (64 KiB regions)
	zero_dst
	rp-nlctl set-pipe --id bench --mode sync --policy degrade --region-kib 64 \
		--max-lag-kib 4096 --pair replipipe_0/vol1=$DST > /dev/null || vm_fail "set-pipe"
	rp-nlctl resync bench replipipe_0/vol1 --batch-regions $1 > /tmp/resync ||
		vm_fail "resync: $(tail -n 2 /tmp/resync)"
	out=$(tail -n 1 /tmp/resync)
	echo "$out" >&2
	r=$(echo "$out" | sed -n 's/.* mb_per_s=\([0-9.]*\)$/\1/p')
	row "resync, claims of $(($1 / 16)) MiB" "$r"
	[ $1 != 512 ] || { check resync; resync_def=$r; }
	rp-nlctl del-pipe bench || vm_fail "del-pipe"
}
resync_row 128
resync_row 64
resync_row 512
resync_row 1024

zero_dst
mkdir -p /run/replipipe /var/lib/replipipe
replipiped --log-level info 2> /tmp/daemon.log || { cat /tmp/daemon.log >&2; vm_fail "replipiped"; }
t0=$(now)
replipipectl create-or-modify --name bench --source-system localhost --target-system localhost \
	--pair replipipe_0/vol1=$DST \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; };' > /dev/null || vm_fail "create"
replipipectl wait bench --state InSync --timeout 600 > /dev/null || vm_fail "wait"
t1=$(now)
dr=$(replipipectl --json status bench | jq -r '.pipes[0].pairs[0].resync.rate_bytes_per_s' | awk '{ printf "%.1f", $1 / 1e6 }')
row "daemon resync (its rate)" "$dr"
row "daemon resync (create to InSync, incl. CLI)" "$(mbps $SIZE $(echo "$t1 $t0" | awk '{ print $1 - $2 }'))"
check daemon
replipipectl delete bench > /dev/null

echo "BENCH"
echo "BENCH limit (min of the best fio read, best fio write): $limit MB/s"
for x in "copy QD32x1MiB:$copy_def" "resync 32 MiB claims:$resync_def" "daemon:$dr"; do
	n=${x%%:*}; v=${x##*:}
	echo "BENCH $n: $(echo "$v $limit $ddr" | awk '{ printf "%.2f x limit, %.2f x dd", $1 / $2, $1 / $3 }')"
done
