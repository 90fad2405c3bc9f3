// SPDX-License-Identifier: GPL-2.0
/*
 * rp-nltest: sends deliberately malformed or forbidden requests to the
 * replipipe genl family (raw libnl, no project library: the point is to send
 * what a well-behaved client never would) and checks each is refused with the
 * expected errno and an extack message, and that refusals change nothing.
 *
 *   rp-nltest --source replipipe_0/vol1 --primary /dev/ram0
 *             --source2 replipipe_0/vol2 --target /dev/ram2 --target2 /dev/ram3
 *             [--unpriv-uid 1000]
 *
 * Then a BITMAP_GET dump read one callback at a time, whose pair a PIPE_SET
 * replaces (same source, the other target, larger regions: fewer of them)
 * after the first callback: it must end with EAGAIN and carry only the old
 * pair's bits; the same dump unreplaced, and one of the new pair, must give
 * exactly the bits expected (cases bitmap_*).  A PIPE_GET dump of many
 * pipes, one deleted after its first callback, must say so with
 * NLM_F_DUMP_INTR or hold every pipe left (cases pipe_dump_*).
 *
 * The sources must be enabled replipipe backstores in no pipe; the targets
 * unused block devices at least as large as the sources. --source needs at
 * least 3 bitmap chunks of 4 KiB regions (384 MiB), so that its dump takes
 * three callbacks. Prints one line per case: case NAME errno=ENAME
 * extack="..." [FAIL expected=...].
 * EPERM comes from the genl core (GENL_ADMIN_PERM), which sets no extack:
 * those cases only check the errno.
 * Exit: 0 all cases as expected, 1 some case failed, 64 usage, 69 no family.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <linux/netlink.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>

#include <linux/replipipe.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

#define NLTEST_PIPE "nltest-a"
#define NLTEST_PIPE2 "nltest-b"
#define NLTEST_NONE "nltest-none"
#define MAX_EXPECTED 4

struct conn {
	struct nl_sock *sk;
	int family;
};

/* What one request got back. */
struct reply {
	int error;		/* positive errno, 0 = success */
	char extack[512];
	/* from PIPE_GET replies */
	int pipes;		/* replies seen */
	int nltest_pipes;	/* replies whose id starts with "nltest-" */
	unsigned int region_kib;
	int pairs;
	uint64_t pair_regions;	/* REPLIPIPE_A_PAIR_REGIONS of the last pair */
	/* from a RESYNC_CLAIM reply */
	uint64_t claim_id, claim_first;
	uint32_t claim_count;
};

struct opts {
	const char *source, *source2, *primary, *target, *target2;
	int unpriv_uid;
};

static int failures;

static void usage(void)
{
	fprintf(stderr,
		"usage: rp-nltest --source SRC --primary DEV --source2 SRC2 --target DEV --target2 DEV\n"
		"                 [--unpriv-uid UID]\n");
	exit(64);
}

static struct conn conn_open(void)
{
	struct conn c = { .sk = nl_socket_alloc() };
	int one = 1;

	if (!c.sk || genl_connect(c.sk)) {
		fprintf(stderr, "rp-nltest: cannot open a generic netlink socket\n");
		exit(1);
	}
	nl_socket_enable_msg_peek(c.sk);
	setsockopt(nl_socket_get_fd(c.sk), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(nl_socket_get_fd(c.sk), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	c.family = genl_ctrl_resolve(c.sk, REPLIPIPE_GENL_NAME);
	if (c.family < 0) {
		fprintf(stderr, "rp-nltest: genl family %s not found (module not loaded?)\n",
			REPLIPIPE_GENL_NAME);
		exit(69);
	}
	return c;
}

static struct nl_msg *req_new(const struct conn *c, int cmd, int flags)
{
	struct nl_msg *msg = nlmsg_alloc();

	if (!msg || !genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, c->family, 0,
				 NLM_F_REQUEST | NLM_F_ACK | flags, cmd,
				 REPLIPIPE_GENL_VERSION)) {
		fprintf(stderr, "rp-nltest: out of memory\n");
		exit(1);
	}
	return msg;
}

static void parse_extack(struct nlmsghdr *hdr, struct reply *r)
{
	struct nlmsgerr *e = nlmsg_data(hdr);
	struct nlattr *tb[NLMSGERR_ATTR_MAX + 1];
	size_t off = sizeof(*e);

	if (!(hdr->nlmsg_flags & NLM_F_ACK_TLVS))
		return;
	if (!(hdr->nlmsg_flags & NLM_F_CAPPED))
		off += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
	if ((int)off >= nlmsg_datalen(hdr))
		return;
	if (nla_parse(tb, NLMSGERR_ATTR_MAX, (struct nlattr *)((char *)e + off),
		      nlmsg_datalen(hdr) - off, NULL))
		return;
	if (tb[NLMSGERR_ATTR_MSG])
		snprintf(r->extack, sizeof(r->extack), "%s",
			 nla_get_string(tb[NLMSGERR_ATTR_MSG]));
}

static void parse_reply(const struct conn *c, struct nlmsghdr *hdr, struct reply *r)
{
	struct nlattr *tb[REPLIPIPE_A_MAX + 1], *pair;
	struct nlattr *ptb[REPLIPIPE_A_PAIR_MAX + 1];
	const char *id;
	int rem;

	if (hdr->nlmsg_type != c->family ||
	    genlmsg_parse(hdr, 0, tb, REPLIPIPE_A_MAX, NULL))
		return;
	if (((struct genlmsghdr *)nlmsg_data(hdr))->cmd == REPLIPIPE_CMD_RESYNC_CLAIM) {
		if (tb[REPLIPIPE_A_CLAIM_ID])
			r->claim_id = nla_get_u64(tb[REPLIPIPE_A_CLAIM_ID]);
		if (tb[REPLIPIPE_A_CLAIM_FIRST])
			r->claim_first = nla_get_u64(tb[REPLIPIPE_A_CLAIM_FIRST]);
		if (tb[REPLIPIPE_A_CLAIM_COUNT])
			r->claim_count = nla_get_u32(tb[REPLIPIPE_A_CLAIM_COUNT]);
		return;
	}
	r->pipes++;
	id = tb[REPLIPIPE_A_PIPE_ID] ? nla_get_string(tb[REPLIPIPE_A_PIPE_ID]) : "";
	if (strncmp(id, "nltest-", 7))
		return;
	r->nltest_pipes++;
	if (tb[REPLIPIPE_A_PIPE_REGION_KIB])
		r->region_kib = nla_get_u32(tb[REPLIPIPE_A_PIPE_REGION_KIB]);
	if (tb[REPLIPIPE_A_PIPE_PAIRS])
		nla_for_each_nested(pair, tb[REPLIPIPE_A_PIPE_PAIRS], rem) {
			if (nla_type(pair) != REPLIPIPE_A_PIPE_PAIR)
				continue;
			r->pairs++;
			if (!nla_parse_nested(ptb, REPLIPIPE_A_PAIR_MAX, pair, NULL) &&
			    ptb[REPLIPIPE_A_PAIR_REGIONS])
				r->pair_regions = nla_get_u64(ptb[REPLIPIPE_A_PAIR_REGIONS]);
		}
}

/* Sends msg (freed), collects replies until the ack, the error or NLMSG_DONE. */
static struct reply req_send(const struct conn *c, struct nl_msg *msg)
{
	struct reply r = { 0 };
	bool done = false;

