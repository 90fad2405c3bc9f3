# The demo (tools/demo.sh boots this as the guest's job): a replication pipe
# created through the CLI, writes through a LIO LUN, both legs identical.
# vm-timeout: 300
# vm-mem: 1024

vm_log "== loading LIO, the memory disks and replipipe.ko"
vm_brd 2 64
vm_modprobe replipipe

vm_log "== a replipipe backstore on /dev/ram0, exported through tcm_loop"
vm_backstore replipipe replipipe_0 vol1 /dev/ram0
lun=$(vm_tcm_loop_export replipipe_0/vol1)
vm_log "LUN: $lun"
cat /sys/kernel/config/target/core/replipipe_0/vol1/info

vm_log "== replipiped and replipipectl"
mkdir -p /run/replipipe /var/lib/replipipe
replipiped --foreground --log-level info &
daemon=$!
# Until it answers (a TCG guest may take seconds to start it), not longer
# than a minute, and not after it exited.
i=0
until [ -S /run/replipipe/replipiped.sock ] && replipipectl list > /dev/null 2>&1; do
	kill -0 "$daemon" 2> /dev/null || vm_fail "replipiped exited at start"
	[ $i -lt 600 ] || vm_fail "replipiped did not answer within 60 s"
	sleep 0.1
	i=$((i + 1))
done

vm_log "== CreateOrModifyReplicationPipe: replipipe_0/vol1 -> /dev/ram1"
ref=$(replipipectl create-or-modify --name demo \
	--source-system localhost --target-system localhost \
	--pair replipipe_0/vol1=/dev/ram1 \
	--goal 'instance of CIM_SettingData { Mode = "Synchronous"; RegionSizeKiB = 64; };')
vm_log "ReplicationPipe: $ref"
replipipectl wait demo --state InSync --timeout 120
replipipectl status

vm_log "== 32 MiB of random data written through the LUN (O_DIRECT)"
dd if=/dev/urandom of=/tmp/data bs=1M count=32 2>/dev/null
dd if=/tmp/data of="$lun" bs=1M oflag=direct 2>/dev/null
sync

vm_log "== the legs"
# O_DIRECT reads (vm_sum): the module wrote the legs behind their page cache.
src_sum=$(vm_sum /dev/ram0 32M)
tgt_sum=$(vm_sum /dev/ram1 32M)
data_sum=$(vm_sum /tmp/data)
vm_log "written : $data_sum"
vm_log "primary : $src_sum"
vm_log "replica : $tgt_sum"
[ "$src_sum" = "$data_sum" ] || vm_fail "primary differs from the data written"
vm_cmp_devs /dev/ram0 /dev/ram1 || vm_fail "the legs differ"
vm_log "both legs identical"
replipipectl status --json

replipipectl delete demo
kill "$daemon"
wait "$daemon" || vm_fail "replipiped did not exit cleanly on SIGTERM"
vm_tcm_loop_unexport replipipe_0/vol1
