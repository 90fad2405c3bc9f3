// SPDX-License-Identifier: GPL-2.0
/*
 * rp_backend.c: the LIO backend "replipipe".
 *
 * A replipipe backstore is an iblock-like se_device on a primary block
 * device, made through configfs:
 *   mkdir /sys/kernel/config/target/core/replipipe_0/vol
 *   echo udev_path=/dev/sdb > .../replipipe_0/vol/control
 *   echo 1 > .../replipipe_0/vol/enable
 * with, optionally, a write-intent record on a device of its own
 * (rp_intent.c), given before enable: "intent_path=/dev/sdc", and the
 * size of what one of its bits covers, "intent_chunk_kib=4096" (default).
 * Configuration errors return -errno and log with pr_err; the data path
 * (rp_io.c) speaks sense_reason_t only.
 *
 * Locking
 *   configfs serializes the writes and reads of one attribute file only:
 *   control (rp_set_configfs_dev_params), enable (LIO's
 *   target_configure_device(), which calls rp_configure_device) and info
 *   (rp_show_configfs_dev_params) may run at once.  LIO calls
 *   rp_destroy_device from the release of the backstore's configfs item
 *   (its rmdir, under the directory locks, configfs's su_mutex and LIO's
 *   hba_access_mutex; rp_dev_lookup() holds no item reference that could
 *   be the last) and from enable itself, when
 *   target_configure_device() fails after rp_configure_device succeeded.
 *   dev->cfg_lock serializes all of these for one backstore: the paths
 *   control sets, the devices enable opens from them, and info's reads of
 *   those devices.  Lock order:
 *     rp_config_lock, configfs's and LIO's locks
 *       -> dev->cfg_lock -> rp_intents_lock -> a record's io_lock
 *   Under cfg_lock nothing takes rp_config_lock or a configfs or LIO lock,
 *   nor waits for a work item that does.  A published pair is read under
 *   RCU (info), never under cfg_lock.
 */
#define pr_fmt(fmt) "replipipe: " fmt

#include <linux/delay.h>
#include <linux/module.h>
#include <linux/parser.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <target/target_core_fabric.h>

#include "replipipe_internal.h"

/* Every configured replipipe backstore, for the genl lookups by name. */
static LIST_HEAD(rp_devs);
static DEFINE_MUTEX(rp_devs_lock);

static int rp_attach_hba(struct se_hba *hba, u32 host_id)
{
	pr_debug("HBA %u attached\n", hba->hba_id);
	return 0;
}

static void rp_detach_hba(struct se_hba *hba)
{
}

static struct se_device *rp_alloc_device(struct se_hba *hba, const char *name)
{
	struct rp_dev *dev;

	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return NULL;

	/* Too long for netlink to name: refused when enabled (no name). */
	if (snprintf(dev->name, sizeof(dev->name), "%s/%s",
		     config_item_name(&hba->hba_group.cg_item), name) >=
	    sizeof(dev->name))
		dev->name[0] = '\0';
	kref_init(&dev->mem);
	mutex_init(&dev->cfg_lock);
	atomic_set(&dev->untracked, 0);
	init_waitqueue_head(&dev->untracked_wq);

	mutex_lock(&rp_devs_lock);
	list_add_tail(&dev->node, &rp_devs);
	mutex_unlock(&rp_devs_lock);
	return &dev->se_dev;
}

static bool rp_configure_unmap(struct se_device *se_dev)
{
	struct rp_dev *dev = RP_DEV(se_dev);
	bool ret = false;

	/*
	 * LIO kernels without "scsi: target: Fix unmap setup during
	 * configuration" call this from emulate_tpu/tpws before enable, or
	 * while an enable that fails late closes the primary again.
	 */
	mutex_lock(&dev->cfg_lock);
	if (dev->primary.bdev)
		ret = target_configure_unmap_from_queue(&se_dev->dev_attrib,
							dev->primary.bdev);
	mutex_unlock(&dev->cfg_lock);
	return ret;
}

