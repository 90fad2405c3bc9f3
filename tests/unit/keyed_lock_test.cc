// KeyedLock: one holder per key, other keys independent, holds of a key
// served in the order they were asked for, no entry left behind.
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "keyed_lock.h"

namespace replipipe
{
namespace
{

// Waits (5 s at most) until key has n holds, held or waited for.
bool WaitQueued(const KeyedLock &locks, const std::string &key, size_t n)
{
	for (int i = 0; i < 5000 && locks.Queued(key) != n; ++i)
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	return locks.Queued(key) == n;
}

TEST(KeyedLock, OtherKeysDoNotWaitAndNothingIsLeftBehind)
{
	KeyedLock locks;
	{
		KeyedLock::Hold a(locks, "a");
		KeyedLock::Hold b(locks, "b"); // would hang if "b" waited
		EXPECT_EQ(locks.Queued("a"), 1u);
		EXPECT_EQ(locks.Queued("b"), 1u);
	}
	EXPECT_EQ(locks.Queued("a"), 0u);
	EXPECT_EQ(locks.Queued("b"), 0u);
}

// The probe's pattern: a holder lets go and asks again at once while
// another thread (a pause) waits. The waiting thread goes first, every
// time: with a lock that wakes waiters to race for it, the thread that
// just let go, already running, nearly always won.
TEST(KeyedLock, AHoldAskedForAgainGoesBehindOneWaiting)
{
	for (int round = 0; round < 20; ++round) {
		KeyedLock locks;
		std::string order;
		std::mutex order_mu;
		auto note = [&](char who) {
			std::lock_guard lock(order_mu);
			order += who;
		};
		auto first = std::make_unique<KeyedLock::Hold>(locks, "pipe");
		std::thread waiter([&] {
			KeyedLock::Hold hold(locks, "pipe");
			note('W');
		});
		const bool queued = WaitQueued(locks, "pipe", 2);
		if (!queued) {
			first.reset();
			waiter.join();
			FAIL() << "round " << round
			       << ": the waiter never queued";
		}
		first.reset();
		{
			KeyedLock::Hold again(locks, "pipe");
			note('A');
		}
		waiter.join();
		EXPECT_EQ(order, "WA") << "round " << round;
		EXPECT_EQ(locks.Queued("pipe"), 0u);
	}
}

} // namespace
} // namespace replipipe
