// PipeService: CreateOrModifyReplicationPipe, delete, list, status and the
// start-up reconciliation, over the kernel (KernelApi), the store (Store)
// and the endpoint checks (EndpointProbe). The daemon owns one.
//
// Every mutating call runs, in this order (DESIGN.md "publish last"):
//   1. parse and validate every parameter (nothing locked)
//   2. take the pipe's lock, waiting at most options.busy_timeout (else
//      ReturnValue 4096 Busy)
//   3. look the pipe up again, check cross-pipe rules (a backstore in one
//      pipe, a target in one pair and no backstore's primary; devices
//      compared by st_rdev, whatever path names them) and reserve the
//      endpoints so that a concurrent call on another pipe cannot take them
//   4. verify the new pairs' endpoints
//   5. push to the kernel (SetPipe / DeletePipe)
//   6. write the store; when that fails, undo the kernel change
// so that a call that does not return 0 changes nothing. Delete writes the
// store before the kernel instead: re-creating a deleted kernel pipe would
// lose its pairs' state, rewriting the store loses nothing.
//
// A create or delete also journals its intent in the store (decision 48):
// a create saves its record marked pending-create before step 5 and clears
// the mark in step 6 (or removes the record when the kernel refused); a
// delete saves the record marked pending-delete before step 5 and removes
// it once the kernel let go of the pipe. A daemon killed in between leaves
// the mark, and Reconcile() settles it at the next start: a create rolled
// back, a delete finished. A call that can neither finish nor undo leaves
// it too; the daemon's periodic refresh settles those (SettleLeftovers()).
// Records marked pending are no pipes to callers (list, status, resolve
// and push skip them) but keep their endpoints.
//
// ReturnValue mapping (docs/method.md has the full table):
//   1 Goal asks for something valid but not offered (goal.h)
//   2 the store could not be written (disk full, read-only, I/O error), or
//     the service was not loaded
//   3 the kernel answered ETIMEDOUT (or a probe did)
//   4 the kernel refused, or peer verification failed (endpoint_check.h)
//   5 malformed or inconsistent parameters, unknown pipe
//   4096 the pipe's lock was not had within busy_timeout
//
// Thread-safety: every public method may be called from any thread. mu_
// guards the in-memory pipes, the reservations and the lock table; it is
// never held across a kernel call or an endpoint probe, but it is held
// across a store write, which keeps the file's snapshots in order.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "endpoint_check.h"
#include "host.h"
#include "iscsi_targets.h"
#include "kernel_api.h"
#include "method.h"
#include "model.h"
#include "owed_logouts_file.h"
#include "status.h"
#include "store.h"

namespace replipipe
{

struct PipeServiceOptions {
	// How long a call waits for a pipe another call holds (then Busy).
	std::chrono::milliseconds busy_timeout{5000};
	// How long Reconcile() waits, as a whole, for the stored pipes whose
	// targets need a connection (iscsi://) to be connected and pushed
	// (decision 59). Each connection may take the connector's bound
	// (IscsiOptions::login_bound, 30 s) and a peer down at boot takes all
	// of it: the daemon must still open its socket and report READY=1
	// well within systemd's start timeout (90 s), whatever the number of
	// dead peers. The pipes not done by then are reconciled in the
	// background as their peers answer.
	std::chrono::milliseconds peer_wait{10000};
	// The kernel's boot id, which owed-logouts.json is kept for
	// (OwedLogoutsFile); tests point it at a file of their own.
	std::string boot_id_path = "/proc/sys/kernel/random/boot_id";
};

// A stored pipe with what the kernel says about it.
struct PipeView {
	PipeRecord record;
	std::string reference; // CIM_NetworkPipe.InstanceID="replipipe:<uuid>"
	// nullopt: the kernel has no such pipe, or could not be asked
	// (kernel_error says why).
	std::optional<KernelPipeStatus> kernel;
	std::string kernel_error;
};

// What PipeService::PushIfNeeded() did.
enum class PushOutcome {
	kPushed,    // the pipe is in the kernel now
	kReplaced,  // the kernel's differing definition is the stored one now
	kNotNeeded, // in the kernel as stored already, or no longer stored
	kBusy,      // a control call holds the pipe: try again later
};

class PipeService
{
public:
	// The references must outlive the service.
	PipeService(KernelApi &kernel, Store &store, EndpointProbe &probe,
	            HostIdentity host, PipeServiceOptions options = {});

