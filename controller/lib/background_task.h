// BackgroundTask: runs one piece of work on a thread of its own when asked,
// never two at once, so that the thread that asks (the daemon's main loop)
// does not wait for it.
//
// Request() starts a run unless one is running or already asked for; a
// request made while a run is going is dropped, not queued: the work is
// periodic (the degraded-pair probe), and running it again back to back
// because one run was slow would only probe dead targets without pause.
// The work gets a stop token that the destructor sets: it should return
// soon after (between two slow steps), since the destructor waits for it.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stop_token>
#include <thread>

namespace replipipe
{

class BackgroundTask
{
public:
	using Work = std::function<void(const std::stop_token &)>;

	// The thread starts here and waits for Request().
	explicit BackgroundTask(Work work);
	// Sets the stop token, then waits for a run in progress to return.
	~BackgroundTask();
	BackgroundTask(const BackgroundTask &) = delete;
	BackgroundTask &operator=(const BackgroundTask &) = delete;

	// Returns at once; false when a run was already going or asked for
	// (this request is dropped).
	bool Request();
	// Tests: waits until no run is asked for or going; false on time-out.
	bool WaitIdle(std::chrono::milliseconds timeout);

private:
	void Loop(std::stop_token stop);

	const Work work_;
	std::mutex mu_;
	std::condition_variable_any cv_; // requested_ or busy_ changed, stop
	bool requested_ = false;         // guarded by mu_
	bool busy_ = false;              // guarded by mu_; a run is going
	std::jthread thread_;            // last: started when the rest exists
};

} // namespace replipipe
