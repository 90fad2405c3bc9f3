// SPDX-License-Identifier: GPL-2.0
/*
 * A throw-away module for tests/vm/selftest on the debug kernel: its init
 * allocates 16 objects and drops every reference to them, so a scenario
 * that loads and unloads it "passes" in the guest and only the host's
 * kmemleak check can fail it. Sixteen, not one: a stale copy of a pointer
 * on a stack that kmemleak scans hides that one object.
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

#define RP_LEAK_OBJECTS 16
#define RP_LEAK_BYTES 2000

static void *rp_selftest_leak_last;

static int __init rp_selftest_leak_init(void)
{
	void *p;
	int i;

	for (i = 0; i < RP_LEAK_OBJECTS; i++) {
		p = kmalloc(RP_LEAK_BYTES, GFP_KERNEL);
		if (!p)
			return -ENOMEM;
		memset(p, 0x5a, RP_LEAK_BYTES);
		/* the only reference, overwritten by the next one */
		WRITE_ONCE(rp_selftest_leak_last, p);
	}
	WRITE_ONCE(rp_selftest_leak_last, NULL);
	return 0;
}

static void __exit rp_selftest_leak_exit(void)
{
}

module_init(rp_selftest_leak_init);
module_exit(rp_selftest_leak_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("replipipe VM bench self-test: leaks memory in init");
