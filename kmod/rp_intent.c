// SPDX-License-Identifier: GPL-2.0
/*
 * rp_intent.c: the write-intent record of a backstore (md's write-intent
 * bitmap idea, on a small block device of its own: control "intent_path=").
 *
 * A region's bit is on stable storage before the first write to it is
 * submitted, so before any write to it is acknowledged; it is cleared lazily,
 * once the region is in sync and has not been written for a clear pass.
 * After a crash the bits on disk are a superset of the regions where the
 * target may differ from the primary: a pair attached again with the same
 * identity (primary path, pipe id, target path, region and chunk size,
 * source size) takes its dirty bitmap from the record; any other pair
 * rebinds the record and starts with every region dirty.  A record with no
 * valid header tracks nothing.
 *
 * The identity holds only while no other pair writes the target: a pair
 * that takes a target invalidates every other open record naming it before
 * it is published (rp_intent_target_taken()), and a record opened later
 * that names a target taken since it was last closed in this module's
 * lifetime is invalidated when it opens.
 *
 * On-disk layout (little endian): block 0 the header, then the bitmap from
 * byte RP_INTENT_BITMAP_OFFSET, one bit per chunk of 1 << chunk_shift
 * regions (the backstore's intent_chunk_kib, at least a region),
 * RP_INTENT_PAGE_BITS bits per 4 KiB bitmap page, 64-bit words.  A chunk
 * bigger than a region costs a longer resync after a crash and saves record
 * writes: a write needs one only when its chunk is not marked yet.
 *
 * Locks, in order
 *   in->clear_sem (rwsem)  read: a write from its mark until it is tracked
 *                          on its pair (or held, or found no pair); write:
 *                          a clear pass's aging of the marks, a rebind, a
 *                          freeze.  So when the marks age with the pair
 *                          published, no write is marked but not yet
 *                          visible on pair->inflight.  A clear pass does not
 *                          hold it while it looks at the chunks.
 *                          A write whose mark is not on disk yet does not
 *                          wait in LIO's submission context: it waits on
 *                          in->waiting, and write_work writes the record and
 *                          resubmits it (marked again, under clear_sem).
 *   in->io_lock (mutex)    one record write at a time.
 *   in->frozen (in->lock)  a PIPE_SET writes a new binding that it may
 *                          still take back (rp_intent_commit() until
 *                          rp_intent_settle()): writes wait on in->waiting,
 *                          UNMAP and WRITE SAME on thaw_wq, clear passes and
 *                          page writes skip.  A flag, not clear_sem held:
 *                          one PIPE_SET may freeze many records at once.
 *   pair->lock, then in->lock (spinlock, irq-safe)  bits, recent maps, seqs.
 * Sequence numbers: in->seq counts changes of the bits; dirty_seq[p] is the
 * last change of bitmap page p, ondisk_seq[p] the in->seq of the snapshot of
 * it that is on disk.  A writer that marked at sequence S needs, for each of
 * its pages, a snapshot at min(S, dirty_seq[p]) or later on disk: one record
 * write covers every writer that marked before its snapshot, so writers
 * queued behind a record write share the next one.
 */
#define pr_fmt(fmt) "replipipe: " fmt

#include <linux/crc32.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/xarray.h>

#include "replipipe_internal.h"

#define RP_INTENT_MAGIC		"RPINTENT"
#define RP_INTENT_VERSION	3	/* 2: chunk_kib; 3: src_path */
#define RP_INTENT_PAGE_SIZE	4096
#define RP_INTENT_BITMAP_OFFSET	RP_INTENT_PAGE_SIZE
#define RP_INTENT_PAGE_BITS	(RP_INTENT_PAGE_SIZE * BITS_PER_BYTE)
#define RP_INTENT_PAGE_LONGS	(RP_INTENT_PAGE_SIZE / sizeof(unsigned long))
/* Bitmap pages in one bio at most (1 MiB): rp_intent_maps.io_pages. */
#define RP_INTENT_IO_PAGES	BIO_MAX_VECS

struct rp_intent_sb {
	char		magic[8];
	__le32		version;
	__le32		region_kib;
	__le32		chunk_kib;
	__le64		nr_regions;
	__le64		src_bytes;
	char		pipe_id[REPLIPIPE_PIPE_ID_MAX_LEN + 1];
	char		tgt_path[REPLIPIPE_TARGET_MAX_LEN + 1];
	char		src_path[SE_UDEV_PATH_LEN];	/* the primary's */
	__le32		csum;		/* crc32 of everything before it */
} __packed;

unsigned int rp_intent_clear_sec = 5;

/*
 * Which records name which targets: the open records, and for those not
 * open, when a pair last took each target (a sequence number; by device
 * number and by the path the pair named it with, so that a device made
 * again under the same path with another number is still known) and when
 * each record device was last closed.  Lock order: rp_config_lock, then
 * rp_intents_lock, then a record's io_lock.
 */
static LIST_HEAD(rp_intents);
static DEFINE_MUTEX(rp_intents_lock);
static DEFINE_XARRAY(rp_target_takes);	/* target dev_t: last taking */
static DEFINE_XARRAY(rp_intent_closes);	/* record disk: last close */
static u64 rp_takes_seq;		/* the last taking */

/*
 * The key of a record device in rp_intent_closes: its disk's sequence
 * number and its partition number, not its device number.  A device number
 * is reused by another medium (a loop device set up on another file, a
 * disk swapped), which must not inherit the last close of the record that
 * was there before; diskseq is new for each disk and media change.  The
 * partitions of a disk share its diskseq: a record on one of them must not
 * inherit the close of a record on another.  diskseq counts disks and
 * media changes since boot, far below the 2^56 that leaves room for the
 * partition number in the xarray's 64-bit index.
 */
static unsigned long rp_intent_close_key(struct rp_intent *in)
{
	struct block_device *bdev = in->rb.bdev;

	return (unsigned long)bdev->bd_disk->diskseq << 8 | rp_bdev_partno(bdev);
}

/* A target path a pair took, and when it last did. */
struct rp_path_take {
	struct list_head	node;		/* rp_path_takes */
	u64			seq;
	char			path[];
};
static LIST_HEAD(rp_path_takes);

static void rp_intent_clear_work(struct work_struct *work);
static void rp_intent_write_work(struct work_struct *work);

/*
 * The next clear pass, intent_clear_sec from now.  Not on rp_wq: a pass may
 * wait a minute for a target's flush, and under memory pressure rp_wq's
 * rescuer runs one item at a time, the record writes that release waiting
 * writes among them.  rp_intent_close() cancels it before the module can go.
 */
static void rp_intent_clear_queue(struct rp_intent *in)
{
	queue_delayed_work(system_long_wq, &in->clear_work,
			   READ_ONCE(rp_intent_clear_sec) * HZ);
}

static u64 rp_intent_capacity(struct rp_intent *in)
{
	u64 bytes = bdev_nr_bytes(in->rb.bdev);

	if (bytes <= RP_INTENT_BITMAP_OFFSET)
		return 0;
	return round_down(bytes - RP_INTENT_BITMAP_OFFSET,
			  RP_INTENT_PAGE_SIZE) * BITS_PER_BYTE;
}

/* Record bits for @nr_regions regions, 1 << @chunk_shift a bit. */
static u64 rp_intent_nr_bits(u64 nr_regions, unsigned int chunk_shift)
{
	return DIV_ROUND_UP_ULL(nr_regions, 1ULL << chunk_shift);
}

/* The regions of record bit @i: [*@r0, *@r1].  The last chunk may be short. */
static void rp_intent_bit_regions(const struct rp_intent *in, u64 i, u64 *r0,
				  u64 *r1)
{
	*r0 = i << in->chunk_shift;
	*r1 = min((i + 1) << in->chunk_shift, in->nr_regions) - 1;
}

/*
 * Sets in @regions the regions of every marked chunk: O(words), for this
 * runs with interrupts off and a record may have billions of regions.
 * Returns how many were not set yet.  in->lock held.
 */
static u64 __rp_intent_set_regions(const struct rp_intent *in,
				   unsigned long *regions)
{
	return rp_bits_set_chunks(regions, in->nr_regions, in->maps.bits,
				  in->nr_bits, in->chunk_shift);
}

/* Sets the binding's geometry (in->lock held or @in not shared yet). */
static void rp_intent_set_geometry(struct rp_intent *in, u32 region_kib,
				   u32 chunk_kib, u64 nr_regions)
{
	in->region_kib = region_kib;
	in->chunk_kib = chunk_kib;
	in->chunk_shift = ilog2(chunk_kib / region_kib);
	in->bit_sect_shift = ilog2((u64)chunk_kib << 10) - SECTOR_SHIFT;
	in->nr_regions = nr_regions;
	in->nr_bits = rp_intent_nr_bits(nr_regions, in->chunk_shift);
}

/* Reads or writes one 4 KiB block of the record.  May block. */
static int rp_intent_io(struct rp_intent *in, struct page *page, u64 offset,
			blk_opf_t opf)
{
	struct bio *bio;
	int ret;

	bio = bio_alloc(in->rb.bdev, 1, opf, GFP_NOIO);
	bio->bi_iter.bi_sector = offset >> SECTOR_SHIFT;
	__bio_add_page(bio, page, RP_INTENT_PAGE_SIZE, 0);
	ret = submit_bio_wait(bio);
	bio_put(bio);
	return ret;
}

static u64 rp_intent_page_offset(unsigned int p)
{
	return RP_INTENT_BITMAP_OFFSET + (u64)p * RP_INTENT_PAGE_SIZE;
}

