#include "pipe_service.h"

#include <atomic>
#include <future>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "fake_kernel_fake.h"
#include "fake_probe_fake.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::FakeKernel;
using testing::FakeProbe;
using testing::TempDir;
using Op = FakeKernel::Op;

constexpr uint64_t kGiB = 1ull << 30;
constexpr const char *kHost = "node1.example.com";

// Thrown by a test hook where the daemon is killed (SIGKILL, power loss,
// systemd's TimeoutStopSec during a stop). No std::exception: nothing in
// the code under test catches it, so nothing after that point runs.
struct DaemonKilled {
};

std::string Lines(const std::vector<std::string> &lines)
{
	std::string all;
	for (const std::string &line : lines)
		all += line + "\n";
	return all;
}

class PipeServiceTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		for (const char *name : {"a", "b", "c", "d"}) {
			probe.AddBackstore(std::string("replipipe_0/") + name,
			                   std::string("/dev/vg/") + name,
			                   10 * kGiB);
		}
		for (const char *dev :
		     {"/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde"})
			probe.AddDevice(dev, 10 * kGiB);
		// replipipe.ko: lookup_bdev() of a target, and its pairs'
		// targets held exclusively (under every path that names them).
		kernel.SetDeviceResolver([this](const std::string &path) {
			return DevOf(path);
		});
		probe.SetHeldCheck([this](uint64_t rdev) {
			for (const KernelPipeStatus &p : kernel.Snapshot())
				for (const KernelPairStatus &q : p.pairs)
					if (DevOf(q.target) == rdev)
						return true;
			return false;
		});
		ASSERT_TRUE(service.Load().ok());
	}

	uint64_t DevOf(const std::string &path)
	{
		auto d = probe.Device(path);
		return d.ok() && d->is_block_device ? d->rdev : 0;
	}

	CreateOrModifyCall Call(std::vector<std::string> sources,
	                        std::vector<std::string> targets,
	                        std::string goal = "")
	{
		CreateOrModifyCall c;
		c.pipe_element_name = "db";
		c.source_system = kHost;
		c.target_system = "node2";
		c.source_endpoints = std::move(sources);
		c.target_endpoints = std::move(targets);
		c.goal = std::move(goal);
		return c;
	}

	// A modify of pipe ref (CreateAB()'s): a -> sdc, systems unchanged.
	CreateOrModifyCall MoveAToSdc(const std::string &ref)
	{
		CreateOrModifyCall m = Call({"replipipe_0/a"}, {"/dev/sdc"});
		m.replication_pipe = ref;
		m.source_system = "";
		m.target_system = "";
		return m;
	}

	// Creates a pipe a -> sdb; returns its reference.
	std::string CreateAB(const std::string &name = "db")
	{
		CreateOrModifyCall c = Call({"replipipe_0/a"}, {"/dev/sdb"});
		c.pipe_element_name = name;
		MethodOutcome out = service.CreateOrModify(c);
		EXPECT_EQ(out.return_value, ReturnValue::kCompleted)
		        << out.error;
		return out.replication_pipe;
	}

	// A create a -> sdb whose store write fails once the kernel has the
	// pipe and whose undo (PIPE_DEL) fails too: its record stays marked
	// pending-create and the pipe stays in the kernel.
	MethodOutcome CreateLeftMarked()
	{
		std::atomic<bool> failing{false};
		kernel.SetEntryHook([&](Op op) {
			if (op == Op::kSetPipe)
				failing = true;
		});
		store.SetFaultHookForTest([&](Store::SaveStep) {
			return failing ? Status::Error("disk full", ENOSPC)
			               : Status();
		});
		kernel.FailNext(EIO, Op::kDeletePipe);
		MethodOutcome out = service.CreateOrModify(
		        Call({"replipipe_0/a"}, {"/dev/sdb"}));
		kernel.SetEntryHook(nullptr);
		store.SetFaultHookForTest({});
		return out;
	}

	std::string UuidOf(const std::string &ref)
	{
		auto id = ParsePipeIdentifier(ref);
		return id.ok() && *id ? **id : "";
	}

	// What "changes nothing" compares: the kernel's pipes and the file.
	// No file yet is an empty store: a refused create writes its pending
	// record and removes it again (decision 48).
	std::string World()
	{
		std::string file = dir.Read("pipes.json");
		if (file.empty())
			file = StoreDocument({});
		std::string out = file + "\n--\n";
		for (const KernelPipeStatus &p : kernel.Snapshot()) {
			out += p.id + " " + p.name + " " + ModeName(p.mode) +
			       " " + std::to_string(p.region_kib) + "\n";
			for (const KernelPairStatus &q : p.pairs)
				out += "  " + q.source + " " + q.target + " " +
				       PairStateName(q.state) + "\n";
		}
		return out;
	}

	// Runs call, expects rv and a message containing what, and that
	// nothing changed.
	void ExpectRefused(const CreateOrModifyCall &call, ReturnValue rv,
	                   const std::string &what)
	{
		std::string before = World();
		MethodOutcome out = service.CreateOrModify(call);
		EXPECT_EQ(out.return_value, rv) << out.error;
		EXPECT_NE(out.error.find(what), std::string::npos)
		        << "error: " << out.error << "\nexpected: " << what;
		EXPECT_TRUE(out.replication_pipe.empty());
		EXPECT_EQ(World(), before);
	}

	// The daemon's next start: a new store and service on the same state
	// directory and the same kernel (which keeps what it was given).
	struct Restarted {
		explicit Restarted(PipeServiceTest &t)
		    : store(t.dir.path()), service{t.kernel, store, t.probe,
		                                   HostIdentity{kHost},
		                                   t.options}
		{
		}
		Store store;
		PipeService service;
	};
	std::unique_ptr<Restarted> Restart()
	{
		auto restarted = std::make_unique<Restarted>(*this);
		Status loaded = restarted->service.Load();
		EXPECT_TRUE(loaded.ok()) << loaded.message();
		return restarted;
	}

	TempDir dir;
	Store store{dir.path()};
	FakeKernel kernel;
	FakeProbe probe;
	PipeServiceOptions options{std::chrono::milliseconds(100)};
	PipeService service{kernel, store, probe, HostIdentity{kHost}, options};
};

// --- 0: created or modified ------------------------------------------

TEST_F(PipeServiceTest, CreateWritesKernelAndStore)
{
	MethodOutcome out = service.CreateOrModify(Call(
	        {"replipipe_0/a", "replipipe_0/b"}, {"/dev/sdb", "/dev/sdc"},
	        "instance of CIM_SettingData { Mode = \"Asynchronous\"; "
	        "RegionSizeKiB = 128; };"));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	std::string uuid = UuidOf(out.replication_pipe);
	ASSERT_TRUE(IsUuidText(uuid)) << out.replication_pipe;
	EXPECT_EQ(out.replication_pipe,
	          "CIM_NetworkPipe.InstanceID=\"replipipe:" + uuid + "\"");

	auto k = kernel.Find(uuid);
	ASSERT_TRUE(k);
	EXPECT_EQ(k->name, "db");
	EXPECT_EQ(k->mode, Mode::kAsynchronous);
	EXPECT_EQ(k->region_kib, 128u);
	ASSERT_EQ(k->pairs.size(), 2u);
	EXPECT_EQ(k->pairs[0].state, PairState::kSyncing); // initial resync

	Store reread(dir.path());
	auto stored = reread.Load();
	ASSERT_TRUE(stored.ok());
	ASSERT_EQ(stored->size(), 1u);
	const PipeRecord &p = (*stored)[0];
	EXPECT_EQ(p.instance_id, uuid);
	EXPECT_EQ(p.source_system, kHost);
	EXPECT_EQ(p.target_system, "node2");
	EXPECT_EQ(p.settings.mode, Mode::kAsynchronous);
	ASSERT_EQ(p.pairs.size(), 2u);
	EXPECT_EQ(p.pairs[1].target, "/dev/sdc");
}

// A Goal whose ElementName escapes make a control character is refused:
// accepted, it was stored, and the store then refused to load at the next
// start, so replipiped would not run.
TEST_F(PipeServiceTest, GoalElementNameWithAControlCharacterIsRefused)
{
	MethodOutcome out = service.CreateOrModify(Call(
	        {"replipipe_0/a"}, {"/dev/sdb"},
	        "instance of CIM_SettingData { ElementName = \"a\\tb\"; };"));
	EXPECT_EQ(out.return_value, ReturnValue::kInvalidParameter)
	        << out.error;
	EXPECT_TRUE(kernel.ListPipes()->empty());
	Store reread(dir.path());
	auto stored = reread.Load();
	ASSERT_TRUE(stored.ok()) << stored.status().message();
	EXPECT_TRUE(stored->empty());
}

TEST_F(PipeServiceTest, CreateWithNullEndpointsHasNoPairs)
{
	CreateOrModifyCall c;
	c.pipe_element_name = "empty";
	c.source_system = "localhost";
	c.target_system = "node2";
	MethodOutcome out = service.CreateOrModify(c);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	auto k = kernel.Find(UuidOf(out.replication_pipe));
	ASSERT_TRUE(k);
	EXPECT_TRUE(k->pairs.empty());
}

TEST_F(PipeServiceTest, CreateAcceptsReferences)
{
	CreateOrModifyCall c = Call({"CIM_ProtocolEndpoint.Name=\"replipipe_0/"
	                             "a\",SystemName=\"node1\""},
	                            {"CIM_ProtocolEndpoint.Name=\"/dev/"
	                             "sdb\",SystemName=\"NODE2\""});
	c.source_system = "CIM_ComputerSystem.Name=\"node1\"";
	c.target_system = "//cimom/root/cimv2:CIM_ComputerSystem."
	                  "CreationClassName=\"CIM_ComputerSystem\","
	                  "Name=\"node2\"";
	MethodOutcome out = service.CreateOrModify(c);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	auto p = service.GetPipe(out.replication_pipe);
	ASSERT_TRUE(p.ok());
	EXPECT_EQ(p->source_system, "node1");
	EXPECT_EQ(p->target_system, "node2");
	EXPECT_EQ(p->pairs[0].source, "replipipe_0/a");
}

TEST_F(PipeServiceTest, TargetSystemMayBeThisHost)
{
	CreateOrModifyCall c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.target_system = kHost;
	EXPECT_EQ(service.CreateOrModify(c).return_value,
	          ReturnValue::kCompleted);
}

TEST_F(PipeServiceTest, ModifyKeepsStayingPairsAndResyncsNewOnes)
{
	std::string ref = CreateAB();
	std::string uuid = UuidOf(ref);
	kernel.ForcePairState(uuid, "replipipe_0/a", PairState::kInSync);

	CreateOrModifyCall c = Call({"replipipe_0/a", "replipipe_0/b"},
	                            {"/dev/sdb", "/dev/sdc"});
	c.pipe_element_name = "";
	c.replication_pipe = ref;
	MethodOutcome out = service.CreateOrModify(c);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	EXPECT_EQ(out.replication_pipe, ref);
	auto k = kernel.Find(uuid);
	ASSERT_EQ(k->pairs.size(), 2u);
	EXPECT_EQ(k->pairs[0].state, PairState::kInSync); // not resynced
	EXPECT_EQ(k->pairs[1].state, PairState::kSyncing);
	EXPECT_EQ(k->name, "db"); // empty name keeps it

	// Replace: a stays, b goes, c comes.
	c = Call({"replipipe_0/c", "replipipe_0/a"}, {"/dev/sdd", "/dev/sdb"});
	c.replication_pipe = ref;
	c.pipe_element_name = "renamed";
	ASSERT_EQ(service.CreateOrModify(c).return_value,
	          ReturnValue::kCompleted);
	k = kernel.Find(uuid);
	ASSERT_EQ(k->pairs.size(), 2u);
	EXPECT_EQ(k->name, "renamed");
	for (const KernelPairStatus &p : k->pairs) {
		EXPECT_NE(p.source, "replipipe_0/b");
		EXPECT_EQ(p.state, p.source == "replipipe_0/a"
		                           ? PairState::kInSync
		                           : PairState::kSyncing);
	}
	// b is free again for another pipe.
	CreateOrModifyCall other = Call({"replipipe_0/b"}, {"/dev/sdc"});
	EXPECT_EQ(service.CreateOrModify(other).return_value,
	          ReturnValue::kCompleted);
}