static void rp_set_geometry(struct se_device *se_dev, struct block_device *bd)
{
	struct se_dev_attrib *attrib = &se_dev->dev_attrib;
	struct request_queue *q = bdev_get_queue(bd);
	unsigned int shift = ilog2(bdev_logical_block_size(bd)) - SECTOR_SHIFT;
	/* 512-byte sectors */
	unsigned int max_write_zeroes = bdev_write_zeroes_sectors(bd);

	attrib->hw_block_size = bdev_logical_block_size(bd);
	attrib->hw_max_sectors = mult_frac(queue_max_hw_sectors(q), SECTOR_SIZE,
					   attrib->hw_block_size);
	attrib->hw_queue_depth = q->nr_requests;
	/*
	 * In blocks.  WRITE SAME(10) has a two-byte block count.  At most
	 * RP_WRITE_SAME_MAX_SECT: a mirrored WRITE SAME writes its target
	 * within the command (rp_write_same_run()).  An administrator who
	 * raises the LUN's block_size before its export raises this in
	 * bytes too (LIO does not scale it), as one who raises it: a longer
	 * WRITE SAME leaves its target leg to the resync (decision 92).
	 */
	attrib->max_write_same_len =
		min_t(u32, max_write_zeroes >> shift ?: 0xFFFF,
		      RP_WRITE_SAME_MAX_SECT >> shift);
	if (bdev_nonrot(bd))
		attrib->is_nonrot = 1;
}

static void rp_dev_reqs_done(struct percpu_ref *ref)
{
	complete(&container_of(ref, struct rp_dev, reqs)->reqs_done);
}

/* rp_configure_device() with dev->cfg_lock held. */
static int __rp_configure_device(struct rp_dev *dev)
{
	struct se_device *se_dev = &dev->se_dev;
	int ret;

	/*
	 * Two writes to enable can both pass LIO's check before either sets
	 * DF_CONFIGURED: the second must not open the primary again over
	 * the first's (its holder is the same, so the open would succeed).
	 */
	if (dev->primary.bdev) {
		pr_err("%s: already enabled\n", dev->name);
		return -EEXIST;
	}
	/*
	 * Truncated, the name could be that of another backstore, and
	 * rp_dev_lookup() would find either for a pair.
	 */
	if (!dev->name[0]) {
		pr_err("%s/%s: backstore names longer than %d bytes (HBA/name) cannot be paired\n",
		       config_item_name(&se_dev->se_hba->hba_group.cg_item),
		       config_item_name(&se_dev->dev_group.cg_item),
		       REPLIPIPE_SOURCE_MAX_LEN);
		return -ENAMETOOLONG;
	}
	if (!dev->has_udev_path) {
		pr_err("%s: missing udev_path= in control\n", dev->name);
		return -EINVAL;
	}
	/* Silently unused, it would look like a setting that holds. */
	if (dev->intent_chunk_kib && !dev->intent_path[0]) {
		pr_err("%s: intent_chunk_kib= is a setting of the write-intent record: give intent_path= too\n",
		       dev->name);
		return -EINVAL;
	}

	init_completion(&dev->reqs_done);
	ret = percpu_ref_init(&dev->reqs, rp_dev_reqs_done, 0, GFP_KERNEL);
	if (ret)
		return ret;

	ret = bioset_init(&dev->bio_set, RP_BIO_POOL_SIZE, 0, BIOSET_NEED_BVECS);
	if (ret) {
		pr_err("%s: cannot create the bio set\n", dev->name);
		goto exit_reqs;
	}

	ret = bioset_init(&dev->async_bio_set, RP_ASYNC_BIO_POOL_SIZE, 0,
			  BIOSET_NEED_BVECS);
	if (ret) {
		pr_err("%s: cannot create the async bio set\n", dev->name);
		goto exit_bioset;
	}

	dev->req_pool = mempool_create_slab_pool(RP_REQ_POOL_SIZE, rp_req_cache);
	if (!dev->req_pool) {
		ret = -ENOMEM;
		goto exit_async_bioset;
	}

	/* rp_execute_write_same() says why a queue of the backstore's own. */
	dev->write_same_wq = alloc_workqueue("rp_write_same/%u",
					     WQ_MEM_RECLAIM | WQ_UNBOUND, 0,
					     se_dev->dev_index);
	if (!dev->write_same_wq) {
		ret = -ENOMEM;
		goto destroy_req_pool;
	}
	/* rp_req_resubmit() says why a queue of the backstore's own. */
	dev->resubmit_wq = alloc_workqueue("rp_resubmit/%u",
					   WQ_MEM_RECLAIM | WQ_UNBOUND, 0,
					   se_dev->dev_index);
	if (!dev->resubmit_wq) {
		ret = -ENOMEM;
		goto destroy_write_same_wq;
	}

	ret = rp_bdev_open(&dev->primary, dev->udev_path, dev);
	if (ret) {
		pr_err("%s: cannot open %s exclusively: %d\n", dev->name,
		       dev->udev_path, ret);
		goto destroy_resubmit_wq;
	}
	/* rp_get_blocks() answers the last LBA: there must be one. */
	if (bdev_nr_bytes(dev->primary.bdev) <
	    bdev_logical_block_size(dev->primary.bdev)) {
		pr_err("%s: %s holds no block: nothing to export\n", dev->name,
		       dev->udev_path);
		ret = -EINVAL;
		goto close_primary;
	}
	/*
	 * Blocks larger than a page (kernels from 6.15 allow them) are not
	 * handled: a WRITE SAME's block and a probe's read are one page.
	 * A target's blocks are no larger than the primary's
	 * (rp_pair_open()).
	 */
	if (bdev_logical_block_size(dev->primary.bdev) > PAGE_SIZE) {
		pr_err("%s: %s has logical blocks of %u bytes, more than a page: not supported\n",
		       dev->name, dev->udev_path,
		       bdev_logical_block_size(dev->primary.bdev));
		ret = -EINVAL;
		goto close_primary;
	}

	if (dev->intent_path[0]) {
		ret = rp_intent_open(dev, dev->intent_path);
		if (ret)
			goto close_primary;
	}

	rp_set_geometry(se_dev, dev->primary.bdev);
	return 0;

close_primary:
	rp_bdev_close(&dev->primary, dev);
destroy_resubmit_wq:
	destroy_workqueue(dev->resubmit_wq);
	dev->resubmit_wq = NULL;
destroy_write_same_wq:
	destroy_workqueue(dev->write_same_wq);
	dev->write_same_wq = NULL;
destroy_req_pool:
	mempool_destroy(dev->req_pool);
	dev->req_pool = NULL;
exit_async_bioset:
	bioset_exit(&dev->async_bio_set);
exit_bioset:
	bioset_exit(&dev->bio_set);
exit_reqs:
	percpu_ref_exit(&dev->reqs);
	return ret;
}

