#include "control_peer.h"

#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "unique_fd.h"

namespace replipipe
{
namespace
{

constexpr uid_t kDaemonUid = 0;
constexpr gid_t kGroup = 990;

TEST(ControlPeer, RootIsAllowed)
{
	EXPECT_TRUE(
	        DecidePeer({1, 0, 0}, {}, std::nullopt, kDaemonUid).allowed);
	EXPECT_TRUE(DecidePeer({1, 0, 5}, {}, kGroup, kDaemonUid).allowed);
}

TEST(ControlPeer, DaemonsOwnUserIsAllowed)
{
	EXPECT_TRUE(
	        DecidePeer({1, 1000, 1000}, {}, std::nullopt, 1000).allowed);
}

TEST(ControlPeer, GroupMembersAreAllowed)
{
	// Supplementary group from the group database.
	EXPECT_TRUE(DecidePeer({1, 1000, 1000}, {1000, 27, kGroup}, kGroup, 0)
	                    .allowed);
	// The process's own gid (e.g. after newgrp or sg).
	EXPECT_TRUE(DecidePeer({1, 1000, kGroup}, {1000}, kGroup, 0).allowed);
}

TEST(ControlPeer, OthersAreRefusedWithAClearReason)
{
	PeerDecision d = DecidePeer({1, 1000, 1000}, {1000, 27}, kGroup, 0);
	EXPECT_FALSE(d.allowed);
	EXPECT_EQ(d.reason, "permission denied: uid 1000 is not root and not "
	                    "in group replipipe");
	d = DecidePeer({1, 1000, 1000}, {1000}, std::nullopt, 0);
	EXPECT_FALSE(d.allowed);
	EXPECT_EQ(d.reason.rfind("permission denied: uid 1000 is not root "
	                         "and not in group replipipe",
	                         0),
	          0u);
	EXPECT_NE(d.reason.find("does not exist"), std::string::npos);
}

TEST(ControlPeer, PeerCredentialsOfASocketPair)
{
	int fds[2];
	ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	UniqueFd a(fds[0]), b(fds[1]);
	auto cred = GetPeerCredentials(a.get());
	ASSERT_TRUE(cred.ok()) << cred.status().message();
	EXPECT_EQ(cred->uid, ::geteuid());
	EXPECT_EQ(cred->pid, ::getpid());
	EXPECT_TRUE(CheckPeer(*cred).allowed);
}

TEST(ControlPeer, GroupLookups)
{
	EXPECT_FALSE(LookupGroup("no-such-group-replipipe-test").has_value());
	EXPECT_TRUE(GroupsOfUid(static_cast<uid_t>(4000000000u)).empty());
	auto root_groups = GroupsOfUid(0);
	EXPECT_FALSE(root_groups.empty()); // root has a passwd entry
}

} // namespace
} // namespace replipipe