TEST_F(PipeServiceTest, ModifyNullKeepsPairsEmptyRemovesAll)
{
	std::string ref = CreateAB();
	CreateOrModifyCall keep;
	keep.replication_pipe = ref;
	keep.goal = "instance of CIM_SettingData { FailurePolicy = "
	            "\"FailIO\"; };";
	ASSERT_EQ(service.CreateOrModify(keep).return_value,
	          ReturnValue::kCompleted);
	auto k = kernel.Find(UuidOf(ref));
	EXPECT_EQ(k->pairs.size(), 1u);
	EXPECT_EQ(k->failure_policy, FailurePolicy::kFailIO);

	CreateOrModifyCall clear;
	clear.replication_pipe = ref;
	clear.source_endpoints.emplace();
	clear.target_endpoints.emplace();
	ASSERT_EQ(service.CreateOrModify(clear).return_value,
	          ReturnValue::kCompleted);
	k = kernel.Find(UuidOf(ref));
	EXPECT_TRUE(k->pairs.empty());
	// An empty Goal on modify keeps the settings.
	EXPECT_EQ(k->failure_policy, FailurePolicy::kFailIO);
	EXPECT_TRUE((*service.GetPipe(ref)).pairs.empty());
}

// A Goal on modify changes the properties it names and keeps the others
// (decision 6): changing the resync limit of a pipe with 128 KiB regions
// that keeps its pairs is no region size change, and an asynchronous pipe
// stays asynchronous.
TEST_F(PipeServiceTest, ModifyGoalKeepsWhatItLeavesOut)
{
	MethodOutcome made = service.CreateOrModify(
	        Call({"replipipe_0/a"}, {"/dev/sdb"},
	             "instance of CIM_SettingData { Mode = \"Asynchronous\"; "
	             "RegionSizeKiB = 128; MaxLagKiB = 1024; FailurePolicy = "
	             "\"FailIO\"; ElementName = \"e\"; };"));
	ASSERT_EQ(made.return_value, ReturnValue::kCompleted) << made.error;
	const std::string ref = made.replication_pipe;
	CreateOrModifyCall c;
	c.replication_pipe = ref;
	c.goal =
	        "instance of CIM_SettingData { ResyncRateLimitKiBps = 4096; };";
	MethodOutcome out = service.CreateOrModify(c);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	PipeSettings want;
	want.mode = Mode::kAsynchronous;
	want.failure_policy = FailurePolicy::kFailIO;
	want.max_lag_kib = 1024;
	want.resync_rate_kibps = 4096;
	want.region_kib = 128;
	want.element_name = "e";
	EXPECT_EQ((*service.GetPipe(ref)).settings, want);
	auto k = kernel.Find(UuidOf(ref));
	ASSERT_TRUE(k);
	EXPECT_EQ(k->mode, Mode::kAsynchronous);
	EXPECT_EQ(k->region_kib, 128u);
	EXPECT_EQ(k->max_lag_kib, 1024u);
	EXPECT_EQ(k->failure_policy, FailurePolicy::kFailIO);

	// NULL is as if the property were left out.
	c.goal = "instance of CIM_SettingData { Mode = NULL; MaxLagKiB = 2048; "
	         "};";
	out = service.CreateOrModify(c);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	want.max_lag_kib = 2048;
	EXPECT_EQ((*service.GetPipe(ref)).settings, want);

	// A property given is changed (here to its default value).
	c.goal = "instance of CIM_SettingData { Mode = \"Synchronous\"; };";
	out = service.CreateOrModify(c);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	want.mode = Mode::kSynchronous;
	EXPECT_EQ((*service.GetPipe(ref)).settings, want);

	// On create, what the Goal leaves out takes the defaults.
	CreateOrModifyCall fresh = Call(
	        {"replipipe_0/b"}, {"/dev/sdc"},
	        "instance of CIM_SettingData { ResyncRateLimitKiBps = 7; };");
	out = service.CreateOrModify(fresh);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	PipeSettings defaults;
	defaults.resync_rate_kibps = 7;
	EXPECT_EQ((*service.GetPipe(out.replication_pipe)).settings, defaults);
}

TEST_F(PipeServiceTest, ModifyAcceptsEveryPipeNotation)
{
	std::string ref = CreateAB("mirror");
	std::string uuid = UuidOf(ref);
	for (std::string pipe :
	     {ref, "replipipe:" + uuid, uuid, "//node1/root/cimv2:" + ref,
	      std::string("mirror")}) {
		CreateOrModifyCall c;
		c.replication_pipe = pipe;
		MethodOutcome out = service.CreateOrModify(c);
		EXPECT_EQ(out.return_value, ReturnValue::kCompleted)
		        << pipe << ": " << out.error;
		EXPECT_EQ(out.replication_pipe, ref);
	}
}

// --- 1: not supported -------------------------------------------------

TEST_F(PipeServiceTest, NotSupported)
{
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"},
	                   "instance of CIM_SettingData { Bidirectional = "
	                   "TRUE; };"),
	              ReturnValue::kNotSupported, "Bidirectional");
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"},
	                   "instance of CIM_SettingData { Mode = "
	                   "\"Adaptive\"; };"),
	              ReturnValue::kNotSupported, "not supported");
	EXPECT_EQ(kernel.calls(Op::kSetPipe), 0);
}

// An invalid Goal is 5 whatever the order of its properties; 1 only for
// a Goal that is otherwise valid.
TEST_F(PipeServiceTest, InvalidGoalIsInvalidWhateverTheOrder)
{
	for (const char *goal : {"instance of CIM_SettingData { Mode = "
	                         "\"Adaptive\"; Bogus = 1; };",
	                         "instance of CIM_SettingData { Bogus = 1; "
	                         "Mode = \"Adaptive\"; };"})
		ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"}, goal),
		              ReturnValue::kInvalidParameter,
		              "unknown property Bogus");
	EXPECT_EQ(kernel.calls(Op::kSetPipe), 0);
}

// 1 only for a call that is otherwise valid: an unsupported Goal with a
// change of systems or a reused endpoint is 5.
TEST_F(PipeServiceTest, NotSupportedOnlyForAnOtherwiseValidCall)
{
	const char *adaptive =
	        "instance of CIM_SettingData { Mode = \"Adaptive\"; };";
	std::string ref = CreateAB();
	CreateOrModifyCall c;
	c.replication_pipe = ref;
	c.target_system = "node3";
	c.goal = adaptive;
	ExpectRefused(c, ReturnValue::kInvalidParameter,
	              "systems of an existing pipe cannot change");
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdc"}, adaptive),
	              ReturnValue::kInvalidParameter, "replipipe_0/a");
	ExpectRefused(Call({"replipipe_0/c"}, {"/dev/sdd"}, adaptive),
	              ReturnValue::kNotSupported, "not supported");
	// The Goal's offered values are checked against the pipe too: a
	// region size that pairs kept cannot take is 5 beside an unsupported
	// Mode (it was 1: the unsupported Goal's values were dropped).
	CreateOrModifyCall region;
	region.replication_pipe = ref;
	region.goal = "instance of CIM_SettingData { Mode = \"Adaptive\"; "
	              "RegionSizeKiB = 128; };";
	ExpectRefused(region, ReturnValue::kInvalidParameter,
	              "RegionSizeKiB cannot change from 64 to 128");
	// And without the region size, the same modify is 1.
	region.goal = adaptive;
	ExpectRefused(region, ReturnValue::kNotSupported, "not supported");
}

// --- 2: unspecified (store) -----------------------------------------

// The store fails once the kernel has the new pipe (the write that would
// clear the create's pending mark) and works again for the undo's: the
// kernel change is undone, the pending record removed, the file as before.
TEST_F(PipeServiceTest, StoreFailureOnCreateUndoesKernel)
{
	CreateAB("first");
	std::atomic<bool> failing{false};
	kernel.SetEntryHook([&](Op op) {
		if (op == Op::kSetPipe)
			failing = true;
		if (op == Op::kDeletePipe)
			failing = false;
	});
	store.SetFaultHookForTest([&](Store::SaveStep) {
		return failing ? Status::Error("disk full", ENOSPC) : Status();
	});
	ExpectRefused(Call({"replipipe_0/b"}, {"/dev/sdc"}),
	              ReturnValue::kUnspecifiedError,
	              "store: disk full; the kernel change was undone");
	kernel.SetEntryHook(nullptr);
	EXPECT_EQ(kernel.Snapshot().size(), 1u);
	EXPECT_EQ(service.ListPipes().size(), 1u);
}

// A store that cannot take the create's pending record: the kernel is
// never asked.
TEST_F(PipeServiceTest, StoreFailureBeforeCreateLeavesTheKernelAlone)
{
	CreateAB("first");
	store.SetFaultHookForTest([](Store::SaveStep) {
		return Status::Error("disk full", ENOSPC);
	});
	const int sets = kernel.calls(Op::kSetPipe);
	ExpectRefused(Call({"replipipe_0/b"}, {"/dev/sdc"}),
	              ReturnValue::kUnspecifiedError, "store: disk full");
	EXPECT_EQ(kernel.calls(Op::kSetPipe), sets);
	EXPECT_EQ(service.ListPipes().size(), 1u);
}

// A modify's save that fails before its rename (the temp file's write)
// left the file as it was: nothing is written back, and the store is not
// said to hold the change. Before, the write-back was tried, and when it
// failed the same way the daemon said at every refresh, and at its stop,
// that the file may hold the change that failed.
TEST_F(PipeServiceTest, ASaveThatFailedBeforeItsRenameIsNotWrittenBack)
{
	const std::string ref = CreateAB();
	const std::string before = dir.Read("pipes.json");
	int saves = 0;
	store.SetFaultHookForTest([&](Store::SaveStep at) {
		if (at != Store::SaveStep::kTempSynced)
			return Status();
		saves++;
		return Status::Error("disk full", ENOSPC);
	});
	::testing::internal::CaptureStderr();
	MethodOutcome out = service.CreateOrModify(MoveAToSdc(ref));
	const std::string log = ::testing::internal::GetCapturedStderr();
	EXPECT_EQ(out.return_value, ReturnValue::kUnspecifiedError)
	        << out.error;
	EXPECT_EQ(saves, 1) << "the unchanged file was written back";
	EXPECT_EQ(log.find("may hold the change"), std::string::npos) << log;
	EXPECT_EQ(dir.Read("pipes.json"), before);
	EXPECT_TRUE(service.RewriteStaleStore().ok());
	EXPECT_EQ(saves, 1) << "a refresh rewrote a file that was not stale";
	store.SetFaultHookForTest({});
	ASSERT_EQ(kernel.Snapshot().size(), 1u);
	EXPECT_EQ(kernel.Snapshot()[0].pairs[0].target, "/dev/sdb");
}

