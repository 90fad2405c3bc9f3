// PipeService's use of its TargetConnector (pipe_service.h,
// iscsi_targets.h): connect before verify, the device for the kernel,
// disconnect when no stored pair uses a connection.
#include <cerrno>
#include <chrono>

#include "log.h"
#include "pipe_service.h"

namespace replipipe
{
namespace
{

MethodOutcome Outcome(ReturnValue rv, std::string why = "")
{
	MethodOutcome out;
	out.return_value = rv;
	out.error = std::move(why);
	return out;
}

} // namespace

std::vector<std::string>
PipeService::TargetsInUse(const std::string &uuid) const
{
	std::lock_guard<std::mutex> lock(mu_);
	std::vector<std::string> targets;
	for (const PipeRecord &p : pipes_)
		for (const PairRecord &pair : p.pairs)
			targets.push_back(pair.target);
	// A create in flight is pending once it wrote its mark, and a pair
	// being added is reserved from its first check: another pipe's
	// delete must not log out the session that call logged in or uses.
	for (const StoreEntry &e : pending_)
		if (e.record.instance_id != uuid)
			for (const PairRecord &pair : e.record.pairs)
				targets.push_back(pair.target);
	for (const auto &[identity, owner] : reserved_targets_)
		if (owner != uuid)
			if (auto url = reserved_target_urls_.find(identity);
			    url != reserved_target_urls_.end())
				targets.push_back(url->second);
	return targets;
}

KernelPipeSpec PipeService::KernelSpec(const PipeRecord &record,
                                       std::string *unresolved,
                                       bool *kept_without_device)
{
	KernelPipeSpec spec = ToKernelSpec(record);
	if (kept_without_device)
		*kept_without_device = false;
	if (!connector_)
		return spec;
	std::optional<KernelPipeStatus> have;
	bool asked = false;
	std::string why_none; // why the kernel gave no device to keep
	for (KernelPairSpec &p : spec.pairs) {
		if (!connector_->Handles(p.target))
			continue;
		auto dev = connector_->DevicePath(p.target);
		if (dev.ok()) {
			p.target = *dev;
			continue;
		}
		// No disk now (session lost): keep the device the kernel
		// mirrors to, so that the pair is kept, not replaced.
		if (!asked) {
			auto k = kernel_.GetPipe(record.instance_id);
			if (k.ok())
				have = *k;
			why_none = !k.ok() ? ", and asking the kernel for the "
			                     "device it mirrors to failed: " +
			                             k.status().message()
			           : !have ? ", and the kernel does not have "
			                     "the pipe"
			                   : ", and the kernel mirrors that "
			                     "pair to none";
			asked = true;
		}
		// Only a device that may be the target's disk: a modify (or
		// its undo) that did not finish may have left the kernel
		// mirroring the pair to another device, which adopting would
		// hide from the store's view and from every repair.
		const KernelPairStatus *kept = nullptr;
		if (have)
			for (const KernelPairStatus &kp : have->pairs)
				if (kp.source == p.source)
					kept = &kp;
		std::string why_kept = why_none;
		if (kept && connector_->MayBeDiskOf(p.target, kept->target)) {
			p.target = kept->target;
			if (kept_without_device)
				*kept_without_device = true;
		} else if (kept) {
			why_kept = ", and the kernel mirrors that pair to " +
			           kept->target + ", which is another device";
		}
		if (!unresolved || !connector_->Handles(p.target))
			continue;
		if (!unresolved->empty())
			*unresolved += "; ";
		*unresolved += "target " + p.target + " of pair " + p.source +
		               " has no device: its peer gives none now (" +
		               dev.status().message() + ")" + why_kept;
	}
	return spec;
}

PipeRecord PipeService::ForKernel(const PipeRecord &record)
{
	if (!connector_)
		return record;
	PipeRecord out = record;
	for (PairRecord &p : out.pairs) {
		if (!connector_->Handles(p.target))
			continue;
		if (auto dev = connector_->DevicePath(p.target); dev.ok())
			p.target = *dev;
	}
	return out;
}

std::optional<PeerView> PipeService::DescribePeer(const std::string &target)
{
	if (!connector_ || !connector_->Handles(target))
		return std::nullopt;
	return connector_->Describe(target);
}

void PipeService::DropConnections(const std::string &uuid,
                                  const std::vector<std::string> &targets)
{
	if (!connector_ || targets.empty())
		return;
	const std::vector<DisconnectFailure> failures = connector_->Disconnect(
	        targets, [this, &uuid] { return TargetsInUse(uuid); });
	std::lock_guard<std::mutex> lock(mu_);
	for (const DisconnectFailure &f : failures)
		OweLogoutLocked(f.target, f.session, f.why);
}

void PipeService::OweLogoutLocked(const std::string &target,
                                  const std::string &session,
                                  const std::string &why)
{
	OwedLogout &owed = owed_logouts_[target];
	const bool again = owed.session == session && owed.why == why;
	owed = {session, why};
	if (connector_ && !again)
		connector_->Adopt(session);
	// Once per reason, not at every refresh's try.
	(again ? LogDebug() : LogWarning())
	        << "disconnect: " << why
	        << "; replipiped tries again at each refresh";
	if (!again)
		SaveOwedLogoutsLocked();
}

void PipeService::SaveOwedLogoutsLocked()
{
	std::vector<OwedLogoutEntry> entries;
	// One with no session name (none is: a failed logout always found
	// its session) would make Load() refuse the whole file.
	for (const auto &[target, debt] : owed_logouts_)
		if (!debt.session.empty())
			entries.push_back({target, debt.session, debt.why});
	Status st = owed_file_.Save(entries);
	if (st.ok()) {
		owed_file_stale_ = false;
		return;
	}
	// Once, not at every refresh's try.
	(owed_file_stale_ ? LogDebug() : LogError())
	        << "disconnect: " << st.message()
	        << (entries.empty() ? "" : "; the logouts stay owed in memory")
	        << "; writing the file is tried again at each refresh";
	owed_file_stale_ = true;
}

void PipeService::SetTargetConnector(TargetConnector *connector)
{
	std::lock_guard<std::mutex> lock(mu_);
	connector_ = connector;
	if (connector_)
		for (const auto &[target, debt] : owed_logouts_)
			connector_->Adopt(debt.session);
}

// A session ends with its boot, and its name may be another's in the
// next: only a file of this boot is taken. A file that cannot be read
// is left as it is until a debt replaces it.
void PipeService::LoadOwedLogoutsLocked()
{
	auto loaded = owed_file_.Load();
	if (!loaded.ok()) {
		LogError() << "disconnect: " << loaded.status().message()
		           << "; the logouts it may hold are not tried";
		return;
	}
	if (loaded->other_boot) {
		LogInfo() << "disconnect: " << owed_file_.path()
		          << " is from another boot, whose sessions ended "
		             "with it: nothing owed";
		SaveOwedLogoutsLocked();
		return;
	}
	for (const OwedLogoutEntry &e : loaded->entries) {
		owed_logouts_[e.target] = {e.session, e.why};
		if (connector_)
			connector_->Adopt(e.session);
		LogNotice() << "disconnect: " << e.target << ": the logout of "
		            << e.session << " is owed since before this start ("
		            << e.why
		            << "); replipiped tries again at each "
		               "refresh";
	}
}

std::vector<std::string> PipeService::OwedLogouts() const
{
	std::lock_guard<std::mutex> lock(mu_);
	std::vector<std::string> owed;
	for (const auto &[target, debt] : owed_logouts_)
		owed.push_back(target);
	return owed;
}

MethodOutcome PipeService::ConnectAndVerify(
        const std::string &uuid, const std::vector<PairRecord> &pairs,
        const std::set<uint64_t> &held, std::vector<std::string> *made)
{
	const std::vector<std::string> in_use = TargetsInUse(uuid);
	for (const PairRecord &p : pairs) {
		std::string device = p.target;
		std::string label;
		if (connector_ && connector_->Handles(p.target)) {
			bool fresh = false;
			auto dev =
			        connector_->Connect(p.target, in_use, &fresh);
			if (fresh)
				made->push_back(p.target);
			if (!dev.ok()) {
				DropConnections(uuid, *made);
				return Outcome(dev.status().err() == ETIMEDOUT
				                       ? ReturnValue::kTimeout
				                       : ReturnValue::kFailed,
				               "peer " + p.target + ": " +
				                       dev.status().message());
			}
			device = *dev;
			label = " (" + p.target + " is " + device + ")";
		}
		Status st = VerifyNewPair(probe_, p.source, device, held);
		if (st.ok())
			continue;
		DropConnections(uuid, *made);
		if (st.err() == EINVAL)
			return Outcome(ReturnValue::kInvalidParameter,
			               st.message() + label);
		return Outcome(st.err() == ETIMEDOUT ? ReturnValue::kTimeout
		                                     : ReturnValue::kFailed,
		               "peer verification failed: " + st.message() +
		                       label);
	}
	return Outcome(ReturnValue::kCompleted);
}

bool PipeService::NeedsConnection(const PipeRecord &record) const
{
	if (!connector_)
		return false;
	for (const PairRecord &p : record.pairs)
		if (connector_->Handles(p.target))
			return true;
	return false;
}

std::string PipeService::ConnectStored(const PipeRecord &record)
{
	if (!connector_)
		return "";
	const std::vector<std::string> in_use =
	        TargetsInUse(record.instance_id);
	std::string why;
	// A target whose login ran out of time since this pass began (a peer
	// down: the connector's bound, 30 s; another LUN of that portal and
	// target, here or in another pipe's pass) is not tried again in it:
	// each would take the bound too, with the pipe's lock held (16 LUNs:
	// 8 minutes per push of the pipe). The next pass tries it.
	const auto pass = std::chrono::steady_clock::now();
	for (const PairRecord &p : record.pairs) {
		if (!connector_->Handles(p.target))
			continue;
		if (connector_->LoginTimedOutSince(p.target, pass)) {
			why += (why.empty() ? "" : "; ") +
			       std::string("peer ") + p.target +
			       ": not tried, a login to its portal and target "
			       "timed out during this pass";
			continue;
		}
		bool fresh = false;
		auto dev = connector_->Connect(p.target, in_use, &fresh);
		if (!dev.ok())
			why += (why.empty() ? "" : "; ") +
			       std::string("peer ") + p.target + ": " +
			       dev.status().message();
		else if (fresh)
			LogNotice() << "reconcile: " << p.target
			            << " re-established as " << *dev;
	}
	return why;
}

} // namespace replipipe
