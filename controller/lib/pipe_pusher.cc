#include "pipe_pusher.h"

#include <algorithm>
#include <exception>
#include <system_error>
#include <vector>

#include "log.h"

namespace replipipe
{

PipePusher::PipePusher(PushFn push, PushedFn pushed, Options options)
    : push_(std::move(push)), pushed_(std::move(pushed)), options_(options)
{
}

PipePusher::~PipePusher()
{
	{
		std::lock_guard lock(mu_);
		stop_ = true;
	}
	cv_.notify_all();
	if (thread_.joinable())
		thread_.join();
}

void PipePusher::Missing(const std::map<std::string, std::string> &label_by_id)
{
	std::map<std::string, Wanted> wanted;
	for (const auto &[id, label] : label_by_id)
		wanted[id] = Wanted{label, Reason::kMissing};
	Want(wanted);
}

void PipePusher::Want(const std::map<std::string, Wanted> &wanted)
{
	const Clock::time_point now = Clock::now();
	std::vector<std::string> queued;
	std::lock_guard lock(mu_);
	std::erase_if(retry_, [&](const auto &entry) {
		return !entry.second.queued && !wanted.count(entry.first);
	});
	for (const auto &[id, want] : wanted) {
		auto [it, added] = retry_.try_emplace(id);
		Retry &retry = it->second;
		retry.label = want.label;
		retry.reason = want.reason;
		if (added) {
			// Found now: start-up's reconcile has just tried, or
			// the kernel lost it just now; not at once.
			retry.wait = options_.first;
			retry.next = now + retry.wait;
		}
		if (retry.queued || now < retry.next)
			continue;
		retry.queued = true;
		due_.push_back(id);
		queued.push_back(id);
	}
	if (queued.empty())
		return;
	if (!thread_.joinable()) {
		try {
			auto body = [this] { Run(); };
			thread_ = options_.start_thread
			                  ? options_.start_thread(body)
			                  : std::thread(body);
		} catch (const std::system_error &e) {
			// Not queued after all: a pipe left queued with no
			// thread to push it would never be tried again. The
			// main loop's next refresh asks again.
			for (const std::string &id : queued)
				retry_[id].queued = false;
			std::erase_if(due_, [&](const std::string &id) {
				return std::find(queued.begin(), queued.end(),
				                 id) != queued.end();
			});
			LogWarning() << "cannot start the thread that pushes "
			             << queued.size()
			             << " stored pipe(s) the kernel lacks: "
			             << e.what() << "; trying again later";
			return;
		}
	}
	cv_.notify_all();
}

bool PipePusher::WaitIdle(std::chrono::milliseconds timeout)
{
	std::unique_lock lock(mu_);
	return cv_.wait_for(lock, timeout,
	                    [&] { return due_.empty() && !running_; });
}

void PipePusher::Run()
{
	std::unique_lock lock(mu_);
	for (;;) {
		cv_.wait(lock, [&] { return stop_ || !due_.empty(); });
		if (stop_)
			return;
		const std::string id = due_.front();
		due_.pop_front();
		running_ = true;
		const Clock::time_point started = Clock::now();
		lock.unlock();
		Result<PushOutcome> r = PushOne(id);
		lock.lock();
		RecordLocked(id, r, started);
		running_ = false;
		cv_.notify_all();
	}
}

Result<PushOutcome> PipePusher::PushOne(const std::string &id)
{
	// An exception must not end this thread (std::terminate would end
	// the daemon): NetlinkSocket throws std::bad_alloc for a message it
	// cannot allocate. It is this push's failure, logged by
	// RecordLocked() and tried again after the back-off.
	auto pushed = [&]() -> Result<PushOutcome> {
		try {
			return push_(id);
		} catch (const std::exception &e) {
			return Status::Error(std::string("push failed: ") +
			                     e.what());
		}
	}();
	if (pushed.ok() &&
	    (*pushed == PushOutcome::kPushed ||
	     *pushed == PushOutcome::kReplaced) &&
	    pushed_) {
		// The push stands; the next refresh (a tick, an event) does
		// what this one did not.
		try {
			pushed_(id);
		} catch (const std::exception &e) {
			LogError()
			        << "pipe " << id
			        << " was pushed to the kernel, but reading it "
			           "back failed: "
			        << e.what();
		}
	}
	return pushed;
}

void PipePusher::RecordLocked(const std::string &id,
                              const Result<PushOutcome> &r,
                              Clock::time_point started)
{
	auto it = retry_.find(id);
	if (it == retry_.end())
		return;
	Retry &retry = it->second;
	retry.queued = false;
	if (!r.ok()) {
		const bool differs = retry.reason == Reason::kDiffers;
		const std::string &why = r.status().message();
		if (why != retry.last_error || retry.reason != retry.logged)
			LogWarning()
			        << retry.label
			        << (differs ? "'s definition in the kernel "
			                      "differs from the store's, "
			                      "and pushing the stored one "
			                      "failed: "
			                    : " is not in the kernel: ")
			        << r.status().message()
			        << "; trying again, at most every "
			        << options_.max.count() / 1000 << " s";
		retry.last_error = why;
		retry.logged = retry.reason;
		retry.next = started + retry.wait;
		retry.wait = std::min(retry.wait * 2, options_.max);
		return;
	}
	switch (*r) {
	case PushOutcome::kBusy:
		// A call holds the pipe: it decides what the kernel gets; the
		// back-off stays where it was.
		retry.next = started + retry.wait;
		return;
	case PushOutcome::kPushed:
		LogNotice() << retry.label
		            << ": pushed to the kernel from the store (full "
		               "resync)";
		break;
	case PushOutcome::kReplaced:
		LogNotice() << retry.label
		            << ": the kernel's definition, which differed "
		               "from the store's, was replaced by the stored "
		               "one";
		break;
	case PushOutcome::kNotNeeded:
		break;
	}
	retry_.erase(it);
}

} // namespace replipipe
