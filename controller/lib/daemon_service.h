// DaemonService: what replipiped does with a control request, and how it
// keeps the resync jobs and the event stream in step with the kernel.
//
//   Handle()        one request (every op but `events`, which the server
//                   streams from the EventHub) -> its reply
//   RefreshPipe()   re-reads one pipe from the kernel: records its pairs'
//                   states in the EventHub (which publishes the changes)
//                   and lets ResyncJobs start or stop jobs
//   RefreshAll()    the same for every stored pipe (start-up, a periodic
//                   tick, lost kernel events); pushes again, after a
//                   back-off, a stored pipe the kernel lacks (one that could
//                   not be pushed at start-up: a target or backstore not
//                   there yet, a peer not reachable yet), and the stored
//                   definition of one whose differing kernel definition
//                   start-up could not replace (PipeService::PipesToRepair)
//   OnKernelEvent() a notification from the kernel's events group
//   ProbeDegraded() the periodic probe (--probe-interval): resume Degraded
//                   pairs whose target answers again
//   RequestProbe()  the same on the service's probe thread; returns at once
//
// A probe of one pair can take the kernel's 5 s bound (PAIR_SET Syncing
// reads and flushes the target first), so the daemon's main loop only asks
// for one (RequestProbe()) and the service probes on a thread of its own
// (BackgroundTask), over probe_kernel: with NetlinkKernel, whose requests
// share one socket and one mutex, a probe on the main channel would hold
// every other kernel call (status, refreshes) for as long. A resume goes
// there too, for the same reason. The daemon's probe_kernel is a
// KernelPool, a socket for each request in progress, so that a probe or
// resume of one pipe does not wait for one of another pipe either, a
// resume probes up to kResumesAtOnce pairs of its pipe at a time, and the
// probe as many Degraded pairs of any pipes (daemon_probe.cc). Probes and
// pause/resume of one pipe are serialized (run_state_), and a probe looks
// at the pair's state again once it holds the pipe: a pair paused while
// the probe listed the pipes stays Paused. Modify and delete are not
// held up by a probe: a pair replaced or removed under it is either still
// mirroring (PAIR_SET Syncing changes nothing) or gone (ENOENT, reported as
// a failed probe).
//
// When a resync job ends and ResyncJobs names a pipe that waited for it (a
// job of its own held back by the one that ended: its pair's or its
// target's previous job, or the cap on jobs), the service refreshes that
// pipe at once, on a thread of its own, so that the held-back job starts
// from the kernel's state then, not seconds later at the next tick. A
// thread rather than the daemon's main loop: nothing else waits behind a
// refresh (netlink, the store's lock), and it works the same wherever the
// service runs (the unit tests' in-process daemon has no main loop).
//
// Thread-safety: every method may be called from any thread; the objects it
// uses are thread-safe themselves.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "background_task.h"
#include "control_protocol.h"
#include "daemon_events.h"
#include "daemon_jobs.h"
#include "kernel_api.h"
#include "keyed_lock.h"
#include "netlink_events.h"
#include "pipe_pusher.h"
#include "pipe_service.h"

namespace replipipe
{

struct PipeCounts {
	size_t pipes = 0;
	size_t pairs = 0;
	size_t pairs_in_sync = 0;
};

class DaemonService
{
public:
	// Pairs of one pipe a resume probes at once, and Degraded pairs a
	// probe does. Each probe may wait the kernel's 5 s bound on a dead
	// target: a pipe's 256 pairs (REPLIPIPE_MAX_PAIRS) take 256 / 16 x
	// 5 s = 80 s, inside replipipectl's 120 s (decision 34), on 16
	// netlink sockets.
	static constexpr size_t kResumesAtOnce = 16;

	// The references must outlive the service. jobs may be null (no
	// resync jobs: tests, or a daemon without the engine). probe_kernel
	// carries the probes and resumes (null: kernel); the daemon gives it
	// netlink sockets of their own (KernelPool).
	DaemonService(PipeService &pipes, KernelApi &kernel, ResyncJobs *jobs,
	              EventHub &hub, PipePusher::Options push_options = {},
	              KernelApi *probe_kernel = nullptr);
	// Stops the probe thread and the re-plans from the jobs, and waits for
	// a probe (at most the pair it is at) and a refresh in progress.
	~DaemonService();
	DaemonService(const DaemonService &) = delete;
	DaemonService &operator=(const DaemonService &) = delete;

	ControlReply Handle(const ControlRequest &request);
	// Shutdown has begun: a resume in progress probes no more pairs and
	// answers shutting_down (the server waits for the calls in progress
	// before the jobs' bound).
	void BeginShutdown() { shutting_down_ = true; }

	void RefreshPipe(const std::string &uuid);
	void RefreshAll();
	void OnKernelEvent(const KernelEvent &event);
	// Tries to resume every Degraded pair of the stored pipes (the kernel
	// probes the target first and refuses while it does not answer);
	// publishes a "probe" event per attempt. Returns how many resumed.
	// Runs on the caller's thread.
	size_t ProbeDegraded() { return ProbeDegraded(std::stop_token()); }
	// ProbeDegraded() on the probe thread; returns at once. false when a
	// probe is still going (this request is dropped).
	bool RequestProbe() { return prober_->Request(); }
	// Tests: waits until no probe is asked for or going.
	bool WaitProbeIdle(std::chrono::milliseconds timeout)
	{
		return prober_->WaitIdle(timeout);
	}

