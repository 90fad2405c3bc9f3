// SPDX-License-Identifier: GPL-2.0
/*
 * rp_io.c: the data path of a replipipe backstore.
 *
 * Reads go to the primary only.  A write to a backstore with a mirroring
 * pair is one rp_req fanned out to two legs (iblock's pending counter with a
 * submitter's reference):
 *   synchronous   primary and target bios share the command's pages; the
 *                 command completes when both legs are done;
 *   asynchronous  the target leg gets its own copy of the data from the
 *                 pair's page pool, bounded by max lag; the command
 *                 completes when the primary leg is done; target legs of
 *                 overlapping ranges are issued in submission order.  A
 *                 write that finds no room within max lag waits off LIO's
 *                 submission context (rp_pair_lag_reserve()), like one
 *                 waiting for a claim, and is submitted again from the
 *                 start: on iSCSI that context is the connection's
 *                 receiver, which must keep answering the initiator.
 * SYNCHRONIZE CACHE and FUA reach both legs (on an asynchronous pair the
 * command waits for the primary's flush only); what the target acknowledged
 * without FUA is tracked until a flush of it completes (rp_pipe.c,
 * "Unflushed").  UNMAP and WRITE SAME are
 * mirrored synchronously in synchronous mode (an UNMAP of a LUN reporting
 * zeroes for unmapped blocks zeroes the target: rp_unmap_target()), up to
 * 64 MiB written on the target; in asynchronous mode, when their regions
 * are claimed, or past that bound, they go to the primary and mark the
 * regions dirty (the resync copies them).
 * With a write-intent record (rp_intent.c), a write's regions are marked on
 * it before the write is submitted, under the record's clear_sem until the
 * write is tracked on its pair.  A write whose mark is not on disk yet waits
 * off LIO's submission context and is submitted again once it is; a write
 * whose mark cannot be written fails and reaches neither leg.
 * An asynchronous pair's copies and target flushes are submitted from the
 * pair's own workqueue, never from the submitter's context
 * (rp_async_work()).
 * Functions called from bio completion must not block; everything that can
 * block runs in the submitter's context or on one of the module's
 * workqueues.
 */
#define pr_fmt(fmt) "replipipe: " fmt

#include <linux/highmem.h>
#include <linux/interval_tree_generic.h>
#include <linux/scatterlist.h>
#include <scsi/scsi_common.h>
#include <scsi/scsi_proto.h>

#include "replipipe_internal.h"

static void rp_req_resubmit_work(struct work_struct *work);

static struct rp_req *rp_req_alloc(struct se_cmd *cmd, struct rp_dev *dev)
{
	struct rp_req *req;

	/* A mempool allocation that may sleep does not fail. */
	req = mempool_alloc(dev->req_pool, GFP_NOIO);
	memset(req, 0, sizeof(*req));
	req->cmd = cmd;
	req->dev = dev;
	refcount_set(&req->pending, 1);
	refcount_set(&req->refs, 1);
	atomic_set(&req->async_pending, 1);
	INIT_LIST_HEAD(&req->node);
	INIT_LIST_HEAD(&req->ready_node);
	INIT_LIST_HEAD(&req->async_waiters);
	bio_list_init(&req->async_bios);
	/*
	 * Once, not at each resubmission: re-initializing a work item that
	 * may still be running would let it run twice at once.
	 */
	INIT_WORK(&req->work, rp_req_resubmit_work);
	/* The device's pools outlive every request (rp_destroy_device()). */
	percpu_ref_get(&dev->reqs);
	return req;
}

static void rp_req_put(struct rp_req *req)
{
	struct rp_pair *pair = req->pair;
	struct rp_dev *dev = req->dev;

	if (!refcount_dec_and_test(&req->refs))
		return;
	if (pair) {
		rp_pair_untrack(pair, req);
		rp_pair_put(pair);
	}
	if (req->flags & RP_REQ_UNTRACKED)
		rp_req_untracked_done(req);
	if (req->cmd_sgl)
		sgl_free_n_order(req->sgl, req->sgl_nents, 0);
	mempool_free(req, dev->req_pool);
	percpu_ref_put(&dev->reqs);
}

/*
 * Copies between the command's pages and its bounce pages: whole lowmem
 * pages from sgl_alloc() (the last one may be short), one per PAGE_SIZE
 * of the command.  Must not block: a read copies back in its completion.
 */
static void rp_bounce_copy(struct rp_req *req, bool to_bounce)
{
	struct sg_mapping_iter miter;
	size_t off = 0;

	sg_miter_start(&miter, req->cmd_sgl, req->cmd_sgl_nents,
		       SG_MITER_ATOMIC |
		       (to_bounce ? SG_MITER_FROM_SG : SG_MITER_TO_SG));
	while (off < req->cmd_bytes && sg_miter_next(&miter)) {
		size_t len = min_t(size_t, miter.length, req->cmd_bytes - off);
		size_t done = 0;

		miter.consumed = len;
		while (done < len) {
			struct page *page = sg_page(&req->sgl[off >> PAGE_SHIFT]);
			void *buf = page_address(page) + offset_in_page(off);
			size_t n = min(len - done,
				       PAGE_SIZE - offset_in_page(off));

			if (to_bounce)
				memcpy(buf, miter.addr + done, n);
			else
				memcpy(miter.addr + done, buf, n);
			done += n;
			off += n;
		}
	}
	sg_miter_stop(&miter);
}

/*
 * The alignment the bios of a leg need: each segment's offset and length a
 * multiple of the device's DMA alignment, and of its logical block, so that
 * each bio rp_submit_sg() cuts at a segment's end holds whole blocks.
 */
static unsigned int rp_bdev_align_mask(struct block_device *bdev)
{
	return (bdev_logical_block_size(bdev) - 1) | bdev_dma_alignment(bdev);
}

/*
 * LIO lets an administrator set a LUN's block_size below its primary's
 * (the legs' largest: a target's blocks are never larger, rp_pipe.c) until
 * the LUN is exported.  A command that starts or ends inside one of the
 * legs' blocks would then need a read-modify-write, which the module does
 * not do: padding it would wipe the block's neighbours on both legs, and
 * the block layer may not refuse a bio that is not whole blocks.  Such a
 * command is refused; those of whole blocks go on.
 */
static bool rp_range_fits_legs(struct rp_dev *dev, struct se_cmd *cmd,
			       sector_t sector, u64 bytes)
{
	unsigned int block = bdev_logical_block_size(dev->primary.bdev);

	if (IS_ALIGNED((u64)sector << SECTOR_SHIFT | bytes, block))
		return true;
	pr_warn_ratelimited("%s: refused opcode 0x%02x at sector %llu: the LUN's block_size %u is smaller than the primary's %u\n",
			    dev->name, cmd->t_task_cdb[0], (u64)sector,
			    cmd->se_dev->dev_attrib.block_size, block);
	return false;
}

/*
 * The length of a scatterlist, and in *@seg_bits the OR of its segments'
 * offsets and lengths (what rp_req_bounce() asks of it).
 */
static u64 rp_sgl_shape(struct scatterlist *sgl, unsigned int nents,
			unsigned int *seg_bits)
{
	struct scatterlist *sg;
	u64 listed = 0;
	int i;

	*seg_bits = 0;
	for_each_sg(sgl, sg, nents, i) {
		listed += sg->length;
		*seg_bits |= sg->offset | sg->length;
	}
	return listed;
}

/*
 * Gives @req bounce pages when its command's pages cannot go to its legs as
 * they are: tcm_loop and vhost-scsi pass on the initiator's buffer, which
 * Linux's sd takes for O_DIRECT at its DMA alignment (64 bytes), and a
 * segment that is no whole number of blocks would have rp_submit_sg() cut
 * a bio inside a block and start the next one at the wrong sector.
 * @listed is the length of the command's list, @seg_bits the OR of its
 * segments' offsets and lengths (rp_sgl_shape()).  A write's data are
 * copied now, a read's when it completes.  0, or -ENOMEM.  May block.
 */
