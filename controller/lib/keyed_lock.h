// KeyedLock: one mutual exclusion per key (a pipe's UUID), without a mutex
// kept for every key: the table holds only the keys that are held now.
//
//   KeyedLock locks;
//   { KeyedLock::Hold hold(locks, uuid); ... } // others with uuid wait
//
// Holds of different keys never wait for each other. Not recursive: a
// thread that holds a key and asks for it again waits forever.
//
// Thread-safety: a KeyedLock may be used from any thread; it must outlive
// its holds.
#pragma once

#include <condition_variable>
#include <mutex>
#include <set>
#include <string>

namespace replipipe
{

class KeyedLock
{
public:
	class Hold
	{
	public:
		// Waits until no other hold has key.
		Hold(KeyedLock &locks, std::string key)
		    : locks_(locks), key_(std::move(key))
		{
			std::unique_lock lock(locks_.mu_);
			locks_.released_.wait(lock, [this] {
				return !locks_.held_.count(key_);
			});
			locks_.held_.insert(key_);
		}
		~Hold()
		{
			{
				std::lock_guard lock(locks_.mu_);
				locks_.held_.erase(key_);
			}
			locks_.released_.notify_all();
		}
		Hold(const Hold &) = delete;
		Hold &operator=(const Hold &) = delete;

	private:
		KeyedLock &locks_;
		const std::string key_;
	};

private:
	std::mutex mu_;
	std::condition_variable released_; // a key left held_
	std::set<std::string> held_;       // guarded by mu_
};

} // namespace replipipe
