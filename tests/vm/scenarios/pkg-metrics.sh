#!/bin/sh
# Installed the package way, observed the Prometheus way (issue 8): the
# module is the one `dkms build -k KV` made (`# vm-ko: dkms`; checked: the
# file the runner recorded, signed by DKMS, is the module `modprobe` loads);
# replipiped runs as replipiped.service runs it (ExecStartPre= and
# ExecStart= of the unit in the repository, $REPLIPIPED_OPTS from the
# packaged /etc/default/replipiped plus the metrics options, the unit's
# directories and umask); a pipe over a ramdisk pair goes InSync; writes
# through a tcm_loop LUN; GET /metrics passes `promtool check metrics` and
# its pair state and mirrored writes/bytes (and the rest of the pair's
# figures) equal `replipipectl status --json` taken right after with no
# write in between; the textfile likewise; 404, 405, a non-loopback address
# refused; after delete and SIGTERM the figures, the listener and the
# textfile are gone.
# vm-timeout: 600
# vm-cost: 30
# vm-mem: 1536
# vm-ko: dkms
# vm-bins: jq promtool
# vm-files: controller/replipiped.service packaging/default/replipiped

REPO=/lib/replipipe/repo
UNIT=$REPO/controller/replipiped.service
DEFAULTS=$REPO/packaging/default/replipiped
SOCK=/run/replipipe/replipiped.sock
URL=http://127.0.0.1:9469/metrics
TEXTFILE=/var/lib/prometheus/node-exporter/replipipe.prom
DLOG=/tmp/replipiped.log
SRC=replipipe_0/v1
KV=$(uname -r)
KO=/lib/modules/$KV/extra/replipipe.ko

daemon_log_fail() {
	cat $DLOG >&2
	vm_fail "$@"
}

# unit_lines KEY: the values of KEY= in the unit, without the prefixes
# systemd reads there (- ignore failure, + full privileges, @ : !).
unit_lines() {
	sed -n "s/^$1=[-+@:!]*//p" $UNIT
}

# sample FILE NAME [LABELS]: the value of NAME{LABELS} (NAME alone without
# LABELS) in an exposition; the value is the text after the last space
# (label values may hold spaces).
sample() {
	local key=$2
	[ -z "$3" ] || key="$2{$3}"
	# ENVIRON, not -v: awk -v would undo the escapes in the key.
	KEY=$key awk '{ v = $NF; k = substr($0, 1, length($0) - length(v) - 1) }
		k == ENVIRON["KEY"] { print v; n++ } END { exit n != 1 }' "$1" ||
		{ cat "$1" >&2; vm_fail "no single sample $key in $1"; }
}

vm_log "== the unit's ExecStartPre= loads the DKMS module"
[ "$(cat /lib/replipipe/kmod-origin)" = dkms ] ||
	vm_fail "the runner did not give the DKMS build: $(cat /lib/replipipe/kmod-origin) $(cat /lib/replipipe/kmod-status)"
# The unit's first ExecStartPre= loads replipipe (its second, iscsi_tcp,
# is pkg-systemd's).
pre=$(unit_lines ExecStartPre | head -n 1)
[ "$pre" = "/sbin/modprobe replipipe" ] || vm_fail "unexpected ExecStartPre: '$pre'"
$pre || vm_fail "ExecStartPre $pre"
[ -d /sys/module/replipipe ] || vm_fail "$pre did not load replipipe"
[ "$(modinfo -F filename replipipe)" = "$KO" ] ||
	vm_fail "modprobe resolves replipipe to $(modinfo -F filename replipipe), not $KO"
[ "$(find /lib/modules -name 'replipipe.ko*' | wc -l)" = 1 ] ||
	vm_fail "more than one replipipe.ko: $(find /lib/modules -name 'replipipe.ko*')"
[ "$(sha256sum $KO | cut -d' ' -f1)" = "$(cat /lib/replipipe/kmod-sha256)" ] ||
	vm_fail "$KO is not the file dkms built on the host"
