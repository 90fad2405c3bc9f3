// OwedLogoutsFile: the logouts a daemon owes, kept for the next daemon of
// the same boot only (decision 102).
#include "owed_logouts_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>

#include <gtest/gtest.h>

#include "durable_file.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::TempDir;

class OwedLogoutsFileTest : public ::testing::Test
{
protected:
	void SetUp() override { dir.Write("boot_id", "boot-a\n"); }

	TempDir dir;
	OwedLogoutsFile file{dir.path(), dir / "boot_id"};
	const std::vector<OwedLogoutEntry> two{
	        {"iscsi://peer:3260/iqn.2003-01.org.example:t/0", "session3",
	         "iscsid is not running"},
	        {"iscsi://peer:3260/iqn.2003-01.org.example:u/1", "session4",
	         ""}};
};

TEST_F(OwedLogoutsFileTest, WhatIsSavedLoadsInTheSameBoot)
{
	auto none = file.Load();
	ASSERT_TRUE(none.ok()) << none.status().message();
	EXPECT_TRUE(none->entries.empty());
	EXPECT_FALSE(none->other_boot);

	ASSERT_TRUE(file.Save(two).ok());
	struct stat st;
	ASSERT_EQ(::stat(file.path().c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 0777, 0600u);
	EXPECT_FALSE(std::filesystem::exists(file.path() + ".tmp"));
	auto loaded = file.Load();
	ASSERT_TRUE(loaded.ok()) << loaded.status().message();
	EXPECT_EQ(loaded->entries, two);
	EXPECT_FALSE(loaded->other_boot);
}

// A why is iscsiadm's output as it came: bytes that are not UTF-8 are
// saved as U+FFFD, not thrown on (nlohmann's strict dump threw past the
// modify or delete that owed the logout).
TEST_F(OwedLogoutsFileTest, AWhyThatIsNotUtf8IsSavedReplaced)
{
	const std::vector<OwedLogoutEntry> odd{
	        {"iscsi://peer:3260/iqn.2003-01.org.example:t/0", "session3",
	         "iscsiadm: \xff\xfe cut"}};
	Status st;
	ASSERT_NO_THROW(st = file.Save(odd));
	ASSERT_TRUE(st.ok()) << st.message();
	auto loaded = file.Load();
	ASSERT_TRUE(loaded.ok()) << loaded.status().message();
	ASSERT_EQ(loaded->entries.size(), 1u);
	EXPECT_EQ(loaded->entries[0].target, odd[0].target);
	EXPECT_EQ(loaded->entries[0].session, "session3");
	EXPECT_EQ(loaded->entries[0].why,
	          "iscsiadm: \xEF\xBF\xBD\xEF\xBF\xBD cut");
}

TEST_F(OwedLogoutsFileTest, AFileOfAnotherBootOwesNothing)
{
	ASSERT_TRUE(file.Save(two).ok());
	dir.Write("boot_id", "boot-b\n");
	auto loaded = file.Load();
	ASSERT_TRUE(loaded.ok()) << loaded.status().message();
	EXPECT_TRUE(loaded->entries.empty());
	EXPECT_TRUE(loaded->other_boot);
}

TEST_F(OwedLogoutsFileTest, NothingOwedRemovesTheFile)
{
	ASSERT_TRUE(file.Save(two).ok());
	ASSERT_TRUE(file.Save({}).ok());
	EXPECT_FALSE(std::filesystem::exists(file.path()));
	EXPECT_TRUE(file.Save({}).ok()); // no file: nothing to remove
}

TEST_F(OwedLogoutsFileTest, AMalformedFileIsAnErrorThatNamesIt)
{
	for (const char *text :
	     {"{", "[]", R"({"boot_id": "boot-a"})",
	      R"({"boot_id": "boot-a", "logouts": [{"target": "x"}]})",
	      // An empty name would have the logout find a session by its
	      // target, whichever it is.
	      R"({"boot_id": "boot-a", "logouts": [{"target": "x", "session": ""}]})"}) {
		dir.Write("owed-logouts.json", text);
		auto loaded = file.Load();
		ASSERT_FALSE(loaded.ok()) << text;
		EXPECT_EQ(loaded.status().err(), EINVAL) << text;
		EXPECT_NE(loaded.status().message().find(file.path()),
		          std::string::npos)
		        << loaded.status().message();
	}
}

TEST_F(OwedLogoutsFileTest, WithoutABootIdNothingIsSavedOrTaken)
{
	ASSERT_TRUE(file.Save(two).ok());
	std::filesystem::remove(dir / "boot_id");
	auto loaded = file.Load();
	ASSERT_FALSE(loaded.ok());
	EXPECT_NE(loaded.status().message().find("boot id"), std::string::npos)
	        << loaded.status().message();
	Status saved = file.Save(two);
	EXPECT_FALSE(saved.ok());
	EXPECT_NE(saved.message().find("boot id"), std::string::npos)
	        << saved.message();
}

} // namespace
} // namespace replipipe