// A modify's save that fails after its rename (the directory's fsync) and
// whose write-back of the old content fails too leaves the refused modify
// in the file: the next start would push it (the kernel was undone). The
// file is written again once the store takes writes, before any restart.
TEST_F(PipeServiceTest, AFailedSaveWhoseWriteBackFailedIsWrittenAgain)
{
	const std::string ref = CreateAB();
	int step = 0;
	store.SetFaultHookForTest([&](Store::SaveStep at) {
		if (step == 0 && at == Store::SaveStep::kRenamed) {
			step++;
			return Status::Error("fsync directory", EIO);
		}
		if (step == 1 && at == Store::SaveStep::kTempSynced) {
			step++;
			return Status::Error("disk full", ENOSPC);
		}
		return Status();
	});
	::testing::internal::CaptureStderr();
	MethodOutcome out = service.CreateOrModify(MoveAToSdc(ref));
	::testing::internal::GetCapturedStderr();
	EXPECT_EQ(out.return_value, ReturnValue::kUnspecifiedError)
	        << out.error;
	ASSERT_EQ(step, 2);
	ASSERT_EQ(kernel.Snapshot().size(), 1u);
	EXPECT_EQ(kernel.Snapshot()[0].pairs[0].target, "/dev/sdb");
	ASSERT_NE(dir.Read("pipes.json").find("/dev/sdc"), std::string::npos)
	        << "setup: the file should hold the refused modify now";

	::testing::internal::CaptureStderr();
	EXPECT_TRUE(service.RewriteStaleStore().ok());
	::testing::internal::GetCapturedStderr();
	store.SetFaultHookForTest({});
	const std::string file = dir.Read("pipes.json");
	EXPECT_EQ(file.find("/dev/sdc"), std::string::npos) << file;
	EXPECT_NE(file.find("/dev/sdb"), std::string::npos) << file;
	// A start from that file keeps the kernel as the caller was told.
	Store again_store{dir.path()};
	PipeService again{kernel, again_store, probe, HostIdentity{kHost}};
	ASSERT_TRUE(again.Load().ok());
	ASSERT_TRUE(again.Reconcile().ok());
	ASSERT_EQ(kernel.Snapshot().size(), 1u);
	EXPECT_EQ(kernel.Snapshot()[0].pairs[0].target, "/dev/sdb");
}

TEST_F(PipeServiceTest, StoreFailureOnModifyRestoresKernel)
{
	std::string ref = CreateAB();
	kernel.ForcePairState(UuidOf(ref), "replipipe_0/a", PairState::kInSync);
	store.SetFaultHookForTest([](Store::SaveStep) {
		return Status::Error("I/O error", EIO);
	});
	CreateOrModifyCall c = Call({"replipipe_0/a", "replipipe_0/b"},
	                            {"/dev/sdb", "/dev/sdc"},
	                            "instance of CIM_SettingData { Mode = "
	                            "\"Asynchronous\"; };");
	c.replication_pipe = ref;
	ExpectRefused(c, ReturnValue::kUnspecifiedError, "I/O error");
}

// The kernel lost the stored pipe (a module reload the daemon has not
// reconciled yet): undoing a failed modify must not create it there.
TEST_F(PipeServiceTest, StoreFailureOnModifyDoesNotCreateALostPipe)
{
	std::string ref = CreateAB();
	ASSERT_TRUE(kernel.DeletePipe(UuidOf(ref)).ok());
	store.SetFaultHookForTest([](Store::SaveStep) {
		return Status::Error("I/O error", EIO);
	});
	CreateOrModifyCall c = Call({"replipipe_0/a", "replipipe_0/b"},
	                            {"/dev/sdb", "/dev/sdc"});
	c.replication_pipe = ref;
	ExpectRefused(c, ReturnValue::kUnspecifiedError,
	              "I/O error; the kernel change was undone");
	EXPECT_FALSE(kernel.Find(UuidOf(ref)));
	EXPECT_EQ(service.ListPipes().size(), 1u);
}

TEST_F(PipeServiceTest, StoreFailureAfterRenameRestoresFile)
{
	CreateAB("first");
	bool fail = true;
	store.SetFaultHookForTest([&fail](Store::SaveStep step) {
		if (step == Store::SaveStep::kRenamed && fail) {
			fail = false; // only the first save
			return Status::Error("fsync failed", EIO);
		}
		return Status();
	});
	ExpectRefused(Call({"replipipe_0/b"}, {"/dev/sdc"}),
	              ReturnValue::kUnspecifiedError, "fsync failed");
}

// The store fails once the kernel has the pipe, and the undo fails too:
// the create's record stays marked pending-create (not a pipe to callers),
// and the next start rolls it back.
TEST_F(PipeServiceTest, StoreAndUndoFailureSaysSo)
{
	MethodOutcome out = CreateLeftMarked();
	EXPECT_EQ(out.return_value, ReturnValue::kUnspecifiedError);
	EXPECT_NE(out.error.find("kernel and store disagree"),
	          std::string::npos)
	        << out.error;
	ASSERT_EQ(kernel.Snapshot().size(), 1u);
	const std::string uuid = kernel.Snapshot()[0].id;
	EXPECT_TRUE(service.ListPipes().empty());
	// Its endpoints stay taken, and the caller is told why.
	MethodOutcome taken =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {"/dev/sdc"}));
	EXPECT_EQ(taken.return_value, ReturnValue::kInvalidParameter);
	EXPECT_NE(taken.error.find("whose create did not finish"),
	          std::string::npos)
	        << taken.error;

	auto next_start = Restart();
	PipeService &restarted = next_start->service;
	Store &restarted_store = next_start->store;
	auto report = restarted.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	EXPECT_NE(Lines(*report).find("rolled back: deleted from the kernel, "
	                              "removed from the store"),
	          std::string::npos)
	        << Lines(*report);
	EXPECT_FALSE(kernel.Find(uuid));
	EXPECT_TRUE(restarted_store.LoadEntries()->empty());
}

// The same record left marked, while the daemon runs: SettleLeftovers()
// (the periodic refresh's) rolls it back without a restart, trying again
// while the kernel refuses, and the endpoints make a new pipe. Before, the
// pipe and its endpoints stayed taken until the next start.
TEST_F(PipeServiceTest, ACreateLeftMarkedIsRolledBackWhileTheServiceRuns)
{
	MethodOutcome out = CreateLeftMarked();
	ASSERT_EQ(out.return_value, ReturnValue::kUnspecifiedError);
	ASSERT_EQ(kernel.Snapshot().size(), 1u);
	const std::string uuid = kernel.Snapshot()[0].id;

	// The kernel refuses the first try: the record stays, and says so.
	kernel.FailNext(EBUSY, Op::kDeletePipe);
	auto first = service.SettleLeftovers(std::chrono::milliseconds(0));
	ASSERT_EQ(first.size(), 1u);
	EXPECT_EQ(first[0].uuid, uuid);
	EXPECT_FALSE(first[0].done);
	EXPECT_NE(first[0].line.find("its record stays marked, and replipiped "
	                             "tries again"),
	          std::string::npos)
	        << first[0].line;
	EXPECT_TRUE(kernel.Find(uuid));
	EXPECT_EQ(store.LoadEntries()->size(), 1u);

	auto second = service.SettleLeftovers(std::chrono::milliseconds(0));
	ASSERT_EQ(second.size(), 1u);
	EXPECT_TRUE(second[0].done);
	EXPECT_NE(second[0].line.find("rolled back: deleted from the kernel, "
	                              "removed from the store"),
	          std::string::npos)
	        << second[0].line;
	EXPECT_FALSE(kernel.Find(uuid));
	EXPECT_TRUE(store.LoadEntries()->empty());
	// Nothing left to settle, and the endpoints are free.
	EXPECT_TRUE(
	        service.SettleLeftovers(std::chrono::milliseconds(0)).empty());
	MethodOutcome again =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {"/dev/sdb"}));
	EXPECT_EQ(again.return_value, ReturnValue::kCompleted) << again.error;
}

// Anything the store throws after the kernel change is an error like the
// others: the kernel change is undone, nothing escapes the call.
TEST_F(PipeServiceTest, StoreThatThrowsLeavesTheKernelUnchanged)
{
	std::string ref = CreateAB("first");
	// From the kernel change on, until the undo of a create.
	std::atomic<bool> throwing{false};
	kernel.SetEntryHook([&](Op op) {
		if (op == Op::kSetPipe)
			throwing = true;
		if (op == Op::kDeletePipe)
			throwing = false;
	});
	store.SetFaultHookForTest([&](Store::SaveStep) -> Status {
		if (throwing)
			throw std::runtime_error("serialization blew up");
		return Status();
	});
	const std::string before = World();
	MethodOutcome out;
	ASSERT_NO_THROW(out = service.CreateOrModify(
	                        Call({"replipipe_0/b"}, {"/dev/sdc"})));
	EXPECT_EQ(out.return_value, ReturnValue::kUnspecifiedError);
	EXPECT_NE(out.error.find("serialization blew up"), std::string::npos)
	        << out.error;
	EXPECT_NE(out.error.find("the kernel change was undone"),
	          std::string::npos)
	        << out.error;
	EXPECT_EQ(kernel.Snapshot().size(), 1u);

	CreateOrModifyCall modify = Call(
	        {"replipipe_0/a"}, {"/dev/sdb"},
	        "instance of CIM_SettingData { Mode = \"Asynchronous\"; };");
	modify.replication_pipe = ref;
	ASSERT_NO_THROW(out = service.CreateOrModify(modify));
	EXPECT_EQ(out.return_value, ReturnValue::kUnspecifiedError);
	EXPECT_EQ(kernel.Find(UuidOf(ref))->mode, Mode::kSynchronous);
	EXPECT_EQ(World(), before);
	EXPECT_EQ(service.ListPipes().size(), 1u);
}

TEST_F(PipeServiceTest, NotLoadedIsUnspecified)
{
	TempDir other;
	Store s(other.path());
	PipeService fresh(kernel, s, probe, HostIdentity{kHost});
	EXPECT_EQ(fresh.CreateOrModify(Call({}, {})).return_value,
	          ReturnValue::kUnspecifiedError);
	EXPECT_EQ(fresh.Delete("x").return_value,
	          ReturnValue::kUnspecifiedError);
}

TEST_F(PipeServiceTest, CorruptStoreFailsLoad)
{
	TempDir other;
	other.Write("pipes.json", "{ nope");
	Store s(other.path());
	PipeService fresh(kernel, s, probe, HostIdentity{kHost});
	Status st = fresh.Load();
	EXPECT_FALSE(st.ok());
	EXPECT_NE(st.message().find("pipes.json"), std::string::npos);
}

// --- intent journal (decision 48) -----------------------------------------

// A store file removed or moved away loads as a first start's; the kernel's
// pipes are then all unknown, which the start says plainly, once.
TEST_F(PipeServiceTest, AnEmptyStoreBesideKernelPipesIsReported)
{
	CreateAB("db");
	ASSERT_EQ(::unlink((dir.path() + "/pipes.json").c_str()), 0);
	auto next_start = Restart();
	auto report = next_start->service.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	const std::string all = Lines(*report);
	EXPECT_NE(all.find("is not in the store; left untouched"),
	          std::string::npos)
	        << all;
	EXPECT_NE(all.find("the store " + dir.path() +
	                   "/pipes.json holds no pipe, but the kernel "
	                   "mirrors 1: if that file was removed"),
	          std::string::npos)
	        << all;
	EXPECT_EQ(report->size(), 2u) << all;
	EXPECT_EQ(kernel.Snapshot().size(), 1u) << "the kernel pipe stays";

	// With a store that holds pipes, an unknown kernel pipe is only
	// itself.
	next_start->service.CreateOrModify(
	        Call({"replipipe_0/c"}, {"/dev/sdd"}));
	auto again = Restart();
	report = again->service.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	EXPECT_EQ(Lines(*report).find("holds no pipe"), std::string::npos)
	        << Lines(*report);
}

