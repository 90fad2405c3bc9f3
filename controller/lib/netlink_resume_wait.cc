#include "netlink_resume_wait.h"

#include <cerrno>
#include <string>

namespace replipipe
{

Status AskUntilProbed(const std::function<Status(bool again)> &ask,
                      std::chrono::milliseconds bound)
{
	using Clock = std::chrono::steady_clock;
	const auto deadline = Clock::now() + bound;
	Status st = ask(false);
	// Each answer took the kernel's wait (a quarter second): no pause
	// of our own between two.
	while (!st.ok() && st.err() == EINPROGRESS) {
		if (Clock::now() >= deadline)
			return st.Context(
			        "the target's probe had not ended after " +
			        std::to_string(bound.count()) +
			        " ms of asking");
		st = ask(true);
	}
	return st;
}

} // namespace replipipe
