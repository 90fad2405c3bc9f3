// SPDX-License-Identifier: GPL-2.0
/*
 * rp_pipe.c: pipes, pairs, dirty bitmaps and resync claims.
 *
 * Objects
 *   pipe   on rp_pipes; holds a module reference while it exists.
 *   pair   on pipe->pairs; published to the data path as src->pair (RCU).
 *          Holds a configfs dependency on its source backstore (so the
 *          backstore cannot be removed) and the target opened exclusively.
 *   claim  on pair->claims; a run of regions a resync engine copies.
 *
 * Pair states (enum replipipe_pair_state)
 *   SYNCING   mirroring; some regions dirty        -> INSYNC, DEGRADED, PAUSED
 *   INSYNC    mirroring; no region dirty           -> SYNCING, DEGRADED, PAUSED
 *   DEGRADED  a target write failed (policy Degrade, or async), or there was
 *             no room within max lag for RP_LAG_WAIT_SEC or for an initiator
 *             that aborted a write waiting for it: primary only,
 *             regions written are marked dirty     -> SYNCING/INSYNC (PAIR_SET)
 *   PAUSED    stopped by PAIR_SET; as DEGRADED     -> SYNCING/INSYNC (PAIR_SET)
 *   PAIR_SET SYNCING leaves DEGRADED/PAUSED only after a probe of the
 *   target (a read of its first block and a flush, on rp_probe_wq with a
 *   pair reference, bounded by RP_PROBE_TIMEOUT_SEC) succeeded, and only if
 *   the state did not change meanwhile (rp_pair_resume()); else nothing
 *   changes.
 *   SYNCING becomes INSYNC when a RESYNC_DONE clears the last dirty bit;
 *   INSYNC becomes SYNCING when a region is marked dirty (policy FailIO).
 *   Every state change queues pair->event_work (EVT_PAIR_STATE).
 *
 * Bitmaps (one bit per region, pair->lock)
 *   dirty     the target may differ from the primary.
 *   claimed   a claim covers the region: new writes to it wait on pair->held
 *             (or, not held, reach the primary only and redirty it), writes
 *             routed to it before the claim drained before it was granted.
 *   redirty   the region was marked dirty while claimed: RESYNC_DONE keeps it
 *             dirty (the copy may predate the write).
 *   RESYNC_DONE clears dirty (unless redirty), claimed and redirty, then
 *   releases held writes; RESYNC_FAILED, a closed socket (NETLINK_URELEASE)
 *   and claim_timeout_sec clear claimed and redirty only.  The resync
 *   engine writes the target itself and makes each claim's copy durable
 *   (a flush) before its RESYNC_DONE: the module does not see those writes.
 *
 * Unflushed (uf_new, uf_old: one bit per 1 << uf_shift regions, pair->lock)
 *   A write the target acknowledged without FUA while it has a volatile
 *   write cache is not durable there until a flush issued after it
 *   completes.  While the pair mirrors that is the initiator's business
 *   (SYNCHRONIZE CACHE reaches both legs), but a target that stops getting
 *   the writes may lose power before the resume: the resync would not copy
 *   what its cache lost.  So such a write's regions go into uf_new when it
 *   completes; a target flush, when issued, moves uf_new to uf_old if uf_old
 *   is clear (a swap), and clears uf_old when it completes without error
 *   unless another swap came after its issue (uf_old then holds later
 *   writes: the next flush clears it).  PAUSED, DEGRADED and a target error
 *   make every unflushed region dirty; a write that completes on a pair no
 *   longer mirroring marks its regions dirty itself, and so does one routed
 *   before the last time the unflushed regions were made dirty
 *   (uf_dirtied): its target leg may have reached the cache that was lost
 *   while its primary leg was still running, and a failed target under
 *   FailIO, or a resume, leaves the pair mirroring when it completes.
 *
 * Locks, in order
 *   rp_config_lock (mutex)  rp_pipes, pipe fields, pipe->pairs, publishing
 *                           src->pair, claim lookup by id.  Process context.
 *   pair->lock (spinlock, irq-safe)  state, bitmaps, counts, lag, inflight,
 *                           held, lag_waiters, lag_flushes, async_tree,
 *                           claims.  Taken from bio completion: never
 *                           sleep under it.
 *   rp_claim_owners' xa_lock (irq-safe)  claim counts per netlink port.
 * Lifetime
 *   pair->refs: the publisher's reference plus one per request and per
 *   claim waiter (rp_pair_get under RCU).  Removal unpublishes, waits an RCU
 *   grace period, marks the pair dead (writes not routed yet take the
 *   source's current pair, rp_req_repoint(); waiters wake up, held writes
 *   and flushes waiting for the lag are released, claims dropped), drops the
 *   publisher's reference and waits for the others: every one of them is an
 *   I/O or a bounded wait.  PIPE_DEL and a PIPE_SET that removes or
 *   replaces pairs wait for those without rp_config_lock, at most
 *   RP_DRAIN_WAIT_SEC, then leave them to rp_retire_wq (rp_retire.c).
 */
#define pr_fmt(fmt) "replipipe: " fmt

#include <linux/interval_tree_generic.h>
#include <linux/module.h>
#include <linux/netlink.h>
#include <linux/notifier.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/xarray.h>

#include "replipipe_internal.h"

DEFINE_MUTEX(rp_config_lock);
LIST_HEAD(rp_pipes);
unsigned int rp_pipes_gen = 1;

/*
 * The netlink ports that own claims, each with its number of claims (an
 * xa_mk_value()).  The NETLINK_URELEASE notifier runs for every generic
 * netlink socket of the system that closes (nl80211, ethtool, ...): it
 * looks the port up here, without a lock, and takes rp_config_lock (which
 * a PIPE_SET writing a write-intent record on a slow device holds for as
 * long as those writes take) only for a port that owns claims.
 */
static DEFINE_XARRAY_FLAGS(rp_claim_owners, XA_FLAGS_LOCK_IRQ);
static atomic64_t rp_next_claim_id = ATOMIC64_INIT(0);
static atomic64_t rp_next_pair_serial = ATOMIC64_INIT(0);
static void rp_claim_reaper(struct work_struct *work);
static DECLARE_DELAYED_WORK(rp_reaper, rp_claim_reaper);

static const char * const rp_state_names[] = {
	[REPLIPIPE_PAIR_SYNCING]	= "Syncing",
	[REPLIPIPE_PAIR_INSYNC]		= "InSync",
	[REPLIPIPE_PAIR_DEGRADED]	= "Degraded",
	[REPLIPIPE_PAIR_PAUSED]		= "Paused",
};

const char *rp_pair_state_name(u8 state)
{
	return state <= REPLIPIPE_PAIR_STATE_MAX ? rp_state_names[state] : "?";
}

struct rp_pair *rp_pair_get(struct rp_dev *dev)
{
	struct rp_pair *pair;

	rcu_read_lock();
	pair = rcu_dereference(dev->pair);
	if (pair && !refcount_inc_not_zero(&pair->refs))
		pair = NULL;
	rcu_read_unlock();
	return pair;
}

/*
 * rp_pair_get() for a write or a sync op: one that finds no pair is counted
 * in dev->untracked inside the RCU read section, so that a pair published
 * after synchronize_rcu() can wait for every write it cannot see.
 */
struct rp_pair *rp_pair_get_write(struct rp_dev *dev, struct rp_req *req)
{
	struct rp_pair *pair;

	rcu_read_lock();
	pair = rcu_dereference(dev->pair);
	if (pair && !refcount_inc_not_zero(&pair->refs))
		pair = NULL;
	if (!pair) {
		atomic_inc(&dev->untracked);
		req->flags |= RP_REQ_UNTRACKED;
	}
	rcu_read_unlock();
	return pair;
}

/*
 * @req was not routed before its pair was removed: it waited for lag room or
 * for a claim, which the removal let go (rp_pair_kill()), or it raced the
 * removal.  It goes the way of the source's pair now, as a new write would:
 * a pair that replaced the removed one mirrors it or marks its regions
 * dirty, even a pair whose target was assumed clean, which no resync would
 * ever bring it to.  The removed pair was unpublished a grace period
 * before it died, so this finds its successor or no pair.
 */
void rp_req_repoint(struct rp_req *req)
{
	struct rp_pair *old = req->pair;

	req->pair = rp_pair_get_write(req->dev, req);
	rp_pair_put(old);
}

/* An untracked write is done.  Must not block. */
void rp_req_untracked_done(struct rp_req *req)
{
	struct rp_dev *dev = req->dev;

	if (atomic_dec_and_test(&dev->untracked))
		wake_up_all(&dev->untracked_wq);
}

void rp_pair_put(struct rp_pair *pair)
{
	if (refcount_dec_and_test(&pair->refs))
		rp_pair_released(pair);
}

/* Whether writes go to the target as well.  pair->lock held. */
bool __rp_pair_mirroring(struct rp_pair *pair)
{
	return !pair->dead && (pair->state == REPLIPIPE_PAIR_SYNCING ||
			       pair->state == REPLIPIPE_PAIR_INSYNC);
}

bool rp_pair_mirroring(struct rp_pair *pair)
{
	unsigned long flags;
	bool ret;

	spin_lock_irqsave(&pair->lock, flags);
	ret = __rp_pair_mirroring(pair);
	spin_unlock_irqrestore(&pair->lock, flags);
	return ret;
}

/* Room within max lag for @bytes more; a write larger than it fits alone. */
static bool __rp_pair_lag_room(struct rp_pair *pair, u64 bytes)
{
	return !pair->lag_bytes ||
	       pair->lag_bytes + bytes <= pair->max_lag_bytes;
}

/*
 * Resubmits the writes waiting for lag room that may go now, oldest first:
 * each with its room reserved while the pair mirrors asynchronously, all of
 * them once it does not; and the target flushes that wait for the lag to
 * drain, once it has or they need not wait (rp_pair_flush_after_lag()).
 * Called wherever lag_bytes falls or the mode, max lag or the state change.
 * pair->lock held; must not block.
 */
static void __rp_pair_lag_grant(struct rp_pair *pair)
{
	bool lagging = pair->mode == REPLIPIPE_MODE_ASYNC &&
		       __rp_pair_mirroring(pair);
	struct rp_req *req, *tmp;

	if (!pair->lag_bytes || pair->mode == REPLIPIPE_MODE_ASYNC ||
	    !__rp_pair_mirroring(pair)) {
		list_for_each_entry_safe(req, tmp, &pair->lag_flushes, node) {
			list_del_init(&req->node);
			/* A bio may wait for a tag: rp_req_resubmit_work(). */
			queue_work(pair->async_wq, &req->work);
		}
	}

	list_for_each_entry_safe(req, tmp, &pair->lag_waiters, node) {
		u64 bytes = (u64)req->nr_sects << SECTOR_SHIFT;

		if (lagging) {
			if (!__rp_pair_lag_room(pair, bytes))
				break;
			pair->lag_bytes += bytes;
			req->lag_granted = true;
		}
		list_del_init(&req->node);
		rp_req_resubmit(req);
	}
}

static void __rp_pair_set_state(struct rp_pair *pair, u8 state)
{
	if (pair->state == state)
		return;
	pair->state = state;
	pair->state_gen++;
	/*
	 * Not on rp_wq: the event's message is allocated with GFP_KERNEL,
	 * which may wait in reclaim for writes to a LUN of ours, and under
	 * memory pressure rp_wq's one rescuer would then not run the record
	 * write-backs those writes wait for (rp_claim_reaper() says more).
	 */
	if (!pair->dead)
		queue_work(system_wq, &pair->event_work);
	__rp_pair_lag_grant(pair);
}

/*
 * Marks regions [@first, @last] dirty.  O(words) of the range plus its
 * claimed regions, which are few (the claims' runs).  pair->lock held.
 */
void __rp_pair_mark_dirty(struct rp_pair *pair, u64 first, u64 last)
{
	unsigned long i;

	if (first >= pair->nr_regions)
		return;
	last = min(last, pair->nr_regions - 1);
	pair->nr_dirty += rp_bits_set_count(pair->dirty, first, last);
	i = first;
	for_each_set_bit_from(i, pair->claimed, last + 1)
		__set_bit(i, pair->redirty);
	if (pair->nr_dirty && pair->state == REPLIPIPE_PAIR_INSYNC)
		__rp_pair_set_state(pair, REPLIPIPE_PAIR_SYNCING);
}

/*
 * Regions were set in pair->dirty in bulk (rp_bits_set_chunks(), O(words)
 * with interrupts off where a loop over regions would be O(regions)),
 * @newly of them not dirty before: the count and the state follow, with
 * no count of the whole bitmap (up to 256 MiB; this runs on a target's
 * failed write).  A claimed region made dirty stays dirty after its copy
 * (redirty); which claimed regions were made dirty is not known here, so
 * all are: an extra copy, never a missed one (and no claim is granted
 * before a new pair's bits are set: claims are looked up under
 * rp_config_lock).  A claim's regions are one run, all claimed.
 * pair->lock held.
 */
void __rp_pair_dirty_added(struct rp_pair *pair, u64 newly)
{
	struct rp_claim *claim;

	list_for_each_entry(claim, &pair->claims, node)
		if (claim->count)
			bitmap_set(pair->redirty, claim->first, claim->count);
	pair->nr_dirty += newly;
	if (pair->nr_dirty && pair->state == REPLIPIPE_PAIR_INSYNC)
		__rp_pair_set_state(pair, REPLIPIPE_PAIR_SYNCING);
}

/*
 * The target stops getting the pair's writes, or failed one: what it holds
 * unflushed may be lost before the pair resumes, so those regions become
 * dirty.  O(words), as __rp_pair_dirty_added().  pair->lock held.
 */
