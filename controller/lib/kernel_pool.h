// KernelPool: a KernelApi whose every call runs on a kernel connection that
// no other call uses meanwhile, so that a slow call (a PAIR_SET Syncing that
// waits the kernel's 5 s bound on a dead target) holds up nobody else.
//
// A call takes an idle connection, or opens a new one when none is idle,
// and gives it back when it succeeded; up to max_idle idle connections are
// kept, the rest closed. A connection whose call failed is closed, not kept:
// whatever went wrong (a time-out, a local socket error) cannot touch the
// next call, and opening one costs a netlink round trip.
//
// Nothing bounds the connections in use but the callers: there are as many
// as calls in progress (replipiped: the probe thread and the control
// connections, ControlServerOptions::max_connections). A cap would make a
// call wait for one of another caller's, which is what the pool is for.
//
// The connections come from an opener (NetlinkKernel::Open() in the daemon,
// fakes in the tests), which the pool calls without holding its lock.
//
// Thread-safety: every method may be called from any thread. The pool must
// outlive its calls.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace replipipe
{

class KernelPool final : public KernelApi
{
public:
	using Opener = std::function<Result<std::unique_ptr<KernelApi>>()>;
	static constexpr size_t kDefaultMaxIdle = 2;

	// what names the connections in errors ("netlink probe socket").
	KernelPool(std::string what, Opener open,
	           size_t max_idle = kDefaultMaxIdle);
	KernelPool(const KernelPool &) = delete;
	KernelPool &operator=(const KernelPool &) = delete;

	// Each as the connection answers it; a connection that cannot be
	// opened fails the call with "<what>: open: <why>".
	Status SetPipe(const KernelPipeSpec &spec) override;
	Status DeletePipe(const std::string &id) override;
	Result<std::optional<KernelPipeStatus>>
	GetPipe(const std::string &id) override;
	Result<std::vector<KernelPipeStatus>> ListPipes() override;
	Status SetPairState(const std::string &pipe_id,
	                    const std::string &source,
	                    PairState state) override;

	// Idle connections now (tests).
	size_t idle() const;

private:
	// call(connection) on a connection of its own; gives it back when the
	// result is ok.
	template <typename Call> auto Run(const Call &call);
	Result<std::unique_ptr<KernelApi>> Take();
	void Give(std::unique_ptr<KernelApi> connection);

	const std::string what_;
	const Opener open_;
	const size_t max_idle_;

	mutable std::mutex mu_;
	std::vector<std::unique_ptr<KernelApi>> idle_; // guarded by mu_
};

} // namespace replipipe
