// PipePusher on its own: the pushing thread that cannot be started, and
// one whose push throws.
#include "pipe_pusher.h"

#include <cerrno>
#include <chrono>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>

#include <gtest/gtest.h>

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;

// pthread_create fails with EAGAIN at the unit's task limit (jobs, probe
// helpers and control connections each hold a thread). The pipe must not
// be left queued with no thread to push it, and the call must not throw
// into the daemon's main loop, which would end the process: the next
// call starts the thread and pushes it.
TEST(PipePusher, AThreadThatCannotStartIsTriedAgainByTheNextCall)
{
	std::mutex mu;
	int pushes = 0;         // guarded by mu
	int starts_refused = 0; // guarded by mu
	bool refuse = true;     // guarded by mu
	PipePusher::Options options;
	options.first = milliseconds(0);
	options.max = milliseconds(1000);
	options.start_thread = [&](std::function<void()> body) {
		std::lock_guard lock(mu);
		if (refuse) {
			++starts_refused;
			throw std::system_error(EAGAIN, std::generic_category(),
			                        "pthread_create");
		}
		return std::thread(std::move(body));
	};
	PipePusher pusher(
	        [&](const std::string &) -> Result<PushOutcome> {
		        std::lock_guard lock(mu);
		        ++pushes;
		        return PushOutcome::kPushed;
	        },
	        {}, options);

	EXPECT_NO_THROW(pusher.Missing({{"u1", "pipe u1"}}));
	EXPECT_TRUE(pusher.WaitIdle(milliseconds(5000)))
	        << "the pipe stayed queued with no thread to push it";
	{
		std::lock_guard lock(mu);
		EXPECT_EQ(starts_refused, 1);
		EXPECT_EQ(pushes, 0);
		refuse = false;
	}
	pusher.Missing({{"u1", "pipe u1"}});
	EXPECT_TRUE(pusher.WaitIdle(milliseconds(5000)));
	std::lock_guard lock(mu);
	EXPECT_EQ(pushes, 1) << "not pushed once the thread could start";
}

// NetlinkSocket throws std::bad_alloc for a message it cannot allocate,
// and the push (PipeService::PushIfMissing) and the refresh after it
// (DaemonService::RefreshPipe) both talk to the kernel. Escaping the
// pusher's thread, the exception would end the daemon (std::terminate): a
// push that throws is a failed push, tried again by the next call; a
// refresh that throws leaves the push done; and the thread goes on pushing.
TEST(PipePusher, APushOrARefreshThatThrowsDoesNotEndTheThread)
{
	std::mutex mu;
	int pushes = 0;    // guarded by mu
	int refreshes = 0; // guarded by mu
	PipePusher::Options options;
	options.first = milliseconds(0);
	options.max = milliseconds(0);
	PipePusher pusher(
	        [&](const std::string &) -> Result<PushOutcome> {
		        std::lock_guard lock(mu);
		        if (++pushes == 1)
			        throw std::bad_alloc();
		        return PushOutcome::kPushed;
	        },
	        [&](const std::string &) {
		        std::lock_guard lock(mu);
		        if (++refreshes == 1)
			        throw std::bad_alloc();
	        },
	        options);
	auto counts = [&] {
		std::lock_guard lock(mu);
		return std::pair(pushes, refreshes);
	};

	pusher.Missing({{"u1", "pipe u1"}}); // the push throws
	ASSERT_TRUE(pusher.WaitIdle(milliseconds(5000)));
	EXPECT_EQ(counts(), std::pair(1, 0));
	pusher.Missing({{"u1", "pipe u1"}}); // pushed; the refresh throws
	ASSERT_TRUE(pusher.WaitIdle(milliseconds(5000)));
	EXPECT_EQ(counts(), std::pair(2, 1))
	        << "a push that threw was not tried again";
	// Pushed, so forgotten; found missing anew (the kernel lost it).
	pusher.Missing({{"u1", "pipe u1"}});
	ASSERT_TRUE(pusher.WaitIdle(milliseconds(5000)));
	EXPECT_EQ(counts(), std::pair(3, 2))
	        << "the thread stopped pushing after an exception";
}

} // namespace
} // namespace replipipe
