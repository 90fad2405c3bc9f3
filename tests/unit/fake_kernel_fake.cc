#include "fake_kernel_fake.h"

#include <cerrno>
#include <set>
#include <thread>

namespace replipipe::testing
{
namespace
{

// The kernel's policy bounds (uapi/linux/replipipe.h).
constexpr size_t kIdMax = 63, kNameMax = 255, kSourceMax = 127,
                 kTargetMax = 255, kPairsMax = 256;

bool IsPowerOfTwo(uint32_t v)
{
	return v && !(v & (v - 1));
}

Status Extack(const std::string &message, int err = EINVAL)
{
	return Status::Error(message, err);
}

Status Validate(const KernelPipeSpec &spec)
{
	if (spec.id.empty() || spec.id.size() > kIdMax)
		return Extack("pipe id length out of range");
	if (spec.name.size() > kNameMax)
		return Extack("pipe name too long");
	if (spec.max_lag_kib < 64 || spec.max_lag_kib > 1024 * 1024)
		return Extack("max lag out of range");
	if (spec.region_kib < 4 || spec.region_kib > 65536 ||
	    !IsPowerOfTwo(spec.region_kib))
		return Extack("region size must be a power of two in 4..65536");
	if (spec.pairs.size() > kPairsMax)
		return Extack("too many pairs");
	std::set<std::string> sources;
	for (const KernelPairSpec &p : spec.pairs) {
		if (p.source.empty() || p.source.size() > kSourceMax)
			return Extack("pair source length out of range");
		if (p.target.empty() || p.target.size() > kTargetMax ||
		    p.target[0] != '/')
			return Extack("pair target must be an absolute path");
		if (!sources.insert(p.source).second)
			return Extack("source " + p.source + " given twice");
	}
	return Status();
}

} // namespace

Status FakeKernel::Enter(Op op)
{
	std::function<void(Op)> hook;
	std::chrono::milliseconds delay;
	{
		std::lock_guard<std::mutex> lock(mu_);
		calls_[op]++;
		hook = hook_;
		delay = delay_;
	}
	if (hook)
		hook(op);
	if (delay.count() > 0)
		std::this_thread::sleep_for(delay);
	std::lock_guard<std::mutex> lock(mu_);
	for (auto it = faults_.begin(); it != faults_.end(); ++it) {
		if (it->op != Op::kAny && it->op != op)
			continue;
		Status st = Status::Error(it->message.empty() ? "injected fault"
		                                              : it->message,
		                          it->err);
		if (it->err == ETIMEDOUT && it->message.empty())
			st = Status::Error("no answer from the kernel within "
			                   "the bound",
			                   ETIMEDOUT);
		faults_.erase(it);
		return st;
	}
	return Status();
}

// rp_target_in_use(): is target the device of a pair the kernel has?
Status FakeKernel::TargetFreeLocked(const std::string &pipe_id,
                                    const std::string &target) const
{
	if (!device_of_)
		return Status();
	const uint64_t dev = device_of_(target);
	for (const auto &[id, pipe] : pipes_) {
		if (id == pipe_id && targets_move_within_pipe_)
			continue;
		for (const KernelPairStatus &q : pipe.pairs)
			if (q.target == target ||
			    (dev && device_of_(q.target) == dev))
				return Extack("target is already the target of "
				              "a pair",
				              EBUSY);
	}
	return Status();
}

Status FakeKernel::SetPipe(const KernelPipeSpec &spec)
{
	std::function<void(const KernelPipeSpec &)> applied;
	Status st = ApplyPipe(spec, &applied);
	if (applied)
		applied(spec);
	return st;
}

Status
FakeKernel::ApplyPipe(const KernelPipeSpec &spec,
                      std::function<void(const KernelPipeSpec &)> *applied)
{
	if (Status st = Enter(Op::kSetPipe); !st.ok())
		return st;
	std::lock_guard<std::mutex> lock(mu_);
	if (Status st = Validate(spec); !st.ok())
		return st;
	for (const auto &[id, pipe] : pipes_) {
		if (id == spec.id)
			continue;
		for (const KernelPairStatus &q : pipe.pairs)
			for (const KernelPairSpec &p : spec.pairs)
				if (p.source == q.source)
					return Extack("source " + p.source +
					                      " is in pipe " +
					                      id,
					              EBUSY);
	}
	KernelPipeStatus next;
	next.id = spec.id;
	next.name = spec.name;
	next.mode = spec.mode;
	next.failure_policy = spec.failure_policy;
	next.max_lag_kib = spec.max_lag_kib;
	next.region_kib = spec.region_kib;
	auto old = pipes_.find(spec.id);
	bool keeps = false;
	for (const KernelPairSpec &p : spec.pairs) {
		const KernelPairStatus *kept = nullptr;
		if (old != pipes_.end())
			for (const KernelPairStatus &q : old->second.pairs)
				if (q.source == p.source &&
				    q.target == p.target)
					kept = &q;
		if (kept) {
			keeps = true;
			next.pairs.push_back(*kept);
			continue;
		}
		if (Status st = TargetFreeLocked(spec.id, p.target); !st.ok())
			return st;
		KernelPairStatus s;
		s.source = p.source;
		s.target = p.target;
		s.regions = regions_per_pair_;
		s.source_bytes = regions_per_pair_ * spec.region_kib * 1024;
		s.state = p.assume_clean ? PairState::kInSync
		                         : PairState::kSyncing;
		s.dirty_regions = p.assume_clean ? 0 : regions_per_pair_;
		next.pairs.push_back(s);
	}
	if (keeps && old->second.region_kib != spec.region_kib)
		return Extack("region size of a pipe that keeps pairs cannot "
		              "change");
	pipes_[spec.id] = std::move(next);
	*applied = apply_hook_;
	if (fail_after_apply_) {
		int err = *fail_after_apply_;
		fail_after_apply_.reset();
		return Status::Error("answer came too late", err);
	}
	return Status();
}

Status FakeKernel::DeletePipe(const std::string &id)
{
	if (Status st = Enter(Op::kDeletePipe); !st.ok())
		return st;
	std::lock_guard<std::mutex> lock(mu_);
	if (!pipes_.erase(id))
		return Extack("no pipe " + id, ENOENT);
	return Status();
}

Result<std::optional<KernelPipeStatus>>
FakeKernel::GetPipe(const std::string &id)
{
	if (Status st = Enter(Op::kGetPipe); !st.ok())
		return st;
	std::optional<KernelPipeStatus> found;
	std::function<void()> read_hook;
	{
		std::lock_guard<std::mutex> lock(mu_);
		auto it = pipes_.find(id);
		if (it != pipes_.end())
			found = it->second;
		read_hook = read_hook_;
	}
	if (read_hook)
		read_hook();
	return found;
}

void FakeKernel::SetReadHook(std::function<void()> hook)
{
	std::lock_guard<std::mutex> lock(mu_);
	read_hook_ = std::move(hook);
}

void FakeKernel::SetApplyHook(std::function<void(const KernelPipeSpec &)> hook)
{
	std::lock_guard<std::mutex> lock(mu_);
	apply_hook_ = std::move(hook);
}

Result<std::vector<KernelPipeStatus>> FakeKernel::ListPipes()
{
	if (Status st = Enter(Op::kListPipes); !st.ok())
		return st;
	return Snapshot();
}

Status FakeKernel::SetPairState(const std::string &pipe_id,
                                const std::string &source, PairState state)
{
	if (Status st = Enter(Op::kSetPairState); !st.ok())
		return st;
	std::lock_guard<std::mutex> lock(mu_);
	if (auto fault = pair_faults_.find(source); fault != pair_faults_.end())
		return Status::Error(fault->second.message, fault->second.err);
	auto it = pipes_.find(pipe_id);
	if (it == pipes_.end())
		return Extack("no pipe " + pipe_id, ENOENT);
	for (KernelPairStatus &p : it->second.pairs) {
		if (p.source != source)
			continue;
		if (state == PairState::kPaused) {
			p.state = PairState::kPaused;
		} else if (state == PairState::kSyncing) {
			if (p.state == PairState::kPaused ||
			    p.state == PairState::kDegraded)
				p.state = p.dirty_regions ? PairState::kSyncing
				                          : PairState::kInSync;
		} else {
			return Extack("PAIR_SET accepts Paused or Syncing");
		}
		return Status();
	}
	return Extack("no pair " + source + " in pipe " + pipe_id, ENOENT);
}

void FakeKernel::FailNext(int err, Op op, std::string message)
{
	std::lock_guard<std::mutex> lock(mu_);
	faults_.push_back({err, op, std::move(message)});
}

void FakeKernel::FailPair(const std::string &source, int err,
                          std::string message)
{
	std::lock_guard<std::mutex> lock(mu_);
	if (err == 0)
		pair_faults_.erase(source);
	else
		pair_faults_[source] = {err, Op::kSetPairState,
		                        message.empty() ? "injected fault"
		                                        : std::move(message)};
}

void FakeKernel::FailNextAfterApply(int err)
{
	std::lock_guard<std::mutex> lock(mu_);
	fail_after_apply_ = err;
}

void FakeKernel::SetDelay(std::chrono::milliseconds delay)
{
	std::lock_guard<std::mutex> lock(mu_);
	delay_ = delay;
}

void FakeKernel::SetEntryHook(std::function<void(Op)> hook)
{
	std::lock_guard<std::mutex> lock(mu_);
	hook_ = std::move(hook);
}

int FakeKernel::calls(Op op) const
{
	std::lock_guard<std::mutex> lock(mu_);
	if (op != Op::kAny) {
		auto it = calls_.find(op);
		return it == calls_.end() ? 0 : it->second;
	}
	int total = 0;
	for (const auto &[o, n] : calls_)
		total += n;
	return total;
}

std::vector<KernelPipeStatus> FakeKernel::Snapshot() const
{
	std::lock_guard<std::mutex> lock(mu_);
	std::vector<KernelPipeStatus> out;
	for (const auto &[id, pipe] : pipes_)
		out.push_back(pipe);
	return out;
}

std::optional<KernelPipeStatus> FakeKernel::Find(const std::string &id) const
{
	std::lock_guard<std::mutex> lock(mu_);
	auto it = pipes_.find(id);
	if (it == pipes_.end())
		return std::nullopt;
	return it->second;
}

void FakeKernel::ForcePairState(const std::string &pipe_id,
                                const std::string &source, PairState state)
{
	std::lock_guard<std::mutex> lock(mu_);
	auto it = pipes_.find(pipe_id);
	if (it == pipes_.end())
		return;
	for (KernelPairStatus &p : it->second.pairs)
		if (p.source == source) {
			p.state = state;
			if (state == PairState::kInSync)
				p.dirty_regions = 0;
		}
}

void FakeKernel::SetRegionsPerPair(uint64_t regions)
{
	std::lock_guard<std::mutex> lock(mu_);
	regions_per_pair_ = regions;
}

void FakeKernel::SetDeviceResolver(
        std::function<uint64_t(const std::string &)> f)
{
	std::lock_guard<std::mutex> lock(mu_);
	device_of_ = std::move(f);
}

void FakeKernel::SetTargetsMoveWithinPipe(bool allowed)
{
	std::lock_guard<std::mutex> lock(mu_);
	targets_move_within_pipe_ = allowed;
}

} // namespace replipipe::testing