/*
 * Reads or writes bitmap pages [@p, @p + @n) of the record from or to the
 * first @n bounce pages of @m, in one bio (the block layer splits it to
 * the device's limits).  io_lock held, or @m not shared yet.  May block.
 */
static int rp_intent_io_run(struct rp_intent *in,
			    const struct rp_intent_maps *m, unsigned int p,
			    unsigned int n, blk_opf_t opf)
{
	struct bio *bio;
	unsigned int i;
	int ret;

	bio = bio_alloc(in->rb.bdev, n, opf, GFP_NOIO);
	bio->bi_iter.bi_sector = rp_intent_page_offset(p) >> SECTOR_SHIFT;
	for (i = 0; i < n; i++)
		__bio_add_page(bio, m->io_pages[i], RP_INTENT_PAGE_SIZE, 0);
	ret = submit_bio_wait(bio);
	bio_put(bio);
	return ret;
}

static void rp_intent_maps_free(struct rp_intent_maps *m)
{
	unsigned int i;

	for (i = 0; m->io_pages && i < m->nr_io; i++)
		if (m->io_pages[i])
			__free_page(m->io_pages[i]);
	kfree(m->io_pages);
	kfree(m->io_snap);
	kvfree(m->bits);
	kvfree(m->recent);
	kvfree(m->recent_old);
	kvfree(m->quiet);
	kvfree(m->dirty_seq);
	kvfree(m->ondisk_seq);
	memset(m, 0, sizeof(*m));
}

static int rp_intent_maps_alloc(struct rp_intent_maps *m, u64 nr_bits)
{
	unsigned int i;
	u64 longs;

	m->nr_pages = DIV_ROUND_UP_ULL(max_t(u64, nr_bits, 1),
				       RP_INTENT_PAGE_BITS);
	longs = (u64)m->nr_pages * RP_INTENT_PAGE_LONGS;
	m->bits = kvcalloc(longs, sizeof(unsigned long), GFP_KERNEL);
	m->recent = kvcalloc(longs, sizeof(unsigned long), GFP_KERNEL);
	m->recent_old = kvcalloc(longs, sizeof(unsigned long), GFP_KERNEL);
	m->quiet = kvcalloc(longs, sizeof(unsigned long), GFP_KERNEL);
	m->dirty_seq = kvcalloc(m->nr_pages, sizeof(u64), GFP_KERNEL);
	m->ondisk_seq = kvcalloc(m->nr_pages, sizeof(u64), GFP_KERNEL);
	/* Never more than the bitmap: a small record keeps a page or two. */
	m->nr_io = min_t(unsigned int, m->nr_pages, RP_INTENT_IO_PAGES);
	m->io_pages = kcalloc(m->nr_io, sizeof(*m->io_pages), GFP_KERNEL);
	m->io_snap = kcalloc(m->nr_io, sizeof(*m->io_snap), GFP_KERNEL);
	if (!m->bits || !m->recent || !m->recent_old || !m->quiet ||
	    !m->dirty_seq || !m->ondisk_seq || !m->io_pages || !m->io_snap)
		goto nomem;
	for (i = 0; i < m->nr_io; i++) {
		m->io_pages[i] = alloc_page(GFP_KERNEL);
		if (!m->io_pages[i])
			goto nomem;
	}
	return 0;
nomem:
	rp_intent_maps_free(m);
	return -ENOMEM;
}

/* Copies bitmap page @p of @bits into @page, little endian.  in->lock. */
static void rp_intent_pack(const unsigned long *bits, unsigned int p,
			   struct page *page)
{
	u64 *words = page_address(page);
	__le64 *le = page_address(page);
	unsigned int i;

	/* Converted in place: the page is the only buffer. */
	bitmap_to_arr64(words, bits + (size_t)p * RP_INTENT_PAGE_LONGS,
			RP_INTENT_PAGE_BITS);
	for (i = 0; i < RP_INTENT_PAGE_SIZE / sizeof(u64); i++)
		le[i] = cpu_to_le64(words[i]);
}

static void rp_intent_unpack(unsigned long *bits, unsigned int p,
			     struct page *page)
{
	u64 *words = page_address(page);
	__le64 *le = page_address(page);
	unsigned int i;

	for (i = 0; i < RP_INTENT_PAGE_SIZE / sizeof(u64); i++)
		words[i] = le64_to_cpu(le[i]);
	bitmap_from_arr64(bits + (size_t)p * RP_INTENT_PAGE_LONGS, words,
			  RP_INTENT_PAGE_BITS);
}

/* Bit @i changed.  in->lock held. */
static void __rp_intent_changed(struct rp_intent *in, u64 i)
{
	in->maps.dirty_seq[i / RP_INTENT_PAGE_BITS] = ++in->seq;
}

/*
 * Writes the @n bitmap pages from @p that rp_intent_write_pages() packed,
 * with FUA, and records the snapshot each now has on disk.  io_lock held.
 */
static int rp_intent_write_due(struct rp_intent *in, unsigned int p,
			       unsigned int n)
{
	struct rp_intent_maps *m = &in->maps;
	unsigned int i;
	int ret;

	if (!n)
		return 0;
	ret = rp_intent_io_run(in, m, p, n, REQ_OP_WRITE | REQ_SYNC | REQ_FUA);
	if (ret)
		return ret;
	spin_lock_irq(&in->lock);
	for (i = 0; i < n; i++)
		m->ondisk_seq[p + i] = max(m->ondisk_seq[p + i], m->io_snap[i]);
	spin_unlock_irq(&in->lock);
	return 0;
}

/*
 * Writes the bitmap pages in [@p0, @p1] whose on-disk snapshot is older than
 * what a writer that marked at @seq needs (U64_MAX: everything changed):
 * each run of such pages in bios of up to nr_io pages, with FUA.  When this
 * returns 0, every bit that was set at @seq is on stable storage; -EAGAIN:
 * the record is frozen, nothing was written.  May block.
 */
static int rp_intent_write_pages(struct rp_intent *in, unsigned int p0,
				 unsigned int p1, u64 seq)
{
	/* in->maps changes only under io_lock (rp_intent_settle()) */
	struct rp_intent_maps *m = &in->maps;
	unsigned int p, end, n = 0;
	bool due;
	int ret = 0;

	mutex_lock(&in->io_lock);
	/*
	 * A frozen record may hold another binding on disk than in memory
	 * (rp_intent_commit()): its pages wait for rp_intent_settle().
	 */
	if (READ_ONCE(in->frozen)) {
		mutex_unlock(&in->io_lock);
		return -EAGAIN;
	}
	end = min_t(u64, (u64)p1 + 1, m->nr_pages);
	for (p = p0; !ret && p < end; p++) {
		/* A page at a time: interrupts stay off for one page's copy. */
		spin_lock_irq(&in->lock);
		due = m->ondisk_seq[p] < min(seq, m->dirty_seq[p]);
		if (due) {
			m->io_snap[n] = in->seq;
			rp_intent_pack(m->bits, p, m->io_pages[n]);
		}
		spin_unlock_irq(&in->lock);
		if (!due) {
			ret = rp_intent_write_due(in, p - n, n);
			n = 0;
		} else if (++n == m->nr_io) {
			ret = rp_intent_write_due(in, p + 1 - n, n);
			n = 0;
		}
	}
	if (!ret)
		ret = rp_intent_write_due(in, end - n, n);
	mutex_unlock(&in->io_lock);
	if (ret)
		pr_err_ratelimited("%s: write-intent record %s: write error %d\n",
				   in->dev->name, in->path, ret);
	return ret;
}

/* Fills the 4 KiB header block @sb for a binding with this identity. */
static void rp_intent_sb_fill(struct rp_intent_sb *sb, u32 region_kib,
			      u32 chunk_kib, u64 nr_regions, u64 src_bytes,
			      const char *pipe_id, const char *tgt_path,
			      const char *src_path)
{
	BUILD_BUG_ON(sizeof(*sb) > RP_INTENT_PAGE_SIZE);
	memset(sb, 0, RP_INTENT_PAGE_SIZE);
	memcpy(sb->magic, RP_INTENT_MAGIC, sizeof(sb->magic));
	sb->version = cpu_to_le32(RP_INTENT_VERSION);
	sb->region_kib = cpu_to_le32(region_kib);
	sb->chunk_kib = cpu_to_le32(chunk_kib);
	sb->nr_regions = cpu_to_le64(nr_regions);
	sb->src_bytes = cpu_to_le64(src_bytes);
	strscpy(sb->pipe_id, pipe_id, sizeof(sb->pipe_id));
	strscpy(sb->tgt_path, tgt_path, sizeof(sb->tgt_path));
	strscpy(sb->src_path, src_path, sizeof(sb->src_path));
	sb->csum = cpu_to_le32(crc32_le(~0, (void *)sb,
					offsetof(struct rp_intent_sb, csum)));
}

/* Writes an all-zero header: the record tracks nothing.  io_lock held. */
static int rp_intent_write_invalid(struct rp_intent *in)
{
	memset(page_address(in->bounce), 0, RP_INTENT_PAGE_SIZE);
	return rp_intent_io(in, in->bounce, 0,
			    REQ_OP_WRITE | REQ_SYNC | REQ_FUA);
}

