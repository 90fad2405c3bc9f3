#!/bin/sh
# Benchmark (not pass/fail, not in CTest): what a resync and an application's
# writes cost each other, in one VM boot; run it with
# tests/bench/run-bench.sh resync-load.
# Devices as resync-vm's: two 256 MiB brd ramdisks behind dm-delay with 5 ms
# on reads and writes (SRC over /dev/ram0, DST over /dev/ram1), a replipipe
# backstore on SRC exported through tcm_loop, a synchronous pipe of 64 KiB
# regions to DST.
# The application: fio, 4 KiB random O_DIRECT writes at QD 16 on the LUN,
# each write's completion time (epoch ms) and latency logged.
# Rows, each REPEAT times (medians last):
#   writes alone: the pair InSync, no resync; IOPS and latency of the writes
#     that completed from 2 s to 8 s into the run
#   resync alone, claims of N MiB: `rp-nlctl resync` of a new, fully dirty
#     pair, no writes
#   both, claims of N MiB: the same resync started 2 s into the writes; its
#     MB/s, and the IOPS and latency of the writes that completed while it ran
# A write to a region being copied waits for its claim (the copy of N MiB):
# the claim size trades the resync's speed against the writes' latency.
# Each resync under writes is checked: once the writes end, the legs compare
# equal.
# vm-timeout: 1200
# vm-mem: 1536
# vm-bins: fio dmsetup /usr/bin/date

export DM_DISABLE_UDEV=1
DATE=/usr/bin/date
$DATE --version 2> /dev/null | grep -q coreutils || vm_fail "$DATE is not coreutils' date"
REPEAT=${BENCH_REPEAT:-3}
MIB=256
SECT=$((MIB * 2048))
SRC=replipipe_0/vol1

vm_brd 2 $MIB
vm_modprobe dm_mod
vm_modprobe dm_delay
dd if=/dev/urandom of=/dev/ram0 bs=1M count=$MIB oflag=direct 2> /dev/null
# brd allocates its pages on the first write: every row finds them there
dd if=/dev/zero of=/dev/ram1 bs=1M count=$MIB oflag=direct 2> /dev/null
src=$(vm_dm_create rpsrc "0 $SECT delay /dev/ram0 0 5")
dst=$(vm_dm_create rpdst "0 $SECT delay /dev/ram1 0 5")
vm_backstore replipipe replipipe_0 vol1 "$src" > /dev/null
lun=$(vm_tcm_loop_export $SRC)

now_ms() { $DATE +%s%3N; }

# new_pair: the pipe anew, its pair fully dirty
new_pair() {
	if rp-nlctl get bench > /dev/null 2>&1; then
		rp-nlctl del-pipe bench || vm_fail "del-pipe"
	fi
	rp-nlctl set-pipe --id bench --mode sync --policy degrade --region-kib 64 \
		--pair $SRC="$dst" > /dev/null || vm_fail "set-pipe"
}

# writes SECONDS: fio on the LUN in the background (fio_pid), its per-write
# log /tmp/w_clat.1.log: "epoch ms, latency ns, ..."
writes() {
	rm -f /tmp/w_*.log
	fio --name=app --filename="$lun" --ioengine=libaio --direct=1 \
		--rw=randwrite --bs=4k --iodepth=16 --runtime="$1" --time_based \
		--write_lat_log=/tmp/w --log_unix_epoch=1 \
		--output-format=terse --terse-version=3 > /tmp/fio.out 2> /tmp/fio.err &
	fio_pid=$!
}

writes_done() {
	wait $fio_pid || vm_fail "fio: $(cat /tmp/fio.err)"
	[ -s /tmp/w_clat.1.log ] || vm_fail "fio wrote no latency log: $(cat /tmp/fio.err)"
}

