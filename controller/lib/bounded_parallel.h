// ForEachBounded: calls fn(i) for every i in [0, count), at most `width`
// calls at a time, and returns once every call has returned.
//
// For calls that mostly wait, on different objects: a resume probes each
// pair's target, which the kernel bounds at 5 s, so N dead targets one
// after the other cost 5 N s (decision 38).
//
// The calling thread is one of the workers; up to width - 1 more threads
// are started, and fewer if the system refuses one (the work is then
// shared by those that started, down to the calling thread alone). Which
// thread calls fn(i), and in which order the calls start, is unspecified.
// If a call throws, the calls not started yet are skipped, and once those
// in progress have returned the first exception is rethrown to the caller
// (rather than ending the process from a helper thread).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace replipipe
{

template <typename Fn>
void ForEachBounded(size_t count, size_t width, const Fn &fn)
{
	std::atomic<size_t> next{0};
	std::mutex failure_mu;
	std::exception_ptr failure; // guarded by failure_mu
	auto drain = [&] {
		try {
			for (size_t i = next++; i < count; i = next++)
				fn(i);
		} catch (...) {
			next = count; // nobody starts another call
			std::lock_guard lock(failure_mu);
			if (!failure)
				failure = std::current_exception();
		}
	};
	{
		std::vector<std::jthread> helpers;
		const size_t extra =
		        std::min(count, std::max<size_t>(width, 1)) -
		        std::min<size_t>(count, 1);
		helpers.reserve(extra); // no reallocation once threads run
		for (size_t k = 0; k < extra; ++k) {
			try {
				helpers.emplace_back(drain);
			} catch (const std::system_error &) {
				break; // fewer workers; the rest still drain
			}
		}
		drain();
	} // the helpers join here
	if (failure)
		std::rethrow_exception(failure);
}

} // namespace replipipe