# dkms signs what it builds (the make build is unsigned): the kernel's
# signature trailer, and DKMS's key as the PKCS#7 signer (read from the
# bytes: kmod's modinfo prints no signer in this guest, on the host it does).
[ "$(tail -c 28 $KO)" = "~Module signature appended~" ] || vm_fail "$KO is not signed"
grep -q "DKMS module signing key" $KO || vm_fail "$KO is not signed by DKMS's key"
signer="DKMS module signing key"
# The loaded module is that file: its GNU build-id note (after the 16-byte
# note header) occurs in the file.
build_id=$(od -An -v -tx1 -j16 /sys/module/replipipe/notes/.note.gnu.build-id | tr -d ' \n')
[ ${#build_id} -ge 32 ] || vm_fail "no build-id of the loaded module ('$build_id')"
od -An -v -tx1 $KO | tr -d ' \n' | grep -q "$build_id" ||
	vm_fail "the loaded module's build-id $build_id is not in $KO"
[ "$(cat /sys/module/replipipe/srcversion)" = "$(modinfo -F srcversion $KO)" ] ||
	vm_fail "srcversion of the loaded module differs from $KO"
vm_log "loaded: $KO, dkms-built, signer '$signer', build-id $build_id"

vm_log "== replipiped as the unit starts it"
exec_start=$(unit_lines ExecStart)
[ "$(echo "$exec_start" | wc -l)" = 1 ] || vm_fail "not one ExecStart= in $UNIT"
case "$exec_start" in
/usr/sbin/replipiped\ *) ;;
*) vm_fail "unexpected ExecStart: '$exec_start'" ;;
esac
echo "$exec_start" | grep -q '\$REPLIPIPED_OPTS' || vm_fail "ExecStart= has no \$REPLIPIPED_OPTS"
grep -q '^EnvironmentFile=-/etc/default/replipiped$' $UNIT || vm_fail "the unit does not read /etc/default/replipiped"
# The package's files at their installed paths.
mkdir -p /usr/sbin /etc/default
ln -sf /usr/local/bin/replipiped /usr/sbin/replipiped
cp $DEFAULTS /etc/default/replipiped
# The operator's change to the packaged default file.
echo 'REPLIPIPED_OPTS="--metrics-listen 127.0.0.1:9469 --metrics-textfile '$TEXTFILE'"' >> /etc/default/replipiped
# systemd: StateDirectory=, RuntimeDirectory= (modes from the unit), UMask=.
mkdir -p -m 0700 /var/lib/replipipe
mkdir -p -m 0755 /run/replipipe $(dirname $TEXTFILE)
umask_unit=$(unit_lines UMask)
[ "$umask_unit" = 0077 ] || vm_fail "UMask=$umask_unit"
# An EnvironmentFile= of plain assignments reads the same in sh; an
# unbraced $VAR in ExecStart= is split into words, like sh's.
(
	. /etc/default/replipiped
	export REPLIPIPED_OPTS
	umask $umask_unit
	vm_log "ExecStart=$exec_start with REPLIPIPED_OPTS=$REPLIPIPED_OPTS"
	eval "exec $exec_start" 2> $DLOG
) &
dpid=$!
i=0
until [ -S $SOCK ] && wget -q -O /dev/null $URL 2> /dev/null; do
	kill -0 $dpid 2> /dev/null || daemon_log_fail "replipiped exited during start-up"
	i=$((i + 1))
	[ $i -lt 100 ] || daemon_log_fail "replipiped not serving $SOCK and $URL after 10 s"
	sleep 0.1
done
vm_log "replipiped running (pid $dpid): $(grep -o 'metrics at .*' $DLOG)"
[ -f $TEXTFILE ] || daemon_log_fail "no textfile $TEXTFILE"
[ "$(stat -c %a $TEXTFILE)" = 644 ] || vm_fail "textfile mode $(stat -c %a $TEXTFILE), not 644"

vm_log "== a pipe over a ramdisk pair"
vm_brd 2 64
dd if=/dev/urandom of=/dev/ram0 bs=1M count=64 2> /dev/null
vm_backstore replipipe replipipe_0 v1 /dev/ram0 > /dev/null
lun=$(vm_tcm_loop_export $SRC)
ref=$(replipipectl create-or-modify --name 'db "main"' --source-system localhost \
	--target-system backup1 --pair $SRC=/dev/ram1) || daemon_log_fail "create"
id=$(echo "$ref" | sed -n 's/^CIM_NetworkPipe\.InstanceID="\(replipipe:[0-9a-f-]*\)"$/\1/p')
[ -n "$id" ] || vm_fail "create printed '$ref'"
replipipectl wait "$id" --state InSync --timeout 240 ||
	{ replipipectl --json status >&2; daemon_log_fail "wait InSync"; }
# The name has quotes: the label value is escaped.
PAIR='pipe="'$id'",pipe_name="db \"main\"",source="'$SRC'",target="/dev/ram1"'

vm_log "== 16 MiB of writes through the LUN $lun"
out=$(rp-writer --dev "$lun" --log /tmp/w1 --threads 2 --bytes 16M \
	--min-size 4K --max-size 512K --seed 8) || vm_fail "rp-writer: $out"
echo "$out"
rp-verify --cmp /dev/ram0 /dev/ram1 || vm_fail "the legs differ after the writes"

vm_log "== scrape, then status --json (no write in between)"
wget -q -O /tmp/scrape.prom $URL || daemon_log_fail "GET $URL"
replipipectl --json status > /tmp/status.json || vm_fail "status --json"
grep "^replipipe_pair_\|^replipipe_pipes\|^replipipe_pairs" /tmp/scrape.prom
cat /tmp/status.json
promtool check metrics < /tmp/scrape.prom || vm_fail "promtool check metrics rejects the scrape"
vm_log "promtool check metrics: clean"

