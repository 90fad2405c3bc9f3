#include "daemon_jobs.h"

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <exception>
#include <list>
#include <new>
#include <set>
#include <system_error>

#include "log.h"
#include "netlink_resync.h"

namespace replipipe
{
namespace
{

ControlResync ToControl(const ResyncProgress &p, bool running)
{
	ControlResync r;
	r.done_bytes = p.done_bytes;
	r.total_bytes = p.total_bytes;
	r.rate_bytes_per_s = p.rate_bytes_per_s;
	r.running = running;
	return r;
}

// An event about one pair's job: the pair named as its spec names it, the
// pipe by its name now.
ControlEvent JobEvent(const PairJobSpec &spec, const std::string &pipe_name,
                      std::string type = "")
{
	ControlEvent event;
	event.type = std::move(type);
	event.instance_id = spec.instance_id;
	event.name = pipe_name;
	event.source = spec.source;
	event.target = spec.target;
	return event;
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
		spec.pair_bytes = kp.source_bytes;
		spec.rate_limit_kibps = pipe.settings.resync_rate_kibps;
		spec.pair_serial = kp.serial;
		spec.source_dev = kp.source_dev;
		spec.target_dev = kp.target_dev;
		plan.wanted.emplace(kp.source, std::move(spec));
	}
	return plan;
}

// The exception being handled (call in a catch block) as an error:
// "context: what it says", with an errno for it.
Status CurrentException(const std::string &context)
{
	try {
		throw;
	} catch (const std::system_error &e) {
		const std::error_category &category = e.code().category();
		const bool errno_value = category == std::generic_category() ||
		                         category == std::system_category();
		return Status::Error(context + ": " + e.what(),
		                     errno_value ? e.code().value() : EIO);
	} catch (const std::bad_alloc &) {
		return Status::Error(context + ": out of memory", ENOMEM);
	} catch (const std::exception &e) {
		return Status::Error(context + ": " + e.what(), EIO);
	} catch (...) {
		return Status::Error(context + ": an unknown exception", EIO);
	}
}

// How long a resync channel waits for the kernel's answer to a call. The
// kernel waits at most REPLIPIPE_CLAIM_WAIT_MS for a claim, but a call
// first takes rp_config_lock, which a PIPE_SET holds for up to 250 ms of
// writes in flight (RP_START_WAIT_MS) and for its write-intent records'
// writes, as long as those take. A claim whose answer was given up on is
// one whose id never arrives: it holds writes until the channel closes.
constexpr std::chrono::seconds kResyncCallTimeout{60};

std::string JobName(const PairJobSpec &spec)
{
	return "resync pipe " + spec.pipe_id + " pair " + spec.source;
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
	void RequestStop() override
	{
		claims_->RequestStop();
		resync_->RequestStop();
	}
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
		auto channel = NetlinkResyncChannel::Open(kResyncCallTimeout);
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
		options.pair_bytes = spec.pair_bytes;
		options.copier.rate_limit_kibps = spec.rate_limit_kibps;
		options.copier.expected_source_rdev = spec.source_dev;
		options.copier.expected_target_rdev = spec.target_dev;
		Status created = job->Create(options);
		if (!created.ok())
			return created;
		return std::unique_ptr<PairJob>(std::move(job));
	};
}

// What a job writes: the target's block-device number when its path names
// a block device (0 otherwise), and the path.
struct ResyncJobs::Target {
	dev_t rdev = 0;
	std::string path;

	// stat() follows symlinks: /dev/disk/by-id/... and /dev/sdb are one
	// device.
	static Target Of(const std::string &path)
	{
		Target target;
		target.path = path;
		struct stat st = {};
		if (::stat(path.c_str(), &st) == 0 && S_ISBLK(st.st_mode))
			target.rdev = st.st_rdev;
		return target;
	}
	bool Same(const Target &other) const
	{
		if (rdev != 0 && other.rdev != 0)
			return rdev == other.rdev;
		return path == other.path;
	}
};

// A running job goes on for a spec that differs only in the pipe's name: a
// rename must not make it copy its claim again.
static bool SameCopy(const PairJobSpec &a, const PairJobSpec &b)
{
	PairJobSpec renamed = b;
	renamed.pipe_name = a.pipe_name;
	return a == renamed;
}

