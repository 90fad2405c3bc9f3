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
//                   there yet, a peer not reachable yet)
//   OnKernelEvent() a notification from the kernel's events group
//   ProbeDegraded() the periodic probe (--probe-interval): resume Degraded
//                   pairs whose target answers again
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

#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "control_protocol.h"
#include "daemon_events.h"
#include "daemon_jobs.h"
#include "kernel_api.h"
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
	// The references must outlive the service. jobs may be null (no
	// resync jobs: tests, or a daemon without the engine).
	DaemonService(PipeService &pipes, KernelApi &kernel, ResyncJobs *jobs,
	              EventHub &hub, PipePusher::Options push_options = {});
	// Stops taking re-plans from the jobs and waits for a refresh in
	// progress.
	~DaemonService();
	DaemonService(const DaemonService &) = delete;
	DaemonService &operator=(const DaemonService &) = delete;

	ControlReply Handle(const ControlRequest &request);

	void RefreshPipe(const std::string &uuid);
	void RefreshAll();
	void OnKernelEvent(const KernelEvent &event);
	// Tries to resume every Degraded pair of the stored pipes (the kernel
	// probes the target first and refuses while it does not answer);
	// publishes a "probe" event per attempt. Returns how many resumed.
	size_t ProbeDegraded();

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

private:
	ControlReply CreateOrModify(const CreateOrModifyCall &call);
	ControlReply Delete(const std::string &pipe);
	ControlReply Describe(const std::optional<std::string> &pipe);
	ControlReply SetRunState(const ControlRequest &request, bool pause);
	void Apply(const PipeRecord &record,
	           const std::optional<KernelPipeStatus> &kernel);
	// The jobs' replan sink: queues the pipe for the replan thread.
	void QueueReplan(const std::string &uuid);
	void ReplanLoop();

	PipeService &pipes_;
	KernelApi &kernel_;
	ResyncJobs *const jobs_;
	EventHub &hub_;

	std::mutex replan_mu_;
	std::condition_variable replan_cv_; // replan_due_ or replan_stop_
	std::set<std::string> replan_due_;  // guarded by replan_mu_
	bool replan_stop_ = false;          // guarded by replan_mu_
	std::thread replan_thread_;         // started in the constructor

	// Pushes the stored pipes the kernel lacks (RefreshAll() tells it
	// which); last, so that its thread ends before the rest goes.
	PipePusher pusher_;
};

} // namespace replipipe
