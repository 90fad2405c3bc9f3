// TokenBucket: the resync rate limit (Goal's ResyncRateLimitKiBps).
//
// Tokens are bytes, refilled at rate bytes per second up to capacity. The
// bucket starts empty, so that no interval that starts with the copy moves
// more than rate * interval + one request: a 4 MiB copy at 8 MiB/s takes at
// least 0.5 s. Rate 0 means unlimited.
//
// Thread-safety: none; the copier's loop owns it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace replipipe
{

class TokenBucket
{
public:
	using Clock = std::chrono::steady_clock;

	TokenBucket(uint64_t rate_bytes_per_s, uint64_t capacity_bytes)
	    : rate_(rate_bytes_per_s), capacity_(capacity_bytes),
	      last_(Clock::now())
	{
	}

	bool unlimited() const { return rate_ == 0; }

	// How long until bytes may go (zero: now). bytes <= capacity.
	Clock::duration Wait(uint64_t bytes)
	{
		if (unlimited())
			return Clock::duration::zero();
		Refill();
		if (tokens_ >= static_cast<double>(bytes))
			return Clock::duration::zero();
		const double missing = static_cast<double>(bytes) - tokens_;
		return std::chrono::duration_cast<Clock::duration>(
		        std::chrono::duration<double>(missing / rate_));
	}

	// Spends bytes (after Wait() said zero).
	void Take(uint64_t bytes)
	{
		if (!unlimited())
			tokens_ -= static_cast<double>(bytes);
	}

private:
	void Refill()
	{
		const Clock::time_point now = Clock::now();
		const double secs =
		        std::chrono::duration<double>(now - last_).count();
		last_ = now;
		tokens_ = std::min(static_cast<double>(capacity_),
		                   tokens_ + secs * static_cast<double>(rate_));
	}

	uint64_t rate_;
	uint64_t capacity_;
	double tokens_ = 0;
	Clock::time_point last_;
};

} // namespace replipipe
