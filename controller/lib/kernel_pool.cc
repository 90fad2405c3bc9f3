#include "kernel_pool.h"

#include <utility>

namespace replipipe
{

KernelPool::KernelPool(std::string what, Opener open, size_t max_idle)
    : what_(std::move(what)), open_(std::move(open)), max_idle_(max_idle)
{
}

template <typename Call> auto KernelPool::Run(const Call &call)
{
	auto connection = Take();
	using Out = decltype(call(**connection));
	if (!connection.ok())
		return Out(connection.status());
	Out out = call(**connection);
	if (out.ok())
		Give(std::move(*connection));
	return out; // a failed one's connection closes here
}

Result<std::unique_ptr<KernelApi>> KernelPool::Take()
{
	{
		std::lock_guard lock(mu_);
		if (!idle_.empty()) {
			std::unique_ptr<KernelApi> connection =
			        std::move(idle_.back());
			idle_.pop_back();
			return connection;
		}
	}
	// Unlocked: opening is a netlink round trip, and another call may
	// give a connection back or take one meanwhile.
	auto opened = open_();
	if (!opened.ok())
		return opened.status().Context(what_ + ": open");
	if (!*opened)
		return Status::Error(what_ + ": open: no connection");
	return opened;
}

void KernelPool::Give(std::unique_ptr<KernelApi> connection)
{
	std::lock_guard lock(mu_);
	if (idle_.size() < max_idle_)
		idle_.push_back(std::move(connection));
	// else it closes once this returns, after the lock
}

size_t KernelPool::idle() const
{
	std::lock_guard lock(mu_);
	return idle_.size();
}

Status KernelPool::SetPipe(const KernelPipeSpec &spec)
{
	return Run([&](KernelApi &k) { return k.SetPipe(spec); });
}

Status KernelPool::DeletePipe(const std::string &id)
{
	return Run([&](KernelApi &k) { return k.DeletePipe(id); });
}

Result<std::optional<KernelPipeStatus>>
KernelPool::GetPipe(const std::string &id)
{
	return Run([&](KernelApi &k) { return k.GetPipe(id); });
}

Result<std::vector<KernelPipeStatus>> KernelPool::ListPipes()
{
	return Run([](KernelApi &k) { return k.ListPipes(); });
}

Status KernelPool::SetPairState(const std::string &pipe_id,
                                const std::string &source, PairState state)
{
	return Run([&](KernelApi &k) {
		return k.SetPairState(pipe_id, source, state);
	});
}

} // namespace replipipe
