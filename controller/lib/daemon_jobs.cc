#include "daemon_jobs.h"

#include <atomic>
#include <cerrno>
#include <set>

#include "log.h"
#include "netlink_resync.h"

namespace replipipe
{
namespace
{

using Clock = std::chrono::steady_clock;

ControlResync ToControl(const ResyncProgress &p, bool running)
{
	ControlResync r;
	r.done_bytes = p.done_bytes;
	r.total_bytes = p.total_bytes;
	r.rate_bytes_per_s = p.rate_bytes_per_s;
	r.running = running;
	return r;
}

// The jobs a pipe should have (Syncing pairs of the store), and its pairs
// that are InSync.
struct JobPlan {
	std::map<std::string, PairJobSpec> wanted; // by source
	std::set<std::string> in_sync;
};

JobPlan PlanJobs(const PipeRecord &pipe, const KernelPipeStatus &kernel)
{
	JobPlan plan;
	for (const KernelPairStatus &kp : kernel.pairs) {
		if (kp.state == PairState::kInSync)
			plan.in_sync.insert(kp.source);
		if (kp.state != PairState::kSyncing)
			continue;
		bool stored = false;
		for (const PairRecord &pr : pipe.pairs)
			stored = stored || (pr.source == kp.source &&
			                    pr.target == kp.target);
		if (!stored)
			continue;
		PairJobSpec spec;
		spec.pipe_id = pipe.instance_id;
		spec.instance_id = InstanceIdOf(pipe);
		spec.pipe_name = pipe.name;
		spec.source = kp.source;
		spec.target = kp.target;
		const uint32_t region_kib = kernel.region_kib
		                                    ? kernel.region_kib
		                                    : pipe.settings.region_kib;
		spec.region_bytes = uint64_t{region_kib} * 1024;
		spec.rate_limit_kibps = pipe.settings.resync_rate_kibps;
		spec.pair_serial = kp.serial;
		plan.wanted.emplace(kp.source, std::move(spec));
	}
	return plan;
}

// The daemon's job: a claim channel of its own (claims die with it), the
// pair's ClaimSource on it, and the copy loop. Members are destroyed in
// reverse order: the loop before the claims before the channel.
class NetlinkPairJob final : public PairJob
{
public:
	NetlinkPairJob(std::unique_ptr<NetlinkResyncChannel> channel,
	               std::unique_ptr<NetlinkPairClaims> claims)
	    : channel_(std::move(channel)), claims_(std::move(claims))
	{
	}

	Status Create(const PairResyncOptions &options)
	{
		auto resync = PairResync::Create(options, claims_.get());
		if (!resync.ok())
			return resync.status();
		resync_ = std::move(*resync);
		return Status();
	}

	Status Run() override { return resync_->Run(); }
	void RequestStop() override { resync_->RequestStop(); }
	ResyncProgress progress() const override { return resync_->progress(); }

private:
	std::unique_ptr<NetlinkResyncChannel> channel_;
	std::unique_ptr<NetlinkPairClaims> claims_;
	std::unique_ptr<PairResync> resync_;
};

} // namespace

PairJobFactory NetlinkPairJobFactory(std::string configfs_core)
{
	return [configfs_core](const PairJobSpec &spec)
	               -> Result<std::unique_ptr<PairJob>> {
		const std::string what =
		        "resync pipe " + spec.pipe_id + " pair " + spec.source;
		auto primary =
		        BackstorePrimaryDevice(spec.source, configfs_core);
		if (!primary.ok())
			return primary.status().Context(what);
		auto channel = NetlinkResyncChannel::Open();
		if (!channel.ok())
			return channel.status().Context(what);
		auto claims = std::make_unique<NetlinkPairClaims>(
		        channel->get(), spec.pipe_id, spec.source,
		        spec.pair_serial);
		auto job = std::make_unique<NetlinkPairJob>(std::move(*channel),
		                                            std::move(claims));
		PairResyncOptions options;
		options.pipe_id = spec.pipe_id;
		options.source = spec.source;
		options.source_path = *primary;
		options.target_path = spec.target;
		options.region_bytes = spec.region_bytes;
		options.copier.rate_limit_kibps = spec.rate_limit_kibps;
		Status created = job->Create(options);
		if (!created.ok())
			return created;
		return std::unique_ptr<PairJob>(std::move(job));
	};
}

struct ResyncJobs::Job {
	explicit Job(PairJobSpec s) : spec(std::move(s)) {}

	const PairJobSpec spec;
	std::mutex mu;
	std::unique_ptr<PairJob> job; // guarded by mu; set once
	bool stop = false;            // guarded by mu
	std::atomic<bool> finished{false};
	std::jthread thread; // last: started when the rest exists

