/* SPDX-License-Identifier: GPL-2.0 */
/*
 * replipipe_internal.h: the objects shared by the files of replipipe.ko.
 *
 *   rp_main.c     module init/exit, parameters, live object counters
 *   rp_backend.c  the LIO backend "replipipe" and its configfs parameters
 *   rp_io.c       the data path: reads, mirrored writes, flush, unmap
 *   rp_pipe.c     pipes, pairs, dirty bitmaps, claims (the state machine)
 *   rp_retire.c   removed pairs whose writes in flight have not all ended
 *   rp_intent.c   the write-intent record of a backstore
 *   rp_genl.c     the generic netlink family
 */
#ifndef REPLIPIPE_INTERNAL_H
#define REPLIPIPE_INTERNAL_H

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/list.h>
#include <linux/mempool.h>
#include <linux/mutex.h>
#include <linux/percpu-refcount.h>
#include <linux/rcupdate.h>
#include <linux/refcount.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <net/genetlink.h>
#include <target/target_core_base.h>
#include <target/target_core_backend.h>

#include <linux/replipipe.h>

#include "rp_compat.h"

#define RP_VERSION		"1.0"
#define RP_BIO_POOL_SIZE	128
#define RP_REQ_POOL_SIZE	64
#define RP_ASYNC_RESERVE_PAGES	16	/* forward progress of async copies */
#define RP_ASYNC_BIO_POOL_SIZE	16	/* bios of async copies (see rp_io.c) */
#define RP_LAG_WAIT_SEC		30	/* longest a writer waits for lag room */
/*
 * Longest the probe of a resume waits for the target (read and flush
 * together); a PAIR_SET waits for the probe REPLIPIPE_RESUME_WAIT_MS at most.
 */
#define RP_PROBE_TIMEOUT_SEC	5
/* Most an UNMAP zeroes on the target of an LBPRZ LUN (64 MiB). */
#define RP_UNMAP_ZEROOUT_MAX_SECT	(64 << (20 - SECTOR_SHIFT))
/*
 * Most a WRITE SAME writes on the target within the command (64 MiB), and
 * so the longest WRITE SAME a backstore advertises: a target that cannot
 * offload it gets every block over the link.
 */
#define RP_WRITE_SAME_MAX_SECT		(64 << (20 - SECTOR_SHIFT))
/* Longest a PIPE_DEL waits for the writes in flight to its targets. */
#define RP_DRAIN_WAIT_SEC	5
/*
 * Longest a PIPE_SET waits, holding rp_config_lock, for the writes that
 * found no pair on its new pairs' sources; a pair whose source still has
 * some starts later, from a work item (rp_pair_start_work()).
 */
#define RP_START_WAIT_MS	250
/*
 * A write-intent record's clear pass waits this long for the target's
 * flush (a cache written back over a slow link takes time); it holds no
 * pair reference meanwhile, so nothing else waits for it.
 */
#define RP_INTENT_FLUSH_TIMEOUT_SEC	60
/*
 * A write-intent record's bit covers a chunk of this many KiB (at least one
 * region): DRBD's activity-log extent size.  A random workload then pays a
 * record write per first touch of 4 MiB rather than of every region.
 */
#define RP_INTENT_CHUNK_KIB_DEFAULT	4096
#define RP_INTENT_CHUNK_KIB_MAX		(1024 * 1024)
/*
 * Most bits of a pair's maps of unflushed regions (32 KiB each): a larger
 * pair gets a bit per run of regions.  A flush's completion clears one in
 * bio completion context, with interrupts off.
 */
#define RP_UNFLUSHED_MAX_BITS		(1U << 18)

struct rp_pair;
struct rp_dev;
struct rp_intent_rebind;

