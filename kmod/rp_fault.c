// SPDX-License-Identifier: GPL-2.0
/*
 * Fault injection for the debug tier (tests/vm/debug-kernel.sh), built only
 * with CONFIG_FAULT_INJECTION_DEBUG_FS (Kbuild), in /sys/kernel/debug/
 * replipipe/ with the usual attributes (probability, interval, times, ...:
 * Documentation/fault-injection/fault-injection.rst):
 *   fail_async_copy     an async copy's page allocation fails: memory
 *                       pressure seldom does it, and never when a test
 *                       wants it to
 *   fail_probe_timeout  a probe's bio (a resume's read and flush, a
 *                       write-intent record's flush of a target, a
 *                       PIPE_SET's read and flush of a record) ends with
 *                       BLK_STS_TIMEOUT, as on a device whose own timeout
 *                       ends requests (null_blk, NVMe, SCSI)
 *   delay_dev_lookup    a lookup of a backstore by name (PIPE_SET) sleeps
 *                       2 s between finding it and pinning it, the window
 *                       in which the backstore and its HBA can be removed
 *   fail_event          an event's message cannot be allocated (a pipe's
 *                       is up to about 140 KiB, a high-order allocation)
 *   delay_clear_pick    a write-intent record's clear pass sleeps 5 s
 *                       once it took its pair, before it ages the marks
 *                       and looks at the chunks (a walk over millions of
 *                       them takes seconds): writes must not wait for it,
 *                       nor may a pair removed meanwhile lose the marks of
 *                       the writes that then found no pair
 *   delay_pair_kill     a removal sleeps 8 s between unpublishing its pairs
 *                       (and the RCU grace period) and killing them: the
 *                       window in which a pair is neither the source's nor
 *                       dead
 */
#include <linux/debugfs.h>
#include <linux/fault-inject.h>

#include "replipipe_internal.h"

static DECLARE_FAULT_ATTR(rp_fail_async_copy_attr);
static DECLARE_FAULT_ATTR(rp_fail_probe_timeout_attr);
static DECLARE_FAULT_ATTR(rp_delay_dev_lookup_attr);
static DECLARE_FAULT_ATTR(rp_fail_event_attr);
static DECLARE_FAULT_ATTR(rp_delay_clear_pick_attr);
static DECLARE_FAULT_ATTR(rp_delay_pair_kill_attr);
static struct dentry *rp_debugfs_dir;

bool rp_fail_async_copy(void)
{
	return should_fail(&rp_fail_async_copy_attr, PAGE_SIZE);
}

bool rp_fail_probe_timeout(void)
{
	return should_fail(&rp_fail_probe_timeout_attr, 0);
}

bool rp_delay_dev_lookup(void)
{
	return should_fail(&rp_delay_dev_lookup_attr, 0);
}

bool rp_fail_event(void)
{
	return should_fail(&rp_fail_event_attr, 0);
}

bool rp_delay_clear_pick(void)
{
	return should_fail(&rp_delay_clear_pick_attr, 0);
}

bool rp_delay_pair_kill(void)
{
	return should_fail(&rp_delay_pair_kill_attr, 0);
}

void rp_fault_init(void)
{
	/* Like any debugfs file: failing to make it only loses the knob. */
	rp_debugfs_dir = debugfs_create_dir("replipipe", NULL);
	fault_create_debugfs_attr("fail_async_copy", rp_debugfs_dir,
				  &rp_fail_async_copy_attr);
	fault_create_debugfs_attr("fail_probe_timeout", rp_debugfs_dir,
				  &rp_fail_probe_timeout_attr);
	fault_create_debugfs_attr("delay_dev_lookup", rp_debugfs_dir,
				  &rp_delay_dev_lookup_attr);
	fault_create_debugfs_attr("fail_event", rp_debugfs_dir,
				  &rp_fail_event_attr);
	fault_create_debugfs_attr("delay_clear_pick", rp_debugfs_dir,
				  &rp_delay_clear_pick_attr);
	fault_create_debugfs_attr("delay_pair_kill", rp_debugfs_dir,
				  &rp_delay_pair_kill_attr);
}

void rp_fault_exit(void)
{
	debugfs_remove_recursive(rp_debugfs_dir);
}