struct ResyncJobs::Entry {
	Job *job = nullptr;    // live: running, or retiring (asked to stop)
	std::string pipe_name; // as last planned: its job's events use it
	std::optional<ControlResync> last;
	Clock::time_point not_before{};
	// Jobs that failed in a row (ended with an error, or their thread
	// could not start), and the last one's message; both reset when a
	// job ends with the pair clean.
	int failures = 0;
	std::string last_error;
	// The last SyncPipe() of its pipe found it Syncing: it gets a job,
	// now or once its back-off has passed.
	bool planned = false;
	bool forget = false; // its pipe was deleted: erase when its job ends
};

struct ResyncJobs::Job {
	Job(PairJobSpec s, Target t, std::map<Key, Entry>::iterator e)
	    : spec(std::move(s)), target(std::move(t)), entry(e)
	{
	}

	const PairJobSpec spec;
	const Target target;
	// Valid while the job is live: an entry with a live job is never
	// erased (StopPipe() marks it forget instead).
	const std::map<Key, Entry>::iterator entry;
	bool retiring = false; // guarded by ResyncJobs::mu_
	// Its PairJob is gone (its target is no longer written) and its
	// result recorded. guarded by ResyncJobs::mu_
	bool ended = false;
	bool ran = false; // job thread only: PairJob::Run() was called

	std::mutex mu;
	std::unique_ptr<PairJob> job;                 // guarded by mu
	std::optional<ResyncProgress> final_progress; // guarded by mu
	bool stop = false;                            // guarded by mu
	// Set last by the job's thread: joining it waits for nothing more.
	std::atomic<bool> exited{false};
	std::jthread thread; // last: started when the rest exists

	void RequestStop()
	{
		std::lock_guard lock(mu);
		stop = true;
		if (job)
			job->RequestStop();
	}
};

ResyncJobs::ResyncJobs(PairJobFactory factory, EventSink sink,
                       ResyncJobsOptions options)
    : factory_(std::move(factory)), sink_(std::move(sink)), options_(options)
{
}

ResyncJobs::~ResyncJobs()
{
	StopAll();
}

void ResyncJobs::SetReplanSink(ReplanSink sink)
{
	std::lock_guard lock(replan_mu_);
	replan_ = std::move(sink);
}

void ResyncJobs::Emit(const ControlEvent &event) const
{
	if (!sink_)
		return;
	try {
		sink_(event);
	} catch (...) {
		// Not the job's failure: it did what it did.
		try {
			LogError() << CurrentException("resync event " +
			                               event.type + " lost")
			                      .message();
		} catch (...) {
		}
	}
}

void ResyncJobs::__Retire(Job &job)
{
	if (job.retiring)
		return;
	job.retiring = true;
	job.RequestStop();
}

bool ResyncJobs::__TargetBusy(const Target &target) const
{
	for (const auto &job : jobs_)
		if (!job->ended && job->target.Same(target))
			return true;
	return false;
}

size_t ResyncJobs::__Live() const
{
	size_t n = 0;
	for (const auto &job : jobs_)
		n += job->ended ? 0 : 1;
	return n;
}

size_t ResyncJobs::__LiveOf(const std::string &pipe_id) const
{
	size_t n = 0;
	for (const auto &job : jobs_)
		n += !job->ended && job->spec.pipe_id == pipe_id ? 1 : 0;
	return n;
}

size_t ResyncJobs::__SlotsAhead(const std::string &pipe_id,
                                size_t live_of) const
{
	size_t ahead = 0;
	for (const auto &[other, want] : want_slot_)
		if (other != pipe_id && __LiveOf(other) < live_of)
			ahead += want;
	return ahead;
}

void ResyncJobs::__SetWant(const std::string &pipe_id, size_t want,
                           std::set<std::string> &wake)
{
	auto it = want_slot_.find(pipe_id);
	const size_t before = it == want_slot_.end() ? 0 : it->second;
	if (want)
		want_slot_[pipe_id] = want;
	else if (it != want_slot_.end())
		want_slot_.erase(it);
	// Slots this pipe held back from others may be free for them now.
	if (want >= before || stopped_ ||
	    (options_.max_running != 0 && __Live() >= options_.max_running))
		return;
	for (auto w = waiting_.begin(); w != waiting_.end();) {
		if (*w == pipe_id) {
			++w;
			continue;
		}
		wake.insert(*w);
		w = waiting_.erase(w);
	}
}

void ResyncJobs::Replan(const std::set<std::string> &pipes)
{
	if (pipes.empty())
		return;
	std::lock_guard lock(replan_mu_);
	if (replan_)
		for (const std::string &pipe_id : pipes)
			replan_(pipe_id);
}