/* The bitmap arrays of one binding of a write-intent record. */
struct rp_intent_maps {
	unsigned long		*bits;		/* on disk, or about to be */
	/*
	 * How many of @bits are set, kept as they change: PIPE_GET, which
	 * any user may send, and every pipe event report it, and a count of
	 * the bitmap (up to 256 MiB) would keep interrupts off for it.
	 */
	u64			nr_set;
	/*
	 * Marks since the last whole pick began, in two maps (a chunk is
	 * recent while either has it; rp_intent_clear_pick()): writes mark
	 * @recent; a pick moves those to @recent_old and zeroes them once it
	 * looked at every chunk.
	 */
	unsigned long		*recent;
	unsigned long		*recent_old;
	bool			recent_old_set;	/* may hold marks */
	unsigned long		*quiet;		/* a pass's picks, before its flush */
	u64			*dirty_seq;	/* per page: its last change */
	u64			*ondisk_seq;	/* per page: the change on disk */
	unsigned int		nr_pages;
	/*
	 * Bounce pages for a run of up to @nr_io bitmap pages in one bio,
	 * and the in->seq each was packed at; in->io_lock.  A run, not a
	 * page per I/O: a binding of 2^28 chunks is 8192 pages, and a
	 * synchronous write each cost their round trips one after another.
	 */
	struct page		**io_pages;
	u64			*io_snap;
	unsigned int		nr_io;
};

/* A backstore's write-intent record (rp_intent.c). */
struct rp_intent {
	struct rp_dev		*dev;
	struct list_head	node;		/* rp_intents, rp_intents_lock */
	struct rp_bdev		rb;
	char			path[SE_UDEV_PATH_LEN];
	struct rw_semaphore	clear_sem;
	struct mutex		io_lock;
	struct page		*bounce;	/* io_lock */
	struct delayed_work	clear_work;
	struct work_struct	write_work;	/* releases waiting writes */

	/* Woken when a PIPE_SET's rewrite of the record ends (frozen). */
	wait_queue_head_t	thaw_wq;
	/* The record is closing: a clear pass stops waiting for a flush. */
	bool			closing;

	spinlock_t		lock;		/* everything below */
	bool			bound;		/* the header is valid */
	/*
	 * What header is on disk is not known (a PIPE_SET's write-back
	 * failed): it may be valid for a binding not in memory.  Writes wait
	 * for it to be invalidated, or fail (rp_intent_fix_header()).
	 */
	bool			stale_header;
	/*
	 * Such a header may be the binding in tgt_path, which the record had
	 * before the first failed PIPE_SET, with the bits it had then: a pair
	 * that takes that target must invalidate it (rp_intent_names()).  A
	 * binding a PIPE_SET wrote has every chunk marked (rp_intent_commit()):
	 * loaded, it costs a full resync, never a stale load.  Set at the first
	 * failure, kept through later ones, read only while stale_header is
	 * set; written under rp_config_lock too, and read under it only.
	 */
	bool			stale_old;
	/*
	 * A PIPE_SET is rewriting the record (rp_intent_commit() until
	 * rp_intent_settle()): nothing marks, clears or writes the bits.
	 */
	bool			frozen;
	u64			epoch;		/* bumped by each rebind */
	u64			seq;		/* counts changes of the bits */
	/* Counts clears of bits (a clear pass, a new binding's bits). */
	u64			clear_gen;
	u32			region_kib;
	u64			nr_regions;
	u64			src_bytes;
	/* One bit per chunk of 1 << chunk_shift regions (chunk_kib). */
	u32			chunk_kib;
	unsigned int		chunk_shift;
	unsigned int		bit_sect_shift;	/* sectors per bit, log2 */
	u64			nr_bits;
	char			pipe_id[REPLIPIPE_PIPE_ID_MAX_LEN + 1];
	char			tgt_path[REPLIPIPE_TARGET_MAX_LEN + 1];
	dev_t			tgt_devt;	/* tgt_path's device, 0: unknown */
	struct rp_intent_maps	maps;
	struct list_head	waiting;	/* rp_req until their marks are on disk */
};

