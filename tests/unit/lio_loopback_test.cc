#include "lio_loopback.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cctype>
#include <filesystem>
#include <optional>

#include <gtest/gtest.h>

#include "endpoint_check.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

namespace fs = std::filesystem;
using testing::TempDir;

const std::string kIqn = "iqn.2003-01.org.linux-iscsi.node1:src";
const std::string kInitiator = "iqn.1993-08.org.debian:01:node1";

// sysfs and configfs as the kernel lays them out, in a temp dir: the
// symlinks are real, so that the walk resolves them as on a host.
class LioTree
{
public:
	std::string sysfs() const { return dir / "sys"; }
	std::string configfs() const { return dir / "config"; }

	// A symlink at name (under the tree) pointing to to (as written).
	void Link(const std::string &name, const std::string &to) const
	{
		fs::path p = dir / name;
		fs::create_directories(p.parent_path());
		fs::create_symlink(to, p);
	}
	void Dir(const std::string &name) const
	{
		fs::create_directories(dir / name);
	}

	// A SCSI disk <name> (<majmin>) at SCSI address hctl, under the
	// device directory parent (e.g. "devices/.../host2"):
	//   sys/<parent>/target<H:C:T>/<hctl>/block/<name>/{dev,device}
	//   sys/dev/block/<majmin> -> that block directory
	// Returns the block directory, relative to the tree.
	std::string ScsiDisk(const std::string &parent, const std::string &hctl,
	                     const std::string &name,
	                     const std::string &majmin) const
	{
		const std::string target =
		        "target" + hctl.substr(0, hctl.rfind(':'));
		const std::string sdev =
		        "sys/" + parent + "/" + target + "/" + hctl;
		const std::string block = sdev + "/block/" + name;
		dir.Write(block + "/dev", majmin + "\n");
		Link(block + "/device", "../../../" + hctl);
		Link("sys/dev/block/" + majmin, dir / block);
		return block;
	}
	// A partition <name> of the disk at block.
	void Partition(const std::string &block, const std::string &name,
	               const std::string &majmin) const
	{
		dir.Write(block + "/" + name + "/dev", majmin + "\n");
		dir.Write(block + "/" + name + "/partition", "1\n");
		Link("sys/dev/block/" + majmin, dir / (block + "/" + name));
	}
	// A dm device <name> (<majmin>) over the devices at lower (block
	// directories relative to the tree).
	std::string DmDevice(const std::string &name, const std::string &majmin,
	                     const std::vector<std::string> &lower) const
	{
		const std::string block = "sys/devices/virtual/block/" + name;
		dir.Write(block + "/dev", majmin + "\n");
		for (const std::string &l : lower)
			Link(block + "/slaves/" +
			             fs::path(l).filename().string(),
			     dir / l);
		Link("sys/dev/block/" + majmin, dir / block);
		return block;
	}
	void ScsiHost(const std::string &host,
	              const std::string &proc_name) const
	{
		dir.Write("sys/class/scsi_host/" + host + "/proc_name",
		          proc_name + "\n");
	}
	// A backstore in configfs's target/core.
	void Backstore(const std::string &backstore,
	               const std::string &udev_path) const
	{
		dir.Write("config/target/core/" + backstore + "/udev_path",
		          udev_path + "\n");
	}
	// lun_dir (under config/target/) links to the backstore, the way
	// LIO's configfs does (a relative link into target/core).
	void LunLink(const std::string &lun_dir,
	             const std::string &backstore) const
	{
		std::string up;
		for (char c : lun_dir)
			if (c == '/')
				up += "../";
		Dir("config/target/" + lun_dir + "/statistics");
		dir.Write("config/target/" + lun_dir + "/alua_tg_pt_gp",
		          "default_tg_pt_gp\n");
		Link("config/target/" + lun_dir + "/7a1c3e9b0d",
		     "../" + up + "core/" + backstore);
	}
	// A tcm_loop TPG whose disks are on SCSI host hostno.
	void LoopbackTpg(const std::string &wwn, int tpgt, int hostno) const
	{
		dir.Write("config/target/loopback/" + wwn + "/tpgt_" +
		                  std::to_string(tpgt) + "/address",
		          std::to_string(hostno) +
		                  ":0:" + std::to_string(tpgt) + "\n");
	}
	// An iSCSI session sid on host<H> logged in to iqn, tpgt, at the
	// portal address:port, with its disk hctl (<name>, <majmin>).
	std::string IscsiSession(int sid, const std::string &iqn, int tpgt,
	                         const std::string &address, int port,
	                         const std::string &hctl,
	                         const std::string &name,
	                         const std::string &majmin) const
	{
		const std::string host =
		        "host" + hctl.substr(0, hctl.find(':'));
		const std::string s = "session" + std::to_string(sid);
		const std::string sess_dir =
		        "devices/platform/" + host + "/" + s;
		ScsiHost(host, "iscsi_tcp");
		const std::string block =
		        ScsiDisk(sess_dir, hctl, name, majmin);
		const std::string cls = "sys/class/iscsi_session/" + s;
		dir.Write(cls + "/targetname", iqn + "\n");
		dir.Write(cls + "/tpgt", std::to_string(tpgt) + "\n");
		dir.Write(cls + "/initiatorname", kInitiator + "\n");
		Link(cls + "/device", dir / ("sys/" + sess_dir));
		const std::string conn =
		        "sys/class/iscsi_connection/connection" +
		        std::to_string(sid) + ":0";
		dir.Write(conn + "/persistent_address", address + "\n");
		dir.Write(conn + "/persistent_port",
		          std::to_string(port) + "\n");
		return block;
	}