void ResyncJobs::__TakeExited(JobList &out)
{
	for (auto it = jobs_.begin(); it != jobs_.end();) {
		auto next = std::next(it);
		if ((*it)->ended && (*it)->exited.load())
			out.splice(out.end(), jobs_, it);
		it = next;
	}
}

void ResyncJobs::Join(JobList &jobs)
{
	for (auto &job : jobs)
		if (job->thread.joinable())
			job->thread.join();
	jobs.clear();
}

Status ResyncJobs::__Start(std::map<Key, Entry>::iterator entry,
                           const PairJobSpec &spec, const Target &target)
{
	Job *job = nullptr;
	try {
		jobs_.push_back(std::make_unique<Job>(spec, target, entry));
		job = jobs_.back().get();
		auto body = [this, job] { RunJob(job); };
		job->thread = options_.start_thread
		                      ? options_.start_thread(body)
		                      : std::jthread(body);
	} catch (...) {
		// Nothing runs: no job is left to block the pair.
		if (job)
			jobs_.pop_back();
		return CurrentException(JobName(spec) +
		                        ": cannot start its thread");
	}
	entry->second.job = job;
	return {};
}

void ResyncJobs::__Failed(Entry &entry, const Status &status,
                          Clock::time_point now)
{
	++entry.failures;
	try {
		entry.last_error = status.message();
	} catch (const std::bad_alloc &) {
		// The job still leaves the table; the log has the message.
		entry.last_error.clear();
	}
	auto backoff = options_.min_backoff;
	for (int i = 1; i < entry.failures && backoff < options_.max_backoff;
	     ++i)
		backoff *= 2;
	if (backoff > options_.max_backoff)
		backoff = options_.max_backoff;
	entry.not_before = now + backoff;
}

void ResyncJobs::RunJob(Job *job)
{
	Status status;
	try {
		status = RunPairJob(job);
	} catch (...) {
		try {
			status = CurrentException(JobName(job->spec));
		} catch (...) {
			status = Status::Error("out of memory", ENOMEM);
		}
	}
	// The PairJob goes before the job counts as ended: its claim
	// channel and devices closed, nothing more written to its target.
	std::unique_ptr<PairJob> gone;
	{
		std::lock_guard lock(job->mu);
		if (job->job) {
			try {
				job->final_progress = job->job->progress();
			} catch (...) {
			}
			gone = std::move(job->job);
		}
	}
	gone.reset();
	Finish(job, status);
	job->exited.store(true);
}

Status ResyncJobs::RunPairJob(Job *job)
{
	// From this thread, outside mu_, and before its end is reported: the
	// sink sees started before done/failed.
	const PairJobSpec &spec = job->spec;
	LogInfo() << "resync pipe " << spec.pipe_id << " pair " << spec.source
	          << " -> " << spec.target << ": started";
	std::string pipe_name;
	{
		std::lock_guard lock(mu_);
		pipe_name = job->entry->second.pipe_name;
	}
	{
		std::lock_guard order(event_order_mu_);
		Emit(JobEvent(spec, pipe_name, "resync_started"));
	}
	auto made = factory_(spec);
	if (!made.ok())
		return made.status();
	PairJob *pair_job;
	{
		std::lock_guard lock(job->mu);
		job->job = std::move(*made);
		pair_job = job->job.get();
		if (job->stop)
			pair_job->RequestStop();
	}
	job->ran = true;
	return pair_job->Run();
}