static void __rp_pair_unflushed_dirty(struct rp_pair *pair)
{
	u64 newly;

	pair->uf_dirtied++;
	if (!pair->uf_new_set && !pair->uf_old_set)
		return;
	bitmap_or(pair->uf_old, pair->uf_old, pair->uf_new, pair->uf_nbits);
	newly = rp_bits_set_chunks(pair->dirty, pair->nr_regions, pair->uf_old,
				   pair->uf_nbits, pair->uf_shift);
	bitmap_zero(pair->uf_new, pair->uf_nbits);
	bitmap_zero(pair->uf_old, pair->uf_nbits);
	pair->uf_new_set = false;
	pair->uf_old_set = false;
	__rp_pair_dirty_added(pair, newly);
}

static bool __rp_pair_claimed(struct rp_pair *pair, u64 first, u64 last)
{
	return rp_bits_any(pair->claimed, first, last);
}

static bool rp_claim_overlaps(const struct rp_claim *claim, u64 first,
			      u64 last)
{
	return claim->count && claim->first <= last &&
	       first < claim->first + claim->count;
}

/*
 * Whether a write to regions [@first, @last] waits for the claims on them:
 * not once one of those claims let its writes go (rp_pair_abort_waiters()).
 * pair->lock held.
 */
static bool __rp_pair_holds(struct rp_pair *pair, u64 first, u64 last)
{
	struct rp_claim *claim;

	if (!__rp_pair_claimed(pair, first, last))
		return false;
	list_for_each_entry(claim, &pair->claims, node)
		if (claim->let_go && rp_claim_overlaps(claim, first, last))
			return false;
	return true;
}

/*
 * LIO aborted @req's command (ABORT TASK, LUN RESET, PREEMPT AND ABORT:
 * rp_tmr_notify()) and waits for it to end.  The flag is set under the
 * command's t_state_lock before LIO tells the backend, so a writer that
 * takes pair->lock after rp_pair_abort_waiters() looked sees it.
 */
static bool rp_req_aborted(const struct rp_req *req)
{
	return req->cmd &&
	       (READ_ONCE(req->cmd->transport_state) & CMD_T_ABORTED);
}

/* The regions a write, UNMAP or WRITE SAME covers (a flush has none). */
static void rp_req_regions(struct rp_pair *pair, struct rp_req *req)
{
	u64 last_region = pair->nr_regions ? pair->nr_regions - 1 : 0;
	sector_t end = req->sector + max_t(sector_t, req->nr_sects, 1) - 1;

	req->first_region = min_t(u64, req->sector >> pair->region_sect_shift,
				  last_region);
	req->last_region = min_t(u64, end >> pair->region_sect_shift,
				 last_region);
}

/*
 * Moves the held writes that need not wait any longer to @released (for
 * rp_reqs_resubmit()): those of a claim that ended or let its writes go,
 * and those aborted.  pair->lock held.
 */
static void __rp_pair_release_held(struct rp_pair *pair,
				   struct list_head *released)
{
	struct rp_req *req, *tmp;

	list_for_each_entry_safe(req, tmp, &pair->held, node) {
		rp_req_regions(pair, req);
		if (rp_req_aborted(req) ||
		    !__rp_pair_holds(pair, req->first_region,
				     req->last_region))
			list_move_tail(&req->node, released);
	}
}

/*
 * Whether routing sends @req to the primary past a claim on its regions
 * (the claim let its writes go, or @req was aborted): then it needs no lag
 * room either.  pair->lock held.
 */
static bool __rp_req_passes_claim(struct rp_pair *pair, struct rp_req *req)
{
	rp_req_regions(pair, req);
	return __rp_pair_claimed(pair, req->first_region, req->last_region) &&
	       (rp_req_aborted(req) ||
		!__rp_pair_holds(pair, req->first_region, req->last_region));
}

/* The claims on @req's regions hold no writes any more.  pair->lock held. */
static void __rp_claims_let_go(struct rp_pair *pair, struct rp_req *req)
{
	struct rp_claim *claim;

	rp_req_regions(pair, req);
	list_for_each_entry(claim, &pair->claims, node)
		if (rp_claim_overlaps(claim, req->first_region,
				      req->last_region))
			claim->let_go = true;
}

static void rp_reqs_resubmit(struct list_head *released)
{
	struct rp_req *req, *tmp;

	list_for_each_entry_safe(req, tmp, released, node) {
		list_del_init(&req->node);
		rp_req_resubmit(req);
	}
}

#define RP_REQ_FIRST_REGION(req)	((req)->first_region)
#define RP_REQ_LAST_REGION(req)		((req)->last_region)
INTERVAL_TREE_DEFINE(struct rp_req, inflight_rb, u64, inflight_subtree_last,
		     RP_REQ_FIRST_REGION, RP_REQ_LAST_REGION, static inline,
		     rp_inflight)

/*
 * Decides where a write goes.  Writes to claimed regions are held when
 * @can_hold, else they go to the primary and stay dirty.  An asynchronous
 * pair mirrors only writes that got lag room.  A synchronous write never
 * overtakes the copy of an older asynchronous write to the same regions
 * (the pipe was asynchronous until a PIPE_SET): it goes to the primary and
 * its regions stay dirty.  A removed pair routes nothing (RP_ROUTE_STALE).
 * Must not block.
 */
enum rp_route rp_pair_route_write(struct rp_pair *pair, struct rp_req *req,
				  bool lag_reserved, bool can_hold)
{
	enum rp_route route = RP_ROUTE_PRIMARY;
	unsigned long flags;
	bool claimed;

	spin_lock_irqsave(&pair->lock, flags);
	if (pair->dead) {
		route = RP_ROUTE_STALE;
		goto unlock;
	}

	rp_req_regions(pair, req);
	claimed = __rp_pair_claimed(pair, req->first_region, req->last_region);
	/* An aborted write is not held: see rp_pair_abort_waiters(). */
	if (can_hold && !rp_req_aborted(req) &&
	    __rp_pair_holds(pair, req->first_region, req->last_region)) {
		list_add_tail(&req->node, &pair->held);
		route = RP_ROUTE_HELD;
		goto unlock;
	}

	req->inflight_seq = ++pair->inflight_seq;
	rp_inflight_insert(req, &pair->inflight);
	req->flags |= RP_REQ_TRACKED;
	if (!claimed && __rp_pair_mirroring(pair) &&
	    (pair->mode == REPLIPIPE_MODE_SYNC ?
	     !__rp_async_overlaps(pair, req->first_region,
				  req->last_region) :
	     lag_reserved)) {
		req->flags |= RP_REQ_MIRROR;
		req->uf_dirtied = pair->uf_dirtied;
		route = RP_ROUTE_MIRROR;
		if (pair->mode == REPLIPIPE_MODE_ASYNC) {
			req->flags |= RP_REQ_ASYNC;
			__rp_async_add(pair, req);
		}
	} else {
		__rp_pair_mark_dirty(pair, req->first_region, req->last_region);
	}
unlock:
	spin_unlock_irqrestore(&pair->lock, flags);
	return route;
}

/* The request is done with both legs.  Must not block. */
void rp_pair_untrack(struct rp_pair *pair, struct rp_req *req)
{
	bool kick = false;
	unsigned long flags;

	if (!(req->flags & RP_REQ_TRACKED))
		return;
	spin_lock_irqsave(&pair->lock, flags);
	rp_inflight_remove(req, &pair->inflight);
	if (req->flags & RP_REQ_ASYNC) {
		__rp_async_del(pair, req);
		kick = !list_empty(&pair->async_ready);
	}
	spin_unlock_irqrestore(&pair->lock, flags);
	wake_up_all(&pair->wq);
	if (kick)
		queue_work(pair->async_wq, &pair->async_work);
}

void rp_pair_mark_dirty(struct rp_pair *pair, struct rp_req *req)
{
	unsigned long flags;

	spin_lock_irqsave(&pair->lock, flags);
	rp_req_regions(pair, req);
	__rp_pair_mark_dirty(pair, req->first_region, req->last_region);
	spin_unlock_irqrestore(&pair->lock, flags);
}

/*
 * A target leg failed: a write's regions (@req, if not a flush) become
 * dirty, and the regions the target held unflushed.  Returns true if the
 * failure goes to the initiator (@can_fail: a synchronous command; policy
 * FailIO); otherwise the pair degrades.  Must not block.
 */
static bool rp_pair_leg_failed(struct rp_pair *pair, struct rp_req *req,
			       bool can_fail)
{
	unsigned long flags;
	bool fail;

	atomic64_inc(&pair->target_errors);
	spin_lock_irqsave(&pair->lock, flags);
	/*
	 * A failed flush lost at most what the target held unflushed (made
	 * dirty below), not every region: what an earlier flush made durable
	 * stays.
	 */
	if (req && !(req->flags & RP_REQ_FLUSH)) {
		rp_req_regions(pair, req);
		__rp_pair_mark_dirty(pair, req->first_region,
				     req->last_region);
	}
	fail = can_fail && pair->policy == REPLIPIPE_POLICY_FAILIO;
	/* Writers waiting for lag room go to the primary now. */
	if (!fail && __rp_pair_mirroring(pair))
		__rp_pair_set_state(pair, REPLIPIPE_PAIR_DEGRADED);
	/* Under FailIO too: the error may be the target losing its cache. */
	__rp_pair_unflushed_dirty(pair);
	spin_unlock_irqrestore(&pair->lock, flags);
	return fail;
}

/*
 * A write or flush of a command failed on the target.  Returns true if the
 * command must fail (policy FailIO, a synchronous write or a flush of a
 * synchronous pair); otherwise the pair degrades.  Must not block.
 */
bool rp_pair_target_failed(struct rp_pair *pair, struct rp_req *req)
{
	/*
	 * An asynchronous pair promises its target nothing when the initiator
	 * flushes (copies may still be on their way): a failed flush of it
	 * degrades the pair, as a failed copy does, and the command stands on
	 * the primary's flush.
	 */
	bool async_flush = (req->flags & RP_REQ_FLUSH) &&
			   READ_ONCE(pair->mode) == REPLIPIPE_MODE_ASYNC;

	return rp_pair_leg_failed(pair, req,
				  !(req->flags & RP_REQ_ASYNC) && !async_flush);
}

/*
 * A flush of the target that no command waits for (a write-intent record's
 * clear pass) failed: as for the initiator's, what the target held
 * unflushed becomes dirty, since the error may be the target losing its
 * cache, and a later flush that succeeds must not make it look durable.
 * The pair degrades, unless its policy is FailIO: then the initiator's
 * next command to the target sees the failure.
 */
void rp_pair_target_flush_failed(struct rp_pair *pair)
{
	rp_pair_leg_failed(pair, NULL, true);
}

/*
 * A write the target acknowledged (a mirrored write, UNMAP or WRITE SAME)
 * is done: unless it had FUA or the target has no volatile write cache,
 * its regions are unflushed, or dirty if the pair no longer mirrors or the
 * unflushed ones were made dirty since the write was routed (its target
 * leg may have been among them, it was not yet counted).  Must not block.
 */
void rp_pair_target_written(struct rp_pair *pair, struct rp_req *req)
{
	unsigned long flags;
	u64 first, last;

	if ((req->target_opf & REQ_FUA) || !bdev_write_cache(pair->tgt.bdev))
		return;
	spin_lock_irqsave(&pair->lock, flags);
	if (__rp_pair_mirroring(pair) &&
	    req->uf_dirtied == pair->uf_dirtied) {
		first = req->first_region >> pair->uf_shift;
		last = req->last_region >> pair->uf_shift;
		bitmap_set(pair->uf_new, first, last - first + 1);
		pair->uf_new_set = true;
	} else if (!pair->dead) {
		/* A pair being removed: its record flushes both legs. */
		__rp_pair_mark_dirty(pair, req->first_region, req->last_region);
	}
	spin_unlock_irqrestore(&pair->lock, flags);
}

/*
 * A flush of the target is about to be issued: it covers every write that
 * completed before, so uf_new becomes uf_old when that is clear.  Returns
 * the ticket for rp_pair_flush_done().  Must not block.
 */
u64 rp_pair_flush_begin(struct rp_pair *pair)
{
	unsigned long flags;
	u64 gen;

	spin_lock_irqsave(&pair->lock, flags);
	if (!pair->uf_old_set) {
		swap(pair->uf_new, pair->uf_old);
		pair->uf_old_set = pair->uf_new_set;
		pair->uf_new_set = false;
		pair->uf_gen++;
	}
	gen = pair->uf_gen;
	spin_unlock_irqrestore(&pair->lock, flags);
	return gen;
}

/*
 * The flush of ticket @gen completed without error: uf_old is durable
 * unless a swap since put later writes in it.  Must not block (uf_old has
 * at most RP_UNFLUSHED_MAX_BITS bits).
 */
void rp_pair_flush_done(struct rp_pair *pair, u64 gen)
{
	unsigned long flags;

	spin_lock_irqsave(&pair->lock, flags);
	if (gen == pair->uf_gen && pair->uf_old_set) {
		bitmap_zero(pair->uf_old, pair->uf_nbits);
		pair->uf_old_set = false;
	}
	spin_unlock_irqrestore(&pair->lock, flags);
}

/*
 * Writes stop waiting for lag room: the pair degrades, which sends every
 * waiter to the primary with its regions dirty (__rp_pair_set_state()).
 * True if it degraded.  pair->lock held.
 */
static bool __rp_pair_lag_give_up(struct rp_pair *pair)
{
	if (!__rp_pair_mirroring(pair))
		return false;
	__rp_pair_set_state(pair, REPLIPIPE_PAIR_DEGRADED);
	__rp_pair_unflushed_dirty(pair);
	return true;
}

static void rp_pair_warn_aborted(struct rp_pair *pair)
{
	pr_warn("%s: target %s: an initiator aborted a write waiting for room within max lag; pair degraded\n",
		pair->src->name, pair->tgt_path);
}

/*
 * Parks @req at the end of @list (lag_waiters or lag_flushes), where
 * rp_pair_lag_work() gives it RP_LAG_WAIT_SEC at most.  pair->lock held.
 */