	if (nl_send_auto(c->sk, msg) < 0) {
		fprintf(stderr, "rp-nltest: send failed\n");
		exit(1);
	}
	nlmsg_free(msg);
	while (!done) {
		struct sockaddr_nl peer;
		unsigned char *buf = NULL;
		struct nlmsghdr *hdr;
		int len = nl_recv(c->sk, &peer, &buf, NULL);

		if (len <= 0) {
			fprintf(stderr, "rp-nltest: receive failed: %s\n", nl_geterror(len));
			exit(1);
		}
		for (hdr = (struct nlmsghdr *)buf; nlmsg_ok(hdr, len);
		     hdr = nlmsg_next(hdr, &len)) {
			if (hdr->nlmsg_type == NLMSG_ERROR) {
				r.error = -((struct nlmsgerr *)nlmsg_data(hdr))->error;
				parse_extack(hdr, &r);
				done = true;
			} else if (hdr->nlmsg_type == NLMSG_DONE) {
				if (nlmsg_datalen(hdr) >= (int)sizeof(int))
					r.error = -*(int *)nlmsg_data(hdr);
				done = true;
			} else {
				parse_reply(c, hdr, &r);
			}
		}
		free(buf);
	}
	return r;
}

static const char *errname(int err)
{
	return err ? (strerrorname_np(err) ?: "?") : "0";
}

/* expected: 0-terminated list of errnos; {0} alone means "must succeed". */
static void judge(const char *name, const struct reply *r, const int *expected,
		  bool need_extack)
{
	bool errno_ok = false, ok;
	int i;

	for (i = 0; i < MAX_EXPECTED && (i == 0 || expected[i]); i++)
		errno_ok |= r->error == expected[i];
	ok = errno_ok && (!need_extack || r->error == 0 || r->extack[0]);
	printf("case %s errno=%s extack=\"%s\"", name, errname(r->error), r->extack);
	if (!ok) {
		printf(" FAIL expected=");
		for (i = 0; i < MAX_EXPECTED && (i == 0 || expected[i]); i++)
			printf("%s%s", i ? "|" : "", errname(expected[i]));
		if (errno_ok)
			printf(" (no extack message)");
		failures++;
	}
	printf("\n");
	fflush(stdout);
}

#define EXPECT(...) ((const int[MAX_EXPECTED]){ __VA_ARGS__ })

static void put_pair(struct nl_msg *msg, const char *src, const char *tgt,
		     bool clean, int extra_attr)
{
	struct nlattr *pair = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIR);

	if (src)
		nla_put_string(msg, REPLIPIPE_A_PAIR_SRC, src);
	if (tgt)
		nla_put_string(msg, REPLIPIPE_A_PAIR_TGT, tgt);
	if (clean)
		nla_put_flag(msg, REPLIPIPE_A_PAIR_ASSUME_CLEAN);
	if (extra_attr)
		nla_put_u32(msg, extra_attr, 0);
	nla_nest_end(msg, pair);
}

/* A PIPE_SET with id (if any) and the pairs src->tgt (if src). */
static struct nl_msg *pipe_set(const struct conn *c, const char *id,
			       const char *src, const char *tgt)
{
	struct nl_msg *msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);

	if (id)
		nla_put_string(msg, REPLIPIPE_A_PIPE_ID, id);
	if (src) {
		struct nlattr *pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);

		put_pair(msg, src, tgt, true, 0);
		nla_nest_end(msg, pairs);
	}
	return msg;
}

static struct reply pipe_del(const struct conn *c, const char *id)
{
	struct nl_msg *msg = req_new(c, REPLIPIPE_CMD_PIPE_DEL, 0);

	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, id);
	return req_send(c, msg);
}

static struct reply pipe_get(const struct conn *c, const char *id)
{
	struct nl_msg *msg = req_new(c, REPLIPIPE_CMD_PIPE_GET, id ? 0 : NLM_F_DUMP);

	if (id)
		nla_put_string(msg, REPLIPIPE_A_PIPE_ID, id);
	return req_send(c, msg);
}

/* Sends a PIPE_SET that must be refused; removes what a wrong success made. */
static void expect_refused(const struct conn *c, const char *name,
			   struct nl_msg *msg, const char *id, const int *expected)
{
	struct reply r = req_send(c, msg);

	judge(name, &r, expected, true);
	if (!r.error && id)
		pipe_del(c, id);
}