void ResyncJobs::Finish(Job *job, const Status &status)
{
	const PairJobSpec &spec = job->spec;
	const bool cancelled = !status.ok() && status.err() == ECANCELED;
	// The kernel refused a claim for the pair this job was planned for:
	// a PIPE_SET replaced it (ESTALE), or removed it or deleted its pipe
	// (ENOENT), both from the claim protocol, i.e. from Run(). The
	// factory's are a device's (a missing device or backstore, a stale
	// NFS handle), failures: taken for an obsolete job, one that failed at
	// once started again at once, forever. Not a failure of the resync:
	// the next SyncPipe() plans a job for the new pair, if any, without a
	// back-off.
	const bool replaced =
	        !status.ok() && status.err() == ESTALE && job->ran;
	const bool removed = !status.ok() && status.err() == ENOENT && job->ran;
	const bool obsolete = replaced || removed;
	std::optional<ResyncProgress> progress;
	{
		std::lock_guard lock(job->mu);
		progress = job->final_progress;
	}
	// Nothing here allocates: a job that failed for want of memory
	// still leaves the table.
	std::string pipe_name;
	try {
		std::lock_guard lock(mu_);
		pipe_name = job->entry->second.pipe_name;
	} catch (const std::bad_alloc &) {
		// The event names the pipe by its id alone.
	}
	std::set<std::string> wake;
	bool stopped;
	std::unique_lock order(event_order_mu_);
	{
		std::lock_guard lock(mu_);
		Entry &entry = job->entry->second;
		if (progress)
			entry.last = ToControl(*progress, false);
		const auto now = Clock::now();
		if (status.ok()) {
			entry.failures = 0;
			entry.last_error.clear();
			entry.not_before = now + options_.rerun_delay;
		} else if (obsolete) {
			entry.not_before = now;
		} else if (!cancelled) {
			__Failed(entry, status, now);
		}
		entry.job = nullptr;
		job->ended = true;
		if (entry.forget)
			entries_.erase(job->entry);
		stopped = stopped_;
		// Whatever held their jobs back (this job's pair, its target,
		// its slot) may be gone: each pipe plans again.
		if (!stopped)
			wake.swap(waiting_);
		ended_cv_.notify_all();
	}
	try {
		ControlEvent event = JobEvent(spec, pipe_name);
		if (status.ok()) {
			std::string copied;
			if (progress)
				copied = ", " +
				         std::to_string(progress->done_bytes) +
				         " bytes copied";
			LogInfo() << "resync pipe " << spec.pipe_id << " pair "
			          << spec.source << ": done" << copied;
			event.type = "resync_done";
		} else if (cancelled) {
			LogInfo() << "resync pipe " << spec.pipe_id << " pair "
			          << spec.source << ": stopped";
			event.type = "resync_stopped";
		} else if (obsolete) {
			LogInfo() << "resync pipe " << spec.pipe_id << " pair "
			          << spec.source << " -> " << spec.target
			          << ": stopped, the pair was "
			          << (replaced ? "replaced" : "removed")
			          << " since the job started ("
			          << status.message() << ")";
			event.type = "resync_stopped";
			event.message = replaced ? "the pair was replaced"
			                         : "the pair was removed";
			// Its pipe plans again at once: for the pair that
			// replaced this one.
			if (!stopped)
				wake.insert(spec.pipe_id);
		} else {
			LogError() << status.message();
			event.type = "resync_failed";
			event.message = status.message();
		}
		Emit(event);
		order.unlock();
		Replan(wake);
	} catch (...) {
		// A log line, an event or a replan lost to an exhausted
		// allocator; the job's end is recorded all the same, and the
		// periodic refresh plans again.
	}
}

void ResyncJobs::SyncPipe(const PipeRecord &pipe,
                          const KernelPipeStatus &kernel)
{
	// The pairs that should have a job, with what it should do.
	JobPlan plan = PlanJobs(pipe, kernel);
	std::map<std::string, Target> targets; // by source; stat() unlocked
	for (const auto &[source, spec] : plan.wanted)
		targets.emplace(source, Target::Of(spec.target));

	std::vector<std::pair<PairJobSpec, Status>> not_started;
	JobList to_join;
	std::set<std::string> wake;
	{
		std::lock_guard lock(mu_);
		if (stopped_)
			return;
		for (auto &[key, entry] : entries_) {
			if (key.first != pipe.instance_id)
				continue;
			auto it = plan.wanted.find(key.second);
			entry.planned = it != plan.wanted.end();
			if (!entry.job)
				continue;
			// A job whose pair turned InSync is finishing (its last
			// claim found nothing): let it end. Changed settings
			// (rate limit, target) or a replaced pair (serial):
			// stop, and start again with the new ones once it has
			// ended.
			if (it == plan.wanted.end()
			            ? !plan.in_sync.count(key.second)
			            : !SameCopy(it->second, entry.job->spec))
				__Retire(*entry.job);
			entry.pipe_name = pipe.name;
		}
		const auto now = Clock::now();
		size_t live = __Live();
		size_t live_of_pipe = __LiveOf(pipe.instance_id);
		size_t held_by_cap = 0;
		for (const auto &[source, spec] : plan.wanted) {
			auto entry =
			        entries_.try_emplace({pipe.instance_id, source})
			                .first;
			entry->second.forget = false;
			entry->second.planned = true;
			entry->second.pipe_name = pipe.name;
			const Target &target = targets.at(source);
			if (entry->second.job) {
				// Running as planned, or retiring: its
				// successor waits for its end.
				if (entry->second.job->retiring)
					waiting_.insert(pipe.instance_id);
				continue;
			}
			if (now < entry->second.not_before)
				continue;
			if (__TargetBusy(target)) {
				waiting_.insert(pipe.instance_id);
				continue;
			}
			// A free slot, and not one a less served pipe
			// waits for.
			if (options_.max_running != 0 &&
			    live + __SlotsAhead(pipe.instance_id,
			                        live_of_pipe) >=
			            options_.max_running) {
				waiting_.insert(pipe.instance_id);
				++held_by_cap;
				continue;
			}
			Status started = __Start(entry, spec, target);
			if (!started.ok()) {
				__Failed(entry->second, started, now);
				not_started.emplace_back(spec, started);
				continue;
			}
			++live;
			++live_of_pipe;
		}
		__SetWant(pipe.instance_id, held_by_cap, wake);
		__TakeExited(to_join);
	}
	Join(to_join);
	Replan(wake);
	for (const auto &[spec, status] : not_started) {
		LogError() << status.message();
		ControlEvent event =
		        JobEvent(spec, spec.pipe_name, "resync_failed");
		event.message = status.message();
		Emit(event);
	}
}

