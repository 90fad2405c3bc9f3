// The genl codec against messages built the way the kernel builds them, and
// the socket's behaviour when the module is absent (this host has no
// replipipe.ko; the VM scenarios cover the kernel side).
#include <gtest/gtest.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/replipipe.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>

#include <cstring>
#include <string>
#include <vector>

#include "netlink_client.h"
#include "netlink_codec.h"
#include "netlink_dump_retry.h"
#include "netlink_events.h"
#include "netlink_resync.h"
#include "netlink_socket.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

constexpr int kFamily = 0x42;

NlMsgPtr GenlMessage(uint8_t cmd)
{
	NlMsgPtr msg(nlmsg_alloc_size(64 * 1024));
	genlmsg_put(msg.get(), 0, 7, kFamily, 0, 0, cmd,
	            REPLIPIPE_GENL_VERSION);
	return msg;
}

void PutPairStatus(nl_msg *msg, int type, const std::string &src,
                   PairState state, uint64_t dirty)
{
	nlattr *nest = nla_nest_start(msg, type);
	nla_put_string(msg, REPLIPIPE_A_PAIR_SRC, src.c_str());
	nla_put_string(msg, REPLIPIPE_A_PAIR_TGT, "/dev/ram1");
	nla_put_u8(msg, REPLIPIPE_A_PAIR_ST, static_cast<uint8_t>(state));
	nla_put_u64(msg, REPLIPIPE_A_PAIR_REGIONS, 2048);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_DIRTY_REGIONS, dirty);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_WRITES_MIRRORED, 11);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_BYTES_MIRRORED, 1ull << 33);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_TARGET_ERRORS, 3);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_LAG_BYTES, 4096);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_SOURCE_BYTES, 128ull << 20);
	nla_put_u8(msg, REPLIPIPE_A_PAIR_INTENT, REPLIPIPE_INTENT_LOADED);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_INTENT_LOADED, 5);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_INTENT_MARKED, 9);
	nla_put_u64(msg, REPLIPIPE_A_PAIR_SERIAL, 4242);
	// new_encode_dev(): 1:0, and 259:0x12345 (a minor past 8 bits).
	nla_put_u32(msg, REPLIPIPE_A_PAIR_SRC_DEV, 0x100);
	nla_put_u32(msg, REPLIPIPE_A_PAIR_TGT_DEV, 0x12310345);
	nla_put_u32(msg, 200, 1); // unknown to us: ignored
	nla_nest_end(msg, nest);
}

TEST(NetlinkCodec, PipeSpecRoundTrip)
{
	KernelPipeSpec spec;
	spec.id = "3f1c-uuid";
	spec.name = "db mirror";
	spec.mode = Mode::kAsynchronous;
	spec.failure_policy = FailurePolicy::kFailIO;
	spec.max_lag_kib = 2048;
	spec.region_kib = 128;
	spec.pairs = {{"replipipe_0/vol1", "/dev/sdb", true},
	              {"replipipe_0/vol2", "/dev/sdc", false}};
	NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_PIPE_SET);
	ASSERT_TRUE(PutPipeSpec(msg.get(), spec).ok());

	auto pipe = ParsePipeMessage(nlmsg_hdr(msg.get()));
	ASSERT_TRUE(pipe.ok()) << pipe.status().message();
	EXPECT_EQ(pipe->id, spec.id);
	EXPECT_EQ(pipe->name, spec.name);
	EXPECT_EQ(pipe->mode, Mode::kAsynchronous);
	EXPECT_EQ(pipe->failure_policy, FailurePolicy::kFailIO);
	EXPECT_EQ(pipe->max_lag_kib, 2048u);
	EXPECT_EQ(pipe->region_kib, 128u);
	ASSERT_EQ(pipe->pairs.size(), 2u);
	EXPECT_EQ(pipe->pairs[1].source, "replipipe_0/vol2");
	EXPECT_EQ(pipe->pairs[1].target, "/dev/sdc");

	// ASSUME_CLEAN is a flag inside the first pair's nest only.
	nlattr *tb[REPLIPIPE_A_MAX + 1] = {};
	genlmsg_parse(nlmsg_hdr(msg.get()), 0, tb, REPLIPIPE_A_MAX, nullptr);
	ASSERT_NE(tb[REPLIPIPE_A_PIPE_PAIRS], nullptr);
	int n = 0;
	nlattr *pos;
	int rem;
	nla_for_each_nested(pos, tb[REPLIPIPE_A_PIPE_PAIRS], rem)
	{
		EXPECT_EQ(nla_type(pos), REPLIPIPE_A_PIPE_PAIR);
		nlattr *pt[REPLIPIPE_A_PAIR_MAX + 1] = {};
		nla_parse_nested(pt, REPLIPIPE_A_PAIR_MAX, pos, nullptr);
		EXPECT_EQ(pt[REPLIPIPE_A_PAIR_ASSUME_CLEAN] != nullptr, n == 0);
		++n;
	}
	EXPECT_EQ(n, 2);
}

