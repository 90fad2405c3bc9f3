#include "host.h"

#include <gtest/gtest.h>

namespace replipipe
{
namespace
{

TEST(Host, Matches)
{
	HostIdentity h{"Node1.Example.com"};
	EXPECT_TRUE(h.IsThisHost("node1.example.com"));
	EXPECT_TRUE(h.IsThisHost("NODE1"));
	EXPECT_TRUE(h.IsThisHost("localhost"));
	EXPECT_FALSE(h.IsThisHost("node2"));
	EXPECT_FALSE(h.IsThisHost("node1.other.com"));
	EXPECT_EQ(h.ShortName(), "Node1");
	EXPECT_FALSE(HostIdentity::FromSystem().host_name.empty());
}

// Debian keeps the short name in /etc/hostname: `hostname -f` (the name with
// its domain) must still name this host. Any domain is taken (the resolver is
// not asked), but not another first label.
TEST(Host, ShortHostNameMatchesItsFullyQualifiedName)
{
	HostIdentity h{"node1"};
	EXPECT_TRUE(h.IsThisHost("node1.example.com"));
	EXPECT_TRUE(h.IsThisHost("NODE1.Example.COM"));
	EXPECT_TRUE(h.IsThisHost("node1"));
	EXPECT_FALSE(h.IsThisHost("node10.example.com"));
	EXPECT_FALSE(h.IsThisHost("node2.example.com"));
	EXPECT_FALSE(h.IsThisHost(".node1"));
	EXPECT_FALSE(h.IsThisHost("node1x.example.com"));
	HostIdentity numeric{"10"};
	EXPECT_FALSE(numeric.IsThisHost("10.0.0.5"));
}

// Two names are one system when they are equal but for case, or when
// both name this host (TargetSystem on modify).
TEST(Host, SameSystem)
{
	HostIdentity h{"node1.example.com"};
	EXPECT_TRUE(h.SameSystem("localhost", "node1.example.com"));
	EXPECT_TRUE(h.SameSystem("NODE1", "localhost"));
	EXPECT_TRUE(h.SameSystem("node2", "Node2"));
	EXPECT_FALSE(h.SameSystem("node2", "localhost"));
	EXPECT_FALSE(h.SameSystem("node2", "node3"));
	EXPECT_FALSE(h.SameSystem("node1", "node2"));
}

TEST(Host, SystemNames)
{
	auto bare = ParseSystemName("node2.example.com", "TargetSystem");
	ASSERT_TRUE(bare.ok());
	EXPECT_EQ(*bare, "node2.example.com");
	auto ref = ParseSystemName(
	        "//cimom/root/cimv2:CIM_ComputerSystem.CreationClassName="
	        "\"CIM_ComputerSystem\",Name=\"node2\"",
	        "TargetSystem");
	ASSERT_TRUE(ref.ok()) << ref.status().message();
	EXPECT_EQ(*ref, "node2");
	EXPECT_TRUE(ParseSystemName("[fe80::1]", "T").ok());
	for (const char *bad :
	     {"", "bad host", "CIM_Foo.Name=\"x\"", "CIM_ComputerSystem.Name=1",
	      "CIM_ComputerSystem.Name=\"a b\"",
	      "CIM_ComputerSystem.Name=\"x"}) {
		auto r = ParseSystemName(bad, "TargetSystem");
		EXPECT_FALSE(r.ok()) << bad;
		EXPECT_EQ(r.status().message().rfind("TargetSystem", 0), 0u)
		        << r.status().message();
	}
}

} // namespace
} // namespace replipipe
