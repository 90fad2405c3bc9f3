// KernelGate: a FakeKernel entry hook that blocks the first call of one op,
// as a PAIR_SET Syncing blocks on a target that does not answer (the
// kernel's 5 s bound), until the test releases it; later calls go through.
// Or a read hook that holds the first GetPipe after its read.
//
//   KernelGate gate; // declared before what calls the kernel: outlives it
//   kernel.SetEntryHook(gate.BlockFirst(FakeKernel::Op::kSetPairState));
//   ... gate.WaitEntered(...) ... gate.Release();
//
// A blocked call gives up after kMaxBlock, so that a failing test ends.
//
// Thread-safe. The gate must outlive every call that may enter the hook.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

#include "fake_kernel_fake.h"

namespace replipipe::testing
{

class KernelGate
{
public:
	static constexpr std::chrono::seconds kMaxBlock{20};

	std::function<void(FakeKernel::Op)> BlockFirst(FakeKernel::Op op)
	{
		return [this, op](FakeKernel::Op called) {
			if (called == op)
				BlockIfFirst();
		};
	}
	// For FakeKernel::SetReadHook(): the first GetPipe is held after it
	// read the pipe, so that its caller then goes on with an old read.
	std::function<void()> BlockFirstRead()
	{
		return [this] { BlockIfFirst(); };
	}
	// True once the blocked call is in the hook.
	bool WaitEntered(std::chrono::milliseconds timeout)
	{
		std::unique_lock lock(mu_);
		return cv_.wait_for(lock, timeout, [this] { return entered_; });
	}
	void Release()
	{
		std::lock_guard lock(mu_);
		released_ = true;
		cv_.notify_all();
	}

private:
	void BlockIfFirst()
	{
		std::unique_lock lock(mu_);
		if (calls_++ != 0)
			return;
		entered_ = true;
		cv_.notify_all();
		cv_.wait_for(lock, kMaxBlock, [this] { return released_; });
	}

	std::mutex mu_;
	std::condition_variable cv_; // entered_ or released_
	int calls_ = 0;              // guarded by mu_
	bool entered_ = false;       // guarded by mu_
	bool released_ = false;      // guarded by mu_
};

} // namespace replipipe::testing
