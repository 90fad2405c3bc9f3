#include "pipe_service.h"

#include <algorithm>
#include <cerrno>
#include <exception>
#include <filesystem>
#include <iterator>
#include <set>
#include <system_error>

#include "goal.h"
#include "log.h"
#include "text_scan.h"

namespace replipipe
{
namespace
{

constexpr size_t kNameMaxLen = 255; // REPLIPIPE_NAME_MAX_LEN
constexpr size_t kMaxPairs = 256;   // REPLIPIPE_MAX_PAIRS

MethodOutcome Fail(ReturnValue rv, std::string why)
{
	MethodOutcome out;
	out.return_value = rv;
	out.error = std::move(why);
	return out;
}

// Why the kernel refused (EBUSY) a PIPE_SET in which a new pair takes the
// device of a pair it replaces, or "" if none does. replipipe.ko takes such
// a target over (decision 25); a module from before that opened every new
// pair's target exclusively, with the pair as holder, before it unpublished
// the pairs it replaced, and refused a device that any pair had.
std::string MovedTargetNote(const std::vector<PairRecord> &new_pairs,
                            const std::map<std::string, uint64_t> &devs,
                            const std::map<uint64_t, PairRecord> &held)
{
	for (const PairRecord &p : new_pairs) {
		auto d = devs.find(p.target);
		if (d == devs.end() || !d->second)
			continue;
		auto h = held.find(d->second);
		if (h == held.end())
			continue;
		return " (TargetEndpoint " + p.target +
		       " is the target of the pair " + h->second.source +
		       " -> " + h->second.target +
		       " that this call replaces: the loaded replipipe.ko "
		       "predates target take-over, so one call cannot move "
		       "a target to another pair; remove that pair with one "
		       "modify and add the new pair with another, which "
		       "starts its full resync)";
	}
	return "";
}

MethodOutcome Done(const std::string &uuid)
{
	MethodOutcome out;
	out.return_value = ReturnValue::kCompleted;
	out.replication_pipe = PipeReference(uuid);
	return out;
}

// A parse or validation error: EOPNOTSUPP is "valid but not offered".
MethodOutcome Invalid(const Status &st)
{
	return Fail(st.err() == EOPNOTSUPP ? ReturnValue::kNotSupported
	                                   : ReturnValue::kInvalidParameter,
	            st.message());
}

// A kernel error: ETIMEDOUT is a timeout, anything else a refusal.
ReturnValue KernelReturnValue(const Status &st)
{
	return st.err() == ETIMEDOUT ? ReturnValue::kTimeout
	                             : ReturnValue::kFailed;
}

bool HasPair(const std::vector<PairRecord> &pairs, const PairRecord &pair)
{
	return std::find(pairs.begin(), pairs.end(), pair) != pairs.end();
}

// " (as OTHER)" when a device was named by another path than given.
std::string As(const std::string &other, const std::string &given)
{
	return other == given ? "" : " (as " + other + ")";
}

// What differs between the stored spec and the kernel's pipe, or "".
std::string SpecDifference(const KernelPipeSpec &want,
                           const KernelPipeStatus &have)
{
	std::string diff;
	auto note = [&](const std::string &what) {
		diff += (diff.empty() ? "" : ", ") + what;
	};
	if (want.name != have.name)
		note("name");
	if (want.mode != have.mode)
		note("mode");
	if (want.failure_policy != have.failure_policy)
		note("failure policy");
	if (want.max_lag_kib != have.max_lag_kib)
		note("max lag");
	if (want.region_kib != have.region_kib)
		note("region size");
	std::set<std::pair<std::string, std::string>> a, b;
	for (const KernelPairSpec &p : want.pairs)
		a.insert({p.source, p.target});
	for (const KernelPairStatus &p : have.pairs)
		b.insert({p.source, p.target});
	if (a != b)
		note("pairs");
	return diff;
}

// Every string parameter of the call, by its CIM name.
Status CheckTextParameters(const CreateOrModifyCall &call)
{
	Status st = CheckText(call.pipe_element_name, "PipeElementName");
	if (st.ok())
		st = CheckText(call.source_system, "SourceSystem");
	if (st.ok())
		st = CheckText(call.target_system, "TargetSystem");
	if (st.ok())
		st = CheckText(call.goal, "Goal", true);
	if (st.ok() && call.replication_pipe)
		st = CheckText(*call.replication_pipe, "ReplicationPipe");
	for (const auto *endpoints :
	     {&call.source_endpoints, &call.target_endpoints}) {
		const char *name = endpoints == &call.source_endpoints
		                           ? "SourceEndpoint"
		                           : "TargetEndpoint";
		for (size_t i = 0;
		     st.ok() && *endpoints && i < (*endpoints)->size(); i++)
			st = CheckText((**endpoints)[i],
			               std::string(name) + "[" +
			                       std::to_string(i) + "]");
	}
	return st;
}

// Store::Save() without exceptions: anything it throws is an error like
// the Statuses it returns, so that the caller still undoes the kernel
// change it made before writing the store.
Status SaveNoThrow(Store &store, const std::vector<StoreEntry> &entries,
                   bool *renamed = nullptr)
{
	try {
		return store.SaveEntries(entries, renamed);
	} catch (const std::exception &e) {
		return Status::Error(store.path() + ": not saved: " + e.what(),
		                     EIO);
	}
}

// The file's records: the pipes, then the records marked pending.
std::vector<StoreEntry> Entries(const std::vector<PipeRecord> &pipes,
                                const std::vector<StoreEntry> &pending)
{
	std::vector<StoreEntry> entries;
	for (const PipeRecord &p : pipes)
		entries.push_back({p, PendingOp::kNone});
	entries.insert(entries.end(), pending.begin(), pending.end());
	return entries;
}

// The owner of a taken endpoint, as a caller is told.
std::string OwnerLabel(const StoreEntry &entry)
{
	switch (entry.pending) {
	case PendingOp::kCreate:
		return PipeLabel(entry.record) +
		       ", whose create did not finish (replipiped rolls it "
		       "back)";
	case PendingOp::kDelete:
		return PipeLabel(entry.record) +
		       ", whose delete did not finish (replipiped finishes "
		       "it)";
	case PendingOp::kNone:
		break;
	}
	return PipeLabel(entry.record);
}

// "10 s", or "250 ms" when not whole seconds.
std::string DurationText(std::chrono::milliseconds d)
{
	if (d.count() % 1000 == 0)
		return std::to_string(d.count() / 1000) + " s";
	return std::to_string(d.count()) + " ms";
}

// Milliseconds since since.
long long WaitedMs(std::chrono::steady_clock::time_point since)
{
	return std::chrono::duration_cast<std::chrono::milliseconds>(
	               std::chrono::steady_clock::now() - since)
	        .count();
}

} // namespace

// The parsed parameters of one CreateOrModify call.
struct PipeService::Request {
	std::optional<std::string> uuid; // modify: the pipe
	std::string name;
	std::string source_system; // "" on modify: unchanged
	std::string target_system; // "" on modify: unchanged
	// nullopt: NULL endpoint arrays (create: no pairs; modify: keep)
	std::optional<std::vector<PairRecord>> pairs;
	// SystemName keys of the target endpoint references, per pair.
	std::vector<std::string> target_system_keys;
	// The properties the Goal gives; the others keep their values (the
	// defaults on create, the pipe's settings on modify).
	GoalPatch goal;
	// A Goal that is valid but asks for what is not offered: ReturnValue
	// 1, once the rest of the call is found valid (a 5 wins); its other
	// properties are then not applied to the checks.
	Status goal_unsupported;
};

// Endpoints reserved for one call in flight; released when it ends, however
// it ends. Reserve() fails when another pipe has or is taking one of them.
class PipeService::Reservation
{
public:
	Reservation(PipeService &svc, std::string uuid)
	    : svc_(svc), uuid_(std::move(uuid))
	{
	}
	~Reservation()
	{
		{
			std::lock_guard<std::mutex> lock(svc_.mu_);
			for (const std::string &s : sources_)
				svc_.reserved_sources_.erase(s);
			for (const std::string &t : targets_) {
				svc_.reserved_targets_.erase(t);
				svc_.reserved_target_urls_.erase(t);
			}
			for (uint64_t d : devices_)
				svc_.reserved_devices_.erase(d);
			if (carries_pending_)
				svc_.carried_.erase(uuid_);
		}
		svc_.reservations_released_.notify_all();
	}
	Reservation(const Reservation &) = delete;
	Reservation &operator=(const Reservation &) = delete;

