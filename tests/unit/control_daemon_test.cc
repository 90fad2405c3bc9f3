// The daemon's control path end to end in one process: ControlServer on a
// temp socket, DaemonService over PipeService and the fake kernel, called
// through ControlClient.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <new>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "call_gate_fake.h"
#include "cli_args.h"
#include "control_daemon_fake.h"
#include "kernel_gate_fake.h"
#include "kernel_pool.h"
#include "listen_only_fake.h"
#include "log.h"
#include "model.h"
#include "serial_kernel_fake.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using testing::InProcessDaemon;
using testing::kTestGiB;

std::string UuidOf(const std::string &ref)
{
	auto id = ParsePipeIdentifier(ref);
	return id.ok() && *id ? **id : "";
}

const ControlPair *FindPair(const ControlReply &reply,
                            const std::string &source)
{
	for (const ControlPipe &pipe : reply.pipes)
		for (const ControlPair &pair : pipe.pairs)
			if (pair.source == source)
				return &pair;
	return nullptr;
}

// Waits until the status of pipe shows source in state.
bool WaitForState(InProcessDaemon &d, const std::string &pipe,
                  const std::string &source, const std::string &state)
{
	for (int i = 0; i < 200; ++i) {
		ControlReply r =
		        d.Call(InProcessDaemon::Op(ControlOp::kStatus, pipe));
		const ControlPair *pair = FindPair(r, source);
		if (pair && pair->state == state)
			return true;
		std::this_thread::sleep_for(milliseconds(10));
	}
	return false;
}

// Creates one pipe (replipipe_0/a -> /dev/sdb) on the caller's thread and
// waits for its resync job to run.
void CreateWithRunningJob(InProcessDaemon &d, ControlReply *created)
{
	*created = d.service_.Handle(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created->ok) << created->error;
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));
}

// The daemon's probe channel: a KernelPool of connections that each
// serialize their calls, as a netlink socket does (SerialKernel).
std::unique_ptr<KernelApi> SerialConnectionPool(KernelApi &kernel)
{
	return std::make_unique<KernelPool>(
	        "probe connection",
	        [&kernel]() -> Result<std::unique_ptr<KernelApi>> {
		        return std::unique_ptr<KernelApi>(
		                new testing::SerialKernel(kernel));
	        });
}

TEST(ControlDaemon, CreateStatusAndResync)
{
	InProcessDaemon d;
	ControlReply reply = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(reply.ok) << reply.error;
	EXPECT_EQ(reply.return_value, ReturnValue::kCompleted);
	EXPECT_EQ(reply.replication_pipe.rfind("CIM_NetworkPipe.", 0), 0u);
	const std::string uuid = UuidOf(reply.replication_pipe);
	ASSERT_FALSE(uuid.empty());

	// A new pair starts Syncing, and a resync job for it.
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));
	{
		std::lock_guard lock(d.board_.mu);
		ASSERT_EQ(d.board_.started.size(), 1u);
		EXPECT_EQ(d.board_.started[0].pipe_id, uuid);
		EXPECT_EQ(d.board_.started[0].source, "replipipe_0/a");
		EXPECT_EQ(d.board_.started[0].target, "/dev/sdb");
		EXPECT_EQ(d.board_.started[0].region_bytes, 64u * 1024);
	}
	ControlReply status =
	        d.Call(InProcessDaemon::Op(ControlOp::kStatus, "db"));
	ASSERT_TRUE(status.ok) << status.error;
	ASSERT_EQ(status.pipes.size(), 1u);
	const ControlPipe &pipe = status.pipes[0];
	EXPECT_EQ(pipe.ref, reply.replication_pipe);
	EXPECT_EQ(pipe.instance_id, "replipipe:" + uuid);
	EXPECT_EQ(pipe.name, "db");
	EXPECT_EQ(pipe.mode, "Synchronous");
	EXPECT_TRUE(pipe.in_kernel);
	ASSERT_EQ(pipe.pairs.size(), 1u);
	EXPECT_EQ(pipe.pairs[0].state, "Syncing");
	EXPECT_TRUE(pipe.pairs[0].resync.running);
	EXPECT_EQ(pipe.pairs[0].resync.total_bytes, 1u << 20);
	EXPECT_EQ(pipe.pairs[0].resync.done_bytes, (1u << 20) / 4);
	EXPECT_EQ(pipe.pairs[0].resync.rate_bytes_per_s, 4096u);

	// The job finishes, the kernel says InSync.
	d.board_.Finish("replipipe_0/a");
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 0; }));
	ASSERT_TRUE(d.WaitJobsIdle());
	d.kernel_.ForcePairState(uuid, "replipipe_0/a", PairState::kInSync);
	d.service_.RefreshPipe(uuid);
	status = d.Call(InProcessDaemon::Op(ControlOp::kStatus,
	                                    reply.replication_pipe));
	const ControlPair *pair = FindPair(status, "replipipe_0/a");
	ASSERT_NE(pair, nullptr);
	EXPECT_EQ(pair->state, "InSync");
	EXPECT_FALSE(pair->resync.running);
	EXPECT_EQ(pair->resync.done_bytes, pair->resync.total_bytes);

	// list shows it too, by every identifier.
	ControlReply list = d.Call(InProcessDaemon::Op(ControlOp::kList));
	ASSERT_EQ(list.pipes.size(), 1u);
	for (const std::string &id :
	     {std::string("db"), "replipipe:" + uuid, reply.replication_pipe})
		EXPECT_TRUE(
		        d.Call(InProcessDaemon::Op(ControlOp::kStatus, id)).ok)
		        << id;
	EXPECT_EQ(d.service_.Counts().pairs_in_sync, 1u);
	EXPECT_EQ(DaemonService::StatusText(d.service_.Counts()),
	          "1 pipe, 1/1 pairs InSync");
}

TEST(ControlDaemon, NullKeepsPairsEmptyArrayClearsThem)
{
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));

	CreateOrModifyCall keep;
	keep.source_system = testing::kTestHost;
	keep.target_system = "node2";
	keep.replication_pipe = created.replication_pipe;
	ControlReply kept = d.Call(InProcessDaemon::Create(keep));
	ASSERT_TRUE(kept.ok) << kept.error;
	ControlReply status = d.Call(InProcessDaemon::Op(ControlOp::kStatus));
	ASSERT_EQ(status.pipes.size(), 1u);
	EXPECT_EQ(status.pipes[0].pairs.size(), 1u);
	EXPECT_EQ(status.pipes[0].name, "db"); // empty name keeps it

	CreateOrModifyCall clear = keep;
	clear.source_endpoints.emplace();
	clear.target_endpoints.emplace();
	ControlReply cleared = d.Call(InProcessDaemon::Create(clear));
	ASSERT_TRUE(cleared.ok) << cleared.error;
	status = d.Call(InProcessDaemon::Op(ControlOp::kStatus));
	ASSERT_EQ(status.pipes.size(), 1u);
	EXPECT_TRUE(status.pipes[0].pairs.empty());
	// The removed pair's job was stopped.
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.stopped == 1; }));
}

TEST(ControlDaemon, FailuresCarryReturnValues)
{
	InProcessDaemon d;
	// Count mismatch: Invalid Parameter.
	ControlReply bad = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a", "replipipe_0/b"}, {"/dev/sdb"})));
	EXPECT_FALSE(bad.ok);
	EXPECT_EQ(bad.return_value, ReturnValue::kInvalidParameter);
	EXPECT_EQ(ExitCodeForReply(bad), 5);
	EXPECT_FALSE(bad.error.empty());

	// A kernel refusal: Failed.
	d.kernel_.FailNext(EINVAL, testing::FakeKernel::Op::kSetPipe,
	                   "refused for the test");
	ControlReply refused = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	EXPECT_EQ(refused.return_value, ReturnValue::kFailed);
	EXPECT_EQ(ExitCodeForReply(refused), 4);

	ControlReply del =
	        d.Call(InProcessDaemon::Op(ControlOp::kDelete, "no-such-pipe"));
	EXPECT_FALSE(del.ok);
	EXPECT_EQ(del.return_value, ReturnValue::kInvalidParameter);

	ControlReply status =
	        d.Call(InProcessDaemon::Op(ControlOp::kStatus, "no-such-pipe"));
	EXPECT_FALSE(status.ok);
	EXPECT_EQ(status.code, kCodeNotFound);
	EXPECT_EQ(ExitCodeForReply(status), 5);

	ControlReply pause =
	        d.Call(InProcessDaemon::Op(ControlOp::kPause, "no-such-pipe"));
	EXPECT_FALSE(pause.ok);
	EXPECT_EQ(ExitCodeForReply(pause), 5);
}

