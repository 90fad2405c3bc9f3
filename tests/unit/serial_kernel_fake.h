// SerialKernel: one fake kernel connection, as NetlinkKernel is one netlink
// socket: its calls go to a shared kernel (FakeKernel) one at a time, under
// the connection's own mutex. A call that blocks in the kernel (FakeKernel's
// entry hook) holds every later call on the same connection, and none on
// another, which is what the tests of the probe channel look at.
//
// Thread-safe. The kernel must outlive the connection.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace replipipe::testing
{

class SerialKernel final : public KernelApi
{
public:
	explicit SerialKernel(KernelApi &kernel) : kernel_(kernel) {}

	Status SetPipe(const KernelPipeSpec &spec) override
	{
		std::lock_guard lock(mu_);
		return kernel_.SetPipe(spec);
	}
	Status DeletePipe(const std::string &id) override
	{
		std::lock_guard lock(mu_);
		return kernel_.DeletePipe(id);
	}
	Result<std::optional<KernelPipeStatus>>
	GetPipe(const std::string &id) override
	{
		std::lock_guard lock(mu_);
		return kernel_.GetPipe(id);
	}
	Result<std::vector<KernelPipeStatus>> ListPipes() override
	{
		std::lock_guard lock(mu_);
		return kernel_.ListPipes();
	}
	Status SetPairState(const std::string &pipe_id,
	                    const std::string &source, PairState state) override
	{
		std::lock_guard lock(mu_);
		return kernel_.SetPairState(pipe_id, source, state);
	}

private:
	KernelApi &kernel_;
	std::mutex mu_; // the one socket's: held for a whole call
};

} // namespace replipipe::testing