static void cases_policy(const struct conn *c, const struct opts *o)
{
	struct nl_msg *msg;
	struct nlattr *pairs;
	char big[301];

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u32(msg, REPLIPIPE_A_MAX + 1, 1);
	expect_refused(c, "unknown_attr", msg, NLTEST_PIPE2, EXPECT(EINVAL));

	msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_PIPE2);
	pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);
	put_pair(msg, o->source, o->target, true, REPLIPIPE_A_PAIR_MAX + 1);
	nla_nest_end(msg, pairs);
	expect_refused(c, "unknown_pair_attr", msg, NLTEST_PIPE2, EXPECT(EINVAL));

	msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_NAME, "no id");
	expect_refused(c, "missing_pipe_id", msg, NULL, EXPECT(EINVAL));

	memset(big, 'n', sizeof(big) - 1);
	big[300] = '\0';
	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_string(msg, REPLIPIPE_A_PIPE_NAME, big);
	expect_refused(c, "oversize_name", msg, NLTEST_PIPE2, EXPECT(EINVAL, ERANGE));

	big[REPLIPIPE_PIPE_ID_MAX_LEN + 1] = '\0';
	msg = pipe_set(c, big, NULL, NULL);
	expect_refused(c, "oversize_pipe_id", msg, big, EXPECT(EINVAL, ERANGE));

	msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);
	nla_put(msg, REPLIPIPE_A_PIPE_ID, 8, NLTEST_PIPE2);	/* no NUL */
	expect_refused(c, "pipe_id_without_nul", msg, NLTEST_PIPE2, EXPECT(EINVAL));

	msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, "");
	expect_refused(c, "empty_pipe_id", msg, "", EXPECT(EINVAL, ERANGE));

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u8(msg, REPLIPIPE_A_PIPE_MODE, REPLIPIPE_MODE_MAX + 1);
	expect_refused(c, "bad_mode", msg, NLTEST_PIPE2, EXPECT(EINVAL, ERANGE));

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u8(msg, REPLIPIPE_A_PIPE_FAILURE_POLICY, REPLIPIPE_POLICY_MAX + 1);
	expect_refused(c, "bad_policy", msg, NLTEST_PIPE2, EXPECT(EINVAL, ERANGE));

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_MAX_LAG_KIB, REPLIPIPE_MAX_LAG_KIB_MIN / 2);
	expect_refused(c, "max_lag_too_small", msg, NLTEST_PIPE2, EXPECT(EINVAL, ERANGE));

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_REGION_KIB, 48);
	expect_refused(c, "region_not_power_of_two", msg, NLTEST_PIPE2, EXPECT(EINVAL));

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_REGION_KIB, REPLIPIPE_REGION_KIB_MIN / 2);
	expect_refused(c, "region_too_small", msg, NLTEST_PIPE2, EXPECT(EINVAL, ERANGE));

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_REGION_KIB, REPLIPIPE_REGION_KIB_MAX * 2);
	expect_refused(c, "region_too_big", msg, NLTEST_PIPE2, EXPECT(EINVAL, ERANGE));

	msg = pipe_set(c, NLTEST_PIPE2, o->source, NULL);
	expect_refused(c, "pair_without_target", msg, NLTEST_PIPE2, EXPECT(EINVAL));

	msg = pipe_set(c, NLTEST_PIPE2, NULL, NULL);
	nla_put_u8(msg, REPLIPIPE_A_PIPE_MODE, REPLIPIPE_MODE_ASYNC);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_MAX_LAG_KIB, REPLIPIPE_MAX_LAG_KIB_MAX + 1);
	expect_refused(c, "max_lag_too_big", msg, NLTEST_PIPE2, EXPECT(EINVAL, ERANGE));
}

static void cases_endpoints(const struct conn *c, const struct opts *o)
{
	struct nl_msg *msg;
	struct nlattr *pairs;
	int i;

	expect_refused(c, "no_such_backstore",
		       pipe_set(c, NLTEST_PIPE2, "replipipe_0/nltest_nosuch", o->target),
		       NLTEST_PIPE2, EXPECT(ENOENT, ENODEV));
	expect_refused(c, "source_not_replipipe",
		       pipe_set(c, NLTEST_PIPE2, "iblock_0/nltest_nosuch", o->target),
		       NLTEST_PIPE2, EXPECT(ENOENT, ENODEV, EINVAL));
	expect_refused(c, "no_such_target",
		       pipe_set(c, NLTEST_PIPE2, o->source, "/dev/nltest_nosuch"),
		       NLTEST_PIPE2, EXPECT(ENOENT, ENODEV));
	expect_refused(c, "empty_source",
		       pipe_set(c, NLTEST_PIPE2, "", o->target),
		       NLTEST_PIPE2, EXPECT(EINVAL));
	expect_refused(c, "relative_target",
		       pipe_set(c, NLTEST_PIPE2, o->source, "ram2"),
		       NLTEST_PIPE2, EXPECT(EINVAL, ENOENT));
	expect_refused(c, "target_not_block_device",
		       pipe_set(c, NLTEST_PIPE2, o->source, "/dev/null"),
		       NLTEST_PIPE2, EXPECT(ENOTBLK, EINVAL, ENODEV));
	expect_refused(c, "target_is_primary",
		       pipe_set(c, NLTEST_PIPE2, o->source, o->primary),
		       NLTEST_PIPE2, EXPECT(EINVAL, EBUSY));

	msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_PIPE2);
	pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);
	put_pair(msg, o->source, o->target, true, 0);
	put_pair(msg, o->source2, o->target, true, 0);
	nla_nest_end(msg, pairs);
	expect_refused(c, "same_target_twice", msg, NLTEST_PIPE2,
		       EXPECT(EINVAL, EBUSY, EEXIST));

	msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_PIPE2);
	pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);
	put_pair(msg, o->source, o->target, true, 0);
	put_pair(msg, o->source, o->target2, true, 0);
	nla_nest_end(msg, pairs);
	expect_refused(c, "same_source_twice", msg, NLTEST_PIPE2,
		       EXPECT(EINVAL, EBUSY, EEXIST));

	msg = nlmsg_alloc_size(65536);
	if (!msg || !genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, c->family, 0,
				 NLM_F_REQUEST | NLM_F_ACK, REPLIPIPE_CMD_PIPE_SET,
				 REPLIPIPE_GENL_VERSION)) {
		fprintf(stderr, "rp-nltest: out of memory\n");
		exit(1);
	}
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_PIPE2);
	pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);
	for (i = 0; i <= REPLIPIPE_MAX_PAIRS; i++)
		put_pair(msg, o->source, o->target, true, 0);
	nla_nest_end(msg, pairs);
	expect_refused(c, "too_many_pairs", msg, NLTEST_PIPE2, EXPECT(E2BIG, EINVAL));
}

/* A PAIR_SET request of @source in @pipe, asking for @state. */
static struct nl_msg *pair_set(const struct conn *c, const char *pipe,
			       const char *source, uint8_t state)
{
	struct nl_msg *msg = req_new(c, REPLIPIPE_CMD_PAIR_SET, 0);

	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, pipe);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, source);
	nla_put_u8(msg, REPLIPIPE_A_PAIR_STATE, state);
	return msg;
}

