/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rp_compat.h: the kernel APIs that changed between the kernels replipipe
 * builds on.  Everything version-dependent lives here, nowhere else.
 */
#ifndef RP_COMPAT_H
#define RP_COMPAT_H

#include <linux/version.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <net/genetlink.h>
#include <target/target_core_backend.h>

/* struct sbc_ops became struct exec_cmd_ops; Kbuild detects which. */
#ifdef RP_HAVE_EXEC_CMD_OPS
#define rp_exec_ops exec_cmd_ops
#else
#define rp_exec_ops sbc_ops
#endif

/*
 * An exclusively opened block device.  6.5 replaced fmode_t with blk_mode_t
 * and made blkdev_put() take the holder; 6.7 returned a bdev_handle; 6.9
 * returns a struct file.
 */
struct rp_bdev {
	struct block_device *bdev;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	struct file *file;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	struct bdev_handle *handle;
#endif
};

/* Opens @path read-write, claimed by @holder.  Returns 0 or -errno. */
static inline int rp_bdev_open(struct rp_bdev *rb, const char *path,
			       void *holder)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	struct file *file;

	file = bdev_file_open_by_path(path, BLK_OPEN_READ | BLK_OPEN_WRITE,
				      holder, NULL);
	if (IS_ERR(file))
		return PTR_ERR(file);
	rb->file = file;
	rb->bdev = file_bdev(file);
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	struct bdev_handle *handle;

	handle = bdev_open_by_path(path, BLK_OPEN_READ | BLK_OPEN_WRITE,
				   holder, NULL);
	if (IS_ERR(handle))
		return PTR_ERR(handle);
	rb->handle = handle;
	rb->bdev = handle->bdev;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	struct block_device *bdev;

	bdev = blkdev_get_by_path(path, BLK_OPEN_READ | BLK_OPEN_WRITE,
				  holder, NULL);
	if (IS_ERR(bdev))
		return PTR_ERR(bdev);
	rb->bdev = bdev;
#else
	struct block_device *bdev;

	bdev = blkdev_get_by_path(path, FMODE_READ | FMODE_WRITE | FMODE_EXCL,
				  holder);
	if (IS_ERR(bdev))
		return PTR_ERR(bdev);
	rb->bdev = bdev;
#endif
	return 0;
}

/* Releases what rp_bdev_open() got; a never-opened @rb is a no-op. */
static inline void rp_bdev_close(struct rp_bdev *rb, void *holder)
{
	if (!rb->bdev)
		return;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
	/*
	 * Gives the claim up now: fput() from a kernel thread (a removed
	 * pair's retire work) defers the release, and a PIPE_SET of the same
	 * target right after would find it still claimed.
	 */
	bdev_fput(rb->file);
	rb->file = NULL;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	fput(rb->file);
	rb->file = NULL;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	bdev_release(rb->handle);
	rb->handle = NULL;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	blkdev_put(rb->bdev, holder);
#else
	blkdev_put(rb->bdev, FMODE_READ | FMODE_WRITE | FMODE_EXCL);
#endif
	rb->bdev = NULL;
}

/* The partition number of @bdev (0 for a whole disk). */
static inline u8 rp_bdev_partno(struct block_device *bdev)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
	return bdev_partno(bdev);
#else
	return bdev->bd_partno;
#endif
}

/*
 * Opens the block device @devt read-write without claiming it: a second
 * opener beside an exclusive holder (the pair), which keeps the device and
 * its gendisk alive on its own.  Returns 0 or -errno.
 */
static inline int rp_bdev_open_shared(struct rp_bdev *rb, dev_t devt)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	struct file *file;

	file = bdev_file_open_by_dev(devt, BLK_OPEN_READ | BLK_OPEN_WRITE,
				     NULL, NULL);
	if (IS_ERR(file))
		return PTR_ERR(file);
	rb->file = file;
	rb->bdev = file_bdev(file);
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	struct bdev_handle *handle;

	handle = bdev_open_by_dev(devt, BLK_OPEN_READ | BLK_OPEN_WRITE, NULL,
				  NULL);
	if (IS_ERR(handle))
		return PTR_ERR(handle);
	rb->handle = handle;
	rb->bdev = handle->bdev;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	struct block_device *bdev;

	bdev = blkdev_get_by_dev(devt, BLK_OPEN_READ | BLK_OPEN_WRITE, NULL,
				 NULL);
	if (IS_ERR(bdev))
		return PTR_ERR(bdev);
	rb->bdev = bdev;
#else
	struct block_device *bdev;

	bdev = blkdev_get_by_dev(devt, FMODE_READ | FMODE_WRITE, NULL);
	if (IS_ERR(bdev))
		return PTR_ERR(bdev);
	rb->bdev = bdev;
#endif
	return 0;
}

/*
 * Releases what rp_bdev_open_shared() got; a never-opened @rb is a no-op.
 * May sleep.
 */
static inline void rp_bdev_close_shared(struct rp_bdev *rb)
{
	if (!rb->bdev)
		return;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	fput(rb->file);
	rb->file = NULL;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	bdev_release(rb->handle);
	rb->handle = NULL;
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	blkdev_put(rb->bdev, NULL);
#else
	blkdev_put(rb->bdev, FMODE_READ | FMODE_WRITE);
#endif
	rb->bdev = NULL;
}

/* A dump's parsed request attributes; 6.6 moved them into a struct genl_info. */
static inline struct nlattr **rp_dump_attrs(struct netlink_callback *cb)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	return genl_info_dump(cb)->attrs;
#else
	return genl_dumpit_info(cb)->attrs;
#endif
}

#endif /* RP_COMPAT_H */
