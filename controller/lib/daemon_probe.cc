// DaemonService's probe of Degraded pairs (--probe-interval, RequestProbe()):
// a pair whose target answers again is resumed (PAIR_SET Syncing, which the
// kernel bounds at 5 s when the target does not answer).
//
// The pairs are probed kResumesAtOnce at a time, across pipes, on the probe
// channel: one at a time, a round over 256 dead targets took 21 minutes, in
// which no pair that came back was resumed (decision 44). A batch holds its
// pipes' run-state locks, so a pause or resume of one of them waits for one
// batch (5 s) at most, and the pairs' states are read again once the locks
// are held: a pair paused since the listing stays Paused.
#include "daemon_service.h"

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "bounded_parallel.h"
#include "log.h"

namespace replipipe
{

size_t DaemonService::ProbeDegraded(const std::stop_token &stop)
{
	auto listed = kernel_.ListPipes();
	if (!listed.ok())
		return 0;
	const std::vector<PipeRecord> records = pipes_.ListPipes();
	std::vector<DegradedPair> degraded;
	for (const PipeRecord &record : records) {
		auto kernel =
		        std::find_if(listed->begin(), listed->end(),
		                     [&record](const KernelPipeStatus &k) {
			                     return k.id == record.instance_id;
		                     });
		if (kernel == listed->end())
			continue;
		for (const PairRecord &pr : record.pairs) {
			const KernelPairStatus *kp =
			        kernel->FindPair(pr.source);
			if (kp && kp->state == PairState::kDegraded)
				degraded.push_back({&record, &pr});
		}
	}
	size_t resumed = 0;
	const std::span<const DegradedPair> all(degraded);
	for (size_t first = 0; first < all.size() && !stop.stop_requested();
	     first += kResumesAtOnce)
		resumed += ProbeBatch(
		        all.subspan(first, std::min(kResumesAtOnce,
		                                    all.size() - first)),
		        stop);
	return resumed;
}

size_t DaemonService::ProbeBatch(std::span<const DegradedPair> batch,
                                 const std::stop_token &stop)
{
	// The batch's pipes, locked in one order (std::set): this is the only
	// place that holds more than one.
	std::set<std::string> pipe_ids;
	for (const DegradedPair &d : batch)
		pipe_ids.insert(d.record->instance_id);
	std::vector<std::unique_ptr<KeyedLock::Hold>> holds;
	for (const std::string &id : pipe_ids)
		holds.push_back(
		        std::make_unique<KeyedLock::Hold>(run_state_, id));

	// Again now that no pause or resume of these pipes runs: one since
	// the listing is not undone here. A pipe the kernel does not answer
	// for is asked again at the next probe.
	std::map<std::string, KernelPipeStatus> now;
	for (const std::string &id : pipe_ids) {
		auto got = kernel_.GetPipe(id);
		if (got.ok() && *got)
			now.emplace(id, std::move(**got));
	}
	std::vector<const DegradedPair *> still;
	for (const DegradedPair &d : batch) {
		auto it = now.find(d.record->instance_id);
		if (it == now.end())
			continue;
		const KernelPairStatus *kp =
		        it->second.FindPair(d.pair->source);
		if (kp && kp->state == PairState::kDegraded)
			still.push_back(&d);
	}

	// Not probed (nullopt): the daemon is stopping.
	std::vector<std::optional<Status>> results(still.size());
	ForEachBounded(still.size(), kResumesAtOnce, [&](size_t i) {
		if (stop.stop_requested())
			return;
		results[i] = probe_kernel_.SetPairState(
		        still[i]->record->instance_id, still[i]->pair->source,
		        PairState::kSyncing);
	});
	holds.clear();

	size_t resumed = 0;
	std::set<std::string> changed;
	for (size_t i = 0; i < still.size(); ++i) {
		if (!results[i])
			continue;
		const PipeRecord &record = *still[i]->record;
		const PairRecord &pr = *still[i]->pair;
		ControlEvent event;
		event.type = "probe";
		event.instance_id = InstanceIdOf(record);
		event.name = record.name;
		event.source = pr.source;
		event.target = pr.target;
		if (results[i]->ok()) {
			LogNotice() << "probe: pipe " << record.instance_id
			            << " pair " << pr.source
			            << ": target answers, resumed";
			event.state = "resumed";
			event.message = "target answers; resyncing the dirty "
			                "regions";
			changed.insert(record.instance_id);
			++resumed;
		} else {
			LogInfo() << "probe: pipe " << record.instance_id
			          << " pair " << pr.source << ": "
			          << results[i]->message();
			event.state = "failed";
			event.message = results[i]->message();
		}
		hub_.Publish(event);
	}
	for (const std::string &id : changed)
		RefreshPipe(id);
	return resumed;
}

} // namespace replipipe
