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

} // namespace
} // namespace replipipe