	// Stops the background reconciliation of Reconcile() and waits for
	// it: for the connection in progress, if any (the connector bounds
	// it), not for those not started.
	~PipeService();
	PipeService(const PipeService &) = delete;
	PipeService &operator=(const PipeService &) = delete;

	// Reads the store. Must succeed before any other call (they return
	// ReturnValue 2 / an error otherwise); a corrupt store is reported
	// here and the daemon must not run.
	Status Load();

	// Settles the records a killed daemon left marked pending (a create
	// is rolled back, a delete finished: PIPE_DEL if the kernel has the
	// pipe, then the record leaves the store), pushes to the kernel the
	// stored pipes it lacks (every pair resyncs in full), adopts the pipes
	// both know (the kernel keeps its pairs' state; a kernel definition
	// that differs from the store is replaced by the stored one), and
	// reports the pipes only the kernel knows without touching them.
	// Returns one line per action or finding, in store order.
	//
	// A pipe whose targets need a connection (SetTargetConnector()) is
	// connected before it is pushed or compared (docs/iscsi.md), on a
	// thread of its own (up to kPeerConnectsAtOnce at a time), while the
	// other pipes are reconciled on the caller's; the call waits for
	// those connections at most options.peer_wait as a whole, and
	// reports a pipe not done by then as waiting for its peers. Its
	// thread goes on: it pushes or compares the pipe once the peers
	// answer and logs what it did ("reconcile: ..."), or gives up at the
	// connector's bound, and PipePusher tries again. A stored definition
	// that the kernel refused to take in place of one that differs is
	// tried again too (PipesToRepair(), PushIfNeeded()).
	Result<std::vector<std::string>> Reconcile();
	// Writes the store again when a failed save could not put the old
	// content back (the file may hold a change its caller was told
	// failed, which the next start would apply); nothing to do otherwise.
	// The daemon calls it at every refresh until it succeeds.
	Status RewriteStaleStore();
	// Connections to peers that Reconcile() runs at once.
	static constexpr size_t kPeerConnectsAtOnce = 16;
	// The background reconciliation starts no more connections or
	// pushes (the daemon is stopping); the destructor waits for it.
	void BeginShutdown() { background_stop_.request_stop(); }
	// One record marked pending, settled or not (SettleLeftovers()).
	struct Settled {
		std::string uuid;
		std::string line;  // what was done, or why not
		bool done = false; // the record left the store
		bool busy = false; // its pipe's lock was not had within wait
	};
	// Settles the records marked pending that no call in flight carries:
	// those a killed daemon left, and those of a call that could neither
	// finish nor undo its kernel change (decisions 48, 54): PIPE_DEL
	// (ENOENT is fine), then the record leaves the store, then the
	// sessions to its iSCSI targets go. wait: for each pipe's lock; stop
	// ends it between two records. Reconcile() does this first; the
	// daemon does it after its refreshes while it runs. Then, unless
	// stopped, it tries again the logouts that failed (OwedLogouts()).
	std::vector<Settled> SettleLeftovers(std::chrono::milliseconds wait,
	                                     const std::stop_token &stop = {});
	// Whether SettleLeftovers() has records to settle or logouts to try
	// again now.
	bool HasLeftovers() const;
	// The targets whose session a logout failed to end (iscsid not
	// running, say), not ended since: SettleLeftovers() tries that
	// session again (RetryOwedLogouts()) until it ends, or a stored or
	// pending pipe's target uses it. Kept in owed-logouts.json too, so
	// that a daemon started later in the same boot owes them still
	// (Load(); decision 102).
	std::vector<std::string> OwedLogouts() const;
	// Pushes the stored pipe uuid to the kernel if the kernel lacks it
	// (every pair resyncs in full): what Reconcile() does for a pipe it
	// could not push at start-up (a target or backstore that was not
	// there yet, a peer not reachable yet). If the kernel has it and it
	// is one of PipesToRepair(), pushes the stored definition in place
	// of the kernel's when they still differ (pairs kept in both keep
	// their state). An error says why the push failed (PipePusher tries
	// again later).
	Result<PushOutcome> PushIfNeeded(const std::string &uuid);
	// The stored pipes whose kernel definition differed from the store's
	// and that Reconcile() could not replace (the kernel refused, e.g.
	// EBUSY while a removed pair's writes drain, decision 53) or not
	// compare, and those of a modify that failed and whose undo failed
	// too: PushIfNeeded() tries them until the kernel has the stored
	// definition.
	std::set<std::string> PipesToRepair() const;