/*
 * Writes a binding: the header invalidated, the bitmap @maps (in bios of
 * up to nr_io pages), then the header @sb (NULL: the record stays
 * unbound).  @sb goes out after a cache flush, so it is never stable
 * before the bitmap it vouches for: a crash in between leaves no valid
 * header, i.e. a full resync.  io_lock held and @in frozen (nothing
 * changes the bits).  May block.
 */
static int rp_intent_write_binding(struct rp_intent *in,
				   const struct rp_intent_maps *maps,
				   struct page *sb)
{
	unsigned int p, i, n;
	int ret;

	ret = rp_intent_write_invalid(in);
	for (p = 0; !ret && sb && p < maps->nr_pages; p += n) {
		n = min(maps->nr_pages - p, maps->nr_io);
		for (i = 0; i < n; i++) {
			spin_lock_irq(&in->lock);
			rp_intent_pack(maps->bits, p + i, maps->io_pages[i]);
			spin_unlock_irq(&in->lock);
		}
		ret = rp_intent_io_run(in, maps, p, n, REQ_OP_WRITE | REQ_SYNC);
	}
	if (!ret && sb)
		ret = rp_intent_io(in, sb, 0, REQ_OP_WRITE | REQ_SYNC |
				   REQ_PREFLUSH | REQ_FUA);
	return ret;
}

/*
 * Invalidates the header of a record whose target another pair takes (@why
 * says when): the bits it holds no longer cover what differs on that
 * target, so it tracks nothing until a pair binds it anew.  On a write
 * error it stays as it was: bound, or its header not known.  May block.
 */
static int rp_intent_forget(struct rp_intent *in, const char *why)
{
	int ret;

	mutex_lock(&in->io_lock);
	ret = rp_intent_write_invalid(in);
	if (!ret) {
		spin_lock_irq(&in->lock);
		in->bound = false;
		in->stale_header = false;
		spin_unlock_irq(&in->lock);
	}
	mutex_unlock(&in->io_lock);
	if (ret)
		pr_err("%s: write-intent record %s: cannot invalidate it (%d); its target %s %s\n",
		       in->dev->name, in->path, ret, in->tgt_path, why);
	else
		pr_info("%s: write-intent record %s: its target %s %s; it tracks nothing until a pair binds it\n",
			in->dev->name, in->path, in->tgt_path, why);
	return ret;
}

/*
 * Invalidates the header of a record whose header on disk is not known
 * (stale_header): until that is done no write may go on, since the header
 * may vouch for a binding whose bits do not see it.  0 once it is done (the
 * record tracks nothing: a full resync, never a stale load), -EAGAIN while
 * a PIPE_SET rewrites the record (frozen), else the write error.  May
 * block.
 */
static int rp_intent_fix_header(struct rp_intent *in)
{
	int ret = 0;

	/* The common case, on every record write: nothing to fix. */
	if (!READ_ONCE(in->stale_header))
		return 0;
	mutex_lock(&in->io_lock);
	if (READ_ONCE(in->frozen)) {
		ret = -EAGAIN;
	} else if (READ_ONCE(in->stale_header)) {
		ret = rp_intent_write_invalid(in);
		if (!ret) {
			spin_lock_irq(&in->lock);
			in->stale_header = false;
			spin_unlock_irq(&in->lock);
			pr_info("%s: write-intent record %s: invalidated after its failed write-back; it tracks nothing until a pair binds it\n",
				in->dev->name, in->path);
		}
	}
	mutex_unlock(&in->io_lock);
	if (ret && ret != -EAGAIN)
		pr_err_ratelimited("%s: write-intent record %s: cannot invalidate it (%d); writes to the source fail\n",
				   in->dev->name, in->path, ret);
	return ret;
}

/*
 * True if the header on @in's device may name, with bits that do not cover
 * what the new pair writes, the target @devt that a pair takes under
 * @path: the same device or the same path as when it was read or bound,
 * or the device its path resolves to now.  A record whose path did not
 * resolve when it was read, and does not now, may name any device.  A
 * header that is not known (@stale: a failed PIPE_SET's write-back failed)
 * may still be the binding the record had (stale_old): it is not bound,
 * and still a pair that takes its target must not leave it for a restart
 * to load.  rp_config_lock held: the identity does not change (a fix may
 * only end @stale meanwhile).  May block (the path lookup).
 */
static bool rp_intent_names(struct rp_intent *in, bool stale, dev_t devt,
			    const char *path)
{
	dev_t now;

	if (stale ? !in->stale_old : !READ_ONCE(in->bound))
		return false;
	if ((in->tgt_devt && in->tgt_devt == devt) ||
	    !strcmp(in->tgt_path, path))
		return true;
	if (!lookup_bdev(in->tgt_path, &now))
		return now == devt;
	/* Gone since its pair knew it (tgt_devt): not this device. */
	return !in->tgt_devt;
}

static struct rp_path_take *rp_path_take_find(const char *path)
{
	struct rp_path_take *t;

	list_for_each_entry(t, &rp_path_takes, node)
		if (!strcmp(t->path, path))
			return t;
	return NULL;
}

/* The last taking of the target path @path, 0 if none.  rp_intents_lock. */
static u64 rp_path_take_seq(const char *path)
{
	struct rp_path_take *t = rp_path_take_find(path);

	return t ? t->seq : 0;
}

/*
 * A PIPE_SET writes records holding rp_config_lock and genl's cb_lock, and
 * a record write has no bound: on a device that queues I/O instead of
 * failing it (a suspended dm device, multipath with queue_if_no_path, an
 * iSCSI session in recovery) it would hold every command of the family,
 * and each genl family that registers, until the device answers.  So
 * first the device must answer a read of its header block and a cache
 * flush within RP_PROBE_TIMEOUT_SEC, or the PIPE_SET fails before it wrote
 * anything: each record it would write (the sources' own, @other: one
 * that a new pair's target invalidates) is probed before any is written.
 * Only reads: an abandoned write could land after later ones.  A device
 * that stops answering after its probe still holds the PIPE_SET
 * (docs/decisions.md, 110).  rp_config_lock held.  May block.
 */
int rp_intent_probe(struct rp_intent *in, bool other,
		    struct netlink_ext_ack *extack)
{
	bool abandoned;
	int ret;

	ret = rp_probe_device(in->rb.bdev->bd_dev, NULL, &abandoned);
	if (!ret)
		return 0;
	if (abandoned && other)
		NL_SET_ERR_MSG(extack,
			       "the write-intent record of another backstore that names the target did not answer within "
			       __stringify(RP_PROBE_TIMEOUT_SEC)
			       " s (probe read or flush); nothing changed");
	else if (abandoned)
		NL_SET_ERR_MSG(extack,
			       "the source's write-intent record did not answer within "
			       __stringify(RP_PROBE_TIMEOUT_SEC)
			       " s (probe read or flush); nothing changed");
	else if (ret == -ENOMEM)
		NL_SET_ERR_MSG(extack,
			       "out of memory for the probe of a write-intent record; nothing changed");
	else if (other)
		NL_SET_ERR_MSG(extack,
			       "the write-intent record of another backstore that names the target failed its probe (open, read or flush); nothing changed");
	else
		NL_SET_ERR_MSG(extack,
			       "the source's write-intent record failed its probe (open, read or flush); nothing changed");
	pr_warn("%s: write-intent record %s: its probe failed (%d): a PIPE_SET that would write it fails\n",
		in->dev->name, in->path, ret);
	return ret;
}

/*
 * Whether @in is another backstore's record that @pair's taking of its
 * target invalidates (rp_intent_target_taken()); *@stale: its header is
 * not known.  rp_intents_lock held.  May block (rp_intent_names()).
 */
static bool rp_intent_taken_from(struct rp_intent *in, struct rp_pair *pair,
				 bool *stale)
{
	*stale = READ_ONCE(in->stale_header);
	return in != pair->src->intent &&
	       rp_intent_names(in, *stale, pair->tgt.bdev->bd_dev,
			       pair->tgt_path);
}

/*
 * Probes every record that @pair's taking of its target would invalidate
 * (rp_intent_probe()).  A PIPE_SET probes them for all its new pairs
 * before the first rp_intent_target_taken(), so that one that does not
 * answer fails it with no record invalidated.  rp_config_lock held.  May
 * block.
 */
int rp_intent_target_probe(struct rp_pair *pair,
			   struct netlink_ext_ack *extack)
{
	struct rp_intent *in;
	bool stale;
	int ret = 0;

	mutex_lock(&rp_intents_lock);
	list_for_each_entry(in, &rp_intents, node) {
		if (rp_intent_taken_from(in, pair, &stale)) {
			ret = rp_intent_probe(in, true, extack);
			if (ret)
				break;
		}
	}
	mutex_unlock(&rp_intents_lock);
	return ret;
}

/*
 * @pair takes its target.  Every other open record whose identity names
 * that target is invalidated on disk now, before the pair is published and
 * writes it: a pair of that identity later must not load bits that say
 * nothing about what this pair wrote (a crash in between included).  So is
 * one whose header is not known if the binding it had names the target.
 * The taking is logged for the records that are not open
 * (rp_intent_open()).  No record is frozen: this PIPE_SET commits none
 * before, and others wait for rp_config_lock.  Each record was probed
 * (rp_intent_target_probe()).  rp_config_lock held.  May block.
 */
