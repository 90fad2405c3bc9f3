// PipePusher: pushes again, on a thread of its own, the stored pipes the
// kernel lacks: a pipe whose push failed at start-up (a backstore, a target
// or an iSCSI peer that was not there yet) or that the kernel lost; and the
// stored definitions that start-up's reconcile could not put in place of a
// kernel definition that differed (the kernel refused: EBUSY while a
// replaced pair's writes drain, decision 53; decision 59).
//
// Each pipe is tried push_first after it is first reported, then after
// twice the wait each time, up to push_max; a failure is logged when its
// reason changes. The pushes run on their own thread because one can take
// long (an iSCSI login has a 30 s bound, the kernel opens the targets): the
// daemon's main loop, which Want() is called from, must keep handling
// signals and kernel events meanwhile. One push at a time.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "pipe_service.h"
#include "status.h"

namespace replipipe
{

class PipePusher
{
public:
	using Clock = std::chrono::steady_clock;
	// Pushes one stored pipe (PipeService::PushIfMissing); an error says
	// why the push failed. An exception (std::exception) counts as a
	// failed push, and one of PushedFn is logged: neither ends the thread.
	using PushFn = std::function<Result<PushOutcome>(const std::string &)>;
	// Called on the pusher's thread after a pipe was pushed (kPushed or
	// kReplaced).
	using PushedFn = std::function<void(const std::string &)>;

	// Why a stored pipe is to be pushed (for the log).
	enum class Reason {
		kMissing, // the kernel lacks it
		kDiffers, // the kernel's definition differs from the store's
	};
	struct Wanted {
		std::string label;
		Reason reason = Reason::kMissing;
	};

	struct Options {
		std::chrono::milliseconds first{5000};
		std::chrono::milliseconds max{300000};
		// Starts the pushing thread (empty: std::thread). Tests make
		// it fail, as pthread_create does at the unit's task limit.
		std::function<std::thread(std::function<void()>)>
		        start_thread{};
	};

	PipePusher(PushFn push, PushedFn pushed, Options options);
	~PipePusher(); // waits for a push in progress
	PipePusher(const PipePusher &) = delete;
	PipePusher &operator=(const PipePusher &) = delete;

	// The stored pipes the kernel lacks now, by instance id, with a label
	// for the log: those whose wait is over are queued for a push, pipes
	// not named are forgotten (their back-off starts anew if they go
	// missing again). When the pushing thread cannot be started nothing
	// is queued: the next call tries again.
	void Missing(const std::map<std::string, std::string> &label_by_id);
	// The same for every stored pipe to push, missing or differing. A pipe
	// whose reason changes keeps its back-off.
	void Want(const std::map<std::string, Wanted> &wanted);

	// Tests: waits until no push is queued or running.
	bool WaitIdle(std::chrono::milliseconds timeout);

private:
	struct Retry {
		std::string label;
		Reason reason = Reason::kMissing;
		Clock::time_point next;
		std::chrono::milliseconds wait{0};
		std::string last_error;
		Reason logged = Reason::kMissing; // last_error's reason
		bool queued = false;              // in due_ or being pushed
	};

	void Run();
	// push_ then, after a push, pushed_; throws nothing (an exception of
	// push_ is the push's error).
	Result<PushOutcome> PushOne(const std::string &id);
	// The result of one push of id (mu_ held).
	void RecordLocked(const std::string &id, const Result<PushOutcome> &r,
	                  Clock::time_point started);

	const PushFn push_;
	const PushedFn pushed_;
	const Options options_;

	std::mutex mu_;
	std::condition_variable cv_; // due_, stop_, running_ changed
	std::map<std::string, Retry> retry_;
	std::deque<std::string> due_;
	bool running_ = false; // a push is in progress
	bool stop_ = false;
	std::thread thread_; // started with the first queued push
};

} // namespace replipipe