	// Caller holds svc_.mu_ and has had the devices of pairs resolved.
	// EBUSY: an endpoint is being added by another call in flight (which
	// may still fail and free it); EINVAL: it is taken.
	Status ReserveLocked(const std::vector<PairRecord> &pairs)
	{
		if (Status st = CheckDevicesLocked(pairs); !st.ok())
			return st;
		// An endpoint that is taken is 5 whatever another endpoint
		// of the call waits for: EBUSY only when nothing else fails.
		Status busy;
		for (const PairRecord &p : pairs) {
			Status st = CheckLocked(p);
			if (st.err() == EBUSY && busy.ok())
				busy = st;
			else if (!st.ok() && st.err() != EBUSY)
				return st;
		}
		if (!busy.ok())
			return busy;
		HoldLocked(pairs);
		return Status();
	}

	// Reserves the endpoints of pairs without checking them: those of a
	// stored pipe being deleted, which no other call can have reserved
	// (they are taken), so that none is given to another pipe while this
	// one may still come back. Caller holds svc_.mu_.
	void HoldLocked(const std::vector<PairRecord> &pairs)
	{
		for (const PairRecord &p : pairs) {
			if (svc_.reserved_sources_.emplace(p.source, uuid_)
			            .second)
				sources_.push_back(p.source);
			HoldTargetLocked(p.target);
			const uint64_t dev = svc_.DeviceLocked(p.target);
			if (dev &&
			    svc_.reserved_devices_.emplace(dev, uuid_).second)
				devices_.push_back(dev);
		}
	}

	// Reserves @target alone, unchecked. Caller holds svc_.mu_.
	void HoldTargetLocked(const std::string &target)
	{
		const std::string id = TargetIdentity(target);
		if (svc_.reserved_targets_.emplace(id, uuid_).second) {
			targets_.push_back(id);
			svc_.reserved_target_urls_[id] = target;
		}
	}

	// The pipe's record marked pending is this call's to settle: other
	// calls see its endpoints as reserved (Busy while it runs), not as
	// taken. Once the call ends, a record still marked is left for
	// SettleLeftovers(). Caller holds svc_.mu_.
	void CarryPendingLocked()
	{
		svc_.carried_.insert(uuid_);
		carries_pending_ = true;
	}

private:
	// Within the call: one device as two targets, or a target that is
	// the primary of another pair's source. (A target that is its own
	// source's primary is "source = target", VerifyNewPair().)
	Status CheckDevicesLocked(const std::vector<PairRecord> &pairs) const
	{
		std::vector<uint64_t> dev;
		for (const PairRecord &p : pairs)
			dev.push_back(svc_.DeviceLocked(p.target));
		for (size_t i = 0; i < pairs.size(); i++) {
			if (!dev[i])
				continue;
			for (size_t j = 0; j < pairs.size(); j++) {
				if (j < i && dev[j] == dev[i])
					return Status::Error(
					        "TargetEndpoint " +
					                pairs[i].target +
					                " is given twice" +
					                As(pairs[j].target,
					                   pairs[i].target),
					        EINVAL);
				if (j != i &&
				    svc_.DeviceLocked(pairs[j].source) ==
				            dev[i])
					return Status::Error(
					        "TargetEndpoint " +
					                pairs[i].target +
					                " is the primary "
					                "device "
					                "of SourceEndpoint " +
					                pairs[j].source,
					        EINVAL);
			}
		}
		return Status();
	}

	// EINVAL when the pipe other (owner names it) has an endpoint of p.
	Status CheckTakenLocked(const PairRecord &p, uint64_t dev,
	                        const PipeRecord &other,
	                        const std::string &owner) const
	{
		if (other.instance_id == uuid_)
			return Status();
		for (const PairRecord &q : other.pairs) {
			if (q.source == p.source)
				return Status::Error("SourceEndpoint " +
				                             p.source +
				                             " already belongs "
				                             "to " +
				                             owner,
				                     EINVAL);
			if (TargetIdentity(q.target) ==
			            TargetIdentity(p.target) ||
			    (dev && svc_.DeviceLocked(q.target) == dev))
				return Status::Error(
				        "TargetEndpoint " + p.target +
				                " is already the target of " +
				                q.source +
				                As(q.target, p.target) +
				                " in " + owner,
				        EINVAL);
			if (dev && svc_.DeviceLocked(q.source) == dev)
				return Status::Error(
				        "TargetEndpoint " + p.target +
				                " is the primary device of " +
				                q.source + " in " + owner,
				        EINVAL);
		}
		return Status();
	}

	Status CheckLocked(const PairRecord &p) const
	{
		const uint64_t dev = svc_.DeviceLocked(p.target);
		for (const PipeRecord &other : svc_.pipes_)
			if (Status st = CheckTakenLocked(p, dev, other,
			                                 PipeLabel(other));
			    !st.ok())
				return st;
		// A pending record a call carries out has its endpoints
		// reserved (below: Busy); one left behind has them taken.
		for (const StoreEntry &e : svc_.pending_)
			if (!svc_.carried_.count(e.record.instance_id))
				if (Status st = CheckTakenLocked(
				            p, dev, e.record, OwnerLabel(e));
				    !st.ok())
					return st;
		auto s = svc_.reserved_sources_.find(p.source);
		if (s != svc_.reserved_sources_.end() && s->second != uuid_)
			return Status::Error("SourceEndpoint " + p.source +
			                             " is being added to "
			                             "pipe " +
			                             s->second +
			                             " by another call",
			                     EBUSY);
		auto t = svc_.reserved_targets_.find(TargetIdentity(p.target));
		if (t != svc_.reserved_targets_.end() && t->second.empty())
			return Status::Error(
			        "TargetEndpoint " + p.target +
			                ": replipiped is logging out "
			                "of its session (a logout "
			                "that failed before)",
			        EBUSY);
		if (t != svc_.reserved_targets_.end() && t->second != uuid_)
			return Status::Error("TargetEndpoint " + p.target +
			                             " is being added to "
			                             "pipe " +
			                             t->second +
			                             " by another call",
			                     EBUSY);
		auto d = svc_.reserved_devices_.find(dev);
		if (dev && d != svc_.reserved_devices_.end() &&
		    d->second != uuid_)
			return Status::Error("TargetEndpoint " + p.target +
			                             " is a device being added "
			                             "to pipe " +
			                             d->second +
			                             " by another call",
			                     EBUSY);
		return Status();
	}

	PipeService &svc_;
	const std::string uuid_;
	std::vector<std::string> sources_;
	std::vector<std::string> targets_;
	std::vector<uint64_t> devices_;
	bool carries_pending_ = false;
};

// One call's hold on a pipe's lock (the lock table entry is made on first
// use). When the last user lets go the entry is removed, so that the table
// does not grow with every create attempt and deleted pipe: nobody else
// holds or waits for that mutex then (their references would count), and
// the next call on the pipe makes a new one.
class PipeService::PipeLock
{
public:
	PipeLock(PipeService &svc, std::string uuid)
	    : svc_(svc), uuid_(std::move(uuid))
	{
		std::lock_guard<std::mutex> lock(svc_.mu_);
		auto &m = svc_.pipe_locks_[uuid_];
		if (!m)
			m = std::make_shared<std::timed_mutex>();
		mutex_ = m;
	}
	~PipeLock()
	{
		if (held_)
			mutex_->unlock();
		mutex_.reset();
		std::lock_guard<std::mutex> lock(svc_.mu_);
		auto it = svc_.pipe_locks_.find(uuid_);
		if (it != svc_.pipe_locks_.end() && it->second.use_count() == 1)
			svc_.pipe_locks_.erase(it);
	}
	PipeLock(const PipeLock &) = delete;
	PipeLock &operator=(const PipeLock &) = delete;

