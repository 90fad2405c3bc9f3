#!/bin/sh
# replipiped + replipipectl end to end, driven only through the CLI of
# DESIGN.md's "CLI contract" (rp-nlctl is used only to look at the kernel):
# a replipipe backstore on /dev/ram0 (random content) exported through
# tcm_loop; `create-or-modify` a pipe to /dev/ram1; `wait` InSync; 64 MiB of
# random writes through the LUN; legs identical; `status --json` has the
# contract's keys; a modify that keeps the pair (no resync); a modify to
# /dev/ram2 (the old pair stops: /dev/ram1 no longer changes; the new pair
# resyncs, then identical); invalid calls (count mismatch through the control
# socket, unknown Goal property, target smaller than source, unknown pipe)
# return their codes and change neither `status --json`, the kernel nor the
# store; `delete` removes the pipe from kernel and store. Then a second pipe
# (asynchronous, 128 KiB regions) on two loop-device backstores: a Goal that
# names only ResyncRateLimitKiBps keeps mode and region size; a kept target
# under a /dev/disk/by-id name is that pair, kept (nothing changes); a used
# target or primary under another path is 5; one modify swaps the two pairs'
# targets (decision 25): both resync, the legs are identical, the settings
# stay.
# vm-timeout: 600
# vm-cost: 55
# vm-mem: 1024
# vm-bins: jq socat

STORE=/var/lib/replipipe/pipes.json
SOCK=/run/replipipe/replipiped.sock
DLOG=/tmp/replipiped.log
SRC=replipipe_0/v1

# snap NAME: status --json, the kernel's view and the store, to compare.
snap() {
	replipipectl --json status > /tmp/snap.$1.status || vm_fail "status --json"
	rp-nlctl get > /tmp/snap.$1.kernel || vm_fail "rp-nlctl get"
	cp $STORE /tmp/snap.$1.store || vm_fail "no store $STORE"
}

# unchanged A B WHAT: the snapshots A and B are byte-identical.
unchanged() {
	local k
	for k in status kernel store; do
		if ! cmp /tmp/snap.$1.$k /tmp/snap.$2.$k; then
			diff /tmp/snap.$1.$k /tmp/snap.$2.$k >&2 || true
			vm_fail "$3 changed the $k"
		fi
	done
	vm_log "unchanged after $3: status --json, kernel, store"
}

# jcheck FILE WHAT JQ-ARGS...: the jq expression (last argument) is true.
jcheck() {
	local f=$1 what=$2
	shift 2
	jq -e "$@" < "$f" > /dev/null || { cat "$f" >&2; vm_fail "status --json: $what"; }
}

daemon_log_fail() {
	cat $DLOG >&2
	vm_fail "$@"
}

started_count() { grep -c "pair $SRC -> .*: started" $DLOG || true; }

vm_brd 3 64
vm_modprobe replipipe
vm_modprobe loop
# The source has content before the pipe exists: the initial resync copies it.
dd if=/dev/urandom of=/dev/ram0 bs=1M count=64 2>/dev/null
vm_backstore replipipe replipipe_0 v1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
vm_log "LUN $lun"

mkdir -p /run /var/lib
replipiped --log-level debug 2> $DLOG || daemon_log_fail "replipiped did not start"
[ -S $SOCK ] || daemon_log_fail "no socket $SOCK"
vm_log "replipiped running, pid $(pidof replipiped)"

vm_log "== create"
ref=$(replipipectl create-or-modify --name db --source-system localhost \
	--target-system backup1 --pair $SRC=/dev/ram1) || daemon_log_fail "create"
