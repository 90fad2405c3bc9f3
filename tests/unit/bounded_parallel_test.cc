// ForEachBounded: every index once, never more calls at a time than the
// width, and as many as the width when the calls wait for each other.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "bounded_parallel.h"

namespace replipipe
{
namespace
{

TEST(BoundedParallel, EveryIndexOnceForAnyCountAndWidth)
{
	for (size_t count : {0, 1, 2, 7, 100}) {
		for (size_t width : {0, 1, 3, 200}) {
			std::vector<std::atomic<int>> calls(count);
			ForEachBounded(count, width,
			               [&](size_t i) { ++calls[i]; });
			for (size_t i = 0; i < count; ++i)
				EXPECT_EQ(calls[i], 1)
				        << "count " << count << " width "
				        << width << " index " << i;
		}
	}
}

// Every call waits until the test opens the gate. The test opens it once
// `width` calls are in, after a pause that lets any call beyond the width
// come in too (10 s at most, so that a run one at a time fails rather than
// hangs): the most seen at once is then the width, not fewer, not more.
TEST(BoundedParallel, WidthCallsAtOnceAndNoMore)
{
	constexpr size_t kWidth = 5, kCount = 23;
	std::mutex mu;
	std::condition_variable cv;
	size_t in = 0, most = 0;
	bool open = false;
	std::thread run([&] {
		ForEachBounded(kCount, kWidth, [&](size_t) {
			std::unique_lock lock(mu);
			most = std::max(most, ++in);
			cv.notify_all();
			cv.wait_for(lock, std::chrono::seconds(10),
			            [&] { return open; });
			--in;
		});
	});
	{
		std::unique_lock lock(mu);
		cv.wait_for(lock, std::chrono::seconds(10),
		            [&] { return in >= kWidth; });
	}
	std::this_thread::sleep_for(std::chrono::milliseconds(200));
	{
		std::lock_guard lock(mu);
		open = true;
	}
	cv.notify_all();
	run.join();
	EXPECT_EQ(most, kWidth);
	EXPECT_EQ(in, 0u);
}

// A call that throws ends the run: its exception reaches the caller once
// the calls in progress returned, not std::terminate() from a helper.
TEST(BoundedParallel, AnExceptionReachesTheCaller)
{
	std::atomic<size_t> calls{0};
	EXPECT_THROW(ForEachBounded(100, 4,
	                            [&](size_t i) {
		                            ++calls;
		                            if (i == 3)
			                            throw std::runtime_error(
			                                    "call 3");
	                            }),
	             std::runtime_error);
	EXPECT_GE(calls.load(), 4u);
}

} // namespace
} // namespace replipipe