int rp_intent_target_taken(struct rp_pair *pair, struct netlink_ext_ack *extack)
{
	dev_t devt = pair->tgt.bdev->bd_dev;
	size_t len = strlen(pair->tgt_path) + 1;
	struct rp_path_take *take;
	struct rp_intent *in;
	bool stale;
	void *old;
	int ret = 0;

	mutex_lock(&rp_intents_lock);
	list_for_each_entry(in, &rp_intents, node) {
		if (!rp_intent_taken_from(in, pair, &stale))
			continue;
		ret = rp_intent_forget(in, stale ?
				       "(which the header on the device, not known, may still name) is taken by a new pair" :
				       "is taken by a new pair");
		if (ret) {
			NL_SET_ERR_MSG(extack,
				       "cannot invalidate the write-intent record of another backstore that names the target");
			goto unlock;
		}
	}
	take = rp_path_take_find(pair->tgt_path);
	if (!take) {
		/* Kept for the module's lifetime, one per path ever taken. */
		take = kzalloc(struct_size(take, path, len), GFP_KERNEL);
		if (!take)
			goto nomem;
		strscpy(take->path, pair->tgt_path, len);
		list_add(&take->node, &rp_path_takes);
	}
	old = xa_store(&rp_target_takes, devt, xa_mk_value(++rp_takes_seq),
		       GFP_KERNEL);
	if (xa_is_err(old))
		goto nomem;
	take->seq = rp_takes_seq;
	goto unlock;
nomem:
	ret = -ENOMEM;
	NL_SET_ERR_MSG(extack, "out of memory for the log of targets taken");
unlock:
	mutex_unlock(&rp_intents_lock);
	return ret;
}

/* The sequence number stored at @index of @xa, 0 if none. */
static u64 rp_seq_load(struct xarray *xa, unsigned long index)
{
	void *entry = xa_load(xa, index);

	return entry ? xa_to_value(entry) : 0;
}

/*
 * Lists a record that opens.  If a pair took the target it names (by
 * device or by path) while it was not open (never opened before in this
 * module's lifetime counts), that pair's writes are not in it: it is
 * invalidated first.  So is one whose target path does not resolve now
 * (a session down, a device renamed) if a pair took any target meanwhile:
 * it cannot tell whether that was its own.  May block.
 */
static int rp_intent_list(struct rp_intent *in)
{
	const char *why = NULL;
	u64 closed;
	int ret = 0;

	mutex_lock(&rp_intents_lock);
	closed = rp_seq_load(&rp_intent_closes, rp_intent_close_key(in));
	if (in->bound && !in->tgt_devt && rp_takes_seq > closed)
		why = "does not resolve, and a pair took a target while the record was not open";
	else if (in->bound && in->tgt_devt &&
		 (rp_seq_load(&rp_target_takes, in->tgt_devt) > closed ||
		  rp_path_take_seq(in->tgt_path) > closed))
		why = "was taken by a pair while the record was not open";
	if (why)
		ret = rp_intent_forget(in, why);
	if (!ret)
		list_add_tail(&in->node, &rp_intents);
	mutex_unlock(&rp_intents_lock);
	return ret;
}

/* Unlists a record that closes, remembering when. */
static void rp_intent_unlist(struct rp_intent *in)
{
	mutex_lock(&rp_intents_lock);
	list_del(&in->node);
	/*
	 * Without memory for the entry a previous close, or none, stays:
	 * older, so a taking since then invalidates the record at its next
	 * open (a full resync, never a stale load).
	 */
	xa_store(&rp_intent_closes, rp_intent_close_key(in),
		 xa_mk_value(rp_takes_seq), GFP_KERNEL);
	mutex_unlock(&rp_intents_lock);
}

/*
 * A record that closes with its header still not known (stale_header: a
 * write-back failed, and so did the last fix) may hold the binding the
 * failed PIPE_SET wrote for its own pair.  That call logged the taking of
 * its pair's target before this close, so the close as recorded would hide
 * that taking at the next open.  Loaded, that binding would cost a full
 * resync (every chunk marked: rp_intent_commit()), not a stale load; still
 * it vouches for a pair that never ran, so the close is forgotten: at the
 * next open any taking of the target its header names invalidates it.
 */
static void rp_intent_unlist_unknown(struct rp_intent *in)
{
	mutex_lock(&rp_intents_lock);
	xa_erase(&rp_intent_closes, rp_intent_close_key(in));
	mutex_unlock(&rp_intents_lock);
}

/* Module exit: every backstore, so every record, is gone. */
void rp_intent_exit(void)
{
	struct rp_path_take *t, *tmp;

	WARN_ON_ONCE(!list_empty(&rp_intents));
	list_for_each_entry_safe(t, tmp, &rp_path_takes, node)
		kfree(t);
	xa_destroy(&rp_target_takes);
	xa_destroy(&rp_intent_closes);
}

/* True when @sb is a record of a @src_bytes source that fits the device. */
static bool rp_intent_sb_valid(struct rp_intent *in,
			       const struct rp_intent_sb *sb, u64 src_bytes)
{
	u32 region_kib = le32_to_cpu(sb->region_kib);
	u32 chunk_kib = le32_to_cpu(sb->chunk_kib);
	u64 nr_regions = le64_to_cpu(sb->nr_regions);

	if (memcmp(sb->magic, RP_INTENT_MAGIC, sizeof(sb->magic)) ||
	    le32_to_cpu(sb->version) != RP_INTENT_VERSION ||
	    le32_to_cpu(sb->csum) != crc32_le(~0, (void *)sb,
					      offsetof(struct rp_intent_sb,
						       csum)))
		return false;
	if (region_kib < REPLIPIPE_REGION_KIB_MIN ||
	    region_kib > REPLIPIPE_REGION_KIB_MAX ||
	    !is_power_of_2(region_kib) ||
	    chunk_kib < region_kib || chunk_kib > RP_INTENT_CHUNK_KIB_MAX ||
	    !is_power_of_2(chunk_kib) ||
	    le64_to_cpu(sb->src_bytes) != src_bytes ||
	    nr_regions != DIV_ROUND_UP_ULL(src_bytes, (u64)region_kib << 10) ||
	    /* no pair has more (rp_pair_create()): bitmap_set() takes an int */
	    nr_regions > INT_MAX ||
	    rp_intent_nr_bits(nr_regions, ilog2(chunk_kib / region_kib)) >
	    rp_intent_capacity(in))
		return false;
	return sb->pipe_id[sizeof(sb->pipe_id) - 1] == '\0' &&
	       sb->tgt_path[sizeof(sb->tgt_path) - 1] == '\0' &&
	       sb->src_path[sizeof(sb->src_path) - 1] == '\0';
}

/*
 * Loads a valid record from disk; an invalid one leaves @in unbound.  A
 * header of ours that is refused (an older version, another primary or
 * source size, a record device too small for it, a bad checksum) is
 * invalidated on disk before the record is used: unbound, it marks none of
 * the writes to come, so a later load of that header, under the identity
 * it names, would be stale.
 */
static int rp_intent_load(struct rp_intent *in, u64 src_bytes)
{
	struct rp_intent_sb *sb;
	struct page *page;
	unsigned int p, i, n;
	bool ours;
	int ret;

	page = alloc_page(GFP_KERNEL);
	if (!page)
		return -ENOMEM;
	ret = rp_intent_io(in, page, 0, REQ_OP_READ);
	if (ret)
		goto out;
	sb = page_address(page);
	ours = !memcmp(sb->magic, RP_INTENT_MAGIC, sizeof(sb->magic));
	if (ours && le32_to_cpu(sb->version) < RP_INTENT_VERSION) {
		pr_info("%s: write-intent record %s has a header of version %u, which does not name its primary: it tracks nothing until a pair binds it\n",
			in->dev->name, in->path, le32_to_cpu(sb->version));
		goto refuse;
	}
	if (!rp_intent_sb_valid(in, sb, src_bytes)) {
		pr_info("%s: write-intent record %s has no valid header: it tracks nothing until a pair binds it\n",
			in->dev->name, in->path);
		goto refuse;
	}
	/*
	 * Bits of another primary say nothing about where this one differs
	 * from the target, whatever the rest of the identity.  By path, as
	 * the administrator names it: an alias of the same device costs a
	 * full resync, never a stale load.
	 */
	if (strcmp(sb->src_path, in->dev->udev_path)) {
		pr_info("%s: write-intent record %s was bound for the primary %s, not %s: it tracks nothing until a pair binds it\n",
			in->dev->name, in->path, sb->src_path,
			in->dev->udev_path);
		goto refuse;
	}
	rp_intent_set_geometry(in, le32_to_cpu(sb->region_kib),
			       le32_to_cpu(sb->chunk_kib),
			       le64_to_cpu(sb->nr_regions));
	in->src_bytes = src_bytes;
	strscpy(in->pipe_id, sb->pipe_id, sizeof(in->pipe_id));
	strscpy(in->tgt_path, sb->tgt_path, sizeof(in->tgt_path));
	if (lookup_bdev(in->tgt_path, &in->tgt_devt))
		in->tgt_devt = 0;
	ret = rp_intent_maps_alloc(&in->maps, in->nr_bits);
	if (ret)
		goto out;
	for (p = 0; p < in->maps.nr_pages; p += n) {
		n = min(in->maps.nr_pages - p, in->maps.nr_io);
		ret = rp_intent_io_run(in, &in->maps, p, n, REQ_OP_READ);
		if (ret) {
			rp_intent_maps_free(&in->maps);
			goto out;
		}
		for (i = 0; i < n; i++)
			rp_intent_unpack(in->maps.bits, p + i,
					 in->maps.io_pages[i]);
	}
	/* Bits past the last chunk are never set nor cleared. */
	bitmap_clear(in->maps.bits, in->nr_bits,
		     (u64)in->maps.nr_pages * RP_INTENT_PAGE_BITS - in->nr_bits);
	/* Not shared yet: counted once here, kept as the bits change. */
	in->maps.nr_set = bitmap_weight(in->maps.bits, in->nr_bits);
	in->bound = true;
	pr_info("%s: write-intent record %s: %llu marked chunk(s) of %u KiB (pipe %s, target %s)\n",
		in->dev->name, in->path, in->maps.nr_set, in->chunk_kib,
		in->pipe_id, in->tgt_path);
	goto out;
refuse:
	/* @in is not shared yet: no io_lock needed. */
	if (ours) {
		ret = rp_intent_write_invalid(in);
		if (ret)
			pr_err("%s: write-intent record %s: cannot invalidate the header it refused: %d\n",
			       in->dev->name, in->path, ret);
	}
out:
	__free_page(page);
	return ret;
}

