// KeyedLock: one mutual exclusion per key (a pipe's UUID), without a mutex
// kept for every key: the table holds only the keys held or waited for now.
//
//   KeyedLock locks;
//   { KeyedLock::Hold hold(locks, uuid); ... } // others with uuid wait
//
// Holds of different keys never wait for each other. Holds of one key are
// served in the order they were asked for: one that lets go and asks again
// at once (the probe of Degraded pairs, one batch after another) goes
// behind a pause already waiting, which an unordered lock let it overtake
// again and again (decision 38). Not recursive: a thread that holds a key
// and asks for it again waits forever.
//
// Thread-safety: a KeyedLock may be used from any thread; it must outlive
// its holds.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace replipipe
{

class KeyedLock
{
public:
	class Hold
	{
	public:
		// Waits until the holds asked for key before this one have
		// ended.
		Hold(KeyedLock &locks, std::string key)
		    : locks_(locks), key_(std::move(key))
		{
			std::unique_lock lock(locks_.mu_);
			// std::map: the entry stays put while others come and
			// go, and it is not erased before this ticket is
			// served.
			Tickets &tickets = locks_.tickets_[key_];
			const uint64_t mine = tickets.next++;
			locks_.released_.wait(lock, [&tickets, mine] {
				return tickets.serving == mine;
			});
		}
		~Hold()
		{
			{
				std::lock_guard lock(locks_.mu_);
				auto it = locks_.tickets_.find(key_);
				if (++it->second.serving == it->second.next)
					locks_.tickets_.erase(it);
			}
			locks_.released_.notify_all();
		}
		Hold(const Hold &) = delete;
		Hold &operator=(const Hold &) = delete;

	private:
		KeyedLock &locks_;
		const std::string key_;
	};

	// Holds of key now, held or waited for (tests).
	size_t Queued(const std::string &key) const
	{
		std::lock_guard lock(mu_);
		auto it = tickets_.find(key);
		return it == tickets_.end()
		               ? 0
		               : it->second.next - it->second.serving;
	}

private:
	// A key's holds in the order they were asked for: the one whose
	// ticket is `serving` holds it.
	struct Tickets {
		uint64_t next = 0;
		uint64_t serving = 0;
	};

	mutable std::mutex mu_;
	std::condition_variable released_;       // a hold ended
	std::map<std::string, Tickets> tickets_; // guarded by mu_
};

} // namespace replipipe