TEST(ControlDaemon, PauseAndResume)
{
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(d.Call(
	        {"replipipe_0/a", "replipipe_0/b"}, {"/dev/sdb", "/dev/sdc"})));
	ASSERT_TRUE(created.ok) << created.error;
	const std::string uuid = UuidOf(created.replication_pipe);
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 2; }));

	ControlReply paused = d.Call(InProcessDaemon::Op(
	        ControlOp::kPause, "db", std::string("replipipe_0/a")));
	ASSERT_TRUE(paused.ok) << paused.error;
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));
	EXPECT_TRUE(WaitForState(d, "db", "replipipe_0/a", "Paused"));
	EXPECT_TRUE(WaitForState(d, "db", "replipipe_0/b", "Syncing"));

	ControlReply unknown = d.Call(InProcessDaemon::Op(
	        ControlOp::kPause, "db", std::string("replipipe_9/x")));
	EXPECT_FALSE(unknown.ok);
	EXPECT_EQ(ExitCodeForReply(unknown), 5);

	// Pause everything, then resume everything: jobs come back.
	ASSERT_TRUE(d.Call(InProcessDaemon::Op(ControlOp::kPause, "db")).ok);
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 0; }));
	EXPECT_EQ(d.kernel_.Find(uuid)->pairs[1].state, PairState::kPaused);
	ASSERT_TRUE(d.Call(InProcessDaemon::Op(ControlOp::kResume, "db")).ok);
	EXPECT_TRUE(WaitForState(d, "db", "replipipe_0/a", "Syncing"));
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 2; }));
}

// A pair whose resync job cannot even be made (the factory refuses its
// target: ResyncJobs then has no progress for it) shows in status why it
// has no job and when the next is due; a paused pair shows no retry.
TEST(ControlDaemon, StatusTellsWhyAPairsResyncFails)
{
	const std::string refused =
	        "resync pipe x pair replipipe_0/a: /dev/sdb is block device "
	        "1:2 but the kernel mirrors block device 1:1 (the path was "
	        "re-pointed since the pipe was set); not copying";
	testing::TempDir dir;
	testing::FakeKernel kernel;
	testing::FakeProbe probe;
	Store store(dir / "state");
	PipeService pipes(kernel, store, probe,
	                  HostIdentity{testing::kTestHost},
	                  PipeServiceOptions{milliseconds(500)});
	EventHub hub;
	std::atomic<int> made{0};
	// A back-off longer than the test: one failure, no retry.
	ResyncJobs jobs(
	        [&](const PairJobSpec &) -> Result<std::unique_ptr<PairJob>> {
		        ++made;
		        return Status::Error(refused, ENXIO);
	        },
	        [&hub](const ControlEvent &e) { hub.Publish(e); },
	        ResyncJobsOptions{milliseconds(60000), milliseconds(60000),
	                          milliseconds(0)});
	DaemonService service(pipes, kernel, &jobs, hub);
	probe.AddBackstore("replipipe_0/a", "/dev/vg/a", kTestGiB);
	probe.AddDevice("/dev/sdb", kTestGiB);
	ASSERT_TRUE(store.EnsureStateDir().ok());
	ASSERT_TRUE(pipes.Load().ok());
	CreateOrModifyCall call;
	call.pipe_element_name = "db";
	call.source_system = testing::kTestHost;
	call.target_system = "node2";
	call.source_endpoints = std::vector<std::string>{"replipipe_0/a"};
	call.target_endpoints = std::vector<std::string>{"/dev/sdb"};
	ControlReply created = service.Handle(InProcessDaemon::Create(call));
	ASSERT_TRUE(created.ok) << created.error;

	auto status = [&] {
		ControlReply reply = service.Handle(
		        InProcessDaemon::Op(ControlOp::kStatus, "db"));
		const ControlPair *pair = FindPair(reply, "replipipe_0/a");
		return pair ? std::optional<ControlPair>(*pair) : std::nullopt;
	};
	std::optional<ControlPair> pair;
	for (int i = 0; i < 1000; ++i) {
		pair = status();
		if (pair && pair->resync.failures > 0)
			break;
		std::this_thread::sleep_for(milliseconds(10));
	}
	ASSERT_TRUE(pair.has_value());
	EXPECT_EQ(pair->state, "Syncing");
	EXPECT_FALSE(pair->resync.running);
	EXPECT_EQ(pair->resync.done_bytes, 0u);
	// No job: what the bitmap marks dirty.
	EXPECT_GT(pair->resync.total_bytes, 0u);
	EXPECT_EQ(pair->resync.total_bytes, pair->dirty_regions * 64 * 1024);
	EXPECT_EQ(pair->resync.failures, 1u);
	EXPECT_EQ(pair->resync.last_error, refused);
	ASSERT_TRUE(pair->resync.retry_in_s.has_value());
	EXPECT_GE(*pair->resync.retry_in_s, 1u);
	EXPECT_LE(*pair->resync.retry_in_s, 60u);

	ASSERT_TRUE(service.Handle(InProcessDaemon::Op(ControlOp::kPause, "db"))
	                    .ok);
	pair = status();
	ASSERT_TRUE(pair.has_value());
	EXPECT_EQ(pair->state, "Paused");
	EXPECT_EQ(pair->resync.failures, 1u);
	EXPECT_EQ(pair->resync.last_error, refused);
	EXPECT_FALSE(pair->resync.retry_in_s.has_value());
	EXPECT_EQ(made.load(), 1);
}

// pause and resume of every pair try every pair: one that fails (here the
// 2nd of 3) neither keeps the others from being tried nor hides what was
// done. The error names the failed pair with its reason and the pairs that
// were changed, in the pipe's order whichever order the kernel was asked
// in (a resume asks several at once); the exit status is the failure's.
TEST(ControlDaemon, PauseAndResumeTryEveryPairAndNameTheFailures)
{
	std::atomic<int> pair_sets{0}; // outlives d, whose kernel calls it
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a", "replipipe_0/b", "replipipe_0/c"},
	               {"/dev/sdb", "/dev/sdc", "/dev/sdd"})));
	ASSERT_TRUE(created.ok) << created.error;
	const std::string uuid = UuidOf(created.replication_pipe);
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 3; }));
	d.kernel_.SetEntryHook([&](testing::FakeKernel::Op op) {
		if (op == testing::FakeKernel::Op::kSetPairState)
			++pair_sets;
	});
	auto states = [&] {
		std::vector<PairState> s;
		// Find() returns a copy: held here, not a temporary that the
		// range-for would outlive.
		const auto pipe = d.kernel_.Find(uuid);
		for (const KernelPairStatus &p : pipe->pairs)
			s.push_back(p.state);
		return s;
	};

	// op on every pair with b's target gone: exit 4, every pair tried,
	// want the states after, the failure and the changed pairs named.
	auto run_failing_b = [&](ControlOp op, const std::string &done,
	                         const std::vector<PairState> &want) {
		pair_sets = 0;
		d.kernel_.FailPair("replipipe_0/b", EIO,
		                   "target gone for the test");
		ControlReply reply = d.Call(InProcessDaemon::Op(op, "db"));
		d.kernel_.FailPair("replipipe_0/b", 0);
		EXPECT_FALSE(reply.ok);
		EXPECT_EQ(ExitCodeForReply(reply), 4) << reply.error;
		EXPECT_EQ(pair_sets, 3) << "not every pair was tried";
		EXPECT_EQ(states(), want);
		EXPECT_NE(reply.error.find("1 of 3 pairs failed: pair "
		                           "replipipe_0/b: target gone "
		                           "for the test"),
		          std::string::npos)
		        << reply.error;
		EXPECT_NE(reply.error.find(done +
		                           ": replipipe_0/a, replipipe_0/c"),
		          std::string::npos)
		        << reply.error;
	};

	run_failing_b(
	        ControlOp::kPause, "paused",
	        {PairState::kPaused, PairState::kSyncing, PairState::kPaused});
	ASSERT_TRUE(d.Call(InProcessDaemon::Op(ControlOp::kPause, "db",
	                                       std::string("replipipe_0/b")))
	                    .ok);
	run_failing_b(
	        ControlOp::kResume, "resumed",
	        {PairState::kSyncing, PairState::kPaused, PairState::kSyncing});
	d.kernel_.SetEntryHook({});
}

// Pipes of `pairs` pairs each, on one probe channel of SerialConnectionPool
// (a KernelPool of connections that each serialize their calls, as a netlink
// socket does): pipe "pK" has sources replipipe_0/pK_N. Their UUIDs.
std::vector<std::string> CreatePipesOfManyPairs(InProcessDaemon &d,
                                                size_t pipes, size_t pairs)
{
	std::vector<std::string> uuids;
	for (size_t k = 0; k < pipes; ++k) {
		std::vector<std::string> sources, targets;
		for (size_t i = 0; i < pairs; ++i) {
			const std::string n =
			        std::to_string(k) + "_" + std::to_string(i);
			d.probe_.AddBackstore("replipipe_0/p" + n,
			                      "/dev/vg/p" + n, kTestGiB);
			d.probe_.AddDevice("/dev/rp" + n, kTestGiB);
			sources.push_back("replipipe_0/p" + n);
			targets.push_back("/dev/rp" + n);
		}
		CreateOrModifyCall call = d.Call(sources, targets);
		call.pipe_element_name = "p" + std::to_string(k);
		ControlReply created = d.Call(InProcessDaemon::Create(call));
		EXPECT_TRUE(created.ok) << created.error;
		uuids.push_back(UuidOf(created.replication_pipe));
	}
	return uuids;
}

