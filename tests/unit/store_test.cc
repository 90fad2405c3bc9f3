#include "store.h"

#include <linux/replipipe.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <iterator>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

// From now on fsync() fails with err in the calling thread (a seccomp filter:
// the kernel answers, nothing in the code under test is replaced). For a
// death test's child, which has that one thread. False when unsupported.
bool FailFsyncWith(int err)
{
#if defined(__x86_64__)
	constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
	constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
	return false;
#endif
	sock_filter filter[] = {
	        BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
	                 offsetof(seccomp_data, arch)),
	        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0),
	        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
	        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fsync, 0, 1),
	        BPF_STMT(BPF_RET | BPF_K,
	                 SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)),
	        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
	return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
	       ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
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

// Two daemons on one state directory: the second is refused before it
// reads anything, and may start once the first one's store is gone.
TEST(Store, StateDirLockAdmitsOneStore)
{
	TempDir dir;
	{
		auto first = std::make_unique<Store>(dir.path());
		ASSERT_TRUE(first->LockStateDir().ok());
		Store second(dir.path());
		Status st = second.LockStateDir();
		EXPECT_EQ(st.err(), EWOULDBLOCK) << st.message();
		EXPECT_NE(st.message().find("in use by another replipiped"),
		          std::string::npos)
		        << st.message();
		EXPECT_NE(st.message().find(dir.path() + "/replipiped.lock"),
		          std::string::npos)
		        << st.message();
		first.reset();
		EXPECT_TRUE(second.LockStateDir().ok());
	}
	// A child process counts as another daemon too (flock is not
	// per-process bookkeeping that a fork would share).
	Store parent(dir.path());
	ASSERT_TRUE(parent.LockStateDir().ok());
	pid_t pid = ::fork();
	if (pid == 0) {
		Store child(dir.path());
		::_exit(child.LockStateDir().err() == EWOULDBLOCK ? 0 : 1);
	}
	int wstatus = 0;
	ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
	EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
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

// The intent mark (decision 48): written as "pending" on the records that
// carry one, read back by LoadEntries(); Load() gives the pipes only.
TEST(Store, PendingMarksRoundTrip)
{
	TempDir dir;
	Store store(dir.path());
	ASSERT_TRUE(store.LoadEntries().ok());
	const PipeRecord c = Pipe("33333333-3333-4333-8333-333333333333", "c");
	const std::vector<StoreEntry> entries = {{kA, PendingOp::kNone},
	                                         {kB, PendingOp::kCreate},
	                                         {c, PendingOp::kDelete}};
	ASSERT_TRUE(store.SaveEntries(entries).ok());
	const std::string text = dir.Read("pipes.json");
	EXPECT_NE(text.find("\"pending\": \"create\""), std::string::npos)
	        << text;
	EXPECT_NE(text.find("\"pending\": \"delete\""), std::string::npos)
	        << text;

	Store reread(dir.path());
	auto back = reread.LoadEntries();
	ASSERT_TRUE(back.ok()) << back.status().message();
	EXPECT_EQ(*back, entries);
	auto pipes = reread.Load();
	ASSERT_TRUE(pipes.ok()) << pipes.status().message();
	EXPECT_EQ(*pipes, std::vector<PipeRecord>{kA});
	// A file of pipes only has no "pending" field at all: as before.
	ASSERT_TRUE(store.Save({kA, kB}).ok());
	EXPECT_EQ(dir.Read("pipes.json").find("pending"), std::string::npos);
}

// A file written before the mark existed loads as it did: every record is
// a pipe.
TEST(Store, FileWithoutMarksLoadsAsPipes)
{
	TempDir dir;
	dir.Write("pipes.json", StoreDocument({kA, kB}));
	auto entries = Store(dir.path()).LoadEntries();
	ASSERT_TRUE(entries.ok()) << entries.status().message();
	ASSERT_EQ(entries->size(), 2u);
	EXPECT_EQ((*entries)[0], (StoreEntry{kA, PendingOp::kNone}));
	EXPECT_EQ((*entries)[1], (StoreEntry{kB, PendingOp::kNone}));
}

// A mark this build does not know stops the load with the path, the record
// and the value, like an unknown schema_version, and the file is kept.
TEST(Store, UnknownPendingValueIsRefused)
{
	for (const char *value : {"\"undo\"", "\"\"", "1", "null"}) {
		TempDir dir;
		nlohmann::json doc =
		        nlohmann::json::parse(StoreDocument({kA, kB}));
		doc["pipes"][1]["pending"] = nlohmann::json::parse(value);
		const std::string text = doc.dump(2);
		dir.Write("pipes.json", text);
		Store store(dir.path());
		auto entries = store.LoadEntries();
		ASSERT_FALSE(entries.ok()) << value;
		const std::string &why = entries.status().message();
		EXPECT_NE(why.find(store.path() + ": pipes[1] (pipe " +
		                   kB.instance_id + "): \"pending\""),
		          std::string::npos)
		        << why;
		EXPECT_NE(why.find(std::string(value)[0] == '"'
		                           ? std::string(value) +
		                                     " is not supported (this "
		                                     "build reads \"create\" "
		                                     "and \"delete\")"
		                           : "must be a string"),
		          std::string::npos)
		        << why;
		EXPECT_FALSE(store.Load().ok());
		EXPECT_FALSE(store.Save({}).ok());
		EXPECT_EQ(dir.Read("pipes.json"), text);
	}
}

// A record marked pending keeps its endpoints (the kernel may have its
// pipe): a file in which another pipe has one of them is refused.
TEST(Store, PendingRecordsKeepTheirEndpoints)
{
	PipeRecord other = kB;
	other.pairs = kA.pairs;
	auto entries = ParseStoreEntries(
	        StoreEntriesDocument(
	                {{kA, PendingOp::kDelete}, {other, PendingOp::kNone}}),
	        "x");
	ASSERT_FALSE(entries.ok());
	EXPECT_NE(entries.status().message().find(
	                  "replipipe_0/a is also in pipe " + kA.instance_id),
	          std::string::npos)
	        << entries.status().message();
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

// A store edited by hand holds what no call could have stored: each such
// value stops the load and is named, instead of reaching the kernel (a NUL
// cuts the name short there) or a configfs path ("../").
TEST(Store, StoredValuesAreCheckedLikeTheCall)
{
	auto with = [](auto change) {
		PipeRecord p = kA;
		change(p);
		return p;
	};
	PipeRecord other_a = kB;
	other_a.pairs = {{"replipipe_0/b", kA.pairs[0].target}};
	const std::vector<std::pair<std::vector<PipeRecord>, std::string>> bad =
	        {
	                {{with([](PipeRecord &p) {
		                 p.settings.region_kib = 1;
	                 })},
	                 "\"region_kib\" 1 is not in 4..65536"},
	                {{with([](PipeRecord &p) {
		                 p.settings.region_kib = 1u << 31;
	                 })},
	                 "is not in 4..65536"},
	                {{with([](PipeRecord &p) {
		                 p.settings.max_lag_kib = 0;
	                 })},
	                 "\"max_lag_kib\" 0 is not in 64..1048576"},
	                {{with([](PipeRecord &p) {
		                 p.name = std::string("db\0x", 4);
	                 })},
	                 "name contains the control character 0x00"},
	                {{with([](PipeRecord &p) {
		                 p.pairs[0].source = "../../etc";
	                 })},
	                 "pair 0"},
	                {{with([](PipeRecord &p) {
		                 p.pairs[0].target = "relative";
	                 })},
	                 "pair 0"},
	                {{with([](PipeRecord &p) {
		                 p.pairs[0].target = "/dev//sdb";
	                 })},
	                 "is not in its normal form (\"/dev/sdb\")"},
	                {{with([](PipeRecord &p) {
		                 p.pairs.push_back(p.pairs[0]);
	                 })},
	                 "is in the pipe twice"},
	                {{with([](PipeRecord &p) {
		                 p.pairs.assign(REPLIPIPE_MAX_PAIRS + 1,
		                                p.pairs[0]);
	                 })},
	                 "more than 256 pairs"},
	                {{kA, with([](PipeRecord &p) {
		                  p.instance_id = kB.instance_id;
	                  })},
	                 "replipipe_0/a is also in pipe " + kA.instance_id},
	                {{kA, other_a},
	                 "/dev/a is also in pipe " + kA.instance_id},
	                {{with([](PipeRecord &p) {
		                  p.pairs[0].target = "iscsi://10.0.0.1:3260/"
		                                      "iqn.2003-01.org.x:t/0";
	                  }),
	                  with([](PipeRecord &p) {
		                  p.instance_id = kB.instance_id;
		                  p.pairs[0].source = "replipipe_0/other";
		                  p.pairs[0].target = "iscsi://10.0.0.2:3260/"
		                                      "iqn.2003-01.org.x:t/0";
	                  })},
	                 "iscsi://10.0.0.2:3260/iqn.2003-01.org.x:t/0 is also "
	                 "in pipe " +
	                         kA.instance_id},
	        };
	for (const auto &[pipes, why] : bad) {
		auto parsed = ParseStoreDocument(StoreDocument(pipes), "x");
		ASSERT_FALSE(parsed.ok()) << why;
		EXPECT_NE(parsed.status().message().find(why),
		          std::string::npos)
		        << parsed.status().message();
	}
	EXPECT_TRUE(ParseStoreDocument(StoreDocument({kA, kB}), "x").ok());
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

// A new state directory is an entry in its parent: the parent is fsynced,
// or a power loss may lose the directory with the store in it. Checked for
// real: in a child whose fsync() fails, creating the directory must fail.
TEST(Store, NewStateDirIsSyncedInItsParent)
{
	TempDir dir;
	const std::string state = dir / "state/";
	EXPECT_EXIT(
	        {
		        if (!FailFsyncWith(EIO))
			        ::_exit(2);
		        Status st = Store(state).EnsureStateDir();
		        std::fprintf(stderr, "%s\n", st.message().c_str());
		        ::_exit(st.ok() ? 0 : 1);
	        },
	        ::testing::ExitedWithCode(1),
	        "create state directory .*/state/: fsync directory "
	        ".*replipipe-test-[A-Za-z0-9]*: Input/output error");
	// The child did make it; existing, it needs nothing more.
	EXPECT_TRUE(std::filesystem::is_directory(state));
	EXPECT_TRUE(Store(state).EnsureStateDir().ok());
	const std::string fresh = dir / "fresh";
	EXPECT_TRUE(Store(fresh).EnsureStateDir().ok());
	struct stat st;
	ASSERT_EQ(::stat(fresh.c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 0777, 0700u);
}

// What the state directory holds is pushed to the kernel by a daemon that
// runs as root: a directory others can write, or another user's, is refused
// with what to do about it.
TEST(Store, StateDirWritableByOthersIsRefused)
{
	TempDir dir;
	const std::string state = dir / "state";
	ASSERT_TRUE(Store(state).EnsureStateDir().ok());
	ASSERT_EQ(::chmod(state.c_str(), 0755), 0);
	EXPECT_TRUE(Store(state).EnsureStateDir().ok()) << "0755 is safe";
	for (mode_t mode : {0770, 0707, 01777}) {
		ASSERT_EQ(::chmod(state.c_str(), mode), 0);
		Status st = Store(state).EnsureStateDir();
		EXPECT_EQ(st.err(), EPERM) << std::oct << mode;
		EXPECT_NE(st.message().find("is writable by group or others"),
		          std::string::npos)
		        << st.message();
		EXPECT_NE(st.message().find("chmod go-w"), std::string::npos);
	}
	ASSERT_EQ(::chmod(state.c_str(), 0700), 0);
	const std::string file = dir / "file";
	dir.Write("file", "x");
	EXPECT_EQ(Store(file).EnsureStateDir().err(), ENOTDIR);
	// Another user's directory: only root can make one to test with.
	if (::geteuid() == 0) {
		ASSERT_EQ(::chown(state.c_str(), 65534, 65534), 0);
		Status st = Store(state).EnsureStateDir();
		EXPECT_EQ(st.err(), EPERM);
		EXPECT_NE(st.message().find("is owned by uid 65534"),
		          std::string::npos)
		        << st.message();
		ASSERT_EQ(::chown(state.c_str(), 0, 0), 0);
	}
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