	bool TryLockFor(std::chrono::milliseconds timeout)
	{
		held_ = mutex_->try_lock_for(timeout);
		return held_;
	}

private:
	PipeService &svc_;
	const std::string uuid_;
	std::shared_ptr<std::timed_mutex> mutex_;
	bool held_ = false;
};

PipeService::PipeService(KernelApi &kernel, Store &store, EndpointProbe &probe,
                         HostIdentity host, PipeServiceOptions options)
    : kernel_(kernel), store_(store), probe_(probe), host_(std::move(host)),
      options_(options),
      owed_file_(std::filesystem::path(store.path()).parent_path().string(),
                 options_.boot_id_path)
{
}

Status PipeService::Load()
{
	auto entries = store_.LoadEntries();
	if (!entries.ok())
		return entries.status();
	std::lock_guard<std::mutex> lock(mu_);
	pipes_.clear();
	pending_.clear();
	for (StoreEntry &e : *entries) {
		if (e.pending == PendingOp::kNone)
			pipes_.push_back(std::move(e.record));
		else
			pending_.push_back(std::move(e));
	}
	owed_logouts_.clear();
	LoadOwedLogoutsLocked();
	loaded_ = true;
	return Status();
}

const PipeRecord *PipeService::FindLocked(const std::string &uuid) const
{
	for (const PipeRecord &p : pipes_)
		if (p.instance_id == uuid)
			return &p;
	return nullptr;
}

Result<std::string> PipeService::ResolvePipe(const std::string &text) const
{
	auto id = ParsePipeIdentifier(text);
	if (!id.ok())
		return id.status();
	std::lock_guard<std::mutex> lock(mu_);
	if (*id) {
		if (!FindLocked(**id))
			return Status::Error("no pipe " + PipeReference(**id),
			                     ENOENT);
		return **id;
	}
	std::vector<const PipeRecord *> matches;
	for (const PipeRecord &p : pipes_)
		if (!text.empty() && p.name == text)
			matches.push_back(&p);
	if (matches.empty())
		return Status::Error("no pipe named \"" + text + "\"", ENOENT);
	if (matches.size() > 1) {
		std::string list;
		for (const PipeRecord *p : matches)
			list += "\n  " + PipeReference(p->instance_id);
		return Status::Error("PipeElementName \"" + text +
		                             "\" is ambiguous; it names " +
		                             std::to_string(matches.size()) +
		                             " pipes (use a reference):" + list,
		                     EINVAL);
	}
	return matches.front()->instance_id;
}

std::vector<PipeRecord> PipeService::ListPipes() const
{
	std::lock_guard<std::mutex> lock(mu_);
	return pipes_;
}

Result<PipeRecord> PipeService::GetPipe(const std::string &text) const
{
	auto uuid = ResolvePipe(text);
	if (!uuid.ok())
		return uuid.status();
	std::lock_guard<std::mutex> lock(mu_);
	const PipeRecord *p = FindLocked(*uuid);
	if (!p) // deleted since ResolvePipe()
		return Status::Error("no pipe " + PipeReference(*uuid), ENOENT);
	return *p;
}

Result<PipeService::Request>
PipeService::ParseCall(const CreateOrModifyCall &call) const
{
	if (Status st = CheckTextParameters(call); !st.ok())
		return st;
	Request req;
	if (call.replication_pipe) {
		auto uuid = ResolvePipe(*call.replication_pipe);
		if (!uuid.ok())
			return uuid.status().Context("ReplicationPipe");
		req.uuid = *uuid;
	}
	if (call.pipe_element_name.size() > kNameMaxLen)
		return Status::Error("PipeElementName is longer than " +
		                             std::to_string(kNameMaxLen) +
		                             " bytes",
		                     EINVAL);
	req.name = call.pipe_element_name;

	if (!call.source_system.empty()) {
		auto sys = ParseSystemName(call.source_system, "SourceSystem");
		if (!sys.ok())
			return sys.status();
		if (!host_.IsThisHost(*sys))
			return Status::Error(
			        "SourceSystem \"" + *sys +
			                "\" is not this host (" +
			                host_.host_name +
			                "): the source endpoints must be "
			                "local",
			        EINVAL);
		req.source_system = *sys;
	} else if (!req.uuid) {
		return Status::Error("SourceSystem is required", EINVAL);
	}
	if (!call.target_system.empty()) {
		auto sys = ParseSystemName(call.target_system, "TargetSystem");
		if (!sys.ok())
			return sys.status();
		req.target_system = *sys;
	} else if (!req.uuid) {
		return Status::Error("TargetSystem is required", EINVAL);
	}

	const auto &srcs = call.source_endpoints;
	const auto &tgts = call.target_endpoints;
	if (srcs.has_value() != tgts.has_value() ||
	    (srcs && srcs->size() != tgts->size()))
		return Status::Error(
		        "SourceEndpoint has " +
		                (srcs ? std::to_string(srcs->size()) : "NULL") +
		                " and TargetEndpoint " +
		                (tgts ? std::to_string(tgts->size()) : "NULL") +
		                " elements: both must be NULL or of the same "
		                "length",
		        EINVAL);
	if (srcs) {
		if (srcs->size() > kMaxPairs)
			return Status::Error("more than " +
			                             std::to_string(kMaxPairs) +
			                             " pairs",
			                     EINVAL);
		req.pairs.emplace();
		std::set<std::string> seen_sources, seen_targets;
		for (size_t i = 0; i < srcs->size(); i++) {
			const std::string at = "[" + std::to_string(i) + "]";
			auto src = ParseSourceEndpoint((*srcs)[i]);
			if (!src.ok())
				return src.status().Context(at);
			auto tgt = ParseTargetEndpoint((*tgts)[i]);
			if (!tgt.ok())
				return tgt.status().Context(at);
			if (!src->system_name.empty() &&
			    !host_.IsThisHost(src->system_name))
				return Status::Error("SourceEndpoint" + at +
				                             " " + src->name +
				                             " is on system " +
				                             src->system_name +
				                             ", not this host",
				                     EINVAL);
			if (!seen_sources.insert(src->name).second)
				return Status::Error("SourceEndpoint " +
				                             src->name +
				                             " is given twice",
				                     EINVAL);
			if (!seen_targets.insert(TargetIdentity(tgt->name))
			             .second)
				return Status::Error("TargetEndpoint " +
				                             tgt->name +
				                             " is given twice",
				                     EINVAL);
			req.pairs->push_back({src->name, tgt->name});
			req.target_system_keys.push_back(tgt->system_name);
		}
	}
	// An unsupported Goal's offered values still go into the record, to
	// be checked against the pipe: Not Supported only for a call that is
	// otherwise valid (DESIGN.md), and nothing is applied then.
	auto goal = ParseGoalPatch(call.goal, &req.goal_unsupported);
	if (!goal.ok())
		return goal.status();
	req.goal = std::move(*goal);
	return req;
}

PipeService::DeviceNumbers PipeService::ResolveDevices(const Request &req)
{
	std::set<std::string> targets, sources;
	{
		std::lock_guard<std::mutex> lock(mu_);
		CollectEndpointsLocked(&targets, &sources);
	}
	if (req.pairs)
		for (const PairRecord &p : *req.pairs) {
			targets.insert(p.target);
			sources.insert(p.source);
		}
	// Probe errors and missing devices leave 0: the strings are still
	// compared, and the verification of a new pair reports the error.
	auto device = [&](const std::string &path) -> uint64_t {
		if (!path.starts_with("/"))
			return 0;
		auto d = probe_.Device(path);
		return d.ok() && d->exists && d->is_block_device ? d->rdev : 0;
	};
	// A connector's target (iscsi://, docs/iscsi.md) is the disk it is
	// connected as, the device the kernel gets (ForKernel()), so that
	// the disk's own path is that target under another name; one not
	// connected (yet) has no device.
	auto target_device = [&](const std::string &target) -> uint64_t {
		if (!connector_ || !connector_->Handles(target))
			return device(target);
		auto path = connector_->DevicePath(target);
		return path.ok() ? device(*path) : 0;
	};
	DeviceNumbers devs;
	for (const std::string &t : targets)
		devs[t] = target_device(t);
	for (const std::string &s : sources) {
		auto b = probe_.Backstore(s);
		devs[s] = b.ok() && b->exists ? device(b->primary_path) : 0;
	}
	return devs;
}

void PipeService::CollectEndpointsLocked(std::set<std::string> *targets,
                                         std::set<std::string> *sources) const
{
	for (const PipeRecord &p : pipes_)
		for (const PairRecord &q : p.pairs) {
			targets->insert(q.target);
			sources->insert(q.source);
		}
	for (const StoreEntry &e : pending_)
		for (const PairRecord &q : e.record.pairs) {
			targets->insert(q.target);
			sources->insert(q.source);
		}
	for (const auto &[target, uuid] : reserved_targets_)
		targets->insert(target);
	for (const auto &[source, uuid] : reserved_sources_)
		sources->insert(source);
}

void PipeService::RememberDevicesLocked(const DeviceNumbers &devs)
{
	for (const auto &[endpoint, dev] : devs)
		devices_[endpoint] = dev;
	std::set<std::string> live;
	CollectEndpointsLocked(&live, &live);
	for (auto it = devices_.begin(); it != devices_.end();) {
		if (live.count(it->first) || devs.count(it->first))
			++it;
		else
			it = devices_.erase(it);
	}
}

uint64_t PipeService::DeviceLocked(const std::string &endpoint) const
{
	auto it = devices_.find(endpoint);
	return it == devices_.end() ? 0 : it->second;
}

std::map<uint64_t, PairRecord>
PipeService::HeldByPipe(const KernelPipeStatus &pipe)
{
	std::map<uint64_t, PairRecord> held;
	for (const KernelPairStatus &p : pipe.pairs) {
		auto d = probe_.Device(p.target);
		if (d.ok() && d->exists && d->is_block_device)
			held[d->rdev] = {p.source, p.target};
	}
	return held;
}

Status PipeService::SaveWith(const std::string &uuid,
                             const std::optional<PipeRecord> &record,
                             PendingOp pending, std::optional<size_t> at)
{
	const bool settled = record && pending == PendingOp::kNone;
	const bool marked = record && pending != PendingOp::kNone;
	std::vector<PipeRecord> next;
	bool placed = false;
	for (const PipeRecord &p : pipes_) {
		if (p.instance_id != uuid) {
			next.push_back(p);
		} else if (settled) {
			next.push_back(*record);
			placed = true;
		}
	}
	if (settled && !placed)
		next.insert(next.begin() + static_cast<std::ptrdiff_t>(std::min(
		                                   at.value_or(next.size()),
		                                   next.size())),
		            *record);
	std::vector<StoreEntry> next_pending;
	placed = false;
	for (const StoreEntry &e : pending_) {
		if (e.record.instance_id != uuid) {
			next_pending.push_back(e);
		} else if (marked) {
			next_pending.push_back({*record, pending});
			placed = true;
		}
	}
	if (marked && !placed)
		next_pending.push_back({*record, pending});
	bool renamed = false;
	if (Status st =
	            SaveNoThrow(store_, Entries(next, next_pending), &renamed);
	    !st.ok()) {
		// Failed after its rename (the directory's fsync): put the
		// old content back so that the store, too, is unchanged.
		// Before it, the file is as it was.
		if (!renamed)
			return st;
		if (Status back =
		            SaveNoThrow(store_, Entries(pipes_, pending_));
		    !back.ok()) {
			store_stale_ = true;
			LogError() << "store: " << st.message()
			           << "; writing the previous content back "
			              "failed too ("
			           << back.message()
			           << "): the file may hold the change that "
			              "failed; it is written again at each "
			              "refresh until that succeeds";
		}
		return st;
	}
	store_stale_ = false;
	pipes_ = std::move(next);
	pending_ = std::move(next_pending);
	if (!record)
		to_repair_.erase(uuid);
	return Status();
}

Status PipeService::RewriteStaleStore()
{
	std::lock_guard<std::mutex> lock(mu_);
	if (!store_stale_)
		return Status();
	if (Status st = SaveNoThrow(store_, Entries(pipes_, pending_));
	    !st.ok())
		return st.Context("store: writing back what a failed save "
		                  "changed");
	store_stale_ = false;
	LogNotice() << "store: written back after a failed save; the file "
	               "holds the stored pipes again";
	return Status();
}

std::string PipeService::DropPendingRecord(const std::string &uuid)
{
	std::lock_guard<std::mutex> lock(mu_);
	Status st = SaveWith(uuid, std::nullopt);
	if (st.ok())
		return "";
	return "; removing its pending record from the store failed (" +
	       st.message() + "): replipiped tries again";
}

Status PipeService::UndoKernel(const std::string &uuid,
                               const std::optional<PipeRecord> &old)
{
	if (old) {
		std::string unresolved;
		const KernelPipeSpec spec = KernelSpec(*old, &unresolved);
		if (!unresolved.empty())
			return Status::Error("the stored definition cannot go "
			                     "back: " +
			                             unresolved,
			                     EHOSTUNREACH);
		return kernel_.SetPipe(spec);
	}
	Status st = kernel_.DeletePipe(uuid);
	return st.err() == ENOENT ? Status() : st;
}

MethodOutcome PipeService::CreateOrModify(const CreateOrModifyCall &call)
{
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (!loaded_)
			return Fail(ReturnValue::kUnspecifiedError,
			            "the pipe store is not loaded");
	}
	auto parsed = ParseCall(call);
	if (!parsed.ok())
		return Invalid(parsed.status());
	Request &req = *parsed;
	const bool modify = req.uuid.has_value();
	const std::string uuid = modify ? *req.uuid : NewUuid();