/* One replipipe backstore: a LIO se_device on a primary block device. */
struct rp_dev {
	struct se_device	se_dev;
	/*
	 * Keeps the memory (not the device) while rp_dev_lookup() takes its
	 * configfs dependency: LIO's free_device puts one, a lookup holds one.
	 */
	struct kref		mem;
	/*
	 * Serializes control, enable (configure_device), destroy_device and
	 * info: configfs serializes each attribute file alone (rp_backend.c,
	 * "Locking").  Guards udev_path to intent_chunk_kib, and primary and
	 * intent while enable opens or destroy closes them; the data path
	 * and pairs use those only on a device LIO has enabled and that
	 * cannot be destroyed meanwhile.
	 */
	struct mutex		cfg_lock;
	char			udev_path[SE_UDEV_PATH_LEN];
	bool			has_udev_path;
	char			intent_path[SE_UDEV_PATH_LEN];
	u32			intent_chunk_kib;	/* 0: the default */
	char			name[REPLIPIPE_SOURCE_MAX_LEN + 1];
	struct rp_bdev		primary;
	/* Set when enabled, cleared when destroyed; NULL without a record. */
	struct rp_intent	*intent;
	struct bio_set		bio_set;
	struct bio_set		async_bio_set;	/* async copies only */
	mempool_t		*req_pool;
	/* WRITE SAME's work (rp_execute_write_same()), while enabled. */
	struct workqueue_struct	*write_same_wq;
	/* Writes released after a wait (rp_req_resubmit()), while enabled. */
	struct workqueue_struct	*resubmit_wq;
	/* One per rp_req and per write submission: pins the pools above. */
	struct percpu_ref	reqs;
	struct completion	reqs_done;
	/* The active pair; written under rp_config_lock, read under RCU. */
	struct rp_pair __rcu	*pair;
	/* Its removed pairs with writes in flight (rp_config_lock). */
	unsigned int		retiring;
	/* Writes in flight that found no pair (a new pair waits for them). */
	atomic_t		untracked;
	wait_queue_head_t	untracked_wq;
	struct list_head	node;		/* rp_devs, rp_devs_lock */
};

static inline struct rp_dev *RP_DEV(struct se_device *se_dev)
{
	return container_of(se_dev, struct rp_dev, se_dev);
}

/* True if a bit of [@first, @last] is set in @bits. */
static inline bool rp_bits_any(const unsigned long *bits, u64 first, u64 last)
{
	return find_next_bit(bits, last + 1, first) <= last;
}

/*
 * Sets bits [@first, @last] of @bits and returns how many of them were clear,
 * a word at a time: a range of many regions (an UNMAP of a whole LUN) costs
 * O(words) with interrupts off, not O(regions).
 */
static inline u64 rp_bits_set_count(unsigned long *bits, u64 first, u64 last)
{
	unsigned long *p = bits + BIT_WORD(first);
	unsigned long mask = BITMAP_FIRST_WORD_MASK(first);
	u64 left = last - first + 1;
	u64 in_word = BITS_PER_LONG - first % BITS_PER_LONG;
	u64 newly = 0;

	while (left >= in_word) {
		newly += hweight_long(mask & ~*p);
		*p++ |= mask;
		left -= in_word;
		in_word = BITS_PER_LONG;
		mask = ~0UL;
	}
	if (left) {
		mask &= BITMAP_LAST_WORD_MASK(last + 1);
		newly += hweight_long(mask & ~*p);
		*p |= mask;
	}
	return newly;
}

/*
 * Sets in @regions (@nr_regions bits) the regions of every bit set in
 * @chunks (@nr_chunks bits, 1 << @shift regions each; the last may be
 * short), a run of set bits at a time: O(words), not O(regions), for the
 * callers run with interrupts off over bitmaps of up to 2^32 regions.
 * Returns how many of those regions were not set yet: the callers keep
 * their counts without counting the whole bitmap again.
 */
static inline u64 rp_bits_set_chunks(unsigned long *regions, u64 nr_regions,
				     const unsigned long *chunks,
				     u64 nr_chunks, unsigned int shift)
{
	u64 i = 0, j, r0, r1, newly = 0;

	while ((i = find_next_bit(chunks, nr_chunks, i)) < nr_chunks) {
		j = find_next_zero_bit(chunks, nr_chunks, i);
		r0 = i << shift;
		r1 = min(j << shift, nr_regions);
		newly += rp_bits_set_count(regions, r0, r1 - 1);
		i = j;
	}
	return newly;
}

struct rp_pipe {
	struct list_head	node;		/* rp_pipes */
	char			id[REPLIPIPE_PIPE_ID_MAX_LEN + 1];
	char			name[REPLIPIPE_NAME_MAX_LEN + 1];
	u8			mode;
	u8			policy;
	u32			max_lag_kib;
	u32			region_kib;
	struct list_head	pairs;
	unsigned int		nr_pairs;
	/* Its removed pairs not freed yet: it stays until they are. */
	unsigned int		nr_retired;
	bool			deleted;	/* off rp_pipes */
};

