// CallGate: a FakeKernel entry hook that holds every call of one op, as
// PAIR_SETs Syncing wait on targets that do not answer (the kernel's 5 s
// bound), until the test opens the gate; it counts the calls and the most
// that were in the kernel at once.
//
//   CallGate gate; // declared before what calls the kernel: outlives it
//   kernel.SetEntryHook(gate.HoldEvery(FakeKernel::Op::kSetPairState));
//   ... gate.WaitInKernel(16, ...) ... gate.Open(); ... gate.Most() ...
//
// A held call goes on after kMaxHold, so that a failing test ends.
//
// Thread-safe. The gate must outlive every call that may enter the hook.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>

#include "fake_kernel_fake.h"

namespace replipipe::testing
{

class CallGate
{
public:
	static constexpr std::chrono::seconds kMaxHold{10};

	std::function<void(FakeKernel::Op)> HoldEvery(FakeKernel::Op op)
	{
		return [this, op](FakeKernel::Op called) {
			if (called == op)
				Hold();
		};
	}
	// True once n calls are held at once.
	bool WaitInKernel(size_t n, std::chrono::milliseconds timeout)
	{
		std::unique_lock lock(mu_);
		return cv_.wait_for(lock, timeout,
		                    [this, n] { return in_kernel_ >= n; });
	}
	void Open()
	{
		std::lock_guard lock(mu_);
		open_ = true;
		cv_.notify_all();
	}
	size_t Calls()
	{
		std::lock_guard lock(mu_);
		return calls_;
	}
	size_t Most()
	{
		std::lock_guard lock(mu_);
		return most_;
	}

private:
	void Hold()
	{
		std::unique_lock lock(mu_);
		++calls_;
		most_ = std::max(most_, ++in_kernel_);
		cv_.notify_all();
		cv_.wait_for(lock, kMaxHold, [this] { return open_; });
		--in_kernel_;
	}

	std::mutex mu_;
	std::condition_variable cv_; // in_kernel_ grew, or open_
	size_t calls_ = 0;           // guarded by mu_
	size_t in_kernel_ = 0;       // guarded by mu_
	size_t most_ = 0;            // guarded by mu_
	bool open_ = false;          // guarded by mu_
};

} // namespace replipipe::testing
