// ResyncJobs and EventHub: the daemon's job table and event fan-out.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "daemon_events.h"
#include "daemon_jobs.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;

// A job that ends as told: OK, an error, or when stopped.
class ScriptedJob final : public PairJob
{
public:
	ScriptedJob(Status result, bool block) : result_(result), block_(block)
	{
	}
	Status Run() override
	{
		while (block_ && !stop_.load())
			std::this_thread::sleep_for(milliseconds(1));
		if (stop_.load())
			return Status::Error("stopped", ECANCELED);
		return result_;
	}
	void RequestStop() override { stop_.store(true); }
	ResyncProgress progress() const override
	{
		ResyncProgress p;
		p.done_bytes = 10;
		p.total_bytes = 10;
		return p;
	}

private:
	Status result_;
	bool block_;
	std::atomic<bool> stop_{false};
};

PipeRecord Pipe()
{
	PipeRecord pipe;
	pipe.instance_id = "11111111-2222-4333-8444-555555555555";
	pipe.name = "db";
	pipe.pairs = {{"replipipe_0/a", "/dev/sdb"}};
	return pipe;
}

KernelPipeStatus Kernel(PairState state, uint64_t serial = 0)
{
	KernelPipeStatus k;
	k.id = Pipe().instance_id;
	k.region_kib = 64;
	KernelPairStatus pair;
	pair.source = "replipipe_0/a";
	pair.target = "/dev/sdb";
	pair.state = state;
	pair.serial = serial;
	k.pairs.push_back(pair);
	return k;
}

bool Eventually(const std::function<bool()> &pred)
{
	for (int i = 0; i < 500; ++i) {
		if (pred())
			return true;
		std::this_thread::sleep_for(milliseconds(5));
	}
	return false;
}

struct Recorder {
	std::mutex mu;
	std::vector<ControlEvent> events;
	ResyncJobs::EventSink Sink()
	{
		return [this](const ControlEvent &e) {
			std::lock_guard lock(mu);
			events.push_back(e);
		};
	}
	int Count(const std::string &type)
	{
		std::lock_guard lock(mu);
		int n = 0;
		for (const auto &e : events)
			n += e.type == type;
		return n;
	}
};

// A job factory that records the spec of every job it makes; each job runs
// until it is stopped.
struct SpecLog {
	std::mutex mu;
	std::vector<PairJobSpec> specs;
	PairJobFactory Factory()
	{
		return [this](const PairJobSpec &spec)
		               -> Result<std::unique_ptr<PairJob>> {
			std::lock_guard lock(mu);
			specs.push_back(spec);
			return std::unique_ptr<PairJob>(
			        new ScriptedJob(Status(), true));
		};
	}
	size_t Made()
	{
		std::lock_guard lock(mu);
		return specs.size();
	}
	PairJobSpec Spec(size_t i)
	{
		std::lock_guard lock(mu);
		return specs.at(i);
	}
};

TEST(ControlJobs, FailedJobIsRetriedAfterBackoff)
{
	std::atomic<int> made{0};
	Recorder rec;
	ResyncJobs jobs(
	        [&](const PairJobSpec &) -> Result<std::unique_ptr<PairJob>> {
		        ++made;
		        return std::unique_ptr<PairJob>(new ScriptedJob(
		                Status::Error("copy failed", EIO), false));
	        },
	        rec.Sink(),
	        ResyncJobsOptions{milliseconds(300), milliseconds(1200),
	                          milliseconds(0)});
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing));
	ASSERT_TRUE(
	        Eventually([&] { return rec.Count("resync_failed") == 1; }));
	// Within the back-off nothing starts again.
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing));
	EXPECT_EQ(made.load(), 1);
	std::this_thread::sleep_for(milliseconds(400));
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing));
	EXPECT_TRUE(Eventually([&] { return made.load() == 2; }));
	EXPECT_EQ(rec.Count("resync_started"), 2);
}

TEST(ControlJobs, FactoryFailureIsReported)
{
	Recorder rec;
	ResyncJobs jobs(
	        [](const PairJobSpec &) -> Result<std::unique_ptr<PairJob>> {
		        return Status::Error("open /dev/sdb: Permission denied",
		                             EACCES);
	        },
	        rec.Sink());
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing));
	ASSERT_TRUE(
	        Eventually([&] { return rec.Count("resync_failed") == 1; }));
	{
		std::lock_guard lock(rec.mu);
		EXPECT_NE(rec.events.back().message.find("Permission denied"),
		          std::string::npos);
	}
	EXPECT_FALSE(
	        jobs.Progress(Pipe().instance_id, "replipipe_0/a").has_value());
}

