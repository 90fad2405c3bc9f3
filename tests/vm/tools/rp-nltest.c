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
 * The sources must be enabled replipipe backstores in no pipe; the targets
 * unused block devices at least as large as the sources. Prints one line per
 * case: case NAME errno=ENAME extack="..." [FAIL expected=...].
 * EPERM comes from the genl core (GENL_ADMIN_PERM), which sets no extack:
 * those cases only check the errno.
 * Exit: 0 all cases as expected, 1 some case failed, 64 usage, 69 no family.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/netlink.h>
#include <stdbool.h>
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

static void parse_pipe(const struct conn *c, struct nlmsghdr *hdr, struct reply *r)
{
	struct nlattr *tb[REPLIPIPE_A_MAX + 1], *pair;
	const char *id;
	int rem;

	if (hdr->nlmsg_type != c->family ||
	    genlmsg_parse(hdr, 0, tb, REPLIPIPE_A_MAX, NULL))
		return;
	r->pipes++;
	id = tb[REPLIPIPE_A_PIPE_ID] ? nla_get_string(tb[REPLIPIPE_A_PIPE_ID]) : "";
	if (strncmp(id, "nltest-", 7))
		return;
	r->nltest_pipes++;
	if (tb[REPLIPIPE_A_PIPE_REGION_KIB])
		r->region_kib = nla_get_u32(tb[REPLIPIPE_A_PIPE_REGION_KIB]);
	if (tb[REPLIPIPE_A_PIPE_PAIRS])
		nla_for_each_nested(pair, tb[REPLIPIPE_A_PIPE_PAIRS], rem)
			r->pairs += nla_type(pair) == REPLIPIPE_A_PIPE_PAIR;
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
				parse_pipe(c, hdr, &r);
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

static void cases_unknown_objects(const struct conn *c, const struct opts *o)
{
	struct nl_msg *msg;
	struct reply r;

	r = pipe_del(c, NLTEST_NONE);
	judge("del_unknown_pipe", &r, EXPECT(ENOENT), true);
	r = pipe_get(c, NLTEST_NONE);
	judge("get_unknown_pipe", &r, EXPECT(ENOENT), true);

	msg = req_new(c, REPLIPIPE_CMD_PAIR_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_NONE);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, o->source);
	nla_put_u8(msg, REPLIPIPE_A_PAIR_STATE, REPLIPIPE_PAIR_PAUSED);
	r = req_send(c, msg);
	judge("pair_set_unknown_pipe", &r, EXPECT(ENOENT), true);

	msg = req_new(c, REPLIPIPE_CMD_RESYNC_DONE, 0);
	nla_put_u64(msg, REPLIPIPE_A_CLAIM_ID, 0x7e57c1a1ull);
	r = req_send(c, msg);
	judge("done_unknown_claim", &r, EXPECT(ENOENT), true);

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

	msg = req_new(c, REPLIPIPE_CMD_PAIR_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_PIPE);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, o->source);
	nla_put_u8(msg, REPLIPIPE_A_PAIR_STATE, REPLIPIPE_PAIR_INSYNC);
	expect_refused(c, "pair_set_insync_requested", msg, NULL, EXPECT(EINVAL, ERANGE));

	msg = req_new(c, REPLIPIPE_CMD_PAIR_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_PIPE);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, o->source2);
	nla_put_u8(msg, REPLIPIPE_A_PAIR_STATE, REPLIPIPE_PAIR_PAUSED);
	expect_refused(c, "pair_set_unknown_pair", msg, NULL, EXPECT(ENOENT));

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

/* State-changing ops without CAP_NET_ADMIN: EPERM; a read still works. */
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

	msg = req_new(&c, REPLIPIPE_CMD_PAIR_SET, 0);
	nla_put_string(msg, REPLIPIPE_A_PIPE_ID, NLTEST_NONE);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, o->source);
	nla_put_u8(msg, REPLIPIPE_A_PAIR_STATE, REPLIPIPE_PAIR_PAUSED);
	r = req_send(&c, msg);
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