static int rp_req_bounce(struct rp_req *req, u32 bytes, u64 listed,
			 unsigned int seg_bits, bool write)
{
	struct block_device *primary = req->dev->primary.bdev;
	unsigned int mask = rp_bdev_align_mask(primary);
	unsigned int block = bdev_logical_block_size(primary);
	gfp_t gfp = GFP_NOIO;
	struct scatterlist *bounce;
	unsigned int nents;

	if (req->pair) {
		mask |= rp_bdev_align_mask(req->pair->tgt.bdev);
		block = max(block,
			    bdev_logical_block_size(req->pair->tgt.bdev));
	}
	if (!(seg_bits & mask) && listed == bytes)
		return 0;

	/*
	 * Whole blocks of the command's data only.  A READ whose initiator
	 * expects less than its CDB asks for (LIO keeps the shorter length)
	 * may end inside a block: the legs get the whole block, zeroed past
	 * the data (never seen by the initiator).  One whose initiator
	 * expects more, on a fabric that hands over the initiator's buffer
	 * (tcm_loop, vhost-scsi), comes with a list longer than the CDB's
	 * range: the legs get that range.  Only the command's bytes are
	 * copied back.
	 */
	if (!IS_ALIGNED(bytes, block))
		gfp |= __GFP_ZERO;
	bounce = sgl_alloc(round_up((u64)bytes, block), gfp, &nents);
	if (!bounce)
		return -ENOMEM;
	req->cmd_sgl = req->sgl;
	req->cmd_sgl_nents = req->sgl_nents;
	req->cmd_bytes = bytes;
	req->sgl = bounce;
	req->sgl_nents = nents;
	if (write)
		rp_bounce_copy(req, true);
	return 0;
}

/*
 * @req goes to another pair's target than the one rp_req_bounce() looked at
 * (rp_req_repoint()): bounces it now if its pages do not suit that one.
 * Bounce pages suit any target (whole pages, whole blocks of the primary,
 * which no target's block exceeds).  0, or -ENOMEM.  May block.
 */
static int rp_req_bounce_again(struct rp_req *req)
{
	unsigned int seg_bits;
	u64 listed;

	if (req->cmd_sgl || !req->pair)
		return 0;
	listed = rp_sgl_shape(req->sgl, req->sgl_nents, &seg_bits);
	return rp_req_bounce(req, (u64)req->nr_sects << SECTOR_SHIFT, listed,
			     seg_bits, true);
}

/*
 * Fails a command because its target leg failed under policy FailIO:
 * HARDWARE ERROR, LOGICAL UNIT COMMUNICATION FAILURE.  Not LIO's NOT READY
 * for that code, which initiators take for a path error: Linux's
 * dm-multipath fails the path, and with no path left queues every I/O,
 * reads too (queue_if_no_path), until one comes back.  This is the
 * logical unit's failure, which no other path avoids.  Must not block.
 */
static void rp_complete_target_failure(struct se_cmd *cmd)
{
	/* Descriptor format past 2^32 blocks, as LIO's own (not exported). */
	bool desc = cmd->se_dev->transport->get_blocks(cmd->se_dev) > U32_MAX;
	u8 sense[TRANSPORT_SENSE_BUFFER] = {};

	/*
	 * A command with a completion callback (the write of a COMPARE AND
	 * WRITE, which releases the device's caw_sem there) must fail through
	 * LIO's failure path, which calls it; a sense of the backend's own
	 * is sent as a success, which does not.
	 */
	if (cmd->transport_complete_callback) {
		sense_reason_t reason = TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE;

		target_complete_cmd_with_sense(cmd, SAM_STAT_CHECK_CONDITION,
					       reason);
		return;
	}
	scsi_build_sense_buffer(desc, sense, HARDWARE_ERROR, 0x08, 0x00);
	transport_copy_sense_to_cmd(cmd, sense);
	target_complete_cmd(cmd, SAM_STAT_CHECK_CONDITION);
}

/*
 * The one completion of the command side: runs when the last primary or
 * synchronous target bio is done, or when the submitter lets go.
 * Must not block.
 */
static void rp_req_cmd_done(struct rp_req *req)
{
	struct se_cmd *cmd = req->cmd;
	bool fail_target = false;

	if (!refcount_dec_and_test(&req->pending))
		return;

	if (req->cmd_sgl && req->primary_opf == REQ_OP_READ &&
	    !atomic_read(&req->primary_errors))
		rp_bounce_copy(req, false);

	/*
	 * The primary failed where the target leg may have written: the legs
	 * can differ, so the regions are dirty (dm-raid1 does the same).
	 */
	if ((req->flags & (RP_REQ_MIRROR | RP_REQ_FLUSH)) == RP_REQ_MIRROR &&
	    atomic_read(&req->primary_errors))
		rp_pair_mark_dirty(req->pair, req);

	if ((req->flags & (RP_REQ_MIRROR | RP_REQ_ASYNC)) == RP_REQ_MIRROR) {
		if (atomic_read(&req->target_errors)) {
			fail_target = rp_pair_target_failed(req->pair, req);
		} else if (req->flags & RP_REQ_FLUSH) {
			rp_pair_flush_done(req->pair, req->flush_gen);
		} else {
			rp_pair_target_written(req->pair, req);
			atomic64_inc(&req->pair->writes_mirrored);
			atomic64_add((u64)req->nr_sects << SECTOR_SHIFT,
				     &req->pair->bytes_mirrored);
		}
	}

	if (cmd) {
		if (atomic_read(&req->primary_errors))
			target_complete_cmd(cmd, SAM_STAT_CHECK_CONDITION);
		else if (fail_target)
			rp_complete_target_failure(cmd);
		else
			target_complete_cmd(cmd, SAM_STAT_GOOD);
	}
	/*
	 * No leg reads the bounce any more: an asynchronous target leg has
	 * its own copy, built before the submitter let go.  Freed now, not
	 * when that leg ends, so that it does not hold the lag twice.
	 */
	if (req->cmd_sgl) {
		sgl_free_n_order(req->sgl, req->sgl_nents, 0);
		req->cmd_sgl = NULL;
		req->sgl = NULL;
		req->sgl_nents = 0;
	}
	rp_req_put(req);
}

/*
 * The target's flush of an asynchronous pair ended (rp_async_flush_send()):
 * true if a SYNCHRONIZE CACHE came meanwhile, and so another flush follows
 * as the pair's one in flight.  Must not block.
 */
static bool rp_async_flush_end(struct rp_pair *pair)
{
	unsigned long flags;
	bool again;

	spin_lock_irqsave(&pair->lock, flags);
	/*
	 * A pair that stopped mirroring made what the target held dirty.
	 * Looked at under the lock that async_flush_again is set under: a
	 * resume and a SYNCHRONIZE CACHE between an unlocked look and the
	 * lock would have their flush dropped.
	 */
	again = pair->async_flush_again && __rp_pair_mirroring(pair);
	pair->async_flush_again = false;
	pair->async_flushing = again;
	spin_unlock_irqrestore(&pair->lock, flags);
	return again;
}

/*
 * The completion of an asynchronous target leg: a write's copy, or the
 * target's flush of a SYNCHRONIZE CACHE on an asynchronous pair, which no
 * command waits for (rp_execute_sync_cache()).  Must not block.
 */