static void cases_unknown_objects(const struct conn *c, const struct opts *o)
{
	struct nl_msg *msg;
	struct reply r;

	r = pipe_del(c, NLTEST_NONE);
	judge("del_unknown_pipe", &r, EXPECT(ENOENT), true);
	r = pipe_get(c, NLTEST_NONE);
	judge("get_unknown_pipe", &r, EXPECT(ENOENT), true);

	msg = pair_set(c, NLTEST_NONE, o->source, REPLIPIPE_PAIR_PAUSED);
	r = req_send(c, msg);
	judge("pair_set_unknown_pipe", &r, EXPECT(ENOENT), true);

	msg = req_new(c, REPLIPIPE_CMD_RESYNC_DONE, 0);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_ID, 0x7e57c1a1ull);
	r = req_send(c, msg);
	judge("done_unknown_claim", &r, EXPECT(ENOENT), true);

	msg = req_new(c, REPLIPIPE_CMD_RESYNC_CLAIM_WAIT, 0);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_ID, 0x7e57c1a1ull);
	r = req_send(c, msg);
	judge("claim_wait_unknown_claim", &r, EXPECT(ENOENT), true);

	msg = req_new(c, REPLIPIPE_CMD_RESYNC_CLAIM_WAIT, 0);
	r = req_send(c, msg);
	judge("claim_wait_no_id", &r, EXPECT(EINVAL), true);

	msg = req_new(c, REPLIPIPE_CMD_RESYNC_CLAIM, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_NONE);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, o->source);
	nla_put_u32(msg, REPLIPIPE_A_CLAIM_MAX_REGIONS, REPLIPIPE_CLAIM_MAX_REGIONS + 1);
	r = req_send(c, msg);
	judge("claim_too_many_regions", &r, EXPECT(EINVAL, ERANGE), true);
}

/* Refusals against an existing pipe, which must come out unchanged. */
static void cases_existing_pipe(const struct conn *c, const struct opts *o)
{
	static const int ok[MAX_EXPECTED] = { 0 };
	struct nl_msg *msg;
	struct reply r;

	msg = pipe_set(c, NLTEST_PIPE, o->source, o->target);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_REGION_KIB, 64);
	r = req_send(c, msg);
	judge("create_valid_pipe", &r, ok, false);
	if (r.error)
		return;

	expect_refused(c, "source_in_other_pipe",
		       pipe_set(c, NLTEST_PIPE2, o->source, o->target2),
		       NLTEST_PIPE2, EXPECT(EBUSY, EEXIST));
	expect_refused(c, "target_in_other_pipe",
		       pipe_set(c, NLTEST_PIPE2, o->source2, o->target),
		       NLTEST_PIPE2, EXPECT(EBUSY, EEXIST, EINVAL));

	msg = pipe_set(c, NLTEST_PIPE, o->source, o->target);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_REGION_KIB, 128);
	expect_refused(c, "region_change_with_pairs", msg, NULL, EXPECT(EINVAL, EBUSY));

	msg = pipe_set(c, NLTEST_PIPE, o->source, o->primary);
	expect_refused(c, "modify_to_target_is_primary", msg, NULL, EXPECT(EINVAL, EBUSY));

	msg = pair_set(c, NLTEST_PIPE, o->source, REPLIPIPE_PAIR_INSYNC);
	expect_refused(c, "pair_set_insync_requested", msg, NULL, EXPECT(EINVAL, ERANGE));

	msg = pair_set(c, NLTEST_PIPE, o->source2, REPLIPIPE_PAIR_PAUSED);
	expect_refused(c, "pair_set_unknown_pair", msg, NULL, EXPECT(ENOENT));

	msg = pair_set(c, NLTEST_PIPE, o->source, REPLIPIPE_PAIR_PAUSED);
	nla_put_flag(msg, REPLIPIPE_A_PAIR_RESUME_WAIT);
	expect_refused(c, "pair_pause_with_resume_wait", msg, NULL, EXPECT(EINVAL));

	/* Waiting for a resume nobody asked for. */
	msg = pair_set(c, NLTEST_PIPE, o->source, REPLIPIPE_PAIR_SYNCING);
	nla_put_flag(msg, REPLIPIPE_A_PAIR_RESUME_WAIT);
	expect_refused(c, "pair_resume_wait_unasked", msg, NULL, EXPECT(ENOENT));

	r = pipe_get(c, NLTEST_PIPE);
	printf("case existing_pipe_unchanged errno=%s pairs=%d region_kib=%u", errname(r.error),
	       r.pairs, r.region_kib);
	if (r.error || r.pairs != 1 || r.region_kib != 64) {
		printf(" FAIL expected=0 pairs=1 region_kib=64");
		failures++;
	}
	printf("\n");

	r = pipe_del(c, NLTEST_PIPE);
	judge("delete_valid_pipe", &r, ok, false);
}

/*
 * BITMAP_GET dumps, read on a raw socket one recvmsg at a time.
 *
 * The first dump callback runs in the request's sendmsg, each later one in
 * the recvmsg that empties the receive queue: one callback per datagram.
 * A callback's skb is as large as the largest recvmsg buffer seen so far on
 * the socket (at least the family's min_dump_alloc, one chunk), so with a
 * fresh socket and DUMP_RECV_BYTES, which holds one chunk message but not
 * two, every callback sends exactly one chunk of the bitmap.
 */
#define CHUNK_BITS ((uint64_t)REPLIPIPE_BITMAP_CHUNK_BYTES * 8)
#define DUMP_RECV_BYTES 8192
#define DUMP_MAX_BITS (1ull << 24)

struct bitmap_dump {
	int fd;
	uint8_t *bits;		/* one byte per region of the first NBITS */
	uint64_t nbits;		/* NBITS of the first message */
	uint64_t next;		/* offset the next message must have */
	int msgs;		/* data messages */
	int recvs;		/* datagrams with data messages */
	bool done;		/* NLMSG_DONE or NLMSG_ERROR seen */
	int error;		/* positive errno from it */
	char extack[512];
	char bad[256];		/* first inconsistency in the data, if any */
	uint64_t stray_bits;	/* bits set in data past NBITS */
};