static void __rp_pair_park(struct rp_pair *pair, struct rp_req *req,
			   struct list_head *list)
{
	req->lag_parked_at = jiffies;
	/* Pending already when an older waiter armed it. */
	queue_delayed_work(rp_wq, &pair->lag_work, RP_LAG_WAIT_SEC * HZ);
	list_add_tail(&req->node, list);
}

/*
 * An async write of @req: reserves its room within max lag, or parks it on
 * pair->lag_waiters, behind the writes already waiting (a small write does
 * not overtake a large one, and overlapping async legs keep their order).
 * Unless @may_park: then a write without room gets RP_LAG_NONE, and goes
 * to the primary with its regions dirty.  The submitter must not touch a
 * parked @req again.  Must not block.
 */
enum rp_lag_verdict rp_pair_lag_reserve(struct rp_pair *pair,
					struct rp_req *req, u64 bytes,
					bool may_park)
{
	enum rp_lag_verdict ret = RP_LAG_NONE;
	bool gave_up = false;
	unsigned long flags;

	spin_lock_irqsave(&pair->lock, flags);
	if (req->lag_granted) {
		/* Reserved by __rp_pair_lag_grant() for this resubmission. */
		req->lag_granted = false;
		ret = RP_LAG_RESERVED;
	} else if (pair->mode != REPLIPIPE_MODE_ASYNC ||
		   !__rp_pair_mirroring(pair)) {
		ret = RP_LAG_NONE;
	} else if (list_empty(&pair->lag_waiters) &&
		   __rp_pair_lag_room(pair, bytes)) {
		pair->lag_bytes += bytes;
		ret = RP_LAG_RESERVED;
	} else if (!may_park || __rp_req_passes_claim(pair, req)) {
		ret = RP_LAG_NONE;
	} else if (rp_req_aborted(req)) {
		/* Aborted before it could park: see rp_pair_abort_waiters(). */
		gave_up = __rp_pair_lag_give_up(pair);
		ret = RP_LAG_NONE;
	} else {
		__rp_pair_park(pair, req, &pair->lag_waiters);
		ret = RP_LAG_PARKED;
	}
	spin_unlock_irqrestore(&pair->lock, flags);
	if (gave_up)
		rp_pair_warn_aborted(pair);
	return ret;
}

/*
 * A SYNCHRONIZE CACHE on a synchronous pair promises that the target holds
 * every write acknowledged before it, but the copies of writes acknowledged
 * while the pipe was asynchronous may still be on their way (a PIPE_SET
 * switched it since; a flush covers only what the target completed before
 * it).  So the target's flush of @req waits on pair->lag_flushes until
 * those copies end (lag_bytes 0: no new one is taken once the pair is
 * synchronous), the pair stops mirroring or is asynchronous again (no
 * flush then, as for any such pair), or its command is aborted (it
 * promises nothing then, and LIO's abort waits for it).  Like a write
 * waiting for lag room, it waits RP_LAG_WAIT_SEC at most: then the pair
 * degrades (rp_pair_lag_work(); a copy that fails after leaves its regions
 * dirty) and the command stands on the primary's flush.  Called again for a
 * request __rp_pair_lag_grant() or an abort resubmitted.  Must not block.
 */
enum rp_lag_flush rp_pair_flush_after_lag(struct rp_pair *pair,
					  struct rp_req *req)
{
	enum rp_lag_flush ret = RP_LAG_FLUSH_SEND;
	unsigned long flags;

	spin_lock_irqsave(&pair->lock, flags);
	if (!__rp_pair_mirroring(pair) ||
	    pair->mode == REPLIPIPE_MODE_ASYNC || rp_req_aborted(req)) {
		ret = RP_LAG_FLUSH_SKIP;
	} else if (pair->lag_bytes) {
		__rp_pair_park(pair, req, &pair->lag_flushes);
		ret = RP_LAG_FLUSH_WAIT;
	}
	spin_unlock_irqrestore(&pair->lock, flags);
	return ret;
}

/* Must not block: the async leg's completion calls it. */
void rp_pair_lag_release(struct rp_pair *pair, u64 bytes)
{
	unsigned long flags;

	spin_lock_irqsave(&pair->lock, flags);
	pair->lag_bytes -= bytes;
	__rp_pair_lag_grant(pair);
	spin_unlock_irqrestore(&pair->lock, flags);
}

/*
 * LIO aborts commands of @pair's source (ABORT TASK, LUN RESET, PREEMPT AND
 * ABORT: rp_tmr_notify()) and waits for each to end.  An aborted write waiting
 * for lag room means its initiator gave up before RP_LAG_WAIT_SEC did: the pair
 * degrades now, as lag_work would later, so that neither the abort nor the
 * initiator's retry of the write waits for the target.  An aborted write held
 * for a claim goes to the primary now with its regions dirty, as the write of a
 * COMPARE AND WRITE does, and so does every write to the regions of that claim
 * until it ends (let_go): the retry would wait for it again, until the
 * initiator's error handling gave up on the write and took the device offline.
 * An aborted write waiting for lag room whose regions are claimed is let go the
 * same way: it needs no room past the claim, and the pair need not degrade.
 * Either way the aborted write is written, to the primary (LIO sends no status
 * for it, or TASK ABORTED when another I_T nexus aborted it): an initiator that
 * reads back after an abort finds the data of the write or of its retry, on
 * both legs once a resync carried it over.  Must not block.
 */
void rp_pair_abort_waiters(struct rp_pair *pair)
{
	struct rp_req *req, *tmp;
	bool lag_aborted = false, gave_up = false;
	unsigned long flags;
	LIST_HEAD(released);

	spin_lock_irqsave(&pair->lock, flags);
	list_for_each_entry(req, &pair->held, node)
		if (rp_req_aborted(req))
			__rp_claims_let_go(pair, req);
	/*
	 * An aborted waiter whose regions are claimed is let go as if held:
	 * the primary takes it past the claim, with no lag room.
	 */
	list_for_each_entry_safe(req, tmp, &pair->lag_waiters, node) {
		if (!rp_req_aborted(req))
			continue;
		rp_req_regions(pair, req);
		if (__rp_pair_claimed(pair, req->first_region,
				      req->last_region)) {
			__rp_claims_let_go(pair, req);
			list_move_tail(&req->node, &released);
		} else {
			lag_aborted = true;
		}
	}
	/* An aborted flush promises nothing: rp_pair_flush_after_lag(). */
	list_for_each_entry_safe(req, tmp, &pair->lag_flushes, node) {
		if (!rp_req_aborted(req))
			continue;
		list_del_init(&req->node);
		queue_work(pair->async_wq, &req->work);
	}
	__rp_pair_release_held(pair, &released);
	if (lag_aborted)
		gave_up = __rp_pair_lag_give_up(pair);
	else
		/* The writes behind one let go may fit now. */
		__rp_pair_lag_grant(pair);
	spin_unlock_irqrestore(&pair->lock, flags);
	rp_reqs_resubmit(&released);
	if (gave_up)
		rp_pair_warn_aborted(pair);
}

/*
 * The oldest write waiting for lag room, or flush waiting for the lag to
 * drain, has waited RP_LAG_WAIT_SEC: the pair degrades rather than hold the
 * initiator's commands any longer, and the degrade releases every waiter
 * (__rp_pair_set_state()).  Otherwise the work comes back when the oldest
 * one's time is up.
 */
static void rp_pair_lag_work(struct work_struct *work)
{
	struct rp_pair *pair = container_of(to_delayed_work(work),
					    struct rp_pair, lag_work);
	struct rp_req *oldest, *flush;
	unsigned long deadline;
	bool degraded = false;
	bool by_flush = false;

	spin_lock_irq(&pair->lock);
	oldest = list_first_entry_or_null(&pair->lag_waiters, struct rp_req,
					  node);
	flush = list_first_entry_or_null(&pair->lag_flushes, struct rp_req,
					 node);
	if (flush && (!oldest || time_before(flush->lag_parked_at,
					     oldest->lag_parked_at))) {
		oldest = flush;
		by_flush = true;
	}
	if (oldest) {
		deadline = oldest->lag_parked_at + RP_LAG_WAIT_SEC * HZ;
		if (time_before(jiffies, deadline)) {
			/*
			 * mod_, not queue_: a writer that parked after this
			 * work began armed it for its own, later deadline.
			 */
			mod_delayed_work(rp_wq, &pair->lag_work,
					 deadline - jiffies);
		} else {
			degraded = __rp_pair_lag_give_up(pair);
		}
	}
	spin_unlock_irq(&pair->lock);
	if (degraded && by_flush)
		pr_warn("%s: target %s: copies from before the switch to synchronous still on their way after %d s of a SYNCHRONIZE CACHE; pair degraded\n",
			pair->src->name, pair->tgt_path, RP_LAG_WAIT_SEC);
	else if (degraded)
		pr_warn("%s: target %s: no room within max lag for %d s; pair degraded\n",
			pair->src->name, pair->tgt_path, RP_LAG_WAIT_SEC);
}

static void rp_pair_event_work(struct work_struct *work)
{
	rp_genl_notify_pair(container_of(work, struct rp_pair, event_work));
}

/*
 * The queue of the pair's asynchronous copies and target flushes, as
 * dm-raid1 gives each mirror set its own kmirrord queue.  Their submissions
 * sleep in submit_bio() for as long as the target holds its request tags (a
 * dead iSCSI portal, multipath queue_if_no_path).  On one queue shared by
 * all pairs, 256 items asleep (its max_active), or its one rescuer asleep
 * under memory pressure, held up the copies of pairs whose targets were
 * fine, until their lag filled and they degraded.  Unbound: a copy's
 * submission is not tied to the CPU that queued it.  With a rescuer of its
 * own: the writers waiting for lag room wait for these copies.
 */
static int rp_pair_async_wq_alloc(struct rp_pair *pair)
{
	pair->async_wq = alloc_workqueue("rp_async/%llu",
					 WQ_UNBOUND | WQ_MEM_RECLAIM, 0,
					 pair->serial);
	return pair->async_wq ? 0 : -ENOMEM;
}

static void rp_pair_async_wq_free(struct rp_pair *pair)
{
	if (!pair->async_wq)
		return;
	destroy_workqueue(pair->async_wq);
	pair->async_wq = NULL;
}

/* Frees a pair that is not (or no longer) published. */
void rp_pair_free(struct rp_pair *pair)
{
	/* A published pair's went in rp_pair_quiesce(), unlocked. */
	rp_pair_async_wq_free(pair);
	rp_intent_rebind_free(pair);
	mempool_destroy(pair->page_pool);
	kvfree(pair->uf_old);
	kvfree(pair->uf_new);
	kvfree(pair->redirty);
	kvfree(pair->claimed);
	kvfree(pair->dirty);
	rp_bdev_close(&pair->tgt, pair->pipe);
	if (pair->src)
		rp_dev_put(pair->src);
	kfree(pair);
	atomic_dec(&rp_nr_pairs);
}

static unsigned long *rp_bitmap_alloc(u64 nbits)
{
	return kvcalloc(max_t(u64, BITS_TO_LONGS(nbits), 1),
			sizeof(unsigned long), GFP_KERNEL);
}

static bool rp_spec_keeps(const struct rp_pipe_spec *spec,
			  const struct rp_pair *pair)
{
	unsigned int i;

	for (i = 0; i < spec->nr_pairs; i++)
		if (spec->pairs[i].keep == pair)
			return true;
	return false;
}

/*
 * Whether another pair has @devt as its target once @spec applies to @pipe:
 * a pair of another pipe, a pair of @pipe that @spec keeps, or a new pair
 * made before @ps (the same device under two paths).  A pair of @pipe that
 * @spec replaces gives its target up: *@replaced tells whether one had it
 * (the new pair of @ps takes it over).
 * rp_config_lock held.
 */
static bool rp_target_taken(const struct rp_pipe *pipe,
			    const struct rp_pipe_spec *spec,
			    const struct rp_pair_spec *ps, dev_t devt,
			    bool *replaced)
{
	const struct rp_pair_spec *made;
	struct rp_pipe *p;
	struct rp_pair *pair;

	*replaced = false;
	list_for_each_entry(p, &rp_pipes, node) {
		list_for_each_entry(pair, &p->pairs, node) {
			if (pair->tgt.bdev->bd_dev != devt)
				continue;
			if (p != pipe || rp_spec_keeps(spec, pair))
				return true;
			*replaced = true;
		}
	}
	for (made = spec->pairs; made < ps; made++)
		if (made->made && made->made->tgt.bdev->bd_dev == devt)
			return true;
	return false;
}

static void rp_pair_start_work(struct work_struct *work);
static void rp_pair_probe_work(struct work_struct *work);

/*
 * Opens the endpoints of a new pair of @spec and checks them.  The target is
 * claimed with the pipe as its holder, so that a new pair can take over the
 * target of a pair this PIPE_SET (or an earlier one) removes (both hold it
 * until the removed pair's writes ended, rp_retire.c); rp_target_taken()
 * keeps every other sharing out.  rp_config_lock held.
 */
static int rp_pair_open(struct rp_pair *pair, const struct rp_pipe_spec *spec,
			struct rp_pair_spec *ps, struct netlink_ext_ack *extack)
{
	struct rp_pipe *retired;
	struct rp_pair *other;
	bool replaced;
	dev_t devt;
	int ret;

	pair->src = rp_dev_lookup(ps->src);
	if (IS_ERR(pair->src)) {
		ret = PTR_ERR(pair->src);
		pair->src = NULL;
		if (ret == -ENXIO)
			NL_SET_ERR_MSG_ATTR(extack, ps->src_attr,
					    "source backstore is not enabled");
		else if (ret == -ENODEV)
			NL_SET_ERR_MSG_ATTR(extack, ps->src_attr,
					    "no replipipe backstore of that name");
		else
			NL_SET_ERR_MSG_ATTR(extack, ps->src_attr,
					    "source backstore is going away");
		return ret;
	}
	other = rcu_dereference_protected(pair->src->pair,
					  lockdep_is_held(&rp_config_lock));
	if (other && other->pipe != pair->pipe) {
		NL_SET_ERR_MSG_ATTR(extack, ps->src_attr,
				    "source backstore is already in another pipe");
		return -EBUSY;
	}
	/*
	 * A new pair must see every write in flight on its source (a claim
	 * drains only its own pair's): not while a deleted one's still are.
	 */
	if (pair->src->retiring) {
		NL_SET_ERR_MSG_ATTR(extack, ps->src_attr,
				    "source backstore's removed pair still has writes in flight to its target");
		return -EBUSY;
	}