	std::vector<LioLocalLun> Find(const std::string &majmin) const
	{
		const size_t colon = majmin.find(':');
		const dev_t rdev =
		        makedev(std::stoul(majmin.substr(0, colon)),
		                std::stoul(majmin.substr(colon + 1)));
		return FindLocalLioLuns(sysfs(), configfs(), rdev);
	}

	TempDir dir;
};

// tcm_loop's disk 2:0:1:0 is LUN 0 of the TPG whose address is "2:0:1";
// a second TPG of the same HBA (2:0:2) exports another backstore.
class LoopbackTree : public LioTree
{
public:
	explicit LoopbackTree(const std::string &sdb_majmin = "8:16")
	{
		ScsiHost("host2", "tcm_loopback");
		Backstore("replipipe_0/vol", "/dev/vg/vol");
		Backstore("iblock_0/other", "/dev/vg/other");
		LoopbackTpg("naa.5001405aa", 1, 2);
		LunLink("loopback/naa.5001405aa/tpgt_1/lun/lun_0",
		        "replipipe_0/vol");
		LoopbackTpg("naa.5001405aa", 2, 2);
		LunLink("loopback/naa.5001405aa/tpgt_2/lun/lun_0",
		        "iblock_0/other");
		sdb = ScsiDisk("devices/tcm_loop_0/tcm_loop_adapter_0/host2",
		               "2:0:1:0", "sdb", sdb_majmin);
	}
	std::string sdb;
};

TEST(LioLoopback, TcmLoopDisk)
{
	LoopbackTree tree;
	auto luns = tree.Find("8:16");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].disk, "sdb");
	EXPECT_EQ(luns[0].hctl, "2:0:1:0");
	EXPECT_EQ(luns[0].lun, "tcm_loop naa.5001405aa/tpgt_1 LUN 0");
	EXPECT_EQ(luns[0].backstore, "replipipe_0/vol");
	EXPECT_EQ(luns[0].udev_path, "/dev/vg/vol");

	// The other TPG's disk is the other backstore.
	tree.ScsiDisk("devices/tcm_loop_0/tcm_loop_adapter_0/host2", "2:0:2:0",
	              "sdc", "8:32");
	luns = tree.Find("8:32");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].backstore, "iblock_0/other");
	EXPECT_EQ(luns[0].udev_path, "/dev/vg/other");
}

TEST(LioLoopback, PartitionOfATcmLoopDisk)
{
	LoopbackTree tree;
	tree.Partition(tree.sdb, "sdb1", "8:17");
	auto luns = tree.Find("8:17");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].disk, "sdb");
	EXPECT_EQ(luns[0].backstore, "replipipe_0/vol");
}

TEST(LioLoopback, DmOverALoopedLun)
{
	LoopbackTree tree;
	tree.Partition(tree.sdb, "sdb1", "8:17");
	const std::string plain = tree.ScsiDisk("devices/pci0000:00/host0",
	                                        "0:0:0:0", "sda", "8:0");
	tree.ScsiHost("host0", "ata_piix");
	// dm-1 (linear) over sda and dm-0, dm-0 over sdb's partition.
	const std::string dm0 =
	        tree.DmDevice("dm-0", "253:0", {tree.sdb + "/sdb1"});
	tree.DmDevice("dm-1", "253:1", {plain, dm0});
	auto luns = tree.Find("253:1");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].disk, "sdb");
	EXPECT_EQ(luns[0].backstore, "replipipe_0/vol");
	EXPECT_TRUE(tree.Find("8:0").empty());
}

