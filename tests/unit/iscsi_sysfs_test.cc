#include "iscsi_sysfs.h"

#include <gtest/gtest.h>

#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::TempDir;

// The layout of a real guest (Debian 6.1): session1 with LUNs 0 and 1.
void MakeSession(const TempDir &sys, int sid, const std::string &iqn,
                 const std::string &addr, const std::string &port,
                 const std::string &state)
{
	const std::string s =
	        "class/iscsi_session/session" + std::to_string(sid) + "/";
	sys.Write(s + "targetname", iqn + "\n");
	sys.Write(s + "state", state + "\n");
	const std::string c = "class/iscsi_connection/connection" +
	                      std::to_string(sid) + ":0/";
	sys.Write(c + "persistent_address", addr + "\n");
	sys.Write(c + "persistent_port", port + "\n");
}

void MakeDisk(const TempDir &sys, int sid, const std::string &hctl,
              const std::string &name, const std::string &dev,
              const std::string &ro = "0")
{
	const std::string host = hctl.substr(0, hctl.find(':'));
	const std::string d = "class/iscsi_session/session" +
	                      std::to_string(sid) + "/device/target" + host +
	                      ":0:0/" + hctl + "/";
	sys.Write(d + "state", "running\n");
	sys.Write(d + "block/" + name + "/dev", dev + "\n");
	sys.Write(d + "block/" + name + "/ro", ro + "\n");
}

TEST(IscsiSysfsTest, ListsSessionsWithTheirPortal)
{
	TempDir sys;
	MakeSession(sys, 3, "iqn.2003-01.org.x:b", "10.0.0.2", "3260",
	            "FAILED");
	MakeSession(sys, 1, "iqn.2003-01.org.x:a", "127.0.0.1", "3260",
	            "LOGGED_IN");
	sys.Write("class/iscsi_session/session3/ifacename", "adm\n");
	sys.Write("class/iscsi_session/junk/targetname", "x\n");
	auto s = ListIscsiSessions(sys.path());
	ASSERT_EQ(s.size(), 2u);
	EXPECT_EQ(s[0].name, "session1");
	EXPECT_EQ(s[0].sid, 1u);
	EXPECT_EQ(s[0].target, "iqn.2003-01.org.x:a");
	EXPECT_EQ(s[0].address, "127.0.0.1");
	EXPECT_EQ(s[0].port, 3260);
	EXPECT_EQ(s[0].state, "LOGGED_IN");
	EXPECT_EQ(s[0].iface, ""); // a kernel without ifacename
	EXPECT_EQ(s[1].name, "session3");
	EXPECT_EQ(s[1].state, "FAILED");
	EXPECT_EQ(s[1].iface, "adm");
}

TEST(IscsiSysfsTest, NoSysfsNoSessions)
{
	TempDir sys;
	EXPECT_TRUE(ListIscsiSessions(sys.path()).empty());
	EXPECT_TRUE(FindIscsiDisk(sys.path(), "session1", 0).name.empty());
}

TEST(IscsiSysfsTest, FindsTheDiskOfTheLun)
{
	TempDir sys;
	MakeSession(sys, 1, "iqn.2003-01.org.x:a", "127.0.0.1", "3260",
	            "LOGGED_IN");
	MakeDisk(sys, 1, "2:0:0:0", "sdb", "8:16");
	MakeDisk(sys, 1, "2:0:0:1", "sdc", "8:32", "1");
	auto d0 = FindIscsiDisk(sys.path(), "session1", 0);
	EXPECT_EQ(d0.name, "sdb");
	EXPECT_EQ(d0.dev, "8:16");
	EXPECT_FALSE(d0.read_only);
	EXPECT_EQ(d0.scsi_state, "running");
	auto d1 = FindIscsiDisk(sys.path(), "session1", 1);
	EXPECT_EQ(d1.name, "sdc");
	EXPECT_TRUE(d1.read_only);
	EXPECT_TRUE(FindIscsiDisk(sys.path(), "session1", 2).name.empty());
	EXPECT_TRUE(FindIscsiDisk(sys.path(), "session2", 0).name.empty());
}

TEST(IscsiSysfsTest, ScsiDeviceWithoutBlockYet)
{
	TempDir sys;
	MakeSession(sys, 1, "iqn.2003-01.org.x:a", "127.0.0.1", "3260",
	            "LOGGED_IN");
	sys.Write("class/iscsi_session/session1/device/target2:0:0/2:0:0:0/"
	          "state",
	          "running\n");
	auto d = FindIscsiDisk(sys.path(), "session1", 0);
	EXPECT_TRUE(d.name.empty());
	EXPECT_EQ(d.scsi_state, "running"); // the LUN exists
}

} // namespace
} // namespace replipipe