	ret = lookup_bdev(ps->tgt, &devt);
	if (ret) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "target is not a block device");
		return ret;
	}
	if (devt == pair->src->primary.bdev->bd_dev) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "target is the primary device of its source");
		return -EINVAL;
	}
	if (rp_target_taken(pair->pipe, spec, ps, devt, &replaced)) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "target is already the target of a pair");
		return -EBUSY;
	}
	/* A removed pair's target is held by its pipe until its writes end. */
	retired = rp_retired_target_pipe(devt);
	if (retired && retired != pair->pipe) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "target's removed pair still has writes in flight to it");
		return -EBUSY;
	}
	replaced |= !!retired;
	/*
	 * The replaced pair's last writes may still reach the target after
	 * this pair mirrors to it: only a resync, which claims a region after
	 * they ended (rp_pair_fenced()), makes a region of it clean.
	 */
	if (replaced && ps->assume_clean) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "a target taken over from a replaced pair cannot be assumed clean");
		return -EINVAL;
	}
	ret = rp_bdev_open(&pair->tgt, ps->tgt, pair->pipe);
	if (ret) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "cannot open the target exclusively");
		return ret;
	}
	/*
	 * The checks above looked the path up; the open looked it up again.
	 * A path that names another device now (a udev link or an iSCSI
	 * login changed under us) was not checked: a kept pair of this pipe
	 * may already hold that device, and the pipe's own open of it would
	 * not be refused.
	 */
	if (pair->tgt.bdev->bd_dev != devt) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "the target path changed to another device while it was checked; try again");
		return -EBUSY;
	}
	pair->src_bytes = bdev_nr_bytes(pair->src->primary.bdev);
	if (bdev_nr_bytes(pair->tgt.bdev) < pair->src_bytes) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "target is smaller than the source");
		return -ENOSPC;
	}
	/*
	 * Every write the source takes must be one the target takes: with
	 * bigger blocks every smaller write fails on it and the pair flaps
	 * (dm refuses such a table for the same reason).
	 */
	if (bdev_logical_block_size(pair->tgt.bdev) >
	    bdev_logical_block_size(pair->src->primary.bdev)) {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "target's logical block size is larger than the source's");
		return -EINVAL;
	}
	return 0;
}

static void rp_pair_set_params(struct rp_pair *pair,
			       const struct rp_pipe_spec *spec)
{
	unsigned long flags;

	spin_lock_irqsave(&pair->lock, flags);
	pair->mode = spec->mode;
	pair->policy = spec->policy;
	pair->max_lag_bytes = (u64)spec->max_lag_kib << 10;
	__rp_pair_lag_grant(pair);
	spin_unlock_irqrestore(&pair->lock, flags);
}

static struct rp_pair *rp_pair_create(struct rp_pipe *pipe,
				      const struct rp_pipe_spec *spec,
				      struct rp_pair_spec *ps,
				      struct netlink_ext_ack *extack)
{
	u64 region_bytes = (u64)spec->region_kib << 10;
	struct rp_pair *pair;
	int ret;

	pair = kzalloc(sizeof(*pair), GFP_KERNEL);
	if (!pair) {
		NL_SET_ERR_MSG(extack, "out of memory for the pair");
		return ERR_PTR(-ENOMEM);
	}
	atomic_inc(&rp_nr_pairs);
	pair->serial = atomic64_inc_return(&rp_next_pair_serial);
	pair->pipe = pipe;
	refcount_set(&pair->refs, 1);
	init_completion(&pair->released);
	init_waitqueue_head(&pair->wq);
	INIT_WORK(&pair->probe_work, rp_pair_probe_work);
	init_waitqueue_head(&pair->probe_wq);
	spin_lock_init(&pair->lock);
	pair->inflight = RB_ROOT_CACHED;
	INIT_LIST_HEAD(&pair->held);
	pair->async_tree = RB_ROOT_CACHED;
	INIT_LIST_HEAD(&pair->async_ready);
	INIT_LIST_HEAD(&pair->claims);
	INIT_LIST_HEAD(&pair->lag_waiters);
	INIT_LIST_HEAD(&pair->lag_flushes);
	INIT_WORK(&pair->event_work, rp_pair_event_work);
	INIT_WORK(&pair->async_work, rp_async_work);
	INIT_DELAYED_WORK(&pair->lag_work, rp_pair_lag_work);
	INIT_DELAYED_WORK(&pair->start_work, rp_pair_start_work);
	INIT_WORK(&pair->retire_work, rp_retire_work);
	strscpy(pair->tgt_path, ps->tgt, sizeof(pair->tgt_path));

	ret = rp_pair_open(pair, spec, ps, extack);
	if (ret)
		goto free_pair;

	pair->region_sect_shift = ilog2(region_bytes) - SECTOR_SHIFT;
	pair->nr_regions = DIV_ROUND_UP_ULL(pair->src_bytes, region_bytes);
	/*
	 * bitmap_set() takes its count as an int (__bitmap_set()): setting
	 * 2^31 bits or more at once sets none but the first word's, which
	 * would leave a new pair's regions clean that were never copied.
	 */
	if (pair->nr_regions > INT_MAX) {
		NL_SET_ERR_MSG_ATTR(extack, spec->region_attr,
				    "the source has more than 2^31 - 1 regions of that size: choose a larger region size");
		ret = -EINVAL;
		goto free_pair;
	}
	while (DIV_ROUND_UP_ULL(pair->nr_regions, 1ULL << pair->uf_shift) >
	       RP_UNFLUSHED_MAX_BITS)
		pair->uf_shift++;
	pair->uf_nbits = DIV_ROUND_UP_ULL(pair->nr_regions,
					  1ULL << pair->uf_shift);
	pair->dirty = rp_bitmap_alloc(pair->nr_regions);
	pair->claimed = rp_bitmap_alloc(pair->nr_regions);
	pair->redirty = rp_bitmap_alloc(pair->nr_regions);
	pair->uf_new = rp_bitmap_alloc(pair->uf_nbits);
	pair->uf_old = rp_bitmap_alloc(pair->uf_nbits);
	pair->page_pool = mempool_create_page_pool(RP_ASYNC_RESERVE_PAGES, 0);
	if (!pair->dirty || !pair->claimed || !pair->redirty ||
	    !pair->uf_new || !pair->uf_old || !pair->page_pool) {
		NL_SET_ERR_MSG(extack, "out of memory for the pair's bitmaps");
		ret = -ENOMEM;
		goto free_pair;
	}

	if (pair->src->intent) {
		/*
		 * The record decides: its bits, or every region.  A new
		 * binding is only prepared here: rp_pairs_commit() writes it.
		 */
		ret = rp_intent_bind(pair->src->intent, pair, spec->region_kib,
				     ps->assume_clean, extack);
		if (ret)
			goto free_pair;
		pair->nr_dirty = bitmap_weight(pair->dirty, pair->nr_regions);
	} else if (!ps->assume_clean) {
		bitmap_set(pair->dirty, 0, pair->nr_regions);
		pair->nr_dirty = pair->nr_regions;
	}
	/* Last: a pair refused above makes no thread. */
	ret = rp_pair_async_wq_alloc(pair);
	if (ret) {
		NL_SET_ERR_MSG(extack, "out of memory for the pair's copy queue");
		goto free_pair;
	}
	pair->state = pair->nr_dirty ? REPLIPIPE_PAIR_SYNCING :
				       REPLIPIPE_PAIR_INSYNC;
	rp_pair_set_params(pair, spec);
	return pair;

free_pair:
	rp_pair_free(pair);
	return ERR_PTR(ret);
}

static struct rp_claim *__rp_claim_find(struct rp_pair *pair, u64 id)
{
	struct rp_claim *claim;

	list_for_each_entry(claim, &pair->claims, node)
		if (claim->id == id)
			return claim;
	return NULL;
}

/* Counts a claim of @portid in rp_claim_owners.  Process context. */
static int rp_claim_owner_get(u32 portid)
{
	void *old, *cur;

	xa_lock_irq(&rp_claim_owners);
	/*
	 * __xa_cmpxchg() may drop the lock to allocate a node (GFP_KERNEL is
	 * fine here); it compares again once it has it back.  Another claim
	 * of the same port (the family is parallel_ops) may have counted
	 * meanwhile: then count again from its value, or one count is lost
	 * and the port's last claim goes uncounted.
	 */
	do {
		old = xa_load(&rp_claim_owners, portid);
		cur = __xa_cmpxchg(&rp_claim_owners, portid, old,
				   xa_mk_value(old ? xa_to_value(old) + 1 : 1),
				   GFP_KERNEL);
	} while (!xa_is_err(cur) && cur != old);
	xa_unlock_irq(&rp_claim_owners);
	return xa_err(cur);
}

/* Uncounts a claim of @portid.  Any context; never allocates. */
static void rp_claim_owner_put(u32 portid)
{
	unsigned long flags, n;
	void *old;

	xa_lock_irqsave(&rp_claim_owners, flags);
	old = xa_load(&rp_claim_owners, portid);
	n = old ? xa_to_value(old) : 0;
	if (WARN_ON_ONCE(!n) || n == 1)
		__xa_erase(&rp_claim_owners, portid);
	else	/* replaces the entry in its slot: no allocation */
		__xa_store(&rp_claim_owners, portid, xa_mk_value(n - 1),
			   GFP_NOWAIT);
	xa_unlock_irqrestore(&rp_claim_owners, flags);
}

static void rp_claim_free(struct rp_claim *claim)
{
	list_del(&claim->node);
	claim->pair->nr_claims--;
	rp_claim_owner_put(claim->portid);
	kfree(claim);
	atomic_dec(&rp_nr_claims);
}

/*
 * Ends a claim: clears its bits and moves the held writes it no longer
 * covers to @released.  pair->lock held; @claim is freed.  Whoever finds a
 * claim on pair->claims finishes it under the same hold of pair->lock, so
 * each claim ends once.
 */
static void __rp_claim_finish(struct rp_claim *claim, bool done,
			      struct list_head *released)
{
	struct rp_pair *pair = claim->pair;
	u64 i, end = claim->first + claim->count;

	lockdep_assert_held(&pair->lock);
	for (i = claim->first; i < end; i++) {
		if (done && !test_bit(i, pair->redirty) &&
		    __test_and_clear_bit(i, pair->dirty))
			pair->nr_dirty--;
		__clear_bit(i, pair->claimed);
		__clear_bit(i, pair->redirty);
	}
	rp_claim_free(claim);
	if (!pair->nr_dirty && pair->state == REPLIPIPE_PAIR_SYNCING)
		__rp_pair_set_state(pair, REPLIPIPE_PAIR_INSYNC);
	__rp_pair_release_held(pair, released);
}

/*
 * Drops claim @id of @pair if it is still there.  Needs a pair reference,
 * not rp_config_lock (rp_claim_advance() waits without it).
 */
void rp_claim_abort(struct rp_pair *pair, u64 id)
{
	struct rp_claim *claim;
	LIST_HEAD(released);

	spin_lock_irq(&pair->lock);
	claim = __rp_claim_find(pair, id);
	if (claim)
		__rp_claim_finish(claim, false, &released);
	spin_unlock_irq(&pair->lock);
	rp_reqs_resubmit(&released);
}

/* Stops the data path using @pair.  rp_config_lock held. */
static void rp_pair_unpublish(struct rp_pair *pair)
{
	struct rp_pair *cur;

	cur = rcu_dereference_protected(pair->src->pair,
					lockdep_is_held(&rp_config_lock));
	if (cur == pair)
		RCU_INIT_POINTER(pair->src->pair, NULL);
	list_del(&pair->node);
	pair->pipe->nr_pairs--;
}

/*
 * Stops an unpublished pair after an RCU grace period: held writes and writes
 * waiting for lag room are routed again on the source's current pair
 * (rp_req_repoint()), flushes waiting for the lag go on the primary's,
 * claims are dropped, and the publisher's reference goes.  What is left are
 * the writes in flight, each holding a reference until its I/O ends
 * (pair->released).  May block.
 */
void rp_pair_kill(struct rp_pair *pair)
{
	struct rp_claim *claim, *ctmp;
	struct rp_req *req, *tmp;
	LIST_HEAD(held);

	spin_lock_irq(&pair->lock);
	pair->dead = true;
	list_splice_init(&pair->held, &held);
	list_for_each_entry_safe(claim, ctmp, &pair->claims, node)
		rp_claim_free(claim);
	__rp_pair_lag_grant(pair);
	spin_unlock_irq(&pair->lock);
	wake_up_all(&pair->wq);

	list_for_each_entry_safe(req, tmp, &held, node) {
		list_del_init(&req->node);
		rp_req_resubmit(req);
	}

	rp_pair_put(pair);
}

/*
 * Stops what may still run for a killed pair whose writes have all ended,
 * and lets its write-intent record forget what the pair no longer needs:
 * rp_pair_free() is all that is left.  Without rp_config_lock: a record's
 * flush of the target may take until @flush_by (jiffies), which the pairs
 * of one removal share.  May block.
 */
