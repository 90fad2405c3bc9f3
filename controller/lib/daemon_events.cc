#include "daemon_events.h"

#include <algorithm>

namespace replipipe
{

std::vector<ControlEvent>
EventSubscription::Wait(std::chrono::milliseconds timeout)
{
	std::unique_lock lock(mu_);
	cv_.wait_for(lock, timeout, [this] { return !queue_.empty(); });
	std::vector<ControlEvent> events(
	        std::make_move_iterator(queue_.begin()),
	        std::make_move_iterator(queue_.end()));
	queue_.clear();
	overflowed_ = false;
	return events;
}

void EventSubscription::Push(const ControlEvent &event)
{
	{
		std::lock_guard lock(mu_);
		if (overflowed_)
			return; // until the reader catches up
		if (queue_.size() >= limit_) {
			queue_.clear();
			ControlEvent lost;
			lost.type = "events_lost";
			lost.time = NowRfc3339();
			lost.message = "this subscriber fell behind; events "
			               "were dropped: re-read the status";
			queue_.push_back(std::move(lost));
			overflowed_ = true;
		} else {
			queue_.push_back(event);
		}
	}
	cv_.notify_one();
}

std::shared_ptr<EventSubscription> EventHub::Subscribe()
{
	auto sub = std::make_shared<EventSubscription>(limit_);
	std::lock_guard lock(mu_);
	for (const auto &[key, event] : pair_states_)
		sub->Push(event);
	subs_.push_back(sub);
	return sub;
}

std::vector<std::shared_ptr<EventSubscription>> EventHub::LiveSubscribers()
{
	std::vector<std::shared_ptr<EventSubscription>> live;
	std::erase_if(subs_,
	              [&live](const std::weak_ptr<EventSubscription> &w) {
		              auto sub = w.lock();
		              if (!sub)
			              return true;
		              live.push_back(std::move(sub));
		              return false;
	              });
	return live;
}

void EventHub::Publish(ControlEvent event)
{
	if (event.time.empty())
		event.time = NowRfc3339();
	std::vector<std::shared_ptr<EventSubscription>> live;
	{
		std::lock_guard lock(mu_);
		if (event.type == "pipe_deleted")
			std::erase_if(pair_states_, [&event](const auto &item) {
				return item.first.first == event.instance_id;
			});
		live = LiveSubscribers();
	}
	// Pushing outside mu_: a subscription's lock is never taken under it
	// except in Subscribe(), which does not wait.
	for (const auto &sub : live)
		sub->Push(event);
}

bool EventHub::UpdatePairState(const std::string &instance_id,
                               const std::string &name,
                               const std::string &source,
                               const std::string &target,
                               const std::string &state)
{
	ControlEvent event;
	event.type = "pair_state";
	event.time = NowRfc3339();
	event.instance_id = instance_id;
	event.name = name;
	event.source = source;
	event.target = target;
	event.state = state;
	std::vector<std::shared_ptr<EventSubscription>> live;
	{
		std::lock_guard lock(mu_);
		auto [it, inserted] =
		        pair_states_.try_emplace({instance_id, source}, event);
		if (!inserted) {
			if (it->second.state == state &&
			    it->second.target == target &&
			    it->second.name == name)
				return false;
			it->second = event;
		}
		live = LiveSubscribers();
	}
	for (const auto &sub : live)
		sub->Push(event);
	return true;
}

void EventHub::RetainPairs(const std::string &instance_id,
                           const std::vector<std::string> &keep)
{
	std::lock_guard lock(mu_);
	std::erase_if(pair_states_, [&](const auto &item) {
		return item.first.first == instance_id &&
		       std::find(keep.begin(), keep.end(), item.first.second) ==
		               keep.end();
	});
}

std::vector<ControlEvent> EventHub::PairStates() const
{
	std::lock_guard lock(mu_);
	std::vector<ControlEvent> events;
	for (const auto &[key, event] : pair_states_)
		events.push_back(event);
	return events;
}

size_t EventHub::subscriber_count() const
{
	std::lock_guard lock(mu_);
	size_t n = 0;
	for (const auto &w : subs_)
		n += w.expired() ? 0 : 1;
	return n;
}

} // namespace replipipe