// A daemon killed after the kernel applied a create's PIPE_SET, before the
// store said so: the next start rolls the create back (the caller never got
// 0). Before, the kernel kept a pipe that no store knew: not listed, not
// deletable, its endpoints held, "left untouched" at every start.
TEST_F(PipeServiceTest, ACreateCutShortByACrashIsRolledBackAtTheNextStart)
{
	CreateAB("kept");
	kernel.SetApplyHook(
	        [](const KernelPipeSpec &) { throw DaemonKilled(); });
	EXPECT_THROW(
	        service.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdc"})),
	        DaemonKilled);
	kernel.SetApplyHook(nullptr);
	std::string uuid;
	for (const KernelPipeStatus &k : kernel.Snapshot())
		if (k.name == "db")
			uuid = k.id;
	ASSERT_FALSE(uuid.empty()) << "the kernel did not apply the create";

	// The next start: a new store and service on the same directory and
	// the same kernel, which still has the pipe.
	auto next_start = Restart();
	PipeService &restarted = next_start->service;
	EXPECT_EQ(restarted.ListPipes().size(), 1u);
	EXPECT_FALSE(restarted.ResolvePipe(PipeReference(uuid)).ok());
	auto report = restarted.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	const std::string all = Lines(*report);
	EXPECT_NE(all.find("pipe " + PipeReference(uuid) +
	                   " (\"db\"): its create did not finish (no caller "
	                   "was told it succeeded); rolled back: deleted "
	                   "from the kernel, removed from the store"),
	          std::string::npos)
	        << all;
	EXPECT_NE(all.find("adopted from the kernel"), std::string::npos)
	        << all;
	EXPECT_EQ(report->size(), 2u) << all;

	EXPECT_FALSE(kernel.Find(uuid)) << "the kernel still has the pipe";
	auto entries = Store(dir.path()).LoadEntries();
	ASSERT_TRUE(entries.ok()) << entries.status().message();
	ASSERT_EQ(entries->size(), 1u);
	EXPECT_EQ((*entries)[0].record.name, "kept");
	EXPECT_EQ((*entries)[0].pending, PendingOp::kNone);
	// Its endpoints are free again.
	MethodOutcome again =
	        restarted.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdc"}));
	EXPECT_EQ(again.return_value, ReturnValue::kCompleted) << again.error;
	EXPECT_EQ(restarted.ListPipes().size(), 2u);
}

// A daemon killed after a delete wrote the store, before its PIPE_DEL:
// the next start finishes the delete. Before, the store no longer had the
// pipe and the kernel kept it, out of every tool's reach.
TEST_F(PipeServiceTest, ADeleteCutShortByACrashIsFinishedAtTheNextStart)
{
	CreateAB("kept");
	MethodOutcome made =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdc"}));
	ASSERT_EQ(made.return_value, ReturnValue::kCompleted) << made.error;
	const std::string uuid = UuidOf(made.replication_pipe);
	kernel.SetEntryHook([](Op op) {
		if (op == Op::kDeletePipe)
			throw DaemonKilled();
	});
	EXPECT_THROW(service.Delete(made.replication_pipe), DaemonKilled);
	kernel.SetEntryHook(nullptr);
	ASSERT_TRUE(kernel.Find(uuid));

	auto next_start = Restart();
	PipeService &restarted = next_start->service;
	EXPECT_EQ(restarted.ListPipes().size(), 1u);
	EXPECT_FALSE(restarted.ResolvePipe("db").ok());
	auto report = restarted.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	const std::string all = Lines(*report);
	EXPECT_NE(all.find("pipe " + PipeReference(uuid) +
	                   " (\"db\"): its delete did not finish; finished: "
	                   "deleted from the kernel, removed from the store"),
	          std::string::npos)
	        << all;
	EXPECT_EQ(report->size(), 2u) << all;

	EXPECT_FALSE(kernel.Find(uuid)) << "the kernel still has the pipe";
	auto entries = Store(dir.path()).LoadEntries();
	ASSERT_TRUE(entries.ok()) << entries.status().message();
	ASSERT_EQ(entries->size(), 1u);
	EXPECT_EQ((*entries)[0].record.name, "kept");
	MethodOutcome again =
	        restarted.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdc"}));
	EXPECT_EQ(again.return_value, ReturnValue::kCompleted) << again.error;
}

// A record marked pending a start finds but the kernel lacks (killed
// before the PIPE_SET, or after the PIPE_DEL) only leaves the store. The
// kernel is asked (one PIPE_DEL, ENOENT), not a listing made before the
// records were looked at: a call that ended in between may have left
// its pipe there.
TEST_F(PipeServiceTest, APendingRecordTheKernelLacksOnlyLeavesTheStore)
{
	CreateAB("kept");
	kernel.SetEntryHook([](Op op) {
		if (op == Op::kSetPipe)
			throw DaemonKilled();
	});
	EXPECT_THROW(
	        service.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdc"})),
	        DaemonKilled);
	kernel.SetEntryHook(nullptr);
	auto next_start = Restart();
	PipeService &restarted = next_start->service;
	Store &restarted_store = next_start->store;
	const int deletes = kernel.calls(Op::kDeletePipe);
	auto report = restarted.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	EXPECT_NE(Lines(*report).find("rolled back: not in the kernel, "
	                              "removed from the store"),
	          std::string::npos)
	        << Lines(*report);
	EXPECT_EQ(kernel.calls(Op::kDeletePipe), deletes + 1);
	EXPECT_EQ(kernel.Snapshot().size(), 1u); // "kept" is still there
	EXPECT_EQ(restarted_store.LoadEntries()->size(), 1u);
}

// While a create or a delete is in flight its record is in the file marked
// pending, and is no pipe to callers: not listed, not resolved.
TEST_F(PipeServiceTest, APipeInFlightIsJournaledButNotListed)
{
	std::string file;
	size_t listed = 99;
	bool resolved = true;
	kernel.SetEntryHook([&](Op op) {
		if (op != Op::kSetPipe && op != Op::kDeletePipe)
			return;
		file = dir.Read("pipes.json");
		listed =
		        service.ListPipes().size() + service.Describe()->size();
		resolved = service.ResolvePipe("db").ok();
	});
	const std::string ref = CreateAB();
	EXPECT_NE(file.find(UuidOf(ref)), std::string::npos) << file;
	EXPECT_NE(file.find("\"pending\": \"create\""), std::string::npos)
	        << file;
	EXPECT_EQ(listed, 0u);
	EXPECT_FALSE(resolved);
	EXPECT_EQ(dir.Read("pipes.json").find("pending"), std::string::npos);

	EXPECT_EQ(service.Delete(ref).return_value, ReturnValue::kCompleted);
	kernel.SetEntryHook(nullptr);
	EXPECT_NE(file.find("\"pending\": \"delete\""), std::string::npos)
	        << file;
	EXPECT_EQ(listed, 0u);
	EXPECT_FALSE(resolved);
	EXPECT_EQ(dir.Read("pipes.json").find(UuidOf(ref)), std::string::npos);
}

// --- 3: timeout ---------------------------------------------------------

TEST_F(PipeServiceTest, KernelTimeout)
{
	kernel.FailNext(ETIMEDOUT, Op::kSetPipe);
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"}),
	              ReturnValue::kTimeout, "kernel: no answer");
}

TEST_F(PipeServiceTest, KernelTimeoutAfterApplyIsUndone)
{
	std::string ref = CreateAB();
	kernel.FailNextAfterApply(ETIMEDOUT);
	CreateOrModifyCall c = Call({"replipipe_0/b"}, {"/dev/sdc"});
	c.replication_pipe = ref;
	ExpectRefused(c, ReturnValue::kTimeout, "answer came too late");

	kernel.FailNextAfterApply(ETIMEDOUT);
	ExpectRefused(Call({"replipipe_0/c"}, {"/dev/sdd"}),
	              ReturnValue::kTimeout, "too late");
}

TEST_F(PipeServiceTest, DeleteKernelTimeout)
{
	std::string ref = CreateAB();
	kernel.FailNext(ETIMEDOUT, Op::kDeletePipe);
	std::string before = World();
	MethodOutcome out = service.Delete(ref);
	EXPECT_EQ(out.return_value, ReturnValue::kTimeout) << out.error;
	EXPECT_EQ(World(), before);
}

// A PIPE_DEL whose answer never came, and the PIPE_GET that asks whether
// it was applied fails too: the kernel may have deleted the pipe. Before,
// the store got the pipe back, unmarked, and the next refresh pushed it
// again as a pipe the kernel lacks, every pair resynced in full: the
// pipe the caller deleted came back. Now it stays marked for deletion and
// the daemon finishes the delete (SettleLeftovers()).
TEST_F(PipeServiceTest, ADeleteWhoseOutcomeTheKernelCannotTellIsFinished)
{
	std::string ref = CreateAB();
	const std::string uuid = UuidOf(ref);
	kernel.SetEntryHook([&](Op op) {
		if (op == Op::kDeletePipe) {
			kernel.SetEntryHook(nullptr);
			ASSERT_TRUE(kernel.DeletePipe(uuid).ok()); // applied
			kernel.FailNext(ETIMEDOUT, Op::kDeletePipe);
			kernel.FailNext(ETIMEDOUT, Op::kGetPipe);
		}
	});
	MethodOutcome out = service.Delete(ref);
	kernel.SetEntryHook(nullptr);
	EXPECT_EQ(out.return_value, ReturnValue::kTimeout) << out.error;
	EXPECT_NE(out.error.find("asking it whether the pipe is gone failed "
	                         "too"),
	          std::string::npos)
	        << out.error;
	EXPECT_NE(out.error.find("the pipe stays marked for deletion, and "
	                         "the daemon finishes the delete"),
	          std::string::npos)
	        << out.error;
	EXPECT_TRUE(service.ListPipes().empty())
	        << "the deleted pipe is back in the store";
	EXPECT_TRUE(service.HasLeftovers());
	EXPECT_FALSE(kernel.Find(uuid));

	auto settled = service.SettleLeftovers(std::chrono::milliseconds(0));
	ASSERT_EQ(settled.size(), 1u);
	EXPECT_TRUE(settled[0].done) << settled[0].line;
	EXPECT_FALSE(service.HasLeftovers());
	auto entries = Store(dir.path()).LoadEntries();
	ASSERT_TRUE(entries.ok()) << entries.status().message();
	EXPECT_TRUE(entries->empty());
	EXPECT_FALSE(kernel.Find(uuid));
}

// A PIPE_DEL that times out but that the kernel applies all the same (a
// departing pair's flush takes up to 5 s) deleted the pipe: asked again,
// the kernel no longer has it. Meanwhile the pipe's endpoints stay
// reserved: a create that wants its source waits for the delete, then gets
// it. Before, the delete put the pipe back in the store (returning 3) and a
// create could take its source in between: the store then held two pipes
// with one source and no longer loaded (replipiped would not start).
TEST_F(PipeServiceTest, ADeleteTheKernelAppliesAfterItsTimeoutIsDone)
{
	std::string ref = CreateAB();
	const std::string uuid = UuidOf(ref);
	bool fired = false; // the deleting thread only
	std::thread other_call;
	MethodOutcome other;
	kernel.SetEntryHook([&](Op op) {
		if (op != Op::kDeletePipe || fired)
			return;
		fired = true;
		ASSERT_TRUE(kernel.DeletePipe(uuid).ok()); // applied, late
		kernel.FailNext(ETIMEDOUT, Op::kDeletePipe);
		other_call = std::thread([&] {
			other = service.CreateOrModify(
			        Call({"replipipe_0/a"}, {"/dev/sdc"}));
		});
	});
	MethodOutcome out = service.Delete(ref);
	if (other_call.joinable())
		other_call.join();
	kernel.SetEntryHook(nullptr);
	EXPECT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	EXPECT_EQ(other.return_value, ReturnValue::kCompleted) << other.error;
	EXPECT_FALSE(kernel.Find(uuid).has_value());
	Store reread(dir.path());
	auto stored = reread.Load();
	ASSERT_TRUE(stored.ok()) << stored.status().message();
	ASSERT_EQ(stored->size(), 1u);
	EXPECT_NE((*stored)[0].instance_id, uuid);
}

// --- 4: failed ---------------------------------------------------------