static void dump_bad(struct bitmap_dump *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void dump_bad(struct bitmap_dump *d, const char *fmt, ...)
{
	va_list ap;

	if (d->bad[0])
		return;
	va_start(ap, fmt);
	vsnprintf(d->bad, sizeof(d->bad), fmt, ap);
	va_end(ap);
}

/* Starts a BITMAP_GET dump of src in pipe id on a fresh socket. */
static void dump_start(const struct conn *c, struct bitmap_dump *d,
		       const char *id, const char *src)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	struct nlmsghdr *hdr;
	struct nl_msg *msg;
	int one = 1;

	*d = (struct bitmap_dump){ .fd = -1 };
	d->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (d->fd < 0 || bind(d->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("rp-nltest: dump socket");
		exit(1);
	}
	setsockopt(d->fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(d->fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	msg = nlmsg_alloc();
	if (!msg || !genlmsg_put(msg, 0, 1, c->family, 0, NLM_F_REQUEST | NLM_F_DUMP,
				 REPLIPIPE_CMD_BITMAP_GET, REPLIPIPE_GENL_VERSION)) {
		fprintf(stderr, "rp-nltest: out of memory\n");
		exit(1);
	}
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, id);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, src);
	hdr = nlmsg_hdr(msg);
	if (send(d->fd, hdr, hdr->nlmsg_len, 0) != (ssize_t)hdr->nlmsg_len) {
		perror("rp-nltest: sending BITMAP_GET");
		exit(1);
	}
	nlmsg_free(msg);
}

/* Checks one BITMAP_GET message and records its bits. */
static void dump_chunk(const struct conn *c, struct bitmap_dump *d,
		       struct nlmsghdr *hdr)
{
	struct nlattr *tb[REPLIPIPE_A_MAX + 1];
	uint64_t nbits, off, want, i;
	const uint8_t *data;
	int len;

	d->msgs++;
	if (hdr->nlmsg_type != c->family ||
	    genlmsg_parse(hdr, 0, tb, REPLIPIPE_A_MAX, NULL) ||
	    !tb[REPLIPIPE_A_BITMAP_NBITS] || !tb[REPLIPIPE_A_BITMAP_OFFSET] ||
	    !tb[REPLIPIPE_A_BITMAP_DATA]) {
		dump_bad(d, "message %d: not a bitmap chunk", d->msgs);
		return;
	}
	nbits = nla_get_u64(tb[REPLIPIPE_A_BITMAP_NBITS]);
	off = nla_get_u64(tb[REPLIPIPE_A_BITMAP_OFFSET]);
	data = nla_data(tb[REPLIPIPE_A_BITMAP_DATA]);
	len = nla_len(tb[REPLIPIPE_A_BITMAP_DATA]);
	if (d->msgs == 1) {
		if (!nbits || nbits > DUMP_MAX_BITS) {
			dump_bad(d, "nbits=%" PRIu64 " out of range", nbits);
			return;
		}
		d->nbits = nbits;
		d->bits = calloc(nbits, 1);
		if (!d->bits) {
			fprintf(stderr, "rp-nltest: out of memory\n");
			exit(1);
		}
	}
	/* data past NBITS: what the message claims is beyond its own pair */
	for (i = 0; i < (uint64_t)len * 8; i++)
		if ((off >= nbits || i >= nbits - off) && (data[i / 8] >> (i % 8) & 1))
			d->stray_bits++;
	if (nbits != d->nbits) {
		dump_bad(d, "message %d: nbits=%" PRIu64 " offset=%" PRIu64
			 " bytes=%d, the dump began with nbits=%" PRIu64,
			 d->msgs, nbits, off, len, d->nbits);
		return;
	}
	if (off != d->next || off >= nbits) {
		dump_bad(d, "message %d: offset=%" PRIu64 " bytes=%d, expected offset=%"
			 PRIu64 " below nbits=%" PRIu64, d->msgs, off, len, d->next, nbits);
		return;
	}
	want = nbits - off < CHUNK_BITS ? nbits - off : CHUNK_BITS;
	if ((uint64_t)len != (want + 7) / 8) {
		dump_bad(d, "message %d: offset=%" PRIu64 " bytes=%d, expected %" PRIu64,
			 d->msgs, off, len, (want + 7) / 8);
		return;
	}
	for (i = 0; i < want; i++)
		d->bits[off + i] = data[i / 8] >> (i % 8) & 1;
	d->next = off + want;
}

/* One recvmsg: one callback's datagram.  Returns its data messages. */
static int dump_recv(const struct conn *c, struct bitmap_dump *d)
{
	static unsigned char buf[DUMP_RECV_BYTES];
	struct nlmsghdr *hdr;
	int len, msgs = d->msgs;
	ssize_t n;

	if (d->done)
		return 0;
	n = recv(d->fd, buf, sizeof(buf), 0);
	if (n < 0) {
		perror("rp-nltest: receiving the BITMAP_GET dump");
		exit(1);
	}
	len = (int)n;
	for (hdr = (struct nlmsghdr *)buf; nlmsg_ok(hdr, len);
	     hdr = nlmsg_next(hdr, &len)) {
		if (hdr->nlmsg_type == NLMSG_ERROR) {
			struct reply r = { 0 };

			d->error = -((struct nlmsgerr *)nlmsg_data(hdr))->error;
			parse_extack(hdr, &r);
			memcpy(d->extack, r.extack, sizeof(d->extack));
			d->done = true;
		} else if (hdr->nlmsg_type == NLMSG_DONE) {
			struct nlattr *tb[NLMSGERR_ATTR_MAX + 1];
			int off = NLA_ALIGN(sizeof(int));

			/* the dump's errno, then its extack (NLM_F_ACK_TLVS) */
			if (nlmsg_datalen(hdr) >= (int)sizeof(int))
				d->error = -*(int *)nlmsg_data(hdr);
			if ((hdr->nlmsg_flags & NLM_F_ACK_TLVS) &&
			    nlmsg_datalen(hdr) > off &&
			    !nla_parse(tb, NLMSGERR_ATTR_MAX,
				       (struct nlattr *)((char *)nlmsg_data(hdr) + off),
				       nlmsg_datalen(hdr) - off, NULL) &&
			    tb[NLMSGERR_ATTR_MSG])
				snprintf(d->extack, sizeof(d->extack), "%s",
					 nla_get_string(tb[NLMSGERR_ATTR_MSG]));
			d->done = true;
		} else {
			dump_chunk(c, d, hdr);
		}
	}
	d->recvs += d->msgs > msgs;
	return d->msgs - msgs;
}

static void dump_end(const struct conn *c, struct bitmap_dump *d)
{
	int i;

	for (i = 0; !d->done; i++) {
		if (i > 4 * (int)(DUMP_MAX_BITS / CHUNK_BITS)) {
			fprintf(stderr, "rp-nltest: the BITMAP_GET dump does not end\n");
			exit(1);
		}
		dump_recv(c, d);
	}
	close(d->fd);
	d->fd = -1;
}

/* Bits of d that differ from want[0..n). */
static uint64_t dump_mismatches(const struct bitmap_dump *d, const uint8_t *want, uint64_t n)
{
	uint64_t i, bad = 0;

	for (i = 0; i < d->next && i < n; i++)
		bad += d->bits[i] != want[i];
	return bad;
}

/* PIPE_SET id with the one pair src->tgt, every region dirty. */
static struct reply pipe_set_dirty(const struct conn *c, const char *id, const char *src,
				   const char *tgt, unsigned int region_kib)
{
	struct nl_msg *msg = req_new(c, REPLIPIPE_CMD_PIPE_SET, 0);
	struct nlattr *pairs;

	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, id);
	nla_put_u32(msg, REPLIPIPE_A_PIPE_REGION_KIB, region_kib);
	pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);
	put_pair(msg, src, tgt, false, 0);
	nla_nest_end(msg, pairs);
	return req_send(c, msg);
}