	// The bound of Busy, for the pipe's lock and the endpoints together.
	const auto call_started = std::chrono::steady_clock::now();
	const auto deadline = call_started + options_.busy_timeout;
	PipeLock pipe_lock(*this, uuid);
	if (!pipe_lock.TryLockFor(options_.busy_timeout))
		return Fail(
		        ReturnValue::kBusy,
		        "pipe " + PipeReference(uuid) +
		                " is held by another operation (waited " +
		                std::to_string(options_.busy_timeout.count()) +
		                " ms)");

	const DeviceNumbers devs = ResolveDevices(req);

	// Build the new record against the current one, under mu_, and
	// reserve its endpoints.
	std::optional<PipeRecord> old;
	PipeRecord next;
	std::vector<PairRecord> new_pairs;
	Reservation reservation(*this, uuid);
	// The new record from the current one and the call (mu_ held); an
	// outcome if the call is refused.
	auto build = [&]() -> std::optional<MethodOutcome> {
		old.reset();
		next = PipeRecord();
		new_pairs.clear();
		if (modify) {
			const PipeRecord *cur = FindLocked(uuid);
			if (!cur) // deleted while we waited for its lock
				return Fail(ReturnValue::kInvalidParameter,
				            "ReplicationPipe: no pipe " +
				                    PipeReference(uuid));
			old = *cur;
			next = *cur;
			// "localhost" and the host's name are one system,
			// as for SourceSystem (ParseCall()).
			if (!req.target_system.empty() &&
			    !host_.SameSystem(req.target_system,
			                      cur->target_system))
				return Fail(ReturnValue::kInvalidParameter,
				            "TargetSystem \"" +
				                    req.target_system +
				                    "\" differs from the "
				                    "pipe's \"" +
				                    cur->target_system +
				                    "\": the systems of an "
				                    "existing pipe cannot "
				                    "change");
			if (!req.name.empty())
				next.name = req.name;
		} else {
			next.instance_id = uuid;
			next.name = req.name;
			next.source_system = req.source_system;
			next.target_system = req.target_system;
		}
		next.settings = req.goal.ApplyTo(next.settings);
		if (req.pairs)
			next.pairs = *req.pairs;
		// A pair given with its source and its current target under
		// another path (a /dev/disk/by-* link, say) is that pair, kept:
		// the kernel keeps a pair only with the same target string.
		for (PairRecord &p : next.pairs) {
			const uint64_t dev = DeviceLocked(p.target);
			if (!old || !dev)
				continue;
			for (const PairRecord &q : old->pairs)
				if (q.source == p.source &&
				    DeviceLocked(q.target) == dev)
					p.target = q.target;
		}

		for (size_t i = 0; i < req.target_system_keys.size(); i++) {
			const std::string &key = req.target_system_keys[i];
			if (!key.empty() &&
			    !host_.SameSystem(key, next.target_system))
				return Fail(ReturnValue::kInvalidParameter,
				            "TargetEndpoint[" +
				                    std::to_string(i) +
				                    "] is on system " + key +
				                    ", not on TargetSystem " +
				                    next.target_system);
		}
		bool keeps_pairs = false;
		for (const PairRecord &p : next.pairs) {
			if (old && HasPair(old->pairs, p))
				keeps_pairs = true;
			else
				new_pairs.push_back(p);
		}
		if (keeps_pairs &&
		    next.settings.region_kib != old->settings.region_kib)
			return Fail(ReturnValue::kInvalidParameter,
			            "RegionSizeKiB cannot change from " +
			                    std::to_string(
			                            old->settings.region_kib) +
			                    " to " +
			                    std::to_string(
			                            next.settings.region_kib) +
			                    " while the pipe keeps pairs "
			                    "(their dirty bitmaps use it)");
		return std::nullopt;
	};
	{
		std::unique_lock<std::mutex> lock(mu_);
		// A call adding an endpoint this one wants may still fail and
		// free it: wait for it (within the busy time-out), then build
		// the record again from what is stored by then.
		for (;;) {
			RememberDevicesLocked(devs);
			if (std::optional<MethodOutcome> refused = build())
				return *refused;
			Status st = reservation.ReserveLocked(next.pairs);
			if (st.ok())
				break;
			if (st.err() != EBUSY)
				return Fail(ReturnValue::kInvalidParameter,
				            st.message());
			if (reservations_released_.wait_until(lock, deadline) ==
			    std::cv_status::timeout)
				return Fail(ReturnValue::kBusy,
				            st.message() + " (waited " +
				                    std::to_string(WaitedMs(
				                            call_started)) +
				                    " ms in all)");
		}
	}
	// Otherwise valid (systems, endpoints, settings): now a Goal asking
	// for what is not offered is Not Supported, before anything changes.
	if (!req.goal_unsupported.ok())
		return Invalid(req.goal_unsupported);

