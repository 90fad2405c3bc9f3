// TokenBucket: the resync rate limit (Goal's ResyncRateLimitKiBps).
//
// Tokens are bytes, refilled at rate bytes per second up to capacity. The
// bucket starts empty. Rate 0 means unlimited.
//
// PairResync paces its claims with it, after the fact: a claim holds
// application writes to its regions until it ends, so its copy runs at full
// speed, and the wait comes between claims. Take() spends what a claim
// copied, into debt when that is more than the bucket holds; the next claim
// waits until Wait(0) says the debt is paid. On average the copy moves at
// most rate bytes per second; in any interval, at most rate * interval plus
// capacity plus one claim (the claim sizer caps a claim at a quarter second
// of the rate, or one region when a region is larger).
//
// Take() does not refill: the time from one Wait() to the next, the claim's
// copy included, is credited by the next Wait(), against the debt, before
// the capacity caps it.
//
// Thread-safety: none; its one user's loop owns it.
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

	// How long until bytes may go (zero: now), i.e. until the debt is
	// paid and bytes more are there. bytes <= capacity.
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

	// Spends bytes, which may be more than the bucket holds (a debt that
	// the next Wait() counts).
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
