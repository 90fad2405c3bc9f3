#include "iscsi_url.h"

#include <gtest/gtest.h>

#include "endpoint_check.h"

namespace replipipe
{
namespace
{

constexpr const char *kIqn = "iqn.2003-01.org.linux-iscsi.peer:vol1";

TEST(IscsiUrlTest, ParsesHostPortIqnLun)
{
	auto u = ParseIscsiUrl(std::string("iscsi://127.0.0.1:3261/") + kIqn +
	                       "/2");
	ASSERT_TRUE(u.ok()) << u.status().message();
	EXPECT_EQ(u->host, "127.0.0.1");
	EXPECT_EQ(u->port, 3261);
	EXPECT_EQ(u->iqn, kIqn);
	EXPECT_EQ(u->lun, 2u);
	EXPECT_EQ(u->Portal(), "127.0.0.1:3261");
}

TEST(IscsiUrlTest, DefaultPortAndCanonicalLowerCase)
{
	auto u =
	        ParseIscsiUrl("ISCSI://Peer.Example.COM/IQN.2003-01.Org.X:Y/0");
	ASSERT_TRUE(u.ok()) << u.status().message();
	EXPECT_EQ(u->port, kIscsiDefaultPort);
	EXPECT_EQ(u->Canonical(),
	          "iscsi://peer.example.com:3260/iqn.2003-01.org.x:y/0");
}

TEST(IscsiUrlTest, Ipv6InBrackets)
{
	auto u = ParseIscsiUrl("iscsi://[fd00::1]:3260/eui.0123456789abcdef/1");
	ASSERT_TRUE(u.ok()) << u.status().message();
	EXPECT_EQ(u->host, "fd00::1");
	EXPECT_EQ(u->Portal(), "[fd00::1]:3260");
	EXPECT_EQ(u->Canonical(),
	          "iscsi://[fd00::1]:3260/eui.0123456789abcdef/1");
}

TEST(IscsiUrlTest, RefusesMalformed)
{
	const std::string iqn = kIqn;
	for (const std::string &bad : std::vector<std::string>{
	             std::string("iscsi://"),
	             "iscsi://127.0.0.1",
	             "iscsi://127.0.0.1/" + iqn,
	             "iscsi://127.0.0.1/" + iqn + "/",
	             "iscsi://127.0.0.1/" + iqn + "/x",
	             "iscsi://127.0.0.1/" + iqn + "/-1",
	             "iscsi://127.0.0.1/" + iqn + "/16384",
	             "iscsi://127.0.0.1/" + iqn + "/0/extra",
	             "iscsi://127.0.0.1:0/" + iqn + "/0",
	             "iscsi://127.0.0.1:65536/" + iqn + "/0",
	             "iscsi://127.0.0.1:/" + iqn + "/0",
	             "iscsi://127.0.0.1:32x/" + iqn + "/0",
	             "iscsi:///" + iqn + "/0",
	             "iscsi://a..b/" + iqn + "/0",
	             "iscsi://host_name/" + iqn + "/0",
	             "iscsi://[fd00::1/" + iqn + "/0",
	             "iscsi://[nothex]/" + iqn + "/0",
	             "iscsi://127.0.0.1//0",
	             "iscsi://127.0.0.1/not-an-iqn/0",
	             "iscsi://127.0.0.1/iqn.x y/0",
	             "iscsi://127.0.0.1/iqn.a_b/0",
	             "iscsi://127.0.0.1/iqn." + std::string(230, 'a') + "/0",
	             "http://127.0.0.1/" + iqn + "/0",
	     }) {
		auto u = ParseIscsiUrl(bad);
		EXPECT_FALSE(u.ok()) << bad;
		EXPECT_EQ(u.status().err(), EINVAL) << bad;
	}
}

TEST(IscsiUrlTest, TargetEndpointAcceptsUrlsAndReferences)
{
	auto t = ParseTargetEndpoint("iscsi://127.0.0.1/IQN.2003-01.org.x:y/0");
	ASSERT_TRUE(t.ok()) << t.status().message();
	EXPECT_EQ(t->name, "iscsi://127.0.0.1:3260/iqn.2003-01.org.x:y/0");

	auto r = ParseTargetEndpoint(
	        "CIM_ProtocolEndpoint.Name=\"iscsi://127.0.0.1:3260/"
	        "iqn.2003-01.org.x:y/3\",SystemName=\"peer\"");
	ASSERT_TRUE(r.ok()) << r.status().message();
	EXPECT_EQ(r->name, "iscsi://127.0.0.1:3260/iqn.2003-01.org.x:y/3");
	EXPECT_EQ(r->system_name, "peer");

	auto bad = ParseTargetEndpoint("iscsi://127.0.0.1/iqn.x:y/lun");
	ASSERT_FALSE(bad.ok());
	EXPECT_EQ(bad.status().err(), EINVAL);
	EXPECT_NE(bad.status().message().find("TargetEndpoint"),
	          std::string::npos);
	// Device paths are as before.
	auto dev = ParseTargetEndpoint("/dev//sdb");
	ASSERT_TRUE(dev.ok());
	EXPECT_EQ(dev->name, "/dev/sdb");
}

} // namespace
} // namespace replipipe