void rp_pair_quiesce(struct rp_pair *pair, unsigned long flush_by)
{
	cancel_delayed_work_sync(&pair->start_work);
	flush_work(&pair->async_work);
	cancel_work_sync(&pair->event_work);
	/* Nothing parks on a dead pair: no waiter is left for it. */
	cancel_delayed_work_sync(&pair->lag_work);
	WARN_ON_ONCE(pair->lag_bytes);
	WARN_ON_ONCE(!list_empty(&pair->lag_flushes));
	/*
	 * async_work was flushed above; a target flush's work item held a
	 * reference until its last step: only its return can be left to
	 * wait for.
	 */
	rp_pair_async_wq_free(pair);
	/* Drained: the record can keep exactly what is still dirty. */
	if (pair->src->intent)
		rp_intent_pair_gone(pair->src->intent, pair, flush_by);
}

/*
 * Starts a published pair whose source has no write in flight that found no
 * pair: gives a pair with a write-intent record what those writes marked on
 * it, and lets claims in.  rp_config_lock held.
 */
static void rp_pair_start(struct rp_pair *pair)
{
	lockdep_assert_held(&rp_config_lock);
	if (pair->src->intent)
		rp_intent_pair_start(pair->src->intent, pair);
	if (pair->start_pending) {
		WRITE_ONCE(pair->start_pending, false);
		/* What those writes marked is on the pair now (rp_pairs_start()). */
		spin_lock_irq(&pair->lock);
		if (!pair->nr_dirty && pair->state == REPLIPIPE_PAIR_SYNCING)
			__rp_pair_set_state(pair, REPLIPIPE_PAIR_INSYNC);
		spin_unlock_irq(&pair->lock);
		wake_up_all(&pair->wq);
		pr_info("%s: the writes from before pair %s -> %s ended; it is started\n",
			pair->src->name, pair->pipe->id, pair->tgt_path);
	}
}

/* How often a pair waiting to start looks at its source's untracked writes. */
#define RP_START_POLL	(HZ / 10)

/*
 * A pair whose start PIPE_SET left pending: started once the writes that
 * found no pair on its source ended.  Polls: those writes may be queued for
 * hours (a multipath device without paths), and the pair's removal cancels
 * this (rp_pair_quiesce()) without waiting for them.  On system_wq: it takes
 * rp_config_lock (rp_claim_reaper() says why not rp_wq).
 */
static void rp_pair_start_work(struct work_struct *work)
{
	struct rp_pair *pair = container_of(to_delayed_work(work),
					    struct rp_pair, start_work);

	if (atomic_read(&pair->src->untracked)) {
		queue_delayed_work(system_wq, &pair->start_work,
				   RP_START_POLL);
		return;
	}
	mutex_lock(&rp_config_lock);
	/* A pair killed meanwhile is unpublished: nothing to start. */
	if (pair->start_pending && !pair->dead)
		rp_pair_start(pair);
	mutex_unlock(&rp_config_lock);
}

/*
 * Starts the pairs PIPE_SET published.  A claim drains only tracked writes,
 * so none may be in flight untracked on the source when the first claim is
 * granted, and a write-intent record's marks of those writes are in only
 * once they ended: this waits for them, RP_START_WAIT_MS at most for all
 * the pairs together.  No longer: it holds rp_config_lock, which every
 * netlink command of the family and the claim reaper take, and generic
 * netlink's cb_lock, which every family's requests share and a module that
 * registers a family takes for writing; a source that queues I/O
 * (multipath with no path, a suspended dm device) holds such writes for as
 * long as it likes.  A pair whose source still has them starts later
 * (rp_pair_start_work()); its claims wait for that (rp_claim_advance()).
 * rp_config_lock held.
 */
static void rp_pairs_start(struct rp_pipe_spec *spec)
{
	unsigned long deadline;
	unsigned int i;

	synchronize_rcu();
	deadline = jiffies + msecs_to_jiffies(RP_START_WAIT_MS);
	for (i = 0; i < spec->nr_pairs; i++) {
		struct rp_dev *dev = spec->pairs[i].keep ? NULL :
				     spec->pairs[i].made_src;
		struct rp_pair *pair;
		long left;

		if (!dev)
			continue;
		pair = rcu_dereference_protected(dev->pair,
				lockdep_is_held(&rp_config_lock));
		left = time_after(deadline, jiffies) ? deadline - jiffies : 0;
		if (!wait_event_timeout(dev->untracked_wq,
					!atomic_read(&dev->untracked), left)) {
			pr_warn("%s: writes from before pair %s -> %s still in flight after %u ms; it starts when they end\n",
				dev->name, pair->pipe->id, pair->tgt_path,
				RP_START_WAIT_MS);
			WRITE_ONCE(pair->start_pending, true);
			/*
			 * A record's marks of those writes reach the pair only
			 * at its start: a pair loaded clean, or made clean,
			 * is not InSync until then.
			 */
			spin_lock_irq(&pair->lock);
			if (pair->state == REPLIPIPE_PAIR_INSYNC)
				__rp_pair_set_state(pair,
						    REPLIPIPE_PAIR_SYNCING);
			spin_unlock_irq(&pair->lock);
			/* Not on rp_wq: see rp_claim_reaper(). */
			queue_delayed_work(system_wq, &pair->start_work,
					   RP_START_POLL);
			continue;
		}
		rp_pair_start(pair);
	}
}

struct rp_pipe *rp_pipe_find(const char *id)
{
	struct rp_pipe *pipe;

	lockdep_assert_held(&rp_config_lock);
	list_for_each_entry(pipe, &rp_pipes, node)
		if (!strcmp(pipe->id, id))
			return pipe;
	return NULL;
}

/* The pair whose source is @source, in any pipe.  rp_config_lock held. */
struct rp_pair *rp_pair_find(const char *source)
{
	struct rp_pipe *pipe;
	struct rp_pair *pair;

	lockdep_assert_held(&rp_config_lock);
	list_for_each_entry(pipe, &rp_pipes, node)
		list_for_each_entry(pair, &pipe->pairs, node)
			if (!strcmp(pair->src->name, source))
				return pair;
	return NULL;
}

static struct rp_pair *rp_pipe_pair_by_source(struct rp_pipe *pipe,
					      const char *source)
{
	struct rp_pair *pair;

	if (!pipe)
		return NULL;
	list_for_each_entry(pair, &pipe->pairs, node)
		if (!strcmp(pair->src->name, source))
			return pair;
	return NULL;
}

/* Rejects a source or target given twice in one request. */
static int rp_spec_check_dups(struct rp_pipe_spec *spec,
			      struct netlink_ext_ack *extack)
{
	unsigned int i, j;

	for (i = 0; i < spec->nr_pairs; i++) {
		for (j = 0; j < i; j++) {
			if (!strcmp(spec->pairs[i].src, spec->pairs[j].src)) {
				NL_SET_ERR_MSG_ATTR(extack,
						    spec->pairs[i].src_attr,
						    "source given in two pairs");
				return -EINVAL;
			}
			if (!strcmp(spec->pairs[i].tgt, spec->pairs[j].tgt)) {
				NL_SET_ERR_MSG_ATTR(extack,
						    spec->pairs[i].tgt_attr,
						    "target given in two pairs");
				return -EINVAL;
			}
		}
	}
	return 0;
}

static struct rp_pipe *rp_pipe_alloc(const struct rp_pipe_spec *spec)
{
	struct rp_pipe *pipe;

	pipe = kzalloc(sizeof(*pipe), GFP_KERNEL);
	if (!pipe)
		return NULL;
	if (!try_module_get(THIS_MODULE)) {
		kfree(pipe);
		return NULL;
	}
	strscpy(pipe->id, spec->id, sizeof(pipe->id));
	INIT_LIST_HEAD(&pipe->pairs);
	atomic_inc(&rp_nr_pipes);
	return pipe;
}

void rp_pipe_free(struct rp_pipe *pipe)
{
	kfree(pipe);
	atomic_dec(&rp_nr_pipes);
	module_put(THIS_MODULE);
}

/* Checks what cannot be checked per pair.  rp_config_lock held. */
static int rp_pipe_set_check(struct rp_pipe *pipe, struct rp_pipe_spec *spec,
			     struct netlink_ext_ack *extack)
{
	bool keeps = false;
	unsigned int i;
	int ret;

	ret = rp_spec_check_dups(spec, extack);
	if (ret)
		return ret;
	for (i = 0; i < spec->nr_pairs; i++) {
		struct rp_pair_spec *ps = &spec->pairs[i];
		struct rp_pair *old = rp_pipe_pair_by_source(pipe, ps->src);

		ps->keep = old && !strcmp(old->tgt_path, ps->tgt) ? old : NULL;
		keeps |= !!ps->keep;
	}
	if (keeps && spec->region_kib != pipe->region_kib) {
		NL_SET_ERR_MSG_ATTR(extack, spec->region_attr,
				    "region size cannot change while the pipe keeps pairs");
		return -EINVAL;
	}
	return 0;
}

/*
 * The last steps of a PIPE_SET that can fail, after every pair is made.
 * First the devices of the records it would write must answer, each
 * before any is written: those bound anew (rp_intent_probe()) and those
 * the new pairs' targets invalidate (rp_intent_target_probe(); a record
 * listed between that and its invalidation, by a backstore enabled
 * meanwhile, has just been read whole).  Then no other backstore's record
 * may still vouch for a target a new pair takes
 * (rp_intent_target_taken()): not before, so that a PIPE_SET refused for
 * a pair of its own makes no record forget its target (one forgotten
 * marks nothing from then on; a record invalidated here before a later
 * one fails to be stays so: a full resync, never a stale load).
 * Then the write-intent records that new pairs bind anew are written.  If
 * one cannot be written, those written before get their old binding back,
 * so that a PIPE_SET that fails leaves every source's own record as it was
 * (a pair it keeps running still clears it; a binding it asked to assume
 * clean is not there for a later PIPE_SET to load).  rp_config_lock held.
 */
static int rp_pairs_commit(struct rp_pipe_spec *spec,
			   struct netlink_ext_ack *extack)
{
	struct rp_pair *pair;
	unsigned int i, n;
	int ret = 0;

	for (n = 0; n < spec->nr_pairs; n++) {
		pair = spec->pairs[n].made;
		if (pair && pair->intent_rebind)
			ret = rp_intent_probe(pair->src->intent, false, extack);
		if (!ret && pair)
			ret = rp_intent_target_probe(pair, extack);
		if (ret)
			return ret;
	}
	for (n = 0; n < spec->nr_pairs; n++) {
		pair = spec->pairs[n].made;
		if (pair) {
			ret = rp_intent_target_taken(pair, extack);
			if (ret)
				return ret;
		}
	}
	for (n = 0; n < spec->nr_pairs && !ret; n++) {
		pair = spec->pairs[n].made;
		if (pair && pair->intent_rebind)
			ret = rp_intent_commit(pair, extack);
	}
	/* Each record committed (the failed one too) is frozen until now. */
	for (i = 0; i < n; i++) {
		pair = spec->pairs[i].made;
		if (pair && pair->intent_rebind)
			rp_intent_settle(pair, !ret);
	}
	return ret;
}

/*
 * PIPE_SET: create the pipe @spec->id or replace its definition.  Either
 * everything is applied or nothing changes.  *@created tells which.
 * ORDER: every pair is made (targets open, bitmaps allocated), then the
 * write-intent records they bind anew are written, before any is
 * published; removed pairs are unpublished before new pairs of the same
 * source are published, and their writes in flight are waited for once
 * rp_config_lock is dropped (rp_pairs_reap()).
 */
int rp_pipe_set(struct rp_pipe_spec *spec, struct netlink_ext_ack *extack,
		bool *created)
{
	struct rp_pipe *pipe, *new_pipe = NULL;
	struct rp_pair *pair, *tmp;
	bool new_pairs = false;
	LIST_HEAD(removed);
	unsigned int i;
	int ret;

	mutex_lock(&rp_config_lock);
	pipe = rp_pipe_find(spec->id);
	if (!pipe) {
		new_pipe = rp_pipe_alloc(spec);
		if (!new_pipe) {
			NL_SET_ERR_MSG(extack, "cannot create the pipe (out of memory, or the module is going away)");
			ret = -ENOMEM;
			goto unlock;
		}
		pipe = new_pipe;
		pipe->region_kib = spec->region_kib;
	}

	ret = rp_pipe_set_check(pipe, spec, extack);
	if (ret)
		goto free_pipe;

	for (i = 0; i < spec->nr_pairs; i++) {
		struct rp_pair_spec *ps = &spec->pairs[i];

		if (ps->keep)
			continue;
		ps->made = rp_pair_create(pipe, spec, ps, extack);
		if (IS_ERR(ps->made)) {
			ret = PTR_ERR(ps->made);
			ps->made = NULL;
			goto free_made;
		}
	}
	ret = rp_pairs_commit(spec, extack);
	if (ret)
		goto free_made;

	/* Nothing fails from here on. */
	list_for_each_entry_safe(pair, tmp, &pipe->pairs, node) {
		if (!rp_spec_keeps(spec, pair)) {
			rp_pair_unpublish(pair);
			list_add_tail(&pair->node, &removed);
		}
	}
	strscpy(pipe->name, spec->name, sizeof(pipe->name));
	pipe->mode = spec->mode;
	pipe->policy = spec->policy;
	pipe->max_lag_kib = spec->max_lag_kib;
	pipe->region_kib = spec->region_kib;
	for (i = 0; i < spec->nr_pairs; i++) {
		struct rp_pair_spec *ps = &spec->pairs[i];

		if (ps->keep) {
			rp_pair_set_params(ps->keep, spec);
			continue;
		}
		list_add_tail(&ps->made->node, &pipe->pairs);
		pipe->nr_pairs++;
		rcu_assign_pointer(ps->made->src->pair, ps->made);
		ps->made_src = ps->made->src;
		ps->made = NULL;
		new_pairs = true;
	}
	if (new_pipe) {
		list_add_tail(&pipe->node, &rp_pipes);
		rp_pipes_gen++;
	}

	rp_pairs_retire(&removed);
	if (new_pairs)
		rp_pairs_start(spec);
	rp_genl_notify_pipe(pipe, new_pipe ? REPLIPIPE_CMD_EVT_PIPE_ADDED :
					     REPLIPIPE_CMD_EVT_PIPE_CHANGED);
	*created = !!new_pipe;
	mutex_unlock(&rp_config_lock);
	rp_pairs_reap(&removed, RP_DRAIN_WAIT_SEC * HZ);
	return 0;

free_made:
	for (i = 0; i < spec->nr_pairs; i++)
		if (spec->pairs[i].made)
			rp_pair_free(spec->pairs[i].made);
free_pipe:
	if (new_pipe)
		rp_pipe_free(new_pipe);
unlock:
	mutex_unlock(&rp_config_lock);
	return ret;
}