// 256 pairs with long paths take more than an attribute's 64 KiB: the
// pairs go into several REPLIPIPE_A_PIPE_PAIRS nests, none over 64 KiB,
// and come back whole and in order (libnl drops a nest past 64 KiB: the
// kernel then got a pipe without pairs).
TEST(NetlinkCodec, PipeSpecOfManyLongPairsSpansNests)
{
	KernelPipeSpec spec;
	spec.id = "big";
	for (int i = 0; i < REPLIPIPE_MAX_PAIRS; ++i)
		spec.pairs.push_back({"replipipe_0/" + std::string(100, 'v') +
		                              std::to_string(i),
		                      "/dev/disk/by-id/" +
		                              std::string(220, 't') +
		                              std::to_string(i),
		                      i % 2 == 0});
	NlMsgPtr msg(nlmsg_alloc_size(256 * 1024));
	genlmsg_put(msg.get(), 0, 7, kFamily, 0, 0, REPLIPIPE_CMD_PIPE_SET,
	            REPLIPIPE_GENL_VERSION);
	ASSERT_TRUE(PutPipeSpec(msg.get(), spec).ok());

	int nests = 0;
	nlattr *top;
	int rem;
	nlmsghdr *hdr = nlmsg_hdr(msg.get());
	nla_for_each_attr(
	        top,
	        genlmsg_attrdata(static_cast<genlmsghdr *>(nlmsg_data(hdr)), 0),
	        genlmsg_attrlen(static_cast<genlmsghdr *>(nlmsg_data(hdr)), 0),
	        rem)
	{
		if (nla_type(top) != REPLIPIPE_A_PIPE_PAIRS)
			continue;
		++nests;
		EXPECT_GT(nla_len(top), 0);
	}
	EXPECT_GE(nests, 2);

	auto pipe = ParsePipeMessage(hdr);
	ASSERT_TRUE(pipe.ok()) << pipe.status().message();
	ASSERT_EQ(pipe->pairs.size(), spec.pairs.size());
	for (size_t i = 0; i < spec.pairs.size(); ++i) {
		EXPECT_EQ(pipe->pairs[i].source, spec.pairs[i].source);
		EXPECT_EQ(pipe->pairs[i].target, spec.pairs[i].target);
	}
}

// A reply may carry its pairs in several nests, as the kernel sends a pipe
// past 64 KiB of pairs: every nest counts, in order.
TEST(NetlinkCodec, PipeReplyWithSeveralPairsNests)
{
	NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_PIPE_GET);
	nla_put_string(msg.get(), REPLIPIPE_A_PIPE_ID, "p1");
	nlattr *pairs = nla_nest_start(msg.get(), REPLIPIPE_A_PIPE_PAIRS);
	PutPairStatus(msg.get(), REPLIPIPE_A_PIPE_PAIR, "replipipe_0/a",
	              PairState::kInSync, 0);
	PutPairStatus(msg.get(), REPLIPIPE_A_PIPE_PAIR, "replipipe_0/b",
	              PairState::kInSync, 0);
	nla_nest_end(msg.get(), pairs);
	nla_put_u32(msg.get(), REPLIPIPE_A_PIPE_REGION_KIB, 64);
	pairs = nla_nest_start(msg.get(), REPLIPIPE_A_PIPE_PAIRS);
	PutPairStatus(msg.get(), REPLIPIPE_A_PIPE_PAIR, "replipipe_0/c",
	              PairState::kSyncing, 1);
	nla_nest_end(msg.get(), pairs);

	auto pipe = ParsePipeMessage(nlmsg_hdr(msg.get()));
	ASSERT_TRUE(pipe.ok());
	EXPECT_EQ(pipe->region_kib, 64u);
	ASSERT_EQ(pipe->pairs.size(), 3u);
	EXPECT_EQ(pipe->pairs[0].source, "replipipe_0/a");
	EXPECT_EQ(pipe->pairs[1].source, "replipipe_0/b");
	EXPECT_EQ(pipe->pairs[2].source, "replipipe_0/c");
	EXPECT_EQ(pipe->pairs[2].state, PairState::kSyncing);
}