	// For sd_notify STATUS=: stored pipes, their pairs, those InSync.
	PipeCounts Counts();
	static std::string StatusText(const PipeCounts &counts);

	// A stored pipe with the kernel's view, as the protocol shows it.
	ControlPipe ToControlPipe(const PipeView &view) const;

	// Tests: waits until no push of a missing pipe is queued or running.
	bool WaitPushesIdle(std::chrono::milliseconds timeout)
	{
		return pusher_.WaitIdle(timeout);
	}
	// Tests: waits until no settling of leftovers is asked for or going.
	bool WaitSettlesIdle(std::chrono::milliseconds timeout)
	{
		return settler_->WaitIdle(timeout);
	}

private:
	ControlReply CreateOrModify(const CreateOrModifyCall &call);
	ControlReply Delete(const std::string &pipe);
	ControlReply Describe(const std::optional<std::string> &pipe);
	ControlReply SetRunState(const ControlRequest &request, bool pause);
	// Applies what read number read_no (NextRead()) found in the kernel,
	// unless a read of the pipe that started later was applied already.
	void Apply(const PipeRecord &record,
	           const std::optional<KernelPipeStatus> &kernel,
	           uint64_t read_no);
	// After a delete: no refresh that read the pipe before applies it,
	// and its jobs and events are gone.
	void Forget(const std::string &uuid);
	// RefreshAll() and OnKernelEvent() without their catch.
	void RefreshAllOnce();
	// PipeService::SettleLeftovers() for settler_, logged: a failure
	// again only when its message changes, not at every refresh.
	void SettleLeftovers(const std::stop_token &stop);
	void HandleKernelEvent(const KernelEvent &event);
	// Numbers a read of the kernel; taken before the read starts.
	uint64_t NextRead() { return ++reads_; }
	// The jobs' replan sink: queues the pipe for the replan thread.
	void QueueReplan(const std::string &uuid);
	void ReplanLoop();
	// Stops between two batches once stop is set (daemon_probe.cc).
	size_t ProbeDegraded(const std::stop_token &stop);
	// A pair the probe's listing found Degraded, and its stored pipe.
	struct DegradedPair {
		const PipeRecord *record;
		const PairRecord *pair;
	};
	// Probes up to kResumesAtOnce pairs at once, holding their pipes;
	// the pairs resumed. A call not started once stop is set is skipped.
	size_t ProbeBatch(std::span<const DegradedPair> batch,
	                  const std::stop_token &stop);

	PipeService &pipes_;
	KernelApi &kernel_;
	KernelApi &probe_kernel_; // PAIR_SET Syncing (probe, resume)
	ResyncJobs *const jobs_;
	EventHub &hub_;
	// Held by a probe of a pipe's pair and by a pause or resume of the
	// pipe, by pipe UUID.
	KeyedLock run_state_;
	// Refreshes of a pipe may run at once (the main loop, the replan
	// thread, the prober, control calls), each reading the kernel and then
	// applying it. A read that started before another's must not undo what
	// that one applied: a pause's refresh, which reads the Paused pair,
	// would be undone by a refresh that had read it Syncing a moment
	// earlier, and its job started again. So reads are numbered as they
	// start, and a pipe applies them (one at a time: applying_) only in
	// that order; older ones are dropped. A pipe no longer in the store is
	// not applied, and a delete undoes what a read applied before it
	// (Forget()), so that no read from before the delete brings the
	// pipe's jobs or events back; nothing is kept for a deleted pipe.
	std::atomic<bool> shutting_down_{false};
	std::atomic<uint64_t> reads_{0};
	KeyedLock applying_;
	std::mutex applied_mu_;
	std::map<std::string, uint64_t> applied_; // guarded by applied_mu_

	std::mutex settle_mu_;
	// Record UUID -> the failure to settle it logged last; guarded by
	// settle_mu_.
	std::map<std::string, std::string> settle_failures_;

	std::mutex replan_mu_;
	std::condition_variable replan_cv_; // replan_due_ or replan_stop_
	std::set<std::string> replan_due_;  // guarded by replan_mu_
	bool replan_stop_ = false;          // guarded by replan_mu_
	std::thread replan_thread_;         // started in the constructor

	// Pushes the stored pipes the kernel lacks or has with a definition
	// start-up could not replace (RefreshAll() tells it which); last, so
	// that its thread ends before the rest goes.
	PipePusher pusher_;
	// Runs ProbeDegraded() for RequestProbe(); made in the constructor's
	// body, reset first in the destructor.
	std::unique_ptr<BackgroundTask> prober_;
	// Runs SettleLeftovers() when a refresh finds records left pending:
	// an iSCSI logout must not hold the main loop (a PIPE_DEL holds the
	// kernel socket it shares, as a control call's does). Made after
	// prober_, reset after it.
	std::unique_ptr<BackgroundTask> settler_;
};

} // namespace replipipe
