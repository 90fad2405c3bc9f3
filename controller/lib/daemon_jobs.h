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
// A job is planned for one pair: the kernel's pair serial (0 from a module
// that reports none) is in its spec and on each of its claims. When a
// PIPE_SET replaced that pair (same source, a new serial) the kernel refuses
// the claim with ESTALE: the job is obsolete and ends quietly
// (resync_stopped, no back-off), and the next SyncPipe() plans a job for
// the new pair. A job whose pair got a new serial is restarted like one
// whose settings changed.
//
// A job is made by a PairJobFactory: the daemon's copies over netlink and
// io_uring (NetlinkPairJobFactory), tests use fakes.
//
// Thread-safety: every public method may be called from any thread. mu_
// guards the job table; it is never held while a job thread is joined (a
// finishing job takes it to record its result).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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
	uint32_t rate_limit_kibps = 0; // 0 = unlimited
	// The kernel's REPLIPIPE_A_PAIR_SERIAL of the pair, passed on every
	// claim (0: none reported, claims name no serial).
	uint64_t pair_serial = 0;
	bool operator==(const PairJobSpec &) const = default;
};

// One pair's resync, run once on its own thread.
class PairJob
{
public:
	virtual ~PairJob() = default;
	// Until the pair is clean (OK), a failure, or RequestStop()
	// (ECANCELED). ESTALE: the pair was replaced since the job was
	// planned (a claim named its old serial).
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
};

// The kernel's pipe now (nullopt: the kernel has no such pipe).
using KernelPipeReader = std::function<Result<std::optional<KernelPipeStatus>>(
        const std::string &pipe_id)>;

class ResyncJobs
{
public:
	// sink receives resync_started, resync_done, resync_stopped and
	// resync_failed events, from the job threads and never under mu_.
	using EventSink = std::function<void(const ControlEvent &)>;

	// With read_kernel_pipe, SyncPipe() reads the pipe again after it
	// waited for replaced jobs to end (that can take seconds) and starts
	// jobs from that state rather than from its argument.
	ResyncJobs(PairJobFactory factory, EventSink sink,
	           ResyncJobsOptions options = {},
	           KernelPipeReader read_kernel_pipe = {});
	~ResyncJobs(); // StopAll()
	ResyncJobs(const ResyncJobs &) = delete;
	ResyncJobs &operator=(const ResyncJobs &) = delete;

	// Makes pipe's jobs match kernel (the kernel's view of that pipe).
	void SyncPipe(const PipeRecord &pipe, const KernelPipeStatus &kernel);
	// Stops every job of a pipe (deleted) or one pair (paused).
	void StopPipe(const std::string &pipe_id);
	void StopPair(const std::string &pipe_id, const std::string &source);
	// Stops every job and refuses new ones (shutdown).
	void StopAll();

	// The pair's progress: of the running job, else of the last one;
	// nullopt when no job ever ran for it.
	std::optional<ControlResync> Progress(const std::string &pipe_id,
	                                      const std::string &source) const;
	size_t running() const;

private:
	struct Job;
	struct Entry;
	using Key = std::pair<std::string, std::string>; // pipe id, source

	// Takes finished jobs and the ones matching stop out of the table
	// (requesting stop), for joining outside mu_. Caller holds mu_.
	void __TakeJobs(const std::function<bool(const Key &)> &stop,
	                std::vector<std::unique_ptr<Job>> &out);
	void __Start(Entry &entry, const PairJobSpec &spec);
	void RunJob(Job *job);
	void Finish(Job *job, const Status &status);
	static void Join(std::vector<std::unique_ptr<Job>> &jobs);

	const PairJobFactory factory_;
	const EventSink sink_;
	const ResyncJobsOptions options_;
	const KernelPipeReader read_kernel_pipe_;

	mutable std::mutex mu_;
	bool stopped_ = false;         // guarded by mu_
	std::map<Key, Entry> entries_; // guarded by mu_
};

} // namespace replipipe