	// A new pair may take a target that one of the pipe's own pairs has
	// now (a swap, a removed pair's target, a kept target under another
	// path): the kernel holds it until the PIPE_SET, so it is not "in
	// use" for the pre-check. The kernel takes it over (an older module
	// refuses: MovedTargetNote()).
	// What the kernel has of the pipe now. A failed modify puts back what
	// was there: the stored pipe if the kernel had it (or cannot say),
	// nothing if it had none (a module reloaded since the daemon's
	// reconcile), so that the failed call does not create it.
	std::optional<PipeRecord> undo_to = old;
	std::map<uint64_t, PairRecord> held;
	if (old) {
		auto in_kernel = kernel_.GetPipe(uuid);
		if (in_kernel.ok() && !*in_kernel)
			undo_to.reset();
		else if (in_kernel.ok() && !new_pairs.empty())
			held = HeldByPipe(**in_kernel);
	}
	std::set<uint64_t> held_devices;
	for (const auto &[dev, pair] : held)
		held_devices.insert(dev);
	std::vector<std::string> made; // connections this call made
	if (MethodOutcome v =
	            ConnectAndVerify(uuid, new_pairs, held_devices, &made);
	    v.return_value != ReturnValue::kCompleted)
		return v;

	// A create journals its intent before the kernel has the pipe: a
	// daemon killed from here until the mark is cleared leaves a record
	// that the next start rolls back (decision 48), not a kernel pipe
	// that no store knows.
	if (!modify) {
		Status st;
		{
			std::lock_guard<std::mutex> lock(mu_);
			st = SaveWith(uuid, next, PendingOp::kCreate);
			if (st.ok())
				reservation.CarryPendingLocked();
		}
		if (!st.ok()) {
			DropConnections(uuid, made);
			return Fail(ReturnValue::kUnspecifiedError,
			            "store: " + st.message());
		}
	}

	// A URL target whose peer gives no device now, and for which the
	// kernel mirrors to none (a kept pair of a pipe the kernel lacks: a
	// module reloaded since the last push), would reach the kernel as a
	// path: the peer's state is the answer, before the PIPE_SET.
	std::string unresolved;
	const KernelPipeSpec spec = KernelSpec(next, &unresolved);
	if (!unresolved.empty()) {
		DropConnections(uuid, made);
		if (!modify)
			unresolved += DropPendingRecord(uuid);
		return Fail(ReturnValue::kFailed,
		            unresolved + "; try again once the peer answers");
	}
	// The sessions this call made go when it fails, but only once the
	// kernel is known not to mirror to them (refused, or undone): a pipe
	// the kernel may have keeps them. A create's are then in its record
	// left marked, which SettleLeftovers() deletes before it logs them
	// out; a modify's stay logged in (decision 56).
	if (Status st = kernel_.SetPipe(spec); !st.ok()) {
		std::string why = "kernel: " + st.message();
		if (st.err() == EBUSY)
			why += MovedTargetNote(new_pairs, devs, held);
		bool kernel_may_have_it = false;
		if (st.err() == ETIMEDOUT) {
			// The kernel may still apply it: take it back.
			Status undo = UndoKernel(uuid, undo_to);
			if (!undo.ok()) {
				why += "; undoing it failed too (" +
				       undo.message() +
				       (modify ? "); the daemon pushes the "
				                 "stored definition again"
				               : "); the daemon rolls it back");
				kernel_may_have_it = true;
				if (modify)
					MarkForRepair(uuid);
			}
		}
		if (!kernel_may_have_it)
			DropConnections(uuid, made);
		// A create the kernel may have keeps its mark:
		// SettleLeftovers() rolls it back.
		if (!modify && !kernel_may_have_it)
			why += DropPendingRecord(uuid);
		return Fail(KernelReturnValue(st), why);
	}

	Status saved;
	{
		std::lock_guard<std::mutex> lock(mu_);
		saved = SaveWith(uuid, next);
	}
	if (!saved.ok()) {
		std::string why = "store: " + saved.message();
		Status undo = UndoKernel(uuid, undo_to);
		if (undo.ok())
			DropConnections(uuid, made);
		why += undo.ok() ? "; the kernel change was undone"
		                 : "; undoing the kernel change failed (" +
		                           undo.message() +
		                           "): kernel and store disagree "
		                           "until the daemon reconciles";
		if (modify && !undo.ok())
			MarkForRepair(uuid);
		// Undone, a create's record goes; else its mark stays for
		// SettleLeftovers().
		if (!modify && undo.ok())
			why += DropPendingRecord(uuid);
		return Fail(ReturnValue::kUnspecifiedError, why);
	}
	if (old) { // the removed pairs' connections
		std::vector<std::string> gone;
		for (const PairRecord &p : old->pairs)
			gone.push_back(p.target);
		DropConnections(uuid, gone);
	}
	return Done(uuid);
}

