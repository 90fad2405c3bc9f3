// SPDX-License-Identifier: GPL-2.0
/*
 * rp_genl.c: the generic netlink family "replipipe" (uapi/linux/replipipe.h).
 *
 * Policies are per operation and strict: an attribute an operation does not
 * take is rejected.  Every state-changing operation needs CAP_NET_ADMIN.
 * One *_fill() per object serves doit, dumpit and notifications.
 * The family is parallel: handlers serialize on rp_config_lock, and a
 * RESYNC_CLAIM waiting for writes to drain or a PAIR_SET waiting for its
 * probe of the target blocks nobody else (for at most
 * REPLIPIPE_CLAIM_WAIT_MS and REPLIPIPE_RESUME_WAIT_MS: rp_claim_advance()
 * and rp_pair_resume() say why).
 */
#define pr_fmt(fmt) "replipipe: " fmt

#include <linux/log2.h>
#include <linux/slab.h>
#include <net/genetlink.h>

#include "replipipe_internal.h"

static struct genl_family rp_family;
static bool rp_family_registered;	/* notifications only while it is */

static struct netlink_range_validation rp_region_range = {
	.min = REPLIPIPE_REGION_KIB_MIN,
	.max = REPLIPIPE_REGION_KIB_MAX,
};

static struct netlink_range_validation rp_lag_range = {
	.min = REPLIPIPE_MAX_LAG_KIB_MIN,
	.max = REPLIPIPE_MAX_LAG_KIB_MAX,
};

static struct netlink_range_validation rp_claim_range = {
	.min = 1,
	.max = REPLIPIPE_CLAIM_MAX_REGIONS,
};

static const struct nla_policy rp_pair_policy[REPLIPIPE_A_PAIR_MAX + 1] = {
	[REPLIPIPE_A_PAIR_UNSPEC]	= { .strict_start_type = 1 },
	[REPLIPIPE_A_PAIR_SRC]		= { .type = NLA_NUL_STRING,
					    .len = REPLIPIPE_SOURCE_MAX_LEN },
	[REPLIPIPE_A_PAIR_TGT]		= { .type = NLA_NUL_STRING,
					    .len = REPLIPIPE_TARGET_MAX_LEN },
	[REPLIPIPE_A_PAIR_ASSUME_CLEAN]	= { .type = NLA_FLAG },
};

static const struct nla_policy rp_pairs_policy[REPLIPIPE_A_MAX + 1] = {
	[REPLIPIPE_A_UNSPEC]		= { .strict_start_type = 1 },
	[REPLIPIPE_A_PIPE_PAIR]		= NLA_POLICY_NESTED(rp_pair_policy),
};

#define RP_POLICY_PIPE_ID						\
	[REPLIPIPE_A_PIPE_ID]	= { .type = NLA_NUL_STRING,		\
				    .len = REPLIPIPE_PIPE_ID_MAX_LEN }
#define RP_POLICY_SOURCE						\
	[REPLIPIPE_A_PAIR_SOURCE] = { .type = NLA_NUL_STRING,		\
				      .len = REPLIPIPE_SOURCE_MAX_LEN }

static const struct nla_policy rp_pipe_set_policy[REPLIPIPE_A_MAX + 1] = {
	[REPLIPIPE_A_UNSPEC]		= { .strict_start_type = 1 },
	RP_POLICY_PIPE_ID,
	[REPLIPIPE_A_PIPE_NAME]		= { .type = NLA_NUL_STRING,
					    .len = REPLIPIPE_NAME_MAX_LEN },
	[REPLIPIPE_A_PIPE_MODE]		= NLA_POLICY_MAX(NLA_U8,
							 REPLIPIPE_MODE_MAX),
	[REPLIPIPE_A_PIPE_FAILURE_POLICY] = NLA_POLICY_MAX(NLA_U8,
							   REPLIPIPE_POLICY_MAX),
	[REPLIPIPE_A_PIPE_MAX_LAG_KIB]	= NLA_POLICY_FULL_RANGE(NLA_U32,
								&rp_lag_range),
	[REPLIPIPE_A_PIPE_REGION_KIB]	= NLA_POLICY_FULL_RANGE(NLA_U32,
								&rp_region_range),
	[REPLIPIPE_A_PIPE_PAIRS]	= NLA_POLICY_NESTED(rp_pairs_policy),
};

static const struct nla_policy rp_pipe_id_policy[REPLIPIPE_A_MAX + 1] = {
	[REPLIPIPE_A_UNSPEC]		= { .strict_start_type = 1 },
	RP_POLICY_PIPE_ID,
};

static const struct nla_policy rp_pair_set_policy[REPLIPIPE_A_MAX + 1] = {
	[REPLIPIPE_A_UNSPEC]		= { .strict_start_type = 1 },
	RP_POLICY_PIPE_ID,
	RP_POLICY_SOURCE,
	[REPLIPIPE_A_PAIR_STATE]	= NLA_POLICY_MAX(NLA_U8,
						REPLIPIPE_PAIR_STATE_MAX),
	[REPLIPIPE_A_PAIR_RESUME_WAIT]	= { .type = NLA_FLAG },
};

static const struct nla_policy rp_bitmap_get_policy[REPLIPIPE_A_MAX + 1] = {
	[REPLIPIPE_A_UNSPEC]		= { .strict_start_type = 1 },
	RP_POLICY_PIPE_ID,
	RP_POLICY_SOURCE,
};