static void rp_req_async_done(struct rp_req *req)
{
	struct rp_pair *pair = req->pair;
	u64 bytes = (u64)req->nr_sects << SECTOR_SHIFT;

	if (!atomic_dec_and_test(&req->async_pending))
		return;

	if (atomic_read(&req->target_errors)) {
		rp_pair_target_failed(pair, req);
	} else if (req->flags & RP_REQ_FLUSH) {
		rp_pair_flush_done(pair, req->flush_gen);
	} else if (!(req->flags & RP_REQ_NOCOPY)) {
		rp_pair_target_written(pair, req);
		atomic64_inc(&pair->writes_mirrored);
		atomic64_add(bytes, &pair->bytes_mirrored);
	}
	if (!(req->flags & RP_REQ_FLUSH)) {
		rp_pair_lag_release(pair, bytes);
	} else if (rp_async_flush_end(pair)) {
		/* Sent again from a work item: a bio may wait for a tag. */
		queue_work(pair->async_wq, &req->work);
		return;
	}
	rp_req_put(req);
}

static void rp_bio_done_primary(struct bio *bio)
{
	struct rp_req *req = bio->bi_private;

	if (bio->bi_status) {
		pr_err_ratelimited("%s: primary I/O error %d\n", req->dev->name,
				   blk_status_to_errno(bio->bi_status));
		atomic_inc(&req->primary_errors);
	}
	bio_put(bio);
	rp_req_cmd_done(req);
}

static void rp_bio_done_target(struct bio *bio)
{
	struct rp_req *req = bio->bi_private;

	if (bio->bi_status) {
		pr_err_ratelimited("%s: target %s I/O error %d\n",
				   req->dev->name, req->pair->tgt_path,
				   blk_status_to_errno(bio->bi_status));
		atomic_inc(&req->target_errors);
	}
	bio_put(bio);
	rp_req_cmd_done(req);
}

/* Gives one page of an async copy back (rp_async_page()). */
static void rp_async_page_free(struct rp_pair *pair, struct page *page)
{
	mempool_free(page, pair->page_pool);
	atomic_dec(&rp_nr_async_bufs);
}

/* Gives the copy pages of an async leg's bio back, and the bio. */
static void rp_async_bio_free(struct rp_pair *pair, struct bio *bio)
{
	unsigned short i;
	unsigned int j;

	/* A bvec may hold several physically contiguous pool pages. */
	for (i = 0; i < bio->bi_vcnt; i++) {
		struct bio_vec *bv = &bio->bi_io_vec[i];

		for (j = 0; j < DIV_ROUND_UP(bv->bv_offset + bv->bv_len,
					     PAGE_SIZE); j++)
			rp_async_page_free(pair, nth_page(bv->bv_page, j));
	}
	bio_put(bio);
}

static void rp_bio_done_async(struct bio *bio)
{
	struct rp_req *req = bio->bi_private;
	struct rp_pair *pair = req->pair;

	if (bio->bi_status) {
		pr_err_ratelimited("%s: target %s async I/O error %d\n",
				   req->dev->name, pair->tgt_path,
				   blk_status_to_errno(bio->bi_status));
		atomic_inc(&req->target_errors);
	}
	rp_async_bio_free(pair, bio);
	rp_req_async_done(req);
}

/* A bio of @bs for @req; NULL only if @gfp may fail. */
static struct bio *__rp_bio_alloc(struct rp_req *req, struct block_device *bdev,
				  unsigned int nr_vecs, blk_opf_t opf,
				  sector_t sector, bio_end_io_t *end_io,
				  gfp_t gfp, struct bio_set *bs)
{
	struct bio *bio;

	bio = bio_alloc_bioset(bdev, bio_max_segs(nr_vecs), opf, gfp, bs);
	if (!bio)
		return NULL;
	bio->bi_private = req;
	bio->bi_end_io = end_io;
	bio->bi_iter.bi_sector = sector;
	return bio;
}

/* From the device's bio set with GFP_NOIO: does not fail. */
static struct bio *rp_bio_alloc(struct rp_req *req, struct block_device *bdev,
				unsigned int nr_vecs, blk_opf_t opf,
				sector_t sector, bio_end_io_t *end_io)
{
	return __rp_bio_alloc(req, bdev, nr_vecs, opf, sector, end_io,
			      GFP_NOIO, &req->dev->bio_set);
}

/*
 * Submits the command's pages to one leg.  Each bio takes a @req->pending
 * reference before it is submitted; the caller holds the submitter's.
 */
static void rp_submit_sg(struct rp_req *req, struct block_device *bdev,
			 blk_opf_t opf, bio_end_io_t *end_io)
{
	unsigned int left = req->sgl_nents;
	sector_t sector = req->sector;
	struct scatterlist *sg;
	struct bio *bio;
	int i;

	bio = rp_bio_alloc(req, bdev, left, opf, sector, end_io);
	for_each_sg(req->sgl, sg, req->sgl_nents, i) {
		while (bio_add_page(bio, sg_page(sg), sg->length, sg->offset) !=
		       sg->length) {
			refcount_inc(&req->pending);
			submit_bio(bio);
			bio = rp_bio_alloc(req, bdev, left, opf, sector, end_io);
		}
		sector += sg->length >> SECTOR_SHIFT;
		left--;
	}
	refcount_inc(&req->pending);
	submit_bio(bio);
}

/*
 * A bio for an async leg, without waiting, from the device's async bio set,
 * never its main one: a built leg keeps its bios until the older legs it
 * overlaps are done, and those may still need bios of the main set for
 * their primary writes.  Were async legs to hold (or wait for) the main
 * set's reserve, the two could wait for each other under memory pressure.
 */
static struct bio *rp_async_bio_alloc(struct rp_req *req,
				      unsigned int nr_vecs, sector_t sector)
{
	if (rp_fail_async_copy())
		return NULL;
	return __rp_bio_alloc(req, req->pair->tgt.bdev, nr_vecs,
			      req->target_opf, sector, rp_bio_done_async,
			      GFP_NOWAIT | __GFP_NOWARN,
			      &req->dev->async_bio_set);
}

/*
 * Queues one filled copy page on the async leg's bios.  False when no bio
 * could be had for it: then the page is the caller's still.
 */
static bool rp_async_add_page(struct rp_req *req, struct bio **biop,
			      struct page *page, unsigned int len,
			      sector_t *sector, unsigned int pages_left)
{
	struct bio *bio = *biop;

	if (!bio || bio_add_page(bio, page, len, 0) != len) {
		struct bio *next = rp_async_bio_alloc(req, pages_left, *sector);

		if (!next)
			return false;
		if (bio) {
			atomic_inc(&req->async_pending);
			bio_list_add(&req->async_bios, bio);
		}
		__bio_add_page(next, page, len, 0);
		bio = next;
	}
	*sector += len >> SECTOR_SHIFT;
	*biop = bio;
	return true;
}

/*
 * A page for an async copy, without waiting: from the page allocator
 * without reclaim or the pool's reserve, else one reclaim attempt.  Waiting
 * for the reserve could wait forever: pages come back only when async legs
 * complete, and a leg is issued only after the older overlapping ones.
 */
static struct page *rp_async_page(struct rp_pair *pair)
{
	struct page *page;

	if (rp_fail_async_copy())
		return NULL;
	page = mempool_alloc(pair->page_pool, GFP_NOWAIT | __GFP_NOWARN);
	if (!page)
		page = alloc_page(GFP_NOIO | __GFP_NORETRY | __GFP_NOWARN);
	if (page)
		atomic_inc(&rp_nr_async_bufs);
	return page;
}

/*
 * Undoes a partial rp_async_build(): the pages and bios built so far go
 * back, @bio the one being filled.
 */
static void rp_async_unbuild(struct rp_req *req, struct bio *bio)
{
	struct rp_pair *pair = req->pair;
	struct bio *b;

	if (bio)
		rp_async_bio_free(pair, bio);
	while ((b = bio_list_pop(&req->async_bios))) {
		rp_async_bio_free(pair, b);
		atomic_dec(&req->async_pending);
	}
}