TEST(NetlinkCodec, PipeReplyWithCounters)
{
	NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_PIPE_GET);
	nla_put_string(msg.get(), REPLIPIPE_A_PIPE_ID, "p1");
	nla_put_u8(msg.get(), REPLIPIPE_A_PIPE_MODE, 0);
	nla_put_u32(msg.get(), REPLIPIPE_A_PIPE_REGION_KIB, 64);
	nlattr *pairs = nla_nest_start(msg.get(), REPLIPIPE_A_PIPE_PAIRS);
	PutPairStatus(msg.get(), REPLIPIPE_A_PIPE_PAIR, "replipipe_0/a",
	              PairState::kDegraded, 17);
	nla_nest_end(msg.get(), pairs);

	auto pipe = ParsePipeMessage(nlmsg_hdr(msg.get()));
	ASSERT_TRUE(pipe.ok());
	ASSERT_EQ(pipe->pairs.size(), 1u);
	const KernelPairStatus &p = pipe->pairs[0];
	EXPECT_EQ(p.source, "replipipe_0/a");
	EXPECT_EQ(p.state, PairState::kDegraded);
	EXPECT_EQ(p.regions, 2048u);
	EXPECT_EQ(p.dirty_regions, 17u);
	EXPECT_EQ(p.writes_mirrored, 11u);
	EXPECT_EQ(p.bytes_mirrored, 1ull << 33);
	EXPECT_EQ(p.target_errors, 3u);
	EXPECT_EQ(p.lag_bytes, 4096u);
	EXPECT_EQ(p.source_bytes, 128ull << 20);
	EXPECT_EQ(p.intent, REPLIPIPE_INTENT_LOADED);
	EXPECT_STREQ(IntentRecordName(p.intent), "loaded");
	EXPECT_EQ(p.intent_loaded_regions, 5u);
	EXPECT_EQ(p.intent_marked_regions, 9u);
	EXPECT_EQ(p.serial, 4242u);
	EXPECT_EQ(p.source_dev, makedev(1, 0));
	EXPECT_EQ(major(p.target_dev), 259u);
	EXPECT_EQ(minor(p.target_dev), 0x12345u);
}

// An older module reports no serial (0, which claims then leave out) and
// no device numbers (0: the copy checks none).
TEST(NetlinkCodec, PairWithoutSerialIsZero)
{
	NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_PIPE_GET);
	nla_put_string(msg.get(), REPLIPIPE_A_PIPE_ID, "p1");
	nlattr *pairs = nla_nest_start(msg.get(), REPLIPIPE_A_PIPE_PAIRS);
	nlattr *nest = nla_nest_start(msg.get(), REPLIPIPE_A_PIPE_PAIR);
	nla_put_string(msg.get(), REPLIPIPE_A_PAIR_SRC, "replipipe_0/a");
	nla_nest_end(msg.get(), nest);
	nla_nest_end(msg.get(), pairs);
	auto pipe = ParsePipeMessage(nlmsg_hdr(msg.get()));
	ASSERT_TRUE(pipe.ok());
	ASSERT_EQ(pipe->pairs.size(), 1u);
	EXPECT_EQ(pipe->pairs[0].serial, 0u);
	EXPECT_EQ(pipe->pairs[0].source_dev, 0u);
	EXPECT_EQ(pipe->pairs[0].target_dev, 0u);
}

TEST(NetlinkCodec, PipeWithoutIdIsAnError)
{
	NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_PIPE_GET);
	nla_put_string(msg.get(), REPLIPIPE_A_PIPE_NAME, "x");
	auto pipe = ParsePipeMessage(nlmsg_hdr(msg.get()));
	EXPECT_FALSE(pipe.ok());
	EXPECT_EQ(pipe.status().err(), EPROTO);
}

TEST(NetlinkCodec, UnterminatedStringIsBounded)
{
	NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_PIPE_GET);
	const char raw[3] = {'a', 'b', 'c'}; // no NUL
	nla_put(msg.get(), REPLIPIPE_A_PIPE_ID, sizeof(raw), raw);
	auto pipe = ParsePipeMessage(nlmsg_hdr(msg.get()));
	ASSERT_TRUE(pipe.ok());
	EXPECT_EQ(pipe->id, "abc");
}

// An NLMSG_ERROR the way netlink_ack() builds it.
NlMsgPtr ErrorMessage(int err, bool capped, const char *extack)
{
	NlMsgPtr request = GenlMessage(REPLIPIPE_CMD_PIPE_SET);
	nla_put_string(request.get(), REPLIPIPE_A_PIPE_ID, "some-pipe-id");
	const nlmsghdr *req = nlmsg_hdr(request.get());

	int flags = 0;
	if (capped)
		flags |= NLM_F_CAPPED;
	if (extack != nullptr)
		flags |= NLM_F_ACK_TLVS;
	NlMsgPtr msg(nlmsg_alloc_simple(NLMSG_ERROR, flags));
	const size_t payload =
	        capped ? sizeof(nlmsgerr)
	               : sizeof(nlmsgerr) + req->nlmsg_len - NLMSG_HDRLEN;
	auto *e = static_cast<nlmsgerr *>(
	        nlmsg_reserve(msg.get(), payload, NLMSG_ALIGNTO));
	e->error = -err;
	std::memcpy(&e->msg, req, capped ? sizeof(*req) : req->nlmsg_len);
	if (extack != nullptr) {
		nla_put_string(msg.get(), NLMSGERR_ATTR_MSG, extack);
		nla_put_u32(msg.get(), NLMSGERR_ATTR_OFFS, 20);
	}
	return msg;
}