void ResyncJobs::StopPipe(const std::string &pipe_id)
{
	JobList to_join;
	std::set<std::string> wake;
	{
		std::lock_guard lock(mu_);
		__SetWant(pipe_id, 0, wake);
		for (auto it = entries_.begin(); it != entries_.end();) {
			if (it->first.first != pipe_id) {
				++it;
			} else if (it->second.job) {
				__Retire(*it->second.job);
				it->second.forget = true;
				++it;
			} else {
				it = entries_.erase(it);
			}
		}
		__TakeExited(to_join);
	}
	Join(to_join);
	Replan(wake);
}

void ResyncJobs::StopPair(const std::string &pipe_id, const std::string &source)
{
	JobList to_join;
	{
		std::lock_guard lock(mu_);
		auto it = entries_.find({pipe_id, source});
		if (it != entries_.end()) {
			// Paused: no job until SyncPipe() plans one again.
			it->second.planned = false;
			if (it->second.job)
				__Retire(*it->second.job);
		}
		__TakeExited(to_join);
	}
	Join(to_join);
}

void ResyncJobs::StopAll()
{
	StopAllWithin(std::chrono::milliseconds::max());
}

bool ResyncJobs::StopAllWithin(std::chrono::milliseconds bound)
{
	JobList to_join;
	{
		std::unique_lock lock(mu_);
		stopped_ = true;
		waiting_.clear();
		for (auto &job : jobs_)
			if (!job->ended)
				__Retire(*job);
		// Shutdown, the one place that waits for jobs: their claims
		// end as Failed rather than dropped with the socket.
		auto ended = [&] { return __Live() == 0; };
		if (bound == std::chrono::milliseconds::max())
			ended_cv_.wait(lock, ended);
		else if (!ended_cv_.wait_for(lock, bound, ended))
			return false;
		to_join.splice(to_join.end(), jobs_);
	}
	Join(to_join);
	return true;
}

std::optional<ControlResync> ResyncJobs::__Copied(const Entry &entry) const
{
	if (entry.job) {
		Job &job = *entry.job;
		const bool running = !job.retiring;
		std::lock_guard job_lock(job.mu);
		if (job.job)
			return ToControl(job.job->progress(), running);
		if (job.final_progress)
			return ToControl(*job.final_progress, running);
		if (running) {
			ControlResync starting;
			starting.running = true;
			return starting;
		}
	}
	return entry.last;
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
	std::optional<ControlResync> progress = __Copied(entry);
	// A job that failed before it copied anything (its factory refused
	// the target) has no progress, but its failure is shown.
	if (!progress && entry.failures == 0)
		return std::nullopt;
	ControlResync r = progress.value_or(ControlResync{});
	r.failures = static_cast<uint32_t>(entry.failures);
	r.last_error = entry.last_error;
	if (!entry.job && entry.failures > 0 && entry.planned) {
		const auto left = entry.not_before - Clock::now();
		uint64_t seconds = 0;
		if (left > Clock::duration::zero())
			seconds = static_cast<uint64_t>(
			        std::chrono::ceil<std::chrono::seconds>(left)
			                .count());
		r.retry_in_s = seconds;
	}
	return r;
}

size_t ResyncJobs::running() const
{
	std::lock_guard lock(mu_);
	return __Live();
}

} // namespace replipipe
