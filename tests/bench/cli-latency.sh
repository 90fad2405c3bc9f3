#!/bin/sh
# Latency of `replipipectl create-or-modify`, end to end as a script sees it
# (fork + exec of replipipectl, the socket round trip, the daemon's work:
# parse, verify, kernel SET_PIPE, atomic store write with fsyncs), for N
# pipes (default 100) in one boot:
#   create      N creates without pairs (the store grows from 0 to N pipes)
#   add pair    N modifies that add one pair between fresh 1 MiB ramdisks;
#               resync time excluded: the call returns before the resync and
#               an untimed `wait` lets the pair reach InSync before the next
#               call, so no resync runs during a timed call
#   Goal only   N modifies that change the Goal and keep the pair (no resync)
# plus, for context, `delete`, `status --json` with N pipes, and
# `replipipectl --help` (process start only, no socket). Under TCG the start
# of a process dominates, so the same Goal-only modify is also sent as the
# raw JSON request with socat (docs/cli.md, "The control protocol") next to
# `socat -V` (socat's start): the differences of the medians estimate the
# socket round trip plus the daemon's work. Times come from bash's
# $EPOCHREALTIME (busybox date has no sub-second clock).
# Run: tests/bench/run-bench.sh cli-latency
# vm-timeout: 900
# vm-mem: 1024
# vm-bins: bash socat

N=${BENCH_PIPES:-100}
DLOG=/tmp/replipiped.log

vm_brd $((2 * N)) 1
vm_modprobe replipipe
vm_backstore replipipe replipipe_0 v0 /dev/ram0 > /dev/null
i=1
while [ $i -lt $N ]; do
	d=/sys/kernel/config/target/core/replipipe_0/v$i
	mkdir $d || vm_fail "mkdir $d"
	echo "udev_path=/dev/ram$i" > $d/control || vm_fail "control of v$i"
	echo 1 > $d/enable || vm_fail "enable v$i"
	i=$((i + 1))
done
vm_log "$N replipipe backstores on /dev/ram0..$((N - 1)), targets /dev/ram$N..$((2 * N - 1))"

mkdir -p /run /var/lib
replipiped --log-level notice 2> $DLOG || { cat $DLOG >&2; vm_fail "replipiped did not start"; }