TEST(NetlinkCodec, ExtackOfCappedAndUncappedErrors)
{
	for (bool capped : {true, false}) {
		NlMsgPtr msg = ErrorMessage(
		        EINVAL, capped, "region size must be a power of two");
		EXPECT_EQ(ExtackOfError(nlmsg_hdr(msg.get())),
		          "region size must be a power of two")
		        << "capped=" << capped;
	}
	NlMsgPtr plain = ErrorMessage(EPERM, true, nullptr);
	EXPECT_EQ(ExtackOfError(nlmsg_hdr(plain.get())), "");
}

TEST(NetlinkCodec, ExtackMissingAttributeFallback)
{
	NlMsgPtr msg(
	        nlmsg_alloc_simple(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS));
	auto *e = static_cast<nlmsgerr *>(
	        nlmsg_reserve(msg.get(), sizeof(nlmsgerr), NLMSG_ALIGNTO));
	std::memset(e, 0, sizeof(*e));
	e->error = -EINVAL;
	nla_put_u32(msg.get(), NLMSGERR_ATTR_MISS_TYPE, REPLIPIPE_A_PIPE_ID);
	EXPECT_EQ(ExtackOfError(nlmsg_hdr(msg.get())),
	          "missing attribute type 1");
}

TEST(NetlinkCodec, DoneCarriesDumpError)
{
	NlMsgPtr msg(
	        nlmsg_alloc_simple(NLMSG_DONE, NLM_F_MULTI | NLM_F_ACK_TLVS));
	const int err = -ENOENT;
	nlmsg_append(msg.get(), const_cast<int *>(&err), sizeof(err),
	             NLMSG_ALIGNTO);
	nla_put_string(msg.get(), NLMSGERR_ATTR_MSG, "no such pair");
	std::string extack;
	EXPECT_EQ(ErrorOfDone(nlmsg_hdr(msg.get()), &extack), ENOENT);
	EXPECT_EQ(extack, "no such pair");

	NlMsgPtr ok(nlmsg_alloc_simple(NLMSG_DONE, NLM_F_MULTI));
	const int zero = 0;
	nlmsg_append(ok.get(), const_cast<int *>(&zero), sizeof(zero),
	             NLMSG_ALIGNTO);
	EXPECT_EQ(ErrorOfDone(nlmsg_hdr(ok.get()), &extack), 0);
}

// The NLMSG_DONE a PIPE_GET dump ends with when a pipe grew beyond the size
// the dump's .start gave its messages (decision 28).
Status GrownDumpError()
{
	NlMsgPtr msg(
	        nlmsg_alloc_simple(NLMSG_DONE, NLM_F_MULTI | NLM_F_ACK_TLVS));
	const int err = -EMSGSIZE;
	nlmsg_append(msg.get(), const_cast<int *>(&err), sizeof(err),
	             NLMSG_ALIGNTO);
	nla_put_string(msg.get(), NLMSGERR_ATTR_MSG,
	               "a pipe grew during the dump; dump again");
	std::string extack;
	const int e = ErrorOfDone(nlmsg_hdr(msg.get()), &extack);
	return KernelError(e, extack);
}

// That dump is tried again, with its output started afresh, a bounded
// number of times; other errors are not retried.
TEST(NetlinkDump, ChangedPipesAreDumpedAgain)
{
	int dumps = 0;
	std::vector<std::string> got;
	Status st = RetryDump([&] {
		got.clear();
		got.push_back("p1");
		if (++dumps < 3)
			return GrownDumpError();
		got.push_back("p2");
		return Status();
	});
	EXPECT_TRUE(st.ok()) << st.message();
	EXPECT_EQ(dumps, 3);
	EXPECT_EQ(got, (std::vector<std::string>{"p1", "p2"}));

	dumps = 0;
	st = RetryDump([&] {
		++dumps;
		return GrownDumpError();
	});
	EXPECT_EQ(dumps, 3);
	EXPECT_EQ(st.err(), EMSGSIZE);
	EXPECT_EQ(st.message(),
	          "dumped 3 times, the pipes changed during each: a pipe grew "
	          "during the dump; dump again: Message too long");

	// A dump the kernel flagged NLM_F_DUMP_INTR (a pipe made or deleted
	// between two of its callbacks), as NetlinkSocket returns it.
	dumps = 0;
	got.clear();
	st = RetryDump([&] {
		got.clear();
		got.push_back("p1");
		if (++dumps < 2)
			return Status::Error("netlink: dump interrupted by a "
			                     "concurrent change, retry",
			                     EAGAIN);
		got.push_back("p2");
		return Status();
	});
	EXPECT_TRUE(st.ok()) << st.message();
	EXPECT_EQ(dumps, 2);
	EXPECT_EQ(got, (std::vector<std::string>{"p1", "p2"}));

	dumps = 0;
	st = RetryDump([&] {
		++dumps;
		return Status::Error("no answer", ETIMEDOUT);
	});
	EXPECT_EQ(dumps, 1);
	EXPECT_EQ(st.err(), ETIMEDOUT);
}