TEST(LioLoopback, PlainDisksFindNothing)
{
	LioTree tree;
	tree.ScsiHost("host0", "ata_piix");
	tree.ScsiDisk("devices/pci0000:00/host0", "0:0:0:0", "sda", "8:0");
	// A virtio disk: its device link names no SCSI address.
	tree.dir.Write("sys/devices/pci0000:00/virtio1/block/vda/dev",
	               "254:0\n");
	tree.Link("sys/devices/pci0000:00/virtio1/block/vda/device",
	          "../../../virtio1");
	tree.Link("sys/dev/block/254:0",
	          tree.dir / "sys/devices/pci0000:00/virtio1/block/vda");
	// LIO exports something, on its own host 2.
	tree.ScsiHost("host2", "tcm_loopback");
	tree.Backstore("replipipe_0/vol", "/dev/vg/vol");
	tree.LoopbackTpg("naa.5001405aa", 0, 2);
	tree.LunLink("loopback/naa.5001405aa/tpgt_0/lun/lun_0",
	             "replipipe_0/vol");
	EXPECT_TRUE(tree.Find("8:0").empty());
	EXPECT_TRUE(tree.Find("254:0").empty());
	EXPECT_TRUE(tree.Find("7:0").empty()); // not in sysfs at all
}

// This host's iSCSI target node1:src, TPG 1, portal 127.0.0.1:3260:
// LUN 0 is another backstore, LUN 1 the source.
class IscsiTree : public LioTree
{
public:
	IscsiTree()
	{
		Backstore("replipipe_0/vol", "/dev/vg/vol");
		Backstore("iblock_0/other", "/dev/vg/other");
		const std::string tpg = "iscsi/" + kIqn + "/tpgt_1";
		Dir("config/" + ("target/" + tpg) + "/np/127.0.0.1:3260");
		LunLink(tpg + "/lun/lun_0", "iblock_0/other");
		LunLink(tpg + "/lun/lun_1", "replipipe_0/vol");
		dir.Write("config/target/iscsi/lio_version", "6.1\n");
		Dir("config/target/iscsi/discovery_auth");
	}
};

TEST(LioLoopback, IscsiSessionToALocalPortal)
{
	IscsiTree tree;
	tree.IscsiSession(1, kIqn, 1, "127.0.0.1", 3260, "3:0:0:1", "sdc",
	                  "8:32");
	auto luns = tree.Find("8:32");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].disk, "sdc");
	EXPECT_EQ(luns[0].hctl, "3:0:0:1");
	EXPECT_EQ(luns[0].lun,
	          "iSCSI " + kIqn + "/tpgt_1 LUN 1 (portal 127.0.0.1:3260)");
	EXPECT_EQ(luns[0].backstore, "replipipe_0/vol");

	// The initiator's name in upper case still names the target.
	IscsiTree upper;
	std::string iqn = kIqn;
	for (char &c : iqn)
		c = static_cast<char>(
		        std::toupper(static_cast<unsigned char>(c)));
	upper.IscsiSession(4, iqn, 1, "127.0.0.1", 3260, "5:0:0:0", "sdd",
	                   "8:48");
	luns = upper.Find("8:48");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].backstore, "iblock_0/other");
}

// A portal on another address of this host, the TPG listening on all.
TEST(LioLoopback, IscsiWildcardPortalAndALoopbackAddress)
{
	IscsiTree tree;
	const std::string tpg = "config/target/iscsi/" + kIqn + "/tpgt_1";
	fs::remove(tree.dir / (tpg + "/np/127.0.0.1:3260"));
	tree.Dir(tpg + "/np/0.0.0.0:3260");
	tree.IscsiSession(2, kIqn, 1, "127.0.0.2", 3260, "4:0:0:1", "sde",
	                  "8:64");
	auto luns = tree.Find("8:64");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].backstore, "replipipe_0/vol");
}

// A remote target with the same name (a cloned machine): its portal is
// neither this TPG's nor an address of this host.
TEST(LioLoopback, IscsiSameNameOnARemotePortalIsNotThisHost)
{
	IscsiTree tree;
	tree.IscsiSession(1, kIqn, 1, "192.0.2.7", 3260, "3:0:0:1", "sdc",
	                  "8:32");
	EXPECT_TRUE(tree.Find("8:32").empty());
	// Nor is another TPG of that name, or a name this host lacks.
	IscsiTree other_tpg;
	other_tpg.IscsiSession(1, kIqn, 2, "127.0.0.1", 3260, "3:0:0:1", "sdc",
	                       "8:32");
	EXPECT_TRUE(other_tpg.Find("8:32").empty());
	IscsiTree other_name;
	other_name.IscsiSession(1, kIqn + "x", 1, "127.0.0.1", 3260, "3:0:0:1",
	                        "sdc", "8:32");
	EXPECT_TRUE(other_name.Find("8:32").empty());
}

