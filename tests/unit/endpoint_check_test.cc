#include "endpoint_check.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "fake_probe_fake.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::FakeProbe;
using testing::TempDir;

constexpr uint64_t kGiB = 1ull << 30;

TEST(EndpointSyntax, Source)
{
	auto a = ParseSourceEndpoint("replipipe_0/vol1");
	ASSERT_TRUE(a.ok());
	EXPECT_EQ(a->name, "replipipe_0/vol1");
	auto b = ParseSourceEndpoint(
	        "CIM_ProtocolEndpoint.Name=\"replipipe_12/db-1.x\","
	        "SystemName=\"node1\"");
	ASSERT_TRUE(b.ok()) << b.status().message();
	EXPECT_EQ(b->name, "replipipe_12/db-1.x");
	EXPECT_EQ(b->system_name, "node1");
	EXPECT_TRUE(ParseSourceEndpoint(
	                    "CIM_iSCSIProtocolEndpoint.Name=\"replipipe_0/v\"")
	                    .ok());
	for (const char *bad :
	     {"iblock_0/vol1", "replipipe_/vol1", "replipipe_0", "replipipe_0/",
	      "replipipe_0/a/b", "replipipe_0/..", "replipipe_x/v",
	      "CIM_ComputerSystem.Name=\"replipipe_0/v\"",
	      "CIM_ProtocolEndpoint.Other=\"replipipe_0/v\"",
	      "CIM_ProtocolEndpoint.Name=\"replipipe_0/v"}) {
		auto r = ParseSourceEndpoint(bad);
		EXPECT_FALSE(r.ok()) << bad;
		EXPECT_EQ(r.status().err(), EINVAL) << bad;
	}
}

TEST(EndpointSyntax, Target)
{
	auto a = ParseTargetEndpoint("/dev//disk/./by-id/x");
	ASSERT_TRUE(a.ok());
	EXPECT_EQ(a->name, "/dev/disk/by-id/x");
	auto b = ParseTargetEndpoint("CIM_ProtocolEndpoint.Name=\"/dev/sdb\"");
	ASSERT_TRUE(b.ok()) << b.status().message();
	EXPECT_EQ(b->name, "/dev/sdb");
	for (const char *bad : {"sdb", "", "/", "/dev/../etc/passwd",
	                        "CIM_ProtocolEndpoint.Name=\"sdb\""})
		EXPECT_FALSE(ParseTargetEndpoint(bad).ok()) << bad;
}

class VerifyTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		probe.AddBackstore("replipipe_0/vol", "/dev/vg/vol", 10 * kGiB);
		probe.AddDevice("/dev/sdb", 10 * kGiB);
	}
	Status Verify(const std::string &target = "/dev/sdb")
	{
		return VerifyNewPair(probe, "replipipe_0/vol", target);
	}
	FakeProbe probe;
};

TEST_F(VerifyTest, GoodPair)
{
	EXPECT_TRUE(Verify().ok());
}

TEST_F(VerifyTest, LargerTargetIsFine)
{
	probe.AddDevice("/dev/sdc", 20 * kGiB);
	EXPECT_TRUE(Verify("/dev/sdc").ok());
}

TEST_F(VerifyTest, MissingBackstore)
{
	Status st = VerifyNewPair(probe, "replipipe_0/other", "/dev/sdb");
	EXPECT_EQ(st.err(), ENOENT);
	EXPECT_NE(st.message().find("does not exist in configfs"),
	          std::string::npos);
}

TEST_F(VerifyTest, DisabledBackstore)
{
	probe.AddBackstore("replipipe_0/off", "/dev/vg/off", kGiB, false);
	Status st = VerifyNewPair(probe, "replipipe_0/off", "/dev/sdb");
	EXPECT_EQ(st.err(), ENODEV);
	EXPECT_NE(st.message().find("not enabled"), std::string::npos);
}

TEST_F(VerifyTest, MissingTarget)
{
	EXPECT_EQ(Verify("/dev/nope").err(), ENOENT);
}

