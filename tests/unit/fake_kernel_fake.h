// FakeKernel: an in-memory KernelApi with replipipe.ko's semantics
// (uapi/linux/replipipe.h) and fault injection, for unit tests.
//
// Semantics kept: PIPE_SET creates or replaces; pairs present before and
// after (same source and target) keep their state, new ones start Syncing
// with every region dirty (InSync with assume_clean); a backstore belongs to
// at most one pipe (EBUSY); with a device resolver (lookup_bdev), a new
// pair's target must not be the device of any pair the kernel has, the
// pairs this very PIPE_SET removes included (EBUSY: replipipe.ko opens a new
// pair's target before it releases the pair it replaces); the region size of a
// pipe that keeps pairs cannot change (EINVAL); the policy bounds (EINVAL);
// unknown pipe or pair ENOENT; PAIR_SET pauses or resumes.
//
// Faults: FailNext(err) makes the next call (of one op, or any) fail with
// err before it does anything; FailPair(source, err) every PAIR_SET of a
// pair; FailNextAfterApply(err) applies the next
// SetPipe and then reports err (a kernel that answered too late); delays
// and an entry hook make a call slow or block it.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace replipipe::testing
{

class FakeKernel : public KernelApi
{
public:
	enum class Op {
		kAny,
		kSetPipe,
		kDeletePipe,
		kGetPipe,
		kListPipes,
		kSetPairState
	};

	Status SetPipe(const KernelPipeSpec &spec) override;
	Status DeletePipe(const std::string &id) override;
	Result<std::optional<KernelPipeStatus>>
	GetPipe(const std::string &id) override;
	Result<std::vector<KernelPipeStatus>> ListPipes() override;
	Status SetPairState(const std::string &pipe_id,
	                    const std::string &source,
	                    PairState state) override;

	// Fault injection.
	void FailNext(int err, Op op = Op::kAny, std::string message = "");
	void FailNextAfterApply(int err);
	// Every PAIR_SET of the pair with this source fails with err (after
	// the entry hook) until cleared with err 0: a target gone, whichever
	// order the pairs are asked in.
	void FailPair(const std::string &source, int err,
	              std::string message = "");
	void SetDelay(std::chrono::milliseconds delay);
	// Called (outside the fake's lock) when any call starts.
	void SetEntryHook(std::function<void(Op)> hook);
	// Called (outside the fake's lock) when a GetPipe has read the pipe,
	// before it returns: what it returns is then older than the kernel.
	void SetReadHook(std::function<void()> hook);
	// Called (outside the fake's lock) when a SetPipe has changed the
	// kernel, before it returns: a hook that throws is a daemon killed
	// right after the kernel applied its PIPE_SET.
	void SetApplyHook(std::function<void(const KernelPipeSpec &)> hook);

	// Inspection and set-up.
	int calls(Op op) const;
	std::vector<KernelPipeStatus> Snapshot() const;
	std::optional<KernelPipeStatus> Find(const std::string &id) const;
	// Forces a pair's state (e.g. InSync after a resync).
	void ForcePairState(const std::string &pipe_id,
	                    const std::string &source, PairState state);
	// Regions a new pair gets (default 16).
	void SetRegionsPerPair(uint64_t regions);
	// The device number of a target path, 0 for none (replipipe.ko's
	// lookup_bdev()); unset, targets are not checked against each other.
	// Called under the fake's lock: it must not call the fake.
	void SetDeviceResolver(std::function<uint64_t(const std::string &)> f);
	// A kernel that releases the targets of the pairs a PIPE_SET removes
	// before it opens the new pairs' targets (replipipe.ko does not):
	// a target may then move to another pair of the same pipe.
	void SetTargetsMoveWithinPipe(bool allowed);

private:
	struct Fault {
		int err;
		Op op;
		std::string message;
	};
	// Returns the injected error for op, if any, after hook and delay.
	Status Enter(Op op);
	// SetPipe() but for its apply hook, which *applied gets once the
	// pipe changed (the caller calls it unlocked).
	Status ApplyPipe(const KernelPipeSpec &spec,
	                 std::function<void(const KernelPipeSpec &)> *applied);
	Status TargetFreeLocked(const std::string &pipe_id,
	                        const std::string &target) const;

	mutable std::mutex mu_;
	std::map<std::string, KernelPipeStatus> pipes_; // guarded by mu_
	std::vector<Fault> faults_;                     // guarded by mu_
	std::map<std::string, Fault> pair_faults_;      // guarded by mu_
	std::optional<int> fail_after_apply_;           // guarded by mu_
	std::chrono::milliseconds delay_{0};            // guarded by mu_
	std::function<void(Op)> hook_;                  // guarded by mu_
	std::function<void()> read_hook_;               // guarded by mu_
	std::function<void(const KernelPipeSpec &)>
	        apply_hook_;             // guarded by mu_
	std::map<Op, int> calls_;        // guarded by mu_
	uint64_t regions_per_pair_ = 16; // guarded by mu_
	std::function<uint64_t(const std::string &)>
	        device_of_;                     // guarded by mu_
	bool targets_move_within_pipe_ = false; // guarded by mu_
};

} // namespace replipipe::testing