/*
 * Takes @pipe off rp_pipes and retires its pairs onto @batch, for
 * rp_pairs_reap() once rp_config_lock is dropped.  The pipe is freed with
 * its last removed pair (rp_retire.c), or now if it has none.
 * rp_config_lock held.
 */
static void rp_pipe_unlink(struct rp_pipe *pipe, struct list_head *batch)
{
	struct rp_pair *pair, *tmp;

	list_for_each_entry_safe(pair, tmp, &pipe->pairs, node) {
		rp_pair_unpublish(pair);
		list_add_tail(&pair->node, batch);
	}
	list_del(&pipe->node);
	pipe->deleted = true;
	rp_pipes_gen++;
	/* Killed first: no state event of its pairs follows this one. */
	rp_pairs_retire(batch);
	rp_genl_notify_pipe(pipe, REPLIPIPE_CMD_EVT_PIPE_DELETED);
	if (!pipe->nr_retired)
		rp_pipe_free(pipe);
}

/*
 * The writes in flight are waited for outside rp_config_lock, and at most
 * RP_DRAIN_WAIT_SEC: a target that holds one must not hold every other
 * netlink command (and the daemon) with it.  Past the bound the pipe is
 * gone all the same and its pairs are freed when the writes end; until
 * then their sources and targets stay taken (rp_retire.c).
 */
int rp_pipe_del(const char *id, struct netlink_ext_ack *extack)
{
	struct rp_pipe *pipe;
	LIST_HEAD(batch);

	mutex_lock(&rp_config_lock);
	pipe = rp_pipe_find(id);
	if (!pipe) {
		mutex_unlock(&rp_config_lock);
		NL_SET_ERR_MSG(extack, "no pipe with that id");
		return -ENOENT;
	}
	rp_pipe_unlink(pipe, &batch);
	mutex_unlock(&rp_config_lock);

	/* @pipe may be freed by now: @id names it. */
	if (rp_pairs_reap(&batch, RP_DRAIN_WAIT_SEC * HZ))
		pr_warn("pipe %s deleted; writes to its targets still in flight after %d s: they are closed when those end\n",
			id, RP_DRAIN_WAIT_SEC);
	return 0;
}

/*
 * A probe of a device (rp_probe_device(): a pair's target, a write-intent
 * record's device) or a flush of a target.  A target that queues I/O
 * rather than failing it (an iSCSI session in recovery, multipath with
 * queue_if_no_path, a suspended dm device, NBD without a timeout) may hold a
 * probe bio for as long as it likes, so the prober waits at most
 * RP_PROBE_TIMEOUT_SEC and then abandons the probe: the bio in flight owns
 * it from then on and frees it when it ends, whenever that is.  Who frees
 * is decided under probe->lock: the prober if the bio ended first, else the
 * bio's end_io (through a work item).
 *
 * The bio must not depend on the pair: a PIPE_DEL may destroy the pair (and
 * close its exclusive open of the target) while the bio is still queued,
 * and must not wait for it; nor on a record's backstore, which may go.
 * The probe therefore opens the device's dev_t itself, without claiming
 * it: that open keeps the block_device and its gendisk alive (and a dm
 * device from being removed) for as long as a bio whose bi_bdev points at
 * it may still be completed; the block layer holds no reference of its
 * own for a bio.  An abandoned probe releases it from a
 * work item: blkdev_put() takes the disk's open_mutex and may sleep, and
 * bi_end_io runs in atomic context.  It also holds a module reference until
 * then (rmmod is refused while such a bio is queued), so the work item's
 * code stays; rp_wq, destroyed at module exit, has run it by then.
 */
struct rp_probe {
	struct rp_bdev		rb;	/* own, shared open of the device */
	struct page		*page;	/* the read's buffer */
	struct completion	done;	/* the bio ended (not abandoned) */
	struct work_struct	release_work;
	spinlock_t		lock;	/* the three below */
	bool			in_flight;
	bool			abandoned;
	int			status;	/* of the bio that ended */
};

static void rp_probe_free(struct rp_probe *probe)
{
	rp_bdev_close_shared(&probe->rb);
	if (probe->page)
		__free_page(probe->page);
	kfree(probe);
}

/* An abandoned probe's bio ended. */
static void rp_probe_release(struct work_struct *work)
{
	rp_probe_free(container_of(work, struct rp_probe, release_work));
	module_put(THIS_MODULE);
}

/* bi_end_io of a probe bio: atomic context, must not sleep. */
static void rp_probe_end_io(struct bio *bio)
{
	struct rp_probe *probe = bio->bi_private;
	unsigned long flags;
	bool abandoned;
	int status;

	/* The debug tier: a device whose own timeout ended the bio. */
	if (rp_fail_probe_timeout())
		bio->bi_status = BLK_STS_TIMEOUT;
	status = blk_status_to_errno(bio->bi_status);
	bio_put(bio);
	spin_lock_irqsave(&probe->lock, flags);
	probe->in_flight = false;
	probe->status = status;
	abandoned = probe->abandoned;
	if (!abandoned)
		complete(&probe->done);
	/* Not abandoned: the prober may free the probe once this unlocks. */
	spin_unlock_irqrestore(&probe->lock, flags);
	if (abandoned)
		queue_work(rp_wq, &probe->release_work);
}

/* Submits one probe bio (@opf; with the probe's page if @len). */
static void rp_probe_submit(struct rp_probe *probe, blk_opf_t opf,
			    unsigned int len)
{
	struct bio *bio;

	bio = bio_alloc(probe->rb.bdev, len ? 1 : 0, opf, GFP_KERNEL);
	bio->bi_iter.bi_sector = 0;
	if (len)
		__bio_add_page(bio, probe->page, len, 0);
	bio->bi_private = probe;
	bio->bi_end_io = rp_probe_end_io;
	reinit_completion(&probe->done);
	probe->in_flight = true;
	submit_bio(bio);
}

/*
 * The wait for the probe's bio is over: returns its result, or -ETIMEDOUT if
 * it has not ended: the probe is then abandoned to the bio (*@abandoned) and
 * the caller must not touch it again.  A bio that ended may have failed
 * with -ETIMEDOUT too (BLK_STS_TIMEOUT: the device's own timeout): the
 * probe is then still the caller's, to free.
 */
static int rp_probe_end_wait(struct rp_probe *probe, bool *abandoned)
{
	*abandoned = false;
	spin_lock_irq(&probe->lock);
	if (probe->in_flight) {
		probe->abandoned = true;
		*abandoned = true;
		/*
		 * The caller pins the module: it holds a pair reference
		 * (the pair pins its source backstore until freed) or a
		 * backstore's record, and LIO holds the backend's module
		 * while the backstore's HBA exists.
		 */
		__module_get(THIS_MODULE);
		spin_unlock_irq(&probe->lock);
		return -ETIMEDOUT;
	}
	spin_unlock_irq(&probe->lock);
	return probe->status;
}

/*
 * Waits for the probe's bio until @deadline (a jiffy at least), or until
 * *@stop (if @stop) is set: it is looked at once a second.  Then
 * rp_probe_end_wait().
 */
static int rp_probe_wait(struct rp_probe *probe, unsigned long deadline,
			 const bool *stop, bool *abandoned)
{
	long left;

	do {
		if (stop && READ_ONCE(*stop))
			break;
		left = clamp_t(long, (long)(deadline - jiffies), 1, HZ);
		if (wait_for_completion_timeout(&probe->done, left))
			break;
	} while (time_before(jiffies, deadline));
	return rp_probe_end_wait(probe, abandoned);
}

/* rp_probe_submit(), then rp_probe_wait() until @deadline. */
static int rp_probe_bio(struct rp_probe *probe, blk_opf_t opf,
			unsigned int len, unsigned long deadline,
			bool *abandoned)
{
	rp_probe_submit(probe, opf, len);
	return rp_probe_wait(probe, deadline, NULL, abandoned);
}

/*
 * A probe of the device @devt, with a page for a read if @page.  The caller
 * keeps its own open of @devt meanwhile (a pair reference, the pair's open
 * of its target; a record's open), which makes the dev_t valid.
 */
static struct rp_probe *rp_probe_create(dev_t devt, bool page)
{
	struct rp_probe *probe;
	int ret;

	probe = kzalloc(sizeof(*probe), GFP_KERNEL);
	if (!probe)
		return ERR_PTR(-ENOMEM);
	init_completion(&probe->done);
	INIT_WORK(&probe->release_work, rp_probe_release);
	spin_lock_init(&probe->lock);
	if (page) {
		probe->page = alloc_page(GFP_KERNEL);
		if (!probe->page) {
			ret = -ENOMEM;
			goto free;
		}
	}
	ret = rp_bdev_open_shared(&probe->rb, devt);
	if (ret)
		goto free;
	return probe;
free:
	rp_probe_free(probe);
	return ERR_PTR(ret);
}

/*
 * Checks that the block device @devt answers one read of its first block,
 * then a cache flush (an empty REQ_PREFLUSH write), both within
 * RP_PROBE_TIMEOUT_SEC: a pair's target before it resumes, a record before
 * a PIPE_SET, which holds locks every command needs, writes to it without
 * a bound.  The caller keeps @devt open.  0, -ETIMEDOUT (*@abandoned: it
 * did not answer in time, the bio owns the probe), or the error of the
 * probe's open (*@opened false, if @opened) or of a bio.  May block.
 */
int rp_probe_device(dev_t devt, bool *opened, bool *abandoned)
{
	unsigned long deadline = jiffies + RP_PROBE_TIMEOUT_SEC * HZ;
	struct rp_probe *probe;
	unsigned int len;
	int ret;

	*abandoned = false;
	probe = rp_probe_create(devt, true);
	if (opened)
		*opened = !IS_ERR(probe);
	if (IS_ERR(probe))
		return PTR_ERR(probe);
	len = min_t(unsigned int, PAGE_SIZE,
		    bdev_logical_block_size(probe->rb.bdev));
	ret = rp_probe_bio(probe, REQ_OP_READ | REQ_SYNC, len, deadline,
			   abandoned);
	if (!ret)
		ret = rp_probe_bio(probe, REQ_OP_WRITE | REQ_PREFLUSH | REQ_SYNC,
				   0, deadline, abandoned);
	if (!*abandoned)
		rp_probe_free(probe);
	return ret;
}

/*
 * Checks that the target of a pair that is not mirroring answers again: one
 * read of its first block, then a cache flush (an empty REQ_PREFLUSH write),
 * both within RP_PROBE_TIMEOUT_SEC (rp_probe_device()).  The caller holds a
 * pair reference, not rp_config_lock; it keeps that reference for at most
 * the bound, and the bios do not need it.  May block.
 */
static int rp_pair_probe_target(struct rp_pair *pair,
				struct netlink_ext_ack *extack)
{
	bool opened, abandoned;
	int ret;

	ret = rp_probe_device(pair->tgt.bdev->bd_dev, &opened, &abandoned);
	if (!opened) {
		if (ret == -ENOMEM)
			NL_SET_ERR_MSG(extack, "out of memory for the target's probe");
		else
			NL_SET_ERR_MSG(extack,
				       "cannot open the target for the probe");
		return ret;
	}
	if (abandoned) {
		NL_SET_ERR_MSG(extack,
			       "the target did not answer within "
			       __stringify(RP_PROBE_TIMEOUT_SEC)
			       " s (probe read or flush); the pair stays as it is");
	} else if (ret) {
		NL_SET_ERR_MSG(extack,
			       "the target does not answer (probe read or flush failed); the pair stays as it is");
	}
	if (ret)
		pr_info("%s: target %s does not answer yet (%d); stays %s\n",
			pair->src->name, pair->tgt_path, ret,
			rp_pair_state_name(READ_ONCE(pair->state)));
	return ret;
}

/*
 * Flushes of the target for a write-intent record, through a probe: a
 * target that queues I/O instead of failing it (multipath queue_if_no_path,
 * an iSCSI session in recovery, a suspended dm device) must not hold the
 * waiter, a pair's removal among them.  Past its bound
 * a flush is abandoned to its bio and -ETIMEDOUT returned; the caller then
 * keeps what the flush was for (marked chunks).  The flush's bio holds the
 * probe's own open of the target, not the pair: once started, it needs no
 * pair reference.  Callers pin the module (rp_probe_end_wait()).
 *
 * rp_pair_flush_target_start() starts one; the caller holds a pair
 * reference, and passes *@gen to rp_pair_flush_done() if the flush
 * succeeded and the pair is still the one it started it for.  May block.
 */
struct rp_probe *rp_pair_flush_target_start(struct rp_pair *pair, u64 *gen)
{
	struct rp_probe *probe;

	probe = rp_probe_create(pair->tgt.bdev->bd_dev, false);
	if (IS_ERR(probe))
		return probe;
	*gen = rp_pair_flush_begin(pair);
	rp_probe_submit(probe, REQ_OP_WRITE | REQ_PREFLUSH | REQ_SYNC, 0);
	return probe;
}

/*
 * Waits at most @timeout_sec for a flush started above, or until *@stop (if
 * @stop) is set: it is looked at once a second.  Then ends the flush:
 * -ETIMEDOUT with *@abandoned set if it has not ended (the target queues
 * it), else its result.
 */