/*
 * Opens and loads the record of @dev at @path.  Called when the backstore
 * is enabled, after its primary is open.  May block.
 */
int rp_intent_open(struct rp_dev *dev, const char *path)
{
	struct rp_intent *in;
	int ret;

	in = kzalloc(sizeof(*in), GFP_KERNEL);
	if (!in)
		return -ENOMEM;
	in->dev = dev;
	INIT_LIST_HEAD(&in->node);
	/* A pair's intent_epoch of 0 means "not started" (rp_intent_pair_start). */
	in->epoch = 1;
	strscpy(in->path, path, sizeof(in->path));
	spin_lock_init(&in->lock);
	mutex_init(&in->io_lock);
	init_rwsem(&in->clear_sem);
	init_waitqueue_head(&in->thaw_wq);
	INIT_DELAYED_WORK(&in->clear_work, rp_intent_clear_work);
	INIT_WORK(&in->write_work, rp_intent_write_work);
	INIT_LIST_HEAD(&in->waiting);
	in->bounce = alloc_page(GFP_KERNEL);
	if (!in->bounce) {
		ret = -ENOMEM;
		goto free;
	}
	ret = rp_bdev_open(&in->rb, path, in);
	if (ret) {
		pr_err("%s: cannot open the write-intent record %s exclusively: %d\n",
		       dev->name, path, ret);
		goto free;
	}
	if (bdev_logical_block_size(in->rb.bdev) > RP_INTENT_PAGE_SIZE ||
	    !rp_intent_capacity(in)) {
		pr_err("%s: write-intent record %s: needs 4 KiB blocks and at least 8 KiB\n",
		       dev->name, path);
		ret = -EINVAL;
		goto close;
	}
	ret = rp_intent_load(in, bdev_nr_bytes(dev->primary.bdev));
	if (ret) {
		pr_err("%s: cannot load the write-intent record %s: %d\n",
		       dev->name, path, ret);
		goto close;
	}
	ret = rp_intent_list(in);
	if (ret)
		goto free_maps;
	dev->intent = in;
	rp_intent_clear_queue(in);
	return 0;

free_maps:
	rp_intent_maps_free(&in->maps);
close:
	rp_bdev_close(&in->rb, in);
free:
	if (in->bounce)
		__free_page(in->bounce);
	kfree(in);
	return ret;
}

/* Writes what is pending and closes the record.  No writes are left. */
void rp_intent_close(struct rp_dev *dev)
{
	struct rp_intent *in = dev->intent;

	if (!in)
		return;
	rp_intent_unlist(in);
	WRITE_ONCE(in->closing, true);
	cancel_delayed_work_sync(&in->clear_work);
	/* LIO destroys a device without commands: nothing waits here. */
	flush_work(&in->write_work);
	WARN_ON_ONCE(!list_empty(&in->waiting));
	/* Its last chance: a header left valid would load stale bits. */
	rp_intent_fix_header(in);
	if (READ_ONCE(in->stale_header))
		rp_intent_unlist_unknown(in);
	if (in->bound)
		rp_intent_write_pages(in, 0, in->maps.nr_pages - 1, U64_MAX);
	dev->intent = NULL;
	rp_bdev_close(&in->rb, in);
	rp_intent_maps_free(&in->maps);
	__free_page(in->bounce);
	kfree(in);
}

/*
 * Sets the bits of the chunks of [@sector, +@nr_sects).  Returns true if a
 * page they are on is behind on disk; *@seq is what a write must wait for,
 * *@changed whether a bit was not set yet.  A bitmap page and a word at a
 * time: an UNMAP of a whole LUN (mkfs sends one) may cover millions of
 * chunks, and this runs with interrupts off.  in->lock held.
 */
static bool __rp_intent_set(struct rp_intent *in, sector_t sector,
			    sector_t nr_sects, unsigned int *p0,
			    unsigned int *p1, u64 *seq, bool *changed)
{
	bool behind = false;
	u64 first, last, lo, hi, newly;
	unsigned int p;

	first = min_t(u64, sector >> in->bit_sect_shift, in->nr_bits - 1);
	last = min_t(u64, (sector + max_t(sector_t, nr_sects, 1) - 1) >>
		     in->bit_sect_shift, in->nr_bits - 1);
	*changed = false;
	*p0 = first / RP_INTENT_PAGE_BITS;
	*p1 = last / RP_INTENT_PAGE_BITS;
	for (p = *p0; p <= *p1; p++) {
		lo = max_t(u64, first, (u64)p * RP_INTENT_PAGE_BITS);
		hi = min_t(u64, last, ((u64)p + 1) * RP_INTENT_PAGE_BITS - 1);
		newly = rp_bits_set_count(in->maps.bits, lo, hi);
		if (newly) {
			in->maps.nr_set += newly;
			__rp_intent_changed(in, lo);
			*changed = true;
		}
		rp_bits_set_count(in->maps.recent, lo, hi);
	}
	*seq = in->seq;
	for (p = *p0; p <= *p1; p++)
		behind |= in->maps.ondisk_seq[p] < in->maps.dirty_seq[p];
	return behind;
}

/*
 * Marks the regions of an UNMAP or WRITE SAME, which run in the submitter's
 * context anyway and wait for the record.  The caller holds clear_sem for
 * reading.  Returns 0 when the marks are on stable storage: the op may
 * run, and the caller keeps clear_sem until it is tracked.  -EAGAIN when
 * the record is frozen: the caller drops clear_sem, waits on thaw_wq and
 * tries again.  -EINPROGRESS when the record must be written first: the
 * caller drops clear_sem, calls rp_intent_sync() and, when that succeeded,
 * tries again with *@synced_gen kept (else set to U64_MAX).  Not under
 * clear_sem: a clear pass waiting for it would hold up every other write
 * of the backstore behind the record's I/O.  On the next try, marks that
 * were all still set with no bit cleared since the try before were in
 * what rp_intent_sync() wrote, whatever other writers marked since.  A bit
 * cleared meanwhile (and maybe set again by another write whose page is
 * not written yet) makes the op wait for the pages as on a first try.
 * Must not block.
 */
int rp_intent_mark_wait(struct rp_intent *in, sector_t sector,
			sector_t nr_sects, u64 *synced_gen)
{
	unsigned int p0, p1;
	bool changed;
	int ret = 0;
	u64 seq;

	spin_lock_irq(&in->lock);
	/* Not even unbound: the binding it gets may be assumed clean. */
	if (in->frozen)
		ret = -EAGAIN;
	/* Then unbound: nothing to mark once the header is fixed. */
	else if (in->stale_header)
		ret = -EINPROGRESS;
	else if (in->bound && in->nr_bits &&
		 __rp_intent_set(in, sector, nr_sects, &p0, &p1, &seq,
				 &changed) &&
		 (changed || *synced_gen != in->clear_gen))
		ret = -EINPROGRESS;
	*synced_gen = in->clear_gen;
	spin_unlock_irq(&in->lock);
	return ret;
}

/*
 * Writes what the record is behind on: a stale header, then every page
 * marked since it was last written.  0, -EAGAIN while it is frozen, or the
 * record's write error.  May block.
 */
int rp_intent_sync(struct rp_intent *in)
{
	int ret;

	ret = rp_intent_fix_header(in);
	if (!ret && READ_ONCE(in->bound))
		ret = rp_intent_write_pages(in, 0, in->maps.nr_pages - 1,
					    U64_MAX);
	return ret;
}

/*
 * Marks the regions of a write.  True: they are on stable storage, the
 * write may go on (the caller holds clear_sem for reading until it is
 * tracked).  False: @req waits on in->waiting for the record write, which
 * runs on rp_wq and then resubmits it (it is marked again) or fails it,
 * or, while the record is frozen, for rp_intent_settle() to queue that
 * work.  LIO's submission context never waits for the record.  Must not
 * block.
 */
bool rp_intent_mark_write(struct rp_intent *in, struct rp_req *req)
{
	unsigned int p0, p1;
	bool changed;
	u64 seq;

	spin_lock_irq(&in->lock);
	if (in->frozen) {
		list_add_tail(&req->node, &in->waiting);
		spin_unlock_irq(&in->lock);
		return false;
	}
	if (in->stale_header) {
		list_add_tail(&req->node, &in->waiting);
		spin_unlock_irq(&in->lock);
		queue_work(rp_wq, &in->write_work);
		return false;
	}
	if (!in->bound || !in->nr_bits ||
	    !__rp_intent_set(in, req->sector, req->nr_sects, &p0, &p1, &seq,
			     &changed)) {
		spin_unlock_irq(&in->lock);
		return true;
	}
	list_add_tail(&req->node, &in->waiting);
	spin_unlock_irq(&in->lock);
	queue_work(rp_wq, &in->write_work);
	return false;
}

