// SPDX-License-Identifier: GPL-2.0
/*
 * rp_main.c: module init and exit, module parameters, live object counters.
 *
 * ORDER: the generic netlink family is registered before the backend (a
 * command finds no backstore until there is one) and the backend last:
 * once it is registered, configfs can make HBAs that hold the module, so
 * nothing may fail after it.  Exit takes the family away first.
 */
#define pr_fmt(fmt) "replipipe: " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>

#include "replipipe_internal.h"

struct workqueue_struct *rp_wq;
/*
 * Probes of targets for resumes (rp_pair_resume()): each may wait
 * RP_PROBE_TIMEOUT_SEC for a target that does not answer, so not on rp_wq,
 * whose rescuer runs one item at a time under memory pressure.
 */
struct workqueue_struct *rp_probe_wq;
struct kmem_cache *rp_req_cache;

atomic_t rp_nr_pipes = ATOMIC_INIT(0);
atomic_t rp_nr_pairs = ATOMIC_INIT(0);
atomic_t rp_nr_claims = ATOMIC_INIT(0);
atomic_t rp_nr_async_bufs = ATOMIC_INIT(0);

unsigned int rp_claim_timeout_sec = 30;

/* Setter of the "seconds" parameters: 1..3600, read with READ_ONCE(). */
static int rp_secs_param_set(const char *val, const struct kernel_param *kp)
{
	unsigned int secs;
	int ret;

	ret = kstrtouint(val, 0, &secs);
	if (ret)
		return ret;
	if (secs < 1 || secs > 3600)
		return -ERANGE;
	WRITE_ONCE(*(unsigned int *)kp->arg, secs);
	return 0;
}

static const struct kernel_param_ops rp_secs_param_ops = {
	.set	= rp_secs_param_set,
	.get	= param_get_uint,
};
module_param_cb(claim_timeout_sec, &rp_secs_param_ops, &rp_claim_timeout_sec,
		0644);
MODULE_PARM_DESC(claim_timeout_sec,
		 "Seconds a resync claim may last before it is dropped (1..3600, default 30)");
module_param_cb(intent_clear_sec, &rp_secs_param_ops, &rp_intent_clear_sec,
		0644);
MODULE_PARM_DESC(intent_clear_sec,
		 "Seconds between passes that clear in-sync regions from write-intent records (1..3600, default 5)");

static int rp_live_objects_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "pipes=%d pairs=%d claims=%d async_bufs=%d\n",
			  atomic_read(&rp_nr_pipes), atomic_read(&rp_nr_pairs),
			  atomic_read(&rp_nr_claims),
			  atomic_read(&rp_nr_async_bufs));
}

static const struct kernel_param_ops rp_live_objects_ops = {
	.get	= rp_live_objects_get,
};
module_param_cb(live_objects, &rp_live_objects_ops, NULL, 0444);
MODULE_PARM_DESC(live_objects, "Objects alive now (read only)");

static int __init rp_init(void)
{
	int ret;

	rp_fault_init();
	rp_req_cache = KMEM_CACHE(rp_req, 0);
	if (!rp_req_cache) {
		ret = -ENOMEM;
		goto exit_fault;
	}

	rp_wq = alloc_workqueue("replipipe", WQ_MEM_RECLAIM, 0);
	if (!rp_wq) {
		ret = -ENOMEM;
		goto destroy_cache;
	}

	rp_probe_wq = alloc_workqueue("replipipe_probe", WQ_UNBOUND, 0);
	if (!rp_probe_wq) {
		ret = -ENOMEM;
		goto destroy_wq;
	}

	ret = rp_pipe_init();
	if (ret)
		goto destroy_probe_wq;

	ret = rp_genl_init();
	if (ret)
		goto exit_pipe;

	ret = rp_backend_init();
	if (ret)
		goto exit_genl;

	pr_info("version %s loaded\n", RP_VERSION);
	return 0;

exit_genl:
	rp_genl_exit();
exit_pipe:
	rp_pipe_exit();
destroy_probe_wq:
	destroy_workqueue(rp_probe_wq);
destroy_wq:
	destroy_workqueue(rp_wq);
destroy_cache:
	kmem_cache_destroy(rp_req_cache);
exit_fault:
	rp_fault_exit();
	return ret;
}

static void __exit rp_exit(void)
{
	rp_genl_exit();
	/* No PAIR_SET left to start a probe; the last ones end within 5 s. */
	destroy_workqueue(rp_probe_wq);
	rp_pipe_exit();
	rp_backend_exit();
	rp_intent_exit();
	destroy_workqueue(rp_wq);
	kmem_cache_destroy(rp_req_cache);
	rp_fault_exit();
	pr_info("unloaded\n");
}

module_init(rp_init);
module_exit(rp_exit);

MODULE_DESCRIPTION("replipipe: LIO backstore mirroring writes over replication pipes");
MODULE_LICENSE("GPL");
MODULE_VERSION(RP_VERSION);
MODULE_ALIAS("target_core_replipipe");
MODULE_ALIAS_GENL_FAMILY(REPLIPIPE_GENL_NAME);