// Holds every PAIR_SET of d's kernel in gate until kResumesAtOnce are in
// (or 10 s passed: one probe at a time never gets there) and a moment
// more, in which any probe beyond the bound would come in; then opens it.
void OpenOnceManyAreIn(testing::CallGate &gate)
{
	gate.WaitInKernel(DaemonService::kResumesAtOnce,
	                  std::chrono::seconds(10));
	std::this_thread::sleep_for(milliseconds(200));
	gate.Open();
}

// A resume probes the targets of a pipe's pairs several at a time, each on
// a connection of its own (the daemon's KernelPool): N targets that do not
// answer cost the kernel's 5 s bound about N / kResumesAtOnce times, not N
// times. A pipe of more pairs than the bound shows it is kept.
TEST(ControlDaemon, AResumeProbesManyPairsAtOnceAndNoMore)
{
	constexpr size_t kPairs = DaemonService::kResumesAtOnce + 4;
	testing::CallGate gate; // outlives d, whose kernel calls it
	InProcessDaemon d({}, {}, SerialConnectionPool);
	const std::string uuid = CreatePipesOfManyPairs(d, 1, kPairs).at(0);
	ASSERT_TRUE(d.Call(InProcessDaemon::Op(ControlOp::kPause, "p0")).ok);
	ASSERT_TRUE(d.WaitJobsIdle());

	d.kernel_.SetEntryHook(
	        gate.HoldEvery(testing::FakeKernel::Op::kSetPairState));
	auto resumed = std::async(std::launch::async, [&d] {
		return d.Call(InProcessDaemon::Op(ControlOp::kResume, "p0"));
	});
	OpenOnceManyAreIn(gate);
	ControlReply reply = resumed.get();
	d.kernel_.SetEntryHook({});
	EXPECT_TRUE(reply.ok) << reply.error;
	EXPECT_EQ(gate.Calls(), kPairs);
	EXPECT_EQ(gate.Most(), DaemonService::kResumesAtOnce)
	        << "probes in the kernel at once, at most";
	const auto pipe = d.kernel_.Find(uuid);
	ASSERT_TRUE(pipe.has_value());
	ASSERT_EQ(pipe->pairs.size(), kPairs);
	for (const KernelPairStatus &pair : pipe->pairs)
		EXPECT_NE(pair.state, PairState::kPaused) << pair.source;
}

// A resume cut short by the daemon's stop (the pairs past the probes under
// way are not probed) is not the kernel's refusal, ReturnValue 4: it is
// answered as every call that meets a stopping daemon, shutting_down, and
// replipipectl exits 69 (docs/cli.md). The message still names the pairs
// that were resumed and those that were not probed.
TEST(ControlDaemon, AResumeCutShortByShutdownIsShuttingDown)
{
	constexpr size_t kPairs = DaemonService::kResumesAtOnce + 4;
	testing::CallGate gate; // outlives d, whose kernel calls it
	InProcessDaemon d({}, {}, SerialConnectionPool);
	CreatePipesOfManyPairs(d, 1, kPairs);
	ASSERT_TRUE(d.Call(InProcessDaemon::Op(ControlOp::kPause, "p0")).ok);
	ASSERT_TRUE(d.WaitJobsIdle());

	d.kernel_.SetEntryHook(
	        gate.HoldEvery(testing::FakeKernel::Op::kSetPairState));
	auto resumed = std::async(std::launch::async, [&d] {
		return d.Call(InProcessDaemon::Op(ControlOp::kResume, "p0"));
	});
	ASSERT_TRUE(gate.WaitInKernel(DaemonService::kResumesAtOnce,
	                              std::chrono::seconds(10)));
	d.service_.BeginShutdown(); // as main() does before Stop()
	gate.Open();
	ControlReply reply = resumed.get();
	d.kernel_.SetEntryHook({});
	EXPECT_EQ(gate.Calls(), DaemonService::kResumesAtOnce)
	        << "pairs probed after the shutdown began";
	EXPECT_FALSE(reply.ok);
	EXPECT_EQ(reply.code, kCodeShuttingDown) << reply.error;
	EXPECT_FALSE(reply.return_value.has_value());
	EXPECT_EQ(ExitCodeForReply(reply), kExitUnavailable) << reply.error;
	EXPECT_NE(reply.error.find("4 of " + std::to_string(kPairs) +
	                           " pairs failed: pair replipipe_0/p0_"),
	          std::string::npos)
	        << reply.error;
	EXPECT_NE(reply.error.find("replipiped is stopping: not probed"),
	          std::string::npos)
	        << reply.error;
}

// The periodic probe of Degraded pairs does the same across pipes: here
// three pipes of 8 Degraded pairs, 24 targets. One pair at a time, as
// replipiped probed before, a round over 256 dead targets took 21 minutes
// (decision 44).
TEST(ControlDaemon, AProbeOfDegradedPairsProbesManyAtOnceAndNoMore)
{
	constexpr size_t kPipes = 3, kPairs = 8;
	testing::CallGate gate; // outlives d, whose kernel calls it
	InProcessDaemon d({}, {}, SerialConnectionPool);
	const std::vector<std::string> uuids =
	        CreatePipesOfManyPairs(d, kPipes, kPairs);
	for (size_t k = 0; k < kPipes; ++k) {
		for (size_t i = 0; i < kPairs; ++i)
			d.kernel_.ForcePairState(
			        uuids[k],
			        "replipipe_0/p" + std::to_string(k) + "_" +
			                std::to_string(i),
			        PairState::kDegraded);
		d.service_.RefreshPipe(uuids[k]); // its jobs go
	}
	ASSERT_TRUE(d.WaitJobsIdle());

	d.kernel_.SetEntryHook(
	        gate.HoldEvery(testing::FakeKernel::Op::kSetPairState));
	ASSERT_TRUE(d.service_.RequestProbe());
	OpenOnceManyAreIn(gate);
	EXPECT_TRUE(d.service_.WaitProbeIdle(std::chrono::seconds(10)));
	d.kernel_.SetEntryHook({});
	EXPECT_EQ(gate.Calls(), kPipes * kPairs);
	EXPECT_EQ(gate.Most(), DaemonService::kResumesAtOnce)
	        << "probes in the kernel at once, at most";
	for (const std::string &uuid : uuids) {
		const auto pipe = d.kernel_.Find(uuid);
		ASSERT_TRUE(pipe.has_value());
		for (const KernelPairStatus &pair : pipe->pairs)
			EXPECT_EQ(pair.state, PairState::kSyncing)
			        << pair.source << " not resumed";
	}
}

// A pipe "db" of one pair with its job running; its UUID.
std::string CreateSyncingPipe(InProcessDaemon &d)
{
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	EXPECT_TRUE(created.ok) << created.error;
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));
	return UuidOf(created.replication_pipe);
}

// Runs op on pipe "db" while a refresh of uuid that read the kernel before
// op is held by gate (declared before d: it outlives the daemon's calls),
// then lets that refresh apply its older read. op must succeed and leave no
// job running.
void UnderAnOlderRead(InProcessDaemon &d, testing::KernelGate &gate,
                      const std::string &uuid, ControlOp op)
{
	d.kernel_.SetReadHook(gate.BlockFirstRead());
	std::thread slow([&d, uuid] { d.service_.RefreshPipe(uuid); });
	const bool held = gate.WaitEntered(std::chrono::seconds(5));
	if (held) {
		ControlReply reply = d.Call(InProcessDaemon::Op(op, "db"));
		EXPECT_TRUE(reply.ok) << reply.error;
		EXPECT_TRUE(d.board_.WaitFor(
		        [&] { return d.board_.running == 0; }));
	}
	gate.Release();
	slow.join();
	d.kernel_.SetReadHook({});
	EXPECT_TRUE(held) << "the refresh never read the kernel";
}

// Refreshes of one pipe run on several threads, each reading the kernel and
// then applying what it read. One that read the pair Syncing, then was slow
// to apply it, must not undo the pause that came meanwhile: the pause's own
// refresh read Paused and stopped the job, and the older read is dropped
// rather than start the job again.
TEST(ControlDaemon, AnOlderReadDoesNotUndoAPause)
{
	testing::KernelGate gate;
	InProcessDaemon d;
	const std::string uuid = CreateSyncingPipe(d);
	// The held refresh read the pair Syncing with its job.
	UnderAnOlderRead(d, gate, uuid, ControlOp::kPause);
	EXPECT_EQ(d.kernel_.Find(uuid)->pairs[0].state, PairState::kPaused);
	// A job would start within milliseconds (the jobs' retry is 10 ms).
	EXPECT_FALSE(d.board_.WaitFor([&] { return d.board_.running != 0; },
	                              std::chrono::milliseconds(500)))
	        << "the older read started the paused pair's job again";
	EXPECT_TRUE(WaitForState(d, "db", "replipipe_0/a", "Paused"));
}