/*
 * Opens what control named.  Under cfg_lock, so that a write to control
 * cannot change udev_path (ours and LIO's) between the open and the
 * refusal of control once enabled: the LUN would serve another device
 * than the one udev_path (which a restore of the configuration opens) and
 * a write-intent record's identity name.
 */
static int rp_configure_device(struct se_device *se_dev)
{
	struct rp_dev *dev = RP_DEV(se_dev);
	int ret;

	mutex_lock(&dev->cfg_lock);
	ret = __rp_configure_device(dev);
	mutex_unlock(&dev->cfg_lock);
	return ret;
}

/*
 * Called by LIO when the backstore goes away.  A backstore in a pipe cannot
 * get here: the pipe holds a configfs dependency on it (rp_dev_lookup), so
 * rmdir fails with EBUSY until the pipe lets go.
 */
static void rp_destroy_device(struct se_device *se_dev)
{
	struct rp_dev *dev = RP_DEV(se_dev);

	WARN_ON_ONCE(rcu_access_pointer(dev->pair));
	/*
	 * cfg_lock: info may be reading the record and the primary (LIO
	 * calls this from enable when it fails after configure_device).
	 * What is waited for below (requests, the record's work items)
	 * takes no lock that is held while cfg_lock is waited for.
	 */
	mutex_lock(&dev->cfg_lock);
	/*
	 * The LUNs are gone, but a request may still finish: an IMMED
	 * SYNCHRONIZE CACHE completes its command before its flushes do.
	 */
	percpu_ref_kill(&dev->reqs);
	wait_for_completion(&dev->reqs_done);
	percpu_ref_exit(&dev->reqs);
	/* What ran on them held a request: only their returns are left. */
	destroy_workqueue(dev->resubmit_wq);
	dev->resubmit_wq = NULL;
	destroy_workqueue(dev->write_same_wq);
	dev->write_same_wq = NULL;
	rp_intent_close(dev);
	rp_bdev_close(&dev->primary, dev);
	mempool_destroy(dev->req_pool);
	dev->req_pool = NULL;
	bioset_exit(&dev->async_bio_set);
	bioset_exit(&dev->bio_set);
	mutex_unlock(&dev->cfg_lock);
}