int rp_pair_flush_target_wait(struct rp_probe *probe, unsigned int timeout_sec,
			      const bool *stop, bool *abandoned)
{
	int ret;

	ret = rp_probe_wait(probe, jiffies + timeout_sec * HZ, stop, abandoned);
	if (!*abandoned)	/* else the probe is the bio's now */
		rp_probe_free(probe);
	return ret;
}

/*
 * Flushes the target by @deadline (jiffies), holding the caller's pair
 * reference throughout; once it succeeded, what was unflushed before it is
 * not any more (rp_pair_flush_done()).  May block.
 */
int rp_pair_flush_target(struct rp_pair *pair, unsigned long deadline)
{
	struct rp_probe *probe;
	bool abandoned;
	u64 gen;
	int ret;

	probe = rp_pair_flush_target_start(pair, &gen);
	if (IS_ERR(probe))
		return PTR_ERR(probe);
	ret = rp_probe_wait(probe, deadline, NULL, &abandoned);
	if (!abandoned)		/* else the probe is the bio's now */
		rp_probe_free(probe);
	if (!ret)
		rp_pair_flush_done(pair, gen);
	return ret;
}

/* PAIR_SET Paused.  The caller holds a pair reference. */
int rp_pair_pause(struct rp_pair *pair, struct netlink_ext_ack *extack)
{
	spin_lock_irq(&pair->lock);
	if (pair->dead) {
		spin_unlock_irq(&pair->lock);
		NL_SET_ERR_MSG(extack, "the pair is being removed");
		return -ENOENT;
	}
	/*
	 * A resume whose probe is running is not applied now: the pause
	 * stands, also on a pair that was Paused already (its state_gen
	 * does not change).
	 */
	pair->resume_pending = false;
	__rp_pair_set_state(pair, REPLIPIPE_PAIR_PAUSED);
	__rp_pair_unflushed_dirty(pair);
	spin_unlock_irq(&pair->lock);
	return 0;
}

/*
 * A resume's probe ended: the resume asked for last is applied if the probe
 * succeeded and the pair is still in the state that resume saw (a pause
 * made meanwhile is the administrator's and stands; a pair that degraded
 * since was never probed).  On rp_probe_wq, with the pair reference its
 * starter took.
 */
static void rp_pair_probe_work(struct work_struct *work)
{
	struct rp_pair *pair = container_of(work, struct rp_pair, probe_work);
	struct netlink_ext_ack extack = {};
	int ret;

	/* A pair removed meanwhile: no probe to keep its remover waiting. */
	if (READ_ONCE(pair->dead)) {
		NL_SET_ERR_MSG(&extack, "the pair is being removed");
		ret = -ENOENT;
	} else {
		ret = rp_pair_probe_target(pair, &extack);
	}
	spin_lock_irq(&pair->lock);
	pair->probe_ret = ret;
	pair->probe_msg = extack._msg;
	/*
	 * A pair not started yet is Syncing with no region dirty: what its
	 * record marked for the writes it waits for reaches it only at its
	 * start (rp_pair_start(), which then makes it InSync).  A reader of
	 * start_pending that sees it false sees those marks too: they are
	 * added under pair->lock before it is cleared.
	 */
	if (!ret && pair->resume_pending && !pair->dead &&
	    pair->state_gen == pair->resume_gen && !__rp_pair_mirroring(pair))
		__rp_pair_set_state(pair, pair->nr_dirty ||
				    READ_ONCE(pair->start_pending) ?
				    REPLIPIPE_PAIR_SYNCING :
				    REPLIPIPE_PAIR_INSYNC);
	pair->resume_pending = false;
	pair->probe_done_seq = pair->probe_seq;
	spin_unlock_irq(&pair->lock);
	wake_up_all(&pair->probe_wq);
	rp_pair_put(pair);
}

/* What a resume whose probe @seq ended comes to.  pair->lock held. */
static int __rp_pair_resume_result(struct rp_pair *pair, u64 seq,
				   struct netlink_ext_ack *extack)
{
	if (pair->probe_done_seq < seq) {
		NL_SET_ERR_MSG(extack,
			       "the target's probe has not ended yet (it takes "
			       __stringify(RP_PROBE_TIMEOUT_SEC)
			       " s at most); ask again with PAIR_RESUME_WAIT");
		return -EINPROGRESS;
	}
	if (pair->dead) {
		NL_SET_ERR_MSG(extack, "the pair is being removed");
		return -ENOENT;
	}
	if (__rp_pair_mirroring(pair))
		return 0;
	if (pair->probe_ret) {
		if (extack && pair->probe_msg)
			extack->_msg = pair->probe_msg;
		return pair->probe_ret;
	}
	NL_SET_ERR_MSG(extack,
		       "the pair's state changed while its target was probed; not resumed");
	return -EBUSY;
}

/*
 * PAIR_SET Syncing: resume a Paused or Degraded pair once a probe of its
 * target succeeds.  Generic netlink runs a request under a lock every
 * family shares, and a family's registration waits for it, so the request
 * does not wait for the probe (up to RP_PROBE_TIMEOUT_SEC) but at most
 * REPLIPIPE_RESUME_WAIT_MS: a probe still running by then fails it with
 * -EINPROGRESS, and it is applied when the probe ends whoever asks.  With
 * @again (PAIR_RESUME_WAIT) the request starts nothing: it waits for the
 * probe running, or tells how the last one ended.  A request while a probe
 * runs waits for that one: the target answering it is the answer wanted.
 * The caller holds a pair reference.
 */
int rp_pair_resume(struct rp_pair *pair, bool again,
		   struct netlink_ext_ack *extack)
{
	u64 seq;
	long left;
	int ret;

	spin_lock_irq(&pair->lock);
	if (pair->dead) {
		spin_unlock_irq(&pair->lock);
		NL_SET_ERR_MSG(extack, "the pair is being removed");
		return -ENOENT;
	}
	if (!again) {
		if (__rp_pair_mirroring(pair)) {
			spin_unlock_irq(&pair->lock);
			return 0;
		}
		pair->resume_gen = pair->state_gen;
		pair->resume_pending = true;
		if (pair->probe_done_seq == pair->probe_seq) {
			pair->probe_seq++;
			refcount_inc(&pair->refs);	/* the probe's */
			queue_work(rp_probe_wq, &pair->probe_work);
		}
	} else if (!pair->probe_seq) {
		spin_unlock_irq(&pair->lock);
		NL_SET_ERR_MSG(extack,
			       "no resume of this pair was asked for (a PIPE_SET may have replaced it)");
		return -ENOENT;
	}
	seq = pair->probe_seq;
	spin_unlock_irq(&pair->lock);

	left = wait_event_killable_timeout(pair->probe_wq,
					   READ_ONCE(pair->probe_done_seq) >= seq,
					   msecs_to_jiffies(REPLIPIPE_RESUME_WAIT_MS));
	if (left < 0)
		return left;	/* a fatal signal; the probe goes on */
	spin_lock_irq(&pair->lock);
	ret = __rp_pair_resume_result(pair, seq, extack);
	spin_unlock_irq(&pair->lock);
	return ret;
}

/* True if a tracked write overlaps regions [@first, @last].  pair->lock. */
bool __rp_pair_busy(struct rp_pair *pair, u64 first, u64 last)
{
	return rp_inflight_iter_first(&pair->inflight, first, last);
}

/*
 * True once no write tracked up to @seq (before the claim on regions
 * [@first, @last] was granted) overlaps them.  Those routed to the regions
 * since were held, or (aborted, a COMPARE AND WRITE's, an UNMAP or WRITE
 * SAME, past a claim that let its writes go) reach the primary only and
 * leave the regions redirty: the claim's copy may race them.  Waiting for
 * those too, a claim that let go under steady writes would wait until its
 * time-out.  Walks, in the tree's order, the overlapping writes tracked
 * since up to the first one from before: none of them is mirrored, so the
 * commands the initiators have outstanding bound them, not max lag.  Must
 * not block.
 */
static bool __rp_claim_drained(struct rp_pair *pair, u64 first, u64 last,
			       u64 seq)
{
	struct rp_req *req;

	lockdep_assert_held(&pair->lock);
	if (pair->dead)
		return true;
	for (req = rp_inflight_iter_first(&pair->inflight, first, last);
	     req; req = rp_inflight_iter_next(req, first, last))
		if (req->inflight_seq <= seq)
			return false;
	return true;
}

static bool rp_claim_drained(struct rp_pair *pair, u64 first, u64 last,
			     u64 seq)
{
	bool drained;

	spin_lock_irq(&pair->lock);
	drained = __rp_claim_drained(pair, first, last, seq);
	spin_unlock_irq(&pair->lock);
	return drained;
}

/* The first dirty, unclaimed region at or after @i, or nr_regions. */
static u64 __rp_claim_next(struct rp_pair *pair, u64 i)
{
	u64 n = pair->nr_regions;

	while (i < n) {
		i = find_next_bit(pair->dirty, n, i);
		if (i >= n || !test_bit(i, pair->claimed))
			return i;
		i++;
	}
	return n;
}

/* Busy regions a claim steps over, at most, before it takes one anyway. */
#define RP_CLAIM_BUSY_SKIPS	64

/*
 * The first dirty, unclaimed region at or after @i with no tracked write
 * in flight, or nr_regions if there is none within @skips busy runs.
 */
static u64 __rp_claim_next_idle(struct rp_pair *pair, u64 i,
				unsigned int skips)
{
	u64 n = pair->nr_regions;
	struct rp_req *req;

	for (;;) {
		i = __rp_claim_next(pair, i);
		if (i >= n)
			return n;
		req = rp_inflight_iter_first(&pair->inflight, i, i);
		if (!req)
			return i;
		if (!skips--)
			return n;
		/* Every region up to the end of this write is busy too. */
		i = req->last_region + 1;
	}
}

/*
 * Picks dirty, unclaimed regions at or after @hint: a run with no write in
 * flight if there is one, else (only busy regions are left) the first run,
 * whose writes the claim then drains while it holds new ones.  Draining
 * is what a busy region costs: its writers wait, up to claim_timeout_sec,
 * and an asynchronous pair's copies to a slow target may take that long.
 * pair->lock held.
 */
static u32 __rp_claim_pick(struct rp_pair *pair, u64 hint, u32 max, u64 *first)
{
	u64 i, end, n = pair->nr_regions;
	struct rp_req *req;
	u32 count = 0;

	i = __rp_claim_next_idle(pair, hint, RP_CLAIM_BUSY_SKIPS);
	end = n;
	if (i < n) {
		/* The run ends before the next write in flight. */
		req = rp_inflight_iter_first(&pair->inflight, i,
					     min_t(u64, n - 1, i + max - 1));
		if (req)
			end = req->first_region;
	} else {
		i = __rp_claim_next(pair, hint);
		if (i >= n)
			return 0;
	}
	*first = i;
	while (i < end && count < max && test_bit(i, pair->dirty) &&
	       !test_bit(i, pair->claimed)) {
		__set_bit(i, pair->claimed);
		i++;
		count++;
	}
	return count;
}

/*
 * True once nothing keeps @pair's claims from starting: it is started (no
 * write that found no pair is in flight on its source) and no removed pair
 * with its source or target has writes in flight; or it is dead (the claim
 * then fails).
 */
static bool rp_claim_may_start(struct rp_pair *pair)
{
	return READ_ONCE(pair->dead) ||
	       (!READ_ONCE(pair->start_pending) && !rp_pair_fenced(pair));
}

/*
 * wait_event_idle_timeout() that a fatal signal ends (-ERESTARTSYS): a
 * TASK_IDLE sleep (not in the load average, shown as "I") that is also
 * TASK_WAKEKILL.
 */
#define rp_wait_event_killable_idle_timeout(wq, condition, timeout)	\
({									\
	long __ret = timeout;						\
	might_sleep();							\
	if (!___wait_cond_timeout(condition))				\
		__ret = ___wait_event(wq, ___wait_cond_timeout(condition), \
				      (TASK_KILLABLE | TASK_NOLOAD), 0, \
				      timeout,				\
				      __ret = schedule_timeout(__ret));	\
	__ret;								\
})

/* Fills @reply for @claim.  pair->lock held. */
static void __rp_claim_reply(const struct rp_claim *claim,
			     struct rp_claim_reply *reply)
{
	reply->id = claim->id;
	reply->first = claim->first;
	reply->count = claim->count;
	reply->pending = claim->stage != RP_CLAIM_GRANTED;
	/*
	 * The engine's copy must end by the kernel's deadline, which started
	 * after the fence; timed from its request it would give up early.
	 */
	reply->left_ms = 0;
	if (!reply->pending && time_after(claim->deadline, jiffies))
		reply->left_ms = jiffies_to_msecs(claim->deadline - jiffies);
}

/*
 * A fenced claim takes its regions once the fence is gone: dirty, unclaimed
 * ones at or after its hint, whose tracked writes in flight it then drains
 * (later ones are held, or reach the primary only: rp_claim_drained()).
 * Its time starts again here, after the wait at the fence.  A claim that
 * finds nothing dirty is freed: false, and @reply says so (id 0, count 0).
 * pair->lock held.
 */
static bool __rp_claim_take(struct rp_claim *claim,
			    struct rp_claim_reply *reply)
{
	struct rp_pair *pair = claim->pair;
	u64 first;

	claim->count = __rp_claim_pick(pair, claim->hint, claim->max, &first);
	if (!claim->count) {
		memset(reply, 0, sizeof(*reply));
		reply->first = claim->hint;
		rp_claim_free(claim);
		return false;
	}
	claim->first = first;
	claim->drain_seq = pair->inflight_seq;
	claim->stage = RP_CLAIM_DRAINING;
	claim->deadline = jiffies + READ_ONCE(rp_claim_timeout_sec) * HZ;
	return true;
}