// The same with a delete: a read from before it brings back neither the
// deleted pipe's job nor its pairs in the events' snapshot.
TEST(ControlDaemon, AnOlderReadDoesNotBringADeletedPipeBack)
{
	testing::KernelGate gate;
	InProcessDaemon d;
	const std::string uuid = CreateSyncingPipe(d);
	UnderAnOlderRead(d, gate, uuid, ControlOp::kDelete);
	EXPECT_FALSE(d.board_.WaitFor([&] { return d.board_.running != 0; },
	                              std::chrono::milliseconds(500)))
	        << "the older read started the deleted pipe's job again";
	for (const ControlEvent &e : d.hub_.PairStates())
		EXPECT_NE(e.instance_id, "replipipe:" + uuid)
		        << "the deleted pipe's pair " << e.source
		        << " is back in the events' snapshot";
}

// A "pipe_deleted" event the main loop reads late, after the pipe was
// pushed again (a repair, a module's pipes set anew), must not stop the
// jobs of the pipe the kernel has: they stayed stopped until the next tick.
TEST(ControlDaemon, ALatePipeDeletedEventLeavesTheJobsOfAPipeTheKernelHas)
{
	InProcessDaemon d;
	const std::string uuid = CreateSyncingPipe(d);
	KernelEvent event;
	event.type = KernelEventType::kPipeDeleted;
	event.pipe_id = uuid;
	d.service_.OnKernelEvent(event);
	EXPECT_FALSE(d.board_.WaitFor([&] { return d.board_.running == 0; },
	                              std::chrono::milliseconds(500)))
	        << "the late event stopped the job of a pipe the kernel has";
}

// The same event when the kernel really lost the pipe (deleted by another
// netlink client) stops its jobs: its pairs mirror nothing any more.
TEST(ControlDaemon, APipeDeletedEventStopsTheJobsOfAPipeTheKernelLost)
{
	InProcessDaemon d;
	const std::string uuid = CreateSyncingPipe(d);
	ASSERT_TRUE(d.kernel_.DeletePipe(uuid).ok());
	KernelEvent event;
	event.type = KernelEventType::kPipeDeleted;
	event.pipe_id = uuid;
	d.service_.OnKernelEvent(event);
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 0; }))
	        << "the job of a pipe the kernel lost still runs";
}

// A probe of a Degraded pair may wait the kernel's 5 s bound on the target
// (here: a fake kernel whose PAIR_SET blocks until released). It runs on the
// service's probe thread: the caller (replipiped's main loop) gets its
// answer at once, status answers meanwhile, a second request is dropped,
// and a pause of the probed pair waits for the probe and then wins: the
// pair ends Paused, not resumed over the administrator's pause.
TEST(ControlDaemon, ProbeRunsOffTheCallersThreadAndAPauseWins)
{
	struct Gate {
		std::mutex mu;
		std::condition_variable cv;
		int pair_sets = 0;     // guarded by mu
		bool entered = false;  // guarded by mu
		bool released = false; // guarded by mu
	} gate;                        // outlives d, whose kernel calls it
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	const std::string uuid = UuidOf(created.replication_pipe);
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));
	d.kernel_.ForcePairState(uuid, "replipipe_0/a", PairState::kDegraded);
	d.service_.RefreshPipe(uuid); // its job goes
	ASSERT_TRUE(d.WaitJobsIdle());
	// The first PAIR_SET (the probe's) blocks like a target that does not
	// answer; later ones go through.
	d.kernel_.SetEntryHook([&gate](testing::FakeKernel::Op op) {
		if (op != testing::FakeKernel::Op::kSetPairState)
			return;
		std::unique_lock lock(gate.mu);
		if (gate.pair_sets++ != 0)
			return;
		gate.entered = true;
		gate.cv.notify_all();
		gate.cv.wait_for(lock, std::chrono::seconds(20),
		                 [&gate] { return gate.released; });
	});
	auto release = [&gate] {
		std::lock_guard lock(gate.mu);
		gate.released = true;
		gate.cv.notify_all();
	};

	// A call that waited for the probe would wait for the gate (20 s):
	// 5 s tells the two apart on a loaded machine too (eight shards
	// under ASan at once).
	auto started = std::chrono::steady_clock::now();
	EXPECT_TRUE(d.service_.RequestProbe());
	EXPECT_LT(std::chrono::steady_clock::now() - started,
	          std::chrono::seconds(5))
	        << "the probe ran on the caller's thread";
	{
		std::unique_lock lock(gate.mu);
		if (!gate.cv.wait_for(lock, std::chrono::seconds(20),
		                      [&gate] { return gate.entered; })) {
			lock.unlock();
			release();
			FAIL() << "the probe never asked the kernel";
		}
	}

	started = std::chrono::steady_clock::now();
	ControlReply status =
	        d.Call(InProcessDaemon::Op(ControlOp::kStatus, "db"));
	EXPECT_TRUE(status.ok) << status.error;
	EXPECT_LT(std::chrono::steady_clock::now() - started,
	          std::chrono::seconds(5))
	        << "status waited for the probe";
	const ControlPair *pair = FindPair(status, "replipipe_0/a");
	ASSERT_NE(pair, nullptr);
	EXPECT_EQ(pair->state, "Degraded");
	EXPECT_FALSE(d.service_.RequestProbe()) << "two probes at once";

	ControlReply paused;
	std::thread pauser([&] {
		paused = d.Call(InProcessDaemon::Op(
		        ControlOp::kPause, "db", std::string("replipipe_0/a")));
	});
	std::this_thread::sleep_for(milliseconds(200));
	release();
	pauser.join();
	EXPECT_TRUE(paused.ok) << paused.error;
	EXPECT_TRUE(d.service_.WaitProbeIdle(std::chrono::seconds(5)));
	auto kernel = d.kernel_.Find(uuid);
	ASSERT_TRUE(kernel.has_value());
	EXPECT_EQ(kernel->pairs[0].state, PairState::kPaused)
	        << "the probe resumed a pair paused meanwhile";
	d.kernel_.SetEntryHook({});
}

// A probe of one pipe's pair stuck on its target (the kernel's 5 s bound)
// holds up no resume of another pipe. The probe channel is the daemon's: a
// KernelPool of connections that each serialize their calls, as a netlink
// socket does (SerialKernel). With one such connection for probes and
// resumes, as replipiped had before, the resume waited for the probe.
TEST(ControlDaemon, AResumeDoesNotWaitForAProbeOfAnotherPipe)
{
	testing::KernelGate gate; // outlives d, whose kernel calls it
	InProcessDaemon d({}, {}, SerialConnectionPool);
	CreateOrModifyCall call_a = d.Call({"replipipe_0/a"}, {"/dev/sdb"});
	call_a.pipe_element_name = "pipe-a";
	ControlReply created_a = d.Call(InProcessDaemon::Create(call_a));
	ASSERT_TRUE(created_a.ok) << created_a.error;
	CreateOrModifyCall call_b = d.Call({"replipipe_0/b"}, {"/dev/sdc"});
	call_b.pipe_element_name = "pipe-b";
	ControlReply created_b = d.Call(InProcessDaemon::Create(call_b));
	ASSERT_TRUE(created_b.ok) << created_b.error;
	const std::string uuid_a = UuidOf(created_a.replication_pipe);
	const std::string uuid_b = UuidOf(created_b.replication_pipe);
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 2; }));
	// Pipe A's pair Degraded (to be probed), pipe B's Paused (to be
	// resumed).
	d.kernel_.ForcePairState(uuid_a, "replipipe_0/a", PairState::kDegraded);
	d.service_.RefreshPipe(uuid_a);
	ASSERT_TRUE(
	        d.Call(InProcessDaemon::Op(ControlOp::kPause, "pipe-b")).ok);
	ASSERT_TRUE(d.WaitJobsIdle());

	// The probe's PAIR_SET, the first, blocks as on a dead target.
	d.kernel_.SetEntryHook(
	        gate.BlockFirst(testing::FakeKernel::Op::kSetPairState));
	ASSERT_TRUE(d.service_.RequestProbe());
	if (!gate.WaitEntered(std::chrono::seconds(5))) {
		gate.Release();
		FAIL() << "the probe never asked the kernel";
	}
	auto resumed = std::async(std::launch::async, [&d] {
		return d.Call(
		        InProcessDaemon::Op(ControlOp::kResume, "pipe-b"));
	});
	// Seconds on a loaded machine under the sanitizers: no resume
	// takes that long here, and the blocked probe waits for longer.
	const bool prompt = resumed.wait_for(std::chrono::seconds(3)) ==
	                    std::future_status::ready;
	gate.Release();
	EXPECT_TRUE(prompt) << "the resume of pipe B waited for the probe of "
	                       "pipe A";
	ControlReply reply = resumed.get();
	EXPECT_TRUE(reply.ok) << reply.error;
	EXPECT_NE(d.kernel_.Find(uuid_b)->pairs[0].state, PairState::kPaused);
	EXPECT_TRUE(d.service_.WaitProbeIdle(std::chrono::seconds(5)));
	EXPECT_NE(d.kernel_.Find(uuid_a)->pairs[0].state, PairState::kDegraded)
	        << "the probe did not resume pipe A's pair once released";
	d.kernel_.SetEntryHook({});
}

