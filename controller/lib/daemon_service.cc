#include "daemon_service.h"

#include <atomic>
#include <cerrno>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bounded_parallel.h"
#include "log.h"

namespace replipipe
{
namespace
{

// A failure that is not the CIM method's, mapped onto its ReturnValues so
// that the CLI exits the same way: unknown pipe 5, kernel time-out 3,
// kernel refusal 4.
ControlReply ResolveError(const Status &status)
{
	ControlReply reply = ErrorReply(
	        status.err() == ENOENT ? kCodeNotFound : kCodeBadRequest,
	        status.message());
	reply.return_value = ReturnValue::kInvalidParameter;
	return reply;
}

ControlReply KernelError(const Status &status)
{
	ControlReply reply = ErrorReply(kCodeInternal, status.message());
	reply.return_value = status.err() == ETIMEDOUT ? ReturnValue::kTimeout
	                                               : ReturnValue::kFailed;
	return reply;
}

// Why a pause or resume failed: for one pair, that pair and why; for
// several, each failed pair with its reason and the pairs that were
// changed. The errno is the first failure's (its ReturnValue: 3 for a
// kernel time-out, else 4).
Status RunStateError(bool pause, const std::string &uuid, size_t tried,
                     const std::vector<std::pair<std::string, Status>> &failed,
                     const std::vector<std::string> &changed)
{
	const std::string verb = pause ? "pause" : "resume";
	const Status &first = failed.front().second;
	if (tried == 1)
		return first.Context(verb + " pipe " + uuid + " pair " +
		                     failed.front().first);
	std::string message = verb + " pipe " + uuid + ": " +
	                      std::to_string(failed.size()) + " of " +
	                      std::to_string(tried) + " pairs failed: ";
	for (size_t i = 0; i < failed.size(); ++i)
		message += (i ? "; pair " : "pair ") + failed[i].first + ": " +
		           failed[i].second.message();
	message += pause ? "; paused: " : "; resumed: ";
	if (changed.empty())
		message += "none";
	for (size_t i = 0; i < changed.size(); ++i)
		message += (i ? ", " : "") + changed[i];
	return Status::Error(message, first.err());
}

} // namespace

DaemonService::DaemonService(PipeService &pipes, KernelApi &kernel,
                             ResyncJobs *jobs, EventHub &hub,
                             PipePusher::Options push_options,
                             KernelApi *probe_kernel)
    : pipes_(pipes), kernel_(kernel),
      probe_kernel_(probe_kernel ? *probe_kernel : kernel), jobs_(jobs),
      hub_(hub), pusher_(
                         [this](const std::string &uuid) {
	                         return pipes_.PushIfNeeded(uuid);
                         },
                         [this](const std::string &uuid) { RefreshPipe(uuid); },
                         push_options)
{
	prober_ = std::make_unique<BackgroundTask>(
	        [this](const std::stop_token &stop) { ProbeDegraded(stop); });
	settler_ = std::make_unique<BackgroundTask>(
	        [this](const std::stop_token &stop) { SettleLeftovers(stop); });
	if (!jobs_)
		return;
	replan_thread_ = std::thread([this] { ReplanLoop(); });
	jobs_->SetReplanSink(
	        [this](const std::string &uuid) { QueueReplan(uuid); });
}

DaemonService::~DaemonService()
{
	prober_.reset(); // no probe after this: it uses what follows
	settler_.reset();
	if (!jobs_)
		return;
	jobs_->SetReplanSink({}); // no call of QueueReplan() after this
	{
		std::lock_guard lock(replan_mu_);
		replan_stop_ = true;
	}
	replan_cv_.notify_all();
	replan_thread_.join();
}

void DaemonService::QueueReplan(const std::string &uuid)
{
	{
		std::lock_guard lock(replan_mu_);
		replan_due_.insert(uuid);
	}
	replan_cv_.notify_all();
}

void DaemonService::ReplanLoop()
{
	std::unique_lock lock(replan_mu_);
	for (;;) {
		replan_cv_.wait(lock, [this] {
			return replan_stop_ || !replan_due_.empty();
		});
		if (replan_stop_)
			return;
		std::set<std::string> due;
		due.swap(replan_due_);
		lock.unlock();
		for (const std::string &uuid : due) {
			// An exception must not end this thread (std::terminate
			// would end the daemon): NetlinkSocket throws
			// std::bad_alloc for a message it cannot allocate.
			try {
				RefreshPipe(uuid);
			} catch (const std::exception &e) {
				LogError()
				        << "refresh pipe " << uuid
				        << " after a resync job ended: "
				        << e.what()
				        << "; the next periodic refresh tries "
				           "again";
			}
		}
		lock.lock();
	}
}

ControlReply DaemonService::Handle(const ControlRequest &request)
{
	switch (request.op) {
	case ControlOp::kCreateOrModify:
		return CreateOrModify(request.call);
	case ControlOp::kDelete:
		return Delete(request.pipe.value_or(""));
	case ControlOp::kList:
		return Describe(std::nullopt);
	case ControlOp::kStatus:
		return Describe(request.pipe);
	case ControlOp::kPause:
		return SetRunState(request, true);
	case ControlOp::kResume:
		return SetRunState(request, false);
	case ControlOp::kEvents:
		break;
	}
	return ErrorReply(kCodeBadRequest,
	                  "op events is served by the socket server");
}

ControlReply DaemonService::CreateOrModify(const CreateOrModifyCall &call)
{
	MethodOutcome outcome = pipes_.CreateOrModify(call);
	if (outcome.return_value != ReturnValue::kCompleted) {
		LogInfo() << "CreateOrModifyReplicationPipe "
		          << (call.replication_pipe
		                      ? "of " + *call.replication_pipe
		                      : std::string("(create)"))
		          << ": ReturnValue "
		          << static_cast<uint32_t>(outcome.return_value) << ": "
		          << outcome.error;
		return MethodReply(outcome);
	}
	LogNotice() << "CreateOrModifyReplicationPipe: "
	            << (call.replication_pipe ? "modified " : "created ")
	            << outcome.replication_pipe;
	auto uuid = ParsePipeIdentifier(outcome.replication_pipe);
	// The call is done, in the kernel and in the store: a refresh that
	// throws (NetlinkSocket's std::bad_alloc) must not turn its 0 into
	// an internal error, which a script would answer by calling again.
	// The periodic refresh reads the pipe again.
	try {
		if (uuid.ok() && *uuid)
			RefreshPipe(**uuid);
	} catch (const std::exception &e) {
		try {
			LogWarning()
			        << "refresh after CreateOrModify: " << e.what()
			        << "; the next periodic refresh tries again";
		} catch (...) {
		}
	}
	return MethodReply(outcome);
}

ControlReply DaemonService::Delete(const std::string &pipe)
{
	auto uuid = pipes_.ResolvePipe(pipe);
	// Ask the jobs to stop first, without waiting for them: one stuck on
	// a target that does not answer must not hold the call. A claim still
	// open when the pipe goes is dropped by the kernel; a job keeps its
	// target from any new job (ResyncJobs) until it has ended.
	if (uuid.ok() && jobs_)
		jobs_->StopPipe(*uuid);
	// By the UUID found above: a name resolved again could name another
	// pipe by now (a modify renamed this one, another took the name), and
	// the jobs stopped and the pairs forgotten would not be those of the
	// pipe deleted.
	MethodOutcome outcome = pipes_.Delete(uuid.ok() ? *uuid : pipe);
	if (outcome.return_value == ReturnValue::kCompleted) {
		LogNotice() << "deleted " << outcome.replication_pipe;
		if (uuid.ok())
			Forget(*uuid);
	} else if (uuid.ok()) {
		LogInfo() << "delete " << pipe << ": ReturnValue "
		          << static_cast<uint32_t>(outcome.return_value) << ": "
		          << outcome.error;
		// A record left marked for deletion (decision 48) is no pipe
		// to callers any more: its pairs leave the event snapshot too.
		if (pipes_.GetPipe(*uuid).ok())
			RefreshPipe(*uuid); // restart what was stopped
		else
			Forget(*uuid);
	}
	return MethodReply(outcome);
}

ControlReply DaemonService::Describe(const std::optional<std::string> &pipe)
{
	auto views = pipes_.Describe(pipe);
	if (!views.ok())
		return ResolveError(views.status());
	ControlReply reply;
	for (const PipeView &view : *views)
		reply.pipes.push_back(ToControlPipe(view));
	return reply;
}

ControlReply DaemonService::SetRunState(const ControlRequest &request,
                                        bool pause)
{
	auto record = pipes_.GetPipe(request.pipe.value_or(""));
	if (!record.ok())
		return ResolveError(record.status());
	const std::string &uuid = record->instance_id;
	std::vector<std::string> sources;
	for (const PairRecord &pair : record->pairs)
		if (!request.pair || pair.source == *request.pair)
			sources.push_back(pair.source);
	if (request.pair && sources.empty())
		return ResolveError(Status::Error("pipe " +
		                                          PipeReference(uuid) +
		                                          " has no pair with "
		                                          "source \"" +
		                                          *request.pair + "\"",
		                                  ENOENT));
	// Every pair is tried, also after one failed: a pair whose target
	// does not answer must not keep the others as they were.
	std::vector<Status> results(sources.size());
	// Pairs a resume did not probe because the daemon began to stop.
	std::atomic<bool> cut_short{false};
	{
		// After a probe of this pipe in progress, which would
		// otherwise resume a pair paused here (at most the kernel's
		// 5 s probe bound).
		KeyedLock::Hold hold(run_state_, uuid);
		if (pause) {
			// The kernel pauses at once: one pair after the other.
			for (size_t i = 0; i < sources.size(); ++i) {
				if (jobs_)
					jobs_->StopPair(uuid, sources[i]);
				results[i] = kernel_.SetPairState(
				        uuid, sources[i], PairState::kPaused);
			}
		} else {
			// A resume probes each target (up to 5 s), on the
			// probe channel, not the one status calls share, and
			// several at a time: 256 dead targets one after the
			// other would take 21 minutes (decision 38).
			auto resume = [&](size_t i) {
				if (shutting_down_) {
					cut_short = true;
					results[i] = Status::Error(
					        "replipiped is stopping: not "
					        "probed",
					        ECANCELED);
					return;
				}
				results[i] = probe_kernel_.SetPairState(
				        uuid, sources[i], PairState::kSyncing);
			};
			ForEachBounded(sources.size(), kResumesAtOnce, resume);
		}
	}
	std::vector<std::string> changed;
	std::vector<std::pair<std::string, Status>> failed;
	for (size_t i = 0; i < sources.size(); ++i) {
		if (!results[i].ok()) {
			LogInfo() << (pause ? "pause" : "resume") << " pipe "
			          << uuid << " pair " << sources[i]
			          << " failed: " << results[i].message();
			failed.emplace_back(sources[i], results[i]);
			continue;
		}
		changed.push_back(sources[i]);
		LogNotice() << (pause ? "paused" : "resumed") << " pipe "
		            << uuid << " pair " << sources[i];
	}
	RefreshPipe(uuid);
	if (failed.empty())
		return ControlReply{};
	Status error =
	        RunStateError(pause, uuid, sources.size(), failed, changed);
	// Not the kernel's refusal (ReturnValue 4): the call was cut short,
	// and says so as every call that meets a stopping daemon does
	// (replipipectl exits 69); the message names what was resumed.
	if (cut_short)
		return ErrorReply(kCodeShuttingDown,
		                  "the daemon is shutting down: " +
		                          error.message());
	return KernelError(error);
}

ControlPipe DaemonService::ToControlPipe(const PipeView &view) const
{
	const PipeRecord &r = view.record;
	ControlPipe pipe;
	pipe.ref = view.reference;
	pipe.instance_id = InstanceIdOf(r);
	pipe.name = r.name;
	pipe.source_system = r.source_system;
	pipe.target_system = r.target_system;
	pipe.mode = ModeName(r.settings.mode);
	pipe.failure_policy = FailurePolicyName(r.settings.failure_policy);
	pipe.max_lag_kib = r.settings.max_lag_kib;
	pipe.region_kib = r.settings.region_kib;
	pipe.resync_rate_limit_kibps = r.settings.resync_rate_kibps;
	pipe.in_kernel = view.kernel.has_value();
	for (const PairRecord &pr : r.pairs) {
		ControlPair pair;
		pair.source = pr.source;
		pair.target = pr.target;
		if (auto peer = pipes_.DescribePeer(pr.target)) // iscsi://
			pair.peer =
			        ControlPeer{peer->portal, peer->iqn, peer->lun,
			                    peer->session, peer->device};
		pair.state = "Unknown";
		const KernelPairStatus *kp =
		        view.kernel ? view.kernel->FindPair(pr.source)
		                    : nullptr;
		if (kp) {
			pair.state = PairStateName(kp->state);
			pair.regions = kp->regions;
			pair.dirty_regions = kp->dirty_regions;
			pair.source_bytes = kp->source_bytes;
			pair.writes_mirrored = kp->writes_mirrored;
			pair.bytes_mirrored = kp->bytes_mirrored;
			pair.target_errors = kp->target_errors;
			pair.lag_bytes = kp->lag_bytes;
			pair.intent = IntentRecordName(kp->intent);
			pair.intent_loaded_regions = kp->intent_loaded_regions;
			pair.intent_marked_regions = kp->intent_marked_regions;
		}
		std::optional<ControlResync> progress;
		if (jobs_)
			progress = jobs_->Progress(r.instance_id, pr.source);
		if (progress && (progress->running || !kp ||
		                 kp->state == PairState::kInSync)) {
			pair.resync = *progress;
		} else if (kp) {
			// No job (yet, or any more): what is left to copy is
			// what the bitmap says is dirty.
			const uint32_t region_kib =
			        view.kernel->region_kib
			                ? view.kernel->region_kib
			                : r.settings.region_kib;
			uint64_t dirty =
			        kp->dirty_regions * uint64_t{region_kib} * 1024;
			if (kp->source_bytes && dirty > kp->source_bytes)
				dirty = kp->source_bytes;
			pair.resync.total_bytes = dirty;
		}
		if (progress) {
			// Why the pair has no job, and when it gets one: a
			// retry only for a pair that is Syncing now.
			pair.resync.failures = progress->failures;
			pair.resync.last_error = progress->last_error;
			if (kp && kp->state == PairState::kSyncing)
				pair.resync.retry_in_s = progress->retry_in_s;
			else
				pair.resync.retry_in_s.reset();
		}
		pipe.pairs.push_back(std::move(pair));
	}
	return pipe;
}

void DaemonService::Apply(const PipeRecord &record,
                          const std::optional<KernelPipeStatus> &kernel,
                          uint64_t read_no)
{
	KeyedLock::Hold hold(applying_, record.instance_id);
	// Deleted since its record was read: Forget() has cleaned up, or
	// waits for this hold to undo what it would apply.
	if (!pipes_.GetPipe(record.instance_id).ok())
		return;
	{
		std::lock_guard lock(applied_mu_);
		uint64_t &newest = applied_[record.instance_id];
		if (read_no < newest) {
			LogDebug() << "refresh pipe " << record.instance_id
			           << ": read " << read_no << " dropped, "
			           << newest << " applied";
			return;
		}
		newest = read_no;
	}
	const std::string instance_id = InstanceIdOf(record);
	std::vector<std::string> sources;
	for (const PairRecord &pr : record.pairs) {
		sources.push_back(pr.source);
		const KernelPairStatus *kp =
		        kernel ? kernel->FindPair(pr.source) : nullptr;
		hub_.UpdatePairState(instance_id, record.name, pr.source,
		                     pr.target,
		                     kp ? PairStateName(kp->state) : "Unknown");
	}
	hub_.RetainPairs(instance_id, sources);
	if (!jobs_)
		return;
	if (kernel)
		jobs_->SyncPipe(pipes_.ForKernel(record), *kernel);
	else
		jobs_->StopPipe(record.instance_id);
}

void DaemonService::Forget(const std::string &uuid)
{
	// The store has let go of the pipe: an Apply() after this hold finds
	// no record and drops its read; one before is undone here.
	KeyedLock::Hold hold(applying_, uuid);
	{
		std::lock_guard lock(applied_mu_);
		applied_.erase(uuid);
	}
	// Again: a refresh may have started the jobs since Delete() stopped
	// them.
	if (jobs_)
		jobs_->StopPipe(uuid);
	hub_.RetainPairs(InstanceIdFor(uuid), {});
}

void DaemonService::RefreshPipe(const std::string &uuid)
{
	const uint64_t read_no = NextRead();
	auto record = pipes_.GetPipe(uuid);
	if (!record.ok())
		return; // not ours (or deleted meanwhile)
	auto kernel = kernel_.GetPipe(uuid);
	if (!kernel.ok()) {
		LogWarning() << "refresh pipe " << uuid << ": "
		             << kernel.status().message();
		return;
	}
	Apply(*record, *kernel, read_no);
}

// RefreshAll() and OnKernelEvent() run on the daemon's main loop: an
// exception must not end the daemon (std::terminate), as NetlinkSocket's
// std::bad_alloc for a message it cannot allocate would. Both only read
// state that the next periodic refresh reads again.
void DaemonService::RefreshAll()
{
	try {
		RefreshAllOnce();
	} catch (const std::exception &e) {
		LogError() << "refresh: " << e.what()
		           << "; the next periodic refresh tries again";
	}
}

void DaemonService::OnKernelEvent(const KernelEvent &event)
{
	try {
		HandleKernelEvent(event);
	} catch (const std::exception &e) {
		LogError() << "kernel event " << KernelEventTypeName(event.type)
		           << (event.pipe_id.empty()
		                       ? ""
		                       : " of pipe " + event.pipe_id)
		           << ": " << e.what()
		           << "; the next periodic refresh reads the state";
	}
}

void DaemonService::RefreshAllOnce()
{
	if (Status st = pipes_.RewriteStaleStore(); !st.ok())
		LogWarning() << st.message()
		             << "; tried again at the next "
		                "refresh";
	const uint64_t read_no = NextRead();
	auto listed = kernel_.ListPipes();
	if (!listed.ok()) {
		LogWarning() << "refresh: list kernel pipes: "
		             << listed.status().message();
		return;
	}
	if (pipes_.HasLeftovers())
		settler_->Request();
	// Pushed again: the stored pipes the kernel lacks, and those whose
	// differing kernel definition start-up could not replace.
	const std::set<std::string> repair = pipes_.PipesToRepair();
	std::map<std::string, PipePusher::Wanted> wanted;
	for (const PipeRecord &record : pipes_.ListPipes()) {
		std::optional<KernelPipeStatus> kernel;
		for (const KernelPipeStatus &k : *listed)
			if (k.id == record.instance_id)
				kernel = k;
		if (!kernel)
			wanted[record.instance_id] = {
			        PipeLabel(record),
			        PipePusher::Reason::kMissing};
		else if (repair.count(record.instance_id))
			wanted[record.instance_id] = {
			        PipeLabel(record),
			        PipePusher::Reason::kDiffers};
		Apply(record, kernel, read_no);
	}
	pusher_.Want(wanted);
}

// A record a call left marked pending (decision 54) holds its endpoints
// and maybe a kernel pipe until it is settled: not until the next start.
// A busy pipe is left for the next refresh rather than waited for.
void DaemonService::SettleLeftovers(const std::stop_token &stop)
{
	auto settled =
	        pipes_.SettleLeftovers(std::chrono::milliseconds(0), stop);
	std::lock_guard<std::mutex> lock(settle_mu_);
	for (const PipeService::Settled &s : settled) {
		if (s.busy) {
			// A call ending, or a modify naming it: the next time.
			LogDebug() << "settle: " << s.line;
			continue;
		}
		if (s.done) {
			settle_failures_.erase(s.uuid);
			LogNotice() << "settle: " << s.line;
			continue;
		}
		auto [logged, added] =
		        settle_failures_.try_emplace(s.uuid, s.line);
		if (!added && logged->second == s.line)
			continue;
		logged->second = s.line;
		LogWarning() << "settle: " << s.line;
	}
}

void DaemonService::HandleKernelEvent(const KernelEvent &event)
{
	ControlEvent out;
	out.type = KernelEventTypeName(event.type);
	if (!event.pipe_id.empty())
		out.instance_id = InstanceIdFor(event.pipe_id);
	if (event.pipe)
		out.name = event.pipe->name;
	switch (event.type) {
	case KernelEventType::kPipeAdded:
	case KernelEventType::kPipeChanged:
		hub_.Publish(out);
		RefreshPipe(event.pipe_id);
		break;
	case KernelEventType::kPipeDeleted:
		hub_.Publish(out);
		// Read, numbered like every refresh (decision 41), rather than
		// stop the jobs: the event may be older than a push that put
		// the pipe back, whose jobs must go on. A pipe the kernel
		// really lacks has its jobs stopped by the refresh; one the
		// store let go of was stopped by its delete.
		RefreshPipe(event.pipe_id);
		break;
	case KernelEventType::kPairState:
		// The kernel's event carries no pipe name, and the target as
		// the kernel has it (an iscsi:// URL's disk): told as the
		// refresh tells it, name and target from the store, so that
		// the refresh's own update is no second event.
		if (auto record = pipes_.GetPipe(out.instance_id);
		    event.pair && record.ok()) {
			const std::string state =
			        PairStateName(event.pair->state);
			for (const PairRecord &pr : record->pairs)
				if (pr.source == event.pair->source)
					hub_.UpdatePairState(
					        out.instance_id, record->name,
					        pr.source, pr.target, state);
		}
		RefreshPipe(event.pipe_id);
		break;
	case KernelEventType::kOverrun:
		out.type = "events_lost";
		out.message = "kernel events were lost; state re-read";
		hub_.Publish(out);
		RefreshAllOnce();
		break;
	}
}

PipeCounts DaemonService::Counts()
{
	PipeCounts counts;
	auto views = pipes_.Describe(std::nullopt);
	if (!views.ok())
		return counts;
	for (const PipeView &view : *views) {
		++counts.pipes;
		counts.pairs += view.record.pairs.size();
		if (!view.kernel)
			continue;
		for (const PairRecord &pr : view.record.pairs) {
			const KernelPairStatus *kp =
			        view.kernel->FindPair(pr.source);
			if (kp && kp->state == PairState::kInSync)
				++counts.pairs_in_sync;
		}
	}
	return counts;
}

std::string DaemonService::StatusText(const PipeCounts &counts)
{
	return std::to_string(counts.pipes) +
	       (counts.pipes == 1 ? " pipe, " : " pipes, ") +
	       std::to_string(counts.pairs_in_sync) + "/" +
	       std::to_string(counts.pairs) + " pairs InSync";
}

} // namespace replipipe