TEST_F(PipeServiceTest, KernelRefuses)
{
	kernel.FailNext(EPERM, Op::kSetPipe,
	                "Operation not permitted (CAP_NET_ADMIN)");
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"}),
	              ReturnValue::kFailed, "kernel: Operation not permitted");
}

TEST_F(PipeServiceTest, KernelRefusesBackstoreOfUnknownPipe)
{
	// A pipe only the kernel knows holds replipipe_0/a.
	KernelPipeSpec foreign;
	foreign.id = "99999999-9999-4999-8999-999999999999";
	foreign.pairs.push_back({"replipipe_0/a", "/dev/sde", false});
	ASSERT_TRUE(kernel.SetPipe(foreign).ok());
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"}),
	              ReturnValue::kFailed, "is in pipe");
}

TEST_F(PipeServiceTest, PeerVerificationFails)
{
	probe.AddDevice("/dev/small", kGiB);
	probe.AddDevice("/dev/file", 10 * kGiB, false);
	probe.AddBackstore("replipipe_1/off", "/dev/vg/off", kGiB, false);
	probe.AddDevice("/dev/busy", 10 * kGiB);
	probe.SetOpenError("/dev/busy", EBUSY);
	struct {
		const char *source, *target, *what;
	} cases[] = {
	        {"replipipe_0/a", "/dev/small", "smaller than"},
	        {"replipipe_0/a", "/dev/file", "not a block device"},
	        {"replipipe_0/a", "/dev/missing", "does not exist"},
	        {"replipipe_0/zz", "/dev/sdb", "does not exist in configfs"},
	        {"replipipe_1/off", "/dev/sdb", "not enabled"},
	        {"replipipe_0/a", "/dev/busy", "in use"},
	};
	for (const auto &c : cases)
		ExpectRefused(Call({c.source}, {c.target}),
		              ReturnValue::kFailed,
		              std::string("peer verification failed: ") +
		                      "pair " + c.source + " -> " + c.target);
	for (const auto &c : cases)
		ExpectRefused(Call({c.source}, {c.target}),
		              ReturnValue::kFailed, c.what);
	EXPECT_EQ(kernel.calls(Op::kSetPipe), 0);
}

TEST_F(PipeServiceTest, OnlyNewPairsAreVerified)
{
	std::string ref = CreateAB();
	// The kernel now holds sdb; verifying it again would say "in use".
	probe.SetOpenError("/dev/sdb", EBUSY);
	CreateOrModifyCall c = Call({"replipipe_0/a", "replipipe_0/b"},
	                            {"/dev/sdb", "/dev/sdc"});
	c.replication_pipe = ref;
	EXPECT_EQ(service.CreateOrModify(c).return_value,
	          ReturnValue::kCompleted);
}

// The kernel holds the targets of the pipe's pairs until a PIPE_SET
// replaces them, so the exclusive open of the pre-check must not count a
// target the pipe's own pairs hold as "in use". replipipe.ko itself opens
// a new pair's target before it releases the pair it replaces: moving a
// target to another pair is refused by the kernel (4), and the error says
// why and what to do instead. A kept pair's target given under another path
// is that pair, kept (its stored path stays).
TEST_F(PipeServiceTest, ModifyMovingTargetsBetweenPairs)
{
	probe.AddAlias("/dev/disk/by-id/wwn-sdb", "/dev/sdb");
	MethodOutcome made = service.CreateOrModify(
	        Call({"replipipe_0/a", "replipipe_0/b", "replipipe_0/c"},
	             {"/dev/sdb", "/dev/sdc", "/dev/sdd"}));
	ASSERT_EQ(made.return_value, ReturnValue::kCompleted) << made.error;
	const std::string ref = made.replication_pipe;
	for (const char *s :
	     {"replipipe_0/a", "replipipe_0/b", "replipipe_0/c"})
		kernel.ForcePairState(UuidOf(ref), s, PairState::kInSync);
	auto modify = [&](std::vector<std::string> sources,
	                  std::vector<std::string> targets) {
		CreateOrModifyCall c =
		        Call(std::move(sources), std::move(targets));
		c.replication_pipe = ref;
		return c;
	};
	const std::string why = "one call cannot move a target to another "
	                        "pair";
	struct {
		CreateOrModifyCall call;
		std::string what;
	} cases[] = {
	        // a and b swap their targets
	        {modify({"replipipe_0/a", "replipipe_0/b", "replipipe_0/c"},
	                {"/dev/sdc", "/dev/sdb", "/dev/sdd"}),
	         "/dev/sdc is the target of the pair replipipe_0/b -> "
	         "/dev/sdc that this call replaces"},
	        // b goes, its target to the new source d
	        {modify({"replipipe_0/a", "replipipe_0/c", "replipipe_0/d"},
	                {"/dev/sdb", "/dev/sdd", "/dev/sdc"}),
	         "/dev/sdc is the target of the pair replipipe_0/b -> "
	         "/dev/sdc"},
	};
	for (const auto &c : cases) {
		const int sets = kernel.calls(Op::kSetPipe);
		// Refused by the kernel, not by the pre-check's open.
		ExpectRefused(c.call, ReturnValue::kFailed,
		              "kernel: target is already the target of a pair");
		ExpectRefused(c.call, ReturnValue::kFailed, c.what);
		ExpectRefused(c.call, ReturnValue::kFailed, why);
		EXPECT_EQ(kernel.calls(Op::kSetPipe), sets + 3);
	}

	// a keeps its target, spelled through a symlink: kept, still InSync.
	{
		const MethodOutcome kept = service.CreateOrModify(modify(
		        {"replipipe_0/a", "replipipe_0/b", "replipipe_0/c"},
		        {"/dev/disk/by-id/wwn-sdb", "/dev/sdc", "/dev/sdd"}));
		ASSERT_EQ(kept.return_value, ReturnValue::kCompleted)
		        << kept.error;
		auto k = kernel.Find(UuidOf(ref));
		ASSERT_TRUE(k);
		for (const auto &p : k->pairs) {
			EXPECT_EQ(p.state, PairState::kInSync) << p.source;
			if (p.source == "replipipe_0/a") {
				EXPECT_EQ(p.target, "/dev/sdb");
			}
		}
		auto stored = service.GetPipe(ref);
		ASSERT_TRUE(stored.ok());
		EXPECT_EQ(stored->pairs[0].target, "/dev/sdb");
	}

	// A device something else holds is still "in use", before the kernel.
	probe.SetOpenError("/dev/sde", EBUSY);
	const int sets = kernel.calls(Op::kSetPipe);
	ExpectRefused(modify({"replipipe_0/a", "replipipe_0/b", "replipipe_0/c",
	                      "replipipe_0/d"},
	                     {"/dev/sdb", "/dev/sdc", "/dev/sdd", "/dev/sde"}),
	              ReturnValue::kFailed, "/dev/sde is in use");
	EXPECT_EQ(kernel.calls(Op::kSetPipe), sets);

	// A kernel that released the replaced pairs' targets first would take
	// the swap: the moved pairs start a resync, c stays as it was.
	kernel.SetTargetsMoveWithinPipe(true);
	MethodOutcome out = service.CreateOrModify(
	        modify({"replipipe_0/a", "replipipe_0/b", "replipipe_0/c"},
	               {"/dev/sdc", "/dev/sdb", "/dev/sdd"}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	auto k = kernel.Find(UuidOf(ref));
	ASSERT_TRUE(k);
	ASSERT_EQ(k->pairs.size(), 3u);
	for (const KernelPairStatus &p : k->pairs) {
		if (p.source == "replipipe_0/a") {
			EXPECT_EQ(p.target, "/dev/sdc");
		} else if (p.source == "replipipe_0/b") {
			EXPECT_EQ(p.target, "/dev/sdb");
		}
		EXPECT_EQ(p.state, p.source == "replipipe_0/c"
		                           ? PairState::kInSync
		                           : PairState::kSyncing)
		        << p.source;
	}
}

TEST_F(PipeServiceTest, DeleteKernelRefusesRestoresStore)
{
	std::string ref = CreateAB();
	kernel.FailNext(EPERM, Op::kDeletePipe);
	std::string before = World();
	MethodOutcome out = service.Delete(ref);
	EXPECT_EQ(out.return_value, ReturnValue::kFailed);
	EXPECT_EQ(World(), before);
	EXPECT_EQ(service.ListPipes().size(), 1u);
}

// A delete the kernel refused puts the pipe back where it was: `list` and
// the store keep their order.
TEST_F(PipeServiceTest, DeleteKernelRefusesKeepsTheOrderOfPipes)
{
	std::vector<std::string> refs;
	const char *sources[] = {"replipipe_0/a", "replipipe_0/b",
	                         "replipipe_0/c"};
	const char *targets[] = {"/dev/sdb", "/dev/sdc", "/dev/sdd"};
	for (int i = 0; i < 3; i++) {
		CreateOrModifyCall c = Call({sources[i]}, {targets[i]});
		c.pipe_element_name = "db" + std::to_string(i);
		MethodOutcome out = service.CreateOrModify(c);
		ASSERT_EQ(out.return_value, ReturnValue::kCompleted)
		        << out.error;
		refs.push_back(out.replication_pipe);
	}
	auto names = [&] {
		std::string out;
		for (const PipeRecord &p : service.ListPipes())
			out += p.name + " ";
		return out;
	};
	ASSERT_EQ(names(), "db0 db1 db2 ");
	const std::string before = World();
	kernel.FailNext(EPERM, Op::kDeletePipe);
	EXPECT_EQ(service.Delete(refs[0]).return_value, ReturnValue::kFailed);
	EXPECT_EQ(names(), "db0 db1 db2 ");
	EXPECT_EQ(World(), before);
}

// The kernel refuses the delete and the store cannot take the pipe back:
// the caller is told, the record stays marked pending-delete (no pipe to
// callers any more), and the next start finishes the delete.
TEST_F(PipeServiceTest, DeleteKernelAndStoreRefuseLeavesItForTheNextStart)
{
	std::string ref = CreateAB();
	std::atomic<bool> failing{false};
	kernel.SetEntryHook([&](Op op) {
		if (op == Op::kDeletePipe)
			failing = true;
	});
	store.SetFaultHookForTest([&](Store::SaveStep) {
		return failing ? Status::Error("disk full", ENOSPC) : Status();
	});
	kernel.FailNext(EPERM, Op::kDeletePipe);
	MethodOutcome out = service.Delete(ref);
	kernel.SetEntryHook(nullptr);
	EXPECT_EQ(out.return_value, ReturnValue::kFailed);
	EXPECT_NE(out.error.find("restoring the store failed too (disk "
	                         "full): the pipe stays marked for deletion, "
	                         "and the daemon finishes the delete"),
	          std::string::npos)
	        << out.error;
	EXPECT_TRUE(service.ListPipes().empty());
	ASSERT_TRUE(kernel.Find(UuidOf(ref)));

	auto next_start = Restart();
	PipeService &restarted = next_start->service;
	Store &restarted_store = next_start->store;
	auto report = restarted.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	EXPECT_NE(Lines(*report).find("its delete did not finish; finished: "
	                              "deleted from the kernel"),
	          std::string::npos)
	        << Lines(*report);
	EXPECT_FALSE(kernel.Find(UuidOf(ref)));
	EXPECT_TRUE(restarted_store.LoadEntries()->empty());
}

// --- 5: invalid parameter ----------------------------------------------

TEST_F(PipeServiceTest, InvalidParameters)
{
	const ReturnValue k5 = ReturnValue::kInvalidParameter;
	CreateOrModifyCall c = Call({"replipipe_0/a"}, {"/dev/sdb"});

	c.replication_pipe = "CIM_NetworkPipe.InstanceID=\"replipipe:x";
	ExpectRefused(c, k5, "unterminated string");
	c.replication_pipe = "CIM_NetworkPipe.InstanceID=\"other:1\"";
	ExpectRefused(c, k5, "is not a replipipe pipe");
	c.replication_pipe = "CIM_NetworkPipe.InstanceID=\"replipipe:"
	                     "12345678-1234-4234-8234-123456789abc\"";
	ExpectRefused(c, k5, "no pipe");
	c.replication_pipe = "no-such-name";
	ExpectRefused(c, k5, "no pipe named \"no-such-name\"");

	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"},
	                   "instance of CIM_SettingData { Mode = ; };"),
	              k5, "Goal: column 38: expected a value");
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"},
	                   "instance of CIM_SettingData { Speed = 1; };"),
	              k5, "unknown property Speed");
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"},
	                   "instance of CIM_Other { };"),
	              k5, "class CIM_Other");
	ExpectRefused(Call({"replipipe_0/a", "replipipe_0/b"}, {"/dev/sdb"}),
	              k5, "same length");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.target_endpoints.reset();
	ExpectRefused(c, k5, "TargetEndpoint NULL");
	ExpectRefused(Call({"replipipe_0/a", "replipipe_0/a"},
	                   {"/dev/sdb", "/dev/sdc"}),
	              k5, "SourceEndpoint replipipe_0/a is given twice");
	ExpectRefused(Call({"replipipe_0/a", "replipipe_0/b"},
	                   {"/dev/sdb", "/dev//sdb"}),
	              k5, "TargetEndpoint /dev/sdb is given twice");
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/vg/a"}), k5,
	              "source = target");
	ExpectRefused(Call({"iblock_0/a"}, {"/dev/sdb"}), k5,
	              "not a replipipe backstore");
	ExpectRefused(Call({"replipipe_0/a"}, {"sdb"}), k5,
	              "not an absolute device path");
	ExpectRefused(Call({"CIM_ProtocolEndpoint.Name=\"replipipe_0/a\","
	                    "SystemName=\"node9\""},
	                   {"/dev/sdb"}),
	              k5, "not this host");
	ExpectRefused(Call({"replipipe_0/a"},
	                   {"CIM_ProtocolEndpoint.Name=\"/dev/sdb\","
	                    "SystemName=\"node9\""}),
	              k5, "not on TargetSystem node2");

	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.source_system = "node9";
	ExpectRefused(c, k5, "SourceSystem \"node9\" is not this host");
	c.source_system = "";
	ExpectRefused(c, k5, "SourceSystem is required");
	c.source_system = "CIM_ComputerSystem.Name=";
	ExpectRefused(c, k5, "SourceSystem: object path: column 25");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.target_system = "bad name";
	ExpectRefused(c, k5, "TargetSystem: \"bad name\" is not a host name");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.pipe_element_name = std::string(256, 'n');
	ExpectRefused(c, k5, "PipeElementName is longer than 255");
	// A \x escape of a UTF-16 surrogate would reach the store as bytes
	// that are not UTF-8.
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb"},
	                   "instance of CIM_SettingData { ElementName = "
	                   "\"\\xD800\"; };"),
	              k5, "surrogates (D800 to DFFF)");
	EXPECT_EQ(kernel.calls(Op::kSetPipe), 0);
}