// A modify that changes a pair's resync settings stops its job, and does not
// wait for it to end; the new job starts once the old one has ended,
// because the service plans the pipe again when a job it held back for
// ends (here nothing else would: no tick, no kernel events).
TEST(ControlDaemon, ChangedSettingsRestartTheJobOnceTheOldOneEnded)
{
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));

	CreateOrModifyCall modify;
	modify.source_system = testing::kTestHost;
	modify.target_system = "node2";
	modify.replication_pipe = created.replication_pipe;
	modify.goal =
	        "instance of CIM_SettingData { ResyncRateLimitKiBps = 2048; };";
	ControlReply modified = d.Call(InProcessDaemon::Create(modify));
	ASSERT_TRUE(modified.ok) << modified.error;
	EXPECT_TRUE(d.board_.WaitFor([&] {
		return d.board_.started.size() == 2 && d.board_.running == 1;
	}));
	std::lock_guard lock(d.board_.mu);
	ASSERT_EQ(d.board_.started.size(), 2u);
	EXPECT_EQ(d.board_.started[1].rate_limit_kibps, 2048u);
	EXPECT_EQ(d.board_.stopped, 1);
}

// After a create succeeded in the kernel and in the store, the daemon reads
// the pipe back (RefreshPipe) to plan its resync. NetlinkSocket throws
// std::bad_alloc for a message it cannot allocate: escaping, it turned the
// call's 0 into ReturnValue 2, "internal error", and a script that calls
// again on that would make a second pipe. The call stays done.
TEST(ControlDaemon, ARefreshThatThrowsAfterACreateLeavesItDone)
{
	std::atomic<bool> applied{false}; // outlive d, whose kernel calls them
	std::atomic<bool> thrown{false};
	InProcessDaemon d;
	d.kernel_.SetApplyHook([&](const KernelPipeSpec &) { applied = true; });
	d.kernel_.SetReadHook([&] {
		if (applied && !thrown.exchange(true))
			throw std::bad_alloc();
	});
	::testing::internal::CaptureStderr();
	ControlReply created = d.service_.Handle(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	d.kernel_.SetReadHook({});
	const std::string log = ::testing::internal::GetCapturedStderr();
	ASSERT_TRUE(thrown) << "no kernel read after the PIPE_SET";
	ASSERT_TRUE(created.ok) << created.error;
	EXPECT_EQ(d.kernel_.Snapshot().size(), 1u);
	EXPECT_NE(log.find("refresh after CreateOrModify: std::bad_alloc; the "
	                   "next periodic refresh tries again"),
	          std::string::npos)
	        << log;
	d.service_.RefreshAll(); // what the daemon's tick would do
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }))
	        << "the pipe's resync job was not planned by the next refresh";
}

// A stored pipe the kernel lacks (its push failed at start-up: a backstore or
// target not there yet; or the kernel lost it) is pushed again, on the
// pusher's thread, after a back-off, without a restart of the daemon.
// When a resync job ends, the service's replan thread refreshes the pipe
// that waited for it (here: the job of the pipe's new settings, held back by
// the old job). Its refresh reads the kernel, and NetlinkSocket throws
// std::bad_alloc for a message it cannot allocate: escaping the thread, it
// would end the daemon (std::terminate). The failure is logged and the
// thread serves the next replan. The modifies are called on this thread,
// so that the kernel read that throws is the replan thread's.
TEST(ControlDaemon, AReplanThatThrowsIsLoggedAndTheNextIsDone)
{
	const std::thread::id test_thread = std::this_thread::get_id();
	std::atomic<bool> thrown{false}; // outlives d, whose kernel calls it
	InProcessDaemon d;
	ControlReply created;
	ASSERT_NO_FATAL_FAILURE(CreateWithRunningJob(d, &created));
	const std::string uuid = UuidOf(created.replication_pipe);
	auto modify = [&](uint32_t kibps) {
		CreateOrModifyCall call;
		call.source_system = testing::kTestHost;
		call.target_system = "node2";
		call.replication_pipe = created.replication_pipe;
		call.goal = "instance of CIM_SettingData { "
		            "ResyncRateLimitKiBps = " +
		            std::to_string(kibps) + "; };";
		ControlReply modified =
		        d.service_.Handle(InProcessDaemon::Create(call));
		EXPECT_TRUE(modified.ok) << modified.error;
	};
	auto rates = [&] {
		std::vector<uint32_t> started;
		for (const PairJobSpec &spec : d.board_.started)
			started.push_back(spec.rate_limit_kibps);
		return started;
	};

	::testing::internal::CaptureStderr();
	d.kernel_.SetReadHook([&] {
		if (std::this_thread::get_id() != test_thread &&
		    !thrown.exchange(true))
			throw std::bad_alloc();
	});
	modify(2048); // the old job stops; the replan that follows throws
	const bool old_job_ended =
	        d.board_.WaitFor([&] { return d.board_.stopped == 1; });
	for (int i = 0; i < 500 && !thrown; ++i)
		std::this_thread::sleep_for(milliseconds(10));
	EXPECT_TRUE(old_job_ended);
	EXPECT_TRUE(thrown) << "no kernel read off the test's thread";
	d.service_.RefreshPipe(uuid); // what the daemon's tick would do
	EXPECT_TRUE(d.board_.WaitFor([&] {
		return d.board_.started.size() == 2 && d.board_.running == 1;
	}));
	modify(4096); // again: this replan must be done
	EXPECT_TRUE(d.board_.WaitFor([&] {
		return d.board_.started.size() == 3 && d.board_.running == 1;
	})) << "the replan thread did not start the held-back job";
	d.kernel_.SetReadHook({});
	const std::string log = ::testing::internal::GetCapturedStderr();
	EXPECT_NE(log.find("refresh pipe " + uuid +
	                   " after a resync job ended: std::bad_alloc"),
	          std::string::npos)
	        << log;
	std::lock_guard lock(d.board_.mu);
	const std::vector<uint32_t> started = rates();
	ASSERT_EQ(started.size(), 3u);
	EXPECT_EQ(started[1], 2048u);
	EXPECT_EQ(started[2], 4096u);
}

// RefreshAll() and OnKernelEvent() run on the daemon's main loop (the
// periodic tick, SIGHUP, the kernel's events), where nothing else catches:
// a kernel call that throws there (NetlinkSocket's std::bad_alloc) would
// end the daemon (std::terminate). It is logged, and the next refresh and
// the next event are served.
TEST(ControlDaemon, AMainLoopRefreshOrEventThatThrowsIsLoggedAndTheNextIsDone)
{
	const std::thread::id test_thread = std::this_thread::get_id();
	InProcessDaemon d;
	ControlReply created;
	ASSERT_NO_FATAL_FAILURE(CreateWithRunningJob(d, &created));
	const std::string uuid = UuidOf(created.replication_pipe);
	KernelEvent changed;
	changed.type = KernelEventType::kPipeChanged;
	changed.pipe_id = uuid;
	KernelEvent lost;
	lost.type = KernelEventType::kOverrun;

	::testing::internal::CaptureStderr();
	std::atomic<int> thrown{0}; // outlives d, whose kernel calls it
	d.kernel_.SetEntryHook([&](testing::FakeKernel::Op op) {
		if (std::this_thread::get_id() == test_thread &&
		    (op == testing::FakeKernel::Op::kListPipes ||
		     op == testing::FakeKernel::Op::kGetPipe)) {
			++thrown;
			throw std::bad_alloc();
		}
	});
	EXPECT_NO_THROW(d.service_.RefreshAll());
	EXPECT_NO_THROW(d.service_.OnKernelEvent(changed));
	EXPECT_NO_THROW(d.service_.OnKernelEvent(lost));
	d.kernel_.SetEntryHook({});
	const std::string log = ::testing::internal::GetCapturedStderr();
	EXPECT_EQ(thrown, 3);
	EXPECT_NE(log.find("refresh: std::bad_alloc; the next periodic "
	                   "refresh tries again"),
	          std::string::npos)
	        << log;
	EXPECT_NE(log.find("kernel event pipe_changed of pipe " + uuid +
	                   ": std::bad_alloc"),
	          std::string::npos)
	        << log;
	EXPECT_NE(log.find("kernel event overrun: std::bad_alloc"),
	          std::string::npos)
	        << log;

	// The next ones are done: the pair paused in the kernel stops its
	// job on the event, and resumed there starts it on the refresh.
	ASSERT_TRUE(
	        d.kernel_
	                .SetPairState(uuid, "replipipe_0/a", PairState::kPaused)
	                .ok());
	d.service_.OnKernelEvent(changed);
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 0; }))
	        << "the event of the paused pair did not stop its job";
	ASSERT_TRUE(d.kernel_
	                    .SetPairState(uuid, "replipipe_0/a",
	                                  PairState::kSyncing)
	                    .ok());
	d.service_.RefreshAll();
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }))
	        << "the refresh of the resumed pair did not start its job";
}