static void rp_dev_free_rcu(struct rcu_head *head)
{
	struct se_device *se_dev = container_of(head, struct se_device, rcu_head);

	kfree(RP_DEV(se_dev));
}

static void rp_dev_mem_release(struct kref *kref)
{
	struct rp_dev *dev = container_of(kref, struct rp_dev, mem);

	call_rcu(&dev->se_dev.rcu_head, rp_dev_free_rcu);
}

static void rp_free_device(struct se_device *se_dev)
{
	struct rp_dev *dev = RP_DEV(se_dev);

	mutex_lock(&rp_devs_lock);
	list_del(&dev->node);
	mutex_unlock(&rp_devs_lock);
	mutex_destroy(&dev->cfg_lock);
	kref_put(&dev->mem, rp_dev_mem_release);
}

/*
 * Finds the backstore "replipipe_<N>/<name>" of this backend and pins it
 * with a configfs dependency.  Returns it, ERR_PTR(-ENODEV) when there is no
 * such backstore, ERR_PTR(-ENOENT) when it is being removed, ERR_PTR(-ENXIO)
 * when it is not enabled.
 * LOCKING: target_depend_item() takes configfs's inode locks, and configfs
 * calls alloc_device (rp_devs_lock) under them: the dependency is taken
 * after rp_devs_lock is dropped, with a reference to the memory only
 * (dev->mem) in between.  Not one to the configfs item: were the backstore
 * removed meanwhile, putting that would free the device here, outside the
 * rmdir where LIO frees it, after its HBA may have been freed too.
 * configfs_depend_item() only compares the item's address with the live
 * tree's, so a removed item gets -ENOENT.  The caller may hold
 * rp_config_lock, which no configfs callback of this backend takes.
 */
struct rp_dev *rp_dev_lookup(const char *name)
{
	struct rp_dev *dev, *found = NULL;
	struct config_item *item;
	int ret;

	mutex_lock(&rp_devs_lock);
	list_for_each_entry(dev, &rp_devs, node) {
		if (!strcmp(dev->name, name)) {
			kref_get(&dev->mem);
			found = dev;
			break;
		}
	}
	mutex_unlock(&rp_devs_lock);
	if (!found)
		return ERR_PTR(-ENODEV);
	if (rp_delay_dev_lookup())
		msleep(2000);

	/* Once the dependency is taken it cannot be removed at all. */
	item = &found->se_dev.dev_group.cg_item;
	ret = target_depend_item(item);
	if (!ret && (!target_dev_configured(&found->se_dev) ||
		     !found->primary.bdev)) {
		target_undepend_item(item);
		ret = -ENXIO;
	}
	kref_put(&found->mem, rp_dev_mem_release);
	return ret ? ERR_PTR(ret) : found;
}

void rp_dev_put(struct rp_dev *dev)
{
	target_undepend_item(&dev->se_dev.dev_group.cg_item);
}

enum {
	RP_OPT_UDEV_PATH, RP_OPT_INTENT_PATH, RP_OPT_INTENT_CHUNK_KIB, RP_OPT_ERR
};

static const match_table_t rp_tokens = {
	{RP_OPT_UDEV_PATH, "udev_path=%s"},
	{RP_OPT_INTENT_PATH, "intent_path=%s"},
	{RP_OPT_INTENT_CHUNK_KIB, "intent_chunk_kib=%u"},
	{RP_OPT_ERR, NULL}
};

/* What one write to control sets: applied only if all of it is valid. */
struct rp_control {
	char	udev_path[SE_UDEV_PATH_LEN];
	char	intent_path[SE_UDEV_PATH_LEN];
	u32	intent_chunk_kib;
	bool	has_udev_path;
	bool	has_intent_path;
	bool	has_intent_chunk_kib;
};