vm_log "created: $ref"
id=$(echo "$ref" | sed -n 's/^CIM_NetworkPipe\.InstanceID="\(replipipe:[0-9a-f-]*\)"$/\1/p')
[ -n "$id" ] || vm_fail "create printed '$ref', not a CIM_NetworkPipe reference"
uuid=${id#replipipe:}
rp-nlctl get | grep -q "^pipe id=$uuid " || { rp-nlctl get; vm_fail "pipe $uuid not in the kernel"; }
replipipectl status db

t0=$(cut -d' ' -f1 /proc/uptime)
replipipectl wait db --state InSync --timeout 240 ||
	{ replipipectl --json status >&2; daemon_log_fail "wait InSync after create"; }
vm_log "InSync after $(echo "$(cut -d' ' -f1 /proc/uptime) - $t0" | bc) s"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "legs differ after the initial resync"

vm_log "== 64 MiB of random writes through the LUN"
out=$(rp-writer --dev "$lun" --log /tmp/w1 --threads 4 --bytes 64M \
	--min-size 4K --max-size 1M --seed 11) || vm_fail "rp-writer: $out"
echo "$out"
rp-verify --dev "$lun" /tmp/w1.* || vm_fail "data through the LUN"
rp-verify --dev /dev/ram1 /tmp/w1.* || vm_fail "data on the replica /dev/ram1"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "the legs differ after the writes"

vm_log "== status --json"
replipipectl --json status > /tmp/st.json || vm_fail "status --json"
cat /tmp/st.json
jcheck /tmp/st.json "one pipe" '.pipes | length == 1'
jcheck /tmp/st.json "the pipe's keys" '.pipes[0] | has("ref") and has("instance_id")
	and has("name") and has("source_system") and has("target_system")
	and has("mode") and (.pairs | type == "array" and length == 1)'
jcheck /tmp/st.json "the pair's keys" '.pipes[0].pairs[0] | has("source")
	and has("target") and has("state") and (.resync | type == "object")
	and (.resync.done_bytes | type == "number")
	and (.resync.total_bytes | type == "number")
	and (.resync.rate_bytes_per_s | type == "number")'
jcheck /tmp/st.json "the pipe's values" --arg ref "$ref" --arg id "$id" \
	'.pipes[0] | .ref == $ref and .instance_id == $id and .name == "db"
	and .source_system == "localhost" and .target_system == "backup1"
	and .mode == "Synchronous"'
jcheck /tmp/st.json "the pair's values" --arg src $SRC \
	'.pipes[0].pairs[0] | .source == $src and .target == "/dev/ram1"
	and .state == "InSync"'
jcheck /tmp/st.json "the initial resync: done = total = 64 MiB" \
	'.pipes[0].pairs[0].resync | .done_bytes == 67108864 and .total_bytes == 67108864'
replipipectl --json list > /tmp/list.json || vm_fail "list --json"
jcheck /tmp/list.json "list --json" --arg ref "$ref" \
	'.pipes | length == 1 and .[0].ref == $ref'
replipipectl status
replipipectl list

vm_log "== modify the Goal only (NULL endpoints keep the pair: no resync)"
n0=$(started_count)
vm_expect_rc 0 replipipectl create-or-modify --name "" --source-system localhost \
	--target-system backup1 --pipe db \
	--goal 'instance of CIM_SettingData { ResyncRateLimitKiBps = 8192; };'
[ "$OUT" = "$ref" ] || vm_fail "modify printed '$OUT', not $ref"
sleep 2
[ "$(started_count)" = "$n0" ] || daemon_log_fail "a modify that keeps the pair started a resync"
pair=$(rp-nlctl get $uuid | grep "^pair ") || vm_fail "no pair in the kernel"
echo "$pair"
case "$pair" in *" target=/dev/ram1 state=InSync "*" dirty=0 "*) ;;
*) vm_fail "the kept pair is not InSync/clean: $pair" ;; esac
replipipectl --json status db | jq -e '.pipes[0] | .name == "db" and
	.resync_rate_limit_kibps == 8192 and .pairs[0].state == "InSync"' > /dev/null ||
	{ replipipectl --json status db >&2; vm_fail "status after the Goal-only modify"; }

vm_log "== modify: the pair moves to /dev/ram2"
n0=$(started_count)
vm_expect_rc 0 replipipectl create-or-modify --name db --source-system localhost \
	--target-system backup1 --pipe "$ref" --pair $SRC=/dev/ram2
[ "$OUT" = "$ref" ] || vm_fail "modify printed '$OUT', not $ref"
k=$(rp-nlctl get $uuid)
echo "$k"
[ "$(echo "$k" | grep -c '^pair ')" = 1 ] || vm_fail "the kernel does not have exactly one pair"
echo "$k" | grep -q "^pair .* target=/dev/ram2 " || vm_fail "the kernel's pair is not to /dev/ram2"
sum1=$(vm_sum /dev/ram1 64M)
vm_log "== 8 MiB of writes after the modify: /dev/ram1 must not change"
out=$(rp-writer --dev "$lun" --log /tmp/w2 --threads 4 --bytes 8M \
	--min-size 4K --max-size 256K --seed 22) || vm_fail "rp-writer: $out"