MethodOutcome PipeService::Delete(const std::string &pipe)
{
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (!loaded_)
			return Fail(ReturnValue::kUnspecifiedError,
			            "the pipe store is not loaded");
	}
	auto resolved = ResolvePipe(pipe);
	if (!resolved.ok())
		return Invalid(resolved.status());
	const std::string uuid = *resolved;
	PipeLock pipe_lock(*this, uuid);
	if (!pipe_lock.TryLockFor(options_.busy_timeout))
		return Fail(ReturnValue::kBusy,
		            "pipe " + PipeReference(uuid) +
		                    " is held by another operation");

	// Its endpoints stay taken until the kernel has answered: the pipe
	// comes back to the store if the kernel may still have it, and must
	// not find one of them in another pipe then.
	Reservation reservation(*this, uuid);
	std::optional<PipeRecord> old;
	size_t old_index = 0; // in pipes_: `list` keeps its order on failure
	{
		std::lock_guard<std::mutex> lock(mu_);
		const PipeRecord *cur = FindLocked(uuid);
		if (!cur)
			return Fail(ReturnValue::kInvalidParameter,
			            "no pipe " + PipeReference(uuid));
		old = *cur;
		old_index = static_cast<size_t>(cur - pipes_.data());
		reservation.HoldLocked(old->pairs);
		// Marked, not removed yet: a daemon killed before the
		// kernel's answer leaves a record that the next start
		// finishes (decision 48).
		if (Status st = SaveWith(uuid, old, PendingOp::kDelete);
		    !st.ok())
			return Fail(ReturnValue::kUnspecifiedError,
			            "store: " + st.message());
		reservation.CarryPendingLocked();
	}
	Status st = kernel_.DeletePipe(uuid);
	if (st.err() == ETIMEDOUT) {
		// It may have deleted it all the same (a departing pair's
		// flush takes up to 5 s): a pipe it no longer has is gone,
		// not put back in the store to be pushed again.
		auto now = kernel_.GetPipe(uuid);
		if (now.ok() && !*now)
			st = Status();
		// Nor when the kernel cannot say: put back, a pipe it did
		// delete would be pushed again, its pairs resynced in full.
		// The mark stays, and SettleLeftovers() finishes the delete.
		if (!now.ok())
			return Fail(ReturnValue::kTimeout,
			            "kernel: " + st.message() +
			                    "; asking it whether the pipe is "
			                    "gone failed too (" +
			                    now.status().message() +
			                    "): the pipe stays marked for "
			                    "deletion, and the daemon finishes "
			                    "the delete");
	}
	if (st.ok() || st.err() == ENOENT) {
		// The kernel let go of it: the delete is done whatever the
		// store says now (a mark left is finished by
		// SettleLeftovers()). The sessions go while the mark is still
		// there: a daemon killed before they went finishes them at its
		// next start, and one whose logout failed is owed by then
		// (decision 102).
		std::vector<std::string> gone;
		for (const PairRecord &p : old->pairs)
			gone.push_back(p.target);
		DropConnections(uuid, gone);
		if (std::string note = DropPendingRecord(uuid); !note.empty())
			LogWarning() << "delete of " << PipeLabel(*old)
			             << ": the kernel deleted it" << note;
		return Done(uuid);
	}

	std::string why = "kernel: " + st.message();
	std::lock_guard<std::mutex> lock(mu_);
	if (Status back = SaveWith(uuid, old, PendingOp::kNone, old_index);
	    !back.ok())
		why += "; restoring the store failed too (" + back.message() +
		       "): the pipe stays marked for deletion, and the daemon "
		       "finishes the delete";
	return Fail(KernelReturnValue(st), why);
}

Result<std::vector<PipeView>>
PipeService::Describe(const std::optional<std::string> &pipe)
{
	std::vector<PipeRecord> records;
	if (pipe) {
		auto one = GetPipe(*pipe);
		if (!one.ok())
			return one.status();
		records.push_back(*one);
	} else {
		records = ListPipes();
	}
	std::vector<PipeView> views;
	auto listed = kernel_.ListPipes();
	for (PipeRecord &r : records) {
		PipeView v;
		v.reference = PipeReference(r.instance_id);
		if (!listed.ok()) {
			v.kernel_error = listed.status().message();
		} else {
			for (const KernelPipeStatus &k : *listed)
				if (k.id == r.instance_id)
					v.kernel = k;
			if (!v.kernel)
				v.kernel_error = "not in the kernel";
		}
		v.record = std::move(r);
		views.push_back(std::move(v));
	}
	return views;
}

// What one Reconcile() hands to its peer workers; shared with them, since
// they may outlive the call.
struct PipeService::PeerRun {
	std::vector<PipeRecord> pipes; // stored pipes with connector targets
	std::mutex mu;
	std::condition_variable cv; // done or returned changed
	size_t next = 0;            // the next of pipes to take; guarded by mu
	size_t done = 0;            // guarded by mu
	// Each pipe's lines while Reconcile() waits; guarded by mu.
	std::vector<std::optional<std::vector<std::string>>> lines;
	// Reconcile() has returned: a pipe done later logs its lines.
	bool returned = false; // guarded by mu
};

PipeService::~PipeService()
{
	BeginShutdown();
	std::vector<std::thread> workers;
	{
		std::lock_guard<std::mutex> lock(mu_);
		workers.swap(peer_workers_);
	}
	// Not under mu_: a worker takes it.
	for (std::thread &t : workers)
		t.join();
}

Result<std::vector<std::string>> PipeService::Reconcile()
{
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (!loaded_)
			return Status::Error("the pipe store is not loaded",
			                     EIO);
	}
	auto listed = kernel_.ListPipes();
	if (!listed.ok())
		return listed.status().Context("reconcile: list kernel pipes");
	std::vector<std::string> report;
	std::set<std::string> stored_ids;
	// First what a killed daemon left half done (decision 48): their
	// kernel pipes hold endpoints that no stored pipe may have.
	for (const Settled &s : SettleLeftovers(options_.busy_timeout)) {
		stored_ids.insert(s.uuid);
		report.push_back(s.line);
	}
	const std::vector<PipeRecord> stored = ListPipes();
	auto in_kernel = [&](const std::string &uuid) {
		std::optional<KernelPipeStatus> have;
		for (const KernelPipeStatus &k : *listed)
			if (k.id == uuid)
				have = k;
		return have;
	};
	// The pipes that need a peer are connected on threads of their own
	// and waited for at most peer_wait in all (decision 59): a login to
	// a dead peer takes the connector's whole bound, and the daemon
	// must not wait for one after the other before it serves anything.
	// The others are reconciled meanwhile, here.
	const auto deadline =
	        std::chrono::steady_clock::now() + options_.peer_wait;
	auto run = std::make_shared<PeerRun>();
	std::vector<size_t> run_index(stored.size(), stored.size());
	for (size_t i = 0; i < stored.size(); ++i) {
		stored_ids.insert(stored[i].instance_id);
		if (!NeedsConnection(stored[i]))
			continue;
		run_index[i] = run->pipes.size();
		run->pipes.push_back(stored[i]);
	}
	run->lines.resize(run->pipes.size());
	const bool started = run->pipes.empty() || StartPeerWorkers(run);
	std::vector<std::vector<std::string>> lines(stored.size());
	for (size_t i = 0; i < stored.size(); ++i) {
		if (run_index[i] != stored.size())
			continue;
		const std::optional<KernelPipeStatus> have =
		        in_kernel(stored[i].instance_id);
		lines[i] = ReconcileOne(stored[i], &have, {});
	}
	{
		std::unique_lock<std::mutex> lock(run->mu);
		if (started)
			run->cv.wait_until(lock, deadline, [&] {
				return run->done == run->pipes.size();
			});
		run->returned = true;
		for (size_t i = 0; i < stored.size(); ++i) {
			if (run_index[i] == stored.size())
				continue;
			if (auto &done = run->lines[run_index[i]]) {
				lines[i] = std::move(*done);
				continue;
			}
			const std::string label = PipeLabel(stored[i]);
			if (!started) {
				lines[i] = {label +
				            ": not reconciled: no thread could "
				            "be started for its peers' "
				            "connections; replipiped tries "
				            "again"};
				continue;
			}
			const std::string waited =
			        ": its peers were not connected within " +
			        DurationText(options_.peer_wait);
			lines[i] = {label + waited +
			            (in_kernel(stored[i].instance_id)
			                     ? "; the kernel keeps the pipe as "
			                       "it has it until they are, then "
			                       "it is reconciled (logged as "
			                       "\"reconcile: ...\")"
			                     : "; not in the kernel until they "
			                       "are, then pushed (logged as "
			                       "\"reconcile: ...\"; replipiped "
			                       "keeps trying)")};
		}
	}
	for (std::vector<std::string> &l : lines)
		report.insert(report.end(), std::make_move_iterator(l.begin()),
		              std::make_move_iterator(l.end()));
	size_t unknown = 0;
	for (const KernelPipeStatus &k : *listed)
		if (!stored_ids.count(k.id)) {
			unknown++;
			report.push_back(
			        "kernel pipe " + k.id + " (\"" + k.name +
			        "\") is not in the store; left untouched "
			        "(delete it through netlink if unwanted)");
		}
	// A store file that was removed or moved away loads as a first
	// start's: said once, plainly, since nothing else would show it
	// until a reboot leaves those pipes unmirrored.
	if (stored_ids.empty() && unknown > 0)
		report.push_back(
		        "the store " + store_.path() +
		        " holds no pipe, but the kernel mirrors " +
		        std::to_string(unknown) +
		        ": if that file was removed or moved away, stop "
		        "replipiped and put it back; nothing pushes these "
		        "pipes to the kernel again after a reboot");
	return report;
}