TEST_F(VerifyTest, TargetNotABlockDevice)
{
	probe.AddDevice("/tmp/file", 10 * kGiB, false);
	Status st = Verify("/tmp/file");
	EXPECT_EQ(st.err(), ENOTBLK);
	EXPECT_NE(st.message().find("not a block device"), std::string::npos);
}

TEST_F(VerifyTest, TargetIsThePrimary)
{
	EXPECT_EQ(Verify("/dev/vg/vol").err(), EINVAL);
	probe.AddAlias("/dev/dm-3", "/dev/vg/vol");
	Status st = Verify("/dev/dm-3");
	EXPECT_EQ(st.err(), EINVAL);
	EXPECT_NE(st.message().find("source = target"), std::string::npos);
}

// The source exported back through this host's LIO (tcm_loop, iSCSI to
// a local portal): every mirrored write would come back into it.
LioLocalLun LoopedLun(const std::string &backstore,
                      const std::string &udev_path = "",
                      const std::string &disk = "sdc")
{
	return {disk, "2:0:1:0", "tcm_loop naa.5001405aa/tpgt_1 LUN 0",
	        backstore, udev_path};
}

TEST_F(VerifyTest, TargetIsALunOfTheSourceItself)
{
	probe.AddDevice("/dev/sdc", 10 * kGiB);
	probe.SetLocalLioLuns("/dev/sdc",
	                      {LoopedLun("replipipe_0/vol", "/dev/vg/vol")});
	Status st = Verify("/dev/sdc");
	EXPECT_EQ(st.err(), EINVAL);
	EXPECT_EQ(st.message(),
	          "pair replipipe_0/vol -> /dev/sdc: target /dev/sdc is "
	          "tcm_loop naa.5001405aa/tpgt_1 LUN 0 of this host (disk "
	          "sdc at SCSI 2:0:1:0), which exports replipipe_0/vol "
	          "itself: every mirrored write would come back to the "
	          "source (source = target)");
	// Under another path of the same disk too.
	probe.AddAlias("/dev/disk/by-id/wwn-0x5001405aa", "/dev/sdc");
	EXPECT_EQ(Verify("/dev/disk/by-id/wwn-0x5001405aa").err(), EINVAL);
}

TEST_F(VerifyTest, TargetIsALunOfAnotherBackstoreOnThePrimary)
{
	probe.AddDevice("/dev/sdc", 10 * kGiB);
	probe.SetLocalLioLuns("/dev/sdc",
	                      {LoopedLun("iblock_0/raw", "/dev/vg/vol")});
	Status st = Verify("/dev/sdc");
	EXPECT_EQ(st.err(), EINVAL);
	EXPECT_NE(st.message().find("which exports backstore iblock_0/raw on "
	                            "/dev/vg/vol, the primary device of "
	                            "replipipe_0/vol"),
	          std::string::npos)
	        << st.message();
	// The same primary under another path: by device number.
	probe.AddAlias("/dev/dm-3", "/dev/vg/vol");
	probe.SetLocalLioLuns("/dev/sdc",
	                      {LoopedLun("iblock_0/raw", "/dev/dm-3")});
	st = Verify("/dev/sdc");
	EXPECT_EQ(st.err(), EINVAL);
	EXPECT_NE(st.message().find("source = target"), std::string::npos);
}

TEST_F(VerifyTest, TargetStackedOnALoopedLun)
{
	probe.AddDevice("/dev/mapper/lin", 10 * kGiB);
	probe.SetLocalLioLuns("/dev/mapper/lin",
	                      {LoopedLun("replipipe_0/vol", "", "sdd")});
	Status st = Verify("/dev/mapper/lin");
	EXPECT_EQ(st.err(), EINVAL);
	EXPECT_NE(st.message().find("target /dev/mapper/lin (on sdd) "
	                            "is tcm_loop"),
	          std::string::npos)
	        << st.message();
}