/*
 * Copies the command's data into pages of the pair's pool and builds the
 * async leg's bios (not submitted: rp_async_work() does that in order).
 * False when memory for the copy ran out: then nothing is built.
 */
static bool rp_async_build(struct rp_req *req)
{
	struct rp_pair *pair = req->pair;
	unsigned int pages_left = DIV_ROUND_UP(req->nr_sects << SECTOR_SHIFT,
					       PAGE_SIZE);
	sector_t sector = req->sector;
	struct page *page = NULL;
	unsigned int fill = 0;
	struct bio *bio = NULL;
	struct scatterlist *sg;
	int i;

	for_each_sg(req->sgl, sg, req->sgl_nents, i) {
		unsigned int off = sg->offset, len = sg->length;

		while (len) {
			unsigned int soff = offset_in_page(off);
			unsigned int n;
			void *src;

			if (page && fill == PAGE_SIZE) {
				if (!rp_async_add_page(req, &bio, page, fill,
						       &sector, pages_left--))
					goto nomem;
				page = NULL;
			}
			if (!page) {
				page = rp_async_page(pair);
				if (!page)
					goto nomem;
				fill = 0;
			}
			n = min3(len, (unsigned int)PAGE_SIZE - soff,
				 (unsigned int)PAGE_SIZE - fill);
			src = kmap_local_page(nth_page(sg_page(sg),
						       off >> PAGE_SHIFT));
			memcpy(page_address(page) + fill, src + soff, n);
			kunmap_local(src);
			fill += n;
			off += n;
			len -= n;
		}
	}
	if (page && !rp_async_add_page(req, &bio, page, fill, &sector,
				       pages_left))
		goto nomem;
	if (bio) {
		atomic_inc(&req->async_pending);
		bio_list_add(&req->async_bios, bio);
	}
	return true;

nomem:
	if (page)
		rp_async_page_free(pair, page);
	rp_async_unbuild(req, bio);
	return false;
}

#define RP_ASYNC_START(req)	((req)->sector)
#define RP_ASYNC_LAST(req)	((req)->async_last)
INTERVAL_TREE_DEFINE(struct rp_req, async_rb, sector_t, async_subtree_last,
		     RP_ASYNC_START, RP_ASYNC_LAST, static, rp_async_tree)

/* An async leg is routed to the pair, in order.  pair->lock held. */
void __rp_async_add(struct rp_pair *pair, struct rp_req *req)
{
	req->async_seq = ++pair->async_seq;
	req->async_last = req->sector + max_t(sector_t, req->nr_sects, 1) - 1;
	rp_async_tree_insert(req, &pair->async_tree);
}

/*
 * An async leg is done (issued and ended, or ended uncopied).  The legs it
 * held up go back on pair->async_ready, to be looked at again
 * (rp_pair_untrack() queues rp_async_work()).  pair->lock held.
 */
void __rp_async_del(struct rp_pair *pair, struct rp_req *req)
{
	rp_async_tree_remove(req, &pair->async_tree);
	list_del_init(&req->ready_node);
	list_splice_tail_init(&req->async_waiters, &pair->async_ready);
}

/*
 * The last leg, in the tree's order, of those that start at or before
 * @start: of those that start at @start, the newest when there are any
 * (a leg whose start equals another's goes to its right, and rotations keep
 * the order: legs that start alike are in the tree in the order they came).
 * O(log n).  pair->lock held.
 */
static struct rp_req *__rp_async_run_end(struct rp_pair *pair, sector_t start)
{
	struct rb_node *rb = pair->async_tree.rb_root.rb_node;
	struct rp_req *e, *end = NULL;

	while (rb) {
		e = rb_entry(rb, struct rp_req, async_rb);
		if (e->sector <= start) {
			end = e;
			rb = rb->rb_right;
		} else {
			rb = rb->rb_left;
		}
	}
	return end;
}

/* True if the async leg @e came before @req and overlaps it. */
static bool rp_async_holds(const struct rp_req *e, const struct rp_req *req)
{
	return e->async_seq < req->async_seq && e->sector <= req->async_last &&
	       e->async_last >= req->sector;
}

/*
 * An earlier async leg, issued or not, that overlaps @req, or NULL: @req
 * waits until every such leg ended, so that the target sees overlapping
 * writes in order.  Both the look and the leg it finds are chosen for a
 * block rewritten while the target is slow, a run of up to max lag's worth
 * of legs with one start (262144 of 4 KiB at 1 GiB), each held up by the
 * one before:
 *   - legs that start alike are in the tree in the order they came, so of
 *     such a run only the first that overlaps @req counts: were it later
 *     than @req, so is the rest, stepped over in O(log n) rather than
 *     walked (the oldest leg of the run would walk all of the others);
 *   - the leg found is the newest earlier one of its run where that is
 *     cheap to tell (the one before @req in the tree, or the run's last):
 *     legs that start alike end in order, so @req waits for the one that
 *     ends last, and each leg that ends releases the next of the run only,
 *     not all of it to find each of them blocked again.
 * O((1 + runs stepped over) log n).  pair->lock held.
 */
static struct rp_req *__rp_async_blocker(struct rp_pair *pair,
					 struct rp_req *req)
{
	struct rb_node *prev = rb_prev(&req->async_rb);
	struct rp_req *e, *end;

	if (prev) {
		e = rb_entry(prev, struct rp_req, async_rb);
		if (rp_async_holds(e, req))
			return e;
	}
	for (e = rp_async_tree_iter_first(&pair->async_tree, req->sector,
					  req->async_last);
	     e; e = rp_async_tree_iter_next(end, req->sector,
					    req->async_last)) {
		end = __rp_async_run_end(pair, e->sector);
		if (e->async_seq < req->async_seq)
			return rp_async_holds(end, req) ? end : e;
	}
	return NULL;
}

/*
 * True if an async leg not ended yet covers any of regions [@first, @last]:
 * a synchronous write there must not overtake it.  A write past the last
 * region counts as in it, as rp_req_regions() counts it.  pair->lock held.
 */
bool __rp_async_overlaps(struct rp_pair *pair, u64 first, u64 last)
{
	sector_t start = (sector_t)first << pair->region_sect_shift;
	sector_t end = last + 1 >= pair->nr_regions ? (sector_t)-1 :
		       ((sector_t)(last + 1) << pair->region_sect_shift) - 1;

	return rp_async_tree_iter_first(&pair->async_tree, start, end);
}

/*
 * Legs looked at per hold of pair->lock (interrupts off): while a target
 * holds its request tags, the legs of up to max lag (262144 of 4 KiB at
 * 1 GiB) pile up behind the one submission that waits for a tag.
 */
#define RP_ASYNC_ISSUE_BATCH	256

/*
 * The pair's async_work, queued for every async write and every leg that
 * ends: looks at the built legs on pair->async_ready (new ones, and those a
 * leg that ended held up), submits each that no earlier leg overlaps, and
 * puts each other one on the async_waiters of a leg that holds it up, to be
 * looked at again when that one ends (__rp_async_del()).  An ended leg
 * thus costs a look at the legs it held up, not at every leg waiting: a
 * block rewritten while the target is slow holds up to max lag's worth of
 * them (262144 of 4 KiB at 1 GiB), looked at with interrupts off.
 *
 * The only place an async leg is submitted: submit_bio() sleeps while the
 * target has no request tag free, and a target that holds its requests
 * (multipath queue_if_no_path, iSCSI in recovery) keeps its tags.  In
 * LIO's submission context (an iSCSI connection's receiver, tcm_loop's
 * per-CPU work) that sleep would hold the writer and every command behind
 * it long before MaxLagKiB is full, where no lag wait or degrade sees it.
 * Here, on the pair's own queue, the legs left unsent fill the lag instead,
 * and writers wait for room with its bound (docs/decisions.md 82); other
 * pairs' copies go on (decision 86).
 */