	// The CIM method (method.h, DESIGN.md).
	MethodOutcome CreateOrModify(const CreateOrModifyCall &call);
	// pipe: as ResolvePipe(). On success replication_pipe holds the
	// deleted pipe's reference.
	MethodOutcome Delete(const std::string &pipe);

	// The UUID of the pipe text names: a CIM_NetworkPipe reference, its
	// InstanceID, the bare UUID, or a PipeElementName that exactly one
	// pipe has. Errors: ENOENT for no such pipe, EINVAL for a malformed
	// reference or an ambiguous name (the message lists the matches).
	// Either maps to ReturnValue 5.
	Result<std::string> ResolvePipe(const std::string &text) const;

	// The stored pipes, in creation order.
	std::vector<PipeRecord> ListPipes() const;
	Result<PipeRecord> GetPipe(const std::string &text) const;
	// Stored pipes (all, or the one pipe names) merged with the kernel's
	// status. Errors only for a pipe that cannot be resolved.
	Result<std::vector<PipeView>>
	Describe(const std::optional<std::string> &pipe = std::nullopt);

	// Target endpoints that are no local device (iscsi://, docs/iscsi.md)
	// are connected before their pair is verified, given to the kernel as
	// the connector's device, and disconnected when no pair uses them.
	// nullptr (the default): none. Set before Reconcile(); not owned,
	// and must outlive the service (Reconcile()'s connections may go on
	// until its destructor).
	// Tells it the sessions whose logout is owed (Adopt()).
	void SetTargetConnector(TargetConnector *connector);
	// The record with each target as the kernel knows it (the resync
	// jobs compare and open those).
	PipeRecord ForKernel(const PipeRecord &record);
	// The peer of a connector's target (status), else nullopt.
	std::optional<PeerView> DescribePeer(const std::string &target);