cat > /tmp/lat.bash << 'EOF'
set -u
N=$1
now() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
# timed FILE CMD...: run CMD (stdout to /tmp/out), append its microseconds
# to FILE; the run fails on a non-zero exit.
timed() {
	local f=$1 t0 t1 t rc=0
	shift
	t0=$EPOCHREALTIME
	"$@" > /tmp/out 2> /tmp/err || rc=$?
	t1=$EPOCHREALTIME
	if [ $rc != 0 ]; then
		echo "[vm] FAIL: exit $rc: $* ($(cat /tmp/err))" >&2
		exit 1
	fi
	echo $(( 10#${t1/./} - 10#${t0/./} )) >> "$f"
}
ms() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
# row LABEL FILE...: n, p50, p90, p99, max (nearest rank) in ms.
row() {
	local label=$1 n p50 p90 p99 max
	shift
	cat "$@" | sort -n > /tmp/sorted
	n=$(wc -l < /tmp/sorted)
	pick() { sed -n "$(( ($1 * n + 99) / 100 ))p" /tmp/sorted; }
	p50=$(pick 50); p90=$(pick 90); p99=$(pick 99); max=$(tail -n 1 /tmp/sorted)
	printf 'BENCH | %-44s | %4d | %7s | %7s | %7s | %7s |\n' "$label" "$n" \
		"$(ms $p50)" "$(ms $p90)" "$(ms $p99)" "$(ms $max)"
	LAST_P50=$p50
	LAST_P99=$p99
}
GOAL='instance of CIM_SettingData { ResyncRateLimitKiBps = 65536; };'
rm -f /tmp/t.*
for ((i = 0; i < N; i++)); do
	timed /tmp/t.help replipipectl --help
done
for ((i = 0; i < N; i++)); do
	timed /tmp/t.create replipipectl create-or-modify --name p$i \
		--source-system localhost --target-system peer
done
echo "[vm] created $N pipes" >&2
for ((i = 0; i < N; i++)); do
	timed /tmp/t.add replipipectl create-or-modify --name "" \
		--source-system localhost --target-system peer --pipe p$i \
		--pair replipipe_0/v$i=/dev/ram$((N + i))
	replipipectl wait p$i --timeout 120 > /dev/null || { echo "[vm] FAIL: wait p$i" >&2; exit 1; }
done
echo "[vm] $N pairs added and InSync" >&2
for ((i = 0; i < N; i++)); do
	timed /tmp/t.goal replipipectl create-or-modify --name "" \
		--source-system localhost --target-system peer --pipe p$i --goal "$GOAL"
done
for ((i = 0; i < N; i++)); do
	timed /tmp/t.sbase socat -V
done
SOCK=/run/replipipe/replipiped.sock
for ((i = 0; i < N; i++)); do
	req='{"v": 1, "op": "create_or_modify", "PipeElementName": "", "SourceSystem": "localhost", "TargetSystem": "peer", "Goal": "instance of CIM_SettingData { ResyncRateLimitKiBps = 32768; };", "ReplicationPipe": "p'$i'"}'
	timed /tmp/t.sgoal socat -t 10 - UNIX-CONNECT:$SOCK <<< "$req"
	grep -q '"ok":true' /tmp/out || { echo "[vm] FAIL: socat p$i: $(cat /tmp/out)" >&2; exit 1; }
done
for ((i = 0; i < 20; i++)); do
	timed /tmp/t.status replipipectl --json status
done
pipes=$(replipipectl --json status | grep -o '"instance_id"' | wc -l)
insync=$(replipipectl --json status | grep -o '"state": *"InSync"' | wc -l)
echo "[vm] status: $pipes pipes, $insync pairs InSync" >&2
[ "$pipes" = "$N" ] && [ "$insync" = "$N" ] || { echo "[vm] FAIL: status" >&2; exit 1; }
for ((i = 0; i < N; i++)); do
	timed /tmp/t.delete replipipectl delete p$i
done

echo "BENCH cli-latency: $N pipes, replipipectl end to end, milliseconds (nearest-rank percentiles)"
printf 'BENCH | %-44s | %4s | %7s | %7s | %7s | %7s |\n' operation n p50 p90 p99 max
echo "BENCH |----------------------------------------------|------|---------|---------|---------|---------|"
row "create-or-modify: create, no pairs" /tmp/t.create
row "create-or-modify: modify, add a pair" /tmp/t.add
row "create-or-modify: modify, Goal only" /tmp/t.goal
row "create-or-modify: all of the above" /tmp/t.create /tmp/t.add /tmp/t.goal
p99=$LAST_P99
all50=$LAST_P50
row "delete" /tmp/t.delete
row "status --json ($N pipes)" /tmp/t.status
row "replipipectl --help (process start only)" /tmp/t.help
help50=$LAST_P50
row "socat: modify, Goal only (raw JSON request)" /tmp/t.sgoal
sgoal50=$LAST_P50
row "socat -V (process start only)" /tmp/t.sbase
sbase50=$LAST_P50
echo "BENCH estimate of the socket round trip + the daemon's work (differences of medians):"
echo "BENCH   replipipectl: create-or-modify p50 $(ms $all50) - start p50 $(ms $help50) = $(ms $((all50 - help50))) ms"
echo "BENCH   socat: Goal-only modify p50 $(ms $sgoal50) - start p50 $(ms $sbase50) = $(ms $((sgoal50 - sbase50))) ms"
if [ "$p99" -lt 50000 ]; then
	echo "BENCH target: create-or-modify p99 $(ms $p99) ms < 50 ms: met"
else
	echo "BENCH target: create-or-modify p99 $(ms $p99) ms < 50 ms: NOT met"
fi
EOF
bash /tmp/lat.bash "$N" || { cat $DLOG >&2; vm_fail "the timing run"; }
kill -TERM $(pidof replipiped)
grep '^<[0-4]>' $DLOG >&2 || true
vm_log "cli-latency done"