/* Claims [first, first + count) of a pair whose regions are all dirty, and clears them. */
static bool clear_regions(const struct conn *c, const char *id, const char *src,
			  uint64_t first, uint32_t count)
{
	struct nl_msg *msg = req_new(c, REPLIPIPE_CMD_RESYNC_CLAIM, 0);
	struct reply r;

	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, id);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, src);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_HINT, first);
	nla_put_u32(msg, REPLIPIPE_A_CLAIM_MAX_REGIONS, count);
	r = req_send(c, msg);
	if (r.error || r.claim_first != first || r.claim_count != count) {
		printf("case bitmap_setup_claim errno=%s first=%" PRIu64 " count=%u"
		       " extack=\"%s\" FAIL expected first=%" PRIu64 " count=%u\n",
		       errname(r.error), r.claim_first, r.claim_count, r.extack, first, count);
		failures++;
		return false;
	}
	msg = req_new(c, REPLIPIPE_CMD_RESYNC_DONE, 0);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_ID, r.claim_id);
	r = req_send(c, msg);
	if (r.error) {
		printf("case bitmap_setup_done errno=%s extack=\"%s\" FAIL expected=0\n",
		       errname(r.error), r.extack);
		failures++;
		return false;
	}
	return true;
}

static void dump_print(const char *name, const struct bitmap_dump *d, uint64_t wrong)
{
	uint64_t i, dirty = 0;

	for (i = 0; i < d->next; i++)
		dirty += d->bits[i];
	printf("case %s errno=%s extack=\"%s\" recvs=%d msgs=%d nbits=%" PRIu64
	       " bits=%" PRIu64 " dirty=%" PRIu64 " wrong_bits=%" PRIu64 " stray_bits=%" PRIu64,
	       name, errname(d->error), d->extack, d->recvs, d->msgs, d->nbits, d->next,
	       dirty, wrong, d->stray_bits);
}

/*
 * BITMAP_GET of a pair replaced mid-dump by one with fewer regions (same
 * source, another target, larger regions): the dump looks its pair up anew
 * on each callback, and must end with EAGAIN rather than carry on at the
 * old offset into the new pair's (smaller) bitmap.  Controls: the same dump
 * of the unreplaced pair, and one of the new pair, give exactly their bits.
 */
static void cases_bitmap_dump(const struct conn *c, const struct opts *o)
{
	/* regions cleared in the first pair: across chunk borders, at its end */
	static const struct { uint64_t first; uint32_t count; } clear[] = {
		{ 3, 1 }, { CHUNK_BITS - 5, 11 }, { 2 * CHUNK_BITS + 100, 4096 },
	};
	uint64_t nr, nr2, wrong;
	struct bitmap_dump d;
	uint8_t *want;
	struct reply r;
	unsigned int k;
	bool ok;

	r = pipe_set_dirty(c, NLTEST_PIPE, o->source, o->target, 4);
	r.pair_regions = 0;
	if (!r.error)
		r = pipe_get(c, NLTEST_PIPE);
	nr = r.pair_regions;
	printf("case bitmap_pipe errno=%s regions=%" PRIu64, errname(r.error), nr);
	if (r.error || nr < 3 * CHUNK_BITS || nr > DUMP_MAX_BITS) {
		printf(" FAIL expected=0 and %" PRIu64 "..%llu regions (a larger --source?)\n",
		       3 * CHUNK_BITS, DUMP_MAX_BITS);
		failures++;
		if (!r.error)
			pipe_del(c, NLTEST_PIPE);
		return;
	}
	printf("\n");
	want = malloc(nr);
	if (!want) {
		fprintf(stderr, "rp-nltest: out of memory\n");
		exit(1);
	}
	memset(want, 1, nr);
	for (k = 0; k < sizeof(clear) / sizeof(clear[0]); k++) {
		if (!clear_regions(c, NLTEST_PIPE, o->source, clear[k].first, clear[k].count))
			goto out;
		memset(want + clear[k].first, 0, clear[k].count);
	}
	if (!clear_regions(c, NLTEST_PIPE, o->source, nr - 7, 7))
		goto out;
	memset(want + nr - 7, 0, 7);

	/* control: the whole dump, one chunk per callback */
	dump_start(c, &d, NLTEST_PIPE, o->source);
	dump_end(c, &d);
	wrong = dump_mismatches(&d, want, nr);
	dump_print("bitmap_dump_whole", &d, wrong);
	ok = !d.error && !d.bad[0] && !d.stray_bits && d.nbits == nr && d.next == nr &&
	     !wrong && d.msgs == (int)((nr + CHUNK_BITS - 1) / CHUNK_BITS) &&
	     d.recvs == d.msgs;
	if (!ok) {
		printf(" FAIL expected=0 nbits=bits=%" PRIu64 " msgs=recvs=%" PRIu64
		       " wrong_bits=0 stray_bits=0%s%s", nr, (nr + CHUNK_BITS - 1) / CHUNK_BITS,
		       d.bad[0] ? ": " : "", d.bad);
		failures++;
	}
	printf("\n");
	free(d.bits);

	/* the same dump, the pair replaced after its first callback */
	dump_start(c, &d, NLTEST_PIPE, o->source);
	dump_recv(c, &d);
	r = pipe_set_dirty(c, NLTEST_PIPE, o->source, o->target2, 1024);
	r.pair_regions = 0;
	if (!r.error)
		r = pipe_get(c, NLTEST_PIPE);
	nr2 = r.pair_regions;
	printf("case bitmap_pair_replace errno=%s regions=%" PRIu64, errname(r.error), nr2);
	if (r.error || !nr2 || nr2 >= 2 * CHUNK_BITS) {
		printf(" FAIL expected=0 and fewer than %" PRIu64 " regions\n", 2 * CHUNK_BITS);
		failures++;
		dump_end(c, &d);
		free(d.bits);
		goto out;
	}
	printf("\n");
	dump_end(c, &d);
	wrong = dump_mismatches(&d, want, nr);
	dump_print("bitmap_dump_pair_replaced", &d, wrong);
	/*
	 * Before the fix the third callback read the new pair at the old
	 * pair's offset: nbits - offset underflowed and a whole chunk was
	 * copied from past the new bitmap (nbits changed, offset >= nbits).
	 */
	ok = d.error == EAGAIN && d.extack[0] && !d.bad[0] && !d.stray_bits &&
	     d.nbits == nr && d.next < nr && !wrong;
	if (!ok) {
		printf(" FAIL expected=EAGAIN with an extack, only the old pair's bits"
		       " (nbits=%" PRIu64 ", fewer bits, wrong_bits=0 stray_bits=0)%s%s",
		       nr, d.bad[0] ? ": " : "", d.bad);
		failures++;
	}
	printf("\n");
	free(d.bits);

	/* the new pair dumps whole: every one of its regions dirty */
	dump_start(c, &d, NLTEST_PIPE, o->source);
	dump_end(c, &d);
	memset(want, 1, nr2);
	wrong = dump_mismatches(&d, want, nr2);
	dump_print("bitmap_dump_new_pair", &d, wrong);
	if (d.error || d.bad[0] || d.stray_bits || d.nbits != nr2 || d.next != nr2 || wrong) {
		printf(" FAIL expected=0 nbits=bits=dirty=%" PRIu64 "%s%s", nr2,
		       d.bad[0] ? ": " : "", d.bad);
		failures++;
	}
	printf("\n");
	free(d.bits);
out:
	free(want);
	fflush(stdout);
	r = pipe_del(c, NLTEST_PIPE);
	judge("bitmap_pipe_delete", &r, EXPECT(0), false);
}

