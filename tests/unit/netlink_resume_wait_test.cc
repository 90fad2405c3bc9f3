// AskUntilProbed: a resume asked again, with PAIR_RESUME_WAIT, while the
// kernel answers that its probe of the target is running (EINPROGRESS).
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "netlink_resume_wait.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;

Status ProbeRunning()
{
	return Status::Error("the target's probe has not ended yet (it takes "
	                     "5 s at most); ask again with PAIR_RESUME_WAIT",
	                     EINPROGRESS);
}

// The first request may start a probe; only the ones after it wait for it.
TEST(NetlinkResumeWait, AsksAgainWithTheWaitFlagUntilTheProbeEnds)
{
	std::vector<bool> asked;
	Status st = AskUntilProbed([&](bool again) {
		asked.push_back(again);
		return asked.size() < 4 ? ProbeRunning() : Status();
	});
	EXPECT_TRUE(st.ok()) << st.message();
	EXPECT_EQ(asked, (std::vector<bool>{false, true, true, true}));

	// The probe's own answer, a failure, ends the asking as it is.
	asked.clear();
	st = AskUntilProbed([&](bool again) {
		asked.push_back(again);
		if (asked.size() < 3)
			return ProbeRunning();
		return Status::Error("the target did not answer within 5 s",
		                     ETIMEDOUT);
	});
	EXPECT_EQ(st.err(), ETIMEDOUT);
	EXPECT_EQ(st.message(), "the target did not answer within 5 s");
	EXPECT_EQ(asked.size(), 3u);

	// Another error at once: asked once.
	asked.clear();
	st = AskUntilProbed([&](bool again) {
		asked.push_back(again);
		return Status::Error("no pair with that source", ENOENT);
	});
	EXPECT_EQ(st.err(), ENOENT);
	EXPECT_EQ(asked, (std::vector<bool>{false}));
}

// A kernel that never ends the probe: the asking stops at its bound and
// says so.
TEST(NetlinkResumeWait, StopsAskingAtItsBound)
{
	int asked = 0;
	const auto t0 = std::chrono::steady_clock::now();
	Status st = AskUntilProbed(
	        [&](bool) {
		        ++asked;
		        std::this_thread::sleep_for(milliseconds(10));
		        return ProbeRunning();
	        },
	        milliseconds(100));
	const auto took = std::chrono::steady_clock::now() - t0;
	EXPECT_EQ(st.err(), EINPROGRESS);
	EXPECT_NE(st.message().find("the target's probe had not ended after "
	                            "100 ms of asking"),
	          std::string::npos)
	        << st.message();
	EXPECT_GE(asked, 2);
	EXPECT_GE(took, milliseconds(100));
}

} // namespace
} // namespace replipipe