TEST_F(VerifyTest, LunOfAnotherBackstoreIsFine)
{
	probe.AddBackstore("replipipe_0/other", "/dev/vg/other", 10 * kGiB);
	probe.AddDevice("/dev/sdc", 10 * kGiB);
	probe.SetLocalLioLuns("/dev/sdc",
	                      {LoopedLun("replipipe_0/other", "/dev/vg/other"),
	                       LoopedLun("fileio_0/img", "")});
	Status st = Verify("/dev/sdc");
	EXPECT_TRUE(st.ok()) << st.message();
}

TEST_F(VerifyTest, TargetInUse)
{
	probe.SetOpenError("/dev/sdb", EBUSY);
	Status st = Verify();
	EXPECT_EQ(st.err(), EBUSY);
	EXPECT_NE(st.message().find("in use"), std::string::npos);
}

// The pipe's own kernel pairs hold their targets until the PIPE_SET
// replaces them: the exclusive open is not tried on those devices (under
// any path), and still is on every other one.
TEST_F(VerifyTest, TargetHeldByThePipeItselfIsNotInUse)
{
	probe.SetOpenError("/dev/sdb", EBUSY);
	probe.AddAlias("/dev/disk/by-id/sdb", "/dev/sdb");
	auto sdb = probe.Device("/dev/sdb");
	ASSERT_TRUE(sdb.ok());
	const std::set<uint64_t> held{sdb->rdev};
	EXPECT_TRUE(
	        VerifyNewPair(probe, "replipipe_0/vol", "/dev/sdb", held).ok());
	EXPECT_TRUE(VerifyNewPair(probe, "replipipe_0/vol",
	                          "/dev/disk/by-id/sdb", held)
	                    .ok());
	probe.AddDevice("/dev/sdc", 10 * kGiB);
	probe.SetOpenError("/dev/sdc", EBUSY);
	EXPECT_EQ(
	        VerifyNewPair(probe, "replipipe_0/vol", "/dev/sdc", held).err(),
	        EBUSY);
	// Still the primary: source = target.
	auto vol = probe.Device("/dev/vg/vol");
	ASSERT_TRUE(vol.ok());
	EXPECT_EQ(VerifyNewPair(probe, "replipipe_0/vol", "/dev/vg/vol",
	                        {vol->rdev})
	                  .err(),
	          EINVAL);
}

TEST_F(VerifyTest, TargetNotWritable)
{
	probe.SetOpenError("/dev/sdb", EIO);
	Status st = Verify();
	EXPECT_EQ(st.err(), EIO);
	EXPECT_NE(st.message().find("cannot be opened for writing"),
	          std::string::npos);
}

// A write-protected disk says so, whichever check sees it first (the iSCSI
// attach's sysfs "ro", or this open's EROFS).
TEST_F(VerifyTest, TargetWriteProtected)
{
	probe.SetOpenError("/dev/sdb", EROFS);
	Status st = Verify();
	EXPECT_EQ(st.err(), EROFS);
	EXPECT_NE(st.message().find("is write-protected"), std::string::npos)
	        << st.message();
}

TEST_F(VerifyTest, TargetTooSmall)
{
	probe.AddDevice("/dev/small", 10 * kGiB - 512);
	Status st = Verify("/dev/small");
	EXPECT_EQ(st.err(), ENOSPC);
	EXPECT_NE(st.message().find("smaller than"), std::string::npos);
}

TEST_F(VerifyTest, TargetWithLargerLogicalBlocks)
{
	probe.AddDevice("/dev/4kn", 10 * kGiB);
	probe.SetLogicalBlockSize("/dev/4kn", 4096);
	Status st = Verify("/dev/4kn");
	EXPECT_EQ(st.err(), EMEDIUMTYPE); // not EINVAL: ReturnValue 4
	EXPECT_NE(st.message().find("has logical blocks of 4096 bytes, "
	                            "larger than the 512 bytes of "
	                            "replipipe_0/vol"),
	          std::string::npos)
	        << st.message();
	// Smaller or equal blocks take every write of the source.
	probe.SetLogicalBlockSize("/dev/vg/vol", 4096);
	EXPECT_TRUE(Verify("/dev/4kn").ok());
	EXPECT_TRUE(Verify().ok());
}