TEST(NetlinkCodec, KernelErrorText)
{
	Status st = KernelError(EINVAL, "bad region size");
	EXPECT_EQ(st.err(), EINVAL);
	EXPECT_EQ(st.message(), "bad region size: Invalid argument");
	EXPECT_EQ(KernelError(EPERM, "").message(), "Operation not permitted");
}

TEST(NetlinkEvents, PairStateEvent)
{
	NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_EVT_PAIR_STATE);
	nla_put_string(msg.get(), REPLIPIPE_A_PIPE_ID, "p9");
	PutPairStatus(msg.get(), REPLIPIPE_A_PIPE_PAIR, "replipipe_0/v",
	              PairState::kDegraded, 5);
	auto event = ParseEventMessage(nlmsg_hdr(msg.get()));
	ASSERT_TRUE(event.has_value());
	EXPECT_EQ(event->type, KernelEventType::kPairState);
	EXPECT_EQ(event->pipe_id, "p9");
	ASSERT_TRUE(event->pair.has_value());
	EXPECT_EQ(event->pair->source, "replipipe_0/v");
	EXPECT_EQ(event->pair->state, PairState::kDegraded);
	EXPECT_EQ(event->pair->dirty_regions, 5u);
	EXPECT_EQ(event->pair->serial, 4242u);
	EXPECT_STREQ(KernelEventTypeName(event->type), "pair_state");
}

TEST(NetlinkEvents, PipeEventsAndOthers)
{
	NlMsgPtr added = GenlMessage(REPLIPIPE_CMD_EVT_PIPE_ADDED);
	nla_put_string(added.get(), REPLIPIPE_A_PIPE_ID, "p1");
	nla_put_string(added.get(), REPLIPIPE_A_PIPE_NAME, "n");
	auto event = ParseEventMessage(nlmsg_hdr(added.get()));
	ASSERT_TRUE(event.has_value());
	EXPECT_EQ(event->type, KernelEventType::kPipeAdded);
	EXPECT_FALSE(event->pair.has_value());
	ASSERT_TRUE(event->pipe.has_value());
	EXPECT_EQ(event->pipe->name, "n");

	NlMsgPtr reply = GenlMessage(REPLIPIPE_CMD_PIPE_GET);
	nla_put_string(reply.get(), REPLIPIPE_A_PIPE_ID, "p1");
	EXPECT_FALSE(ParseEventMessage(nlmsg_hdr(reply.get())).has_value());
}

TEST(NetlinkBitmap, ChunksReassemble)
{
	DirtyBitmap bitmap;
	const uint64_t nbits = 8 * REPLIPIPE_BITMAP_CHUNK_BYTES + 13;
	std::vector<uint8_t> chunk0(REPLIPIPE_BITMAP_CHUNK_BYTES, 0);
	chunk0[0] = 0x81;                                // regions 0 and 7
	chunk0[REPLIPIPE_BITMAP_CHUNK_BYTES - 1] = 0x80; // region 32767
	const uint8_t chunk1[2] = {0x01, 0x10}; // regions 32768 and 32780

	NlMsgPtr m0 = GenlMessage(REPLIPIPE_CMD_BITMAP_GET);
	nla_put_u64(m0.get(), REPLIPIPE_A_BITMAP_NBITS, nbits);
	nla_put_u64(m0.get(), REPLIPIPE_A_BITMAP_OFFSET, 0);
	nla_put(m0.get(), REPLIPIPE_A_BITMAP_DATA, chunk0.size(),
	        chunk0.data());
	NlMsgPtr m1 = GenlMessage(REPLIPIPE_CMD_BITMAP_GET);
	nla_put_u64(m1.get(), REPLIPIPE_A_BITMAP_NBITS, nbits);
	nla_put_u64(m1.get(), REPLIPIPE_A_BITMAP_OFFSET,
	            8 * REPLIPIPE_BITMAP_CHUNK_BYTES);
	nla_put(m1.get(), REPLIPIPE_A_BITMAP_DATA, sizeof(chunk1), chunk1);

	ASSERT_TRUE(MergeBitmapMessage(nlmsg_hdr(m0.get()), &bitmap).ok());
	ASSERT_TRUE(MergeBitmapMessage(nlmsg_hdr(m1.get()), &bitmap).ok());
	EXPECT_EQ(bitmap.nbits, nbits);
	EXPECT_EQ(bitmap.count(), 5u);
	EXPECT_TRUE(bitmap.test(0));
	EXPECT_TRUE(bitmap.test(7));
	EXPECT_FALSE(bitmap.test(8));
	EXPECT_TRUE(bitmap.test(32767));
	EXPECT_TRUE(bitmap.test(32768));
	EXPECT_TRUE(bitmap.test(32780));

	// A chunk past nbits is a protocol error, not a buffer overflow.
	NlMsgPtr bad = GenlMessage(REPLIPIPE_CMD_BITMAP_GET);
	nla_put_u64(bad.get(), REPLIPIPE_A_BITMAP_OFFSET, nbits + 8);
	nla_put(bad.get(), REPLIPIPE_A_BITMAP_DATA, sizeof(chunk1), chunk1);
	EXPECT_EQ(MergeBitmapMessage(nlmsg_hdr(bad.get()), &bitmap).err(),
	          EPROTO);
}