// A target that is the source's own LUN through this host's LIO
// (tcm_loop here) is "source = target" (docs/decisions.md, 33): 5, and
// neither the kernel nor the store changes. A modify that adds it to a
// pipe with another pair keeps that pair.
TEST_F(PipeServiceTest, SourcesOwnLunAsTargetIsInvalid)
{
	const ReturnValue k5 = ReturnValue::kInvalidParameter;
	probe.SetLocalLioLuns(
	        "/dev/sdc",
	        {{"sdc", "2:0:1:0", "tcm_loop naa.5001405aa/tpgt_1 LUN 0",
	          "replipipe_0/a", "/dev/vg/a"}});
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdc"}), k5,
	              "target /dev/sdc is tcm_loop naa.5001405aa/tpgt_1 LUN 0 "
	              "of this host (disk sdc at SCSI 2:0:1:0), which exports "
	              "replipipe_0/a itself");
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdb"}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	CreateOrModifyCall add = Call({"replipipe_0/b", "replipipe_0/a"},
	                              {"/dev/sdb", "/dev/sdc"});
	add.replication_pipe = out.replication_pipe;
	ExpectRefused(add, k5, "(source = target)");
	// Its LUN is a fine target for another source.
	EXPECT_EQ(service.CreateOrModify(Call({"replipipe_0/c"}, {"/dev/sdc"}))
	                  .return_value,
	          ReturnValue::kCompleted);
}

// stat() and the kernel read C strings: with an embedded NUL they would see
// "/dev/sdb" while the store keeps "/dev/sdb\0x" (and the resync jobs never
// match the pair). NUL and every other control character are refused in
// every string parameter; the Goal may hold tabs and line breaks.
TEST_F(PipeServiceTest, ControlCharactersInStringParametersAreInvalid)
{
	const ReturnValue k5 = ReturnValue::kInvalidParameter;
	using namespace std::string_literals;
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdb\0x"s}), k5,
	              "TargetEndpoint[0] contains the control character 0x00 "
	              "(byte 8)");
	ExpectRefused(Call({"replipipe_0/a", "replipipe_0/b"},
	                   {"/dev/sdb", "/dev/sdc\n"}),
	              k5,
	              "TargetEndpoint[1] contains the control character 0x0a");
	ExpectRefused(Call({"replipipe_0/a\x01"}, {"/dev/sdb"}), k5,
	              "SourceEndpoint[0] contains the control character 0x01");
	CreateOrModifyCall c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.pipe_element_name = "db\x7f";
	ExpectRefused(c, k5,
	              "PipeElementName contains the control character 0x7f");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.source_system = std::string(kHost) + "\0"s;
	ExpectRefused(c, k5,
	              "SourceSystem contains the control character 0x00");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.target_system = "node2\t";
	ExpectRefused(c, k5,
	              "TargetSystem contains the control character 0x09");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"},
	         "instance of CIM_SettingData { };\0"s);
	ExpectRefused(c, k5, "Goal contains the control character 0x00");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.replication_pipe = "db\x1b";
	ExpectRefused(c, k5, "ReplicationPipe contains the control character");
	c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.pipe_element_name = "db\xff";
	ExpectRefused(c, k5, "PipeElementName is not valid UTF-8 (byte 2)");
	EXPECT_EQ(kernel.calls(Op::kSetPipe), 0);

	// MOF blanks in the Goal, and UTF-8 in a name, are fine.
	c = Call({"replipipe_0/a"}, {"/dev/sdb"},
	         "instance of CIM_SettingData {\r\n\tMode = \"Asynchronous\";\f"
	         "\v};\n");
	c.pipe_element_name = "r\xc3\xa9plique";
	EXPECT_EQ(service.CreateOrModify(c).return_value,
	          ReturnValue::kCompleted);
}

TEST_F(PipeServiceTest, EndpointsReusedAcrossPipes)
{
	CreateAB();
	ExpectRefused(Call({"replipipe_0/a"}, {"/dev/sdc"}),
	              ReturnValue::kInvalidParameter,
	              "SourceEndpoint replipipe_0/a already belongs to pipe");
	ExpectRefused(Call({"replipipe_0/b"}, {"/dev/sdb"}),
	              ReturnValue::kInvalidParameter,
	              "TargetEndpoint /dev/sdb is already the target of "
	              "replipipe_0/a");
}

// Endpoints are compared by device, not by path: a symlink (or another
// spelling) of another pair's target or of a backstore's primary is a
// reused endpoint, 5, not a target "in use", 4.
TEST_F(PipeServiceTest, EndpointReusedUnderAnotherPathIsInvalid)
{
	const ReturnValue k5 = ReturnValue::kInvalidParameter;
	probe.AddAlias("/dev/disk/by-id/wwn-sdb", "/dev/sdb");
	probe.AddAlias("/dev/disk/by-id/wwn-sdd", "/dev/sdd");
	probe.AddAlias("/dev/mapper/vg-a", "/dev/vg/a");
	probe.AddAlias("/dev/mapper/vg-b", "/dev/vg/b");
	CreateAB(); // replipipe_0/a -> /dev/sdb
	const int sets = kernel.calls(Op::kSetPipe);

	// Another pipe's target.
	ExpectRefused(Call({"replipipe_0/b"}, {"/dev/disk/by-id/wwn-sdb"}), k5,
	              "TargetEndpoint /dev/disk/by-id/wwn-sdb is already the "
	              "target of replipipe_0/a (as /dev/sdb) in pipe");
	// Another pipe's primary device, by its own path or another one.
	ExpectRefused(Call({"replipipe_0/b"}, {"/dev/vg/a"}), k5,
	              "TargetEndpoint /dev/vg/a is the primary device of "
	              "replipipe_0/a in pipe");
	ExpectRefused(Call({"replipipe_0/b"}, {"/dev/mapper/vg-a"}), k5,
	              "TargetEndpoint /dev/mapper/vg-a is the primary device "
	              "of replipipe_0/a in pipe");
	// One device twice in one call.
	ExpectRefused(Call({"replipipe_0/b", "replipipe_0/c"},
	                   {"/dev/sdd", "/dev/disk/by-id/wwn-sdd"}),
	              k5,
	              "TargetEndpoint /dev/disk/by-id/wwn-sdd is given twice "
	              "(as /dev/sdd)");
	// The primary of another source of the same call.
	ExpectRefused(Call({"replipipe_0/b", "replipipe_0/c"},
	                   {"/dev/sdd", "/dev/mapper/vg-b"}),
	              k5,
	              "TargetEndpoint /dev/mapper/vg-b is the primary device "
	              "of SourceEndpoint replipipe_0/b");
	// A modify of the pipe itself: its kept pair's target under another
	// name for a second pair.
	CreateOrModifyCall c = Call({"replipipe_0/a", "replipipe_0/b"},
	                            {"/dev/sdb", "/dev/disk/by-id/wwn-sdb"});
	c.replication_pipe = service.ListPipes()[0].instance_id;
	ExpectRefused(c, k5,
	              "TargetEndpoint /dev/disk/by-id/wwn-sdb is given twice "
	              "(as /dev/sdb)");
	EXPECT_EQ(kernel.calls(Op::kSetPipe), sets);
}

TEST_F(PipeServiceTest, SystemsCannotChange)
{
	std::string ref = CreateAB();
	CreateOrModifyCall c;
	c.replication_pipe = ref;
	c.target_system = "node3";
	ExpectRefused(c, ReturnValue::kInvalidParameter,
	              "systems of an existing pipe cannot change");
	c.target_system = "NODE2"; // same system, other spelling
	EXPECT_EQ(service.CreateOrModify(c).return_value,
	          ReturnValue::kCompleted);
	c.target_system = "";
	c.source_system = "node7";
	ExpectRefused(c, ReturnValue::kInvalidParameter, "not this host");
}

