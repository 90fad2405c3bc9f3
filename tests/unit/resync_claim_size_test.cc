// ClaimSizer without a clock: durations are made up, targets are simulated
// as "fixed cost + bytes / speed" per claim.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include <unistd.h>

#include "resync_claim_size.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using std::chrono::seconds;
using Duration = ClaimSizer::Duration;
constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kRegion = 64 * kKiB;

ClaimSizer::Options Adaptive(uint32_t max_regions,
                             Duration timeout = seconds(30))
{
	ClaimSizer::Options o;
	o.region_bytes = kRegion;
	o.max_regions = max_regions;
	o.claim_timeout = timeout;
	return o;
}

// How long a claim of `regions` takes on a target that moves bytes_per_s
// after a fixed cost per claim (netlink, drain, fdatasync round trip).
Duration ClaimTime(uint32_t regions, double bytes_per_s,
                   Duration fixed = milliseconds(5))
{
	return fixed + std::chrono::duration_cast<Duration>(
	                       std::chrono::duration<double>(regions * kRegion /
	                                                     bytes_per_s));
}

TEST(ClaimSizer, TargetIsOneSecondOrAQuarterOfTheTimeout)
{
	EXPECT_EQ(ClaimSizer(Adaptive(512, seconds(30))).target(), seconds(1));
	EXPECT_EQ(ClaimSizer(Adaptive(512, seconds(5))).target(), seconds(1));
	EXPECT_EQ(ClaimSizer(Adaptive(512, seconds(2))).target(),
	          milliseconds(500));
	EXPECT_EQ(ClaimSizer(Adaptive(512, seconds(1))).target(),
	          milliseconds(250));
	ClaimSizer s(Adaptive(512));
	s.SetClaimTimeout(seconds(3));
	EXPECT_EQ(s.target(), milliseconds(750));
	EXPECT_EQ(s.claim_timeout(), seconds(3));
}

// The speed is unknown at first: a guess of 1 MiB/s for the target time
// (1 MiB, less for a short time-out), within the cap, at least a region.
TEST(ClaimSizer, FirstClaimGuessesOneMiBPerSecondWithinTheCap)
{
	EXPECT_EQ(ClaimSizer(Adaptive(512)).next(), 16u); // 16 x 64 KiB
	EXPECT_EQ(ClaimSizer(Adaptive(512, seconds(2))).next(), 8u);
	EXPECT_EQ(ClaimSizer(Adaptive(512, seconds(1))).next(), 4u);
	ClaimSizer later(Adaptive(512));
	later.SetClaimTimeout(seconds(2)); // read after construction
	EXPECT_EQ(later.next(), 8u);
	later.Finished(8, milliseconds(1));
	later.SetClaimTimeout(seconds(30)); // measured: no longer a guess
	EXPECT_EQ(later.next(), 16u);
	EXPECT_EQ(ClaimSizer(Adaptive(4)).next(), 4u);
	ClaimSizer::Options big = Adaptive(512);
	big.region_bytes = 4 * kMiB;
	EXPECT_EQ(ClaimSizer(big).next(), 1u);
	EXPECT_EQ(ClaimSizer(Adaptive(0)).next(), 1u);
}

// A fast target: at most twice the size per claim, up to the cap, and it
// stays there.
TEST(ClaimSizer, GrowsAtMostTwofoldPerClaimUpToTheCap)
{
	ClaimSizer s(Adaptive(512));
	std::vector<uint32_t> sizes;
	for (int i = 0; i < 8; ++i) {
		sizes.push_back(s.next());
		s.Finished(s.next(), milliseconds(1));
	}
	EXPECT_EQ(sizes,
	          (std::vector<uint32_t>{16, 32, 64, 128, 256, 512, 512, 512}));
}

// The speed drops (a WAN link congests): the very next claim is sized from
// the slow one, not halved step by step.
TEST(ClaimSizer, ShrinksAtOnceToTheMeasuredSpeed)
{
	ClaimSizer s(Adaptive(512));
	while (s.next() < 512)
		s.Finished(s.next(), milliseconds(1));
	// 32 MiB in 32 s: 1 MiB/s, so 1 MiB (16 regions) a second.
	s.Finished(512, seconds(32));
	EXPECT_EQ(s.next(), 16u);
	// Slower still: 16 regions in 4 s.
	s.Finished(16, seconds(4));
	EXPECT_EQ(s.next(), 4u);
	// Never below one region, however slow.
	s.Finished(4, seconds(400));
	EXPECT_EQ(s.next(), 1u);
	s.Finished(1, seconds(10));
	EXPECT_EQ(s.next(), 1u);
}