TEST(ControlJobs, StopsWhenNotSyncingAndRestartsOnNewSettings)
{
	SpecLog made;
	Recorder rec;
	ResyncJobs jobs(made.Factory(), rec.Sink(),
	                ResyncJobsOptions{milliseconds(1), milliseconds(1),
	                                  milliseconds(0)});
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing));
	ASSERT_TRUE(Eventually([&] { return jobs.running() == 1; }));
	auto progress = jobs.Progress(Pipe().instance_id, "replipipe_0/a");
	ASSERT_TRUE(progress.has_value());
	EXPECT_TRUE(progress->running);

	// A new rate limit restarts the job with it.
	PipeRecord limited = Pipe();
	limited.settings.resync_rate_kibps = 1024;
	jobs.SyncPipe(limited, Kernel(PairState::kSyncing));
	ASSERT_TRUE(Eventually([&] { return made.Made() == 2; }));
	EXPECT_EQ(made.Spec(1).rate_limit_kibps, 1024u);
	EXPECT_EQ(made.Spec(1).region_bytes, 64u * 1024);
	EXPECT_EQ(jobs.running(), 1u);

	// Paused in the kernel: the job stops; its progress stays.
	jobs.SyncPipe(limited, Kernel(PairState::kPaused));
	EXPECT_EQ(jobs.running(), 0u);
	EXPECT_TRUE(
	        Eventually([&] { return rec.Count("resync_stopped") == 2; }));
	progress = jobs.Progress(Pipe().instance_id, "replipipe_0/a");
	ASSERT_TRUE(progress.has_value());
	EXPECT_FALSE(progress->running);

	// After StopAll nothing starts.
	jobs.StopAll();
	jobs.SyncPipe(limited, Kernel(PairState::kSyncing));
	EXPECT_EQ(jobs.running(), 0u);
	EXPECT_EQ(made.Made(), 2u);
}

TEST(ControlJobs, PairsNotInTheStoreGetNoJob)
{
	std::atomic<int> made{0};
	ResyncJobs jobs(
	        [&](const PairJobSpec &) -> Result<std::unique_ptr<PairJob>> {
		        ++made;
		        return std::unique_ptr<PairJob>(
		                new ScriptedJob(Status(), false));
	        },
	        nullptr);
	PipeRecord other = Pipe();
	other.pairs[0].target = "/dev/sdz"; // the kernel's pair differs
	jobs.SyncPipe(other, Kernel(PairState::kSyncing));
	EXPECT_EQ(made.load(), 0);
}

// A job carries the serial of the pair it was planned for (its claims name
// it); a pair replaced with the same source and target has a new serial,
// and its job is restarted for the new pair.
TEST(ControlJobs, JobCarriesThePairSerial)
{
	SpecLog made;
	ResyncJobs jobs(made.Factory(), nullptr,
	                ResyncJobsOptions{milliseconds(1), milliseconds(1),
	                                  milliseconds(0)});
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing, 41));
	ASSERT_TRUE(Eventually([&] { return made.Made() == 1; }));
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing, 41)); // same pair
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing, 42)); // replaced
	ASSERT_TRUE(Eventually([&] { return made.Made() == 2; }));
	EXPECT_EQ(made.Spec(0).pair_serial, 41u);
	EXPECT_EQ(made.Spec(1).pair_serial, 42u);
	EXPECT_EQ(jobs.running(), 1u);
}

// The kernel refused a claim with ESTALE: the pair the job was planned for
// was replaced. That is no resync failure: no resync_failed event, no
// back-off; the next SyncPipe starts a job for the new pair at once.
TEST(ControlJobs, StaleClaimStopsTheJobQuietly)
{
	std::atomic<int> made{0};
	Recorder rec;
	ResyncJobs jobs(
	        [&](const PairJobSpec &spec)
	                -> Result<std::unique_ptr<PairJob>> {
		        ++made;
		        if (spec.pair_serial == 7)
			        return std::unique_ptr<PairJob>(new ScriptedJob(
			                Status::Error("resync pipe x pair "
			                              "replipipe_0/a: "
			                              "kernel RESYNC_CLAIM: "
			                              "the pair was "
			                              "replaced since (another "
			                              "serial): "
			                              "Stale file handle",
			                              ESTALE),
			                false));
		        return std::unique_ptr<PairJob>(
		                new ScriptedJob(Status(), true));
	        },
	        rec.Sink(),
	        ResyncJobsOptions{milliseconds(60000), milliseconds(60000),
	                          milliseconds(60000)});
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing, 7));
	ASSERT_TRUE(
	        Eventually([&] { return rec.Count("resync_stopped") == 1; }));
	EXPECT_EQ(rec.Count("resync_failed"), 0);
	{
		std::lock_guard lock(rec.mu);
		EXPECT_EQ(rec.events.back().message, "the pair was replaced");
	}
	// Planned again (the new pair): starts now, despite a minute of
	// back-off and of re-run delay.
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing, 8));
	EXPECT_TRUE(Eventually([&] { return made.load() == 2; }));
	EXPECT_TRUE(Eventually([&] { return jobs.running() == 1; }));
	EXPECT_EQ(rec.Count("resync_failed"), 0);
}

