/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * replipipe: the generic netlink ABI between replipipe.ko and user space.
 *
 * This header is the only contract between the kernel module and its users
 * (replipiped, scripts, other tools). Plain C, no kernel-only types.
 *
 * Objects
 *   pipe  identified by REPLIPIPE_A_PIPE_ID (the controller uses a UUID in
 *         text form); carries a name, a mode, a failure policy, a max lag,
 *         a region size and a set of pairs.
 *   pair  identified inside its pipe by its source backstore,
 *         "replipipe_<N>/<name>" (a backstore belongs to at most one pipe,
 *         so the source also identifies the pair host-wide); mirrors every
 *         write to the source backstore onto the target block device.
 *
 * Commands (request -> reply)
 *   PIPE_SET     create a pipe or replace an existing one with the same id.
 *                Pairs present before and after (same source and target)
 *                keep their state and dirty bitmap; removed pairs stop
 *                mirroring; new pairs start Syncing with every region dirty
 *                (unless REPLIPIPE_A_PAIR_ASSUME_CLEAN is given: the
 *                caller's word that the target holds what the source
 *                holds; a write to the source between the caller's check
 *                and the reply may not reach the target, so none may be
 *                made then). A target
 *                belongs to at most one pair (EBUSY), but a new pair may
 *                take over the target of a pair the same PIPE_SET replaces
 *                (two pairs' targets swapped, a removed pair's target given
 *                to another source); such a pair cannot assume clean
 *                (EINVAL): the replaced pair's last writes may still land.
 *                The region size of a pipe that keeps pairs cannot change.
 *                A new pair whose source still has writes in flight from
 *                before it (they found no pair) starts when they end: until
 *                then it reads Syncing, its claims are answered pending,
 *                and a write-intent record's marks of those writes are not
 *                on its bitmap yet.
 *                Removed and replaced pairs are waited for as PIPE_DEL's.
 *                Each write-intent record the call would write (one a new
 *                pair binds anew, one a new pair's target invalidates)
 *                must first answer a read and a flush within 5 s: else
 *                ETIMEDOUT (or the probe's error), nothing changed.
 *   PIPE_DEL     delete a pipe (PIPE_ID); its pairs stop mirroring. It
 *                waits up to 5 s for the writes in flight to its targets
 *                and succeeds all the same: until they end, its sources
 *                and targets stay taken (a later PIPE_SET naming one gets
 *                EBUSY, even from a pipe of the same PIPE_ID),
 *                a new pair on one of them grants no RESYNC_CLAIM (it waits,
 *                within claim_timeout_sec, then fails with ETIMEDOUT),
 *                and other commands are not held up.
 *   PIPE_GET     doit with PIPE_ID, or dumpit for every pipe; each reply is
 *                one pipe with nested pairs, their state and counters: a
 *                message may be as large as one pipe of REPLIPIPE_MAX_PAIRS
 *                pairs (~140 KiB; receive with MSG_PEEK/MSG_TRUNC, as libnl
 *                does), its pairs in one REPLIPIPE_A_PIPE_PAIRS nest or,
 *                past 64 KiB, several. A dump fails with EMSGSIZE only when
 *                a pipe grew during it: dump again. A pair's
 *                REPLIPIPE_A_PAIR_SRC_DEV and _TGT_DEV name the devices the
 *                module mirrors: a tool that opens the target by its path
 *                compares them first (the path may name another device by
 *                now).
 *   PAIR_SET     change a pair's run state: REPLIPIPE_A_PAIR_STATE =
 *                PAUSED (stop mirroring, track dirty regions; what the
 *                target acknowledged since its last cache flush becomes
 *                dirty, as when the pair degrades) or SYNCING
 *                (resume a Paused or Degraded pair: mirror again; InSync once
 *                no region is dirty). Resuming first probes the target (one
 *                read of its first block and a cache flush): if that fails
 *                the request fails with EIO (or the probe's error) and the
 *                pair keeps its state; a target that has not answered both
 *                within 5 s fails it with ETIMEDOUT (the probe's I/O may
 *                still be queued; it pins neither the pair nor PIPE_DEL).
 *                A state change during the probe (a pause) stands: the
 *                resume then fails with EBUSY. A request waits for the
 *                probe at most REPLIPIPE_RESUME_WAIT_MS (generic netlink
 *                holds a lock every family shares while a request runs):
 *                a probe still running by then fails it with EINPROGRESS,
 *                and the resume is applied when the probe ends well,
 *                whether anyone asks or not. Ask again with the flag
 *                REPLIPIPE_A_PAIR_RESUME_WAIT (which starts no probe of its
 *                own) for how it ended, until an answer other than
 *                EINPROGRESS. A resume asked for while a probe runs waits
 *                for that probe.
 *   BITMAP_GET   dumpit: a pair's dirty bitmap in chunks
 *                (REPLIPIPE_A_BITMAP_OFFSET in bits, REPLIPIPE_A_BITMAP_DATA
 *                little-endian bit order, bit i = region offset + i).
 *   RESYNC_CLAIM claim up to REPLIPIPE_A_CLAIM_MAX_REGIONS contiguous dirty,
 *                unclaimed regions of a pair at or after
 *                REPLIPIPE_A_CLAIM_HINT, regions with no write in flight
 *                first. The kernel waits for the writes in flight to
 *                them to drain (those routed before the claim) and holds
 *                new writes to them until the claim ends. Reply:
 *                CLAIM_ID, CLAIM_FIRST, CLAIM_COUNT (0 = nothing
 *                dirty and unclaimed at or after the hint) and, for a
 *                claim, CLAIM_TIME_LEFT_MS. A request waits at most
 *                REPLIPIPE_CLAIM_WAIT_MS (generic netlink holds a lock
 *                every family shares while a request runs): a claim not
 *                granted by then (at the fence of a pair not started or
 *                of a removed pair, or draining) is answered with
 *                CLAIM_ID and the flag CLAIM_PENDING only; its regions are
 *                not the engine's yet. Ask again with RESYNC_CLAIM_WAIT
 *                until a reply without CLAIM_PENDING, or give it up with
 *                RESYNC_FAILED. With
 *                REPLIPIPE_A_CLAIM_PAIR_SERIAL the claim fails with ESTALE
 *                unless the pair is still the one PIPE_GET reported with that
 *                REPLIPIPE_A_PAIR_SERIAL (a resync planned for a pair that a
 *                PIPE_SET replaced since must not clear the new one's bits).
 *                A claim belongs to the netlink socket that made it: it is
 *                dropped (regions stay dirty) when that socket closes, and
 *                when it is not finished within the module parameter
 *                claim_timeout_sec. A claim whose reply cannot be delivered
 *                (the socket's receive buffer is full) is dropped at once;
 *                the request then fails. A pair has at most
 *                REPLIPIPE_MAX_CLAIMS_PER_PAIR claims at a time, pending
 *                ones included: one more fails with EBUSY.
 *   RESYNC_CLAIM_WAIT CLAIM_ID of a pending claim of this socket: waits at
 *                most REPLIPIPE_CLAIM_WAIT_MS more; replies as RESYNC_CLAIM
 *                (CLAIM_COUNT 0 and CLAIM_ID 0 if, past the fence, nothing
 *                dirty was left). A pending claim that is not granted within
 *                claim_timeout_sec (at the fence; then again while it
 *                drains) fails with ETIMEDOUT and is gone; one nobody asks
 *                about for a second past that is dropped.
 *   RESYNC_DONE  CLAIM_ID: the regions were copied and the copy is durable
 *                on the target (flushed: the kernel does not see the
 *                engine's writes); clear their bits, release the held writes.
 *                EBUSY for a claim still pending.
 *   RESYNC_FAILED CLAIM_ID: the copy failed; bits stay set, writes released.
 *                A pending claim is given up.
 *
 * Write-intent record
 *   A backstore made with control "intent_path=<block device>" keeps one
 *   (kmod/rp_intent.c): a region is marked there before the first write to
 *   it is submitted and cleared lazily once in sync.  A new pair whose pipe
 *   id, target, region size and source size match the record's takes its
 *   dirty bitmap from it (after a crash or reload only those regions are
 *   resynced); any other pair binds the record anew with every region dirty.
 *   A new pair invalidates every other record that names its target before
 *   it writes it (docs/write-intent.md), so that record cannot load later.
 *   PIPE_GET reports REPLIPIPE_A_PAIR_INTENT, _INTENT_LOADED, _INTENT_MARKED.
 *
 * Notifications on multicast group REPLIPIPE_MCGRP_EVENTS
 *   EVT_PIPE_ADDED, EVT_PIPE_CHANGED, EVT_PIPE_DELETED: the pipe's attributes
 *   (as PIPE_GET, pairs included except for DELETED).
 *   EVT_PAIR_STATE: PIPE_ID and one REPLIPIPE_A_PIPE_PAIR nest.
 *
 * Errors carry an extack message (not for a caller killed while the
 * command waited: it reads no answer). Every state-changing command needs
 * CAP_NET_ADMIN (GENL_ADMIN_PERM).
 */
#ifndef _UAPI_LINUX_REPLIPIPE_H
#define _UAPI_LINUX_REPLIPIPE_H

#define REPLIPIPE_GENL_NAME		"replipipe"
/*
 * Bumped by any change an older client could misread (a changed meaning,
 * not an added attribute or command); replipiped refuses a family of
 * another version.
 */
#define REPLIPIPE_GENL_VERSION		2	/* 2: RESYNC_CLAIM may answer
						 * CLAIM_PENDING. Not bumped
						 * when PAIR_SET Syncing began
						 * to fail with EINPROGRESS:
						 * an error, not misread */
#define REPLIPIPE_MCGRP_EVENTS		"events"

/* Bounds enforced by the kernel's policies. */
#define REPLIPIPE_PIPE_ID_MAX_LEN	63	/* bytes, without the NUL */
#define REPLIPIPE_NAME_MAX_LEN		255
#define REPLIPIPE_SOURCE_MAX_LEN	127	/* "replipipe_<N>/<name>" */
#define REPLIPIPE_TARGET_MAX_LEN	255	/* absolute block device path */
#define REPLIPIPE_REGION_KIB_MIN	4
#define REPLIPIPE_REGION_KIB_MAX	65536
#define REPLIPIPE_MAX_LAG_KIB_MIN	64
#define REPLIPIPE_MAX_LAG_KIB_MAX	(1024 * 1024)
#define REPLIPIPE_MAX_PAIRS		256
#define REPLIPIPE_CLAIM_MAX_REGIONS	4096
#define REPLIPIPE_MAX_CLAIMS_PER_PAIR	64
#define REPLIPIPE_CLAIM_WAIT_MS		250	/* longest wait of one
						 * RESYNC_CLAIM(_WAIT) */
#define REPLIPIPE_RESUME_WAIT_MS	250	/* longest wait of one
						 * PAIR_SET Syncing */
#define REPLIPIPE_BITMAP_CHUNK_BYTES	4096

enum replipipe_mode {
	REPLIPIPE_MODE_SYNC = 0,
	REPLIPIPE_MODE_ASYNC = 1,
	__REPLIPIPE_MODE_MAX,
};
#define REPLIPIPE_MODE_MAX (__REPLIPIPE_MODE_MAX - 1)

enum replipipe_failure_policy {
	REPLIPIPE_POLICY_DEGRADE = 0,	/* keep serving, track dirty regions */
	REPLIPIPE_POLICY_FAILIO = 1,	/* fail the write */
	__REPLIPIPE_POLICY_MAX,
};
#define REPLIPIPE_POLICY_MAX (__REPLIPIPE_POLICY_MAX - 1)

enum replipipe_pair_state {
	REPLIPIPE_PAIR_SYNCING = 0,	/* mirroring; some regions still dirty */
	REPLIPIPE_PAIR_INSYNC = 1,	/* mirroring; no region dirty */
	REPLIPIPE_PAIR_DEGRADED = 2,	/* target failed; tracking dirty regions */
	REPLIPIPE_PAIR_PAUSED = 3,	/* stopped by the admin; tracking */
	__REPLIPIPE_PAIR_STATE_MAX,
};
#define REPLIPIPE_PAIR_STATE_MAX (__REPLIPIPE_PAIR_STATE_MAX - 1)

/* Where a pair's first dirty bitmap came from (REPLIPIPE_A_PAIR_INTENT). */
enum replipipe_intent_state {
	REPLIPIPE_INTENT_NONE = 0,	/* the source has no write-intent record */
	REPLIPIPE_INTENT_LOADED = 1,	/* the record knew the pair: its bits */
	REPLIPIPE_INTENT_NEW = 2,	/* the record was bound anew: all dirty */
	__REPLIPIPE_INTENT_MAX,
};

enum replipipe_cmd {
	REPLIPIPE_CMD_UNSPEC,
	REPLIPIPE_CMD_PIPE_SET,
	REPLIPIPE_CMD_PIPE_DEL,
	REPLIPIPE_CMD_PIPE_GET,
	REPLIPIPE_CMD_PAIR_SET,
	REPLIPIPE_CMD_BITMAP_GET,
	REPLIPIPE_CMD_RESYNC_CLAIM,
	REPLIPIPE_CMD_RESYNC_DONE,
	REPLIPIPE_CMD_RESYNC_FAILED,
	REPLIPIPE_CMD_EVT_PIPE_ADDED,
	REPLIPIPE_CMD_EVT_PIPE_CHANGED,
	REPLIPIPE_CMD_EVT_PIPE_DELETED,
	REPLIPIPE_CMD_EVT_PAIR_STATE,
	REPLIPIPE_CMD_RESYNC_CLAIM_WAIT,
	__REPLIPIPE_CMD_MAX,
};
#define REPLIPIPE_CMD_MAX (__REPLIPIPE_CMD_MAX - 1)

/* Top-level attributes. */
enum replipipe_attr {
	REPLIPIPE_A_UNSPEC,
	REPLIPIPE_A_PIPE_ID,		/* NUL string */
	REPLIPIPE_A_PIPE_NAME,		/* NUL string */
	REPLIPIPE_A_PIPE_MODE,		/* u8, enum replipipe_mode */
	REPLIPIPE_A_PIPE_FAILURE_POLICY, /* u8, enum replipipe_failure_policy */
	REPLIPIPE_A_PIPE_MAX_LAG_KIB,	/* u32 */
	REPLIPIPE_A_PIPE_REGION_KIB,	/* u32, power of two */
	REPLIPIPE_A_PIPE_PAIRS,		/* nest of REPLIPIPE_A_PIPE_PAIR;
					 * may be repeated: a nest's length
					 * is a u16 (64 KiB), 256 pairs with
					 * long paths take more. The pipe's
					 * pairs are those of every nest, in
					 * order (PIPE_SET and replies). */
	REPLIPIPE_A_PIPE_PAIR,		/* nest, enum replipipe_pair_attr */
	REPLIPIPE_A_PAIR_SOURCE,	/* NUL string: selects a pair (PAIR_SET,
					 * BITMAP_GET, RESYNC_CLAIM) */
	REPLIPIPE_A_PAIR_STATE,		/* u8: PAIR_SET's requested state */
	REPLIPIPE_A_BITMAP_OFFSET,	/* u64, in regions */
	REPLIPIPE_A_BITMAP_DATA,	/* binary, <= REPLIPIPE_BITMAP_CHUNK_BYTES */
	REPLIPIPE_A_BITMAP_NBITS,	/* u64, regions in the pair */
	REPLIPIPE_A_CLAIM_ID,		/* u64 */
	REPLIPIPE_A_CLAIM_HINT,		/* u64, region index */
	REPLIPIPE_A_CLAIM_MAX_REGIONS,	/* u32 */
	REPLIPIPE_A_CLAIM_FIRST,	/* u64, region index */
	REPLIPIPE_A_CLAIM_COUNT,	/* u32 */
	REPLIPIPE_A_PAD,
	REPLIPIPE_A_CLAIM_PAIR_SERIAL,	/* u64, optional on RESYNC_CLAIM: the
					 * claim is refused with ESTALE unless
					 * the pair is still the one with this
					 * REPLIPIPE_A_PAIR_SERIAL */
	REPLIPIPE_A_CLAIM_TIME_LEFT_MS,	/* u32, RESYNC_CLAIM's reply: what is
					 * left of the claim's
					 * claim_timeout_sec when the reply
					 * is sent: its time starts after the
					 * wait at the fence, before the wait
					 * for the writes in flight to drain,
					 * which it includes */
	REPLIPIPE_A_CLAIM_PENDING,	/* flag, in a reply: the claim is not
					 * granted yet (RESYNC_CLAIM_WAIT) */
	REPLIPIPE_A_PAIR_RESUME_WAIT,	/* flag, on PAIR_SET Syncing: wait for
					 * the resume asked for before */
	__REPLIPIPE_A_MAX,
};
#define REPLIPIPE_A_MAX (__REPLIPIPE_A_MAX - 1)

/* Attributes nested in REPLIPIPE_A_PIPE_PAIR. */
enum replipipe_pair_attr {
	REPLIPIPE_A_PAIR_UNSPEC,
	REPLIPIPE_A_PAIR_SRC,		/* NUL string, "replipipe_<N>/<name>" */
	REPLIPIPE_A_PAIR_TGT,		/* NUL string, block device path */
	REPLIPIPE_A_PAIR_ASSUME_CLEAN,	/* flag: start InSync (set only) */
	REPLIPIPE_A_PAIR_ST,		/* u8, enum replipipe_pair_state */
	REPLIPIPE_A_PAIR_REGIONS,	/* u64, regions in the pair */
	REPLIPIPE_A_PAIR_DIRTY_REGIONS,	/* u64 */
	REPLIPIPE_A_PAIR_WRITES_MIRRORED, /* u64 */
	REPLIPIPE_A_PAIR_BYTES_MIRRORED, /* u64 */
	REPLIPIPE_A_PAIR_TARGET_ERRORS,	/* u64 */
	REPLIPIPE_A_PAIR_LAG_BYTES,	/* u64, async bytes in flight */
	REPLIPIPE_A_PAIR_SOURCE_BYTES,	/* u64, size of the source */
	REPLIPIPE_A_PAIR_PAD,
	REPLIPIPE_A_PAIR_INTENT,	/* u8, enum replipipe_intent_state */
	REPLIPIPE_A_PAIR_INTENT_LOADED,	/* u64, dirty regions the record gave */
	REPLIPIPE_A_PAIR_INTENT_MARKED,	/* u64, regions marked in it now */
	REPLIPIPE_A_PAIR_SERIAL,	/* u64, never the same for two pairs
					 * the module made (a replaced pair
					 * has a new one) */
	REPLIPIPE_A_PAIR_SRC_DEV,	/* u32, device numbers of the source's */
	REPLIPIPE_A_PAIR_TGT_DEV,	/* primary and the target as the module
					 * holds them open, in stat(2)'s st_rdev
					 * form for majors below 4096 (kernel:
					 * new_encode_dev()) */
	__REPLIPIPE_A_PAIR_MAX,
};
#define REPLIPIPE_A_PAIR_MAX (__REPLIPIPE_A_PAIR_MAX - 1)

#endif /* _UAPI_LINUX_REPLIPIPE_H */