// An ACL of this initiator maps its LUN 0 to the TPG's LUN 1.
TEST(LioLoopback, IscsiAclMapsTheLun)
{
	IscsiTree tree;
	const std::string acl =
	        "config/target/iscsi/" + kIqn + "/tpgt_1/acls/" + kInitiator;
	tree.Link(acl + "/lun_0/2f9a03c1e7", "../../../lun/lun_1");
	tree.IscsiSession(1, kIqn, 1, "127.0.0.1", 3260, "3:0:0:0", "sdc",
	                  "8:32");
	auto luns = tree.Find("8:32");
	ASSERT_EQ(luns.size(), 1u);
	EXPECT_EQ(luns[0].backstore, "replipipe_0/vol");
}

TEST(LioLoopback, LocalAddresses)
{
	EXPECT_TRUE(IsLocalAddress("127.0.0.1"));
	EXPECT_TRUE(IsLocalAddress("127.1.2.3"));
	EXPECT_TRUE(IsLocalAddress("::1"));
	EXPECT_TRUE(IsLocalAddress("[::1]"));
	EXPECT_TRUE(IsLocalAddress("::ffff:127.0.0.1"));
	EXPECT_FALSE(IsLocalAddress("192.0.2.7")); // TEST-NET-1
	EXPECT_FALSE(IsLocalAddress("2001:db8::7"));
	EXPECT_FALSE(IsLocalAddress("peer.example.com"));
	EXPECT_FALSE(IsLocalAddress(""));
}

// The first block device node in /dev, if this machine has one.
std::optional<std::string> SomeBlockDevice()
{
	std::error_code ec;
	for (fs::directory_iterator it("/dev", ec), end; !ec && it != end;
	     it.increment(ec)) {
		struct stat st;
		if (::stat(it->path().c_str(), &st) == 0 && S_ISBLK(st.st_mode))
			return it->path().string();
	}
	return std::nullopt;
}

// End to end with the real probe: a block device that the fake sysfs
// makes tcm_loop's LUN of the source is refused as "source = target".
TEST(LioLoopback, VerifyRefusesTheSourcesOwnLun)
{
	auto dev = SomeBlockDevice();
	if (!dev)
		GTEST_SKIP() << "no block device node in /dev";
	struct stat st;
	ASSERT_EQ(::stat(dev->c_str(), &st), 0);
	const std::string majmin = std::to_string(major(st.st_rdev)) + ":" +
	                           std::to_string(minor(st.st_rdev));
	LoopbackTree tree(majmin); // the device is tcm_loop's sdb
	tree.dir.Write(tree.sdb + "/size", "2048\n");
	tree.dir.Write(tree.sdb + "/queue/logical_block_size", "512\n");
	tree.dir.Write("config/target/core/replipipe_0/vol/enable", "1\n");
	tree.dir.Write("config/target/core/replipipe_0/vol/udev_path",
	               tree.dir / "primary.img");
	tree.dir.Write("primary.img", "p");
	SystemEndpointProbe probe({tree.configfs(), tree.sysfs()});

	auto luns = probe.LocalLioLuns(*dev);
	ASSERT_TRUE(luns.ok()) << luns.status().message();
	ASSERT_EQ(luns->size(), 1u);
	EXPECT_EQ((*luns)[0].backstore, "replipipe_0/vol");
	Status verdict = VerifyNewPair(probe, "replipipe_0/vol", *dev);
	EXPECT_EQ(verdict.err(), EINVAL) << verdict.message();
	EXPECT_NE(verdict.message().find("which exports replipipe_0/vol "
	                                 "itself"),
	          std::string::npos)
	        << verdict.message();
	// Files and missing paths lead to no LUN.
	luns = probe.LocalLioLuns(tree.dir / "primary.img");
	ASSERT_TRUE(luns.ok());
	EXPECT_TRUE(luns->empty());
	luns = probe.LocalLioLuns(tree.dir / "nope");
	ASSERT_TRUE(luns.ok());
	EXPECT_TRUE(luns->empty());
}

} // namespace
} // namespace replipipe
