// SPDX-License-Identifier: GPL-2.0
/*
 * rp_retire.c: pairs taken out of their pipe (by PIPE_DEL, or by a PIPE_SET
 * that removes or replaces them) whose writes in flight have not all ended.
 *
 * A target that queues I/O rather than failing it (an iSCSI session in
 * recovery, multipath with queue_if_no_path, a suspended dm device) may hold
 * such a write for as long as it likes.  It must not hold rp_config_lock,
 * and with it every netlink command and the daemon, for that long: the
 * command that removed the pair waits for its writes without the lock, at
 * most RP_DRAIN_WAIT_SEC (rp_pairs_reap()); past that the pair's last write
 * frees it, through a work item on rp_retire_wq.  Until a removed pair is
 * freed:
 *   - its source counts it (dev->retiring), and no new pair may take that
 *     source in a later PIPE_SET (rp_pair_open()): its writes are not all
 *     seen by the new pair;
 *   - its target stays open, held by its pipe: another pipe cannot have
 *     it, and a new pair of the same pipe cannot assume it clean;
 *   - its pipe stays allocated, even once deleted (pipe->nr_retired);
 *   - a pair with its source or its target is fenced: no resync claim is
 *     granted on it (rp_claim_advance()).  A claim drains only its own pair's
 *     writes; the removed pair's may still change the primary after the
 *     resync read it, or land on the target after the copy.
 */
#define pr_fmt(fmt) "replipipe: " fmt

#include <linux/delay.h>
#include <linux/sched.h>

#include "replipipe_internal.h"

/*
 * Not WQ_MEM_RECLAIM: its items may wait for a record's flush of the legs,
 * then take rp_config_lock (see rp_claim_reaper()).  Module exit destroys
 * it: a deleted pipe's module reference may go in its last item.
 */
static struct workqueue_struct *rp_retire_wq;

/*
 * Every removed pair not yet freed.  Changed under rp_config_lock and
 * rp_retired_lock, read under either: a claim looks at it without
 * rp_config_lock.
 */
static LIST_HEAD(rp_retired);
static DEFINE_SPINLOCK(rp_retired_lock);

/*
 * Retires the pairs on @batch (linked by pair->node), unpublished by the
 * caller: after an RCU grace period no write finds them any more, and
 * rp_pair_kill() stops them.  The caller then owns @batch and passes it to
 * rp_pairs_reap() once it has dropped rp_config_lock.  rp_config_lock held.
 */
void rp_pairs_retire(struct list_head *batch)
{
	struct rp_pair *pair;

	lockdep_assert_held(&rp_config_lock);
	if (list_empty(batch))
		return;
	synchronize_rcu();
	if (rp_delay_pair_kill())
		msleep(8000);
	list_for_each_entry(pair, batch, node) {
		pair->src->retiring++;
		pair->pipe->nr_retired++;
		spin_lock(&rp_retired_lock);
		list_add_tail(&pair->retired_node, &rp_retired);
		spin_unlock(&rp_retired_lock);
		rp_pair_kill(pair);
		/*
		 * A state event queued before the kill would name the pair
		 * after the pipe's EVT_PIPE_CHANGED or EVT_PIPE_DELETED.  The
		 * event takes no rp_config_lock.
		 */
		cancel_work_sync(&pair->event_work);
	}
}

/* Wakes the claims waiting on the pairs that @gone fenced.  rp_config_lock held. */
static void rp_fence_lift(struct rp_pair *gone)
{
	dev_t devt = gone->tgt.bdev->bd_dev;
	struct rp_pipe *pipe;
	struct rp_pair *pair;

	list_for_each_entry(pipe, &rp_pipes, node)
		list_for_each_entry(pair, &pipe->pairs, node)
			if (pair->src == gone->src ||
			    pair->tgt.bdev->bd_dev == devt)
				wake_up_all(&pair->wq);
}

/*
 * Frees a removed pair whose writes have all ended, rp_pair_quiesce()d.
 * rp_config_lock held.
 */
static void rp_retired_free(struct rp_pair *pair)
{
	struct rp_pipe *pipe = pair->pipe;

	spin_lock(&rp_retired_lock);
	list_del(&pair->retired_node);
	spin_unlock(&rp_retired_lock);
	rp_fence_lift(pair);
	pair->src->retiring--;
	rp_pair_free(pair);
	if (!--pipe->nr_retired && pipe->deleted)
		rp_pipe_free(pipe);
}

/*
 * The last reference to a killed pair went (rp_pair_put(), any context).
 * Whoever comes second of this and rp_pairs_reap() giving up on the pair
 * frees it: the remover still waiting is woken; a remover gone left it to
 * rp_retire_work(), queued here.  Nothing may touch the pair after either.
 */
void rp_pair_released(struct rp_pair *pair)
{
	if (atomic_xchg(&pair->retire_handoff, 1))
		queue_work(rp_retire_wq, &pair->retire_work);
	else
		complete(&pair->released);
}