/* State-changing ops without CAP_NET_ADMIN: EPERM; a read still works. */
/*
 * A PIPE_GET dump resumes by position in the list of pipes.  A pipe deleted
 * before the point where the next callback starts shifts the list, and the
 * pipe at that point used to be skipped without a word.  Now the callbacks
 * after a change of the list (and NLMSG_DONE) carry NLM_F_DUMP_INTR, so a
 * client knows to dump again.  DUMPDEL_PIPES pipes without pairs; the first
 * callback runs in the request's send and holds the first few dozen (its
 * skb is NLMSG_GOODSIZE), the first pipe is deleted, then each recv runs
 * the next callback.  The same dump without the delete must carry no
 * NLM_F_DUMP_INTR and every pipe.
 */
#define DUMPDEL_PIPES 96
#define DUMPDEL_PREFIX "nltest-dd-"

struct pipe_dump {
	int pipes;		/* of ours seen */
	bool seen[DUMPDEL_PIPES];	/* which of ours */
	int first;		/* of ours in the first callback's datagram */
	int intr;		/* messages with NLM_F_DUMP_INTR */
	int error;		/* from NLMSG_DONE or NLMSG_ERROR */
};

static struct pipe_dump pipe_dump_deleting(const struct conn *c, const char *del)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	static unsigned char buf[DUMP_RECV_BYTES];
	struct pipe_dump d = { 0 };
	struct nlmsghdr *hdr;
	struct nl_msg *msg;
	bool done = false;
	int fd, len, i;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("rp-nltest: dump socket");
		exit(1);
	}
	msg = nlmsg_alloc();
	if (!msg || !genlmsg_put(msg, 0, 1, c->family, 0, NLM_F_REQUEST | NLM_F_DUMP,
				 REPLIPIPE_CMD_PIPE_GET, REPLIPIPE_GENL_VERSION)) {
		fprintf(stderr, "rp-nltest: out of memory\n");
		exit(1);
	}
	hdr = nlmsg_hdr(msg);
	if (send(fd, hdr, hdr->nlmsg_len, 0) != (ssize_t)hdr->nlmsg_len) {
		perror("rp-nltest: sending PIPE_GET");
		exit(1);
	}
	nlmsg_free(msg);
	if (del && pipe_del(c, del).error) {
		fprintf(stderr, "rp-nltest: cannot delete %s\n", del);
		exit(1);
	}
	for (i = 0; !done; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0 || i > 4 * DUMPDEL_PIPES) {
			perror("rp-nltest: receiving the PIPE_GET dump");
			exit(1);
		}
		len = (int)n;
		for (hdr = (struct nlmsghdr *)buf; nlmsg_ok(hdr, len);
		     hdr = nlmsg_next(hdr, &len)) {
			struct nlattr *tb[REPLIPIPE_A_MAX + 1];

			d.intr += !!(hdr->nlmsg_flags & NLM_F_DUMP_INTR);
			if (hdr->nlmsg_type == NLMSG_DONE ||
			    hdr->nlmsg_type == NLMSG_ERROR) {
				if (nlmsg_datalen(hdr) >= (int)sizeof(int))
					d.error = -*(int *)nlmsg_data(hdr);
				done = true;
			} else if (!genlmsg_parse(hdr, 0, tb, REPLIPIPE_A_MAX, NULL) &&
				   tb[REPLIPIPE_A_PIPE_ID] &&
				   !strncmp(nla_get_string(tb[REPLIPIPE_A_PIPE_ID]),
					    DUMPDEL_PREFIX, strlen(DUMPDEL_PREFIX))) {
				int k = atoi(nla_get_string(tb[REPLIPIPE_A_PIPE_ID]) +
					     strlen(DUMPDEL_PREFIX));

				d.pipes++;
				if (k >= 0 && k < DUMPDEL_PIPES)
					d.seen[k] = true;
			}
		}
		if (i == 0)
			d.first = d.pipes;
	}
	close(fd);
	return d;
}