/*
 * Writes what is behind, then lets the waiting writes go: each is marked
 * again when resubmitted, so one whose bit a clear pass took meanwhile
 * waits once more.  If the record cannot be written they fail.  Writes
 * queued during the record write are covered by the next run.
 */
static void rp_intent_write_work(struct work_struct *work)
{
	struct rp_intent *in = container_of(work, struct rp_intent,
					    write_work);
	struct rp_req *req, *tmp;
	LIST_HEAD(ready);
	int ret = 0;

	ret = rp_intent_sync(in);
	spin_lock_irq(&in->lock);
	/* Frozen: rp_intent_settle() queues this work again. */
	if (ret == -EAGAIN || in->frozen) {
		spin_unlock_irq(&in->lock);
		return;
	}
	list_splice_init(&in->waiting, &ready);
	spin_unlock_irq(&in->lock);
	list_for_each_entry_safe(req, tmp, &ready, node) {
		list_del_init(&req->node);
		if (ret)
			rp_req_fail(req);
		else
			rp_req_resubmit(req);
	}
}

/*
 * A rebinding of the record that a PIPE_SET prepared for a new pair: kept
 * in memory until every other step of the PIPE_SET succeeded, so that one
 * that fails leaves the record as it was (rp_intent_commit()).
 */
struct rp_intent_rebind {
	struct rp_intent	*in;
	struct rp_intent_maps	maps;		/* the new bits */
	struct page		*sb;		/* the new header */
	u32			region_kib;
	u32			chunk_kib;
	/*
	 * The pair assumes its target clean, yet the bits are written marked
	 * in full, like any new binding's, and cleared only once the PIPE_SET
	 * succeeded (rp_intent_settle()); write_work then writes the empty
	 * pages.  Left on disk by a PIPE_SET that failed and could not write
	 * the old binding back, an empty bitmap would vouch for a target
	 * nothing wrote.
	 */
	bool			assume_clean;
	bool			frozen;		/* by rp_intent_commit() */
};

/*
 * Takes the pair's dirty bitmap from the record if it is bound to the
 * pair's identity, else prepares a new binding (every region dirty, or
 * none if @assume_clean, though its bits stay marked until the PIPE_SET
 * succeeded) that rp_intent_commit() writes.  Changes nothing on disk nor
 * in @in.  rp_config_lock held; the pair is not published
 * yet.  May block.
 */
int rp_intent_bind(struct rp_intent *in, struct rp_pair *pair, u32 region_kib,
		   bool assume_clean, struct netlink_ext_ack *extack)
{
	/* control cannot change once enabled: the backstore's value holds */
	u32 chunk_kib = max(in->dev->intent_chunk_kib ?:
			    RP_INTENT_CHUNK_KIB_DEFAULT, region_kib);
	u64 nr_bits = rp_intent_nr_bits(pair->nr_regions,
					ilog2(chunk_kib / region_kib));
	struct rp_intent_rebind *rb;

	if (nr_bits > rp_intent_capacity(in)) {
		NL_SET_ERR_MSG(extack,
			       "the source's write-intent record device is too small for the pair's regions");
		return -ENOSPC;
	}

	down_write(&in->clear_sem);
	spin_lock_irq(&in->lock);
	if (in->bound && in->region_kib == region_kib &&
	    in->chunk_kib == chunk_kib &&
	    in->nr_regions == pair->nr_regions &&
	    in->src_bytes == pair->src_bytes &&
	    !strcmp(in->pipe_id, pair->pipe->id) &&
	    !strcmp(in->tgt_path, pair->tgt_path)) {
		/*
		 * The same pair again: trust what the record says.  Its
		 * bitmap is empty yet: every region set is one loaded.
		 */
		pair->intent_loaded = __rp_intent_set_regions(in, pair->dirty);
		pair->intent_state = REPLIPIPE_INTENT_LOADED;
		spin_unlock_irq(&in->lock);
		up_write(&in->clear_sem);
		return 0;
	}
	spin_unlock_irq(&in->lock);
	up_write(&in->clear_sem);

	/* Freed with the pair (rp_intent_rebind_free()) until it is written. */
	rb = kzalloc(sizeof(*rb), GFP_KERNEL);
	if (!rb)
		goto nomem;
	pair->intent_rebind = rb;
	rb->in = in;
	rb->region_kib = region_kib;
	rb->chunk_kib = chunk_kib;
	rb->assume_clean = assume_clean;
	rb->sb = alloc_page(GFP_KERNEL);
	if (!rb->sb || rp_intent_maps_alloc(&rb->maps, nr_bits))
		goto nomem;
	/*
	 * Written as a whole by rp_intent_commit(): dirty_seq = ondisk_seq = 0
	 * (an assume-clean binding's pages become due in rp_intent_settle()).
	 */
	bitmap_set(rb->maps.bits, 0, nr_bits);
	rb->maps.nr_set = nr_bits;
	rp_intent_sb_fill(page_address(rb->sb), region_kib, chunk_kib,
			  pair->nr_regions, pair->src_bytes, pair->pipe->id,
			  pair->tgt_path, in->dev->udev_path);

	pair->intent_state = REPLIPIPE_INTENT_NEW;
	pair->intent_loaded = 0;
	if (!assume_clean)
		bitmap_set(pair->dirty, 0, pair->nr_regions);
	return 0;

nomem:
	NL_SET_ERR_MSG(extack, "out of memory for the write-intent record");
	return -ENOMEM;
}

/* Frees a new binding that was not applied.  Nothing is frozen by it. */
void rp_intent_rebind_free(struct rp_pair *pair)
{
	struct rp_intent_rebind *rb = pair->intent_rebind;

	if (!rb)
		return;
	WARN_ON_ONCE(rb->frozen);
	rp_intent_maps_free(&rb->maps);
	if (rb->sb)
		__free_page(rb->sb);
	kfree(rb);
	pair->intent_rebind = NULL;
}

/*
 * Writes the new binding rp_intent_bind() prepared for @pair, once nothing
 * else in the PIPE_SET can fail but the other records' writes.  The record
 * is frozen from now until rp_intent_settle(): writes to the source wait
 * (as they waited for clear_sem before), nothing changes the bits in
 * memory, so that a PIPE_SET that fails can write back exactly the binding
 * the record had.  On an error the record stays frozen too: the caller
 * settles every record it committed.  rp_config_lock held.  May block.
 */
int rp_intent_commit(struct rp_pair *pair, struct netlink_ext_ack *extack)
{
	struct rp_intent_rebind *rb = pair->intent_rebind;
	struct rp_intent *in = rb->in;
	int ret;

	/* No write is between its mark and its pair when the freeze starts. */
	down_write(&in->clear_sem);
	spin_lock_irq(&in->lock);
	in->frozen = true;
	spin_unlock_irq(&in->lock);
	up_write(&in->clear_sem);
	rb->frozen = true;

	mutex_lock(&in->io_lock);
	ret = rp_intent_write_binding(in, &rb->maps, rb->sb);
	mutex_unlock(&in->io_lock);
	if (ret) {
		pr_err("%s: write-intent record %s: write error %d binding it to target %s\n",
		       in->dev->name, in->path, ret, pair->tgt_path);
		NL_SET_ERR_MSG(extack, "cannot write the source's write-intent record");
	}
	return ret;
}

/*
 * Ends what rp_intent_commit() began: @apply, the PIPE_SET succeeds and the
 * record takes the new binding in memory (a new epoch: the pair it
 * replaces no longer clears it; an assume-clean one has its bits cleared
 * now and its empty pages written by write_work); else the binding it had
 * is written back.  If that fails too, the header on disk is not known
 * (stale_header): the source's writes fail until it can be invalidated,
 * and so does a PIPE_SET that takes the target of the binding it had
 * (stale_old) while it cannot be.  A restart before that may load it
 * (docs/write-intent.md).  Then the waiting writes go on, marked again.
 * rp_config_lock held.  May block.
 */
