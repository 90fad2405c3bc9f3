// PairResync: the claim loop that brings one pair's target up to date.
//
//   hint = 0
//   loop: claim up to max_regions_per_claim dirty regions at or after hint;
//         none left: done if the hint was 0, else start over at 0;
//         copy [first, first + count) * region_bytes (clamped to the source
//         size) with the RegionCopier and make it durable (Sync(), one
//         fdatasync per claim); Done on success, Failed on error (the
//         regions stay dirty, the error is returned); hint = first+count.
//
// It copies only what the kernel's bitmap marks dirty, so a restart (a new
// PairResync, after a crash or a stop) continues where the bitmap says: the
// regions already reported Done are clean and are not copied again.
//
// Thread-safety: Run() on one thread; RequestStop() and progress() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "resync_claims.h"
#include "resync_copier.h"

namespace replipipe
{

struct PairResyncOptions {
	std::string pipe_id;     // for messages
	std::string source;      // the pair's source backstore, for messages
	std::string source_path; // the primary device the backstore serves
	std::string target_path;
	uint64_t region_bytes = 64 * 1024;
	// Regions per claim: the kernel holds writes to them while they are
	// copied, so a claim stays small enough to copy in well under the
	// claim time-out, big enough to keep the queue full. 0: one full
	// queue of the copier (queue_depth x chunk_bytes, >= 8 MiB), at most
	// 1/4 s of the rate limit (a killed daemon loses a claim).
	uint32_t max_regions_per_claim = 0;
	CopierOptions copier;
};

struct ResyncProgress {
	uint64_t done_bytes = 0; // copied and reported Done (+ current claim)
	// Dirty at the start (grows if more get dirty); = done_bytes once
	// clean.
	uint64_t total_bytes = 0;
	uint64_t rate_bytes_per_s = 0; // average since the start
	uint64_t claims = 0;           // claims reported Done
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
	// RequestStop() (ECANCELED; the current claim is reported Failed).
	// Errors start with "resync pipe <id> pair <source>: ".
	Status Run();

	void RequestStop() { copier_->RequestStop(); }
	ResyncProgress progress() const;
	const RegionCopier &copier() const { return *copier_; }

private:
	Status RunClaims();

	PairResyncOptions options_;
	ClaimSource *claims_;
	std::unique_ptr<RegionCopier> copier_;
	std::atomic<uint64_t> committed_bytes_{0};
	std::atomic<uint64_t> total_bytes_{0};
	std::atomic<uint64_t> claims_done_{0};
	std::atomic<int64_t> start_ns_{0};
	std::atomic<bool> copying_{false}; // a claim is being copied
};

// The device a LIO backstore ("replipipe_<N>/<name>") serves, from its
// configfs udev_path.
Result<std::string> BackstorePrimaryDevice(
        const std::string &backstore,
        const std::string &configfs_core = "/sys/kernel/config/target/core");

} // namespace replipipe