/*
 * Where a claim is: RESYNC_CLAIM and RESYNC_CLAIM_WAIT move it on, each
 * waiting at most REPLIPIPE_CLAIM_WAIT_MS (rp_claim_advance()).
 */
enum rp_claim_stage {
	RP_CLAIM_FENCED,	/* no regions yet: the pair may not grant any */
	RP_CLAIM_DRAINING,	/* regions taken, writes to them in flight */
	RP_CLAIM_GRANTED,	/* the engine's to copy */
};

struct rp_claim {
	struct list_head	node;		/* pair->claims */
	struct rp_pair		*pair;
	u64			id;
	u64			first;
	u32			count;		/* 0 while fenced */
	u32			portid;
	unsigned long		deadline;	/* jiffies */
	bool			let_go;		/* holds no writes (an abort) */
	u8			stage;		/* enum rp_claim_stage */
	u64			hint;		/* the request's, for the fence */
	u32			max;
	u64			drain_seq;	/* writes it drains: up to this */
};

/* What RESYNC_CLAIM and RESYNC_CLAIM_WAIT answer. */
struct rp_claim_reply {
	u64			id;
	u64			first;
	u32			count;
	bool			pending;
	u32			left_ms;	/* of a granted claim's time */
};

struct rp_pair {
	struct list_head	node;		/* pipe->pairs, or a removal's */
	struct rp_pipe		*pipe;
	/* Once removed, until freed (rp_retire.c). */
	struct list_head	retired_node;	/* rp_retired */
	struct work_struct	retire_work;	/* frees it after its last put */
	atomic_t		retire_handoff;
	struct rp_dev		*src;
	struct rp_bdev		tgt;
	char			tgt_path[REPLIPIPE_TARGET_MAX_LEN + 1];
	u64			serial;		/* unique among the module's pairs */
	u64			src_bytes;
	u64			nr_regions;
	unsigned int		region_sect_shift; /* log2(sectors per region) */
	unsigned int		uf_shift;	/* regions per unflushed bit, log2 */
	u64			uf_nbits;	/* bits of uf_new and uf_old */

	/* Copies of the pipe's parameters for the data path (pair->lock). */
	u8			mode;
	u8			policy;
	u64			max_lag_bytes;

	/* The publisher, requests, waiters and a queued probe_work. */
	refcount_t		refs;
	struct completion	released;	/* refs reached zero */
	wait_queue_head_t	wq;		/* drain, last ref */
	/*
	 * A resume's probe of the target runs on rp_probe_wq, not in the
	 * PAIR_SET that asked for it (rp_pair_resume()); its end wakes
	 * probe_wq.
	 */
	struct work_struct	probe_work;
	wait_queue_head_t	probe_wq;

