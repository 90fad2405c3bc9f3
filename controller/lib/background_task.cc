#include "background_task.h"

#include <exception>

#include "log.h"

namespace replipipe
{

BackgroundTask::BackgroundTask(Work work)
    : work_(std::move(work)),
      thread_([this](std::stop_token stop) { Loop(std::move(stop)); })
{
}

BackgroundTask::~BackgroundTask()
{
	thread_.request_stop(); // wakes the wait in Loop() (stop_token)
	// jthread's destructor joins; done here so that mu_ and cv_, declared
	// before thread_, are still alive while the thread ends.
	if (thread_.joinable())
		thread_.join();
}

bool BackgroundTask::Request()
{
	{
		std::lock_guard lock(mu_);
		if (requested_ || busy_)
			return false;
		requested_ = true;
	}
	cv_.notify_all();
	return true;
}

bool BackgroundTask::WaitIdle(std::chrono::milliseconds timeout)
{
	std::unique_lock lock(mu_);
	return cv_.wait_for(lock, timeout,
	                    [this] { return !requested_ && !busy_; });
}

void BackgroundTask::Loop(std::stop_token stop)
{
	std::unique_lock lock(mu_);
	for (;;) {
		if (!cv_.wait(lock, stop, [this] { return requested_; }) ||
		    stop.stop_requested())
			return;
		requested_ = false;
		busy_ = true;
		lock.unlock();
		try {
			work_(stop);
		} catch (const std::exception &e) {
			// The work's own errors are its to report; this one
			// must not end the daemon.
			LogError() << "background task: " << e.what();
		}
		lock.lock();
		busy_ = false;
		cv_.notify_all();
	}
}

} // namespace replipipe
