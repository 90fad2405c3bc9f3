// ClaimSource: where the resync claim loop gets its work (the kernel's
// resync region protocol, uapi/linux/replipipe.h RESYNC_CLAIM/DONE/FAILED).
// The real one is NetlinkPairClaims; unit tests use fakes.
#pragma once

#include <cstdint>

#include "status.h"

namespace replipipe
{

// A claimed run of dirty regions [first, first + count) of one pair.
// count == 0: nothing dirty and unclaimed at or after the hint.
struct RegionClaim {
	uint64_t id = 0;
	uint64_t first = 0;
	uint32_t count = 0;
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