	spinlock_t		lock;		/* everything below */
	u8			state;
	u32			state_gen;	/* changes of state */
	bool			dead;
	unsigned long		*dirty;
	unsigned long		*claimed;
	unsigned long		*redirty;	/* dirtied while claimed */
	u64			nr_dirty;
	/*
	 * Regions the target acknowledged into its volatile write cache
	 * since its last completed flush (rp_pipe.c, "Unflushed"): uf_new
	 * since the last swap, uf_old before it; *_set: a bit may be set.
	 */
	unsigned long		*uf_new;
	unsigned long		*uf_old;
	bool			uf_new_set;
	bool			uf_old_set;
	u64			uf_gen;		/* swaps of uf_new and uf_old */
	/*
	 * Times the unflushed regions were made dirty (the target may have
	 * lost its cache): a write routed before the last of them can have
	 * reached the target's cache before it and complete after it.
	 */
	u32			uf_dirtied;
	/*
	 * An asynchronous pair's target flush for SYNCHRONIZE CACHE is in
	 * flight, and another is to follow it (rp_io.c): a target that
	 * queues I/O holds one such flush, not one per command.
	 */
	bool			async_flushing;
	bool			async_flush_again;
	u64			lag_bytes;
	/*
	 * Async writes waiting for room within max lag, oldest first: parked
	 * off LIO's submission context (on iSCSI the connection's receiver)
	 * and resubmitted (rp_req_resubmit()) with their room reserved
	 * (lag_granted); lag_work degrades the pair once the oldest waited
	 * RP_LAG_WAIT_SEC, an abort of one of them at once
	 * (rp_pair_abort_waiters()).
	 */
	struct list_head	lag_waiters;
	/*
	 * SYNCHRONIZE CACHE requests of a synchronous pair whose target flush
	 * waits for the copies of writes acknowledged while the pipe was
	 * asynchronous (lag_bytes), oldest first: rp_pair_flush_after_lag().
	 * lag_work bounds their wait too.
	 */
	struct list_head	lag_flushes;
	/*
	 * The rp_req writing to the legs, by region range: whether any
	 * overlaps a range is asked under this lock, with interrupts off, at
	 * each wake-up of a claim waiting to drain (any tracked before the
	 * claim: rp_claim_drained()) and for each chunk a record's clear pass
	 * looks at, while an async pair may have a quarter of a million writes
	 * in flight (max lag 1 GiB of 4 KiB).
	 */
	struct rb_root_cached	inflight;
	u64			inflight_seq;	/* of the last write tracked */
	struct list_head	held;		/* rp_req waiting for a claim */
	/*
	 * The async target legs not ended yet by sector range (rp_io.c), and
	 * the built legs to look at: new ones, and those a leg that ended
	 * held up.  A leg is issued once no earlier one overlaps it, found in
	 * O(log n) instead of a walk of every leg with interrupts off; one
	 * that an earlier leg holds up waits on that leg's async_waiters, so
	 * that a leg that ends looks again at what it held up only.
	 */
	struct rb_root_cached	async_tree;
	struct list_head	async_ready;
	u64			async_seq;	/* of the last leg added */
	struct list_head	claims;
	/*
	 * Its length, at most REPLIPIPE_MAX_CLAIMS_PER_PAIR: every write
	 * to a mirrored pair walks the list with interrupts off.
	 */
	unsigned int		nr_claims;
	/*
	 * The target's probes for resumes, one at a time: probe_seq counts
	 * those started, probe_done_seq those ended; probe_ret and probe_msg
	 * are the last one's result.  The last resume asked for saw the
	 * state generation resume_gen: a probe that ends well while it is
	 * pending applies it, unless the state changed since.
	 */
	u64			probe_seq;
	u64			probe_done_seq;
	int			probe_ret;
	const char		*probe_msg;	/* extack text, or NULL */
	u32			resume_gen;
	bool			resume_pending;

	atomic64_t		writes_mirrored;
	atomic64_t		bytes_mirrored;
	atomic64_t		target_errors;

	/* Set once at creation (rp_intent_bind). */
	u8			intent_state;	/* enum replipipe_intent_state */
	u64			intent_loaded;	/* dirty regions from the record */
	/* The record's new binding until the PIPE_SET writes it, or NULL. */
	struct rp_intent_rebind	*intent_rebind;
	/* The record's epoch once started (rp_intent_pair_start), else 0. */
	u64			intent_epoch;

	mempool_t		*page_pool;	/* async copies */
	/*
	 * async_work, and the target flushes sent off the submitter's
	 * context (rp_req_resubmit_work()): a queue of the pair's own
	 * (rp_pair_async_wq_alloc()).  NULL once quiesced.
	 */
	struct workqueue_struct	*async_wq;
	struct work_struct	event_work;
	struct work_struct	async_work;
	struct delayed_work	lag_work;
	/*
	 * Writes that found no pair on the source were still in flight when
	 * the PIPE_SET that published it gave up waiting for them
	 * (rp_pairs_start()): no claim yet, and start_work starts the pair
	 * once they ended.  Set and cleared under rp_config_lock.
	 */
	bool			start_pending;
	struct delayed_work	start_work;
};

enum rp_req_flags {
	RP_REQ_MIRROR	= 1 << 0,	/* a target leg exists */
	RP_REQ_ASYNC	= 1 << 1,	/* the target leg is async (a copy, a flush) */
	RP_REQ_TRACKED	= 1 << 2,	/* in pair->inflight */
	RP_REQ_FLUSH	= 1 << 3,	/* covers the whole device */
	RP_REQ_UNTRACKED = 1 << 6,	/* counted in dev->untracked */
	RP_REQ_NOCOPY	= 1 << 7,	/* no memory for the async copy */
};