echo "$out"
[ "$(vm_sum /dev/ram1 64M)" = "$sum1" ] || vm_fail "writes after the modify reached the old target /dev/ram1"
if rp-verify --dev /dev/ram1 /tmp/w1.* /tmp/w2.* > /tmp/old.txt 2>&1; then
	vm_fail "the old target holds the writes made after the modify"
fi
vm_log "old target unchanged: $(grep '^verify:' /tmp/old.txt)"
replipipectl wait db --timeout 240 ||
	{ replipipectl --json status >&2; daemon_log_fail "wait InSync after the modify"; }
[ "$(started_count)" -gt "$n0" ] || daemon_log_fail "no resync started for the new pair"
rp-verify --dev "$lun" /tmp/w1.* /tmp/w2.* || vm_fail "data through the LUN after the modify"
rp-verify --dev /dev/ram2 /tmp/w1.* /tmp/w2.* || vm_fail "data on the new replica /dev/ram2"
rp-verify --cmp /dev/ram0 /dev/ram2 || vm_fail "the legs differ after the new pair's resync"
replipipectl --json status > /tmp/st2.json
jcheck /tmp/st2.json "after the modify" --arg src $SRC '.pipes[0].pairs | length == 1
	and .[0].source == $src and .[0].target == "/dev/ram2" and .[0].state == "InSync"
	and .[0].resync.done_bytes == .[0].resync.total_bytes'
jq -e '.pipes[0].pairs | length == 1 and .[0].target == "/dev/ram2"' $STORE > /dev/null ||
	{ cat $STORE >&2; vm_fail "the store does not hold the modified pair"; }
replipipectl status

vm_log "== invalid calls change nothing"
# A loop device smaller than the source (32 MiB < 64 MiB).
truncate -s 32M /tmp/small.img
losetup /dev/loop0 /tmp/small.img || vm_fail "losetup"
# 0: nothing runs; take the snapshot twice to show status --json is stable.
snap before
sleep 1
snap again
unchanged before again "nothing"

# Count mismatch: --pair always gives arrays of equal length, so the call
# goes to the socket directly (docs/cli.md, "The control protocol").
for req in \
	'{"v": 1, "op": "create_or_modify", "PipeElementName": "db", "SourceSystem": "localhost", "TargetSystem": "backup1", "SourceEndpoint": ["replipipe_0/v1"], "TargetEndpoint": ["/dev/ram1", "/dev/ram2"], "Goal": "", "ReplicationPipe": "db"}' \
	'{"v": 1, "op": "create_or_modify", "PipeElementName": "db", "SourceSystem": "localhost", "TargetSystem": "backup1", "SourceEndpoint": ["replipipe_0/v1"], "TargetEndpoint": null, "Goal": "", "ReplicationPipe": "db"}' \
	'{"v": 1, "op": "create_or_modify", "PipeElementName": "db2", "SourceSystem": "localhost", "TargetSystem": "backup1", "SourceEndpoint": [], "TargetEndpoint": ["/dev/ram1"], "Goal": "", "ReplicationPipe": null}'; do
	reply=$(echo "$req" | socat -t 10 - UNIX-CONNECT:$SOCK) || vm_fail "socat"
	echo "request: $req" >&2
	echo "reply:   $reply" >&2
	echo "$reply" | jq -e '.ok == false and .ReturnValue == 5' > /dev/null ||
		vm_fail "count mismatch: not ReturnValue 5: $reply"
	echo "$reply" | jq -r .error | grep -qi "SourceEndpoint.*TargetEndpoint" ||
		vm_fail "count mismatch: the error does not name the arrays: $reply"
	snap after
	unchanged before after "a count mismatch"
done

vm_expect_rc 5 replipipectl create-or-modify --name db --source-system localhost \
	--target-system backup1 --pipe db \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; Colour = 3; };'