/*
 * RESYNC_CLAIM and RESYNC_CLAIM_WAIT: moves claim @id of @pair on, waiting
 * at most REPLIPIPE_CLAIM_WAIT_MS for the pair's fence to go
 * (rp_claim_may_start()) and then for the writes in flight to the claimed
 * regions to drain.  Not longer: generic netlink runs a request under the
 * read side of its cb_lock, which every family shares and a module that
 * registers one takes for writing; every genl request of the host would
 * queue behind a long wait here.  A claim not granted by then is answered
 * pending; one whose time ran out (claim_timeout_sec at the fence, then
 * again from the fence to the end of the drain) is dropped: ETIMEDOUT.
 * The waits are TASK_IDLE, as the retire wait is (the parameter allows an
 * hour), and killable (EINTR: the claim is dropped, since its dying owner
 * may not know its id yet).  The caller holds a pair reference, not
 * rp_config_lock.
 */
int rp_claim_advance(struct rp_pair *pair, u64 id,
		     struct rp_claim_reply *reply,
		     struct netlink_ext_ack *extack)
{
	unsigned long until = jiffies + msecs_to_jiffies(REPLIPIPE_CLAIM_WAIT_MS);
	unsigned long wait_until;
	struct rp_claim *claim;
	LIST_HEAD(released);
	u64 first, last, seq;
	bool may_start;
	u8 stage;
	long ret;

	for (;;) {
		/* Monotonic: a pair's fence never comes back once gone. */
		may_start = rp_claim_may_start(pair);
		spin_lock_irq(&pair->lock);
		claim = __rp_claim_find(pair, id);
		if (!claim)
			break;
		if (claim->stage == RP_CLAIM_FENCED && may_start &&
		    !__rp_claim_take(claim, reply)) {
			spin_unlock_irq(&pair->lock);
			return 0;
		}
		stage = claim->stage;
		/* Past its time a claim is not granted: it could not copy. */
		if (stage != RP_CLAIM_GRANTED &&
		    !time_before(jiffies, claim->deadline)) {
			if (stage == RP_CLAIM_DRAINING)
				NL_SET_ERR_MSG(extack,
					       "writes in flight to the claimed regions did not drain in time");
			else if (READ_ONCE(pair->start_pending))
				NL_SET_ERR_MSG(extack,
					       "writes to the source from before the pair are still in flight");
			else
				NL_SET_ERR_MSG(extack,
					       "a removed pair with this source or target still has writes in flight");
			__rp_claim_finish(claim, false, &released);
			spin_unlock_irq(&pair->lock);
			rp_reqs_resubmit(&released);
			return -ETIMEDOUT;
		}
		if (stage == RP_CLAIM_DRAINING) {
			first = claim->first;
			last = first + claim->count - 1;
			seq = claim->drain_seq;
			if (__rp_claim_drained(pair, first, last, seq)) {
				claim->stage = RP_CLAIM_GRANTED;
				stage = RP_CLAIM_GRANTED;
			}
		}
		if (stage == RP_CLAIM_GRANTED || !time_before(jiffies, until)) {
			__rp_claim_reply(claim, reply);
			spin_unlock_irq(&pair->lock);
			return 0;
		}
		wait_until = time_before(claim->deadline, until) ?
			     claim->deadline : until;
		spin_unlock_irq(&pair->lock);

		ret = max_t(long, (long)(wait_until - jiffies), 0);
		if (stage == RP_CLAIM_FENCED)
			ret = rp_wait_event_killable_idle_timeout(pair->wq,
					rp_claim_may_start(pair), ret);
		else
			ret = rp_wait_event_killable_idle_timeout(pair->wq,
					rp_claim_drained(pair, first, last, seq),
					ret);
		if (ret < 0) {
			/* Its dying owner may never have learnt its id. */
			rp_claim_abort(pair, id);
			return -EINTR;
		}
	}
	spin_unlock_irq(&pair->lock);
	if (READ_ONCE(pair->dead))
		NL_SET_ERR_MSG(extack, "the pair is being removed");
	else
		NL_SET_ERR_MSG(extack,
			       "no such claim (finished, timed out or dropped)");
	return -ENOENT;
}

/*
 * RESYNC_CLAIM: a claim at the fence, with none of the pair's regions yet,
 * which rp_claim_advance() moves on.  The caller holds a pair reference,
 * not rp_config_lock.
 */
int rp_claim_new(struct rp_pair *pair, u64 hint, u32 max, u32 portid,
		 struct rp_claim_reply *reply, struct netlink_ext_ack *extack)
{
	struct rp_claim *claim;
	u64 id;
	int ret;

	claim = kzalloc(sizeof(*claim), GFP_KERNEL);
	if (!claim)
		return -ENOMEM;
	/* Counted before it is visible: rp_claim_free() uncounts it. */
	if (rp_claim_owner_get(portid)) {
		kfree(claim);
		return -ENOMEM;
	}

	spin_lock_irq(&pair->lock);
	if (pair->dead) {
		NL_SET_ERR_MSG(extack, "the pair is being removed");
		ret = -ENOENT;
		goto unclaim;
	}
	if (pair->nr_claims >= REPLIPIPE_MAX_CLAIMS_PER_PAIR) {
		NL_SET_ERR_MSG(extack,
			       "the pair has REPLIPIPE_MAX_CLAIMS_PER_PAIR claims already");
		ret = -EBUSY;
		goto unclaim;
	}
	claim->pair = pair;
	id = atomic64_inc_return(&rp_next_claim_id);
	claim->id = id;
	claim->first = hint;
	claim->hint = hint;
	claim->max = max;
	claim->portid = portid;
	claim->stage = RP_CLAIM_FENCED;
	claim->deadline = jiffies + READ_ONCE(rp_claim_timeout_sec) * HZ;
	list_add_tail(&claim->node, &pair->claims);
	pair->nr_claims++;
	atomic_inc(&rp_nr_claims);
	spin_unlock_irq(&pair->lock);
	queue_delayed_work(system_wq, &rp_reaper, HZ);
	/* @claim may be gone already (its socket closed): by its id. */
	return rp_claim_advance(pair, id, reply, extack);

unclaim:
	spin_unlock_irq(&pair->lock);
	rp_claim_owner_put(portid);
	kfree(claim);
	return ret;
}

/* RESYNC_DONE (@done) and RESYNC_FAILED. */
int rp_claim_end(u64 id, u32 portid, bool done, struct netlink_ext_ack *extack)
{
	struct rp_claim *claim = NULL;
	LIST_HEAD(released);
	struct rp_pipe *pipe;
	struct rp_pair *pair;
	int ret = 0;

	mutex_lock(&rp_config_lock);
	list_for_each_entry(pipe, &rp_pipes, node) {
		list_for_each_entry(pair, &pipe->pairs, node) {
			spin_lock_irq(&pair->lock);
			claim = __rp_claim_find(pair, id);
			if (claim && claim->portid != portid)
				ret = -EPERM;
			else if (claim && done &&
				 claim->stage != RP_CLAIM_GRANTED)
				ret = -EBUSY;
			else if (claim)
				__rp_claim_finish(claim, done, &released);
			spin_unlock_irq(&pair->lock);
			if (claim)
				goto found;
		}
	}
	ret = -ENOENT;
found:
	mutex_unlock(&rp_config_lock);
	rp_reqs_resubmit(&released);
	if (ret == -ENOENT)
		NL_SET_ERR_MSG(extack, "no such claim (finished, timed out or dropped)");
	else if (ret == -EPERM)
		NL_SET_ERR_MSG(extack, "the claim belongs to another socket");
	else if (ret == -EBUSY)
		NL_SET_ERR_MSG(extack,
			       "the claim is still pending (RESYNC_CLAIM_WAIT)");
	return ret;
}

/*
 * The pair of claim @id of @portid, with a reference for
 * rp_claim_advance(), or an ERR_PTR.
 */
struct rp_pair *rp_claim_pair_get(u64 id, u32 portid,
				  struct netlink_ext_ack *extack)
{
	struct rp_pair *pair, *found = ERR_PTR(-ENOENT);
	struct rp_claim *claim;
	struct rp_pipe *pipe;

	mutex_lock(&rp_config_lock);
	list_for_each_entry(pipe, &rp_pipes, node) {
		list_for_each_entry(pair, &pipe->pairs, node) {
			spin_lock_irq(&pair->lock);
			claim = __rp_claim_find(pair, id);
			if (claim && claim->portid != portid) {
				found = ERR_PTR(-EPERM);
			} else if (claim) {
				refcount_inc(&pair->refs);
				found = pair;
			}
			spin_unlock_irq(&pair->lock);
			if (claim)
				goto out;
		}
	}
out:
	mutex_unlock(&rp_config_lock);
	if (PTR_ERR(found) == -ENOENT)
		NL_SET_ERR_MSG(extack, "no such claim (finished, timed out or dropped)");
	else if (PTR_ERR(found) == -EPERM)
		NL_SET_ERR_MSG(extack, "the claim belongs to another socket");
	return found;
}

/*
 * A second of grace for a pending claim: RESYNC_CLAIM_WAIT times it out
 * itself (ETIMEDOUT, rp_claim_advance()) if its engine still asks.
 */
#define RP_CLAIM_PENDING_GRACE	HZ

static bool rp_claim_expired(const struct rp_claim *claim)
{
	unsigned long grace = claim->stage == RP_CLAIM_GRANTED ? 0 :
			      RP_CLAIM_PENDING_GRACE;

	return time_after(jiffies, claim->deadline + grace);
}

/*
 * Drops the claims of @portid up to claim id @last, or the expired ones;
 * returns how many stay.
 */
static unsigned int rp_claims_drop(u32 portid, u64 last, bool expired_only)
{
	struct rp_claim *claim, *tmp;
	unsigned int left = 0;
	struct rp_pipe *pipe;
	struct rp_pair *pair;
	LIST_HEAD(drop);

	lockdep_assert_held(&rp_config_lock);
	list_for_each_entry(pipe, &rp_pipes, node) {
		list_for_each_entry(pair, &pipe->pairs, node) {
			spin_lock_irq(&pair->lock);
			list_for_each_entry_safe(claim, tmp, &pair->claims,
						 node) {
				bool match = expired_only ?
					rp_claim_expired(claim) :
					claim->portid == portid &&
					claim->id <= last;

				if (match)
					list_move_tail(&claim->node, &drop);
				else
					left++;
			}
			spin_unlock_irq(&pair->lock);
		}
	}
	/* Off pair->claims: nobody else finds these (rp_claim_abort()). */
	list_for_each_entry_safe(claim, tmp, &drop, node) {
		LIST_HEAD(released);

		pair = claim->pair;
		pr_warn("claim %llu on %s (regions %llu+%u) dropped: %s\n",
			claim->id, pair->src->name, claim->first,
			claim->count, expired_only ? "timed out" :
			"its socket closed");
		spin_lock_irq(&pair->lock);
		__rp_claim_finish(claim, false, &released);
		spin_unlock_irq(&pair->lock);
		rp_reqs_resubmit(&released);
	}
	return left;
}

void rp_claims_drop_portid(u32 portid, u64 last)
{
	mutex_lock(&rp_config_lock);
	rp_claims_drop(portid, last, false);
	mutex_unlock(&rp_config_lock);
}

/*
 * Drops expired claims once a second while any exist.  It runs on
 * system_wq, not on rp_wq: it takes rp_config_lock, whose holders may wait
 * for work on rp_wq (rp_pairs_start() waits for the writes that found no
 * pair, which a record write there releases).  rp_wq is WQ_MEM_RECLAIM, and
 * under memory pressure its single rescuer thread runs its items one after
 * the other: a reaper blocked on the lock there would keep the work the
 * lock's holder waits for from ever running.
 */
static void rp_claim_reaper(struct work_struct *work)
{
	unsigned int left;

	mutex_lock(&rp_config_lock);
	left = rp_claims_drop(0, 0, true);
	mutex_unlock(&rp_config_lock);
	if (left)
		queue_delayed_work(system_wq, &rp_reaper, HZ);
}

static int rp_netlink_event(struct notifier_block *nb, unsigned long event,
			    void *ptr)
{
	struct netlink_notify *n = ptr;

	/*
	 * Most generic netlink sockets are not ours: no lock for them.  The
	 * port id is free again before this runs, and rp_config_lock may be
	 * held for seconds (a PIPE_SET writing records): a new socket that
	 * got the same port id meanwhile (libnl hands a freed one straight
	 * back to the process) may claim before the lock is ours.  Its
	 * claims come after this point, with later ids: only those up to the
	 * last id now are the closed socket's.
	 */
	if (event == NETLINK_URELEASE && n->protocol == NETLINK_GENERIC &&
	    n->portid && net_eq(n->net, &init_net) &&
	    xa_load(&rp_claim_owners, n->portid))
		rp_claims_drop_portid(n->portid,
				      atomic64_read(&rp_next_claim_id));
	return NOTIFY_DONE;
}

static struct notifier_block rp_netlink_notifier = {
	.notifier_call	= rp_netlink_event,
};

int rp_pipe_init(void)
{
	int ret;

	ret = rp_retire_init();
	if (ret)
		return ret;
	ret = netlink_register_notifier(&rp_netlink_notifier);
	if (ret)
		rp_retire_exit();
	return ret;
}

void rp_pipe_exit(void)
{
	int n = atomic_read(&rp_nr_pipes);

	if (n)
		pr_err("%d pipes exist; delete them first\n", n);
	mutex_lock(&rp_config_lock);
	while (!list_empty(&rp_pipes)) {
		LIST_HEAD(batch);

		rp_pipe_unlink(list_first_entry(&rp_pipes, struct rp_pipe, node),
			       &batch);
		mutex_unlock(&rp_config_lock);
		rp_pairs_reap(&batch, MAX_SCHEDULE_TIMEOUT);
		mutex_lock(&rp_config_lock);
	}
	mutex_unlock(&rp_config_lock);
	rp_retire_exit();
	cancel_delayed_work_sync(&rp_reaper);
	netlink_unregister_notifier(&rp_netlink_notifier);
	WARN_ON_ONCE(!xa_empty(&rp_claim_owners));
	xa_destroy(&rp_claim_owners);
}