/* One command's I/O: the fan-out context of iblock's iblock_req. */
struct rp_req {
	struct se_cmd		*cmd;		/* NULL for an IMMED flush */
	struct rp_dev		*dev;
	struct rp_pair		*pair;		/* a reference, or NULL */
	struct scatterlist	*sgl;
	u32			sgl_nents;
	/* The command's own pages when sgl is a bounce (rp_req_bounce()). */
	struct scatterlist	*cmd_sgl;
	u32			cmd_sgl_nents;
	u32			cmd_bytes;	/* the command's data in them */
	sector_t		sector;
	sector_t		nr_sects;
	u64			first_region;
	u64			last_region;
	blk_opf_t		primary_opf;
	blk_opf_t		target_opf;
	u64			flush_gen;	/* RP_REQ_FLUSH: its target flush's */
	u32			uf_dirtied;	/* RP_REQ_MIRROR: the pair's, routed */
	unsigned int		flags;
	refcount_t		pending;	/* command-side bios + submitter */
	atomic_t		async_pending;	/* async bios + submitter */
	refcount_t		refs;		/* command side + async side */
	atomic_t		primary_errors;
	atomic_t		target_errors;
	/* On pair->held, lag_waiters or lag_flushes, or the record's waiting */
	struct list_head	node;
	unsigned long		lag_parked_at;	/* jiffies, lag_waiters/flushes */
	bool			lag_granted;	/* its lag room is reserved */
	struct rb_node		inflight_rb;	/* pair->inflight */
	u64			inflight_subtree_last;
	u64			inflight_seq;	/* its order among the tracked */
	struct rb_node		async_rb;	/* pair->async_tree */
	sector_t		async_last;	/* last sector of the leg */
	sector_t		async_subtree_last;
	u64			async_seq;	/* its order among the pair's legs */
	/* On pair->async_ready, or on the async_waiters of a leg before it. */
	struct list_head	ready_node;
	struct list_head	async_waiters;	/* built legs it holds up */
	struct bio_list		async_bios;	/* built, not yet submitted */
	struct work_struct	work;		/* resubmission, after a wait */
};

/* A PIPE_SET request, parsed by rp_genl.c, applied by rp_pipe.c. */
struct rp_pair_spec {
	const char		*src;
	const char		*tgt;
	const struct nlattr	*src_attr;
	const struct nlattr	*tgt_attr;
	bool			assume_clean;
	struct rp_pair		*keep;		/* existing pair kept as is */
	struct rp_pair		*made;		/* new pair, not yet published */
	struct rp_dev		*made_src;	/* its source, once published */
};

struct rp_pipe_spec {
	const char		*id;
	const char		*name;
	u8			mode;
	u8			policy;
	u32			max_lag_kib;
	u32			region_kib;
	const struct nlattr	*region_attr;
	unsigned int		nr_pairs;
	struct rp_pair_spec	*pairs;
};

/* rp_main.c */
extern struct workqueue_struct *rp_wq;
extern struct workqueue_struct *rp_probe_wq;
extern struct kmem_cache *rp_req_cache;
extern unsigned int rp_claim_timeout_sec;
extern unsigned int rp_intent_clear_sec;
extern atomic_t rp_nr_pipes, rp_nr_pairs, rp_nr_claims, rp_nr_async_bufs;

/* rp_backend.c */
int rp_backend_init(void);
void rp_backend_exit(void);
struct rp_dev *rp_dev_lookup(const char *name);
void rp_dev_put(struct rp_dev *dev);

/* rp_io.c */
sense_reason_t rp_execute_rw(struct se_cmd *cmd, struct scatterlist *sgl,
			     u32 sgl_nents, enum dma_data_direction dir);
sense_reason_t rp_execute_sync_cache(struct se_cmd *cmd);
sense_reason_t rp_execute_write_same(struct se_cmd *cmd);
sense_reason_t rp_execute_unmap(struct se_cmd *cmd, sector_t lba,
				sector_t nolb);
