#include "resync_claim_size.h"

#include <algorithm>
#include <charconv>
#include <fstream>

namespace replipipe
{

ClaimSizer::ClaimSizer(const Options &options)
    : options_(options), fixed_(options.fixed)
{
	options_.region_bytes = std::max<uint64_t>(options_.region_bytes, 1);
	options_.max_regions = std::max<uint32_t>(options_.max_regions, 1);
	next_ = fixed_ ? options_.max_regions : Initial();
}

uint32_t ClaimSizer::Initial() const
{
	const double bytes = kInitialBytesPerSecond *
	                     std::chrono::duration<double>(target()).count();
	return static_cast<uint32_t>(std::clamp<uint64_t>(
	        static_cast<uint64_t>(bytes) / options_.region_bytes, 1,
	        options_.max_regions));
}

ClaimSizer::Duration ClaimSizer::target() const
{
	return std::min(options_.target, options_.claim_timeout / 4);
}

void ClaimSizer::SetClaimTimeout(Duration timeout)
{
	const Duration before = target();
	options_.claim_timeout = timeout;
	if (fixed_)
		return;
	if (!measured_) {
		next_ = Initial();
		return;
	}
	// A shorter time-out (it is a writable module parameter) shrinks the
	// next claim at once, in proportion: sized for the old target, it
	// could outlive the new time-out. Growing waits for a measurement.
	const Duration after = target();
	if (after < before && before.count() > 0)
		next_ = static_cast<uint32_t>(std::clamp<uint64_t>(
		        static_cast<uint64_t>(
		                static_cast<double>(next_) * after.count() /
		                static_cast<double>(before.count())),
		        1, options_.max_regions));
}

uint64_t ClaimSizer::Ideal(uint32_t regions, Duration elapsed) const
{
	// A claim timed at 0 (a coarse clock) counts as 1 us.
	const double secs =
	        std::max(std::chrono::duration<double>(elapsed).count(), 1e-6);
	const double want = regions *
	                    std::chrono::duration<double>(target()).count() /
	                    secs;
	// Beyond any cap; keeps the conversion defined.
	if (want >= static_cast<double>(UINT32_MAX))
		return UINT32_MAX;
	return static_cast<uint64_t>(want);
}

void ClaimSizer::Finished(uint32_t regions, Duration elapsed)
{
	if (fixed_ || regions == 0)
		return;
	measured_ = true;
	const uint64_t grown = uint64_t{next_} * 2;
	next_ = static_cast<uint32_t>(
	        std::clamp<uint64_t>(std::min(Ideal(regions, elapsed), grown),
	                             1, options_.max_regions));
}

bool ClaimSizer::Lost(uint32_t claimed, uint32_t copied, Duration elapsed)
{
	fixed_ = false;
	measured_ = true;
	if (claimed <= 1) {
		next_ = 1;
		return false;
	}
	// Whether one region fits is what the next claim finds out: copied
	// counts whole regions, and a claim's regions are copied side by
	// side, so none done does not mean one alone would not be.
	const uint64_t fits = copied == 0 ? 1 : Ideal(copied, elapsed);
	next_ = static_cast<uint32_t>(
	        std::clamp<uint64_t>(std::min<uint64_t>(fits, claimed / 2), 1,
	                             options_.max_regions));
	return true;
}

std::optional<std::chrono::seconds> ReadClaimTimeout(const std::string &path)
{
	std::ifstream in(path);
	std::string text;
	if (!std::getline(in, text))
		return std::nullopt;
	uint32_t secs = 0;
	const char *end = text.data() + text.size();
	auto [ptr, ec] = std::from_chars(text.data(), end, secs);
	if (ec != std::errc() || ptr == text.data() || ptr != end || secs == 0)
		return std::nullopt;
	return std::chrono::seconds(secs);
}

} // namespace replipipe
