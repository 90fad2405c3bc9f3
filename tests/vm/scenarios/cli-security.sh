#!/bin/sh
# Who may drive replipipe. The control socket: root and members of group
# replipipe (rpadmin) are served; rpuser (uid 1000, not in the group) and
# nobody are refused with replipipectl exit 77 and a clear message, both by
# the socket's file mode and, with the socket opened up to everyone, by the
# daemon's SO_PEERCRED check. The kernel's generic netlink family: rpuser
# (and rpadmin: the group is the daemon's, not the kernel's) gets EPERM for
# every command that changes something. Nothing the refused users try changes
# the pipes.
# vm-timeout: 400
# vm-cost: 25
# vm-mem: 512
# vm-bins: jq

SOCK=/run/replipipe/replipiped.sock
STORE=/var/lib/replipipe/pipes.json
SRC=replipipe_0/v1
DLOG=/tmp/replipiped.log

# as_rc USER WANT 'CMD': run CMD as USER, fail unless it exits WANT; output
# (stdout and stderr) in $OUT.
as_rc() {
	local user=$1 want=$2
	set +e
	OUT=$(vm_as "$user" "$3" 2>&1)
	RC=$?
	set -e
	echo "$OUT" >&2
	[ "$RC" = "$want" ] || vm_fail "as $user: exit $RC (want $want): $3"
	vm_log "ok, as $user exit $RC: $3"
}

snap() {
	replipipectl --json status > /tmp/snap.$1.status || vm_fail "status --json"
	rp-nlctl get > /tmp/snap.$1.kernel || vm_fail "rp-nlctl get"
	cp $STORE /tmp/snap.$1.store
}

unchanged() {
	local k
	for k in status kernel store; do
		cmp /tmp/snap.before.$k /tmp/snap.after.$k ||
			{ diff /tmp/snap.before.$k /tmp/snap.after.$k >&2 || true; vm_fail "$1 changed the $k"; }
	done
	vm_log "nothing changed after $1"
}

# refused USER 'CMD' [MESSAGE]: replipipectl exits 77 with a clear message.
refused() {
	as_rc "$1" 77 "$2"
	echo "$OUT" | grep -q "permission denied" || vm_fail "as $1: no 'permission denied' in: $OUT"
	[ -z "${3:-}" ] || echo "$OUT" | grep -qF "$3" || vm_fail "as $1: the message is not '$3': $OUT"
}

# eperm USER 'rp-nlctl ...': the kernel refuses with EPERM.
eperm() {
	as_rc "$1" 1 "$2"
	echo "$OUT" | grep -q "errno EPERM" || vm_fail "as $1: not EPERM: $OUT"
}

vm_brd 2 16
vm_modprobe replipipe
vm_backstore replipipe replipipe_0 v1 /dev/ram0 > /dev/null
mkdir -p /run /var/lib
replipiped --log-level debug 2> $DLOG || { cat $DLOG >&2; vm_fail "replipiped did not start"; }
ref=$(replipipectl create-or-modify --name db --source-system localhost \
	--target-system backup1 --pair $SRC=/dev/ram1) || { cat $DLOG >&2; vm_fail "create"; }
replipipectl wait db --timeout 120 || { cat $DLOG >&2; vm_fail "wait"; }
uuid=$(echo "$ref" | sed -n 's/.*InstanceID="replipipe:\([0-9a-f-]*\)"$/\1/p')
ls -ld /run/replipipe $SOCK /var/lib/replipipe $STORE >&2
id rpuser >&2
id rpadmin >&2
[ "$(stat -c %a:%G $SOCK)" = "660:replipipe" ] || vm_fail "socket mode/group: $(stat -c %a:%G $SOCK)"
snap before

vm_log "== the socket as it is (0660, group replipipe)"
refused rpuser 'replipipectl list'
refused rpuser 'replipipectl status db'
refused rpuser "replipipectl create-or-modify --name x --source-system localhost --target-system b"
refused rpuser "replipipectl delete db"
refused nobody 'replipipectl list'
as_rc rpuser 77 'replipipectl --json list'
echo "$OUT" | jq -e '.code == "permission_denied" and (.Error | test("permission denied"))' > /dev/null ||
	vm_fail "--json refusal: $OUT"