echo "$OUT" | grep -q Colour || vm_fail "the error does not name the unknown property"
snap after
unchanged before after "an unknown Goal property (modify)"
vm_expect_rc 5 replipipectl --json create-or-modify --name db2 --source-system localhost \
	--target-system backup1 --goal 'instance of CIM_SettingData { Colour = 3; };'
echo "$OUT" | jq -e '.ReturnValue == 5 and (.Error | contains("Colour"))' > /dev/null ||
	vm_fail "--json failure output: $OUT"
snap after
unchanged before after "an unknown Goal property (create)"

vm_expect_rc 4 replipipectl create-or-modify --name db --source-system localhost \
	--target-system backup1 --pipe db --pair $SRC=/dev/loop0
echo "$OUT" | grep -q "smaller" || vm_fail "the error does not say the target is smaller"
snap after
unchanged before after "a target smaller than the source"

for p in nosuch 'replipipe:00000000-0000-4000-8000-000000000000' \
	'CIM_NetworkPipe.InstanceID="replipipe:00000000-0000-4000-8000-000000000000"'; do
	vm_expect_rc 5 replipipectl create-or-modify --name db --source-system localhost \
		--target-system backup1 --pipe "$p" --pair $SRC=/dev/ram1
	snap after
	unchanged before after "modify of the unknown pipe $p"
done
vm_expect_rc 5 replipipectl delete nosuch
vm_expect_rc 5 replipipectl status nosuch
vm_expect_rc 5 replipipectl wait nosuch --timeout 5
snap after
unchanged before after "delete/status/wait of an unknown pipe"

vm_log "== delete"
vm_expect_rc 0 replipipectl delete db
[ "$OUT" = "deleted $ref" ] || vm_fail "delete printed '$OUT'"
k=$(rp-nlctl get)
[ -z "$k" ] || { echo "$k"; vm_fail "the kernel still has a pipe after delete"; }
cat $STORE
jq -e '.pipes == []' $STORE > /dev/null || vm_fail "the store still has a pipe after delete"
replipipectl --json status | jq -e '.pipes == []' > /dev/null || vm_fail "status --json after delete"
vm_expect_rc 5 replipipectl status db
# The data stays; the LUN still works without the pipe.
rp-verify --dev "$lun" /tmp/w1.* /tmp/w2.* || vm_fail "data through the LUN after delete"

vm_log "== modify: targets moved between the pairs of one pipe, endpoints under another path"
# Two 16 MiB backstores on loop devices; /dev/disk/by-id names made by hand
# (no udev in the guest).
for n in 2 3; do
	truncate -s 16M /tmp/v$n.img
	losetup /dev/loop$n /tmp/v$n.img || vm_fail "losetup /dev/loop$n"
	dd if=/dev/urandom of=/dev/loop$n bs=1M count=16 2>/dev/null
	vm_backstore replipipe replipipe_0 v$n /dev/loop$n > /dev/null
done
SRC2=replipipe_0/v2
SRC3=replipipe_0/v3
mkdir -p /dev/disk/by-id
ln -sf ../../ram1 /dev/disk/by-id/rp-ram1
ln -sf ../../loop2 /dev/disk/by-id/rp-loop2
pairs_started() { grep -c "pair .* -> .*: started" $DLOG || true; }
mvref=$(replipipectl create-or-modify --name mv --source-system localhost \
	--target-system backup1 --pair $SRC2=/dev/ram1 --pair $SRC3=/dev/ram2 \
	--goal 'instance of CIM_SettingData { Mode = "Asynchronous"; RegionSizeKiB = 128; };') ||
	daemon_log_fail "create mv"
mvuuid=$(echo "$mvref" | sed -n 's/^CIM_NetworkPipe\.InstanceID="replipipe:\([0-9a-f-]*\)"$/\1/p')
replipipectl wait mv --state InSync --timeout 240 ||
	{ replipipectl --json status >&2; daemon_log_fail "wait InSync after create mv"; }

vm_log "== a Goal that names only ResyncRateLimitKiBps keeps the rest (decision 6)"
n0=$(pairs_started)
vm_expect_rc 0 replipipectl create-or-modify --name "" --source-system localhost \
	--target-system backup1 --pipe mv \
	--goal 'instance of CIM_SettingData { ResyncRateLimitKiBps = 4096; };'
