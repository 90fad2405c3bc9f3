// EventHub: fans the daemon's events (kernel notifications, pair state
// changes, resync jobs) out to the `events` subscribers of the control
// socket, and remembers the latest state of every pair so that a new
// subscriber starts with a snapshot instead of waiting for the next change.
//
// A subscriber that does not keep up loses events: its queue is bounded,
// and on overflow the queue is replaced by one "events_lost" event (the
// subscriber should re-read the status).
//
// Thread-safety: every method may be called from any thread; mu_ guards the
// pair states and the subscriber list, each subscription has its own lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "control_protocol.h"

namespace replipipe
{

class EventSubscription
{
public:
	explicit EventSubscription(size_t limit) : limit_(limit) {}
	EventSubscription(const EventSubscription &) = delete;
	EventSubscription &operator=(const EventSubscription &) = delete;

	// Events queued so far, waiting up to timeout for the first one.
	std::vector<ControlEvent> Wait(std::chrono::milliseconds timeout);

	// Called by the hub.
	void Push(const ControlEvent &event);

private:
	const size_t limit_;
	std::mutex mu_;
	std::condition_variable cv_;
	std::deque<ControlEvent> queue_; // guarded by mu_
	bool overflowed_ = false;        // guarded by mu_
};

class EventHub
{
public:
	explicit EventHub(size_t queue_limit = 4096) : limit_(queue_limit) {}
	EventHub(const EventHub &) = delete;
	EventHub &operator=(const EventHub &) = delete;

	// A new subscription whose queue starts with one "pair_state" event
	// per known pair. Dropping the pointer unsubscribes.
	std::shared_ptr<EventSubscription> Subscribe();

	// Sends event to every subscriber (time filled in when empty). A
	// "pipe_deleted" event also forgets that pipe's pairs.
	void Publish(ControlEvent event);

	// Records a pair's state; publishes a "pair_state" event when the
	// pair is new or its state changed. Returns whether it published.
	bool UpdatePairState(const std::string &instance_id,
	                     const std::string &name, const std::string &source,
	                     const std::string &target,
	                     const std::string &state);
	// Forgets pairs of instance_id whose source is not in keep (pairs
	// removed from a pipe), without publishing.
	void RetainPairs(const std::string &instance_id,
	                 const std::vector<std::string> &keep);
	// The latest state of every known pair, as pair_state events.
	std::vector<ControlEvent> PairStates() const;

	size_t subscriber_count() const;

private:
	using PairKey = std::pair<std::string, std::string>; // id, source

	std::vector<std::shared_ptr<EventSubscription>> LiveSubscribers();

	const size_t limit_;
	mutable std::mutex mu_;
	std::map<PairKey, ControlEvent> pair_states_;        // guarded by mu_
	std::vector<std::weak_ptr<EventSubscription>> subs_; // guarded by mu_
};

} // namespace replipipe
