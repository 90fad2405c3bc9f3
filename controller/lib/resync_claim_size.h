// ClaimSizer: how many regions the next resync claim asks for.
//
// Why it adapts. The kernel holds application writes to claimed regions
// until the claim ends, and drops a claim that is not finished within its
// module parameter claim_timeout_sec (30 s by default; the regions stay
// dirty). A claim of a fixed size (one copier queue, 32 MiB) takes 33 s on a
// target that writes 1 MB/s (iSCSI over a thin WAN link): every claim
// expires, RESYNC_DONE finds no claim, the resync never ends, and every write
// to a claimed region waits the whole time-out. So the size follows the
// measured speed of the claims before it: regions / (claim + copy + fdatasync
// time), times a target duration of 1 s, but at most a quarter of the claim
// time-out (the deadline runs from the claim, the kernel's reaper looks once
// a second, and a target can slow down between two claims: a 4x margin
// absorbs that without an expiry).
//
// Shrinking is immediate (the next claim is sized from the last one's rate),
// growing at most doubles per claim, up to the cap (one copier queue, the
// rate limit's quarter second): a fast target gets back to the full queue in
// a few claims, and a claim sped up by a cache at most doubles the next. A
// claim of few regions also carries the fixed costs (netlink, drain,
// fdatasync), which make its rate look lower than the target's: that only
// errs on the small side, and the doubling recovers from it. The speed is
// unknown at first: the first claim guesses 1 MiB/s, i.e. 1 MiB for a target
// of 1 s (256 KiB for a 1 s time-out), which a target of 256 KiB/s still
// copies within the time-out. Never below one region.
//
// A claim the kernel dropped nonetheless, or whose copy the deadline stopped
// (Lost), halves the size at least; a lost claim of one region cannot shrink
// further and ends the resync.
//
// No clock inside: callers pass the durations they measured, so the logic is
// tested with made-up times. Thread-safety: none (one claim loop owns it).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace replipipe
{

class ClaimSizer
{
public:
	using Duration = std::chrono::nanoseconds;

	// What a claim aims at, when a quarter of the time-out allows it.
	static constexpr Duration kTarget = std::chrono::seconds(1);
	// The kernel's default claim_timeout_sec.
	static constexpr Duration kDefaultTimeout = std::chrono::seconds(30);
	// The first claim: this many bytes per second of target().
	static constexpr uint64_t kInitialBytesPerSecond = 1ull << 20;

	struct Options {
		uint64_t region_bytes = 64 * 1024;
		// The cap (>= 1): one copier queue, the rate limit's quarter
		// second (a claim is copied at full speed and the limit waits
		// between claims: this bounds the burst), the kernel's
		// REPLIPIPE_CLAIM_MAX_REGIONS.
		uint32_t max_regions = 1;
		// An explicit size: every claim asks for max_regions until one
		// is lost; from then on the size adapts (capped by it).
		bool fixed = false;
		Duration target = kTarget;
		Duration claim_timeout = kDefaultTimeout;
	};

	ClaimSizer() : ClaimSizer(Options{}) {}
	explicit ClaimSizer(const Options &options);

	// Regions the next claim asks for, 1..max_regions.
	uint32_t next() const { return next_; }
	// min(target, claim_timeout / 4).
	Duration target() const;
	Duration claim_timeout() const { return options_.claim_timeout; }
	// The kernel's time-out changed (it is a writable module parameter).
	// Takes effect with the next Finished(), or at once before the first.
	void SetClaimTimeout(Duration timeout);

	// A claim of `regions` regions was copied, synced and reported Done;
	// elapsed: from asking for the claim to the end of the fdatasync.
	void Finished(uint32_t regions, Duration elapsed);
	// A claim of `claimed` regions outlived the time-out: the kernel no
	// longer knew it at RESYNC_DONE, or its copy stopped at the deadline
	// with `copied` of its regions written in `elapsed` (for a dropped
	// claim, all of them). Shrinks to at most half of `claimed`, and to
	// what `copied` in `elapsed` suggests. false: it was one region
	// already, there is nothing smaller to try.
	bool Lost(uint32_t claimed, uint32_t copied, Duration elapsed);

private:
	// Regions that `regions` taking `elapsed` suggests for the target time.
	uint64_t Ideal(uint32_t regions, Duration elapsed) const;

	// The first claim's size, from target().
	uint32_t Initial() const;

	Options options_;
	bool fixed_;
	bool measured_ = false; // a Finished() or Lost() since construction
	uint32_t next_;
};

// The kernel's claim_timeout_sec from its sysfs file (a positive decimal);
// nullopt when the file is missing or holds anything else.
std::optional<std::chrono::seconds>
ReadClaimTimeout(const std::string &path =
                         "/sys/module/replipipe/parameters/claim_timeout_sec");

} // namespace replipipe