static const struct nla_policy rp_claim_policy[REPLIPIPE_A_MAX + 1] = {
	[REPLIPIPE_A_UNSPEC]		= { .strict_start_type = 1 },
	RP_POLICY_PIPE_ID,
	RP_POLICY_SOURCE,
	[REPLIPIPE_A_CLAIM_HINT]	= { .type = NLA_U64 },
	[REPLIPIPE_A_CLAIM_MAX_REGIONS]	= NLA_POLICY_FULL_RANGE(NLA_U32,
								&rp_claim_range),
	[REPLIPIPE_A_CLAIM_PAIR_SERIAL]	= { .type = NLA_U64 },
};

static const struct nla_policy rp_claim_end_policy[REPLIPIPE_A_MAX + 1] = {
	[REPLIPIPE_A_UNSPEC]		= { .strict_start_type = 1 },
	[REPLIPIPE_A_CLAIM_ID]		= { .type = NLA_U64 },
};

static size_t rp_pair_msg_size(void)
{
	return nla_total_size(0) +
	       nla_total_size(REPLIPIPE_SOURCE_MAX_LEN + 1) +
	       nla_total_size(REPLIPIPE_TARGET_MAX_LEN + 1) +
	       2 * nla_total_size(sizeof(u8)) +
	       2 * nla_total_size(sizeof(u32)) +
	       10 * nla_total_size_64bit(sizeof(u64));
}

/* Each pair may start a REPLIPIPE_A_PIPE_PAIRS nest (rp_pipe_fill()). */
static size_t rp_pipe_msg_size(struct rp_pipe *pipe, bool with_pairs)
{
	return nla_total_size(REPLIPIPE_PIPE_ID_MAX_LEN + 1) +
	       nla_total_size(REPLIPIPE_NAME_MAX_LEN + 1) +
	       2 * nla_total_size(sizeof(u8)) +
	       2 * nla_total_size(sizeof(u32)) +
	       nla_total_size(0) +
	       (with_pairs ? pipe->nr_pairs * (rp_pair_msg_size() +
					       nla_total_size(0)) : 0);
}

/* One REPLIPIPE_A_PIPE_PAIR nest. */
static int rp_pair_fill(struct sk_buff *skb, struct rp_pair *pair)
{
	u64 nr_dirty, lag;
	struct nlattr *nest;
	u8 state;

	spin_lock_irq(&pair->lock);
	state = pair->state;
	nr_dirty = pair->nr_dirty;
	lag = pair->lag_bytes;
	spin_unlock_irq(&pair->lock);

	nest = nla_nest_start(skb, REPLIPIPE_A_PIPE_PAIR);
	if (!nest)
		return -EMSGSIZE;
	if (nla_put_string(skb, REPLIPIPE_A_PAIR_SRC, pair->src->name) ||
	    nla_put_string(skb, REPLIPIPE_A_PAIR_TGT, pair->tgt_path) ||
	    nla_put_u8(skb, REPLIPIPE_A_PAIR_ST, state) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_REGIONS, pair->nr_regions,
			      REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_DIRTY_REGIONS, nr_dirty,
			      REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_WRITES_MIRRORED,
			      atomic64_read(&pair->writes_mirrored),
			      REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_BYTES_MIRRORED,
			      atomic64_read(&pair->bytes_mirrored),
			      REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_TARGET_ERRORS,
			      atomic64_read(&pair->target_errors),
			      REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_LAG_BYTES, lag,
			      REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_SOURCE_BYTES,
			      pair->src_bytes, REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_SERIAL, pair->serial,
			      REPLIPIPE_A_PAIR_PAD) ||
	    nla_put_u32(skb, REPLIPIPE_A_PAIR_SRC_DEV,
			new_encode_dev(pair->src->primary.bdev->bd_dev)) ||
	    nla_put_u32(skb, REPLIPIPE_A_PAIR_TGT_DEV,
			new_encode_dev(pair->tgt.bdev->bd_dev)) ||
	    nla_put_u8(skb, REPLIPIPE_A_PAIR_INTENT, pair->intent_state))
		goto cancel;
	if (pair->src->intent &&
	    (nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_INTENT_LOADED,
			       pair->intent_loaded, REPLIPIPE_A_PAIR_PAD) ||
	     nla_put_u64_64bit(skb, REPLIPIPE_A_PAIR_INTENT_MARKED,
			       rp_intent_marked(pair->src->intent),
			       REPLIPIPE_A_PAIR_PAD)))
		goto cancel;
	nla_nest_end(skb, nest);
	return 0;

cancel:
	nla_nest_cancel(skb, nest);
	return -EMSGSIZE;
}