void rp_req_resubmit(struct rp_req *req);
void rp_req_fail(struct rp_req *req);
void rp_async_work(struct work_struct *work);
void __rp_async_add(struct rp_pair *pair, struct rp_req *req);
void __rp_async_del(struct rp_pair *pair, struct rp_req *req);
bool __rp_async_overlaps(struct rp_pair *pair, u64 first, u64 last);

/* rp_pipe.c */
extern struct mutex rp_config_lock;
extern struct list_head rp_pipes;
/* Bumped when a pipe joins or leaves rp_pipes (rp_config_lock). */
extern unsigned int rp_pipes_gen;
int rp_pipe_init(void);
void rp_pipe_exit(void);
void rp_pipe_free(struct rp_pipe *pipe);
void rp_pair_kill(struct rp_pair *pair);
void rp_pair_quiesce(struct rp_pair *pair, unsigned long flush_by);
void rp_pair_free(struct rp_pair *pair);
struct rp_pair *rp_pair_get(struct rp_dev *dev);
struct rp_pair *rp_pair_get_write(struct rp_dev *dev, struct rp_req *req);
void rp_req_untracked_done(struct rp_req *req);
void rp_req_repoint(struct rp_req *req);
void rp_pair_put(struct rp_pair *pair);
const char *rp_pair_state_name(u8 state);
enum rp_route {
	RP_ROUTE_PRIMARY,	/* primary only (regions marked dirty if paired) */
	RP_ROUTE_MIRROR,	/* both legs */
	RP_ROUTE_HELD,		/* queued on pair->held until a claim ends */
	RP_ROUTE_STALE,		/* the pair was removed: rp_req_repoint() */
};
enum rp_route rp_pair_route_write(struct rp_pair *pair, struct rp_req *req,
				  bool lag_reserved, bool can_hold);
bool __rp_pair_mirroring(struct rp_pair *pair);
bool rp_pair_mirroring(struct rp_pair *pair);
void __rp_pair_mark_dirty(struct rp_pair *pair, u64 first, u64 last);
void __rp_pair_dirty_added(struct rp_pair *pair, u64 newly);
void rp_pair_untrack(struct rp_pair *pair, struct rp_req *req);
bool __rp_pair_busy(struct rp_pair *pair, u64 first, u64 last);
bool rp_pair_target_failed(struct rp_pair *pair, struct rp_req *req);
void rp_pair_target_flush_failed(struct rp_pair *pair);
void rp_pair_target_written(struct rp_pair *pair, struct rp_req *req);
u64 rp_pair_flush_begin(struct rp_pair *pair);
void rp_pair_flush_done(struct rp_pair *pair, u64 gen);
int rp_pair_flush_target(struct rp_pair *pair, unsigned long deadline);
struct rp_probe;
int rp_probe_device(dev_t devt, bool *opened, bool *abandoned);
struct rp_probe *rp_pair_flush_target_start(struct rp_pair *pair, u64 *gen);
int rp_pair_flush_target_wait(struct rp_probe *probe, unsigned int timeout_sec,
			      const bool *stop, bool *abandoned);
void rp_pair_mark_dirty(struct rp_pair *pair, struct rp_req *req);
enum rp_lag_verdict {
	RP_LAG_NONE,		/* the pair keeps no lag: nothing reserved */
	RP_LAG_RESERVED,	/* the write's bytes are within max lag */
	RP_LAG_PARKED,		/* on lag_waiters: resubmitted later */
};

enum rp_lag_verdict rp_pair_lag_reserve(struct rp_pair *pair,
					struct rp_req *req, u64 bytes,
					bool may_park);
void rp_pair_lag_release(struct rp_pair *pair, u64 bytes);
enum rp_lag_flush {
	RP_LAG_FLUSH_SEND,	/* the target's flush goes now */
	RP_LAG_FLUSH_WAIT,	/* on pair->lag_flushes, resubmitted later */
	RP_LAG_FLUSH_SKIP,	/* none: the command stands on the primary's */
};
enum rp_lag_flush rp_pair_flush_after_lag(struct rp_pair *pair,
					  struct rp_req *req);
void rp_pair_abort_waiters(struct rp_pair *pair);
struct rp_pipe *rp_pipe_find(const char *id);
struct rp_pair *rp_pair_find(const char *source);
int rp_pipe_set(struct rp_pipe_spec *spec, struct netlink_ext_ack *extack,
		bool *created);