// A claim names the pair it was planned for (the kernel refuses it with
// ESTALE once a PIPE_SET replaced that pair); serial 0 (an older module
// reported none) sends no such attribute.
TEST(NetlinkResync, ClaimRequestCarriesThePairSerial)
{
	for (uint64_t serial : {uint64_t{0}, uint64_t{77}, ~uint64_t{0}}) {
		NlMsgPtr msg = GenlMessage(REPLIPIPE_CMD_RESYNC_CLAIM);
		ASSERT_TRUE(PutClaimRequest(msg.get(), "p1", "replipipe_0/a",
		                            96, 512, serial)
		                    .ok());
		nlattr *tb[REPLIPIPE_A_MAX + 1] = {};
		ASSERT_EQ(genlmsg_parse(nlmsg_hdr(msg.get()), 0, tb,
		                        REPLIPIPE_A_MAX, nullptr),
		          0);
		ASSERT_NE(tb[REPLIPIPE_A_PIPE_ID], nullptr);
		EXPECT_STREQ(nla_get_string(tb[REPLIPIPE_A_PIPE_ID]), "p1");
		ASSERT_NE(tb[REPLIPIPE_A_PAIR_SOURCE], nullptr);
		EXPECT_STREQ(nla_get_string(tb[REPLIPIPE_A_PAIR_SOURCE]),
		             "replipipe_0/a");
		ASSERT_NE(tb[REPLIPIPE_A_CLAIM_HINT], nullptr);
		EXPECT_EQ(nla_get_u64(tb[REPLIPIPE_A_CLAIM_HINT]), 96u);
		ASSERT_NE(tb[REPLIPIPE_A_CLAIM_MAX_REGIONS], nullptr);
		EXPECT_EQ(nla_get_u32(tb[REPLIPIPE_A_CLAIM_MAX_REGIONS]), 512u);
		if (serial == 0) {
			EXPECT_EQ(tb[REPLIPIPE_A_CLAIM_PAIR_SERIAL], nullptr);
		} else {
			ASSERT_NE(tb[REPLIPIPE_A_CLAIM_PAIR_SERIAL], nullptr);
			EXPECT_EQ(
			        nla_get_u64(tb[REPLIPIPE_A_CLAIM_PAIR_SERIAL]),
			        serial);
		}
	}
}

// RESYNC_CLAIM's and RESYNC_CLAIM_WAIT's replies as the kernel sends them
// (rp_claim_reply_send()): a claim not granted yet says so and carries its
// id only; its regions are not the engine's.
TEST(NetlinkResync, ClaimRepliesPendingAndGranted)
{
	RegionClaim claim;
	bool pending = false;

	NlMsgPtr wait = GenlMessage(REPLIPIPE_CMD_RESYNC_CLAIM);
	nla_put_u64(wait.get(), REPLIPIPE_A_CLAIM_ID, 41);
	nla_put_flag(wait.get(), REPLIPIPE_A_CLAIM_PENDING);
	ASSERT_TRUE(
	        ParseClaimReply(nlmsg_hdr(wait.get()), &claim, &pending).ok());
	EXPECT_TRUE(pending);
	EXPECT_EQ(claim.id, 41u);
	EXPECT_EQ(claim.count, 0u);

	NlMsgPtr granted = GenlMessage(REPLIPIPE_CMD_RESYNC_CLAIM_WAIT);
	nla_put_u64(granted.get(), REPLIPIPE_A_CLAIM_ID, 41);
	nla_put_u64(granted.get(), REPLIPIPE_A_CLAIM_FIRST, 96);
	nla_put_u32(granted.get(), REPLIPIPE_A_CLAIM_COUNT, 8);
	nla_put_u32(granted.get(), REPLIPIPE_A_CLAIM_TIME_LEFT_MS, 29500);
	ASSERT_TRUE(ParseClaimReply(nlmsg_hdr(granted.get()), &claim, &pending)
	                    .ok());
	EXPECT_FALSE(pending);
	EXPECT_EQ(claim.id, 41u);
	EXPECT_EQ(claim.first, 96u);
	EXPECT_EQ(claim.count, 8u);
	ASSERT_TRUE(claim.time_left.has_value());
	EXPECT_EQ(claim.time_left->count(), 29500);

	// Nothing dirty past the fence: count 0, no claim.
	NlMsgPtr clean = GenlMessage(REPLIPIPE_CMD_RESYNC_CLAIM_WAIT);
	nla_put_u64(clean.get(), REPLIPIPE_A_CLAIM_ID, 0);
	nla_put_u64(clean.get(), REPLIPIPE_A_CLAIM_FIRST, 96);
	nla_put_u32(clean.get(), REPLIPIPE_A_CLAIM_COUNT, 0);
	ASSERT_TRUE(
	        ParseClaimReply(nlmsg_hdr(clean.get()), &claim, &pending).ok());
	EXPECT_FALSE(pending);
	EXPECT_EQ(claim.count, 0u);
	EXPECT_FALSE(claim.time_left.has_value());

	// A pending answer without an id could never be asked about again.
	NlMsgPtr bad = GenlMessage(REPLIPIPE_CMD_RESYNC_CLAIM);
	nla_put_flag(bad.get(), REPLIPIPE_A_CLAIM_PENDING);
	EXPECT_EQ(ParseClaimReply(nlmsg_hdr(bad.get()), &claim, &pending).err(),
	          EPROTO);
}