/* One pipe message: PIPE_GET replies, dumps and EVT_PIPE_*. */
static int rp_pipe_fill(struct sk_buff *skb, struct rp_pipe *pipe, u32 portid,
			u32 seq, int flags, u8 cmd, bool with_pairs)
{
	struct rp_pair *pair;
	struct nlattr *nest;
	void *hdr;

	hdr = genlmsg_put(skb, portid, seq, &rp_family, flags, cmd);
	if (!hdr)
		return -EMSGSIZE;
	if (nla_put_string(skb, REPLIPIPE_A_PIPE_ID, pipe->id) ||
	    nla_put_string(skb, REPLIPIPE_A_PIPE_NAME, pipe->name) ||
	    nla_put_u8(skb, REPLIPIPE_A_PIPE_MODE, pipe->mode) ||
	    nla_put_u8(skb, REPLIPIPE_A_PIPE_FAILURE_POLICY, pipe->policy) ||
	    nla_put_u32(skb, REPLIPIPE_A_PIPE_MAX_LAG_KIB, pipe->max_lag_kib) ||
	    nla_put_u32(skb, REPLIPIPE_A_PIPE_REGION_KIB, pipe->region_kib))
		goto cancel;
	if (with_pairs) {
		nest = nla_nest_start(skb, REPLIPIPE_A_PIPE_PAIRS);
		if (!nest)
			goto cancel;
		list_for_each_entry(pair, &pipe->pairs, node) {
			/*
			 * An attribute's length is a u16, and 256 pairs take
			 * up to ~136 KiB: the pairs go into as many
			 * REPLIPIPE_A_PIPE_PAIRS nests as they need.
			 */
			if (skb_tail_pointer(skb) - (unsigned char *)nest +
			    rp_pair_msg_size() > U16_MAX) {
				nla_nest_end(skb, nest);
				nest = nla_nest_start(skb,
						      REPLIPIPE_A_PIPE_PAIRS);
				if (!nest)
					goto cancel;
			}
			if (rp_pair_fill(skb, pair))
				goto cancel;
		}
		nla_nest_end(skb, nest);
	}
	genlmsg_end(skb, hdr);
	return 0;

cancel:
	genlmsg_cancel(skb, hdr);
	return -EMSGSIZE;
}

/*
 * An event could not be built (a pipe's is up to about 140 KiB, a high-order
 * allocation): its listeners get ENOBUFS on their sockets, as after an
 * overrun, so that they read the state again instead of missing a change.
 * The code is negative, as netlink_set_err() wants: given positive, the
 * socket's error was -ENOBUFS, which a receive returns as a count of 105
 * bytes read, and sockets with NETLINK_NO_ENOBUFS got it too.
 */
static void rp_genl_event_lost(void)
{
	genl_set_err(&rp_family, &init_net, 0, 0, -ENOBUFS);
}

/*
 * An event's message, or NULL (the debug tier's fail_event).  Not warned
 * about when it cannot be had: its listeners are told (ENOBUFS).
 */
static struct sk_buff *rp_genl_event_new(size_t size)
{
	return rp_fail_event() ? NULL :
	       genlmsg_new(size, GFP_KERNEL | __GFP_NOWARN);
}

/* EVT_PIPE_ADDED/CHANGED/DELETED.  rp_config_lock held. */
void rp_genl_notify_pipe(struct rp_pipe *pipe, u8 cmd)
{
	bool with_pairs = cmd != REPLIPIPE_CMD_EVT_PIPE_DELETED;
	struct sk_buff *skb;

	if (!READ_ONCE(rp_family_registered) ||
	    !genl_has_listeners(&rp_family, &init_net, 0))
		return;
	skb = rp_genl_event_new(rp_pipe_msg_size(pipe, with_pairs));
	if (!skb) {
		rp_genl_event_lost();
		return;
	}
	if (rp_pipe_fill(skb, pipe, 0, 0, 0, cmd, with_pairs)) {
		kfree_skb(skb);
		rp_genl_event_lost();
		return;
	}
	genlmsg_multicast(&rp_family, skb, 0, 0, GFP_KERNEL);
}

/* EVT_PAIR_STATE.  Process context; the pair is alive. */
void rp_genl_notify_pair(struct rp_pair *pair)
{
	struct sk_buff *skb;
	void *hdr;

	if (!READ_ONCE(rp_family_registered) ||
	    !genl_has_listeners(&rp_family, &init_net, 0))
		return;
	skb = rp_genl_event_new(nla_total_size(REPLIPIPE_PIPE_ID_MAX_LEN + 1) +
				rp_pair_msg_size());
	if (!skb) {
		rp_genl_event_lost();
		return;
	}
	hdr = genlmsg_put(skb, 0, 0, &rp_family, 0,
			  REPLIPIPE_CMD_EVT_PAIR_STATE);
	if (!hdr)
		goto free;
	if (nla_put_string(skb, REPLIPIPE_A_PIPE_ID, pair->pipe->id) ||
	    rp_pair_fill(skb, pair)) {
		genlmsg_cancel(skb, hdr);
		goto free;
	}
	genlmsg_end(skb, hdr);
	genlmsg_multicast(&rp_family, skb, 0, 0, GFP_KERNEL);
	return;
free:
	kfree_skb(skb);
	rp_genl_event_lost();
}

/* Reports a missing attribute; @msg must be a string literal. */
static int rp_require(struct genl_info *info, int attr, const char *msg)
{
	if (!GENL_REQ_ATTR_CHECK(info, attr))
		return 0;
	if (info->extack)
		info->extack->_msg = msg;
	return -EINVAL;
}

static int rp_parse_pair(struct nlattr *nla, struct rp_pair_spec *ps,
			 struct netlink_ext_ack *extack)
{
	struct nlattr *tb[REPLIPIPE_A_PAIR_MAX + 1];
	int ret;