// "localhost" and this host's own names are one system, for TargetSystem
// as for SourceSystem: a pipe created with one is modified with another.
// Before, TargetSystem was compared as text: 5, "cannot change".
TEST_F(PipeServiceTest, TargetSystemThisHostUnderAnotherName)
{
	CreateOrModifyCall c = Call({"replipipe_0/a"}, {"/dev/sdb"});
	c.target_system = "localhost";
	MethodOutcome out = service.CreateOrModify(c);
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	CreateOrModifyCall m;
	m.replication_pipe = out.replication_pipe;
	for (const char *name :
	     {kHost, "node1", "NODE1.Example.com",
	      "CIM_ComputerSystem.Name=\"node1\"", "localhost"}) {
		m.target_system = name;
		MethodOutcome mod = service.CreateOrModify(m);
		EXPECT_EQ(mod.return_value, ReturnValue::kCompleted)
		        << name << ": " << mod.error;
	}
	// A TargetEndpoint reference on this host under another name.
	m.target_system = "";
	m.source_endpoints = std::vector<std::string>{"replipipe_0/a"};
	m.target_endpoints = std::vector<std::string>{
	        "CIM_ProtocolEndpoint.Name=\"/dev/sdb\",SystemName=\"node1\""};
	MethodOutcome keyed = service.CreateOrModify(m);
	EXPECT_EQ(keyed.return_value, ReturnValue::kCompleted) << keyed.error;
	EXPECT_EQ(service.GetPipe(out.replication_pipe)->target_system,
	          "localhost");
	// Another host is still another system.
	m = CreateOrModifyCall();
	m.replication_pipe = out.replication_pipe;
	m.target_system = "node2";
	ExpectRefused(m, ReturnValue::kInvalidParameter,
	              "systems of an existing pipe cannot change");

	// And the other way round: made with the host name, modified as
	// localhost.
	CreateOrModifyCall named = Call({"replipipe_0/b"}, {"/dev/sdc"});
	named.target_system = "NODE1";
	MethodOutcome second = service.CreateOrModify(named);
	ASSERT_EQ(second.return_value, ReturnValue::kCompleted) << second.error;
	m.replication_pipe = second.replication_pipe;
	m.target_system = "localhost";
	MethodOutcome back = service.CreateOrModify(m);
	EXPECT_EQ(back.return_value, ReturnValue::kCompleted) << back.error;
}

TEST_F(PipeServiceTest, RegionSizeCannotChangeWithKeptPairs)
{
	std::string ref = CreateAB();
	CreateOrModifyCall c;
	c.replication_pipe = ref;
	c.goal = "instance of CIM_SettingData { RegionSizeKiB = 256; };";
	ExpectRefused(c, ReturnValue::kInvalidParameter,
	              "RegionSizeKiB cannot change from 64 to 256");
	// Allowed when every pair is replaced.
	c = Call({"replipipe_0/b"}, {"/dev/sdc"}, c.goal);
	c.replication_pipe = ref;
	EXPECT_EQ(service.CreateOrModify(c).return_value,
	          ReturnValue::kCompleted);
}

TEST_F(PipeServiceTest, AmbiguousName)
{
	std::string one = CreateAB("same");
	CreateOrModifyCall c = Call({"replipipe_0/b"}, {"/dev/sdc"});
	c.pipe_element_name = "same";
	std::string two = service.CreateOrModify(c).replication_pipe;
	auto r = service.ResolvePipe("same");
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.status().err(), EINVAL);
	EXPECT_NE(r.status().message().find(one), std::string::npos);
	EXPECT_NE(r.status().message().find(two), std::string::npos);
	MethodOutcome out = service.Delete("same");
	EXPECT_EQ(out.return_value, ReturnValue::kInvalidParameter);
	EXPECT_NE(out.error.find("ambiguous"), std::string::npos);
	EXPECT_EQ(service.ListPipes().size(), 2u);
}

// --- 4096: busy ---------------------------------------------------------

TEST_F(PipeServiceTest, BusyWhileAnotherCallHoldsThePipe)
{
	std::string ref = CreateAB();
	std::promise<void> entered, release;
	std::shared_future<void> released = release.get_future().share();
	std::atomic<bool> blocked{false};
	kernel.SetEntryHook([&](Op op) {
		if (op == Op::kSetPipe && !blocked.exchange(true)) {
			entered.set_value();
			released.wait();
		}
	});
	CreateOrModifyCall slow = Call({"replipipe_0/a", "replipipe_0/b"},
	                               {"/dev/sdb", "/dev/sdc"});
	slow.replication_pipe = ref;
	auto first = std::async(std::launch::async,
	                        [&] { return service.CreateOrModify(slow); });
	entered.get_future().wait(); // the first call holds the pipe now

	CreateOrModifyCall other;
	other.replication_pipe = ref;
	MethodOutcome busy = service.CreateOrModify(other);
	EXPECT_EQ(busy.return_value, ReturnValue::kBusy) << busy.error;
	EXPECT_NE(busy.error.find("held by another operation"),
	          std::string::npos);
	EXPECT_EQ(service.Delete(ref).return_value, ReturnValue::kBusy);
	// Another pipe is not held up, and cannot take reserved endpoints.
	EXPECT_EQ(service.CreateOrModify(Call({"replipipe_0/c"}, {"/dev/sdd"}))
	                  .return_value,
	          ReturnValue::kCompleted);
	// The call adding them may still fail: Busy once the bound is over,
	// not Invalid Parameter.
	MethodOutcome taken =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sde"}));
	EXPECT_EQ(taken.return_value, ReturnValue::kBusy);
	EXPECT_NE(taken.error.find("by another call"), std::string::npos)
	        << taken.error;
	// Nor under another path.
	probe.AddAlias("/dev/disk/by-id/wwn-sdc", "/dev/sdc");
	taken = service.CreateOrModify(
	        Call({"replipipe_0/d"}, {"/dev/disk/by-id/wwn-sdc"}));
	EXPECT_EQ(taken.return_value, ReturnValue::kBusy);
	EXPECT_NE(taken.error.find("TargetEndpoint /dev/disk/by-id/wwn-sdc is "
	                           "a device being added to pipe"),
	          std::string::npos)
	        << taken.error;

	// One endpoint being added, another taken by a stored pipe: 5 at
	// once, not Busy after the wait.
	taken = service.CreateOrModify(Call({"replipipe_0/d", "replipipe_0/e"},
	                                    {"/dev/sdc", "/dev/sdd"}));
	EXPECT_EQ(taken.return_value, ReturnValue::kInvalidParameter)
	        << taken.error;
	EXPECT_NE(taken.error.find("TargetEndpoint /dev/sdd is already the "
	                           "target of replipipe_0/c"),
	          std::string::npos)
	        << taken.error;

	release.set_value();
	EXPECT_EQ(first.get().return_value, ReturnValue::kCompleted);
	// Free again.
	EXPECT_EQ(service.CreateOrModify(other).return_value,
	          ReturnValue::kCompleted);
}

// A call that wants an endpoint another call is adding waits for that call
// (within the busy time-out): if it fails, the endpoint is free and the
// waiting call goes through; if it succeeds, the endpoint is taken: 5.
TEST_F(PipeServiceTest, EndpointBeingAddedIsWaitedFor)
{
	PipeService patient{kernel, store, probe, HostIdentity{kHost},
	                    PipeServiceOptions{std::chrono::seconds(30)}};
	ASSERT_TRUE(patient.Load().ok());
	for (int fail_first : {1, 0}) {
		std::promise<void> entered, release;
		std::shared_future<void> released =
		        release.get_future().share();
		std::atomic<bool> blocked{false};
		kernel.SetEntryHook([&](Op op) {
			if (op == Op::kSetPipe && !blocked.exchange(true)) {
				entered.set_value();
				released.wait();
			}
		});
		if (fail_first)
			kernel.FailNext(EIO, Op::kSetPipe);
		auto first = std::async(std::launch::async, [&] {
			return patient.CreateOrModify(
			        Call({"replipipe_0/a"}, {"/dev/sdb"}));
		});
		entered.get_future().wait(); // /dev/sdb is reserved now
		auto second = std::async(std::launch::async, [&] {
			return patient.CreateOrModify(
			        Call({"replipipe_0/b"}, {"/dev/sdb"}));
		});
		EXPECT_EQ(second.wait_for(std::chrono::milliseconds(200)),
		          std::future_status::timeout)
		        << "the second call did not wait";
		release.set_value();
		MethodOutcome one = first.get();
		MethodOutcome two = second.get();
		kernel.SetEntryHook({});
		if (fail_first) {
			EXPECT_EQ(one.return_value, ReturnValue::kFailed)
			        << one.error;
			EXPECT_EQ(two.return_value, ReturnValue::kCompleted)
			        << two.error;
			ASSERT_EQ(patient.Delete(two.replication_pipe)
			                  .return_value,
			          ReturnValue::kCompleted);
		} else {
			EXPECT_EQ(one.return_value, ReturnValue::kCompleted)
			        << one.error;
			EXPECT_EQ(two.return_value,
			          ReturnValue::kInvalidParameter)
			        << two.error;
			EXPECT_NE(two.error.find("already the target of"),
			          std::string::npos)
			        << two.error;
		}
	}
}

// The lock table used to keep an entry for every pipe that ever had a call,
// every create attempt included (each a new UUID): it only grew. An entry
// now lives while a call holds or waits for its lock.
TEST_F(PipeServiceTest, LockTableKeepsNoEntryNobodyUses)
{
	for (int i = 0; i < 5; i++) // failed creates
		ExpectRefused(Call({"replipipe_0/a"}, {"/dev/nope"}),
		              ReturnValue::kFailed, "does not exist");
	EXPECT_EQ(service.pipe_lock_entries(), 0u);

	// A call holds the pipe, another waits for it (a longer busy
	// time-out than the fixture's): one entry, one mutex, and the waiter
	// gets the pipe once the holder is done.
	PipeService patient{kernel, store, probe, HostIdentity{kHost},
	                    PipeServiceOptions{std::chrono::seconds(30)}};
	ASSERT_TRUE(patient.Load().ok());
	MethodOutcome made =
	        patient.CreateOrModify(Call({"replipipe_0/a"}, {"/dev/sdb"}));
	ASSERT_EQ(made.return_value, ReturnValue::kCompleted) << made.error;
	const std::string ref = made.replication_pipe;
	EXPECT_EQ(patient.pipe_lock_entries(), 0u);
	std::promise<void> entered, release;
	std::shared_future<void> released = release.get_future().share();
	std::atomic<bool> blocked{false};
	kernel.SetEntryHook([&](Op op) {
		if (op != Op::kSetPipe)
			return;
		if (!blocked.exchange(true)) {
			entered.set_value();
			released.wait();
		}
	});
	auto modify = [&](const char *mode) {
		CreateOrModifyCall c;
		c.replication_pipe = ref;
		c.goal =
		        std::string("instance of CIM_SettingData { Mode = \"") +
		        mode + "\"; };";
		return patient.CreateOrModify(c);
	};
	auto holder = std::async(std::launch::async,
	                         [&] { return modify("Asynchronous"); });
	entered.get_future().wait();
	auto waiter = std::async(std::launch::async,
	                         [&] { return modify("Synchronous"); });
	std::this_thread::sleep_for(std::chrono::milliseconds(100));
	EXPECT_EQ(patient.pipe_lock_entries(), 1u);
	release.set_value();
	EXPECT_EQ(holder.get().return_value, ReturnValue::kCompleted);
	EXPECT_EQ(waiter.get().return_value, ReturnValue::kCompleted);
	EXPECT_EQ(kernel.Find(UuidOf(ref))->mode, Mode::kSynchronous);
	EXPECT_EQ(patient.pipe_lock_entries(), 0u);

	EXPECT_EQ(patient.Delete(ref).return_value, ReturnValue::kCompleted);
	EXPECT_EQ(patient.pipe_lock_entries(), 0u);
	ASSERT_TRUE(patient.Reconcile().ok());
	EXPECT_EQ(patient.pipe_lock_entries(), 0u);
}

// --- delete, list, status, reconcile ---------------------------------

TEST_F(PipeServiceTest, DeleteRemovesFromKernelAndStore)
{
	std::string ref = CreateAB();
	MethodOutcome out = service.Delete("db");
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	EXPECT_EQ(out.replication_pipe, ref);
	EXPECT_TRUE(kernel.Snapshot().empty());
	EXPECT_TRUE(service.ListPipes().empty());
	EXPECT_TRUE((*Store(dir.path()).Load()).empty());
	EXPECT_EQ(service.Delete(ref).return_value,
	          ReturnValue::kInvalidParameter);
	// Its endpoints are free again.
	CreateAB();
}

TEST_F(PipeServiceTest, DeleteWhenKernelLacksThePipe)
{
	std::string ref = CreateAB();
	ASSERT_TRUE(kernel.DeletePipe(UuidOf(ref)).ok());
	EXPECT_EQ(service.Delete(ref).return_value, ReturnValue::kCompleted);
}