// nlctrl's announcements as the kernel sends them (genl_ctrl_event()).
NlMsgPtr CtrlMessage(uint8_t cmd, const char *name, uint16_t id)
{
	NlMsgPtr msg(nlmsg_alloc_size(4096));
	genlmsg_put(msg.get(), 0, 0, GENL_ID_CTRL, 0, 0, cmd, 2);
	nla_put_string(msg.get(), CTRL_ATTR_FAMILY_NAME, name);
	nla_put_u16(msg.get(), CTRL_ATTR_FAMILY_ID, id);
	nla_put_u32(msg.get(), CTRL_ATTR_VERSION, 1);
	return msg;
}

TEST(NetlinkEvents, FamilyAnnouncements)
{
	NlMsgPtr gone = CtrlMessage(CTRL_CMD_DELFAMILY, "replipipe", 27);
	auto event = ParseFamilyMessage(nlmsg_hdr(gone.get()), "replipipe");
	ASSERT_TRUE(event.has_value());
	EXPECT_EQ(event->type, FamilyEvent::Type::kUnregistered);
	EXPECT_EQ(event->id, 27);

	NlMsgPtr back = CtrlMessage(CTRL_CMD_NEWFAMILY, "replipipe", 28);
	event = ParseFamilyMessage(nlmsg_hdr(back.get()), "replipipe");
	ASSERT_TRUE(event.has_value());
	EXPECT_EQ(event->type, FamilyEvent::Type::kRegistered);
	EXPECT_EQ(event->id, 28);

	// Another family, a name that only starts like ours, a group's
	// announcement, a message of another family id: none is ours.
	NlMsgPtr other = CtrlMessage(CTRL_CMD_DELFAMILY, "nl80211", 27);
	EXPECT_FALSE(ParseFamilyMessage(nlmsg_hdr(other.get()), "replipipe"));
	NlMsgPtr longer = CtrlMessage(CTRL_CMD_DELFAMILY, "replipipe2", 27);
	EXPECT_FALSE(ParseFamilyMessage(nlmsg_hdr(longer.get()), "replipipe"));
	NlMsgPtr group = CtrlMessage(CTRL_CMD_DELMCAST_GRP, "replipipe", 27);
	EXPECT_FALSE(ParseFamilyMessage(nlmsg_hdr(group.get()), "replipipe"));
	NlMsgPtr pipe = GenlMessage(CTRL_CMD_DELFAMILY);
	nla_put_string(pipe.get(), CTRL_ATTR_FAMILY_NAME, "replipipe");
	nla_put_u16(pipe.get(), CTRL_ATTR_FAMILY_ID, 27);
	EXPECT_FALSE(ParseFamilyMessage(nlmsg_hdr(pipe.get()), "replipipe"));
	// Without its id the announcement says nothing usable.
	NlMsgPtr no_id(nlmsg_alloc_size(4096));
	genlmsg_put(no_id.get(), 0, 0, GENL_ID_CTRL, 0, 0, CTRL_CMD_DELFAMILY,
	            2);
	nla_put_string(no_id.get(), CTRL_ATTR_FAMILY_NAME, "replipipe");
	EXPECT_FALSE(ParseFamilyMessage(nlmsg_hdr(no_id.get()), "replipipe"));
}