/*
 * An absolute path argument into @buf: -EINVAL if relative or too long
 * (never cut).  Absolute: a device is opened at enable by whoever writes
 * it, and the primary's path is in the write-intent record's identity.
 */
static int rp_match_path(substring_t *arg, char *buf, size_t size)
{
	size_t len = arg->to - arg->from;

	if (!len || len >= size || *arg->from != '/')
		return -EINVAL;
	match_strlcpy(buf, arg, size);
	return 0;
}

static int rp_parse_control(struct rp_dev *dev, char *opts,
			    struct rp_control *ctl)
{
	substring_t args[MAX_OPT_ARGS];
	unsigned int kib;
	char *ptr;

	while ((ptr = strsep(&opts, ",\n")) != NULL) {
		if (!*ptr)
			continue;
		switch (match_token(ptr, rp_tokens, args)) {
		case RP_OPT_UDEV_PATH:
			if (rp_match_path(&args[0], ctl->udev_path,
					  sizeof(ctl->udev_path))) {
				pr_err("%s: udev_path must be an absolute block device path of at most %zu bytes\n",
				       dev->name, sizeof(ctl->udev_path) - 1);
				return -EINVAL;
			}
			ctl->has_udev_path = true;
			break;
		case RP_OPT_INTENT_PATH:
			if (rp_match_path(&args[0], ctl->intent_path,
					  sizeof(ctl->intent_path))) {
				pr_err("%s: intent_path must be an absolute block device path of at most %zu bytes\n",
				       dev->name, sizeof(ctl->intent_path) - 1);
				return -EINVAL;
			}
			ctl->has_intent_path = true;
			break;
		case RP_OPT_INTENT_CHUNK_KIB:
			if (match_uint(&args[0], &kib) ||
			    kib < REPLIPIPE_REGION_KIB_MIN ||
			    kib > RP_INTENT_CHUNK_KIB_MAX ||
			    !is_power_of_2(kib)) {
				pr_err("%s: intent_chunk_kib must be a power of two from %u to %u\n",
				       dev->name, REPLIPIPE_REGION_KIB_MIN,
				       RP_INTENT_CHUNK_KIB_MAX);
				return -EINVAL;
			}
			ctl->intent_chunk_kib = kib;
			ctl->has_intent_chunk_kib = true;
			break;
		default:
			pr_err("%s: unknown control parameter '%s'\n",
			       dev->name, ptr);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * A write to control is parsed whole before any of it is applied: a bad
 * parameter changes nothing, not even a valid one before it in the same
 * write (an intent_path= refused must not drop the record given earlier,
 * or the backstore could be enabled without it).
 *
 * All of it under cfg_lock: enable opens the paths set here, and once it
 * has, control is refused.  That also keeps the write of se_dev->dev_flags
 * below off LIO's: target_configure_device() sets DF_CONFIGURED, with no
 * lock, only after rp_configure_device() opened the primary, and that stays
 * open until the device is destroyed (or is closed again, under cfg_lock,
 * by an enable that fails, which sets no flag).  LIO's own attributes
 * (alias, udev_path, the WWN's vpd_unit_serial) also write dev_flags with
 * no lock, against control and against enable's DF_CONFIGURED: a bit can
 * be lost there, which no backend can prevent.
 */
static ssize_t rp_set_configfs_dev_params(struct se_device *se_dev,
					  const char *page, ssize_t count)
{
	struct rp_dev *dev = RP_DEV(se_dev);
	struct rp_control *ctl = NULL;
	char *opts = NULL;
	int ret;

	mutex_lock(&dev->cfg_lock);
	/* Every parameter describes devices opened at enable. */
	if (dev->primary.bdev) {
		pr_err("%s: control cannot change once enabled\n", dev->name);
		ret = -EEXIST;
		goto out;
	}
	opts = kstrdup(page, GFP_KERNEL);
	ctl = kzalloc(sizeof(*ctl), GFP_KERNEL);
	if (!opts || !ctl) {
		ret = -ENOMEM;
		goto out;
	}
	ret = rp_parse_control(dev, opts, ctl);
	if (ret)
		goto out;
	if (ctl->has_udev_path) {
		strscpy(dev->udev_path, ctl->udev_path, sizeof(dev->udev_path));
		dev->has_udev_path = true;
		/* Also shown by LIO's generic udev_path attribute. */
		strscpy(se_dev->udev_path, dev->udev_path,
			sizeof(se_dev->udev_path));
		se_dev->dev_flags |= DF_USING_UDEV_PATH;
	}
	if (ctl->has_intent_path)
		strscpy(dev->intent_path, ctl->intent_path,
			sizeof(dev->intent_path));
	if (ctl->has_intent_chunk_kib)
		dev->intent_chunk_kib = ctl->intent_chunk_kib;
out:
	mutex_unlock(&dev->cfg_lock);
	kfree(ctl);
	kfree(opts);
	return ret ? ret : count;
}

static ssize_t rp_show_configfs_dev_params(struct se_device *se_dev, char *b)
{
	struct rp_dev *dev = RP_DEV(se_dev);
	struct block_device *bd;
	struct rp_pair *pair;
	ssize_t len = 0;

	/*
	 * cfg_lock: an enable that fails late closes the primary and frees
	 * the record (rp_destroy_device()), and control changes the paths.
	 * Killable: an enable holds it across the record's and the primary's
	 * I/O, which a device that queues it (multipath with no path) holds.
	 */
	if (mutex_lock_killable(&dev->cfg_lock))
		return -EINTR;
	bd = dev->primary.bdev;
	if (bd)
		len += sprintf(b + len, "replipipe primary: %s (%pg %u:%u)",
			       dev->udev_path, bd, MAJOR(bd->bd_dev),
			       MINOR(bd->bd_dev));
	else
		len += sprintf(b + len, "replipipe primary: none udev_path: %s",
			       dev->has_udev_path ? dev->udev_path : "");

	if (dev->intent && READ_ONCE(dev->intent->stale_header))
		len += sprintf(b + len, "  intent: %s (header not known, writes wait)",
			       dev->intent_path);
	else if (dev->intent && READ_ONCE(dev->intent->bound))
		len += sprintf(b + len, "  intent: %s (bound, %llu regions marked, %u KiB chunks)",
			       dev->intent_path, rp_intent_marked(dev->intent),
			       rp_intent_chunk_kib(dev->intent));
	else if (dev->intent)
		len += sprintf(b + len, "  intent: %s (tracks nothing)",
			       dev->intent_path);
	else if (dev->intent_path[0])
		len += sprintf(b + len, "  intent_path: %s", dev->intent_path);
	if (dev->intent_chunk_kib)
		len += sprintf(b + len, " intent_chunk_kib: %u",
			       dev->intent_chunk_kib);
	mutex_unlock(&dev->cfg_lock);

	/*
	 * RCU, not rp_config_lock: this runs under configfs's locks, which
	 * PIPE_SET takes under rp_config_lock (rp_dev_lookup).  A published
	 * pair and its pipe are freed only after a grace period.  Nor
	 * cfg_lock, which is not needed for it.
	 */
	rcu_read_lock();
	pair = rcu_dereference(dev->pair);
	if (pair) {
		spin_lock_irq(&pair->lock);
		len += sprintf(b + len,
			       "  pipe: %s  target: %s  state: %s  dirty: %llu/%llu\n",
			       pair->pipe->id, pair->tgt_path,
			       rp_pair_state_name(pair->state),
			       pair->nr_dirty, pair->nr_regions);
		spin_unlock_irq(&pair->lock);
	} else {
		len += sprintf(b + len, "  not in a pipe\n");
	}
	rcu_read_unlock();
	/* rp_retire.c: kept until its writes end. */
	if (READ_ONCE(dev->retiring))
		len += sprintf(b + len,
			       "  a removed pair still has writes in flight to its target\n");
	return len;
}

/*
 * The last LBA.  LIO checks every command's range against it.  While the
 * backstore is in a pair it is the size the pair mirrors (the primary's
 * when the pair was made): a write past it, to a primary grown since,
 * could be neither tracked nor resynced, so LIO refuses it.  A grown
 * primary is picked up by pairing it again.  Must not sleep (LIO calls it
 * while it parses a command).
 */
static sector_t rp_get_blocks(struct se_device *se_dev)
{
	struct rp_dev *dev = RP_DEV(se_dev);
	u64 bytes = bdev_nr_bytes(dev->primary.bdev);
	struct rp_pair *pair;

	/* A published pair is freed only after a grace period. */
	rcu_read_lock();
	pair = rcu_dereference(dev->pair);
	if (pair)
		bytes = min(bytes, pair->src_bytes);
	rcu_read_unlock();
	return div_u64(bytes, se_dev->dev_attrib.block_size) - 1;
}

static sector_t rp_get_alignment_offset_lbas(struct se_device *se_dev)
{
	struct block_device *bd = RP_DEV(se_dev)->primary.bdev;
	int ret = bdev_alignment_offset(bd);

	if (ret == -1)
		return 0;
	return ret / bdev_logical_block_size(bd);
}

static unsigned int rp_get_lbppbe(struct se_device *se_dev)
{
	struct block_device *bd = RP_DEV(se_dev)->primary.bdev;

	return ilog2(bdev_physical_block_size(bd) / bdev_logical_block_size(bd));
}

static unsigned int rp_get_io_min(struct se_device *se_dev)
{
	return bdev_io_min(RP_DEV(se_dev)->primary.bdev);
}

static unsigned int rp_get_io_opt(struct se_device *se_dev)
{
	return bdev_io_opt(RP_DEV(se_dev)->primary.bdev);
}

static bool rp_get_write_cache(struct se_device *se_dev)
{
	return bdev_write_cache(RP_DEV(se_dev)->primary.bdev);
}

/*
 * LIO aborts @aborted (ABORT TASK, LUN RESET, a PREEMPT AND ABORT's
 * TMR_LUN_RESET_PRO) and then waits for each of them to end: those of them
 * waiting for lag room or for a claim must not wait any longer
 * (rp_pair_abort_waiters()).  Process context.
 */
static void rp_tmr_notify(struct se_device *se_dev, enum tcm_tmreq_table tmf,
			  struct list_head *aborted)
{
	struct rp_pair *pair;

	if (list_empty(aborted))
		return;
	pair = rp_pair_get(RP_DEV(se_dev));
	if (!pair)
		return;
	rp_pair_abort_waiters(pair);
	rp_pair_put(pair);
}

static struct rp_exec_ops rp_exec_ops = {
	.execute_rw		= rp_execute_rw,
	.execute_sync_cache	= rp_execute_sync_cache,
	.execute_write_same	= rp_execute_write_same,
	.execute_unmap		= rp_execute_unmap,
};

static sense_reason_t rp_parse_cdb(struct se_cmd *cmd)
{
	return sbc_parse_cdb(cmd, &rp_exec_ops);
}

static const struct target_backend_ops rp_backend_ops = {
	.name			= "replipipe",
	.inquiry_prod		= "REPLIPIPE",
	.inquiry_rev		= RP_VERSION,
	.owner			= THIS_MODULE,
	.attach_hba		= rp_attach_hba,
	.detach_hba		= rp_detach_hba,
	.alloc_device		= rp_alloc_device,
	.configure_device	= rp_configure_device,
	.destroy_device		= rp_destroy_device,
	.free_device		= rp_free_device,
	.configure_unmap	= rp_configure_unmap,
	.parse_cdb		= rp_parse_cdb,
	.tmr_notify		= rp_tmr_notify,
	.set_configfs_dev_params = rp_set_configfs_dev_params,
	.show_configfs_dev_params = rp_show_configfs_dev_params,
	.get_device_type	= sbc_get_device_type,
	.get_blocks		= rp_get_blocks,
	.get_alignment_offset_lbas = rp_get_alignment_offset_lbas,
	.get_lbppbe		= rp_get_lbppbe,
	.get_io_min		= rp_get_io_min,
	.get_io_opt		= rp_get_io_opt,
	.get_write_cache	= rp_get_write_cache,
	.tb_dev_attrib_attrs	= sbc_attrib_attrs,
};

int rp_backend_init(void)
{
	return transport_backend_register(&rp_backend_ops);
}

void rp_backend_exit(void)
{
	target_backend_unregister(&rp_backend_ops);
}