	ret = nla_parse_nested(tb, REPLIPIPE_A_PAIR_MAX, nla, rp_pair_policy,
			       extack);
	if (ret)
		return ret;
	if (NL_REQ_ATTR_CHECK(extack, nla, tb, REPLIPIPE_A_PAIR_SRC)) {
		NL_SET_ERR_MSG(extack, "pair without a source");
		return -EINVAL;
	}
	if (NL_REQ_ATTR_CHECK(extack, nla, tb, REPLIPIPE_A_PAIR_TGT)) {
		NL_SET_ERR_MSG(extack, "pair without a target");
		return -EINVAL;
	}
	ps->src_attr = tb[REPLIPIPE_A_PAIR_SRC];
	ps->tgt_attr = tb[REPLIPIPE_A_PAIR_TGT];
	ps->src = nla_data(ps->src_attr);
	ps->tgt = nla_data(ps->tgt_attr);
	ps->assume_clean = nla_get_flag(tb[REPLIPIPE_A_PAIR_ASSUME_CLEAN]);
	/* Else the lookup says "no such backstore" of a name it cut. */
	if (!ps->src[0]) {
		NL_SET_ERR_MSG_ATTR(extack, ps->src_attr,
				    "the pair's source is empty");
		return -EINVAL;
	}
	if (ps->tgt[0] != '/') {
		NL_SET_ERR_MSG_ATTR(extack, ps->tgt_attr,
				    "target must be an absolute block device path");
		return -EINVAL;
	}
	return 0;
}

/*
 * The pairs of every REPLIPIPE_A_PIPE_PAIRS nest of the message, in order:
 * a nest's length is a u16, so a pipe of many pairs with long paths needs
 * several (the policy validated each of them).
 */
static int rp_parse_pairs(struct genl_info *info, struct rp_pipe_spec *spec)
{
	const struct nlattr *head = genlmsg_data(info->genlhdr);
	int len = genlmsg_len(info->genlhdr);
	const struct nlattr *top;
	unsigned int n = 0;
	struct nlattr *nla;
	int rem, rem2, ret;

	nla_for_each_attr(top, head, len, rem)
		if (nla_type(top) == REPLIPIPE_A_PIPE_PAIRS)
			nla_for_each_nested(nla, top, rem2)
				n++;
	if (n > REPLIPIPE_MAX_PAIRS) {
		NL_SET_ERR_MSG_ATTR(info->extack,
				    info->attrs[REPLIPIPE_A_PIPE_PAIRS],
				    "too many pairs in one pipe");
		return -E2BIG;
	}
	if (!n)
		return 0;
	spec->pairs = kcalloc(n, sizeof(*spec->pairs), GFP_KERNEL);
	if (!spec->pairs) {
		NL_SET_ERR_MSG(info->extack, "out of memory for the pairs");
		return -ENOMEM;
	}
	nla_for_each_attr(top, head, len, rem) {
		if (nla_type(top) != REPLIPIPE_A_PIPE_PAIRS)
			continue;
		nla_for_each_nested(nla, top, rem2) {
			ret = rp_parse_pair(nla,
					    &spec->pairs[spec->nr_pairs],
					    info->extack);
			if (ret)
				return ret;
			spec->nr_pairs++;
		}
	}
	return 0;
}

/* PIPE_SET: the message is the whole definition; absent values default. */
static int rp_nl_pipe_set(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **attrs = info->attrs;
	struct rp_pipe_spec spec = {
		.name		= "",
		.mode		= REPLIPIPE_MODE_SYNC,
		.policy		= REPLIPIPE_POLICY_DEGRADE,
		.max_lag_kib	= 65536,
		.region_kib	= 64,
	};
	bool created;
	int ret;

	ret = rp_require(info, REPLIPIPE_A_PIPE_ID, "missing pipe id");
	if (ret)
		return ret;
	spec.id = nla_data(attrs[REPLIPIPE_A_PIPE_ID]);
	if (!spec.id[0]) {
		NL_SET_ERR_MSG_ATTR(info->extack, attrs[REPLIPIPE_A_PIPE_ID],
				    "empty pipe id");
		return -EINVAL;
	}
	if (attrs[REPLIPIPE_A_PIPE_NAME])
		spec.name = nla_data(attrs[REPLIPIPE_A_PIPE_NAME]);
	if (attrs[REPLIPIPE_A_PIPE_MODE])
		spec.mode = nla_get_u8(attrs[REPLIPIPE_A_PIPE_MODE]);
	if (attrs[REPLIPIPE_A_PIPE_FAILURE_POLICY])
		spec.policy = nla_get_u8(attrs[REPLIPIPE_A_PIPE_FAILURE_POLICY]);
	if (attrs[REPLIPIPE_A_PIPE_MAX_LAG_KIB])
		spec.max_lag_kib = nla_get_u32(attrs[REPLIPIPE_A_PIPE_MAX_LAG_KIB]);
	spec.region_attr = attrs[REPLIPIPE_A_PIPE_REGION_KIB];
	if (spec.region_attr) {
		spec.region_kib = nla_get_u32(spec.region_attr);
		if (!is_power_of_2(spec.region_kib)) {
			NL_SET_ERR_MSG_ATTR(info->extack, spec.region_attr,
					    "region size must be a power of two between 4 and 65536 KiB");
			return -EINVAL;
		}
	}
	if (attrs[REPLIPIPE_A_PIPE_PAIRS]) {
		ret = rp_parse_pairs(info, &spec);
		if (ret)
			goto free_pairs;
	}
	ret = rp_pipe_set(&spec, info->extack, &created);
free_pairs:
	kfree(spec.pairs);
	return ret;
}

static int rp_nl_pipe_del(struct sk_buff *skb, struct genl_info *info)
{
	int ret;

	ret = rp_require(info, REPLIPIPE_A_PIPE_ID, "missing pipe id");
	if (ret)
		return ret;
	return rp_pipe_del(nla_data(info->attrs[REPLIPIPE_A_PIPE_ID]),
			   info->extack);
}