// Every kernel has nlctrl: the watch opens and, with nothing registered
// meanwhile, reads nothing without blocking.
TEST(NetlinkEvents, FamilyWatchOpensOnNlctrl)
{
	auto watch = FamilyWatch::Open("replipipe");
	ASSERT_TRUE(watch.ok()) << watch.status().message();
	EXPECT_GE((*watch)->fd(), 0);
	EXPECT_EQ((*watch)->family(), "replipipe");
	auto read = (*watch)->Read();
	ASSERT_TRUE(read.receive_error.ok()) << read.receive_error.message();
	EXPECT_TRUE(read.events.empty());
}

// Sends @hdr from @sender to the netlink socket whose port is @port.
// Returns errno (0 when sent).
int SendTo(const UniqueFd &sender, uint32_t port, const nlmsghdr *hdr)
{
	sockaddr_nl to{};
	to.nl_family = AF_NETLINK;
	to.nl_pid = port;
	if (sendto(sender.get(), hdr, hdr->nlmsg_len, 0,
	           reinterpret_cast<const sockaddr *>(&to), sizeof(to)) < 0)
		return errno;
	return 0;
}

// A receive that fails ends the read with an overrun and says why, and what
// was read before it is kept (it was dropped with the error). The failure is
// an error message another socket of this host sends to the watch's port,
// which only CAP_NET_ADMIN may do; the daemon's event listener reads the
// same way (ReadQueued).
TEST(NetlinkEvents, AFailedReceiveKeepsWhatWasReadBeforeIt)
{
	auto watch = FamilyWatch::Open("replipipe");
	ASSERT_TRUE(watch.ok()) << watch.status().message();
	sockaddr_nl self{};
	socklen_t len = sizeof(self);
	ASSERT_EQ(getsockname((*watch)->fd(),
	                      reinterpret_cast<sockaddr *>(&self), &len),
	          0);
	UniqueFd sender(
	        socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC));
	ASSERT_TRUE(sender.valid()) << std::strerror(errno);

	NlMsgPtr before = CtrlMessage(CTRL_CMD_NEWFAMILY, "replipipe", 28);
	const int err = SendTo(sender, self.nl_pid, nlmsg_hdr(before.get()));
	if (err == EPERM)
		GTEST_SKIP() << "sending to another socket needs CAP_NET_ADMIN";
	ASSERT_EQ(err, 0) << std::strerror(err);
	struct {
		nlmsghdr hdr;
		nlmsgerr error;
	} failure{};
	failure.hdr.nlmsg_len = sizeof(failure);
	failure.hdr.nlmsg_type = NLMSG_ERROR;
	failure.error.error = -EINVAL;
	failure.error.msg.nlmsg_len = sizeof(failure.error.msg);
	ASSERT_EQ(SendTo(sender, self.nl_pid, &failure.hdr), 0);
	NlMsgPtr after = CtrlMessage(CTRL_CMD_DELFAMILY, "replipipe", 28);
	ASSERT_EQ(SendTo(sender, self.nl_pid, nlmsg_hdr(after.get())), 0);

	auto batch = (*watch)->Read();
	EXPECT_FALSE(batch.receive_error.ok());
	EXPECT_NE(batch.receive_error.message().find("nlctrl: receive: "),
	          std::string::npos)
	        << batch.receive_error.message();
	ASSERT_EQ(batch.events.size(), 2u);
	EXPECT_EQ(batch.events[0].type, FamilyEvent::Type::kRegistered);
	EXPECT_EQ(batch.events[0].id, 28);
	EXPECT_EQ(batch.events[1].type, FamilyEvent::Type::kOverrun);

	// What came after the failure was not read; the socket still works.
	batch = (*watch)->Read();
	EXPECT_TRUE(batch.receive_error.ok()) << batch.receive_error.message();
	ASSERT_EQ(batch.events.size(), 1u);
	EXPECT_EQ(batch.events[0].type, FamilyEvent::Type::kUnregistered);
}

// This host's kernel has generic netlink but no replipipe family.
TEST(NetlinkSocket, ModuleMissingIsReportedClearly)
{
	auto sock = NetlinkSocket::Open();
	if (sock.ok())
		GTEST_SKIP() << "the replipipe family is registered here";
	EXPECT_TRUE(IsModuleMissing(sock.status())) << sock.status().message();
	EXPECT_EQ(sock.status().err(), ENOENT);
	EXPECT_EQ(sock.status().message(),
	          "replipipe kernel module not loaded (generic netlink family "
	          "'replipipe' not found)");

	auto kernel = NetlinkKernel::Open();
	ASSERT_FALSE(kernel.ok());
	EXPECT_TRUE(IsModuleMissing(kernel.status()));
	auto channel = NetlinkResyncChannel::Open();
	EXPECT_TRUE(IsModuleMissing(channel.status()));
	auto events = NetlinkEventListener::Open();
	EXPECT_TRUE(IsModuleMissing(events.status()));
}

} // namespace
} // namespace replipipe