# write_stats FROM TO: "IOPS p99_ms max_ms" of the writes that completed in
# [FROM, TO) (epoch ms)
write_stats() {
	awk -F', ' -v a="$1" -v b="$2" '$1 >= a && $1 < b { print $2 }' /tmp/w_clat.1.log |
		sort -n | awk -v ms=$(($2 - $1)) '{ v[NR] = $1 } END {
			if (!NR) { print "0 0 0"; exit }
			i = int(NR * 0.99); if (i < 1) i = 1
			printf "%.0f %.1f %.1f\n", NR * 1000 / ms, v[i] / 1e6, v[NR] / 1e6 }'
}

# resync BATCH_REGIONS: prints the resync's MB/s
resync() {
	rp-nlctl resync bench $SRC --batch-regions $1 > /tmp/resync ||
		vm_fail "resync: $(tail -n 2 /tmp/resync)"
	tail -n 1 /tmp/resync | grep -q "result=clean" || vm_fail "resync: $(tail -n 1 /tmp/resync)"
	tail -n 1 /tmp/resync | sed -n 's/.* mb_per_s=\([0-9.]*\)$/\1/p'
}

: > /tmp/rows
# rows are "KIND REP VALUES..."
row() { echo "$*" >> /tmp/rows; vm_log "$*"; }

# one of each, REPEAT times: the medians compare rows of the same boot
rep=1
while [ $rep -le "$REPEAT" ]; do
	new_pair
	row resync-alone-32 $rep "$(resync 512)"
	# the pair is InSync now, its legs equal
	t0=$(now_ms)
	writes 8
	writes_done
	row writes-alone $rep "$(write_stats $((t0 + 2000)) $((t0 + 8000)))"
	for batch in 512 64; do
		[ $batch = 512 ] || { new_pair; row resync-alone-4 $rep "$(resync $batch)"; }
		new_pair
		t0=$(now_ms)
		writes 14
		sleep 2
		r0=$(now_ms)
		mbs=$(resync $batch)
		r1=$(now_ms)
		writes_done
		[ $r1 -lt $((t0 + 14000)) ] || vm_fail "the resync outlasted the writes: raise fio's runtime"
		row both-$((batch / 16)) $rep "$mbs $(write_stats $r0 $r1) $((r1 - r0))"
		rp-verify --cmp /dev/ram0 /dev/ram1 > /dev/null || vm_fail "claims of $batch regions: the legs differ"
	done
	rep=$((rep + 1))
done
rp-nlctl del-pipe bench || vm_fail "del-pipe"

# median KIND FIELD: the median of a row kind's FIELD (1 = the first value)
median() {
	awk -v k="$1" -v f=$(($2 + 2)) '$1 == k { print $f }' /tmp/rows | sort -n |
		awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "BENCH resync-load: 256 MiB, dm-delay 5 ms over brd, sync pipe of 64 KiB regions, fio 4 KiB randwrite QD16 on the LUN, $REPEAT runs, medians"
echo "BENCH | what | resync MB/s | write IOPS | write p99 ms | write max ms |"
echo "BENCH |---|---|---|---|---|"
wa_iops=$(median writes-alone 1)
echo "BENCH | writes alone (InSync) | | $wa_iops | $(median writes-alone 2) | $(median writes-alone 3) |"
for n in 32 4; do
	ra=$(median resync-alone-$n 1)
	echo "BENCH | resync alone, claims of $n MiB | $ra | | | |"
	echo "BENCH | both, claims of $n MiB | $(median both-$n 1) | $(median both-$n 2) | $(median both-$n 3) | $(median both-$n 4) |"
done
echo "BENCH"
for n in 32 4; do
	echo "BENCH claims of $n MiB: resync under writes $(echo "$(median both-$n 1) $(median resync-alone-$n 1)" |
		awk '{ printf "%.2f", $1 / $2 }') x alone; writes during the resync $(echo "$(median both-$n 2) $wa_iops" |
		awk '{ printf "%.2f", $1 / $2 }') x alone (IOPS)"
done
echo "BENCH each run: $(tr '\n' ';' < /tmp/rows)"
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