void rp_async_work(struct work_struct *work)
{
	struct rp_pair *pair = container_of(work, struct rp_pair, async_work);
	struct rp_req *req, *blocker;
	struct bio_list ready;
	struct blk_plug plug;
	unsigned int looked;
	struct bio *bio;
	bool more;

	do {
		bio_list_init(&ready);
		looked = 0;
		spin_lock_irq(&pair->lock);
		while (looked++ < RP_ASYNC_ISSUE_BATCH &&
		       (req = list_first_entry_or_null(&pair->async_ready,
						       struct rp_req,
						       ready_node))) {
			blocker = __rp_async_blocker(pair, req);
			if (blocker) {
				list_move_tail(&req->ready_node,
					       &blocker->async_waiters);
				continue;
			}
			list_del_init(&req->ready_node);
			bio_list_merge(&ready, &req->async_bios);
			bio_list_init(&req->async_bios);
		}
		more = !list_empty(&pair->async_ready);
		spin_unlock_irq(&pair->lock);

		blk_start_plug(&plug);
		while ((bio = bio_list_pop(&ready)))
			submit_bio(bio);
		blk_finish_plug(&plug);
		cond_resched();
	} while (more);
}

/*
 * REQ_SYNC | REQ_IDLE: an initiator's write is waited for, like O_DIRECT,
 * not writeback; without them wbt throttles it and mq-deadline queues it as
 * async (iblock since "scsi: target: Fix write perf due to unneeded
 * throttling").
 */
#define RP_WRITE_OPF	(REQ_OP_WRITE | REQ_SYNC | REQ_IDLE)

static blk_opf_t rp_write_opf(struct se_cmd *cmd, struct block_device *primary,
			      struct block_device *leg)
{
	blk_opf_t opf = RP_WRITE_OPF;

	/* Writethrough when the LUN has no write cache or the initiator asks. */
	if (((cmd->se_cmd_flags & SCF_FUA) || !bdev_write_cache(primary)) &&
	    bdev_write_cache(leg))
		opf |= REQ_FUA;
	return opf;
}

/*
 * After a write to @leg that could not carry FUA itself (zeroout, WRITE
 * SAME's bios): flushes @leg where rp_write_opf() would have given the
 * write FUA, so that it is stable before the command completes.  May block.
 */
static int rp_leg_stable(struct se_cmd *cmd, struct block_device *primary,
			 struct block_device *leg)
{
	if (rp_write_opf(cmd, primary, leg) & REQ_FUA)
		return blkdev_issue_flush(leg);
	return 0;
}

/*
 * The backstore's write-intent record, for a write: true when its regions
 * are marked on stable storage, with the record's clear_sem held for reading
 * until the write is tracked (rp_intent_unlock()); false when the write
 * waits for the record (rp_intent_write_work() resubmits or fails it).
 */
static bool rp_intent_lock_write(struct rp_req *req)
{
	struct rp_intent *in = req->dev->intent;

	if (!in)
		return true;
	down_read(&in->clear_sem);
	if (rp_intent_mark_write(in, req))
		return true;
	up_read(&in->clear_sem);
	return false;
}

/* The same for UNMAP and WRITE SAME, which wait.  0 or -errno. */
static int rp_intent_lock_wait(struct rp_req *req)
{
	struct rp_intent *in = req->dev->intent;
	u64 gen = U64_MAX;	/* not synced yet */
	int ret;

	if (!in)
		return 0;
	for (;;) {
		down_read(&in->clear_sem);
		ret = rp_intent_mark_wait(in, req->sector, req->nr_sects,
					  &gen);
		if (!ret)
			return 0;
		up_read(&in->clear_sem);
		if (ret == -EINPROGRESS)
			ret = rp_intent_sync(in);
		if (ret)
			gen = U64_MAX;
		if (ret == -EAGAIN)
			/* A PIPE_SET rewrites the record: bounded by its I/O. */
			wait_event(in->thaw_wq, !READ_ONCE(in->frozen));
		else if (ret)
			return ret;
	}
}

static void rp_intent_unlock(struct rp_intent *in)
{
	if (in)
		up_read(&in->clear_sem);
}

/*
 * Routes and submits a write.  Runs in process context; may block.
 * A write handed over (held for a claim, waiting for lag room or for its
 * record mark) may be resubmitted, completed and freed by another thread at once: from
 * then on only the locals below are used, pinned for this call.
 */
static void rp_write_submit(struct rp_req *req)
{
	struct rp_dev *dev = req->dev;
	struct rp_intent *in = dev->intent;
	u64 bytes = (u64)req->nr_sects << SECTOR_SHIFT;
	enum rp_route route;
	struct rp_pair *pair;
	struct blk_plug plug;
	bool reserved;
	/*
	 * The write of a COMPARE AND WRITE is never parked, nor held for a
	 * claim: LIO holds the device's caw_sem from its read until this
	 * write ends, and takes it for the next COMPARE AND WRITE in the
	 * submitting thread (an iSCSI connection's receiver, tcm_loop's
	 * work), which would stall every command behind it for up to
	 * RP_LAG_WAIT_SEC.  Without room it goes to the primary, dirty.
	 */
	const bool may_wait =
		!(req->cmd->se_cmd_flags & SCF_COMPARE_AND_WRITE);

	percpu_ref_get(&dev->reqs);
again:
	pair = req->pair;
	reserved = false;
	/* Unlocked: a write racing a change of mode is routed as it finds it. */
	if (pair && (READ_ONCE(pair->mode) == REPLIPIPE_MODE_ASYNC ||
		     req->lag_granted)) {
		switch (rp_pair_lag_reserve(pair, req, bytes, may_wait)) {
		case RP_LAG_PARKED:
			/* Resubmitted once there is room, or the pair degrades. */
			goto unpin;
		case RP_LAG_RESERVED:
			reserved = true;
			refcount_inc(&pair->refs);
			break;
		case RP_LAG_NONE:
			break;
		}
	}
	if (!rp_intent_lock_write(req)) {
		/* Waits for the record; submitted again from the start. */
		if (reserved)
			rp_pair_lag_release(pair, bytes);
		goto unpin;
	}
	if (pair) {
		route = rp_pair_route_write(pair, req, reserved, may_wait);
		if (route == RP_ROUTE_HELD || route == RP_ROUTE_STALE) {
			rp_intent_unlock(in);
			if (reserved) {
				rp_pair_lag_release(pair, bytes);
				rp_pair_put(pair);
			}
			if (route == RP_ROUTE_HELD)
				goto unpin_dev;
			rp_req_repoint(req);
			if (rp_req_bounce_again(req)) {
				rp_req_fail(req);
				goto unpin_dev;
			}
			goto again;
		}
		if (reserved && !(req->flags & RP_REQ_ASYNC))
			rp_pair_lag_release(pair, bytes);
		if (req->flags & RP_REQ_MIRROR)
			req->target_opf = rp_write_opf(req->cmd,
						       req->dev->primary.bdev,
						       pair->tgt.bdev);
	}
	rp_intent_unlock(in);
	if (req->flags & RP_REQ_ASYNC)
		refcount_set(&req->refs, 2);

	blk_start_plug(&plug);
	rp_submit_sg(req, req->dev->primary.bdev, req->primary_opf,
		     rp_bio_done_primary);
	if ((req->flags & (RP_REQ_MIRROR | RP_REQ_ASYNC)) == RP_REQ_MIRROR)
		rp_submit_sg(req, pair->tgt.bdev, req->target_opf,
			     rp_bio_done_target);
	blk_finish_plug(&plug);

	if (req->flags & RP_REQ_ASYNC) {
		bool built = rp_async_build(req);

		spin_lock_irq(&pair->lock);
		if (!built)
			req->flags |= RP_REQ_NOCOPY;
		list_add_tail(&req->ready_node, &pair->async_ready);
		spin_unlock_irq(&pair->lock);
		if (!built) {
			/* The resync carries the write over instead. */
			pr_warn_ratelimited("%s: no memory to copy a write for target %s; its regions are dirty\n",
					    dev->name, pair->tgt_path);
			rp_pair_mark_dirty(pair, req);
		}
		/* Not from here: a target out of tags would block us. */
		queue_work(pair->async_wq, &pair->async_work);
		rp_req_async_done(req);
	}
	rp_req_cmd_done(req);
unpin:
	if (reserved)
		rp_pair_put(pair);
unpin_dev:
	percpu_ref_put(&dev->reqs);
}