static int rp_nl_pipe_get_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct rp_pipe *pipe;
	struct sk_buff *msg;
	int ret;

	ret = rp_require(info, REPLIPIPE_A_PIPE_ID, "missing pipe id");
	if (ret)
		return ret;

	mutex_lock(&rp_config_lock);
	pipe = rp_pipe_find(nla_data(info->attrs[REPLIPIPE_A_PIPE_ID]));
	if (!pipe) {
		NL_SET_ERR_MSG_ATTR(info->extack,
				    info->attrs[REPLIPIPE_A_PIPE_ID],
				    "no pipe with that id");
		ret = -ENOENT;
		goto unlock;
	}
	/* Up to about 140 KiB: a failure is the caller's ENOMEM, no splat. */
	msg = genlmsg_new(rp_pipe_msg_size(pipe, true),
			  GFP_KERNEL | __GFP_NOWARN);
	if (!msg) {
		NL_SET_ERR_MSG(info->extack, "out of memory for the reply");
		ret = -ENOMEM;
		goto unlock;
	}
	ret = rp_pipe_fill(msg, pipe, info->snd_portid, info->snd_seq, 0,
			   REPLIPIPE_CMD_PIPE_GET, true);
	mutex_unlock(&rp_config_lock);
	if (ret) {
		nlmsg_free(msg);
		return ret;
	}
	return genlmsg_reply(msg, info);

unlock:
	mutex_unlock(&rp_config_lock);
	return ret;
}

/*
 * A pipe is one message, in a dump as in the doit reply and the EVT_PIPE_*
 * notifications (one rp_pipe_msg_size() skb each): a pair nest takes up to
 * ~530 bytes and a pipe up to REPLIPIPE_MAX_PAIRS of them, more than the
 * dump's skb (at most 32 KiB, NLMSG_GOODSIZE when memory is fragmented).
 * So every message of the dump is made large enough for the largest pipe
 * there is now (min_dump_alloc is a u32 in every kernel we build for), and
 * small setups keep the default.  Splitting a pipe's pairs over several
 * messages would avoid the large allocation, but user space would have to
 * merge messages (the doit reply too), for a size that PIPE_GET's doit and
 * the notifications allocate anyway.  A pipe that grows during the dump
 * beyond that size fails it with EMSGSIZE: dump again.
 */
static int rp_nl_pipe_get_start(struct netlink_callback *cb)
{
	size_t largest = 0;
	struct rp_pipe *pipe;

	mutex_lock(&rp_config_lock);
	list_for_each_entry(pipe, &rp_pipes, node)
		largest = max(largest, rp_pipe_msg_size(pipe, true));
	mutex_unlock(&rp_config_lock);
	cb->min_dump_alloc = NLMSG_HDRLEN + GENL_HDRLEN + largest;
	return 0;
}

/*
 * Resumes by position in rp_pipes: a pipe that joined or left it between two
 * callbacks shifts what comes after, so a pipe may be left out or sent
 * twice.  Such a callback's messages, and NLMSG_DONE, then carry
 * NLM_F_DUMP_INTR (the list's generation is cb->seq): the client dumps
 * again.
 */
static int rp_nl_pipe_get_dumpit(struct sk_buff *skb, struct netlink_callback *cb)
{
	long idx = 0, start = cb->args[0];
	struct nlmsghdr *nlh;
	struct rp_pipe *pipe;
	int ret = 0;

	mutex_lock(&rp_config_lock);
	cb->seq = rp_pipes_gen ?: 1;	/* 0: "not set" to the check */
	list_for_each_entry(pipe, &rp_pipes, node) {
		if (idx < start) {
			idx++;
			continue;
		}
		nlh = (struct nlmsghdr *)skb_tail_pointer(skb);
		if (rp_pipe_fill(skb, pipe, NETLINK_CB(cb->skb).portid,
				 cb->nlh->nlmsg_seq, NLM_F_MULTI,
				 REPLIPIPE_CMD_PIPE_GET, true)) {
			/* Only a pipe that grew since the start does not fit. */
			if (!skb->len) {
				NL_SET_ERR_MSG(cb->extack,
					       "a pipe grew during the dump; dump again");
				ret = -EMSGSIZE;
			}
			break;
		}
		nl_dump_check_consistent(cb, nlh);
		idx++;
	}
	mutex_unlock(&rp_config_lock);
	cb->args[0] = idx;
	return ret ? ret : skb->len;
}

/* The pair named by PAIR_SOURCE (and PIPE_ID if given).  rp_config_lock held. */
static struct rp_pair *rp_nl_pair(struct nlattr **attrs,
				  struct netlink_ext_ack *extack)
{
	struct nlattr *src = attrs[REPLIPIPE_A_PAIR_SOURCE];
	struct nlattr *id = attrs[REPLIPIPE_A_PIPE_ID];
	struct rp_pair *pair;

	if (!src) {
		NL_SET_ERR_ATTR_MISS(extack, NULL, REPLIPIPE_A_PAIR_SOURCE);
		NL_SET_ERR_MSG(extack, "missing pair source");
		return ERR_PTR(-EINVAL);
	}
	pair = rp_pair_find(nla_data(src));
	if (!pair) {
		NL_SET_ERR_MSG_ATTR(extack, src, "no pair with that source");
		return ERR_PTR(-ENOENT);
	}
	if (id && strcmp(pair->pipe->id, nla_data(id))) {
		NL_SET_ERR_MSG_ATTR(extack, id, "the pair is in another pipe");
		return ERR_PTR(-ENOENT);
	}
	return pair;
}

