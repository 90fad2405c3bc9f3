// PipePusher on its own: the pushing thread that cannot be started.
#include "pipe_pusher.h"

#include <cerrno>
#include <chrono>
#include <mutex>
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
	EXPECT_TRUE(pusher.WaitIdle(milliseconds(500)))
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

} // namespace
} // namespace replipipe