// Waiting for a replaced job can take seconds: with a kernel reader the
// jobs are started from the kernel's state after the wait, not from the
// snapshot SyncPipe was given.
TEST(ControlJobs, PlansAgainFromTheKernelAfterJoining)
{
	SpecLog made;
	std::atomic<int> reads{0};
	KernelPipeReader read = [&](const std::string &pipe_id)
	        -> Result<std::optional<KernelPipeStatus>> {
		EXPECT_EQ(pipe_id, Pipe().instance_id);
		++reads;
		return std::optional<KernelPipeStatus>(
		        Kernel(PairState::kSyncing, 3)); // replaced again
	};
	ResyncJobs jobs(made.Factory(), nullptr,
	                ResyncJobsOptions{milliseconds(1), milliseconds(1),
	                                  milliseconds(0)},
	                read);
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing, 1));
	ASSERT_TRUE(Eventually([&] { return jobs.running() == 1; }));
	EXPECT_EQ(reads.load(), 0); // nothing joined, nothing re-read
	jobs.SyncPipe(Pipe(), Kernel(PairState::kSyncing, 2));
	EXPECT_EQ(reads.load(), 1);
	ASSERT_TRUE(Eventually([&] { return made.Made() == 2; }));
	EXPECT_EQ(made.Spec(1).pair_serial, 3u);
}

TEST(ControlEvents, SnapshotDedupAndOverflow)
{
	EventHub hub(4);
	EXPECT_TRUE(hub.UpdatePairState("replipipe:x", "db", "replipipe_0/a",
	                                "/dev/sdb", "Syncing"));
	EXPECT_FALSE(hub.UpdatePairState("replipipe:x", "db", "replipipe_0/a",
	                                 "/dev/sdb", "Syncing"));
	auto sub = hub.Subscribe();
	auto events = sub->Wait(milliseconds(100));
	ASSERT_EQ(events.size(), 1u);
	EXPECT_EQ(events[0].type, "pair_state");
	EXPECT_EQ(events[0].state, "Syncing");

	EXPECT_TRUE(hub.UpdatePairState("replipipe:x", "db", "replipipe_0/a",
	                                "/dev/sdb", "InSync"));
	events = sub->Wait(milliseconds(100));
	ASSERT_EQ(events.size(), 1u);
	EXPECT_EQ(events[0].state, "InSync");

	// A reader that falls behind gets one events_lost.
	for (int i = 0; i < 10; ++i) {
		ControlEvent e;
		e.type = "resync_started";
		hub.Publish(e);
	}
	events = sub->Wait(milliseconds(100));
	ASSERT_EQ(events.size(), 1u);
	EXPECT_EQ(events[0].type, "events_lost");
	// ... and then events again.
	ControlEvent deleted;
	deleted.type = "pipe_deleted";
	deleted.instance_id = "replipipe:x";
	hub.Publish(deleted);
	events = sub->Wait(milliseconds(100));
	ASSERT_EQ(events.size(), 1u);
	EXPECT_FALSE(events[0].time.empty());
	EXPECT_TRUE(hub.PairStates().empty()); // forgotten with the pipe

	EXPECT_EQ(hub.subscriber_count(), 1u);
	sub.reset();
	EXPECT_EQ(hub.subscriber_count(), 0u);
}

TEST(ControlEvents, RetainPairs)
{
	EventHub hub;
	hub.UpdatePairState("replipipe:x", "db", "a", "/dev/1", "Syncing");
	hub.UpdatePairState("replipipe:x", "db", "b", "/dev/2", "Syncing");
	hub.UpdatePairState("replipipe:y", "db", "c", "/dev/3", "Syncing");
	hub.RetainPairs("replipipe:x", {"b"});
	auto states = hub.PairStates();
	ASSERT_EQ(states.size(), 2u);
	EXPECT_EQ(states[0].source, "b");
	EXPECT_EQ(states[1].source, "c");
}

} // namespace
} // namespace replipipe