static int rp_nl_pair_set(struct sk_buff *skb, struct genl_info *info)
{
	bool again = nla_get_flag(info->attrs[REPLIPIPE_A_PAIR_RESUME_WAIT]);
	struct rp_pair *pair;
	u8 state;
	int ret;

	ret = rp_require(info, REPLIPIPE_A_PAIR_STATE, "missing pair state");
	if (ret)
		return ret;
	state = nla_get_u8(info->attrs[REPLIPIPE_A_PAIR_STATE]);
	if (state != REPLIPIPE_PAIR_PAUSED && state != REPLIPIPE_PAIR_SYNCING) {
		NL_SET_ERR_MSG_ATTR(info->extack,
				    info->attrs[REPLIPIPE_A_PAIR_STATE],
				    "only Paused or Syncing can be requested");
		return -EINVAL;
	}
	if (again && state != REPLIPIPE_PAIR_SYNCING) {
		NL_SET_ERR_MSG_ATTR(info->extack,
				    info->attrs[REPLIPIPE_A_PAIR_RESUME_WAIT],
				    "PAIR_RESUME_WAIT goes with Syncing only");
		return -EINVAL;
	}

	mutex_lock(&rp_config_lock);
	pair = rp_nl_pair(info->attrs, info->extack);
	if (IS_ERR(pair)) {
		mutex_unlock(&rp_config_lock);
		return PTR_ERR(pair);
	}
	refcount_inc(&pair->refs);
	mutex_unlock(&rp_config_lock);

	/* A pair removed meanwhile is dead: both refuse it. */
	if (state == REPLIPIPE_PAIR_SYNCING)
		ret = rp_pair_resume(pair, again, info->extack);
	else
		ret = rp_pair_pause(pair, info->extack);
	rp_pair_put(pair);
	return ret;
}

/*
 * Copies bits [off, off + nbits) of @map into @buf, little-endian order, a
 * byte at a time: under pair->lock, with interrupts off, which every write
 * of the pair takes, and any user may dump.  @off is a multiple of a chunk
 * (REPLIPIPE_BITMAP_CHUNK_BYTES * 8 bits), so of BITS_PER_LONG.
 */
static void rp_bitmap_copy(u8 *buf, const unsigned long *map, u64 off,
			   u64 nbits)
{
	const unsigned long *words = map + off / BITS_PER_LONG;
	u64 bytes = DIV_ROUND_UP(nbits, 8);
	u64 i;

	BUILD_BUG_ON(REPLIPIPE_BITMAP_CHUNK_BYTES * 8 % BITS_PER_LONG);
	for (i = 0; i < bytes; i++)
		buf[i] = words[i / sizeof(long)] >> (8 * (i % sizeof(long)));
	/* Bits past the pair's last region are not its own. */
	if (nbits % 8)
		buf[bytes - 1] &= (1 << (nbits % 8)) - 1;
}

static int rp_bitmap_fill(struct sk_buff *skb, struct netlink_callback *cb,
			  struct rp_pair *pair, u64 off)
{
	u64 nbits = min_t(u64, pair->nr_regions - off,
			  REPLIPIPE_BITMAP_CHUNK_BYTES * 8);
	struct nlattr *data;
	void *hdr;

	hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
			  &rp_family, NLM_F_MULTI, REPLIPIPE_CMD_BITMAP_GET);
	if (!hdr)
		return -EMSGSIZE;
	if (nla_put_string(skb, REPLIPIPE_A_PAIR_SOURCE, pair->src->name) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_BITMAP_NBITS, pair->nr_regions,
			      REPLIPIPE_A_PAD) ||
	    nla_put_u64_64bit(skb, REPLIPIPE_A_BITMAP_OFFSET, off,
			      REPLIPIPE_A_PAD))
		goto cancel;
	data = nla_reserve(skb, REPLIPIPE_A_BITMAP_DATA, DIV_ROUND_UP(nbits, 8));
	if (!data)
		goto cancel;
	spin_lock_irq(&pair->lock);
	rp_bitmap_copy(nla_data(data), pair->dirty, off, nbits);
	spin_unlock_irq(&pair->lock);
	genlmsg_end(skb, hdr);
	return 0;

cancel:
	genlmsg_cancel(skb, hdr);
	return -EMSGSIZE;
}

/* A full chunk is larger than the default dump message (NLMSG_GOODSIZE). */
static int rp_nl_bitmap_start(struct netlink_callback *cb)
{
	cb->min_dump_alloc = NLMSG_HDRLEN + GENL_HDRLEN +
			     nla_total_size(REPLIPIPE_SOURCE_MAX_LEN + 1) +
			     2 * nla_total_size_64bit(sizeof(u64)) +
			     nla_total_size(REPLIPIPE_BITMAP_CHUNK_BYTES);
	return 0;
}

/*
 * BITMAP_GET: cb->args[0] is the next offset, args[1] set once done,
 * args[2] the serial of the pair dumped.
 */