/*
 * Whether a SYNCHRONIZE CACHE on an asynchronous pair sends the target a
 * flush of its own: not while the pair's last one is in flight, which is
 * sent again when it ends instead (rp_async_flush_end()), so that a flush
 * issued after the command still reaches the target.  Now that no command
 * waits for them, a target that queues I/O would otherwise hold one flush
 * per command, as many as an initiator cares to send.  Must not block.
 */
static bool rp_async_flush_start(struct rp_pair *pair)
{
	bool start;

	spin_lock_irq(&pair->lock);
	start = !pair->async_flushing;
	if (start)
		pair->async_flushing = true;
	else
		pair->async_flush_again = true;
	spin_unlock_irq(&pair->lock);
	return start;
}

/*
 * Sends the target of an asynchronous pair the flush of a SYNCHRONIZE
 * CACHE: the request's async side, which the caller holds a reference of
 * (async_pending), dropped here.  May block.
 */
static void rp_async_flush_send(struct rp_req *req)
{
	struct bio *bio;

	req->flush_gen = rp_pair_flush_begin(req->pair);
	/* No pages: rp_bio_done_async() only puts the bio. */
	bio = rp_bio_alloc(req, req->pair->tgt.bdev, 0,
			   REQ_OP_WRITE | REQ_PREFLUSH, 0, rp_bio_done_async);
	atomic_inc(&req->async_pending);
	submit_bio(bio);
	rp_req_async_done(req);
}

/*
 * Sends the target of a synchronous pair the flush of a SYNCHRONIZE CACHE,
 * which the command waits for (the caller took its pending count for it):
 * now, once the copies of the pair's asynchronous past have ended (then
 * rp_req_resubmit_work() calls this again), or none.  May block.
 */
static void rp_sync_flush_go(struct rp_req *req)
{
	struct bio *bio;

	switch (rp_pair_flush_after_lag(req->pair, req)) {
	case RP_LAG_FLUSH_WAIT:
		return;
	case RP_LAG_FLUSH_SKIP:
		/* No flush to account: rp_req_cmd_done(). */
		req->flags &= ~RP_REQ_MIRROR;
		rp_req_cmd_done(req);
		return;
	case RP_LAG_FLUSH_SEND:
		break;
	}
	req->flush_gen = rp_pair_flush_begin(req->pair);
	bio = rp_bio_alloc(req, req->pair->tgt.bdev, 0,
			   REQ_OP_WRITE | REQ_PREFLUSH, 0, rp_bio_done_target);
	submit_bio(bio);
}

static void rp_req_resubmit_work(struct work_struct *work)
{
	struct rp_req *req = container_of(work, struct rp_req, work);

	if ((req->flags & (RP_REQ_FLUSH | RP_REQ_ASYNC)) == RP_REQ_FLUSH) {
		/* A synchronous pair's flush that waited for its lag. */
		rp_sync_flush_go(req);
		return;
	}
	if (req->flags & RP_REQ_FLUSH) {
		/*
		 * An asynchronous pair's flush (rp_execute_sync_cache()), or
		 * the same again (rp_req_async_done()).
		 */
		atomic_set(&req->target_errors, 0);
		atomic_set(&req->async_pending, 1);
		rp_async_flush_send(req);
		return;
	}
	rp_write_submit(req);
}

/*
 * Fails a write that waited for its write-intent mark, which could not be
 * written: it reached neither leg.  Must not block.
 */
void rp_req_fail(struct rp_req *req)
{
	atomic_inc(&req->primary_errors);
	rp_req_cmd_done(req);
}

/*
 * Releases a write that waited (for a claim on pair->held, for lag room,
 * or for its write-intent mark); runs it from the start on its backstore's
 * own queue.  Its submission sleeps for as long as a leg holds its request
 * tags (multipath with queue_if_no_path, iSCSI in recovery): on rp_wq, a
 * claim's or a record write's release of 256 writes to a dead target took
 * every active item of that CPU's pool (under memory pressure, its one
 * rescuer), and the short work of every other backstore behind them (the
 * record writes that release their writes, lag_work's bound) waited for
 * that target (decision 104).  Must not block: called under pair->lock.
 */
void rp_req_resubmit(struct rp_req *req)
{
	queue_work(req->dev->resubmit_wq, &req->work);
}

sense_reason_t rp_execute_rw(struct se_cmd *cmd, struct scatterlist *sgl,
			     u32 sgl_nents, enum dma_data_direction dir)
{
	struct rp_dev *dev = RP_DEV(cmd->se_dev);
	unsigned int seg_bits;
	struct rp_req *req;
	u64 bytes, listed;
	sector_t sector;

	listed = rp_sgl_shape(sgl, sgl_nents, &seg_bits);
	/*
	 * The list may be longer than the command's data (a READ of more
	 * than its CDB asks for, on a fabric that passes the initiator's
	 * buffer on): the data is what the legs get (rp_req_bounce()).  A
	 * READ of no blocks may still come with the initiator's buffer.
	 */
	bytes = min_t(u64, listed, cmd->data_length);
	if (!bytes) {
		target_complete_cmd(cmd, SAM_STAT_GOOD);
		return 0;
	}
	/* A read may end inside a block (rp_req_bounce()), not start there. */
	sector = target_to_linux_sector(cmd->se_dev, cmd->t_task_lba);
	if (!rp_range_fits_legs(dev, cmd, sector,
				dir == DMA_TO_DEVICE ? bytes : 0))
		return TCM_INVALID_CDB_FIELD;

	req = rp_req_alloc(cmd, dev);
	req->sgl = sgl;
	req->sgl_nents = sgl_nents;
	req->sector = sector;
	req->nr_sects = bytes >> SECTOR_SHIFT;

	if (dir == DMA_TO_DEVICE) {
		req->primary_opf = rp_write_opf(cmd, dev->primary.bdev,
						dev->primary.bdev);
		req->pair = rp_pair_get_write(dev, req);
		if (rp_req_bounce(req, bytes, listed, seg_bits, true)) {
			rp_req_put(req);
			return TCM_OUT_OF_RESOURCES;
		}
		rp_write_submit(req);
		return 0;
	}

	req->primary_opf = REQ_OP_READ;
	if (rp_req_bounce(req, bytes, listed, seg_bits, false)) {
		rp_req_put(req);
		return TCM_OUT_OF_RESOURCES;
	}
	rp_submit_sg(req, dev->primary.bdev, req->primary_opf,
		     rp_bio_done_primary);
	rp_req_cmd_done(req);
	return 0;
}