static void cases_pipe_dump_delete(const struct conn *c)
{
	struct pipe_dump d;
	int i, missing;
	char id[32];

	for (i = 0; i < DUMPDEL_PIPES; i++) {
		snprintf(id, sizeof(id), DUMPDEL_PREFIX "%02d", i);
		if (req_send(c, pipe_set(c, id, NULL, NULL)).error) {
			fprintf(stderr, "rp-nltest: cannot make pipe %s\n", id);
			exit(1);
		}
	}
	d = pipe_dump_deleting(c, NULL);
	missing = 0;
	for (i = 0; i < DUMPDEL_PIPES; i++)
		missing += !d.seen[i];
	printf("case pipe_dump_unchanged errno=%s pipes=%d missing=%d intr=%d",
	       errname(d.error), d.pipes, missing, d.intr);
	if (d.error || missing || d.intr) {
		printf(" FAIL expected=0 missing=0 intr=0");
		failures++;
	}
	printf("\n");
	/* pipe 00 is in the first callback: it is deleted after it */
	d = pipe_dump_deleting(c, DUMPDEL_PREFIX "00");
	missing = 0;
	for (i = 1; i < DUMPDEL_PIPES; i++)
		missing += !d.seen[i];
	printf("case pipe_dump_delete errno=%s pipes=%d first=%d missing=%d intr=%d",
	       errname(d.error), d.pipes, d.first, missing, d.intr);
	/* a pipe left out must be said */
	if (d.error || d.first < 1 || d.first >= DUMPDEL_PIPES ||
	    (missing && !d.intr)) {
		printf(" FAIL expected=0 1<=first<%d, missing=0 or intr>0",
		       DUMPDEL_PIPES);
		failures++;
	}
	printf("\n");
	for (i = 1; i < DUMPDEL_PIPES; i++) {
		snprintf(id, sizeof(id), DUMPDEL_PREFIX "%02d", i);
		pipe_del(c, id);
	}
}

static void cases_unprivileged(const struct opts *o)
{
	static const int ok[MAX_EXPECTED] = { 0 };
	struct conn c;
	struct nl_msg *msg;
	struct reply r;
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("rp-nltest: fork");
		exit(1);
	}
	if (pid > 0) {
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			printf("case unprivileged_child FAIL status=%d\n", status);
			failures++;
		}
		return;
	}
	failures = 0;	/* the child's own: the parent counts those before the fork */
	if (setgroups(0, NULL) || setresgid(o->unpriv_uid, o->unpriv_uid, o->unpriv_uid) ||
	    setresuid(o->unpriv_uid, o->unpriv_uid, o->unpriv_uid)) {
		perror("rp-nltest: dropping privileges");
		exit(1);
	}
	c = conn_open();

	r = req_send(&c, pipe_set(&c, NLTEST_PIPE2, o->source, o->target));
	judge("unpriv_pipe_set", &r, EXPECT(EPERM), false);
	r = pipe_del(&c, NLTEST_NONE);
	judge("unpriv_pipe_del", &r, EXPECT(EPERM), false);

	r = req_send(&c, pair_set(&c, NLTEST_NONE, o->source, REPLIPIPE_PAIR_PAUSED));
	judge("unpriv_pair_set", &r, EXPECT(EPERM), false);

	msg = req_new(&c, REPLIPIPE_CMD_RESYNC_CLAIM, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_NONE);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, o->source);
	r = req_send(&c, msg);
	judge("unpriv_resync_claim", &r, EXPECT(EPERM), false);

	msg = req_new(&c, REPLIPIPE_CMD_RESYNC_DONE, 0);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_ID, 1);
	r = req_send(&c, msg);
	judge("unpriv_resync_done", &r, EXPECT(EPERM), false);

	msg = req_new(&c, REPLIPIPE_CMD_RESYNC_CLAIM_WAIT, 0);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_ID, 1);
	r = req_send(&c, msg);
	judge("unpriv_resync_claim_wait", &r, EXPECT(EPERM), false);

	msg = req_new(&c, REPLIPIPE_CMD_RESYNC_FAILED, 0);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_ID, 1);
	r = req_send(&c, msg);
	judge("unpriv_resync_failed", &r, EXPECT(EPERM), false);

	r = pipe_get(&c, NULL);
	judge("unpriv_pipe_get_dump", &r, ok, false);
	fflush(stdout);
	_exit(failures ? 1 : 0);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	int i;

	*o = (struct opts){ .unpriv_uid = 1000 };
	for (i = 1; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];

		if (!strcmp(a, "--source"))
			o->source = v;
		else if (!strcmp(a, "--source2"))
			o->source2 = v;
		else if (!strcmp(a, "--primary"))
			o->primary = v;
		else if (!strcmp(a, "--target"))
			o->target = v;
		else if (!strcmp(a, "--target2"))
			o->target2 = v;
		else if (!strcmp(a, "--unpriv-uid"))
			o->unpriv_uid = atoi(v);
		else
			usage();
	}
	if (i != argc || !o->source || !o->source2 || !o->primary || !o->target ||
	    !o->target2 || o->unpriv_uid <= 0)
		usage();
}

int main(int argc, char **argv)
{
	struct opts o;
	struct conn c;
	struct reply r;

	parse_args(argc, argv, &o);
	c = conn_open();
	cases_policy(&c, &o);
	cases_endpoints(&c, &o);
	cases_unknown_objects(&c, &o);
	cases_existing_pipe(&c, &o);
	cases_bitmap_dump(&c, &o);
	cases_pipe_dump_delete(&c);
	cases_unprivileged(&o);

	/* a refused call changes nothing: no pipe of ours is left */
	r = pipe_get(&c, NULL);
	printf("case no_leftover_pipes errno=%s pipes=%d nltest_pipes=%d",
	       errname(r.error), r.pipes, r.nltest_pipes);
	if (r.error || r.nltest_pipes) {
		printf(" FAIL expected=0 nltest_pipes=0");
		failures++;
	}
	printf("\nnltest: failures=%d\n", failures);
	nl_socket_free(c.sk);
	return failures ? 1 : 0;
}
