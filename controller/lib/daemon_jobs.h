// ResyncJobs: the daemon's resync jobs, one thread per pair that is
// Syncing in the kernel.
//
// SyncPipe() is told a pipe's pairs as the kernel reports them and makes the
// jobs match: a Syncing pair gets a job (unless one runs, or the last one
// failed and its back-off has not passed), a pair that is Paused, Degraded
// or gone loses its job (an InSync pair's job is finishing and may end by
// itself). A stopped job reports its current claim Failed (the regions stay
// dirty, the next job continues from the kernel's bitmap).
//
// Nobody waits for a job to end but StopAll() and StopAllWithin()
// (shutdown; replipiped bounds its wait): a job stuck in
// I/O on a target that does not answer (an iSCSI outage) must not hold the
// caller, which is the daemon's main loop, its control threads or its
// pusher. A stopped or replaced job stays in the table, "retiring", until
// its thread has destroyed its PairJob (closed its claim channel and its
// devices; its copies have landed). While a job is live (running or
// retiring) no other job starts for its pair (pipe, source), nor for its
// target, in any pipe: a new job could find the dirty regions still claimed
// by the old one and take them for clean, and a target that moved to
// another pair (two pairs swapped targets in one modify, decision 25; a
// deleted pair's target reused) must not get the new source's copy while
// the old job's writes of the old source still land on it. Targets are the
// same when their block-device numbers are (stat(), so that two paths of
// one device match), else when their paths are. A job whose io_uring failed
// with requests still in the kernel stays live until they have completed
// (PairResync::Run() waits for them, and a RegionCopier is never destroyed
// before), for the life of the process if they never do: its pair and its
// target get no other job meanwhile.
//
// At most ResyncJobsOptions::max_running jobs are live at a time; pairs
// beyond that wait. A pipe whose job was held back (by a live job of its
// pair or target, or by the cap) is named to the replan sink when a job
// ends, for the daemon to call SyncPipe() for it again with the kernel's
// state then; nothing starts a job but SyncPipe().
//
// The slots are shared between pipes, least served first: a pipe whose
// pairs found no free slot is remembered with how many, and a pipe may take
// a free slot only when the slots left exceed what the waiting pipes with
// fewer live jobs than it ask for. Otherwise a pipe with many pairs would
// keep a small pipe waiting until its whole backlog was copied, since the
// pipe planned first after a job ends (the one whose job ended, or the
// first UUID in the daemon's replan set) took every freed slot. A pipe
// whose demand drops (it was served, paused, deleted) hands the slots it
// held back to the other waiting pipes, which are planned again.
//
// A job is planned for one pair: the kernel's pair serial (0 from a module
// that reports none) is in its spec and on each of its claims. When a
// PIPE_SET replaced that pair (same source, a new serial) the kernel refuses
// the claim with ESTALE; when it removed it (or deleted its pipe) the claim
// protocol answers ENOENT. Either way the job is obsolete and ends quietly
// (resync_stopped, no back-off), and the next SyncPipe() plans a job for
// the new pair, if any. A job whose pair got a new serial is restarted like
// one whose settings changed.
//
// A job is made by a PairJobFactory: the daemon's copies over netlink and
// io_uring (NetlinkPairJobFactory), tests use fakes. An exception from the
// factory, from a job or from starting its thread ends that job as failed
// (resync_failed, with back-off), never the daemon.
//
// A failed job (its factory's error too: a target path that names another
// device than the kernel mirrors) is also kept for status: Progress() tells
// how many failed in a row, the last one's message and when the next may
// start, until a job ends with the pair clean.
//
// Thread-safety: every public method may be called from any thread. mu_
// guards the job table; it is never held while a job thread is joined (a
// finishing job takes it to record its result), nor while a sink is called.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "control_protocol.h"
#include "kernel_api.h"
#include "model.h"
#include "resync_pair.h"
#include "status.h"