bool PipeService::StartPeerWorkers(const std::shared_ptr<PeerRun> &run)
{
	const size_t want = std::min(run->pipes.size(), kPeerConnectsAtOnce);
	size_t started = 0;
	std::string why;
	{
		std::lock_guard<std::mutex> lock(mu_);
		for (; started < want; ++started) {
			try {
				peer_workers_.emplace_back(
				        [this, run,
				         stop = background_stop_.get_token()] {
					        PeerWorker(*run, stop);
				        });
			} catch (const std::system_error &e) {
				// Fewer workers: those started take the
				// rest.
				why = e.what();
				break;
			}
		}
		if (started == 0) {
			// Nobody connects them: the pusher pushes those the
			// kernel lacks, and compares the others.
			for (const PipeRecord &p : run->pipes)
				to_repair_.insert(p.instance_id);
		}
	}
	if (started < want)
		LogWarning() << "reconcile: " << started << " of " << want
		             << " threads for the peers' connections started: "
		             << why;
	return started > 0;
}

void PipeService::PeerWorker(PeerRun &run, const std::stop_token &stop)
{
	for (;;) {
		size_t i;
		{
			std::lock_guard<std::mutex> lock(run.mu);
			if (run.next == run.pipes.size())
				return;
			i = run.next++;
		}
		const PipeRecord &record = run.pipes[i];
		std::vector<std::string> lines;
		if (!stop.stop_requested()) {
			// An exception must not end the process from this
			// thread (NetlinkSocket throws std::bad_alloc for a
			// message it cannot allocate).
			try {
				lines = ReconcileOne(record, nullptr, stop);
			} catch (const std::exception &e) {
				{
					std::lock_guard<std::mutex> lock(mu_);
					to_repair_.insert(record.instance_id);
				}
				lines = {PipeLabel(record) +
				         ": not reconciled: " + e.what() +
				         "; replipiped tries again"};
			}
		}
		bool late;
		{
			std::lock_guard<std::mutex> lock(run.mu);
			late = run.returned;
			if (!late && !stop.stop_requested())
				run.lines[i] = lines;
			++run.done;
		}
		run.cv.notify_all();
		if (late)
			for (const std::string &line : lines)
				LogNotice() << "reconcile: " << line;
	}
}

std::vector<std::string>
PipeService::ReconcileOne(const PipeRecord &listed_record,
                          const std::optional<KernelPipeStatus> *listed,
                          const std::stop_token &stop)
{
	const std::string &uuid = listed_record.instance_id;
	PipeLock pipe_lock(*this, uuid);
	if (!pipe_lock.TryLockFor(options_.busy_timeout)) {
		// The call holding it may fail and leave the kernel's
		// definition as it found it, which may differ from the store's
		// (a modify killed between its PIPE_SET and its store write):
		// the next refresh compares them once the pipe is free
		// (PushIfNeeded()).
		MarkForRepair(uuid);
		return {PipeLabel(listed_record) +
		        ": busy, not reconciled; compared with the kernel "
		        "once free"};
	}
	// Under the lock: a pipe reconciled in the background may have been
	// changed or deleted by a call since the store was listed.
	auto current = GetPipe(uuid);
	if (!current.ok())
		return {PipeLabel(listed_record) +
		        ": deleted meanwhile, not reconciled"};
	const PipeRecord &stored = *current;
	const std::string label = PipeLabel(stored);
	std::vector<std::string> lines;
	// Sessions to the peers first (docs/iscsi.md).
	const std::string why = ConnectStored(stored);
	if (!why.empty())
		lines.push_back(label + ": " + why);
	if (stop.stop_requested()) {
		lines.push_back(label + ": not reconciled: replipiped is "
		                        "stopping");
		return lines;
	}
	std::optional<KernelPipeStatus> have;
	if (listed) {
		have = *listed;
	} else if (auto asked = kernel_.GetPipe(uuid); asked.ok()) {
		have = *asked;
	} else {
		// Missing or not: PushIfNeeded() finds out.
		std::lock_guard<std::mutex> lock(mu_);
		to_repair_.insert(uuid);
		lines.push_back(label + ": not reconciled: " +
		                asked.status().message() +
		                "; replipiped tries again");
		return lines;
	}
	if (!why.empty() && !have) {
		lines.push_back(label + ": not pushed to the kernel; "
		                        "replipiped tries again");
		return lines;
	}
	std::string unresolved;
	bool kept_without_device = false;
	const KernelPipeSpec spec =
	        KernelSpec(stored, &unresolved, &kept_without_device);
	if (!unresolved.empty()) {
		// Not adopted, not pushed: the kernel's pair is kept until the
		// peer gives the target's disk (PushIfNeeded()).
		if (have)
			MarkForRepair(uuid);
		lines.push_back(label + ": " +
		                (have ? "not compared with the kernel: "
		                      : "not pushed to the kernel: ") +
		                unresolved + "; replipiped tries again");
		return lines;
	}
	if (!have) {
		// The pusher tries again when this fails (RefreshAll()).
		Status st = kernel_.SetPipe(spec);
		lines.push_back(
		        label + ": " +
		        (st.ok() ? "pushed to the kernel (" +
		                           std::to_string(spec.pairs.size()) +
		                           " pairs, full resync)"
		                 : "could not be pushed to the kernel: " +
		                           st.message() +
		                           "; replipiped tries again"));
		return lines;
	}
	const std::string diff = SpecDifference(spec, *have);
	if (diff.empty() && kept_without_device) {
		// A lost session's disk, which no longer answers: logged in
		// again, and the pair given the new disk, once the peer
		// answers (PushIfNeeded()).
		MarkForRepair(uuid);
		lines.push_back(label + ": adopted from the kernel, a target "
		                        "on a device its peer no longer "
		                        "gives; replipiped logs in again");
		return lines;
	}
	if (diff.empty()) {
		lines.push_back(label + ": adopted from the kernel");
		return lines;
	}
	if (Status st = kernel_.SetPipe(spec); !st.ok()) {
		// A refusal may pass (EBUSY while a replaced pair's writes
		// drain, decision 53): the pusher tries again rather than
		// leave the kernel's definition until the next start.
		std::lock_guard<std::mutex> lock(mu_);
		to_repair_.insert(uuid);
		lines.push_back(label + ": kernel differed from the store (" +
		                diff +
		                "); pushing the stored definition failed: " +
		                st.message() + "; replipiped tries again");
		return lines;
	}
	lines.push_back(label + ": kernel differed from the store (" + diff +
	                "); pushed the stored definition");
	return lines;
}

bool PipeService::HasLeftovers() const
{
	std::lock_guard<std::mutex> lock(mu_);
	for (const StoreEntry &e : pending_)
		if (!carried_.count(e.record.instance_id))
			return true;
	return !owed_logouts_.empty() || owed_file_stale_;
}

std::vector<PipeService::Settled>
PipeService::SettleLeftovers(std::chrono::milliseconds wait,
                             const std::stop_token &stop)
{
	std::vector<StoreEntry> unsettled;
	{
		std::lock_guard<std::mutex> lock(mu_);
		for (const StoreEntry &e : pending_)
			if (!carried_.count(e.record.instance_id))
				unsettled.push_back(e);
	}
	std::vector<Settled> settled;
	for (const StoreEntry &e : unsettled) {
		if (stop.stop_requested())
			break;
		settled.push_back(SettlePending(e, wait));
	}
	RetryOwedLogouts(stop);
	return settled;
}