TEST(ControlDaemon, RefreshPushesAStoredPipeTheKernelLacks)
{
	using std::chrono::milliseconds;
	using testing::FakeKernel;
	// First wait 1 s, far above the time between two RefreshAll() calls
	// below even on a loaded machine.
	InProcessDaemon d({}, PipePusher::Options{milliseconds(1000),
	                                          milliseconds(10000)});
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	const std::string uuid = UuidOf(created.replication_pipe);
	ASSERT_TRUE(d.kernel_.DeletePipe(uuid).ok());
	auto in_kernel = [&] {
		ControlReply st =
		        d.Call(InProcessDaemon::Op(ControlOp::kStatus, "db"));
		return st.ok && st.pipes.size() == 1 && st.pipes[0].in_kernel;
	};
	auto pushes = [&] { return d.kernel_.calls(FakeKernel::Op::kSetPipe); };
	const int before = pushes();

	// Found missing: not pushed at once (start-up has just tried).
	d.service_.RefreshAll();
	ASSERT_TRUE(d.service_.WaitPushesIdle(milliseconds(5000)));
	EXPECT_EQ(pushes(), before);
	EXPECT_FALSE(in_kernel());

	// After the first wait: pushed, and the kernel refuses.
	std::this_thread::sleep_for(milliseconds(1100));
	d.kernel_.FailNext(ENODEV, FakeKernel::Op::kSetPipe,
	                   "backstore replipipe_0/a: not found");
	d.service_.RefreshAll();
	ASSERT_TRUE(d.service_.WaitPushesIdle(milliseconds(5000)));
	EXPECT_EQ(pushes(), before + 1);
	// Within the next wait (1 s from that push) nothing is tried.
	d.service_.RefreshAll();
	ASSERT_TRUE(d.service_.WaitPushesIdle(milliseconds(5000)));
	EXPECT_EQ(pushes(), before + 1);
	EXPECT_FALSE(in_kernel());

	// After it: pushed, in the kernel, its pair resyncs.
	std::this_thread::sleep_for(milliseconds(1100));
	d.service_.RefreshAll();
	ASSERT_TRUE(d.service_.WaitPushesIdle(milliseconds(5000)));
	EXPECT_EQ(pushes(), before + 2);
	ASSERT_TRUE(d.kernel_.Find(uuid).has_value());
	EXPECT_TRUE(in_kernel());
	EXPECT_TRUE(WaitForState(d, "db", "replipipe_0/a", "Syncing"));
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));
	// In the kernel: no more pushes.
	std::this_thread::sleep_for(milliseconds(1100));
	d.service_.RefreshAll();
	ASSERT_TRUE(d.service_.WaitPushesIdle(milliseconds(5000)));
	EXPECT_EQ(pushes(), before + 2);
}

// Start-up found the kernel's definition of a stored pipe different from
// the store's and pushed the stored one, which the kernel refused for the
// moment (EBUSY: a replaced pair's writes still drain, decision 53). That
// one attempt was all: the kernel kept the other definition until the next
// start, since the pusher only pushed pipes the kernel lacked. It is now
// pushed again with the pusher's back-off until the kernel takes it, and
// the log says so (decision 59).
TEST(ControlDaemon, AStoredDefinitionTheKernelRefusedAtStartIsPushedAgain)
{
	using testing::FakeKernel;
	// No wait: each refresh below pushes what is due.
	InProcessDaemon d(
	        {}, PipePusher::Options{milliseconds(0), milliseconds(0)});
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	const std::string uuid = UuidOf(created.replication_pipe);
	d.kernel_.ForcePairState(uuid, "replipipe_0/a", PairState::kInSync);
	// What the kernel kept differs (as after a modify whose store write
	// a killed daemon never made).
	auto stored = d.pipes_.GetPipe(uuid);
	ASSERT_TRUE(stored.ok());
	KernelPipeSpec drift = ToKernelSpec(*stored);
	drift.mode = Mode::kAsynchronous;
	ASSERT_TRUE(d.kernel_.SetPipe(drift).ok());
	const std::string busy = "source backstore's removed pair still has "
	                         "writes in flight to its target";

	d.kernel_.FailNext(EBUSY, FakeKernel::Op::kSetPipe, busy);
	auto report = d.pipes_.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	EXPECT_EQ(d.kernel_.Find(uuid)->mode, Mode::kAsynchronous);

	const LogLevel level = GetLogLevel();
	SetLogLevel(LogLevel::kNotice); // the replacement is a notice
	::testing::internal::CaptureStderr();
	auto refresh = [&d] {
		d.service_.RefreshAll();
		return d.service_.WaitPushesIdle(milliseconds(5000));
	};
	// Refused again: tried again at the next refresh.
	d.kernel_.FailNext(EBUSY, FakeKernel::Op::kSetPipe, busy);
	ASSERT_TRUE(refresh());
	EXPECT_EQ(d.kernel_.Find(uuid)->mode, Mode::kAsynchronous);
	ASSERT_TRUE(refresh());
	const int pushes = d.kernel_.calls(FakeKernel::Op::kSetPipe);
	// Done: nothing more is pushed.
	ASSERT_TRUE(refresh());
	const std::string log = ::testing::internal::GetCapturedStderr();
	SetLogLevel(level);
	auto k = d.kernel_.Find(uuid);
	ASSERT_TRUE(k);
	EXPECT_EQ(k->mode, Mode::kSynchronous)
	        << "the stored definition was not pushed again: " << log;
	ASSERT_EQ(k->pairs.size(), 1u);
	EXPECT_EQ(k->pairs[0].state, PairState::kInSync) << "the pair was "
	                                                    "replaced";
	EXPECT_EQ(d.kernel_.calls(FakeKernel::Op::kSetPipe), pushes);
	EXPECT_NE(log.find("definition in the kernel differs from the "
	                   "store's, and pushing the stored one failed: "),
	          std::string::npos)
	        << log;
	EXPECT_NE(log.find(busy), std::string::npos) << log;
	EXPECT_NE(log.find("the kernel's definition, which differed from the "
	                   "store's, was replaced by the stored one"),
	          std::string::npos)
	        << log;
}

TEST(ControlDaemon, DeleteStopsJobs)
{
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	ASSERT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 1; }));
	ControlReply deleted =
	        d.Call(InProcessDaemon::Op(ControlOp::kDelete, "db"));
	ASSERT_TRUE(deleted.ok) << deleted.error;
	EXPECT_EQ(deleted.replication_pipe, created.replication_pipe);
	EXPECT_TRUE(d.board_.WaitFor([&] { return d.board_.running == 0; }));
	EXPECT_TRUE(
	        d.Call(InProcessDaemon::Op(ControlOp::kList)).pipes.empty());
	EXPECT_FALSE(d.kernel_.Find(UuidOf(created.replication_pipe)));
}

// Event streams live as long as their watchers. Counted against the same
// 64 connections as requests, 64 watchers (one per pipe, from a monitor)
// left every command "too many connections".
TEST(ControlDaemon, EventStreamsHaveACapOfTheirOwnAndLeaveRoomForRequests)
{
	InProcessDaemon d;
	const size_t max_streams = ControlServerOptions{}.max_streams;
	const size_t max_connections = ControlServerOptions{}.max_connections;
	std::vector<ControlClient> streams;
	for (size_t i = 0; i < max_streams; ++i) {
		auto client = ControlClient::Connect(d.socket_path());
		ASSERT_TRUE(client.ok()) << client.status().message();
		auto reply =
		        client->Call(InProcessDaemon::Op(ControlOp::kEvents),
		                     milliseconds(5000));
		ASSERT_TRUE(reply.ok()) << reply.status().message();
		ASSERT_TRUE(reply->ok)
		        << "stream " << i << ": " << reply->error;
		streams.push_back(std::move(*client));
	}
	auto extra = ControlClient::Connect(d.socket_path());
	ASSERT_TRUE(extra.ok()) << extra.status().message();
	auto refused = extra->Call(InProcessDaemon::Op(ControlOp::kEvents),
	                           milliseconds(5000));
	ASSERT_TRUE(refused.ok()) << refused.status().message();
	EXPECT_FALSE(refused->ok) << "a stream past the cap was served";
	EXPECT_EQ(refused->code, kCodeBusy);

	// Requests keep all of theirs: max_connections held at once.
	std::vector<ControlClient> waiting;
	for (size_t i = 0; i + 1 < max_connections; ++i) {
		auto client = ControlClient::Connect(d.socket_path());
		ASSERT_TRUE(client.ok()) << client.status().message();
		waiting.push_back(std::move(*client));
	}
	auto last = ControlClient::Connect(d.socket_path());
	ASSERT_TRUE(last.ok()) << last.status().message();
	auto listed = last->Call(InProcessDaemon::Op(ControlOp::kList),
	                         milliseconds(5000));
	ASSERT_TRUE(listed.ok()) << listed.status().message();
	EXPECT_TRUE(listed->ok) << listed->error;
}

