#include "store.h"

#include <sys/stat.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::TempDir;

PipeRecord Pipe(const std::string &uuid, const std::string &name)
{
	PipeRecord p;
	p.instance_id = uuid;
	p.name = name;
	p.source_system = "node1";
	p.target_system = "node2";
	p.pairs = {{"replipipe_0/" + name, "/dev/" + name}};
	return p;
}

const PipeRecord kA = Pipe("11111111-1111-4111-8111-111111111111", "a");
const PipeRecord kB = Pipe("22222222-2222-4222-8222-222222222222", "b");

TEST(Store, MissingFileIsEmpty)
{
	TempDir dir;
	Store store(dir.path());
	auto pipes = store.Load();
	ASSERT_TRUE(pipes.ok()) << pipes.status().message();
	EXPECT_TRUE(pipes->empty());
}

TEST(Store, RoundTripAndMode0600)
{
	TempDir dir;
	Store store(dir.path());
	ASSERT_TRUE(store.Load().ok());
	ASSERT_TRUE(store.Save({kA, kB}).ok());
	struct stat st;
	ASSERT_EQ(::stat(store.path().c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 0777, 0600u);
	EXPECT_FALSE(std::filesystem::exists(store.path() + ".tmp"));

	Store again(dir.path());
	auto pipes = again.Load();
	ASSERT_TRUE(pipes.ok()) << pipes.status().message();
	ASSERT_EQ(pipes->size(), 2u);
	EXPECT_EQ((*pipes)[0], kA);
	EXPECT_EQ((*pipes)[1], kB);
	EXPECT_NE(dir.Read("pipes.json").find("\"schema_version\": 1"),
	          std::string::npos);
}

TEST(Store, CrashBeforeRenameKeepsOldFile)
{
	TempDir dir;
	Store store(dir.path());
	ASSERT_TRUE(store.Load().ok());
	ASSERT_TRUE(store.Save({kA}).ok());
	const std::string before = dir.Read("pipes.json");

	store.SetFaultHookForTest([](Store::SaveStep step) {
		return step == Store::SaveStep::kTempSynced
		               ? Status::Error("simulated crash", EIO)
		               : Status();
	});
	EXPECT_FALSE(store.Save({kA, kB}).ok());
	// The temp file is there, fully written, as after a crash...
	EXPECT_TRUE(std::filesystem::exists(store.path() + ".tmp"));
	// ...and the store is the old one.
	EXPECT_EQ(dir.Read("pipes.json"), before);
	Store reopened(dir.path());
	auto pipes = reopened.Load();
	ASSERT_TRUE(pipes.ok()) << pipes.status().message();
	ASSERT_EQ(pipes->size(), 1u);
	EXPECT_EQ((*pipes)[0], kA);
	// The next save replaces the stale temp file and succeeds.
	ASSERT_TRUE(reopened.Save({kB}).ok());
	EXPECT_FALSE(std::filesystem::exists(store.path() + ".tmp"));
	EXPECT_EQ((*Store(dir.path()).Load())[0], kB);
}

TEST(Store, CorruptFileIsRefusedWithPosition)
{
	TempDir dir;
	dir.Write("pipes.json",
	          "{\n  \"schema_version\": 1,\n  \"pipes\": [}\n");
	Store store(dir.path());
	auto pipes = store.Load();
	ASSERT_FALSE(pipes.ok());
	const std::string &m = pipes.status().message();
	EXPECT_NE(m.find(store.path()), std::string::npos) << m;
	EXPECT_NE(m.find("line 3, column 13"), std::string::npos) << m;
	// Never overwritten.
	EXPECT_FALSE(store.Save({kA}).ok());
	EXPECT_EQ(dir.Read("pipes.json"),
	          "{\n  \"schema_version\": 1,\n  \"pipes\": [}\n");
}

TEST(Store, UnknownVersionIsRefused)
{
	TempDir dir;
	dir.Write("pipes.json", "{\"schema_version\": 2, \"pipes\": []}");
	Store store(dir.path());
	auto pipes = store.Load();
	ASSERT_FALSE(pipes.ok());
	EXPECT_NE(pipes.status().message().find("schema_version 2 is not "
	                                        "supported"),
	          std::string::npos)
	        << pipes.status().message();
	EXPECT_FALSE(store.Save({}).ok());
	EXPECT_EQ(dir.Read("pipes.json"),
	          "{\"schema_version\": 2, \"pipes\": []}");
}

TEST(Store, InvalidContentIsRefused)
{
	for (const char *doc :
	     {"[]", "{\"pipes\": []}", "{\"schema_version\": 1}",
	      "{\"schema_version\": 1, \"pipes\": [{\"instance_id\": 3}]}"}) {
		TempDir dir;
		dir.Write("pipes.json", doc);
		EXPECT_FALSE(Store(dir.path()).Load().ok()) << doc;
	}
}

TEST(Store, DuplicateIdsAreRefused)
{
	auto pipes = ParseStoreDocument(StoreDocument({kA, kA}), "x");
	ASSERT_FALSE(pipes.ok());
	EXPECT_NE(pipes.status().message().find("appears twice"),
	          std::string::npos);
}

// The store is written after the kernel change: writing must not throw
// (json type_error 316 on bytes that are not UTF-8), or the caller's undo of
// that change is skipped.
TEST(Store, InvalidUtf8IsWrittenNotThrown)
{
	TempDir dir;
	Store store(dir.path());
	ASSERT_TRUE(store.Load().ok());
	PipeRecord odd = kA;
	odd.settings.element_name = "\xed\xa0\x80";
	Status st;
	ASSERT_NO_THROW(st = store.Save({odd}));
	ASSERT_TRUE(st.ok()) << st.message();
	auto back = Store(dir.path()).Load();
	ASSERT_TRUE(back.ok()) << back.status().message();
	EXPECT_EQ((*back)[0].settings.element_name,
	          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(Store, SaveErrorNamesThePath)
{
	TempDir dir;
	Store store(dir / "missing-dir");
	ASSERT_TRUE(store.Load().ok());
	Status st = store.Save({kA});
	ASSERT_FALSE(st.ok());
	EXPECT_NE(st.message().find(dir / "missing-dir/pipes.json.tmp"),
	          std::string::npos)
	        << st.message();
	ASSERT_TRUE(store.EnsureStateDir().ok());
	EXPECT_TRUE(store.Save({kA}).ok());
}

} // namespace
} // namespace replipipe