void rp_intent_settle(struct rp_pair *pair, bool apply)
{
	struct rp_intent_rebind *rb = pair->intent_rebind;
	struct rp_intent *in = rb->in;
	struct rp_intent_maps old = {};
	unsigned int p;
	bool bound;
	int ret;

	mutex_lock(&in->io_lock);
	if (apply) {
		/* Not shared yet: cleared before interrupts go off. */
		if (rb->assume_clean) {
			memset(rb->maps.bits, 0,
			       (size_t)rb->maps.nr_pages * RP_INTENT_PAGE_SIZE);
			rb->maps.nr_set = 0;
		}
		spin_lock_irq(&in->lock);
		old = in->maps;
		in->maps = rb->maps;
		in->clear_gen++;
		rp_intent_set_geometry(in, rb->region_kib, rb->chunk_kib,
				       pair->nr_regions);
		in->src_bytes = pair->src_bytes;
		strscpy(in->pipe_id, pair->pipe->id, sizeof(in->pipe_id));
		strscpy(in->tgt_path, pair->tgt_path, sizeof(in->tgt_path));
		in->tgt_devt = pair->tgt.bdev->bd_dev;
		in->bound = true;
		in->stale_header = false;
		in->epoch++;
		/* On disk every chunk is marked: its pages are to be written. */
		if (rb->assume_clean)
			for (p = 0; p < in->maps.nr_pages; p++)
				in->maps.dirty_seq[p] = ++in->seq;
		spin_unlock_irq(&in->lock);
		memset(&rb->maps, 0, sizeof(rb->maps));
	} else {
		spin_lock_irq(&in->lock);
		bound = in->bound;
		if (bound)
			rp_intent_sb_fill(page_address(rb->sb), in->region_kib,
					  in->chunk_kib, in->nr_regions,
					  in->src_bytes, in->pipe_id,
					  in->tgt_path, in->dev->udev_path);
		spin_unlock_irq(&in->lock);
		ret = rp_intent_write_binding(in, &in->maps,
					      bound ? rb->sb : NULL);
		/*
		 * Not written back, the disk may hold the binding the failed
		 * call committed (every chunk marked) or, intact, the one it
		 * had (the commit failed before invalidating it, or a header
		 * write that failed landed): writes must not go on unmarked
		 * under that one.
		 */
		spin_lock_irq(&in->lock);
		if (ret) {
			/*
			 * The binding it had may be on disk (rp_intent_names()),
			 * since the first failure: a later one binds nothing.
			 */
			if (!in->stale_header)
				in->stale_old = bound;
			in->bound = false;
		}
		in->stale_header = !!ret;
		spin_unlock_irq(&in->lock);
		if (ret)
			pr_err("%s: write-intent record %s: cannot write back its binding after a failed PIPE_SET (%d); writes to the source wait until it can be invalidated\n",
			       in->dev->name, in->path, ret);
		else
			pr_info("%s: write-intent record %s: its binding is written back after a failed PIPE_SET\n",
				in->dev->name, in->path);
	}
	mutex_unlock(&in->io_lock);

	spin_lock_irq(&in->lock);
	in->frozen = false;
	spin_unlock_irq(&in->lock);
	rb->frozen = false;
	wake_up_all(&in->thaw_wq);
	/*
	 * The work writes every page that is due: for an assume-clean binding
	 * all of them, its empty bits over the marked ones on disk.  Until
	 * they are written a crash costs a full resync; if they cannot be,
	 * the source's writes fail, as on any error of the record device.
	 */
	queue_work(rp_wq, &in->write_work);
	rp_intent_maps_free(&old);
	rp_intent_rebind_free(pair);
}

/*
 * A new pair of this record is published and no write that found no pair is
 * in flight any more (rp_pairs_start()): what those writes marked after the
 * pair took its bitmap (rp_intent_bind()) went to the primary only, so every
 * marked chunk becomes dirty on the pair too.  From now on clear passes look
 * at the pair.
 *
 * A pair whose start waited (start_pending) may find the record unbound: a
 * later PIPE_SET that failed took the pair's target for another pair
 * (rp_intent_target_taken()), or could not write a binding back.  An
 * unbound record marks no write, and those that found no pair since the
 * bind may be on the primary only: every region of the pair becomes dirty,
 * as for a record bound anew.  rp_config_lock held.
 */
void rp_intent_pair_start(struct rp_intent *in, struct rp_pair *pair)
{
	bool lost;
	u64 newly;

	spin_lock_irq(&pair->lock);
	spin_lock(&in->lock);
	lost = !in->bound;
	/* A pair bound anew has every region dirty: nothing to add then. */
	if (pair->nr_dirty < pair->nr_regions) {
		if (lost)
			newly = rp_bits_set_count(pair->dirty, 0,
						  pair->nr_regions - 1);
		else
			newly = __rp_intent_set_regions(in, pair->dirty);
		__rp_pair_dirty_added(pair, newly);
	}
	if (!lost) {
		pair->intent_epoch = in->epoch;
		/* The binding is this pair's: loaded, or written for it. */
		in->tgt_devt = pair->tgt.bdev->bd_dev;
	}
	spin_unlock(&in->lock);
	spin_unlock_irq(&pair->lock);
	if (lost)
		pr_warn("%s: write-intent record %s lost its binding before pair %s -> %s started; every region of the pair is dirty\n",
			in->dev->name, in->path, pair->pipe->id,
			pair->tgt_path);
}

/*
 * True if the record's clear passes may look at @pair: bound to it, started,
 * and the pair mirrors.  A Paused or Degraded pair keeps its chunks marked
 * (more than needed, never less): flushing a target that may not answer
 * would hold a pair reference, which the pair's removal waits for.
 * pair->lock and in->lock held.
 */
static bool __rp_intent_clears(struct rp_intent *in, struct rp_pair *pair)
{
	return in->bound && !in->frozen && pair->intent_epoch == in->epoch &&
	       (pair->state == REPLIPIPE_PAIR_SYNCING ||
		pair->state == REPLIPIPE_PAIR_INSYNC);
}

/*
 * True while a pass over @pair may go on: the pair clears the record and
 * is not killed, unless @final (its last clear runs once it is drained).
 * pair->lock and in->lock held.
 */
static bool __rp_intent_pass_goes(struct rp_intent *in, struct rp_pair *pair,
				  bool final)
{
	return (final || !pair->dead) && __rp_intent_clears(in, pair);
}

/*
 * True if record bit @i may be cleared: nobody marked its chunk since the
 * last pass, and @pair has every region of it in sync, unclaimed and (unless
 * @final: the pair is drained and going away) with no write in flight.
 * pair->lock and in->lock held.
 */
static bool __rp_intent_quiet(struct rp_intent *in, struct rp_pair *pair,
			      u64 i, bool final)
{
	u64 r0, r1;

	if (test_bit(i, in->maps.recent) || test_bit(i, in->maps.recent_old))
		return false;
	rp_intent_bit_regions(in, i, &r0, &r1);
	return !rp_bits_any(pair->dirty, r0, r1) &&
	       !rp_bits_any(pair->claimed, r0, r1) &&
	       (final || !__rp_pair_busy(pair, r0, r1));
}

/*
 * A pass's work per hold of pair->lock, in bitmap words looked at, and what
 * one step costs besides: bounds the time with interrupts off (1024 steps
 * of chunks of a word or less).  A record may have 2^31 chunks: one scan or
 * zeroing of its bitmap (256 MiB) would keep them off for tens of ms.
 */
#define RP_INTENT_PASS_WORDS	16384
#define RP_INTENT_PASS_STEP	16
/* Bits one step skips at most: a run of clear chunks, or of dirty regions. */
#define RP_INTENT_PASS_SCAN	(64 * BITS_PER_LONG)

/*
 * Counts a step that looked at @bits bits; once a hold's work is done,
 * drops the locks, lets others run and takes them again.  False if the
 * pair no longer clears the record (a PIPE_SET froze or rebound it
 * meanwhile): the pass stops.  In between, writes mark (recent) and are
 * tracked on the pair; a chunk is judged within one hold.  pair->lock and
 * in->lock held.
 */
static bool rp_intent_pass_step(struct rp_intent *in, struct rp_pair *pair,
				bool final, u64 *work, u64 bits)
{
	*work += RP_INTENT_PASS_STEP + bits / BITS_PER_LONG;
	if (*work < RP_INTENT_PASS_WORDS)
		return true;
	*work = 0;
	spin_unlock(&in->lock);
	spin_unlock_irq(&pair->lock);
	cond_resched();
	spin_lock_irq(&pair->lock);
	spin_lock(&in->lock);
	return __rp_intent_pass_goes(in, pair, final);
}

/*
 * Zeroes @map (maps.quiet or maps.recent_old) a hold's work at a time.
 * Stopped early, the rest keeps its bits: quiet ones are not used (the
 * pass picked nothing), recent ones stay recent one pass longer.  False if
 * the pass must stop.  pair->lock and in->lock held.
 */
static bool rp_intent_pass_zero(struct rp_intent *in, struct rp_pair *pair,
				unsigned long *map, bool final, u64 *work)
{
	u64 i, n;

	for (i = 0; i < in->nr_bits; i += n) {
		n = min_t(u64, in->nr_bits - i,
			  (u64)RP_INTENT_PASS_WORDS * BITS_PER_LONG);
		bitmap_clear(map, i, n);
		if (!rp_intent_pass_step(in, pair, final, work, n))
			return false;
	}
	return true;
}

/*
 * Goes over the chunks of @set that may be quiet (runs of dirty regions
 * are skipped a word at a time) and picks each quiet one into maps.quiet,
 * or clears it from the record (@clear).  A step judges one chunk or skips
 * up to RP_INTENT_PASS_SCAN bits, and the locks are dropped after each
 * RP_INTENT_PASS_WORDS of work (rp_intent_pass_step()).  Each chunk is
 * judged on its own (a clear looks again after the flush).  Stops early if
 * the pair no longer clears the record.  Returns how many chunks it picked
 * or cleared.
 */
