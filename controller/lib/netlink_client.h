// NetlinkKernel: KernelApi over generic netlink (libnl-genl-3), the real
// implementation the daemon uses.
//
// Thread-safety: every method takes mu_, so one instance may be shared by
// several threads; requests are serialized on the one socket.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>

#include "kernel_api.h"
#include "netlink_socket.h"

namespace replipipe
{

class NetlinkKernel final : public KernelApi
{
public:
	// Fails with IsModuleMissing() when replipipe.ko is not loaded.
	static Result<std::unique_ptr<NetlinkKernel>>
	Open(std::chrono::milliseconds timeout = kNetlinkDefaultTimeout);

	Status SetPipe(const KernelPipeSpec &spec) override;
	Status DeletePipe(const std::string &id) override;
	// ENOENT from the kernel means "no such pipe": nullopt, not an error.
	Result<std::optional<KernelPipeStatus>>
	GetPipe(const std::string &id) override;
	Result<std::vector<KernelPipeStatus>> ListPipes() override;
	Status SetPairState(const std::string &pipe_id,
	                    const std::string &source,
	                    PairState state) override;

	int family_id() const { return sock_->family_id(); }
	uint32_t family_version() const { return sock_->family_version(); }
	int events_group() const { return sock_->events_group(); }

private:
	explicit NetlinkKernel(std::unique_ptr<NetlinkSocket> sock)
	    : sock_(std::move(sock))
	{
	}

	std::mutex mu_;
	std::unique_ptr<NetlinkSocket> sock_; // guarded by mu_
};

} // namespace replipipe
