// SPDX-License-Identifier: GPL-2.0
/*
 * Fault injection for the debug tier (tests/vm/debug-kernel.sh), built only
 * with CONFIG_FAULT_INJECTION_DEBUG_FS (Kbuild).  Memory pressure seldom
 * makes an async copy's page allocation fail, and never when a test wants
 * it to; /sys/kernel/debug/replipipe/fail_async_copy does, with the usual
 * attributes (probability, interval, times, ...:
 * Documentation/fault-injection/fault-injection.rst).
 */
#include <linux/debugfs.h>
#include <linux/fault-inject.h>

#include "replipipe_internal.h"

static DECLARE_FAULT_ATTR(rp_fail_async_copy_attr);
static struct dentry *rp_debugfs_dir;

bool rp_fail_async_copy(void)
{
	return should_fail(&rp_fail_async_copy_attr, PAGE_SIZE);
}

void rp_fault_init(void)
{
	/* Like any debugfs file: failing to make it only loses the knob. */
	rp_debugfs_dir = debugfs_create_dir("replipipe", NULL);
	fault_create_debugfs_attr("fail_async_copy", rp_debugfs_dir,
				  &rp_fail_async_copy_attr);
}

void rp_fault_exit(void)
{
	debugfs_remove_recursive(rp_debugfs_dir);
}