// The kernel's EVT_PAIR_STATE names no pipe: the daemon tells the state
// once, with the pipe's name and stored target, not once without a name
// and again from the refresh that follows.
TEST(ControlDaemon, AKernelPairStateEventIsToldOnceWithThePipesName)
{
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	const std::string uuid = UuidOf(created.replication_pipe);
	auto sub = d.hub_.Subscribe();
	sub->Wait(milliseconds(200)); // the snapshot
	d.kernel_.ForcePairState(uuid, "replipipe_0/a", PairState::kDegraded);
	KernelEvent event;
	event.type = KernelEventType::kPairState;
	event.pipe_id = uuid;
	event.pair = KernelPairStatus{};
	event.pair->source = "replipipe_0/a";
	event.pair->target = "/dev/sdb";
	event.pair->state = PairState::kDegraded;
	d.service_.OnKernelEvent(event);
	std::vector<ControlEvent> told;
	for (int round = 0; round < 2; round++)
		for (const ControlEvent &e : sub->Wait(milliseconds(200)))
			if (e.type == "pair_state" &&
			    e.source == "replipipe_0/a")
				told.push_back(e);
	ASSERT_EQ(told.size(), 1u)
	        << "first told with name '"
	        << (told.empty() ? "" : told.front().name) << "'";
	EXPECT_EQ(told.front().state, "Degraded");
	EXPECT_EQ(told.front().name, "db");
	EXPECT_EQ(told.front().target, "/dev/sdb");
}

// A delete the kernel refuses whose store restore fails too leaves the
// record marked for deletion: list and status no longer show the pipe, and
// the event snapshot must not either (its pairs' states stayed in the hub).
TEST(ControlDaemon, ADeleteLeftMarkedLeavesTheEventSnapshot)
{
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok) << created.error;
	auto has_pair = [&d] {
		auto sub = d.hub_.Subscribe();
		for (const ControlEvent &e : sub->Wait(milliseconds(200)))
			if (e.source == "replipipe_0/a")
				return true;
		return false;
	};
	ASSERT_TRUE(has_pair()) << "the pair is not in the event snapshot";

	std::atomic<bool> failing{false};
	d.kernel_.SetEntryHook([&](testing::FakeKernel::Op op) {
		if (op == testing::FakeKernel::Op::kDeletePipe)
			failing = true;
	});
	d.store_.SetFaultHookForTest([&](Store::SaveStep) {
		return failing ? Status::Error("disk full", ENOSPC) : Status();
	});
	d.kernel_.FailNext(EPERM, testing::FakeKernel::Op::kDeletePipe);
	ControlReply deleted =
	        d.Call(InProcessDaemon::Op(ControlOp::kDelete, "db"));
	d.kernel_.SetEntryHook({});
	d.store_.SetFaultHookForTest({});
	EXPECT_FALSE(deleted.ok);
	EXPECT_NE(deleted.error.find("stays marked for deletion"),
	          std::string::npos)
	        << deleted.error;
	EXPECT_TRUE(
	        d.Call(InProcessDaemon::Op(ControlOp::kList)).pipes.empty());
	EXPECT_FALSE(has_pair()) << "the event snapshot still shows the pair "
	                            "of a pipe marked for deletion";
}

// A create whose store write and undo both failed leaves its record marked
// pending-create and its pipe in the kernel. The periodic refresh settles
// it while the daemon runs (before, only the next start did): a refusal
// of the kernel is logged once however many refreshes meet it, then the
// pipe is deleted, the record goes, and its endpoints make a new pipe.
TEST(ControlDaemon, ARefreshRollsBackACreateLeftMarked)
{
	using testing::FakeKernel;
	InProcessDaemon d;
	std::atomic<bool> failing{false};
	d.kernel_.SetEntryHook([&](FakeKernel::Op op) {
		if (op == FakeKernel::Op::kSetPipe)
			failing = true;
	});
	d.store_.SetFaultHookForTest([&](Store::SaveStep) {
		return failing ? Status::Error("disk full", ENOSPC) : Status();
	});
	d.kernel_.FailNext(EIO, FakeKernel::Op::kDeletePipe);
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	d.kernel_.SetEntryHook({});
	d.store_.SetFaultHookForTest({});
	ASSERT_FALSE(created.ok);
	ASSERT_EQ(d.kernel_.Snapshot().size(), 1u);
	const std::string uuid = d.kernel_.Snapshot()[0].id;

	const LogLevel level = GetLogLevel();
	SetLogLevel(LogLevel::kNotice); // the roll-back is a notice
	::testing::internal::CaptureStderr();
	// Settled off the main loop: each refresh's settling is waited for.
	auto refresh = [&d] {
		d.service_.RefreshAll();
		return d.service_.WaitSettlesIdle(milliseconds(5000));
	};
	d.kernel_.FailNext(EBUSY, FakeKernel::Op::kDeletePipe);
	ASSERT_TRUE(refresh());
	d.kernel_.FailNext(EBUSY, FakeKernel::Op::kDeletePipe);
	ASSERT_TRUE(refresh());
	EXPECT_TRUE(d.kernel_.Find(uuid));
	ASSERT_TRUE(refresh());
	const std::string log = ::testing::internal::GetCapturedStderr();
	SetLogLevel(level);
	const std::string refused = "its record stays marked, and replipiped "
	                            "tries again";
	const size_t first = log.find(refused);
	EXPECT_NE(first, std::string::npos) << log;
	EXPECT_EQ(log.find(refused, first + 1), std::string::npos)
	        << "a refusal logged at every refresh: " << log;
	EXPECT_NE(log.find("rolled back: deleted from the kernel, removed "
	                   "from the store"),
	          std::string::npos)
	        << log;
	EXPECT_FALSE(d.kernel_.Find(uuid));
	ControlReply again = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	EXPECT_TRUE(again.ok) << again.error;
}

TEST(ControlDaemon, EventsStreamSnapshotAndChanges)
{
	InProcessDaemon d;
	ControlReply created = d.Call(InProcessDaemon::Create(
	        d.Call({"replipipe_0/a"}, {"/dev/sdb"})));
	ASSERT_TRUE(created.ok);

	auto client = ControlClient::Connect(d.socket_path());
	ASSERT_TRUE(client.ok()) << client.status().message();
	auto reply = client->Call(InProcessDaemon::Op(ControlOp::kEvents),
	                          milliseconds(5000));
	ASSERT_TRUE(reply.ok()) << reply.status().message();
	EXPECT_TRUE(reply->ok);

	// The snapshot: the pair's current state.
	auto first = client->ReadEvent(milliseconds(5000));
	ASSERT_TRUE(first.ok()) << first.status().message();
	ASSERT_TRUE(first->has_value());
	EXPECT_EQ((*first)->type, "pair_state");
	EXPECT_EQ((*first)->source, "replipipe_0/a");
	EXPECT_EQ((*first)->state, "Syncing");
	EXPECT_EQ((*first)->instance_id,
	          "replipipe:" + UuidOf(created.replication_pipe));

	ASSERT_TRUE(d.Call(InProcessDaemon::Op(ControlOp::kPause, "db")).ok);
	bool saw_paused = false;
	for (int i = 0; i < 10 && !saw_paused; ++i) {
		auto event = client->ReadEvent(milliseconds(5000));
		ASSERT_TRUE(event.ok()) << event.status().message();
		ASSERT_TRUE(event->has_value());
		saw_paused = (*event)->type == "pair_state" &&
		             (*event)->state == "Paused";
	}
	EXPECT_TRUE(saw_paused);
	EXPECT_EQ(d.hub_.subscriber_count(), 1u);

	// Stopping the server ends the stream.
	d.server_->Stop();
	for (;;) {
		auto event = client->ReadEvent(milliseconds(5000));
		ASSERT_TRUE(event.ok()) << event.status().message();
		if (!event->has_value())
			break;
	}
}

TEST(ControlDaemon, PermissionDenied)
{
	InProcessDaemon d([](const PeerCredentials &peer) {
		// As if the peer were uid 1000 outside the group.
		return DecidePeer({peer.pid, 1000, 1000}, {100}, gid_t{990}, 0);
	});
	auto reply = CallDaemon(d.socket_path(),
	                        InProcessDaemon::Op(ControlOp::kList));
	ASSERT_TRUE(reply.ok()) << reply.status().message();
	EXPECT_FALSE(reply->ok);
	EXPECT_EQ(reply->code, kCodePermissionDenied);
	EXPECT_EQ(reply->error, "permission denied: uid 1000 is not root and "
	                        "not in group replipipe");
	EXPECT_EQ(ExitCodeForReply(*reply), kExitNoPermission);
}