static u64 rp_intent_pass(struct rp_intent *in, struct rp_pair *pair,
			  const unsigned long *set, bool final, bool clear)
{
	u64 i = 0, end, r0, r1, d, looked, hits = 0, work = 0;

	spin_lock_irq(&pair->lock);
	spin_lock(&in->lock);
	if (!__rp_intent_pass_goes(in, pair, final))
		goto unlock;
	if (!clear &&
	    !rp_intent_pass_zero(in, pair, in->maps.quiet, final, &work))
		goto unlock;
	while (i < in->nr_bits) {
		end = min_t(u64, in->nr_bits, i + RP_INTENT_PASS_SCAN);
		looked = end - i;
		i = find_next_bit(set, end, i);
		if (i >= end) {
			i = end;
			goto step;
		}
		rp_intent_bit_regions(in, i, &r0, &r1);
		looked = 3 * (r1 - r0 + 1);
		d = find_next_bit(pair->dirty, r1 + 1, r0);
		if (d <= r1) {
			/*
			 * No chunk up to the end of this dirty run is quiet;
			 * a longer run goes on in the next step.
			 */
			end = min_t(u64, pair->nr_regions,
				    d + RP_INTENT_PASS_SCAN);
			looked += end - d;
			d = find_next_zero_bit(pair->dirty, end, d);
			i = max(i + 1,
				DIV_ROUND_UP_ULL(d, 1ULL << in->chunk_shift));
			goto step;
		}
		if (test_bit(i, in->maps.bits) &&
		    __rp_intent_quiet(in, pair, i, final)) {
			if (clear) {
				__clear_bit(i, in->maps.bits);
				in->maps.nr_set--;
				__rp_intent_changed(in, i);
				in->clear_gen++;
			} else {
				__set_bit(i, in->maps.quiet);
			}
			hits++;
		}
		i++;
step:
		if (!rp_intent_pass_step(in, pair, final, &work, looked))
			goto unlock;
	}
	/*
	 * Ages the marks: this pick looked at every chunk, and the marks of
	 * writes since it began are in maps.recent.
	 */
	if (!clear &&
	    rp_intent_pass_zero(in, pair, in->maps.recent_old, final, &work))
		in->maps.recent_old_set = false;
unlock:
	spin_unlock(&in->lock);
	spin_unlock_irq(&pair->lock);
	return hits;
}

/*
 * The first half of a pass: picks the quiet chunks into maps.quiet and ages
 * the marks (only with a live pair: writes without one are tracked nowhere
 * else, so their marks stay recent until a pair looks).  A chunk is recent
 * from its mark until a whole pick began after it.  Writes mark
 * maps.recent; a pick first moves those marks to maps.recent_old (a swap
 * of the two maps, the other one zeroed), and zeroes them once it looked at
 * every chunk (rp_intent_pass()).  A pick that stopped early leaves them:
 * the next one swaps nothing, so they stay recent one pass longer.  The
 * swap takes clear_sem, and only while the pair is still the source's:
 * every write marked before it is then tracked on the pair (in flight: not
 * quiet), or found no pair before the pair started (it ended before, and
 * its mark is in the pair's bitmap: rp_intent_pair_start()); every later
 * one marks the map the pick keeps.  A write that finds no pair because
 * this one was removed after the pick took it must keep its mark through
 * the pair's last clear (rp_intent_pair_gone()): its data is on the
 * primary only.  So writes wait for that moment only, not for a walk over
 * millions of chunks, as they did when the pick held clear_sem throughout
 * and zeroed one map at its end.  True if it picked any.
 */
static bool rp_intent_clear_pick(struct rp_intent *in, struct rp_pair *pair)
{
	bool clears, swap_maps;

	/* The debug tier's stand-in for a pass that is slow to start. */
	if (rp_delay_clear_pick())
		msleep(5000);
	spin_lock_irq(&pair->lock);
	spin_lock(&in->lock);
	clears = __rp_intent_pass_goes(in, pair, false);
	swap_maps = clears && !in->maps.recent_old_set;
	spin_unlock(&in->lock);
	spin_unlock_irq(&pair->lock);
	if (!clears)
		return false;
	if (swap_maps) {
		down_write(&in->clear_sem);
		spin_lock_irq(&pair->lock);
		spin_lock(&in->lock);
		clears = __rp_intent_pass_goes(in, pair, false) &&
			 rcu_access_pointer(in->dev->pair) == pair;
		if (clears && !in->maps.recent_old_set) {
			swap(in->maps.recent, in->maps.recent_old);
			in->maps.recent_old_set = true;
		}
		spin_unlock(&in->lock);
		spin_unlock_irq(&pair->lock);
		up_write(&in->clear_sem);
		if (!clears)
			return false;
	}
	return rp_intent_pass(in, pair, in->maps.bits, false, false);
}

static void rp_intent_flush_failed(struct rp_intent *in, int ret)
{
	pr_warn_ratelimited("%s: write-intent record %s: a leg's flush failed (%d); its chunks stay marked\n",
			    in->dev->name, in->path, ret);
}

/*
 * Writes that completed may still sit in a leg's volatile cache: a chunk's
 * bit is cleared on the record only once both legs flushed them, or a power
 * loss could leave the legs different under a clean record.  The target's
 * flush ends by @deadline (jiffies); none is started after it.  May block.
 */
static int rp_intent_flush_legs(struct rp_intent *in, struct rp_pair *pair,
				unsigned long deadline)
{
	int ret;

	if (!time_before(jiffies, deadline))
		ret = -ETIMEDOUT;
	else
		ret = blkdev_issue_flush(in->dev->primary.bdev);
	if (!ret)	/* also clears the pair's older unflushed regions */
		ret = rp_pair_flush_target(pair, deadline);
	if (ret)
		rp_intent_flush_failed(in, ret);
	return ret;
}

/*
 * Clears the record bits of the chunks that are still quiet: of those the
 * pass picked before its flush, or (@final, the pair drained after a flush)
 * of all.  Returns true if a bit changed.
 */
static bool rp_intent_clear_pair(struct rp_intent *in, struct rp_pair *pair,
				 bool final)
{
	return rp_intent_pass(in, pair,
			      final ? in->maps.bits : in->maps.quiet, final,
			      true);
}

/*
 * A clear pass: picks the quiet chunks, flushes both legs, then clears the
 * picks that stayed quiet (a write to one since the pick marked it recent,
 * and one in flight at the pick was not picked: every write to a cleared
 * chunk completed before the flush).
 */
static void rp_intent_clear_work(struct work_struct *work)
{
	struct rp_intent *in = container_of(to_delayed_work(work),
					    struct rp_intent, clear_work);
	bool changed = false, picked = false, target_failed = false;
	struct rp_probe *flush = NULL;
	struct rp_pair *pair;
	u64 serial = 0, gen = 0;
	int ret;

	pair = rp_pair_get(in->dev);
	if (pair)
		picked = rp_intent_clear_pick(in, pair);
	if (picked) {
		serial = pair->serial;
		flush = rp_pair_flush_target_start(pair, &gen);
	}
	/*
	 * Not held across the flushes: the pair's removal waits for every
	 * reference to it, and the target may take long to flush, or queue
	 * the flush.
	 */
	if (pair)
		rp_pair_put(pair);
	if (!picked)
		goto requeue;
	ret = blkdev_issue_flush(in->dev->primary.bdev);
	if (IS_ERR(flush)) {
		ret = ret ?: PTR_ERR(flush);
	} else {
		bool abandoned;
		int tret = rp_pair_flush_target_wait(flush,
						     RP_INTENT_FLUSH_TIMEOUT_SEC,
						     &in->closing, &abandoned);

		/* Not one that the target queues: that one may still work. */
		target_failed = tret && !abandoned;
		ret = ret ?: tret;
	}
	if (ret) {
		rp_intent_flush_failed(in, ret);
		if (!target_failed)
			goto requeue;
	}
	/* Only for the pair whose writes the flushes covered. */
	pair = rp_pair_get(in->dev);
	if (pair && pair->serial == serial) {
		if (target_failed) {
			rp_pair_target_flush_failed(pair);
		} else {
			rp_pair_flush_done(pair, gen);
			changed = rp_intent_clear_pair(in, pair, false);
		}
	}
	if (pair)
		rp_pair_put(pair);
requeue:
	if (changed && in->bound)
		rp_intent_write_pages(in, 0, in->maps.nr_pages - 1, U64_MAX);
	rp_intent_clear_queue(in);
}

/*
 * A pair of this record is going away with its I/O drained: leave on disk
 * exactly the regions it still has dirty, plus those written since the
 * last clear pass (all of it if the pair did not mirror or the legs cannot
 * be flushed by @flush_by, jiffies).  May block.
 */
void rp_intent_pair_gone(struct rp_intent *in, struct rp_pair *pair,
			 unsigned long flush_by)
{
	bool clears, changed;

	spin_lock_irq(&pair->lock);
	spin_lock(&in->lock);
	clears = __rp_intent_clears(in, pair);
	spin_unlock(&in->lock);
	spin_unlock_irq(&pair->lock);
	if (!clears || rp_intent_flush_legs(in, pair, flush_by))
		return;
	changed = rp_intent_clear_pair(in, pair, true);
	if (changed)
		rp_intent_write_pages(in, 0, in->maps.nr_pages - 1, U64_MAX);
}

/*
 * Regions the record marks now (for PIPE_GET and info): those of its marked
 * chunks, so the count is in the pair's unit whatever the chunk size.
 */
u64 rp_intent_marked(struct rp_intent *in)
{
	unsigned long flags;
	u64 n = 0;

	spin_lock_irqsave(&in->lock, flags);
	if (in->bound && in->nr_bits) {
		n = in->maps.nr_set << in->chunk_shift;
		/* the last chunk may be short */
		if (test_bit(in->nr_bits - 1, in->maps.bits))
			n -= (in->nr_bits << in->chunk_shift) - in->nr_regions;
	}
	spin_unlock_irqrestore(&in->lock, flags);
	return n;
}

/* The record's chunk in KiB (0 while it is unbound), for info. */
u32 rp_intent_chunk_kib(struct rp_intent *in)
{
	unsigned long flags;
	u32 kib = 0;

	spin_lock_irqsave(&in->lock, flags);
	if (in->bound)
		kib = in->chunk_kib;
	spin_unlock_irqrestore(&in->lock, flags);
	return kib;
}