	// Pipes whose lock a call holds or waits for now (tests: the table
	// keeps no entry for pipes nobody uses).
	size_t pipe_lock_entries() const
	{
		std::lock_guard<std::mutex> lock(mu_);
		return pipe_locks_.size();
	}

private:
	void MarkForRepair(const std::string &uuid);
	// Target connector hooks (iscsi_pipe_service.cc).
	// *unresolved: why each URL target has no device for the kernel (no
	// session, and the kernel mirrors that pair to none, or to a device
	// that is not the target's disk); such a pair keeps its URL in the
	// spec, which must then not reach the kernel (it would refuse it).
	// *kept_without_device (if given): a URL target without a device now
	// keeps the device the kernel mirrors its pair to (a lost session's
	// disk): the pipe is not as stored until its peer gives a disk again.
	KernelPipeSpec KernelSpec(const PipeRecord &record,
	                          std::string *unresolved,
	                          bool *kept_without_device = nullptr);
	// held: the devices the pipe's kernel pairs hold (HeldByPipe()).
	MethodOutcome ConnectAndVerify(const std::string &uuid,
	                               const std::vector<PairRecord> &pairs,
	                               const std::set<uint64_t> &held,
	                               std::vector<std::string> *made);
	// Logs out the sessions of targets (of pipe uuid) that no other pipe
	// uses (TargetsInUse()). Those whose logout fails are owed
	// (owed_logouts_).
	void DropConnections(const std::string &uuid,
	                     const std::vector<std::string> &targets);
	// One try of each owed logout whose target no call in flight holds,
	// holding the target meanwhile (a call that wants it gets Busy, as
	// during a delete). stop ends it between two.
	void RetryOwedLogouts(const std::stop_token &stop);
	// Owes target's logout of session, for why; logged as a warning once
	// per reason. Caller holds mu_.
	void OweLogoutLocked(const std::string &target,
	                     const std::string &session,
	                     const std::string &why);
	// Writes owed_logouts_ to owed_file_; a failure is logged (the debts
	// stay owed in memory). Caller holds mu_.
	void SaveOwedLogoutsLocked();
	// Takes the debts owed_file_ holds from a daemon of this boot.
	// Caller holds mu_.
	void LoadOwedLogoutsLocked();
	// A stored pipe's or a record's marked pending. Caller holds mu_.
	bool IsStoredTargetLocked(const std::string &target) const;
	std::string ConnectStored(const PipeRecord &record);
	// Whether a target of record needs the connector.
	bool NeedsConnection(const PipeRecord &record) const;

	// Reconcile() of one stored pipe, under its lock: its lines for the
	// report. listed: the kernel's pipe in the listing Reconcile() made;
	// nullptr: asked after the connections, which may end long after
	// that listing.
	std::vector<std::string>
	ReconcileOne(const PipeRecord &listed_record,
	             const std::optional<KernelPipeStatus> *listed,
	             const std::stop_token &stop);
	// The pipes one Reconcile() connects in the background.
	struct PeerRun;
	// Starts up to kPeerConnectsAtOnce threads for run; false when none
	// could start.
	bool StartPeerWorkers(const std::shared_ptr<PeerRun> &run);
	// Reconciles run's pipes one after the other until none is left.
	void PeerWorker(PeerRun &run, const std::stop_token &stop);
	// The targets other pipes use, whose sessions must stay: the stored
	// pipes', those of records marked pending and those reserved by calls
	// in flight, except pipe uuid's own pending record and reservation
	// (a failed call must not keep the sessions it made).
	std::vector<std::string> TargetsInUse(const std::string &uuid) const;
	TargetConnector *connector_ = nullptr;

	struct Request;
	class Reservation;
	class PipeLock;

	// Device numbers (st_rdev) by endpoint, 0 for none or unknown: a
	// target path's device (a connector's target: the disk it is
	// connected as, if it is), a source backstore's primary device. Two
	// names may denote one device (symlinks, /dev/disk/by-*, an iscsi://
	// URL and its disk), so the cross-pipe rules compare these, not only
	// the strings.
	using DeviceNumbers = std::map<std::string, uint64_t>;
	// The devices of the call's endpoints and of every stored or
	// reserved one, each resolved once (probes; mu_ not held).
	DeviceNumbers ResolveDevices(const Request &req);
	// Takes what ResolveDevices() found into devices_, and forgets the
	// endpoints nobody stores or reserves any more.
	void RememberDevicesLocked(const DeviceNumbers &devs);
	// The endpoints of the stored pipes and of the calls in flight (both
	// sets may be the same).
	void CollectEndpointsLocked(std::set<std::string> *targets,
	                            std::set<std::string> *sources) const;
	uint64_t DeviceLocked(const std::string &endpoint) const;
	// The pipe's kernel pairs by the device of their targets (the kernel
	// holds those open exclusively).
	std::map<uint64_t, PairRecord> HeldByPipe(const KernelPipeStatus &pipe);