/*
 * On an asynchronous pair the target's flush is the request's async side,
 * which no command waits for: the pair promises its target nothing at a
 * flush (copies may still be on their way; docs/decisions.md 46, 61),
 * and a target that queues I/O (a suspended dm device, multipath
 * queue_if_no_path, iSCSI in recovery) would hold the command for as long
 * as it queues, until the initiator's error handling takes the LUN
 * offline.  The flush still runs, one at a time (rp_async_flush_start()),
 * and is accounted when it ends (uf_old, or the pair degrades):
 * rp_req_async_done().  A synchronous pair's target flush, which the command
 * waits for, first waits for the copies the pair took while it was
 * asynchronous (rp_pair_flush_after_lag()).
 */
sense_reason_t rp_execute_sync_cache(struct se_cmd *cmd)
{
	struct rp_dev *dev = RP_DEV(cmd->se_dev);
	bool immed = cmd->t_task_cdb[1] & 0x2;
	struct rp_req *req;
	struct bio *bio;

	/*
	 * With IMMED the command completes now and the flushes run alone;
	 * the request, allocated first, keeps the device's pools alive.
	 */
	req = rp_req_alloc(immed ? NULL : cmd, dev);
	if (immed)
		target_complete_cmd(cmd, SAM_STAT_GOOD);
	req->flags = RP_REQ_FLUSH;
	req->pair = rp_pair_get(dev);
	if (req->pair && rp_pair_mirroring(req->pair)) {
		/* Unlocked: a flush racing a change of mode goes as it finds it. */
		if (READ_ONCE(req->pair->mode) != REPLIPIPE_MODE_ASYNC) {
			req->flags |= RP_REQ_MIRROR;
		} else if (rp_async_flush_start(req->pair)) {
			req->flags |= RP_REQ_MIRROR | RP_REQ_ASYNC;
			refcount_set(&req->refs, 2);
		}
	}

	bio = rp_bio_alloc(req, dev->primary.bdev, 0,
			   REQ_OP_WRITE | REQ_PREFLUSH, 0, rp_bio_done_primary);
	refcount_inc(&req->pending);
	submit_bio(bio);
	if (req->flags & RP_REQ_ASYNC) {
		/*
		 * Sent from the pair's queue (rp_req_resubmit_work()), as the
		 * legs are (rp_async_work()): a target out of tags would hold
		 * the command here.
		 */
		queue_work(req->pair->async_wq, &req->work);
	} else if (req->flags & RP_REQ_MIRROR) {
		refcount_inc(&req->pending);
		rp_sync_flush_go(req);
	}
	rp_req_cmd_done(req);
	return 0;
}

/*
 * UNMAP and WRITE SAME run synchronously in the submitter's context.  They
 * are tracked like writes (a claim drains those routed before it) but never
 * held: a claimed region, or an asynchronous pair, gets the primary only and
 * stays dirty.
 * Returns the request with its route set, or NULL when its regions could
 * not be marked on the write-intent record (the command must fail).
 */
static struct rp_req *rp_sync_op_begin(struct se_cmd *cmd, sector_t sector,
				       sector_t nr_sects)
{
	struct rp_dev *dev = RP_DEV(cmd->se_dev);
	struct rp_req *req;

	req = rp_req_alloc(cmd, dev);
	req->sector = sector;
	req->nr_sects = nr_sects;
	req->pair = rp_pair_get_write(dev, req);
	for (;;) {
		if (rp_intent_lock_wait(req)) {
			rp_req_put(req);
			return NULL;
		}
		if (!req->pair ||
		    rp_pair_route_write(req->pair, req, false, false) !=
		    RP_ROUTE_STALE)
			break;
		/* Removed while the record was written: decision 83. */
		rp_intent_unlock(req->dev->intent);
		rp_req_repoint(req);
	}
	rp_intent_unlock(req->dev->intent);
	return req;
}

/*
 * Accounts the legs' results (@ret the primary's); true if the command must
 * fail because of the target.
 */
static bool rp_sync_op_end(struct rp_req *req, int ret, int target_ret)
{
	bool fail = false;

	if (req->flags & RP_REQ_MIRROR) {
		/* A primary that failed part-way differs from the target. */
		if (ret || target_ret == -EOPNOTSUPP) {
			rp_pair_mark_dirty(req->pair, req);
		} else if (target_ret) {
			atomic_inc(&req->target_errors);
			fail = rp_pair_target_failed(req->pair, req);
		} else {
			/* A WRITE SAME that flushed the leg too: more, not less. */
			rp_pair_target_written(req->pair, req);
		}
	}
	rp_req_put(req);
	return fail;
}

/*
 * The target leg of an UNMAP.  A LUN that reports unmapped blocks as zeroes
 * (unmap_zeroes_data: LBPRZ) must read zeroes there from the target too
 * after a failover, whatever the target's discard leaves behind (an SSD or
 * an array may keep the old data): the target gets zeroes, unmapping where
 * it can do so and still read zeroes.  That may mean writing them, in LIO's
 * submission context (execute_unmap must end the range before it returns),
 * so only up to RP_UNMAP_ZEROOUT_MAX_SECT of them per UNMAP; a larger range,
 * or a target without write zeroes, gets nothing and its regions are dirty
 * (-EOPNOTSUPP): the resync copies the primary's zeroes in the background.
 * Those zeroes are data the initiator counts on, so where a write to the
 * target would get FUA (a write-through LUN over a target with a volatile
 * cache: the initiator never sends SYNCHRONIZE CACHE), the target is
 * flushed after them, as after a WRITE SAME.
 */
static int rp_unmap_target(struct se_cmd *cmd, struct block_device *tgt,
			   sector_t sector, sector_t nr_sects)
{
	struct rp_dev *dev = RP_DEV(cmd->se_dev);
	int ret;

	if (cmd->se_dev->dev_attrib.unmap_zeroes_data) {
		if (nr_sects > RP_UNMAP_ZEROOUT_MAX_SECT)
			return -EOPNOTSUPP;
		ret = blkdev_issue_zeroout(tgt, sector, nr_sects, GFP_NOIO,
					   BLKDEV_ZERO_NOFALLBACK);
		return ret ? ret : rp_leg_stable(cmd, dev->primary.bdev, tgt);
	}
	if (!bdev_max_discard_sectors(tgt))
		return -EOPNOTSUPP;
	ret = blkdev_issue_discard(tgt, sector, nr_sects, GFP_NOIO);
	/*
	 * A SCSI target that advertised UNMAP and then refused it (ILLEGAL
	 * REQUEST) has had discard turned off by sd, and the discard fails:
	 * that is a target without discard, not a failed one, and must not
	 * degrade the pair (or, under FailIO, fail the initiator's UNMAP).
	 */
	if (ret && !bdev_max_discard_sectors(tgt))
		ret = -EOPNOTSUPP;
	return ret;
}

sense_reason_t rp_execute_unmap(struct se_cmd *cmd, sector_t lba, sector_t nolb)
{
	struct se_device *se_dev = cmd->se_dev;
	sector_t sector = target_to_linux_sector(se_dev, lba);
	sector_t nr_sects = target_to_linux_sector(se_dev, nolb);
	struct rp_dev *dev = RP_DEV(se_dev);
	int ret, target_ret = 0;
	struct rp_req *req;

	if (!rp_range_fits_legs(dev, cmd, sector,
				(u64)nr_sects << SECTOR_SHIFT))
		return TCM_INVALID_CDB_FIELD;
	req = rp_sync_op_begin(cmd, sector, nr_sects);
	if (!req)
		return TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE;
	/* GFP_NOIO: LIO runs it in the initiator's context (tcm_loop). */
	ret = blkdev_issue_discard(dev->primary.bdev, sector, nr_sects,
				   GFP_NOIO);
	if (!ret && (req->flags & RP_REQ_MIRROR))
		target_ret = rp_unmap_target(cmd, req->pair->tgt.bdev, sector,
					     nr_sects);
	if (rp_sync_op_end(req, ret, target_ret) || ret) {
		pr_err_ratelimited("%s: UNMAP failed: %d/%d\n", dev->name, ret,
				   target_ret);
		return TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE;
	}
	return 0;
}