// A claim shorter than asked (the end of a dirty run) that went fast says
// the target is fast: the size still grows (at most twofold).
TEST(ClaimSizer, ShortFastClaimsStillGrowTheSize)
{
	ClaimSizer s(Adaptive(512));
	s.Finished(1, milliseconds(2));
	EXPECT_EQ(s.next(), 32u);
	s.Finished(3, milliseconds(2));
	EXPECT_EQ(s.next(), 64u);
}

// Simulated targets from 50 KB/s to 2 GB/s, with the kernel's default time-out
// and lowered ones: after a few claims every claim takes between half the
// target and the target (or is at the cap, faster, or one region, slower),
// and none outlives the time-out (the first one only on a target so slow
// that 1 MiB takes longer than a lowered time-out).
TEST(ClaimSizer, SettlesWithinTheTargetTimeOnSlowAndFastTargets)
{
	for (Duration timeout : {Duration(seconds(30)), Duration(seconds(5)),
	                         Duration(seconds(2))}) {
		for (double speed :
		     {50e3, 300e3, 1e6, 1.1e6, 10e6, 100e6, 500e6, 2e9}) {
			SCOPED_TRACE(::testing::Message()
			             << "timeout " << timeout.count() / 1e9
			             << " s, speed " << speed << " B/s");
			ClaimSizer s(Adaptive(512, timeout));
			const Duration target = s.target();
			for (int i = 0; i < 30; ++i) {
				const uint32_t n = s.next();
				ASSERT_GE(n, 1u);
				ASSERT_LE(n, 512u);
				const Duration took = ClaimTime(n, speed);
				// One region at 50 KB/s is 1.3 s: it
				// cannot be smaller. The first claim's
				// size is a guess; from the second on a
				// claim lasts at most the target (plus a
				// part of the fixed cost).
				if (n > 1 && i > 0) {
					EXPECT_LE(took, target * 1.01)
					        << "claim " << i;
				}
				// The first guess (1 MiB/s) takes 21
				// times the target at 50 KB/s.
				if (i > 0 || speed >= 300e3 ||
				    timeout > seconds(21)) {
					EXPECT_LT(took, timeout)
					        << "claim " << i;
				}
				if (i >= 10 && n < 512 && n > 1) {
					EXPECT_GE(took, target / 2)
					        << "claim " << i;
				}
				s.Finished(n, took);
			}
		}
	}
}

TEST(ClaimSizer, RateLimitedClaimsStayAtTheCap)
{
	// 1 MiB/s limit: the cap is a quarter second (4 regions), a claim
	// of it takes 0.25 s, well under the target: it stays at the cap.
	ClaimSizer s(Adaptive(4));
	for (int i = 0; i < 5; ++i) {
		EXPECT_EQ(s.next(), 4u);
		s.Finished(4, milliseconds(250));
	}
}

// The kernel dropped a claim: at most half of it next, or what its speed
// says if that is less; a lost claim of one region is the end.
TEST(ClaimSizer, LostClaimHalvesAtLeastAndOneRegionCannotShrink)
{
	ClaimSizer s(Adaptive(512));
	while (s.next() < 512)
		s.Finished(s.next(), milliseconds(1));
	// 512 regions took 40 s: 12.8 regions a second.
	EXPECT_TRUE(s.Lost(512, 512, seconds(40)));
	EXPECT_EQ(s.next(), 12u);
	// Dropped early (the time-out was lowered): half.
	EXPECT_TRUE(s.Lost(12, 12, milliseconds(10)));
	EXPECT_EQ(s.next(), 6u);
	EXPECT_TRUE(s.Lost(6, 6, seconds(31)));
	EXPECT_EQ(s.next(), 1u);
	EXPECT_FALSE(s.Lost(1, 1, seconds(31)));
	EXPECT_EQ(s.next(), 1u);
	// Sized from the speed again once claims end in time.
	s.Finished(1, milliseconds(100));
	EXPECT_EQ(s.next(), 2u);
}