// Only a try that ends the session, or finds it gone, or finds a stored or
// pending pipe's target using it, settles the debt. One kept for a call in
// flight (another LUN of the target being added, say) stays owed: that
// call may still fail and, having found the session rather than made it,
// would not log out of it.
void PipeService::RetryOwedLogouts(const std::stop_token &stop)
{
	if (!connector_)
		return;
	std::map<std::string, OwedLogout> owed;
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (owed_file_stale_)
			SaveOwedLogoutsLocked();
		owed = owed_logouts_;
	}
	for (const auto &[target, debt] : owed) {
		if (stop.stop_requested())
			return;
		// No pipe's (owner ""): TargetsInUse("") counts every other
		// reservation, and a call that wants the target is told why it
		// is busy (Reservation::CheckLocked()).
		Reservation reservation(*this, "");
		{
			std::lock_guard<std::mutex> lock(mu_);
			if (reserved_targets_.count(TargetIdentity(target)))
				continue; // a call has it: the next refresh
			reservation.HoldTargetLocked(target);
		}
		const SessionDisconnect done = connector_->DisconnectSession(
		        target, debt.session,
		        [this] { return TargetsInUse(""); });
		std::lock_guard<std::mutex> lock(mu_);
		auto it = owed_logouts_.find(target);
		if (it == owed_logouts_.end() ||
		    it->second.session != debt.session)
			continue; // owed anew meanwhile, for another session
		switch (done.outcome) {
		case SessionDisconnect::Outcome::kEnded:
			owed_logouts_.erase(it);
			SaveOwedLogoutsLocked();
			LogNotice() << "disconnect: " << target << ": "
			            << debt.session << " ended";
			break;
		case SessionDisconnect::Outcome::kKept:
			if (!done.kept_for.empty() &&
			    !IsStoredTargetLocked(done.kept_for))
				break; // a call in flight's: tried again
			owed_logouts_.erase(it);
			SaveOwedLogoutsLocked();
			LogNotice()
			        << "disconnect: " << target << ": "
			        << debt.session
			        << (done.kept_for.empty()
			                    ? " is the administrator's"
			                    : " is used by " + done.kept_for)
			        << "; no logout owed";
			break;
		case SessionDisconnect::Outcome::kFailed:
			OweLogoutLocked(target, debt.session, done.why);
			break;
		}
	}
}

bool PipeService::IsStoredTargetLocked(const std::string &target) const
{
	for (const PipeRecord &p : pipes_)
		for (const PairRecord &pair : p.pairs)
			if (pair.target == target)
				return true;
	for (const StoreEntry &e : pending_)
		for (const PairRecord &pair : e.record.pairs)
			if (pair.target == target)
				return true;
	return false;
}

PipeService::Settled PipeService::SettlePending(const StoreEntry &entry,
                                                std::chrono::milliseconds wait)
{
	const std::string &uuid = entry.record.instance_id;
	const bool create = entry.pending == PendingOp::kCreate;
	const std::string what =
	        PipeLabel(entry.record) +
	        (create ? ": its create did not finish (no caller was told "
	                  "it succeeded)"
	                : ": its delete did not finish");
	const std::string settled = create ? "rolled back" : "finished";
	PipeLock pipe_lock(*this, uuid);
	if (!pipe_lock.TryLockFor(wait))
		return {uuid, what + "; busy, not " + settled, false, true};
	// Its endpoints stay reserved until its sessions are dropped, as in
	// Delete(): a call that wants one meanwhile gets Busy, and does not
	// log in to a target whose session this logs out.
	Reservation reservation(*this, uuid);
	{
		std::lock_guard<std::mutex> lock(mu_);
		// Under the lock: a call may have settled it since it was
		// listed.
		bool still = false;
		for (const StoreEntry &e : pending_)
			still = still || e.record.instance_id == uuid;
		if (!still || carried_.count(uuid))
			return {uuid, what + "; settled meanwhile", true};
		reservation.HoldLocked(entry.record.pairs);
		reservation.CarryPendingLocked();
	}
	// Asked, not looked up in a listing: one made before the record was
	// left would not have the pipe of a call that ended since.
	std::string done = "deleted from the kernel, ";
	Status st = kernel_.DeletePipe(uuid);
	if (st.err() == ENOENT)
		done = "not in the kernel, ";
	else if (!st.ok())
		return {uuid,
		        what + "; not " + settled +
		                ": deleting it from the kernel failed (" +
		                st.message() +
		                "); its record stays marked, and replipiped "
		                "tries again",
		        false};
	// The sessions first, as in Delete(): the mark stays until they went.
	std::vector<std::string> targets;
	for (const PairRecord &p : entry.record.pairs)
		targets.push_back(p.target);
	DropConnections(uuid, targets);
	std::string note = DropPendingRecord(uuid);
	return {uuid,
	        what + "; " + settled + ": " + done +
	                (note.empty() ? "removed from the store"
	                              : note.substr(2)),
	        note.empty()};
}

// A pipe the kernel may have otherwise than stored (a modify neither
// applied nor undone): the next refresh pushes the stored definition
// (PushIfNeeded()), not only the next start's Reconcile().
void PipeService::MarkForRepair(const std::string &uuid)
{
	std::lock_guard<std::mutex> lock(mu_);
	to_repair_.insert(uuid);
}

std::set<std::string> PipeService::PipesToRepair() const
{
	std::lock_guard<std::mutex> lock(mu_);
	return to_repair_;
}

Result<PushOutcome> PipeService::PushIfNeeded(const std::string &uuid)
{
	PipeLock pipe_lock(*this, uuid);
	// A call holding the pipe decides what the kernel gets.
	if (!pipe_lock.TryLockFor(std::chrono::milliseconds(0)))
		return PushOutcome::kBusy;
	// Under the lock: a call that ran since the caller looked may have
	// deleted the pipe, pushed it, or changed it.
	auto stored = GetPipe(uuid);
	auto settled = [&] {
		std::lock_guard<std::mutex> lock(mu_);
		to_repair_.erase(uuid);
		return PushOutcome::kNotNeeded;
	};
	if (!stored.ok())
		return settled();
	const std::string label = PipeLabel(*stored);
	auto have = kernel_.GetPipe(uuid);
	if (!have.ok())
		return have.status().Context(label);
	bool repair = false;
	{
		std::lock_guard<std::mutex> lock(mu_);
		repair = to_repair_.count(uuid) > 0;
	}
	if (*have && !repair)
		return PushOutcome::kNotNeeded;
	std::string diff;
	if (*have) {
		// Compared before connecting: a call may have put the stored
		// definition in place since, and then no peer needs asking.
		std::string unresolved;
		bool kept = false;
		diff = SpecDifference(KernelSpec(*stored, &unresolved, &kept),
		                      **have);
		if (diff.empty() && !kept)
			return settled();
	}
	// Sessions to the peers first (docs/iscsi.md). A pipe the kernel has
	// keeps the devices it mirrors to where a peer does not answer, if
	// they may be its targets' disks (KernelSpec()), until it answers.
	const std::string why = ConnectStored(*stored);
	if (!why.empty() && !*have)
		return Status::Error(label + ": " + why, EHOSTUNREACH);
	std::string unresolved;
	bool kept_without_device = false;
	const KernelPipeSpec spec =
	        KernelSpec(*stored, &unresolved, &kept_without_device);
	if (!unresolved.empty())
		return Status::Error(label + ": " + unresolved, EHOSTUNREACH);
	if (kept_without_device)
		return Status::Error(label + ": " +
		                             (why.empty() ? "a target's peer "
		                                            "gives no disk yet"
		                                          : why),
		                     EHOSTUNREACH);
	if (!*have) {
		if (Status st = kernel_.SetPipe(spec); !st.ok())
			return st.Context(label + ": push to the kernel");
		settled();
		return PushOutcome::kPushed;
	}
	diff = SpecDifference(spec, **have);
	if (diff.empty())
		return settled();
	if (Status st = kernel_.SetPipe(spec); !st.ok())
		return st.Context(label + ": kernel differs from the store (" +
		                  diff + "): push the stored definition" +
		                  (why.empty() ? "" : " (" + why + ")"));
	settled();
	return PushOutcome::kReplaced;
}

} // namespace replipipe