replipipectl --json status mv > /tmp/mv.json
jcheck /tmp/mv.json "after the Goal-only modify of mv" '.pipes[0] | .mode == "Asynchronous"
	and .region_kib == 128 and .resync_rate_limit_kibps == 4096
	and (.pairs | length == 2 and all(.state == "InSync"))'
rp-nlctl get $mvuuid | grep -q "^pipe .* mode=async .* region_kib=128 " ||
	{ rp-nlctl get $mvuuid; vm_fail "the kernel's pipe is no longer async with 128 KiB regions"; }
sleep 2
[ "$(pairs_started)" = "$n0" ] || daemon_log_fail "the Goal-only modify of mv started a resync"

snap mv0
vm_log "== a kept target under another path: the same pair, kept (no resync)"
vm_expect_rc 0 replipipectl create-or-modify --name mv --source-system localhost \
	--target-system backup1 --pipe mv --pair $SRC2=/dev/disk/by-id/rp-ram1 --pair $SRC3=/dev/ram2
snap mv1
unchanged mv0 mv1 "a kept target under another path"

vm_log "== a used endpoint under another path is 5"
vm_expect_rc 5 replipipectl create-or-modify --name other --source-system localhost \
	--target-system backup1 --pair $SRC=/dev/disk/by-id/rp-ram1
echo "$OUT" | grep -q "already the target of $SRC2 (as /dev/ram1)" || vm_fail "not named as reused"
vm_expect_rc 5 replipipectl create-or-modify --name other --source-system localhost \
	--target-system backup1 --pair $SRC=/dev/disk/by-id/rp-loop2
echo "$OUT" | grep -q "is the primary device of $SRC2" || vm_fail "not named as a primary"
vm_expect_rc 5 replipipectl create-or-modify --name mv --source-system localhost \
	--target-system backup1 --pipe mv --pair $SRC2=/dev/ram1 --pair $SRC3=/dev/disk/by-id/rp-ram1
echo "$OUT" | grep -q "given twice (as /dev/ram1)" || vm_fail "not named as given twice"
snap mv1
unchanged mv0 mv1 "endpoints reused under another path"

vm_log "== one modify swaps the two pairs' targets (decision 25): both pairs resync"
n0=$(pairs_started)
vm_expect_rc 0 replipipectl create-or-modify --name mv --source-system localhost \
	--target-system backup1 --pipe mv --pair $SRC2=/dev/ram2 --pair $SRC3=/dev/ram1
rp-nlctl get $mvuuid > /tmp/mv.kernel
grep -q "^pair .* source=$SRC2 target=/dev/ram2 " /tmp/mv.kernel &&
	grep -q "^pair .* source=$SRC3 target=/dev/ram1 " /tmp/mv.kernel ||
	{ cat /tmp/mv.kernel; vm_fail "the kernel's pairs are not the swapped ones"; }
replipipectl wait mv --state InSync --timeout 240 ||
	{ replipipectl --json status >&2; daemon_log_fail "wait InSync after the swap"; }
[ "$(pairs_started)" -ge $((n0 + 2)) ] || daemon_log_fail "the swap did not start two resyncs"
vm_cmp_devs /dev/loop2 /dev/ram2 16M
vm_cmp_devs /dev/loop3 /dev/ram1 16M
replipipectl --json status mv | jq -e '.pipes[0] | .mode == "Asynchronous" and .region_kib == 128' > /dev/null ||
	vm_fail "the settings changed with the pairs"
vm_expect_rc 0 replipipectl delete mv
for n in 2 3; do
	vm_backstore_delete replipipe_0/v$n
	losetup -d /dev/loop$n
done

vm_log "== stop"
pid=$(pidof replipiped)
kill -TERM $pid
i=0
while kill -0 $pid 2> /dev/null; do
	sleep 0.1
	i=$((i + 1))
	[ $i -lt 100 ] || vm_fail "replipiped did not stop on SIGTERM"
done
[ ! -e $SOCK ] || vm_fail "socket left behind"
vm_tcm_loop_unexport $SRC
vm_backstore_delete $SRC
losetup -d /dev/loop0
echo "---- replipiped log" >&2
cat $DLOG >&2
grep -q '^<[0-3]>' $DLOG && vm_log "note: the daemon logged errors (above)"
vm_log "cli-pipe done"