namespace replipipe
{

struct PairJobSpec {
	std::string pipe_id; // UUID
	std::string instance_id;
	std::string pipe_name;
	std::string source;
	std::string target;
	uint64_t region_bytes = 0;
	// REPLIPIPE_A_PAIR_SOURCE_BYTES: what the resync copies at most
	// (PairResyncOptions::pair_bytes). 0: not reported.
	uint64_t pair_bytes = 0;
	uint32_t rate_limit_kibps = 0; // 0 = unlimited
	// The kernel's REPLIPIPE_A_PAIR_SERIAL of the pair, passed on every
	// claim (0: none reported, claims name no serial).
	uint64_t pair_serial = 0;
	// The devices the kernel mirrors (KernelPairStatus::source_dev,
	// target_dev; 0: not reported): the copy refuses paths that name
	// others by now.
	dev_t source_dev = 0;
	dev_t target_dev = 0;
	bool operator==(const PairJobSpec &) const = default;
};

// One pair's resync, run once on its own thread.
class PairJob
{
public:
	virtual ~PairJob() = default;
	// Until the pair is clean (OK), a failure, or RequestStop()
	// (ECANCELED). ESTALE: the pair was replaced since the job was
	// planned (a claim named its old serial). ENOENT: the kernel knows
	// the pair no more (removed, its pipe deleted) or ended its claim
	// early (PairResync::Run()). Once it returns, the job writes nothing
	// more to the target: no request of its copy is left in the kernel,
	// not even one its io_uring failed to wait for.
	virtual Status Run() = 0;
	// From any thread, also while Run() is going.
	virtual void RequestStop() = 0;
	virtual ResyncProgress progress() const = 0;
};

using PairJobFactory =
        std::function<Result<std::unique_ptr<PairJob>>(const PairJobSpec &)>;

// Jobs that claim over their own NetlinkResyncChannel and copy with
// PairResync from the backstore's primary device (read from configfs under
// configfs_core) to the target.
PairJobFactory NetlinkPairJobFactory(
        std::string configfs_core = "/sys/kernel/config/target/core");

struct ResyncJobsOptions {
	// Back-off after a failed job: doubles from min to max.
	std::chrono::milliseconds min_backoff{1000};
	std::chrono::milliseconds max_backoff{60000};
	// A pair still Syncing after a job finished cleanly (written again
	// meanwhile) gets a new job no sooner than this.
	std::chrono::milliseconds rerun_delay{1000};
	// Live jobs (running or retiring) at most, over every pipe. Each has
	// a thread, a copy buffer of queue_depth x chunk_bytes (32 MiB by
	// default) and about six fds: a pipe made with 256 pairs would
	// otherwise take 8 GiB and some 1,500 fds at once. Four keep that at
	// 128 MiB and a few dozen fds, and still copy in parallel from
	// different devices; more would mostly share the same disks and
	// links. A retiring job keeps its slot: its buffer and fds are held
	// until its thread ends. 0: no limit.
	size_t max_running = 4;
	// Starts a job's thread. Empty: a std::jthread. Tests make it throw
	// as std::thread's constructor does without resources
	// (std::system_error).
	std::function<std::jthread(std::function<void()>)> start_thread{};
};

class ResyncJobs
{
public:
	// sink receives resync_started, resync_done, resync_stopped and
	// resync_failed events, from the job threads (resync_failed also from
	// SyncPipe() when a thread could not start), never under mu_.
	using EventSink = std::function<void(const ControlEvent &)>;
	// Told the pipes that should be planned again (SyncPipe()) because a
	// job ended: one of theirs was held back by it, or by the cap, or
	// the job's pair was replaced or removed. Called from the job
	// threads, never under mu_; it must not block (queue the work).
	using ReplanSink = std::function<void(const std::string &pipe_id)>;

	ResyncJobs(PairJobFactory factory, EventSink sink,
	           ResyncJobsOptions options = {});
	~ResyncJobs(); // StopAll()
	ResyncJobs(const ResyncJobs &) = delete;
	ResyncJobs &operator=(const ResyncJobs &) = delete;

	// Replaces the replan sink; once it returns, the old one is not
	// called any more (it waits for a call in progress).
	void SetReplanSink(ReplanSink sink);

