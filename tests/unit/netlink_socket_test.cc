// NetlinkSocket against a family every kernel has: the genl controller
// ("nlctrl"). Exercises the real request/reply/ack/dump/extack paths and the
// receive time-out without replipipe.ko.
#include <gtest/gtest.h>
#include <linux/genetlink.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#include <chrono>
#include <cstring>
#include <set>

#include "netlink_socket.h"

namespace replipipe
{
namespace
{

using namespace std::chrono_literals;

std::unique_ptr<NetlinkSocket> OpenCtrl(std::chrono::milliseconds timeout)
{
	auto sock = NetlinkSocket::OpenFamily("nlctrl", "notify", 2, timeout);
	EXPECT_TRUE(sock.ok()) << sock.status().message();
	return sock.ok() ? std::move(*sock) : nullptr;
}

TEST(NetlinkSocketCtrl, ResolvesFamilyAndGroup)
{
	auto sock = OpenCtrl(2s);
	ASSERT_NE(sock, nullptr);
	EXPECT_EQ(sock->family_id(), GENL_ID_CTRL);
	EXPECT_GT(sock->events_group(), 0);
	EXPECT_GE(sock->family_version(), 1u);
}

TEST(NetlinkSocketCtrl, DoitReplyThenAck)
{
	auto sock = OpenCtrl(2s);
	ASSERT_NE(sock, nullptr);
	NlMsgPtr msg = sock->NewRequest(CTRL_CMD_GETFAMILY);
	nla_put_string(msg.get(), CTRL_ATTR_FAMILY_NAME, "nlctrl");
	int replies = 0;
	Status st = sock->Request(std::move(msg), [&](nlmsghdr *hdr) {
		nlattr *tb[CTRL_ATTR_MAX + 1] = {};
		genlmsg_parse(hdr, 0, tb, CTRL_ATTR_MAX, nullptr);
		EXPECT_NE(tb[CTRL_ATTR_FAMILY_ID], nullptr);
		++replies;
		return Status();
	});
	EXPECT_TRUE(st.ok()) << st.message();
	EXPECT_EQ(replies, 1);
	// The socket is in step for the next request.
	NlMsgPtr again = sock->NewRequest(CTRL_CMD_GETFAMILY);
	nla_put_string(again.get(), CTRL_ATTR_FAMILY_NAME, "nlctrl");
	EXPECT_TRUE(sock->Request(std::move(again)).ok());
}

TEST(NetlinkSocketCtrl, DumpEndsWithDone)
{
	auto sock = OpenCtrl(2s);
	ASSERT_NE(sock, nullptr);
	int families = 0;
	Status st =
	        sock->Request(sock->NewRequest(CTRL_CMD_GETFAMILY, NLM_F_DUMP),
	                      [&](nlmsghdr *) {
		                      ++families;
		                      return Status();
	                      });
	EXPECT_TRUE(st.ok()) << st.message();
	EXPECT_GE(families, 1);
}

TEST(NetlinkSocketCtrl, KernelErrorCarriesErrnoAndExtack)
{
	auto sock = OpenCtrl(2s);
	ASSERT_NE(sock, nullptr);
	NlMsgPtr missing = sock->NewRequest(CTRL_CMD_GETFAMILY);
	nla_put_string(missing.get(), CTRL_ATTR_FAMILY_NAME, "no-such-family");
	Status st = sock->Request(std::move(missing));
	EXPECT_EQ(st.err(), ENOENT) << st.message();

	// CTRL_ATTR_FAMILY_ID is a u16: one byte fails the policy, and the
	// kernel says so in the extended ack.
	NlMsgPtr bad = sock->NewRequest(CTRL_CMD_GETFAMILY);
	const uint8_t one_byte = 1;
	nla_put(bad.get(), CTRL_ATTR_FAMILY_ID, 1, &one_byte);
	st = sock->Request(std::move(bad));
	// 6.x: ERANGE, "Attribute failed policy validation".
	ASSERT_TRUE(st.err() == EINVAL || st.err() == ERANGE) << st.message();
	const std::string errno_text = std::strerror(st.err());
	EXPECT_GT(st.message().size(), errno_text.size() + 2)
	        << "no extack text: " << st.message();
	EXPECT_EQ(st.message().substr(st.message().size() - errno_text.size()),
	          errno_text);
	RecordProperty("extack", st.message());
}

// A peer that never answers: the request is sent to another user socket.
TEST(NetlinkSocketCtrl, NoAnswerTimesOut)
{
	auto sock = OpenCtrl(300ms);
	ASSERT_NE(sock, nullptr);
	nl_sock *silent = nl_socket_alloc();
	ASSERT_NE(silent, nullptr);
	ASSERT_EQ(nl_connect(silent, NETLINK_GENERIC), 0);
	nl_socket_set_peer_port(sock->get(), nl_socket_get_local_port(silent));

	NlMsgPtr msg = sock->NewRequest(CTRL_CMD_GETFAMILY);
	nla_put_string(msg.get(), CTRL_ATTR_FAMILY_NAME, "nlctrl");
	const auto t0 = std::chrono::steady_clock::now();
	Status st = sock->Request(std::move(msg));
	const auto waited = std::chrono::steady_clock::now() - t0;
	EXPECT_EQ(st.err(), ETIMEDOUT) << st.message();
	EXPECT_GE(waited, 290ms);
	EXPECT_LT(waited, 3s);
	nl_socket_free(silent);
}

TEST(NetlinkSocketCtrl, OtherFamilyVersionIsRefused)
{
	// nlctrl is version 2 (net/netlink/genetlink.c); a client of version
	// 3 must not talk to it.
	auto sock = NetlinkSocket::OpenFamily("nlctrl", "notify", 3, 2s);
	ASSERT_FALSE(sock.ok());
	EXPECT_EQ(sock.status().err(), EPROTONOSUPPORT);
	EXPECT_EQ(sock.status().message(),
	          "generic netlink family 'nlctrl' has version 2, this program "
	          "speaks version 3");
}

TEST(NetlinkSocketCtrl, MissingFamilyIsEnoent)
{
	auto sock = NetlinkSocket::OpenFamily("no-such-family", "x", 1, 1s);
	ASSERT_FALSE(sock.ok());
	EXPECT_EQ(sock.status().err(), ENOENT);
	EXPECT_EQ(sock.status().message(),
	          "generic netlink family 'no-such-family' not found");
	EXPECT_FALSE(IsModuleMissing(sock.status()));
}

// A family id no family has on this host now (the highest free one: the
// kernel allocates upwards, cyclically, so it stays free for this test).
int UnusedFamilyId(NetlinkSocket &sock)
{
	std::set<int> used;
	Status st = sock.Request(
	        sock.NewRequest(CTRL_CMD_GETFAMILY, NLM_F_DUMP),
	        [&](nlmsghdr *hdr) {
		        nlattr *tb[CTRL_ATTR_MAX + 1] = {};
		        genlmsg_parse(hdr, 0, tb, CTRL_ATTR_MAX, nullptr);
		        if (tb[CTRL_ATTR_FAMILY_ID] != nullptr)
			        used.insert(
			                nla_get_u16(tb[CTRL_ATTR_FAMILY_ID]));
		        return Status();
	        });
	EXPECT_TRUE(st.ok()) << st.message();
	for (int id = 1023; id > GENL_ID_CTRL; --id)
		if (!used.count(id))
			return id;
	ADD_FAILURE() << "no free family id";
	return 0;
}

TEST(NetlinkSocketCtrl, ResolveFamilyIdAsksNlctrl)
{
	auto id = ResolveFamilyId("nlctrl", 2s);
	ASSERT_TRUE(id.ok()) << id.status().message();
	EXPECT_EQ(*id, GENL_ID_CTRL);
	auto missing = ResolveFamilyId("no-such-family", 2s);
	ASSERT_FALSE(missing.ok());
	EXPECT_EQ(missing.status().err(), ENOENT);
	EXPECT_EQ(missing.status().message(),
	          "generic netlink family 'no-such-family' not found");
}

// genetlink answers a request to an id no family has with a bare ENOENT.
// While the socket's family still has the id the socket resolved, that is
// the answer (the request itself named another id).
TEST(NetlinkSocketCtrl, BareEnoentOfAFamilyStillThereStaysEnoent)
{
	auto sock = OpenCtrl(2s);
	ASSERT_NE(sock, nullptr);
	const int unused = UnusedFamilyId(*sock);
	NlMsgPtr msg = sock->NewRequest(CTRL_CMD_GETFAMILY);
	nla_put_string(msg.get(), CTRL_ATTR_FAMILY_NAME, "nlctrl");
	nlmsg_hdr(msg.get())->nlmsg_type = static_cast<uint16_t>(unused);
	Status st = sock->Request(std::move(msg));
	EXPECT_EQ(st.err(), ENOENT) << st.message();
	EXPECT_FALSE(IsFamilyGone(st));
}

// The socket's family was registered again under another id since it was
// opened (a module reloaded): the request's ENOENT says so, not "no such
// object", so that a PIPE_GET is not read as "no such pipe".
TEST(NetlinkSocketCtrl, RequestToAFamilyIdThatIsGoneSaysSo)
{
	auto sock = OpenCtrl(2s);
	ASSERT_NE(sock, nullptr);
	const int unused = UnusedFamilyId(*sock);
	sock->SetFamilyIdForTest(unused);
	NlMsgPtr msg = sock->NewRequest(CTRL_CMD_GETFAMILY);
	nla_put_string(msg.get(), CTRL_ATTR_FAMILY_NAME, "nlctrl");
	Status st = sock->Request(std::move(msg));
	EXPECT_EQ(st.err(), EIDRM) << st.message();
	EXPECT_TRUE(IsFamilyGone(st));
	EXPECT_TRUE(IsFamilyGone(st.Context("kernel PIPE_GET pipe p")));
	EXPECT_EQ(st.message(), "generic netlink family 'nlctrl' id " +
	                                std::to_string(unused) +
	                                " is gone, the family now has id " +
	                                std::to_string(GENL_ID_CTRL));
	// The socket is in step for the next request.
	sock->SetFamilyIdForTest(GENL_ID_CTRL);
	NlMsgPtr again = sock->NewRequest(CTRL_CMD_GETFAMILY);
	nla_put_string(again.get(), CTRL_ATTR_FAMILY_NAME, "nlctrl");
	EXPECT_TRUE(sock->Request(std::move(again)).ok());
}

TEST(NetlinkSocket, FamilyGoneErrorSaysWhatBecameOfTheModule)
{
	Status unloaded = FamilyGoneError("replipipe", 27, 0);
	EXPECT_EQ(unloaded.err(), EIDRM);
	EXPECT_EQ(unloaded.message(),
	          "the replipipe kernel module was unloaded (generic netlink "
	          "family 'replipipe' id 27 is gone)");
	EXPECT_TRUE(IsFamilyGone(unloaded));
	EXPECT_FALSE(IsModuleMissing(unloaded));
	Status reloaded = FamilyGoneError("replipipe", 27, 28);
	EXPECT_EQ(reloaded.message(),
	          "the replipipe kernel module was reloaded (generic netlink "
	          "family 'replipipe' id 27 is gone, the module now has id "
	          "28)");
	EXPECT_TRUE(IsFamilyGone(reloaded));
	EXPECT_EQ(FamilyGoneError("other", 30, 0).message(),
	          "generic netlink family 'other' id 30 is gone "
	          "(unregistered)");
	// A family's own EIDRM is not the family going away.
	EXPECT_FALSE(IsFamilyGone(Status::Error("Identifier removed", EIDRM)));
	EXPECT_FALSE(IsFamilyGone(Status()));
}

} // namespace
} // namespace replipipe