// A connection's thread does more than call the handler (which has its own
// catch): it checks the peer, reads the request, subscribes to the events.
// An exception there (NetlinkSocket's std::bad_alloc is one the daemon
// throws on purpose) must not escape the thread, which would end the
// daemon (std::terminate): that client's connection is closed, the failure
// logged with who it was, and the next client is served.
TEST(ControlDaemon, AConnectionThatThrowsIsClosedAndTheNextIsServed)
{
	std::atomic<int> checks{0};
	InProcessDaemon d([&checks](const PeerCredentials &peer) {
		if (++checks == 1)
			throw std::bad_alloc();
		return CheckPeer(peer);
	});
	::testing::internal::CaptureStderr();
	auto failed = CallDaemon(d.socket_path(),
	                         InProcessDaemon::Op(ControlOp::kList));
	const std::string log = ::testing::internal::GetCapturedStderr();
	EXPECT_FALSE(failed.ok())
	        << "a reply came from a connection that threw";
	EXPECT_NE(log.find("control: connection of pid " +
	                   std::to_string(::getpid())),
	          std::string::npos)
	        << log;
	EXPECT_NE(log.find("std::bad_alloc"), std::string::npos) << log;

	ControlReply listed = d.Call(InProcessDaemon::Op(ControlOp::kList));
	EXPECT_TRUE(listed.ok) << listed.error;
	EXPECT_EQ(checks, 2);
}

TEST(ControlDaemon, MalformedRequestGetsBadRequest)
{
	InProcessDaemon d;
	auto client = ControlClient::Connect(d.socket_path());
	ASSERT_TRUE(client.ok());
	ASSERT_TRUE(WriteAllToSocket(client->fd(), "this is not json\n").ok());
	LineReader reader(client->fd());
	auto line = reader.ReadLine(milliseconds(5000));
	ASSERT_TRUE(line.ok() && line->has_value());
	auto reply = DecodeReply(**line);
	ASSERT_TRUE(reply.ok());
	EXPECT_FALSE(reply->ok);
	EXPECT_EQ(reply->code, kCodeBadRequest);
	EXPECT_EQ(ExitCodeForReply(*reply), kExitProtocol);
}

// A Goal string with a \x escape of a UTF-16 surrogate used to become bytes
// that are not UTF-8; the error reply quoting it then threw while being
// encoded, outside any try, and std::terminate ended the daemon. Any client
// of the socket could do that.
TEST(ControlDaemon, SurrogateInGoalIsRefusedAndTheDaemonLives)
{
	InProcessDaemon d;
	for (const char *goal :
	     {"instance of CIM_SettingData { Mode = \"\\xD800\"; };",
	      "instance of CIM_SettingData { ElementName = \"\\xDBFF\"; };"}) {
		CreateOrModifyCall call =
		        d.Call({"replipipe_0/a"}, {"/dev/sdb"});
		call.goal = goal;
		ControlReply reply = d.Call(InProcessDaemon::Create(call));
		EXPECT_FALSE(reply.ok);
		EXPECT_EQ(reply.return_value, ReturnValue::kInvalidParameter);
		EXPECT_NE(reply.error.find("surrogates"), std::string::npos)
		        << reply.error;
	}
	EXPECT_TRUE(d.kernel_.Snapshot().empty());
	EXPECT_TRUE(d.Call(InProcessDaemon::Op(ControlOp::kList)).ok);
}

// JSON "\u0000" in a parameter: the request decodes to a string with a NUL,
// which the method refuses (5) before it reaches stat() or the kernel.
TEST(ControlDaemon, NulInAParameterIsInvalid)
{
	InProcessDaemon d;
	auto client = ControlClient::Connect(d.socket_path());
	ASSERT_TRUE(client.ok());
	const std::string request =
	        R"({"v":1,"op":"create_or_modify","PipeElementName":"db",)"
	        R"("SourceSystem":"localhost","TargetSystem":"node2",)"
	        R"("SourceEndpoint":["replipipe_0/a"],)"
	        R"("TargetEndpoint":["/dev/sdb\u0000.old"]})"
	        "\n";
	ASSERT_TRUE(WriteAllToSocket(client->fd(), request).ok());
	LineReader reader(client->fd());
	auto line = reader.ReadLine(milliseconds(5000));
	ASSERT_TRUE(line.ok() && line->has_value());
	auto reply = DecodeReply(**line);
	ASSERT_TRUE(reply.ok());
	EXPECT_FALSE(reply->ok);
	EXPECT_EQ(reply->return_value, ReturnValue::kInvalidParameter);
	EXPECT_NE(reply->error.find("TargetEndpoint[0] contains the control "
	                            "character 0x00"),
	          std::string::npos)
	        << reply->error;
	EXPECT_TRUE(d.kernel_.Snapshot().empty());
	EXPECT_TRUE(d.pipes_.ListPipes().empty());
}

TEST(ControlDaemon, ConcurrentClients)
{
	InProcessDaemon d;
	ASSERT_TRUE(d.Call(InProcessDaemon::Create(
	                           d.Call({"replipipe_0/a"}, {"/dev/sdb"})))
	                    .ok);
	std::vector<std::jthread> threads;
	std::atomic<int> good{0};
	for (int t = 0; t < 8; ++t)
		threads.emplace_back([&] {
			for (int i = 0; i < 20; ++i) {
				auto r =
				        CallDaemon(d.socket_path(),
				                   InProcessDaemon::Op(
				                           ControlOp::kStatus));
				if (r.ok() && r->ok && r->pipes.size() == 1)
					++good;
			}
		});
	threads.clear();
	EXPECT_EQ(good.load(), 160);
}

TEST(ControlDaemon, SocketFileLifecycle)
{
	InProcessDaemon d;
	const std::string path = d.socket_path();
	struct stat st {
	};
	ASSERT_EQ(::stat(path.c_str(), &st), 0);
	EXPECT_TRUE(S_ISSOCK(st.st_mode));
	EXPECT_EQ(st.st_mode & 0777, 0660u);
	struct stat dir_st {
	};
	ASSERT_EQ(::stat((d.dir_ / "run").c_str(), &dir_st), 0);
	EXPECT_EQ(dir_st.st_mode & 0777, 0755u);

	// A second server on a live socket is refused.
	ControlServerOptions options;
	options.socket_path = path;
	auto second = ControlServer::Start(
	        options, [](const ControlRequest &) { return ControlReply{}; },
	        nullptr);
	ASSERT_FALSE(second.ok());
	EXPECT_NE(second.status().message().find("already listening"),
	          std::string::npos);

	// Stop removes the file; clients then find nobody.
	d.server_->Stop();
	EXPECT_NE(::stat(path.c_str(), &st), 0);
	auto gone = CallDaemon(path, InProcessDaemon::Op(ControlOp::kList));
	EXPECT_FALSE(gone.ok());

	// A stale socket (nobody listening) is replaced.
	{
		UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
		sockaddr_un addr{};
		addr.sun_family = AF_UNIX;
		std::strncpy(addr.sun_path, path.c_str(),
		             sizeof(addr.sun_path) - 1);
		ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr *>(&addr),
		                 sizeof(addr)),
		          0);
	}
	auto third = ControlServer::Start(
	        options, [](const ControlRequest &) { return ControlReply{}; },
	        nullptr);
	ASSERT_TRUE(third.ok()) << third.status().message();
	EXPECT_TRUE(
	        CallDaemon(path, InProcessDaemon::Op(ControlOp::kList)).ok());
	(*third)->Stop();

	// Anything else in the way is left alone.
	std::ofstream(path) << "not a socket";
	auto fourth = ControlServer::Start(
	        options, [](const ControlRequest &) { return ControlReply{}; },
	        nullptr);
	EXPECT_FALSE(fourth.ok());
	EXPECT_EQ(::stat(path.c_str(), &st), 0);
	EXPECT_TRUE(S_ISREG(st.st_mode));
}

// A socket whose listener never accepts (a daemon that hangs, its queue of
// pending connections full) is not stale: a second server refuses it within
// the probe's bound and leaves the file, instead of waiting to connect
// forever.
TEST(ControlDaemon, SocketOfAHungListenerIsNotReplaced)
{
	::replipipe::testing::TempDir dir;
	const std::string path = dir.path() + "/hung.sock";
	UniqueFd listener = testing::ListenOnly(path, 0);
	ASSERT_TRUE(listener.valid());
	int err = 0;
	std::vector<UniqueFd> queued = testing::FillListenQueue(path, &err);
	ASSERT_EQ(err, EAGAIN) << std::strerror(err);

	ControlServerOptions options;
	options.socket_path = path;
	auto start = std::async(std::launch::async, [&] {
		return ControlServer::Start(
		        options,
		        [](const ControlRequest &) { return ControlReply{}; },
		        nullptr);
	});
	ASSERT_EQ(start.wait_for(std::chrono::seconds(20)),
	          std::future_status::ready)
	        << "ControlServer::Start still connecting after 20 s";
	auto server = start.get();
	ASSERT_FALSE(server.ok());
	EXPECT_EQ(server.status().err(), EADDRINUSE);
	EXPECT_NE(server.status().message().find("a process listens on " +
	                                         path +
	                                         " but accepts no connection"),
	          std::string::npos)
	        << server.status().message();
	struct stat st {
	};
	ASSERT_EQ(::stat(path.c_str(), &st), 0);
	EXPECT_TRUE(S_ISSOCK(st.st_mode));
}

} // namespace
} // namespace replipipe
