// SPDX-License-Identifier: GPL-2.0
/*
 * A throw-away module for tests/vm/selftest: its init hits WARN_ON(1) and
 * still loads, so a scenario that loads it "passes" in the guest and only the
 * host's kernel-log check can fail it.
 */
#include <linux/bug.h>
#include <linux/module.h>

static int __init rp_selftest_warn_init(void)
{
	WARN_ON(1);
	return 0;
}

static void __exit rp_selftest_warn_exit(void)
{
}

module_init(rp_selftest_warn_init);
module_exit(rp_selftest_warn_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("replipipe VM bench self-test: WARN_ON in init");
