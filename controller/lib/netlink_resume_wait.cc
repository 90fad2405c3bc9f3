#include "netlink_resume_wait.h"

#include <cerrno>
#include <string>
#include <thread>

namespace replipipe
{

Status AskUntilProbed(const std::function<Status(bool again)> &ask,
                      std::chrono::milliseconds bound)
{
	using Clock = std::chrono::steady_clock;
	const auto deadline = Clock::now() + bound;
	Status st = ask(false);
	while (!st.ok() && st.err() == EINPROGRESS) {
		if (Clock::now() >= deadline)
			return st.Context(
			        "the target's probe had not ended after " +
			        std::to_string(bound.count()) +
			        " ms of asking");
		// Each answer took the kernel's wait (a quarter second); a
		// short pause of our own in case one did not.
		std::this_thread::sleep_for(kResumeAskPause);
		st = ask(true);
	}
	return st;
}

} // namespace replipipe