	// Makes pipe's jobs match kernel (the kernel's view of that pipe):
	// stops the jobs that should not run, starts the ones that can.
	// Does not wait for any job to end.
	void SyncPipe(const PipeRecord &pipe, const KernelPipeStatus &kernel);
	// Stop every job of a pipe (deleted) or one pair (paused); do not
	// wait for them to end.
	void StopPipe(const std::string &pipe_id);
	void StopPair(const std::string &pipe_id, const std::string &source);
	// Stops every job, refuses new ones and waits until every job
	// thread has ended (shutdown).
	void StopAll();
	// The same, waiting at most bound. False when some job had not ended
	// by then (one whose I/O a target never completes: a job drains its
	// requests before it ends): it still runs, and the object must not be
	// destroyed while it does; replipiped exits instead.
	bool StopAllWithin(std::chrono::milliseconds bound);

	// The pair's progress: of the running job (running), of a retiring
	// one (not running), else of the last one. With it the jobs that
	// failed in a row since the last clean end (failures, last_error)
	// and, when none is live and SyncPipe() last found the pair Syncing,
	// the seconds until the next may start (retry_in_s). nullopt when no
	// job ever ran for the pair and none failed.
	std::optional<ControlResync> Progress(const std::string &pipe_id,
	                                      const std::string &source) const;
	// Live jobs: running, or stopped and not ended yet.
	size_t running() const;

private:
	struct Job;
	struct Entry;
	struct Target;
	using Key = std::pair<std::string, std::string>; // pipe id, source
	using Clock = std::chrono::steady_clock;
	using JobList = std::list<std::unique_ptr<Job>>;

	// A job's thread: makes and runs its PairJob, destroys it, then
	// Finish() records the end.
	void RunJob(Job *job);
	Status RunPairJob(Job *job);
	void Finish(Job *job, const Status &status);
	void Emit(const ControlEvent &event) const;

	// Caller holds mu_:
	// Starts a job for entry; an error when its thread could not start
	// (the entry is left without a job).
	Status __Start(std::map<Key, Entry>::iterator entry,
	               const PairJobSpec &spec, const Target &target);
	void __Retire(Job &job); // asks a live job to stop
	// A failed job: counts it, keeps its message, sets the back-off.
	void __Failed(Entry &entry, const Status &status,
	              Clock::time_point now);
	// What entry's job copied: of the live job, else of the last one.
	std::optional<ControlResync> __Copied(const Entry &entry) const;
	bool __TargetBusy(const Target &target) const; // a live job writes it
	size_t __Live() const;
	size_t __LiveOf(const std::string &pipe_id) const;
	// Slots other pipes, with fewer live jobs than live_of, wait for.
	size_t __SlotsAhead(const std::string &pipe_id, size_t live_of) const;
	// Records pipe_id's new demand for slots; when it dropped and slots
	// are free, moves the pipes waiting for them into wake.
	void __SetWant(const std::string &pipe_id, size_t want,
	               std::set<std::string> &wake);
	void Replan(const std::set<std::string> &pipes);
	// Moves out the ended jobs whose threads have exited: joining them
	// waits for nothing but the threads' return.
	void __TakeExited(JobList &out);
	static void Join(JobList &jobs);

	const PairJobFactory factory_;
	const EventSink sink_;
	const ResyncJobsOptions options_;

	std::mutex replan_mu_;
	ReplanSink replan_; // guarded by replan_mu_

	// Held by a job's Finish() from the moment its entry is free until
	// its end event is out, and around each resync_started: a successor
	// that starts at once cannot tell its start before that end.
	// Taken before mu_, never under it.
	std::mutex event_order_mu_;
	mutable std::mutex mu_;
	std::condition_variable ended_cv_; // a job ended (StopAll() waits)
	bool stopped_ = false;             // guarded by mu_
	std::map<Key, Entry> entries_;     // guarded by mu_
	// Every job whose thread is not joined yet, live or ended: a job
	// that ends (maybe for want of memory) leaves the table without
	// allocating. guarded by mu_
	JobList jobs_;
	// Pipes a job was held back for (by a live job of its pair or target,
	// or by the cap) since a job last ended. guarded by mu_
	std::set<std::string> waiting_;
	// Pipes whose Syncing pairs found no free slot at their last
	// SyncPipe(), with how many. guarded by mu_
	std::map<std::string, size_t> want_slot_;
};

} // namespace replipipe