/* A removed pair whose last write ended after its remover returned. */
void rp_retire_work(struct work_struct *work)
{
	struct rp_pair *pair = container_of(work, struct rp_pair, retire_work);

	rp_pair_quiesce(pair, jiffies + RP_PROBE_TIMEOUT_SEC * HZ);
	mutex_lock(&rp_config_lock);
	pr_info("%s: the last writes to removed target %s ended; it is closed\n",
		pair->src->name, pair->tgt_path);
	rp_retired_free(pair);
	mutex_unlock(&rp_config_lock);
}

/*
 * Waits, without rp_config_lock, at most @timeout (MAX_SCHEDULE_TIMEOUT:
 * for good) for the writes in flight of the pairs on @batch
 * (rp_pairs_retire()), then frees those whose writes ended; the last write
 * of each other one frees it (rp_pair_released()).  No thread waits for
 * those: a dead iSCSI portal may hold the writes of hundreds of pairs for
 * hours.  Returns how many were left.  May block.
 */
unsigned int rp_pairs_reap(struct list_head *batch, unsigned long timeout)
{
	unsigned long deadline = jiffies + timeout, flush_by;
	struct rp_pair *pair, *tmp;
	unsigned int left = 0;
	LIST_HEAD(drained);

	/* A completion waited for is consumed: what ended moves to @drained. */
	list_for_each_entry_safe(pair, tmp, batch, node) {
		unsigned long wait = time_after(deadline, jiffies) ?
				     deadline - jiffies : 0;

		if (timeout == MAX_SCHEDULE_TIMEOUT)
			wait_for_completion_state(&pair->released, TASK_IDLE);
		else if (!wait_for_completion_timeout(&pair->released, wait))
			continue;
		list_move_tail(&pair->node, &drained);
	}
	list_for_each_entry_safe(pair, tmp, batch, node) {
		list_del(&pair->node);
		/* Until the hand-off the pair is ours: say so now. */
		pr_warn("%s: writes to removed target %s still in flight after %u s: it is closed when they end\n",
			pair->src->name, pair->tgt_path,
			jiffies_to_msecs(timeout) / 1000);
		if (!atomic_xchg(&pair->retire_handoff, 1)) {
			left++;
			continue;
		}
		/* Its last put came meanwhile and completes it at once. */
		wait_for_completion(&pair->released);
		pr_info("%s: the last writes to removed target %s ended; it is closed\n",
			pair->src->name, pair->tgt_path);
		list_add_tail(&pair->node, &drained);
	}
	if (list_empty(&drained))
		return left;

	/*
	 * One bound for the target flushes of all: one after the other, each
	 * bounded alone, the removal of hundreds of idle pairs whose targets
	 * queue I/O (an iSCSI session in recovery) took minutes, and held
	 * their sources and targets fenced as long.  A pair left without a
	 * flush keeps its record's marks (a resync of them later).
	 */
	flush_by = jiffies + RP_PROBE_TIMEOUT_SEC * HZ;
	list_for_each_entry(pair, &drained, node)
		rp_pair_quiesce(pair, flush_by);
	mutex_lock(&rp_config_lock);
	list_for_each_entry_safe(pair, tmp, &drained, node) {
		list_del(&pair->node);
		rp_retired_free(pair);
	}
	mutex_unlock(&rp_config_lock);
	return left;
}

/* The pipe of a removed pair with target @devt, or NULL.  rp_config_lock held. */
struct rp_pipe *rp_retired_target_pipe(dev_t devt)
{
	struct rp_pair *pair;

	lockdep_assert_held(&rp_config_lock);
	list_for_each_entry(pair, &rp_retired, retired_node)
		if (pair->tgt.bdev->bd_dev == devt)
			return pair->pipe;
	return NULL;
}

/* True while a removed pair with @pair's source or target is not freed. */
bool rp_pair_fenced(struct rp_pair *pair)
{
	dev_t devt = pair->tgt.bdev->bd_dev;
	struct rp_pair *gone;
	bool fenced = false;

	spin_lock(&rp_retired_lock);
	list_for_each_entry(gone, &rp_retired, retired_node) {
		if (gone->src == pair->src || gone->tgt.bdev->bd_dev == devt) {
			fenced = true;
			break;
		}
	}
	spin_unlock(&rp_retired_lock);
	return fenced;
}

int rp_retire_init(void)
{
	rp_retire_wq = alloc_workqueue("replipipe_retire", WQ_UNBOUND, 0);
	return rp_retire_wq ? 0 : -ENOMEM;
}

/* Every removed pair held its pipe, and its pipe a module reference. */
void rp_retire_exit(void)
{
	destroy_workqueue(rp_retire_wq);
	WARN_ON_ONCE(!list_empty(&rp_retired));
}