snap after
unchanged "the refused calls"

vm_log "== the socket opened to everyone (0666): the daemon's SO_PEERCRED check"
chmod 0666 $SOCK
refused rpuser 'replipipectl list' \
	"permission denied: uid 1000 is not root and not in group replipipe"
refused rpuser "replipipectl create-or-modify --name x --source-system localhost --target-system b" \
	"permission denied: uid 1000 is not root and not in group replipipe"
refused rpuser "replipipectl delete db" \
	"permission denied: uid 1000 is not root and not in group replipipe"
refused nobody 'replipipectl status' "permission denied: uid 65534 is not root and not in group replipipe"
as_rc rpuser 77 'replipipectl --json delete db'
echo "$OUT" | jq -e '.code == "permission_denied"' > /dev/null || vm_fail "--json refusal: $OUT"
as_rc rpuser 77 'replipipectl events'
snap after
unchanged "the calls refused by SO_PEERCRED"
chmod 0660 $SOCK

vm_log "== rpadmin (group replipipe) is served"
as_rc rpadmin 0 'replipipectl list'
as_rc rpadmin 0 'replipipectl --json status db'
echo "$OUT" | jq -e '.pipes[0].pairs[0].state == "InSync"' > /dev/null || vm_fail "status as rpadmin: $OUT"
as_rc rpadmin 0 "replipipectl create-or-modify --name byadmin --source-system localhost --target-system b"
as_rc rpadmin 0 'replipipectl wait byadmin --timeout 5'
as_rc rpadmin 0 "replipipectl delete byadmin"
as_rc rpadmin 0 'timeout 2 replipipectl events | head -n 1'
echo "$OUT" | grep -q pair_state || vm_fail "events as rpadmin: $OUT"

vm_log "== the kernel's family"
eperm rpuser "rp-nlctl set-pipe --id evil --name evil --mode sync"
eperm rpuser "rp-nlctl set-pipe --id $uuid --name db --mode sync --region-kib 64"
eperm rpuser "rp-nlctl del-pipe $uuid"
eperm rpuser "rp-nlctl pair-state $uuid $SRC pause"
eperm rpuser "rp-nlctl claim $uuid $SRC --max 1 --failed"
eperm rpadmin "rp-nlctl set-pipe --id evil --name evil --mode sync"
eperm rpadmin "rp-nlctl del-pipe $uuid"
# Reading: reported, not required either way.
set +e
out=$(vm_as rpuser 'rp-nlctl get' 2>&1)
rc=$?
vm_log "REPORT: rp-nlctl get as rpuser: exit $rc: $out"
out=$(vm_as rpuser "rp-nlctl bitmap $uuid $SRC" 2>&1)
rc=$?
vm_log "REPORT: rp-nlctl bitmap as rpuser: exit $rc: $out"
out=$(vm_as rpuser "cat $STORE" 2>&1)
rc=$?
set -e
vm_log "REPORT: reading the store as rpuser: exit $rc: $out"
[ $rc != 0 ] || vm_fail "rpuser can read the store"
snap after
unchanged "the refused kernel commands"
rp-nlctl get
# Can rpuser listen to the kernel's events? Reported, not required.
vm_as rpuser 'rp-nlctl events --count 1 --timeout 6' > /tmp/ev-rpuser.txt 2>&1 &
evpid=$!
sleep 2
replipipectl create-or-modify --name db-renamed --source-system localhost \
	--target-system backup1 --pipe db > /dev/null || vm_fail "rename as root"
set +e
wait $evpid
rc=$?
set -e
vm_log "REPORT: rp-nlctl events as rpuser while root renames the pipe: exit $rc: $(cat /tmp/ev-rpuser.txt)"

vm_log "== stop"
kill -TERM $(pidof replipiped)
i=0
while pidof replipiped > /dev/null; do
	sleep 0.1
	i=$((i + 1))
	[ $i -lt 100 ] || vm_fail "replipiped did not stop"
done
cat $DLOG >&2
vm_log "cli-security done"