# compare FILE: the pair's figures in FILE equal those of /tmp/status.json.
compare() {
	local st m path
	st=$(jq -r '.pipes[0].pairs[0].state' /tmp/status.json)
	[ "$st" = InSync ] || vm_fail "status --json says $st"
	for s in Syncing InSync Degraded Paused; do
		want=0
		[ $s != "$st" ] || want=1
		[ "$(sample "$1" replipipe_pair_state "$PAIR,state=\"$s\"")" = $want ] ||
			vm_fail "$1: replipipe_pair_state{state=$s} is not $want (status: $st)"
	done
	[ "$(grep -c '^replipipe_pair_state{' "$1")" = 4 ] || vm_fail "$1: not 4 pair_state samples"
	for m in mirrored_bytes_total:bytes_mirrored mirrored_writes_total:writes_mirrored \
		target_errors_total:target_errors lag_bytes:lag_bytes source_bytes:source_bytes \
		resync_done_bytes:resync.done_bytes resync_total_bytes:resync.total_bytes \
		resync_rate_bytes_per_second:resync.rate_bytes_per_s; do
		path=${m#*:}
		want=$(jq -r ".pipes[0].pairs[0].$path" /tmp/status.json)
		got=$(sample "$1" replipipe_pair_${m%%:*} "$PAIR")
		[ "$got" = "$want" ] || vm_fail "$1: replipipe_pair_${m%%:*} $got, status --json .$path $want"
	done
	[ "$(sample "$1" replipipe_pair_dirty_bytes "$PAIR")" = 0 ] || vm_fail "$1: dirty bytes while InSync"
	[ "$(sample "$1" replipipe_pipes)" = 1 ] || vm_fail "$1: replipipe_pipes"
	[ "$(sample "$1" replipipe_pairs)" = 1 ] || vm_fail "$1: replipipe_pairs"
}
compare /tmp/scrape.prom
bytes=$(jq -r '.pipes[0].pairs[0].bytes_mirrored' /tmp/status.json)
writes=$(jq -r '.pipes[0].pairs[0].writes_mirrored' /tmp/status.json)
[ "$bytes" -ge 16777216 ] || vm_fail "only $bytes bytes mirrored after 16 MiB of writes"
[ "$writes" -ge 32 ] || vm_fail "only $writes writes mirrored"
vm_log "scrape = status --json: InSync, $writes writes, $bytes bytes mirrored"

vm_log "== the textfile (rewritten every 5 s)"
sleep 6
cp $TEXTFILE /tmp/textfile.prom
replipipectl --json status > /tmp/status.json || vm_fail "status --json"
promtool check metrics < /tmp/textfile.prom || vm_fail "promtool check metrics rejects the textfile"
compare /tmp/textfile.prom
files=$(ls -a "$(dirname $TEXTFILE)") || vm_fail "cannot list $(dirname $TEXTFILE)"
echo "$files" | grep -q '\.tmp$' && vm_fail "a temporary file is left beside $TEXTFILE"
vm_log "textfile = status --json"

vm_log "== not /metrics, not GET, not loopback"
set +e
out=$(wget -q -O /dev/null http://127.0.0.1:9469/ 2>&1)
rc=$?
set -e
[ $rc != 0 ] && echo "$out" | grep -q '404' || vm_fail "GET /: rc $rc, '$out' (want 404)"
set +e
out=$(wget -q -O /dev/null --post-data x $URL 2>&1)
rc=$?
set -e
[ $rc != 0 ] && echo "$out" | grep -q '405' || vm_fail "POST /metrics: rc $rc, '$out' (want 405)"
set +e
out=$(replipiped --foreground --metrics-listen 0.0.0.0:9470 2>&1)
rc=$?
set -e
[ $rc = 64 ] && echo "$out" | grep -q 'not a loopback address' ||
	vm_fail "--metrics-listen 0.0.0.0: rc $rc, '$out' (want 64)"
vm_log "404, 405 and a refused 0.0.0.0 (exit 64)"

vm_log "== delete, stop"
replipipectl delete "$id" || daemon_log_fail "delete"
wget -q -O /tmp/after.prom $URL || daemon_log_fail "GET after delete"
grep -q '^replipipe_pipes 0$' /tmp/after.prom || vm_fail "replipipe_pipes is not 0 after delete"
! grep -q '^replipipe_pair_' /tmp/after.prom || vm_fail "pair samples after delete"
vm_tcm_loop_unexport $SRC
kill -TERM $dpid
set +e
wait $dpid
rc=$?
set -e
[ $rc = 0 ] || daemon_log_fail "replipiped exited $rc on SIGTERM"
[ ! -e $TEXTFILE ] || vm_fail "the textfile is still there after a clean stop"
! wget -q -O /dev/null $URL 2> /dev/null || vm_fail "$URL still answers after stop"
vm_log "stopped: listener closed, textfile removed"
