// PairResync: the claim loop that brings one pair's target up to date.
//
//   hint = 0
//   loop: claim up to sizer.next() dirty regions at or after hint;
//         none left: done if the hint was 0, else start over at 0;
//         copy [first, first + count) * region_bytes (clamped to the source
//         size) with the RegionCopier and make it durable (Sync(), one
//         fdatasync per claim); Done on success, Failed on error (the
//         regions stay dirty, the error is returned); hint = first+count.
//         Done that finds no claim (ENOENT: the kernel dropped it, it
//         outlived claim_timeout_sec): the regions are still dirty; log,
//         shrink the claims and carry on at the same hint. A copy still
//         running at that deadline stops there and the claim ends Failed:
//         handled the same way, without copying what would be wasted.
//
// Claims are sized by a ClaimSizer (resync_claim_size.h) from the time the
// claims before took, so that one takes about a second, well inside the
// kernel's claim time-out, on slow targets as on fast ones.
//
// The rate limit (copier.rate_limit_kibps) paces the claims, not the copy: a
// claim holds writes to its regions, so it is copied at full speed, and the
// loop waits before asking for the next claim until the bytes copied so far
// are within the limit (resync_rate.h). Throttled inside a claim, the copy
// would hold writes longer, and a region too large to copy at the limited
// rate within the claim time-out would never be copied.
//
// A copy whose io_uring fails to wait for its requests returns with some
// still in the kernel (RegionCopier::Copy()). Its claim is reported Failed at
// once (the regions stay dirty; the kernel lets the writes the claim held go
// on), but Run() returns only once those requests have completed: when it
// returns the job ends and its target may take another job (ResyncJobs),
// whose copy a late write of this one would overwrite under a clean bit. A
// ring that never completes them keeps Run() waiting, logging once a
// minute, for the life of the process.
//
// It copies only what the kernel's bitmap marks dirty, so a restart (a new
// PairResync, after a crash or a stop) continues where the bitmap says: the
// regions already reported Done are clean and are not copied again.
//
// Thread-safety: Run() on one thread; RequestStop() and progress() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "resync_claim_size.h"
#include "resync_claims.h"
#include "resync_copier.h"
#include "resync_rate.h"

namespace replipipe
{

struct PairResyncOptions {
	std::string pipe_id;     // for messages
	std::string source;      // the pair's source backstore, for messages
	std::string source_path; // the primary device the backstore serves
	std::string target_path;
	uint64_t region_bytes = 64 * 1024;
	// The size the kernel mirrors for the pair (REPLIPIPE_A_PAIR_SOURCE_
	// BYTES, fixed when the pair was made; decision 29). A primary grown
	// since is larger, and its target may be no larger than this: the
	// copy stops here. 0: unknown, the primary's size.
	uint64_t pair_bytes = 0;
	// Regions per claim. The kernel holds writes to them while they are
	// copied and drops a claim not done within claim_timeout_sec. 0: sized
	// from the measured speed (about claim_target, at most a quarter of the
	// time-out), capped by one full queue of the copier (queue_depth x
	// chunk_bytes, >= 8 MiB) and by 1/4 s of the rate limit (the burst of
	// one claim at full speed; a killed daemon loses a claim). Not 0: every
	// claim asks for that many, until one is lost to the time-out; then
	// they adapt, capped by it.
	uint32_t max_regions_per_claim = 0;
	// What a claim aims to last (tests lengthen it to make sizes stable).
	std::chrono::milliseconds claim_target{1000};
	// The kernel's claim time-out. 0: read claim_timeout_path before every
	// claim (a module parameter can change), 30 s if it cannot be read.
	std::chrono::milliseconds claim_timeout{0};
	std::string claim_timeout_path =
	        "/sys/module/replipipe/parameters/claim_timeout_sec";
	CopierOptions copier;
};

struct ResyncProgress {
	uint64_t done_bytes = 0; // copied and reported Done (+ current claim)
	// Dirty at the start (grows if more get dirty); = done_bytes once
	// clean.
	uint64_t total_bytes = 0;
	uint64_t rate_bytes_per_s = 0; // average since the start
	uint64_t claims = 0;           // claims reported Done
	uint64_t claims_lost = 0;      // dropped by the kernel before Done
};

class PairResync
{
public:
	// Opens the devices (the copier). claims must outlive the PairResync.
	static Result<std::unique_ptr<PairResync>>
	Create(const PairResyncOptions &options, ClaimSource *claims);
	// The same, over a copier made elsewhere (tests).
	PairResync(const PairResyncOptions &options, ClaimSource *claims,
	           std::unique_ptr<RegionCopier> copier);

	// Runs until the pair is clean (OK), a claim or copy fails, or
	// RequestStop() (ECANCELED; the current claim is reported Failed, a
	// wait for the rate limit ends at once). A claim the kernel dropped is
	// no failure unless it was one region (ETIMEDOUT: the target cannot
	// copy one region in the time-out). Nothing of the copy is in the
	// kernel any more when it returns (SettleCopy()).
	// Errors start with "resync pipe <id> pair <source>: ".
	Status Run();

	void RequestStop();
	ResyncProgress progress() const;
	const RegionCopier &copier() const { return *copier_; }

private:
	Status RunClaims();
	// Waits for what a copy whose ring failed left in the kernel.
	void SettleCopy();
	// Before each claim: the kernel's time-out, into the sizer.
	void RefreshClaimTimeout();
	// Before each claim: waits until the claims so far are within the rate
	// limit. false: RequestStop().
	bool Pace();
	// Done found no claim: log, shrink; an error when it cannot shrink.
	Status ClaimLost(const RegionClaim &claim, ClaimSizer::Duration elapsed,
	                 const std::string &how, uint64_t copied_regions);

	PairResyncOptions options_;
	ClaimSource *claims_;
	std::unique_ptr<RegionCopier> copier_;
	std::atomic<uint64_t> committed_bytes_{0};
	std::atomic<uint64_t> total_bytes_{0};
	ClaimSizer sizer_;
	std::atomic<uint64_t> claims_done_{0};
	std::atomic<uint64_t> claims_lost_{0};
	std::atomic<int64_t> start_ns_{0};
	std::atomic<bool> copying_{false}; // a claim is being copied
	TokenBucket pace_;                 // the rate limit (Pace())
	// Pace() waits on stop_cv_ for RequestStop() (the copier's flag).
	std::mutex stop_mu_;
	std::condition_variable stop_cv_;
};

// The device a LIO backstore ("replipipe_<N>/<name>") serves, from its
// configfs udev_path.
Result<std::string> BackstorePrimaryDevice(
        const std::string &backstore,
        const std::string &configfs_core = "/sys/kernel/config/target/core");

} // namespace replipipe