	Result<Request> ParseCall(const CreateOrModifyCall &call) const;
	// Puts the kernel back as it was before a failed call: old again, or
	// no pipe when there was none (old is nullopt).
	Status UndoKernel(const std::string &uuid,
	                  const std::optional<PipeRecord> &old);
	// Writes the store with pipe uuid as record (nullopt: without it),
	// marked pending as given. On success pipes_ and pending_ hold what
	// was written; on failure they are unchanged and so, as far as a
	// second write can, is the file: when that second write fails too,
	// store_stale_ says so (RewriteStaleStore()). A settled record that
	// is not among the pipes goes to index at (where a delete that failed
	// took it from), else last. Caller holds mu_.
	Status SaveWith(const std::string &uuid,
	                const std::optional<PipeRecord> &record,
	                PendingOp pending = PendingOp::kNone,
	                std::optional<size_t> at = std::nullopt);
	// Removes the pending record of uuid from the store; "" when done,
	// else a note for the caller's message (the record stays, and
	// SettleLeftovers() tries again).
	std::string DropPendingRecord(const std::string &uuid);
	// Settles one record left pending (SettleLeftovers()).
	Settled SettlePending(const StoreEntry &entry,
	                      std::chrono::milliseconds wait);
	const PipeRecord *FindLocked(const std::string &uuid) const;

	KernelApi &kernel_;
	Store &store_;
	EndpointProbe &probe_;
	const HostIdentity host_;
	const PipeServiceOptions options_;

	mutable std::mutex mu_;
	bool loaded_ = false; // guarded by mu_
	// A failed save may have renamed its file into place, and writing
	// pipes_ and pending_ back failed too: the file may hold a change
	// its caller was told failed. guarded by mu_
	bool store_stale_ = false;
	std::vector<PipeRecord> pipes_; // guarded by mu_; what the store holds
	// The records the store holds marked pending, in store order (after
	// pipes_ in the file). Those in carried_ belong to a call in flight,
	// whose Reservation has their endpoints; the others were left by a
	// killed daemon or a failed undo, and take their endpoints until
	// SettleLeftovers() settles them. Both guarded by mu_.
	std::vector<StoreEntry> pending_;
	std::set<std::string> carried_;
	// A logout that failed: of which session, and why.
	struct OwedLogout {
		std::string session; // "session3"
		std::string why;
	};
	// Target -> its owed logout (OwedLogouts()); guarded by mu_.
	std::map<std::string, OwedLogout> owed_logouts_;
	const OwedLogoutsFile owed_file_; // their copy on disk
	// Its last write failed: written again at the next refresh
	// (HasLeftovers()). guarded by mu_
	bool owed_file_stale_ = false;
	// Endpoints taken by calls in flight -> UUID of the pipe they are for.
	std::map<std::string, std::string> reserved_sources_; // guarded by mu_
	std::map<std::string, std::string> reserved_targets_; // guarded by mu_
	// Their devices: target device -> UUID; guarded by mu_.
	std::map<uint64_t, std::string> reserved_devices_;
	// The reserved targets as given (URLs): TargetIdentity -> target;
	// guarded by mu_.
	std::map<std::string, std::string> reserved_target_urls_;
	// Notified when a call's reservations end (with mu_): a call that
	// wants an endpoint another call is adding waits for it, within the
	// busy time-out.
	std::condition_variable reservations_released_;
	// The devices of the stored and reserved endpoints as the latest call
	// resolved them, so that a call also compares by device with a pipe
	// that another call stored after this one resolved; guarded by mu_.
	DeviceNumbers devices_;
	// The lock of each pipe a call holds or waits for (PipeLock); guarded
	// by mu_. References are taken under mu_ only, so an entry whose
	// use_count() is 1 under mu_ has no user and is removed.
	std::map<std::string, std::shared_ptr<std::timed_mutex>> pipe_locks_;
	// PipesToRepair(); guarded by mu_. An id leaves it when its pipe
	// leaves the store or PushIfNeeded() finds the kernel as stored.
	std::set<std::string> to_repair_;
	// Reconcile()'s background connections: their threads (guarded by
	// mu_; joined by the destructor) and what tells them to stop.
	std::vector<std::thread> peer_workers_;
	std::stop_source background_stop_;
};

} // namespace replipipe