int rp_pipe_del(const char *id, struct netlink_ext_ack *extack);
int rp_pair_pause(struct rp_pair *pair, struct netlink_ext_ack *extack);
int rp_pair_resume(struct rp_pair *pair, bool again,
		   struct netlink_ext_ack *extack);
int rp_claim_new(struct rp_pair *pair, u64 hint, u32 max, u32 portid,
		 struct rp_claim_reply *reply, struct netlink_ext_ack *extack);
struct rp_pair *rp_claim_pair_get(u64 id, u32 portid,
				  struct netlink_ext_ack *extack);
int rp_claim_advance(struct rp_pair *pair, u64 id,
		     struct rp_claim_reply *reply,
		     struct netlink_ext_ack *extack);
int rp_claim_end(u64 id, u32 portid, bool done,
		 struct netlink_ext_ack *extack);
void rp_claim_abort(struct rp_pair *pair, u64 id);
void rp_claims_drop_portid(u32 portid, u64 last);

/* rp_retire.c */
int rp_retire_init(void);
void rp_retire_exit(void);
void rp_pairs_retire(struct list_head *batch);
unsigned int rp_pairs_reap(struct list_head *batch, unsigned long timeout);
void rp_pair_released(struct rp_pair *pair);
void rp_retire_work(struct work_struct *work);
struct rp_pipe *rp_retired_target_pipe(dev_t devt);
bool rp_pair_fenced(struct rp_pair *pair);

/* rp_intent.c */
void rp_intent_exit(void);
int rp_intent_open(struct rp_dev *dev, const char *path);
void rp_intent_close(struct rp_dev *dev);
int rp_intent_mark_wait(struct rp_intent *in, sector_t sector,
			sector_t nr_sects, u64 *synced_gen);
int rp_intent_sync(struct rp_intent *in);
bool rp_intent_mark_write(struct rp_intent *in, struct rp_req *req);
int rp_intent_bind(struct rp_intent *in, struct rp_pair *pair, u32 region_kib,
		   bool assume_clean, struct netlink_ext_ack *extack);
int rp_intent_probe(struct rp_intent *in, bool other,
		    struct netlink_ext_ack *extack);
int rp_intent_target_probe(struct rp_pair *pair,
			   struct netlink_ext_ack *extack);
int rp_intent_commit(struct rp_pair *pair, struct netlink_ext_ack *extack);
void rp_intent_settle(struct rp_pair *pair, bool apply);
void rp_intent_rebind_free(struct rp_pair *pair);
int rp_intent_target_taken(struct rp_pair *pair,
			   struct netlink_ext_ack *extack);
void rp_intent_pair_start(struct rp_intent *in, struct rp_pair *pair);
void rp_intent_pair_gone(struct rp_intent *in, struct rp_pair *pair,
			 unsigned long flush_by);
u64 rp_intent_marked(struct rp_intent *in);
u32 rp_intent_chunk_kib(struct rp_intent *in);

/* rp_fault.c: the debug tier's fault injection */
#ifdef CONFIG_FAULT_INJECTION_DEBUG_FS
bool rp_fail_async_copy(void);
bool rp_fail_probe_timeout(void);
bool rp_delay_dev_lookup(void);
bool rp_fail_event(void);
bool rp_delay_clear_pick(void);
bool rp_delay_pair_kill(void);
void rp_fault_init(void);
void rp_fault_exit(void);
#else
static inline bool rp_fail_async_copy(void) { return false; }
static inline bool rp_fail_probe_timeout(void) { return false; }
static inline bool rp_delay_dev_lookup(void) { return false; }
static inline bool rp_fail_event(void) { return false; }
static inline bool rp_delay_clear_pick(void) { return false; }
static inline bool rp_delay_pair_kill(void) { return false; }
static inline void rp_fault_init(void) {}
static inline void rp_fault_exit(void) {}
#endif

/* rp_genl.c */
int rp_genl_init(void);
void rp_genl_exit(void);
void rp_genl_notify_pipe(struct rp_pipe *pipe, u8 cmd);
void rp_genl_notify_pair(struct rp_pair *pair);

#endif /* REPLIPIPE_INTERNAL_H */