// A copy the deadline stopped: the claim's size says whether a smaller one
// is left to try, the regions it copied how small. One region copied of
// several (or none: they were copied side by side) is no reason to stop.
TEST(ClaimSizer, StoppedCopyShrinksByWhatItCopiedWhileTheClaimHadMore)
{
	ClaimSizer s(Adaptive(512));
	while (s.next() < 64)
		s.Finished(s.next(), milliseconds(1));
	// 1 of 64 regions copied in 1 s: 1 region a second, 1 next.
	EXPECT_TRUE(s.Lost(64, 1, seconds(1)));
	EXPECT_EQ(s.next(), 1u);
	s.Finished(1, milliseconds(100));
	s.Finished(2, milliseconds(100));
	EXPECT_EQ(s.next(), 4u);
	// None of 4 copied: one region is tried.
	EXPECT_TRUE(s.Lost(4, 0, seconds(1)));
	EXPECT_EQ(s.next(), 1u);
	// 3 of 4 copied, early: still half of the claim at most.
	s.Finished(1, milliseconds(100));
	s.Finished(2, milliseconds(100));
	EXPECT_TRUE(s.Lost(4, 3, milliseconds(10)));
	EXPECT_EQ(s.next(), 2u);
	// A claim of one region, copied or not: nothing smaller.
	EXPECT_FALSE(s.Lost(1, 0, seconds(1)));
	EXPECT_FALSE(s.Lost(1, 1, seconds(1)));
	EXPECT_EQ(s.next(), 1u);
}

// max_regions_per_claim set explicitly: every claim asks for it, whatever
// the speed, until one is lost; then the size adapts under it.
TEST(ClaimSizer, FixedSizeHoldsUntilAClaimIsLost)
{
	ClaimSizer::Options o = Adaptive(64);
	o.fixed = true;
	ClaimSizer s(o);
	EXPECT_EQ(s.next(), 64u);
	s.Finished(64, seconds(20));
	s.Finished(3, milliseconds(1));
	EXPECT_EQ(s.next(), 64u);
	EXPECT_TRUE(s.Lost(64, 64, seconds(32)));
	EXPECT_EQ(s.next(), 2u); // 2 regions a second
	s.Finished(2, milliseconds(1));
	s.Finished(4, milliseconds(1));
	s.Finished(8, milliseconds(1));
	s.Finished(16, milliseconds(1));
	s.Finished(32, milliseconds(1));
	EXPECT_EQ(s.next(), 64u);
	s.Finished(64, milliseconds(1));
	EXPECT_EQ(s.next(), 64u);
}

TEST(ClaimSizer, ZeroDurationCountsAsVeryFast)
{
	ClaimSizer s(Adaptive(512));
	s.Finished(16, Duration::zero());
	EXPECT_EQ(s.next(), 32u);
}

class TimeoutFile : public ::testing::Test
{
protected:
	void SetUp() override
	{
		path_ = (std::filesystem::temp_directory_path() /
		         ("replipipe-claim-timeout-" +
		          std::to_string(::getpid())))
		                .string();
	}
	void TearDown() override { std::filesystem::remove(path_); }
	void Write(const std::string &text)
	{
		std::ofstream(path_, std::ios::trunc) << text;
	}
	std::string path_;
};

TEST_F(TimeoutFile, ReadsThePositiveDecimalOfTheModuleParameter)
{
	Write("30\n");
	EXPECT_EQ(ReadClaimTimeout(path_), seconds(30));
	Write("5");
	EXPECT_EQ(ReadClaimTimeout(path_), seconds(5));
	for (const char *bad :
	     {"", "0\n", "-5\n", "5s\n", " 5\n", "x\n", "99999999999\n"}) {
		Write(bad);
		EXPECT_EQ(ReadClaimTimeout(path_), std::nullopt) << bad;
	}
	EXPECT_EQ(ReadClaimTimeout(path_ + ".missing"), std::nullopt);
}

// A shorter claim_timeout_sec shrinks the next claim at once, in proportion
// to the target it allows (a quarter of it, when under 1 s).
TEST(ClaimSizer, ShorterTimeoutShrinksTheNextClaim)
{
	ClaimSizer::Options o;
	o.region_bytes = 64 * 1024;
	o.max_regions = 1024;
	o.claim_timeout = std::chrono::seconds(30);
	ClaimSizer sizer(o);
	sizer.Finished(sizer.next(), std::chrono::milliseconds(1));
	sizer.Finished(sizer.next(), std::chrono::milliseconds(1));
	const uint32_t before = sizer.next();
	ASSERT_GE(before, 8u);
	sizer.SetClaimTimeout(std::chrono::seconds(2)); // target 1 s -> 0.5 s
	EXPECT_EQ(sizer.next(), before / 2);
	sizer.SetClaimTimeout(std::chrono::seconds(30)); // no growth unmeasured
	EXPECT_EQ(sizer.next(), before / 2);
}

} // namespace
} // namespace replipipe