TEST_F(VerifyTest, ProbeEinvalIsNotInvalidParameter)
{
	probe.FailNext(EINVAL);
	Status st = Verify();
	EXPECT_FALSE(st.ok());
	EXPECT_NE(st.err(), EINVAL);
}

// The real probe against a configfs and sysfs laid out in a temp dir.
TEST(SystemProbe, ReadsConfigfs)
{
	TempDir dir;
	dir.Write("configfs/target/core/replipipe_0/vol/enable", "1\n");
	dir.Write("configfs/target/core/replipipe_0/vol/udev_path",
	          "/dev/vg/vol\n");
	dir.Write("configfs/target/core/replipipe_0/off/enable", "0\n");
	dir.Write("configfs/target/core/replipipe_0/off/udev_path", "\n");
	SystemEndpointProbe probe({dir / "configfs", dir / "sysfs"});

	auto vol = probe.Backstore("replipipe_0/vol");
	ASSERT_TRUE(vol.ok()) << vol.status().message();
	EXPECT_TRUE(vol->exists);
	EXPECT_TRUE(vol->enabled);
	EXPECT_EQ(vol->primary_path, "/dev/vg/vol");
	auto off = probe.Backstore("replipipe_0/off");
	ASSERT_TRUE(off.ok());
	EXPECT_TRUE(off->exists);
	EXPECT_FALSE(off->enabled);
	EXPECT_EQ(off->primary_path, "");
	auto none = probe.Backstore("replipipe_1/none");
	ASSERT_TRUE(none.ok());
	EXPECT_FALSE(none->exists);
}

TEST(SystemProbe, MissingAttributeIsAnError)
{
	TempDir dir;
	dir.Write("configfs/target/core/replipipe_0/vol/enable", "1\n");
	SystemEndpointProbe probe({dir / "configfs", dir / "sysfs"});
	auto vol = probe.Backstore("replipipe_0/vol");
	ASSERT_FALSE(vol.ok());
	EXPECT_NE(vol.status().message().find("udev_path"), std::string::npos);
}

TEST(SystemProbe, Devices)
{
	TempDir dir;
	dir.Write("disk.img", std::string(4096, 'x'));
	SystemEndpointProbe probe({dir / "configfs", dir / "sysfs"});
	auto file = probe.Device(dir / "disk.img");
	ASSERT_TRUE(file.ok());
	EXPECT_TRUE(file->exists);
	EXPECT_FALSE(file->is_block_device);
	EXPECT_EQ(file->size_bytes, 4096u);
	auto missing = probe.Device(dir / "nope");
	ASSERT_TRUE(missing.ok());
	EXPECT_FALSE(missing->exists);
	auto null_dev = probe.Device("/dev/null"); // a character device
	ASSERT_TRUE(null_dev.ok());
	EXPECT_TRUE(null_dev->exists);
	EXPECT_FALSE(null_dev->is_block_device);
	EXPECT_TRUE(probe.OpenExclusive(dir / "disk.img").ok());
	Status st = probe.OpenExclusive(dir / "nope");
	EXPECT_EQ(st.err(), ENOENT);
	EXPECT_NE(st.message().find(dir / "nope"), std::string::npos);
}

// End to end with the real probe: a regular file is refused as a target.
TEST(SystemProbe, VerifyRefusesRegularFileTarget)
{
	TempDir dir;
	dir.Write("configfs/target/core/replipipe_0/vol/enable", "1");
	dir.Write("configfs/target/core/replipipe_0/vol/udev_path",
	          dir / "primary.img");
	dir.Write("primary.img", "p");
	dir.Write("target.img", "t");
	SystemEndpointProbe probe({dir / "configfs", dir / "sysfs"});
	Status st = VerifyNewPair(probe, "replipipe_0/vol", dir / "target.img");
	EXPECT_EQ(st.err(), ENOTBLK) << st.message();
	st = VerifyNewPair(probe, "replipipe_0/gone", dir / "target.img");
	EXPECT_EQ(st.err(), ENOENT) << st.message();
}

} // namespace
} // namespace replipipe