static int rp_nl_bitmap_dumpit(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct rp_pair *pair;
	u64 off = cb->args[0];
	int ret = 0;

	if (cb->args[1])
		return 0;
	mutex_lock(&rp_config_lock);
	pair = rp_nl_pair(rp_dump_attrs(cb), cb->extack);
	if (IS_ERR(pair)) {
		ret = PTR_ERR(pair);
		goto unlock;
	}
	/* Each call looks the pair up anew: it must be the one it started on. */
	if (off && cb->args[2] != (long)pair->serial) {
		NL_SET_ERR_MSG(cb->extack, "the pair was replaced during the dump");
		ret = -EAGAIN;
		goto unlock;
	}
	cb->args[2] = (long)pair->serial;
	do {
		if (rp_bitmap_fill(skb, cb, pair, off)) {
			if (!skb->len) {
				NL_SET_ERR_MSG(cb->extack,
					       "a bitmap chunk does not fit in the dump's message");
				ret = -EMSGSIZE;
				goto unlock;
			}
			break;
		}
		off += REPLIPIPE_BITMAP_CHUNK_BYTES * 8;
	} while (off < pair->nr_regions);
	if (off >= pair->nr_regions)
		cb->args[1] = 1;
	cb->args[0] = off;
	ret = skb->len;
unlock:
	mutex_unlock(&rp_config_lock);
	return ret;
}

/*
 * Answers RESYNC_CLAIM or RESYNC_CLAIM_WAIT (@cmd) with @reply.  A reply
 * that cannot be delivered (the receive buffer is full of events: EAGAIN)
 * leaves the owner without the claim's id, so nobody would end it and
 * writes to its regions would be held until claim_timeout_sec: it is
 * dropped now, while the caller's pair reference is held.
 */
static int rp_claim_reply_send(struct genl_info *info, u8 cmd,
			       struct rp_pair *pair,
			       const struct rp_claim_reply *reply)
{
	struct sk_buff *msg;
	void *hdr;
	int ret;

	msg = genlmsg_new(nla_total_size(REPLIPIPE_SOURCE_MAX_LEN + 1) +
			  2 * nla_total_size_64bit(sizeof(u64)) +
			  2 * nla_total_size(sizeof(u32)) + nla_total_size(0),
			  GFP_KERNEL);
	if (!msg) {
		NL_SET_ERR_MSG(info->extack,
			       "out of memory for the claim's reply; the claim is dropped");
		ret = -ENOMEM;
		goto abort;
	}
	hdr = genlmsg_put_reply(msg, info, &rp_family, 0, cmd);
	if (!hdr ||
	    nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, pair->src->name) ||
	    nla_put_u64_64bit(msg, REPLIPIPE_A_CLAIM_ID, reply->id,
			      REPLIPIPE_A_PAD) ||
	    (reply->pending &&
	     nla_put_flag(msg, REPLIPIPE_A_CLAIM_PENDING)) ||
	    (!reply->pending &&
	     (nla_put_u64_64bit(msg, REPLIPIPE_A_CLAIM_FIRST, reply->first,
				REPLIPIPE_A_PAD) ||
	      nla_put_u32(msg, REPLIPIPE_A_CLAIM_COUNT, reply->count) ||
	      (reply->count &&
	       nla_put_u32(msg, REPLIPIPE_A_CLAIM_TIME_LEFT_MS,
			   reply->left_ms))))) {
		nlmsg_free(msg);
		NL_SET_ERR_MSG(info->extack,
			       "the claim's reply does not fit; the claim is dropped");
		ret = -EMSGSIZE;
		goto abort;
	}
	genlmsg_end(msg, hdr);
	ret = genlmsg_reply(msg, info);
	if (!ret)
		return 0;
	NL_SET_ERR_MSG(info->extack,
		       "the claim's reply could not be delivered; the claim is dropped");
abort:
	if (reply->id)
		rp_claim_abort(pair, reply->id);
	return ret;
}

static int rp_nl_claim(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **attrs = info->attrs;
	struct rp_claim_reply reply;
	struct rp_pair *pair;
	u64 hint = 0;
	u32 max = 1;
	int ret;

	if (attrs[REPLIPIPE_A_CLAIM_HINT])
		hint = nla_get_u64(attrs[REPLIPIPE_A_CLAIM_HINT]);
	if (attrs[REPLIPIPE_A_CLAIM_MAX_REGIONS])
		max = nla_get_u32(attrs[REPLIPIPE_A_CLAIM_MAX_REGIONS]);

	mutex_lock(&rp_config_lock);
	pair = rp_nl_pair(attrs, info->extack);
	/* A resync planned for a pair since replaced must not touch this one. */
	if (!IS_ERR(pair) && attrs[REPLIPIPE_A_CLAIM_PAIR_SERIAL] &&
	    nla_get_u64(attrs[REPLIPIPE_A_CLAIM_PAIR_SERIAL]) != pair->serial) {
		NL_SET_ERR_MSG_ATTR(info->extack,
				    attrs[REPLIPIPE_A_CLAIM_PAIR_SERIAL],
				    "the pair was replaced since (another serial)");
		pair = ERR_PTR(-ESTALE);
	}
	if (!IS_ERR(pair))
		refcount_inc(&pair->refs);
	mutex_unlock(&rp_config_lock);
	if (IS_ERR(pair))
		return PTR_ERR(pair);

	ret = rp_claim_new(pair, hint, max, info->snd_portid, &reply,
			   info->extack);
	if (!ret)
		ret = rp_claim_reply_send(info, REPLIPIPE_CMD_RESYNC_CLAIM,
					  pair, &reply);
	rp_pair_put(pair);
	return ret;
}

