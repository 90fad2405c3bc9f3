// ClaimSource: where the resync claim loop gets its work (the kernel's
// resync region protocol, uapi/linux/replipipe.h RESYNC_CLAIM/DONE/FAILED).
// The real one is NetlinkPairClaims; unit tests use fakes.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "status.h"

namespace replipipe
{

// A claimed run of dirty regions [first, first + count) of one pair.
// count == 0: nothing dirty and unclaimed at or after the hint.
struct RegionClaim {
	uint64_t id = 0;
	uint64_t first = 0;
	uint32_t count = 0;
	// What was left of the claim's time-out when the kernel answered
	// (REPLIPIPE_A_CLAIM_TIME_LEFT_MS). Its time starts after the wait at
	// a removed pair's fence, which may have taken most of the time-out:
	// a claim timed from the request would be given up too early. None
	// from modules that do not report it: timed from the request.
	std::optional<std::chrono::milliseconds> time_left;
};

// One pair's claims. Not thread-safe: one claim loop uses it.
class ClaimSource
{
public:
	virtual ~ClaimSource() = default;
	// Up to max_regions contiguous dirty, unclaimed regions at or after
	// hint. The claim holds writes to them until Done or Failed.
	virtual Result<RegionClaim> Claim(uint64_t hint,
	                                  uint32_t max_regions) = 0;
	// The regions were copied: clear their dirty bits.
	virtual Status Done(uint64_t claim_id) = 0;
	// The copy failed: the regions stay dirty.
	virtual Status Failed(uint64_t claim_id) = 0;
	// Dirty regions now (for the progress total); nbits = regions.
	virtual Result<uint64_t> DirtyRegions() = 0;
};

} // namespace replipipe