/* Writes one block's pattern over a range, one bio at a time.  May block. */
static int rp_write_same_leg(struct rp_dev *dev, struct block_device *bdev,
			     sector_t sector, sector_t nr_sects,
			     struct scatterlist *sg)
{
	unsigned int sects = sg->length >> SECTOR_SHIFT;
	struct bio *bio;
	int ret = 0;

	while (nr_sects && !ret) {
		bio = bio_alloc_bioset(bdev, BIO_MAX_VECS, RP_WRITE_OPF,
				       GFP_NOIO, &dev->bio_set);
		bio->bi_iter.bi_sector = sector;
		while (nr_sects &&
		       bio_add_page(bio, sg_page(sg), sg->length, sg->offset) ==
		       sg->length) {
			sector += sects;
			nr_sects -= sects;
		}
		ret = submit_bio_wait(bio);
		bio_put(bio);
	}
	return ret;
}

/* One leg of a WRITE SAME: zeroes, or @pattern's block.  May block. */
static int rp_write_same_one(struct rp_dev *dev, struct block_device *bdev,
			     struct se_cmd *cmd, struct scatterlist *pattern)
{
	sector_t sector = target_to_linux_sector(cmd->se_dev, cmd->t_task_lba);
	sector_t nr_sects = target_to_linux_sector(cmd->se_dev,
					sbc_get_write_same_sectors(cmd));

	int ret;

	if (!pattern)
		ret = blkdev_issue_zeroout(bdev, sector, nr_sects, GFP_NOIO,
					   BLKDEV_ZERO_NOUNMAP);
	else
		ret = rp_write_same_leg(dev, bdev, sector, nr_sects, pattern);
	/*
	 * Where a write to this leg gets FUA (rp_write_opf(): a write-through
	 * LUN, or FUA asked, over a leg with a volatile cache), WRITE SAME's
	 * data must be stable before the command completes too.  Its bios
	 * cannot all carry FUA (blkdev_issue_zeroout() takes no flags), so
	 * the leg is flushed after them.
	 */
	return ret ? ret : rp_leg_stable(cmd, dev->primary.bdev, bdev);
}

/* Both legs of a WRITE SAME, then the command's completion.  May block. */
static void rp_write_same_run(struct se_cmd *cmd, bool zeroes)
{
	struct se_device *se_dev = cmd->se_dev;
	struct rp_dev *dev = RP_DEV(se_dev);
	struct scatterlist block, *pattern = NULL;
	struct page *page = NULL;
	int ret, target_ret = 0;
	struct rp_req *req;

	if (!zeroes) {
		unsigned int lun_block = cmd->t_data_sg->length;
		unsigned int len = max(lun_block,
				       bdev_logical_block_size(dev->primary.bdev));
		unsigned int off;

		/*
		 * The block goes to the legs from a page of its own: the
		 * initiator's may sit anywhere in its page (tcm_loop passes
		 * its buffer on), and every bio repeats it at that offset.
		 * Repeated up to the primary's block, when the LUN's is
		 * smaller (rp_range_fits_legs()): a bio of segments of part
		 * of a block is one the block layer may split inside a block.
		 */
		page = alloc_page(GFP_NOIO);
		if (!page) {
			target_complete_cmd_with_sense(cmd,
						       SAM_STAT_CHECK_CONDITION,
						       TCM_OUT_OF_RESOURCES);
			return;
		}
		sg_copy_to_buffer(cmd->t_data_sg, cmd->t_data_nents,
				  page_address(page), lun_block);
		for (off = lun_block; off < len; off += lun_block)
			memcpy(page_address(page) + off, page_address(page),
			       lun_block);
		sg_init_table(&block, 1);
		sg_set_page(&block, page, len, 0);
		pattern = &block;
	}
	req = rp_sync_op_begin(cmd,
			       target_to_linux_sector(se_dev, cmd->t_task_lba),
			       target_to_linux_sector(se_dev,
					sbc_get_write_same_sectors(cmd)));
	if (!req) {
		target_complete_cmd(cmd, SAM_STAT_CHECK_CONDITION);
		goto free;
	}
	ret = rp_write_same_one(dev, dev->primary.bdev, cmd, pattern);
	/*
	 * Longer than a backstore advertises (an administrator raised
	 * max_write_same_len): the target leg is left to the resync, as an
	 * UNMAP's zeroes are (rp_unmap_target()).
	 */
	if (!ret && (req->flags & RP_REQ_MIRROR))
		target_ret = req->nr_sects > RP_WRITE_SAME_MAX_SECT ?
			     -EOPNOTSUPP :
			     rp_write_same_one(dev, req->pair->tgt.bdev, cmd,
					       pattern);
	if (rp_sync_op_end(req, ret, target_ret) || ret) {
		pr_err_ratelimited("%s: WRITE SAME failed: %d/%d\n", dev->name,
				   ret, target_ret);
		if (ret)
			target_complete_cmd(cmd, SAM_STAT_CHECK_CONDITION);
		else
			rp_complete_target_failure(cmd);
	} else {
		target_complete_cmd(cmd, SAM_STAT_GOOD);
	}
free:
	if (page)
		__free_page(page);
}

struct rp_write_same_work {
	struct work_struct	work;
	struct se_cmd		*cmd;
	bool			zeroes;
};

static void rp_write_same_work_fn(struct work_struct *work)
{
	struct rp_write_same_work *w =
		container_of(work, struct rp_write_same_work, work);

	rp_write_same_run(w->cmd, w->zeroes);
	kfree(w);
}

/*
 * WRITE SAME writes its legs a bio at a time and waits for each, for as long
 * as a target that queues I/O likes: not in LIO's submission context (on
 * iSCSI the connection's receiver, which must keep answering; with tcm_loop
 * the per-CPU work every later command of that CPU waits behind), and on a
 * queue of the backstore's own, with a rescuer of its own.  On one queue
 * for all backstores, 256 WRITE SAMEs waiting for dead devices (its
 * max_active), or its rescuer waiting for one under memory pressure, held
 * up the WRITE SAMEs of every other LUN (decision 86).  Without memory for
 * the work item it runs here.
 */
sense_reason_t rp_execute_write_same(struct se_cmd *cmd)
{
	struct se_device *se_dev = cmd->se_dev;
	struct rp_dev *dev = RP_DEV(se_dev);
	struct scatterlist *sg = cmd->t_data_sg;
	struct rp_write_same_work *w;
	bool zeroes;
	void *buf;

	if (cmd->prot_op) {
		pr_err_ratelimited("%s: WRITE SAME with protection information is not supported\n",
				   dev->name);
		return TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE;
	}
	if (cmd->t_data_nents != 1 || sg->length != se_dev->dev_attrib.block_size)
		return TCM_INVALID_CDB_FIELD;
	if (!rp_range_fits_legs(dev, cmd,
				target_to_linux_sector(se_dev, cmd->t_task_lba),
				(u64)sbc_get_write_same_sectors(cmd) *
				se_dev->dev_attrib.block_size))
		return TCM_INVALID_CDB_FIELD;

	buf = kmap_local_page(sg_page(sg));
	zeroes = !memchr_inv(buf + sg->offset, 0, sg->length);
	kunmap_local(buf);

	w = kmalloc(sizeof(*w), GFP_NOIO);
	if (!w) {
		rp_write_same_run(cmd, zeroes);
		return 0;
	}
	INIT_WORK(&w->work, rp_write_same_work_fn);
	w->cmd = cmd;
	w->zeroes = zeroes;
	queue_work(dev->write_same_wq, &w->work);
	return 0;
}