/* RESYNC_CLAIM_WAIT: a pending claim of this socket, moved on. */
static int rp_nl_claim_wait(struct sk_buff *skb, struct genl_info *info)
{
	struct rp_claim_reply reply;
	struct rp_pair *pair;
	u64 id;
	int ret;

	ret = rp_require(info, REPLIPIPE_A_CLAIM_ID, "missing claim id");
	if (ret)
		return ret;
	id = nla_get_u64(info->attrs[REPLIPIPE_A_CLAIM_ID]);
	pair = rp_claim_pair_get(id, info->snd_portid, info->extack);
	if (IS_ERR(pair))
		return PTR_ERR(pair);
	ret = rp_claim_advance(pair, id, &reply, info->extack);
	if (!ret)
		ret = rp_claim_reply_send(info,
					  REPLIPIPE_CMD_RESYNC_CLAIM_WAIT,
					  pair, &reply);
	rp_pair_put(pair);
	return ret;
}

static int rp_nl_claim_end(struct genl_info *info, bool done)
{
	int ret;

	ret = rp_require(info, REPLIPIPE_A_CLAIM_ID, "missing claim id");
	if (ret)
		return ret;
	return rp_claim_end(nla_get_u64(info->attrs[REPLIPIPE_A_CLAIM_ID]),
			    info->snd_portid, done, info->extack);
}

static int rp_nl_resync_done(struct sk_buff *skb, struct genl_info *info)
{
	return rp_nl_claim_end(info, true);
}

static int rp_nl_resync_failed(struct sk_buff *skb, struct genl_info *info)
{
	return rp_nl_claim_end(info, false);
}

static const struct genl_ops rp_ops[] = {
	{
		.cmd		= REPLIPIPE_CMD_PIPE_SET,
		.doit		= rp_nl_pipe_set,
		.policy		= rp_pipe_set_policy,
		.maxattr	= ARRAY_SIZE(rp_pipe_set_policy) - 1,
		.flags		= GENL_ADMIN_PERM,
	},
	{
		.cmd		= REPLIPIPE_CMD_PIPE_DEL,
		.doit		= rp_nl_pipe_del,
		.policy		= rp_pipe_id_policy,
		.maxattr	= ARRAY_SIZE(rp_pipe_id_policy) - 1,
		.flags		= GENL_ADMIN_PERM,
	},
	{
		.cmd		= REPLIPIPE_CMD_PIPE_GET,
		.doit		= rp_nl_pipe_get_doit,
		.start		= rp_nl_pipe_get_start,
		.dumpit		= rp_nl_pipe_get_dumpit,
		.policy		= rp_pipe_id_policy,
		.maxattr	= ARRAY_SIZE(rp_pipe_id_policy) - 1,
	},
	{
		.cmd		= REPLIPIPE_CMD_PAIR_SET,
		.doit		= rp_nl_pair_set,
		.policy		= rp_pair_set_policy,
		.maxattr	= ARRAY_SIZE(rp_pair_set_policy) - 1,
		.flags		= GENL_ADMIN_PERM,
	},
	{
		.cmd		= REPLIPIPE_CMD_BITMAP_GET,
		.start		= rp_nl_bitmap_start,
		.dumpit		= rp_nl_bitmap_dumpit,
		.policy		= rp_bitmap_get_policy,
		.maxattr	= ARRAY_SIZE(rp_bitmap_get_policy) - 1,
	},
	{
		.cmd		= REPLIPIPE_CMD_RESYNC_CLAIM,
		.doit		= rp_nl_claim,
		.policy		= rp_claim_policy,
		.maxattr	= ARRAY_SIZE(rp_claim_policy) - 1,
		.flags		= GENL_ADMIN_PERM,
	},
	{
		.cmd		= REPLIPIPE_CMD_RESYNC_CLAIM_WAIT,
		.doit		= rp_nl_claim_wait,
		.policy		= rp_claim_end_policy,
		.maxattr	= ARRAY_SIZE(rp_claim_end_policy) - 1,
		.flags		= GENL_ADMIN_PERM,
	},
	{
		.cmd		= REPLIPIPE_CMD_RESYNC_DONE,
		.doit		= rp_nl_resync_done,
		.policy		= rp_claim_end_policy,
		.maxattr	= ARRAY_SIZE(rp_claim_end_policy) - 1,
		.flags		= GENL_ADMIN_PERM,
	},
	{
		.cmd		= REPLIPIPE_CMD_RESYNC_FAILED,
		.doit		= rp_nl_resync_failed,
		.policy		= rp_claim_end_policy,
		.maxattr	= ARRAY_SIZE(rp_claim_end_policy) - 1,
		.flags		= GENL_ADMIN_PERM,
	},
};

static const struct genl_multicast_group rp_mcgrps[] = {
	{ .name = REPLIPIPE_MCGRP_EVENTS },
};

static struct genl_family rp_family __ro_after_init = {
	.name		= REPLIPIPE_GENL_NAME,
	.version	= REPLIPIPE_GENL_VERSION,
	.parallel_ops	= true,
	.module		= THIS_MODULE,
	.ops		= rp_ops,
	.n_ops		= ARRAY_SIZE(rp_ops),
	.mcgrps		= rp_mcgrps,
	.n_mcgrps	= ARRAY_SIZE(rp_mcgrps),
};

int rp_genl_init(void)
{
	int ret;

	ret = genl_register_family(&rp_family);
	if (!ret)
		WRITE_ONCE(rp_family_registered, true);
	return ret;
}

void rp_genl_exit(void)
{
	WRITE_ONCE(rp_family_registered, false);
	genl_unregister_family(&rp_family);
}