	void RequestStop()
	{
		std::lock_guard lock(mu);
		stop = true;
		if (job)
			job->RequestStop();
	}
};

struct ResyncJobs::Entry {
	std::unique_ptr<Job> job; // running, or finished and not reaped
	std::optional<ControlResync> last;
	Clock::time_point not_before{};
	int failures = 0;
};

ResyncJobs::ResyncJobs(PairJobFactory factory, EventSink sink,
                       ResyncJobsOptions options,
                       KernelPipeReader read_kernel_pipe)
    : factory_(std::move(factory)), sink_(std::move(sink)), options_(options),
      read_kernel_pipe_(std::move(read_kernel_pipe))
{
}

ResyncJobs::~ResyncJobs()
{
	StopAll();
}

void ResyncJobs::__TakeJobs(const std::function<bool(const Key &)> &stop,
                            std::vector<std::unique_ptr<Job>> &out)
{
	for (auto &[key, entry] : entries_) {
		if (!entry.job)
			continue;
		if (entry.job->finished.load()) {
			out.push_back(std::move(entry.job));
		} else if (stop(key)) {
			entry.job->RequestStop();
			out.push_back(std::move(entry.job));
		}
	}
}

void ResyncJobs::Join(std::vector<std::unique_ptr<Job>> &jobs)
{
	for (auto &job : jobs)
		if (job->thread.joinable())
			job->thread.join();
	jobs.clear();
}

void ResyncJobs::__Start(Entry &entry, const PairJobSpec &spec)
{
	entry.job = std::make_unique<Job>(spec);
	Job *job = entry.job.get();
	job->thread = std::jthread([this, job] { RunJob(job); });
}

void ResyncJobs::RunJob(Job *job)
{
	// From this thread, outside mu_, and before its end is reported: the
	// sink sees started before done/failed.
	const PairJobSpec &spec = job->spec;
	LogInfo() << "resync pipe " << spec.pipe_id << " pair " << spec.source
	          << " -> " << spec.target << ": started";
	if (sink_) {
		ControlEvent event;
		event.type = "resync_started";
		event.instance_id = spec.instance_id;
		event.name = spec.pipe_name;
		event.source = spec.source;
		event.target = spec.target;
		sink_(event);
	}
	auto made = factory_(job->spec);
	if (!made.ok()) {
		Finish(job, made.status());
		return;
	}
	PairJob *pair_job;
	{
		std::lock_guard lock(job->mu);
		job->job = std::move(*made);
		pair_job = job->job.get();
		if (job->stop)
			pair_job->RequestStop();
	}
	Finish(job, pair_job->Run());
}

void ResyncJobs::Finish(Job *job, const Status &status)
{
	const PairJobSpec &spec = job->spec;
	const bool cancelled = !status.ok() && status.err() == ECANCELED;
	// The kernel refused a claim for the pair this job was planned for:
	// a PIPE_SET replaced it. Not a failure of the resync: the next
	// SyncPipe() plans a job for the new pair, without a back-off.
	const bool obsolete = !status.ok() && status.err() == ESTALE;
	std::optional<ResyncProgress> progress;
	{
		std::lock_guard lock(job->mu);
		if (job->job)
			progress = job->job->progress();
	}
	{
		std::lock_guard lock(mu_);
		auto it = entries_.find({spec.pipe_id, spec.source});
		// A job stopped by StopPair() was already taken out of its
		// entry; its progress still belongs to the pair.
		if (it != entries_.end() &&
		    (it->second.job.get() == job || !it->second.job)) {
			Entry &entry = it->second;
			if (progress)
				entry.last = ToControl(*progress, false);
			auto now = Clock::now();
			if (status.ok()) {
				entry.failures = 0;
				entry.not_before = now + options_.rerun_delay;
			} else if (obsolete) {
				entry.not_before = now;
			} else if (!cancelled) {
				++entry.failures;
				auto backoff = options_.min_backoff;
				for (int i = 1; i < entry.failures &&
				                backoff < options_.max_backoff;
				     ++i)
					backoff *= 2;
				if (backoff > options_.max_backoff)
					backoff = options_.max_backoff;
				entry.not_before = now + backoff;
			}
		}
		job->finished.store(true);
	}
	ControlEvent event;
	event.instance_id = spec.instance_id;
	event.name = spec.pipe_name;
	event.source = spec.source;
	event.target = spec.target;
	if (status.ok()) {
		LogInfo() << "resync pipe " << spec.pipe_id << " pair "
		          << spec.source << ": done"
		          << (progress ? ", " +
		                                 std::to_string(
		                                         progress->done_bytes) +
		                                 " bytes copied"
		                       : std::string());
		event.type = "resync_done";
	} else if (cancelled) {
		LogInfo() << "resync pipe " << spec.pipe_id << " pair "
		          << spec.source << ": stopped";
		event.type = "resync_stopped";
	} else if (obsolete) {
		LogInfo() << "resync pipe " << spec.pipe_id << " pair "
		          << spec.source << " -> " << spec.target
		          << ": stopped, the pair was replaced since the job "
		             "started ("
		          << status.message() << ")";
		event.type = "resync_stopped";
		event.message = "the pair was replaced";
	} else {
		LogError() << status.message();
		event.type = "resync_failed";
		event.message = status.message();
	}
	if (sink_)
		sink_(event);
}

void ResyncJobs::SyncPipe(const PipeRecord &pipe,
                          const KernelPipeStatus &kernel)
{
	// The pairs that should have a job, with what it should do.
	JobPlan plan = PlanJobs(pipe, kernel);

	std::vector<std::unique_ptr<Job>> to_join;
	{
		std::lock_guard lock(mu_);
		if (stopped_)
			return;
		__TakeJobs(
		        [&](const Key &key) {
			        if (key.first != pipe.instance_id)
				        return false;
			        auto it = plan.wanted.find(key.second);
			        // A job whose pair turned InSync is finishing
			        // (its last claim found nothing): let it end.
			        if (it == plan.wanted.end())
				        return !plan.in_sync.count(key.second);
			        // Changed settings (rate limit, target) or a
			        // replaced pair (serial): restart with the new
			        // ones.
			        auto entry = entries_.find(key);
			        return !(it->second == entry->second.job->spec);
		        },
		        to_join);
	}
	// A replaced job ends (its claim reported Failed) before the new one
	// claims: otherwise the new one could find every dirty region still
	// claimed, take that for "clean" and end at once.
	const bool joined = !to_join.empty();
	Join(to_join);
	// That can take seconds, in which a PIPE_SET may have replaced pairs:
	// plan from the kernel's state now. (Should the read fail, the jobs'
	// pair serials still keep a stale plan off a replaced pair.)
	if (joined && read_kernel_pipe_) {
		auto now_in_kernel = read_kernel_pipe_(pipe.instance_id);
		if (!now_in_kernel.ok())
			LogWarning()
			        << "resync pipe " << pipe.instance_id << ": "
			        << now_in_kernel.status().message();
		else if (!*now_in_kernel)
			plan.wanted.clear(); // deleted meanwhile
		else
			plan = PlanJobs(pipe, **now_in_kernel);
	}
	std::lock_guard lock(mu_);
	if (stopped_)
		return;
	const auto now = Clock::now();
	for (const auto &[source, spec] : plan.wanted) {
		Entry &entry = entries_[{pipe.instance_id, source}];
		if (entry.job || now < entry.not_before)
			continue;
		__Start(entry, spec);
	}
}

void ResyncJobs::StopPipe(const std::string &pipe_id)
{
	std::vector<std::unique_ptr<Job>> to_join;
	{
		std::lock_guard lock(mu_);
		__TakeJobs([&](const Key &key) { return key.first == pipe_id; },
		           to_join);
		std::erase_if(entries_, [&](const auto &item) {
			return item.first.first == pipe_id;
		});
	}
	Join(to_join);
}

void ResyncJobs::StopPair(const std::string &pipe_id, const std::string &source)
{
	std::vector<std::unique_ptr<Job>> to_join;
	{
		std::lock_guard lock(mu_);
		__TakeJobs(
		        [&](const Key &key) {
			        return key.first == pipe_id &&
			               key.second == source;
		        },
		        to_join);
	}
	Join(to_join);
}

void ResyncJobs::StopAll()
{
	std::vector<std::unique_ptr<Job>> to_join;
	{
		std::lock_guard lock(mu_);
		stopped_ = true;
		__TakeJobs([](const Key &) { return true; }, to_join);
	}
	Join(to_join);
}

std::optional<ControlResync>
ResyncJobs::Progress(const std::string &pipe_id,
                     const std::string &source) const
{
	std::lock_guard lock(mu_);
	auto it = entries_.find({pipe_id, source});
	if (it == entries_.end())
		return std::nullopt;
	const Entry &entry = it->second;
	if (entry.job && !entry.job->finished.load()) {
		std::lock_guard job_lock(entry.job->mu);
		if (entry.job->job)
			return ToControl(entry.job->job->progress(), true);
		ControlResync starting;
		starting.running = true;
		return starting;
	}
	return entry.last;
}

size_t ResyncJobs::running() const
{
	std::lock_guard lock(mu_);
	size_t n = 0;
	for (const auto &[key, entry] : entries_)
		n += entry.job && !entry.job->finished.load() ? 1 : 0;
	return n;
}

} // namespace replipipe