TEST_F(PipeServiceTest, DeleteStoreFailureChangesNothing)
{
	std::string ref = CreateAB();
	store.SetFaultHookForTest([](Store::SaveStep) {
		return Status::Error("read-only file system", EROFS);
	});
	std::string before = World();
	MethodOutcome out = service.Delete(ref);
	EXPECT_EQ(out.return_value, ReturnValue::kUnspecifiedError);
	EXPECT_EQ(World(), before);
	EXPECT_EQ(kernel.calls(Op::kDeletePipe), 0);
}

TEST_F(PipeServiceTest, DescribeMergesKernelStatus)
{
	std::string ref = CreateAB();
	kernel.ForcePairState(UuidOf(ref), "replipipe_0/a", PairState::kInSync);
	auto views = service.Describe();
	ASSERT_TRUE(views.ok());
	ASSERT_EQ(views->size(), 1u);
	const PipeView &v = (*views)[0];
	EXPECT_EQ(v.reference, ref);
	ASSERT_TRUE(v.kernel);
	EXPECT_EQ(v.kernel->pairs[0].state, PairState::kInSync);

	kernel.FailNext(ETIMEDOUT, Op::kListPipes);
	views = service.Describe(std::string("db"));
	ASSERT_TRUE(views.ok());
	EXPECT_FALSE((*views)[0].kernel);
	EXPECT_FALSE((*views)[0].kernel_error.empty());
	EXPECT_FALSE(service.Describe(std::string("nope")).ok());
}

TEST_F(PipeServiceTest, ReconcilePushesAdoptsAndReports)
{
	std::string kept = CreateAB("kept");
	std::string lost =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdc"}))
	                .replication_pipe;
	std::string changed =
	        service.CreateOrModify(Call({"replipipe_0/c"}, {"/dev/sdd"}))
	                .replication_pipe;
	kernel.ForcePairState(UuidOf(kept), "replipipe_0/a",
	                      PairState::kInSync);
	// The kernel lost one pipe (module reloaded), one differs, and it
	// has one the store does not know.
	ASSERT_TRUE(kernel.DeletePipe(UuidOf(lost)).ok());
	KernelPipeSpec drift = ToKernelSpec(*service.GetPipe(changed));
	drift.mode = Mode::kAsynchronous;
	ASSERT_TRUE(kernel.SetPipe(drift).ok());
	KernelPipeSpec foreign;
	foreign.id = "99999999-9999-4999-8999-999999999999";
	foreign.name = "stray";
	ASSERT_TRUE(kernel.SetPipe(foreign).ok());

	auto report = service.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	std::string all;
	for (const std::string &line : *report)
		all += line + "\n";
	EXPECT_NE(all.find("adopted"), std::string::npos) << all;
	EXPECT_NE(all.find("pushed to the kernel (1 pairs, full resync)"),
	          std::string::npos)
	        << all;
	EXPECT_NE(all.find("kernel differed from the store (mode)"),
	          std::string::npos)
	        << all;
	EXPECT_NE(all.find("stray"), std::string::npos) << all;
	EXPECT_EQ(report->size(), 4u) << all;

	EXPECT_EQ(kernel.Find(UuidOf(kept))->pairs[0].state,
	          PairState::kInSync); // state kept
	ASSERT_TRUE(kernel.Find(UuidOf(lost)));
	EXPECT_EQ(kernel.Find(UuidOf(lost))->pairs[0].state,
	          PairState::kSyncing);
	EXPECT_EQ(kernel.Find(UuidOf(changed))->mode, Mode::kSynchronous);
	EXPECT_TRUE(kernel.Find(foreign.id)); // never deleted
	EXPECT_EQ(service.ListPipes().size(), 3u);
}

// A modify the kernel applied but answered too late, whose undo the kernel
// refused too, leaves the kernel with the new definition and the store with
// the old: the pipe is one of PipesToRepair(), and PushIfNeeded() (the next
// refresh's) puts the stored definition back. Before, nothing did until
// the next start: a pair the modify removed went unmirrored meanwhile.
TEST_F(PipeServiceTest,
       AModifyNeitherAppliedNorUndoneIsRepairedByTheNextRefresh)
{
	const std::string ref = CreateAB();
	const std::string uuid = UuidOf(ref);
	std::atomic<bool> applied{false};
	kernel.SetApplyHook([&](const KernelPipeSpec &) {
		if (!applied.exchange(true))
			kernel.FailNext(EIO, Op::kSetPipe, "undo refused");
	});
	kernel.FailNextAfterApply(ETIMEDOUT);
	CreateOrModifyCall two = Call({"replipipe_0/a", "replipipe_0/b"},
	                              {"/dev/sdb", "/dev/sdc"});
	two.replication_pipe = ref;
	MethodOutcome out = service.CreateOrModify(two);
	kernel.SetApplyHook({});
	ASSERT_EQ(out.return_value, ReturnValue::kTimeout) << out.error;
	EXPECT_NE(out.error.find("the daemon pushes the stored definition "
	                         "again"),
	          std::string::npos)
	        << out.error;
	ASSERT_EQ(kernel.Find(uuid)->pairs.size(), 2u) << "setup: not applied";
	EXPECT_EQ(service.PipesToRepair(), std::set<std::string>{uuid});
	auto pushed = service.PushIfNeeded(uuid);
	ASSERT_TRUE(pushed.ok()) << pushed.status().message();
	EXPECT_EQ(*pushed, PushOutcome::kReplaced);
	EXPECT_EQ(kernel.Find(uuid)->pairs.size(), 1u);
	EXPECT_TRUE(service.PipesToRepair().empty());
}

// The same when the store fails after the kernel took the modify, and the
// undo fails too.
TEST_F(PipeServiceTest, AModifyTheStoreRefusedAndTheUndoTooIsRepaired)
{
	const std::string ref = CreateAB();
	const std::string uuid = UuidOf(ref);
	std::atomic<bool> failing{false};
	kernel.SetApplyHook([&](const KernelPipeSpec &) {
		if (!failing.exchange(true))
			kernel.FailNext(EIO, Op::kSetPipe, "undo refused");
	});
	store.SetFaultHookForTest([&](Store::SaveStep) {
		return failing ? Status::Error("disk full", ENOSPC) : Status();
	});
	CreateOrModifyCall two = Call({"replipipe_0/a", "replipipe_0/b"},
	                              {"/dev/sdb", "/dev/sdc"});
	two.replication_pipe = ref;
	MethodOutcome out = service.CreateOrModify(two);
	kernel.SetApplyHook({});
	store.SetFaultHookForTest({});
	ASSERT_EQ(out.return_value, ReturnValue::kUnspecifiedError)
	        << out.error;
	ASSERT_EQ(kernel.Find(uuid)->pairs.size(), 2u) << "setup: not applied";
	EXPECT_EQ(service.PipesToRepair(), std::set<std::string>{uuid});
	auto pushed = service.PushIfNeeded(uuid);
	ASSERT_TRUE(pushed.ok()) << pushed.status().message();
	EXPECT_EQ(kernel.Find(uuid)->pairs.size(), 1u);
}

// A stored definition the kernel refused at start (decision 59) is one of
// PipesToRepair() until the kernel has it: PushIfNeeded() pushes it while
// the definitions differ, and lets go once a call has put its own in the
// kernel. It does not override a kernel definition it was not asked to
// repair (a call in flight may have set it).
TEST_F(PipeServiceTest, ARefusedRepairIsTriedAgainUntilTheKernelHasTheStore)
{
	const std::string uuid = UuidOf(CreateAB());
	KernelPipeSpec drift = ToKernelSpec(*service.GetPipe(uuid));
	drift.mode = Mode::kAsynchronous;
	ASSERT_TRUE(kernel.SetPipe(drift).ok());
	kernel.FailNext(EBUSY, Op::kSetPipe, "writes in flight");
	auto report = service.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	EXPECT_NE(Lines(*report).find("kernel differed from the store (mode); "
	                              "pushing the stored definition failed: "
	                              "writes in flight; replipiped tries "
	                              "again"),
	          std::string::npos)
	        << Lines(*report);
	EXPECT_EQ(service.PipesToRepair(), std::set<std::string>{uuid});

	kernel.FailNext(EBUSY, Op::kSetPipe, "writes in flight");
	auto again = service.PushIfNeeded(uuid);
	ASSERT_FALSE(again.ok());
	EXPECT_EQ(again.status().err(), EBUSY);
	EXPECT_NE(again.status().message().find(
	                  "kernel differs from the store (mode)"),
	          std::string::npos)
	        << again.status().message();
	EXPECT_EQ(kernel.Find(uuid)->mode, Mode::kAsynchronous);
	EXPECT_EQ(service.PipesToRepair().size(), 1u);

	// A modify puts its definition in the kernel: nothing left to do.
	CreateOrModifyCall rename;
	rename.replication_pipe = PipeReference(uuid);
	rename.pipe_element_name = "renamed";
	ASSERT_EQ(service.CreateOrModify(rename).return_value,
	          ReturnValue::kCompleted);
	const int pushes = kernel.calls(Op::kSetPipe);
	auto done = service.PushIfNeeded(uuid);
	ASSERT_TRUE(done.ok()) << done.status().message();
	EXPECT_EQ(*done, PushOutcome::kNotNeeded);
	EXPECT_TRUE(service.PipesToRepair().empty());
	EXPECT_EQ(kernel.calls(Op::kSetPipe), pushes);

	// Not asked to repair it: left as the kernel has it.
	drift = ToKernelSpec(*service.GetPipe(uuid));
	drift.mode = Mode::kAsynchronous;
	ASSERT_TRUE(kernel.SetPipe(drift).ok());
	auto left = service.PushIfNeeded(uuid);
	ASSERT_TRUE(left.ok());
	EXPECT_EQ(*left, PushOutcome::kNotNeeded);
	EXPECT_EQ(kernel.Find(uuid)->mode, Mode::kAsynchronous);

	// Refused at start, then taken.
	kernel.FailNext(EBUSY, Op::kSetPipe);
	ASSERT_TRUE(service.Reconcile().ok());
	auto replaced = service.PushIfNeeded(uuid);
	ASSERT_TRUE(replaced.ok()) << replaced.status().message();
	EXPECT_EQ(*replaced, PushOutcome::kReplaced);
	EXPECT_EQ(kernel.Find(uuid)->mode, Mode::kSynchronous);
	EXPECT_EQ(kernel.Find(uuid)->name, "renamed");
	EXPECT_TRUE(service.PipesToRepair().empty());
}

TEST_F(PipeServiceTest, ReconcileKernelUnreachable)
{
	kernel.FailNext(ETIMEDOUT, Op::kListPipes);
	auto report = service.Reconcile();
	ASSERT_FALSE(report.ok());
	EXPECT_EQ(report.status().err(), ETIMEDOUT);
}

TEST_F(PipeServiceTest, ConcurrentCreatesOfOneBackstoreOneWins)
{
	constexpr int kThreads = 8;
	std::vector<std::future<MethodOutcome>> calls;
	for (int i = 0; i < kThreads; i++) {
		std::string target = "/dev/t" + std::to_string(i);
		probe.AddDevice(target, 10 * kGiB);
		calls.push_back(std::async(std::launch::async, [this, target] {
			return service.CreateOrModify(
			        Call({"replipipe_0/d"}, {target}));
		}));
	}
	int won = 0;
	for (auto &f : calls) {
		MethodOutcome out = f.get();
		if (out.return_value == ReturnValue::kCompleted)
			won++;
		else
			EXPECT_EQ(out.return_value,
			          ReturnValue::kInvalidParameter)
			        << out.error;
	}
	EXPECT_EQ(won, 1);
	EXPECT_EQ(service.ListPipes().size(), 1u);
	EXPECT_EQ(kernel.Snapshot().size(), 1u);
}

} // namespace
} // namespace replipipe
