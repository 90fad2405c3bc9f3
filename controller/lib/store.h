// Store: the pipe definitions on disk, <state_dir>/pipes.json:
//   {"schema_version": 1, "pipes": [ <PipeToJson()>, ... ]}
//
// A record may carry an intent mark, "pending": "create" or "delete"
// (decision 48): written before the kernel is asked, so that a daemon that
// dies between the kernel and the store leaves a record that says what it
// was doing; PipeService::SettleLeftovers() settles it (at the next start,
// and at the refreshes of a daemon whose call left it). A
// record without the field is a pipe, as in every file written before the
// mark existed; a value this build does not know makes Load() fail.
//
// Written atomically: a temp file in the same directory (mode 0600), fsync,
// rename over pipes.json, fsync the directory. A crash at any point leaves
// either the old file or the new one, never a mix.
//
// A corrupt file or an unknown schema_version makes Load() fail with the
// path and why (line and column for JSON syntax errors). The store never
// overwrites a file it could not read: Save() refuses until a Load()
// succeeded (the daemon must stop, the admin decides).
//
// Thread-safety: Load() and Save() may be called from several threads; they
// are serialized internally.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "model.h"
#include "status.h"
#include "unique_fd.h"

namespace replipipe
{

constexpr int kStoreSchemaVersion = 1;

// What a stored record's call was in the middle of.
enum class PendingOp {
	kNone,   // a pipe
	kCreate, // saved before its create's PIPE_SET; nobody was told 0
	kDelete, // saved before its delete's PIPE_DEL
};

// One record of the file with its intent mark.
struct StoreEntry {
	PipeRecord record;
	PendingOp pending = PendingOp::kNone;
	bool operator==(const StoreEntry &) const = default;
};

class Store
{
public:
	// Where Save() may be stopped by a fault hook (tests).
	enum class SaveStep {
		kTempSynced, // temp file written and fsynced, not renamed yet
		kRenamed,    // renamed, directory not yet fsynced
	};
	// Returning an error stops Save() at that step, as a crash would
	// (the temp file is left behind). Returns Status() to go on.
	using FaultHook = std::function<Status(SaveStep)>;

	explicit Store(std::string state_dir);

	Store(const Store &) = delete;
	Store &operator=(const Store &) = delete;

	const std::string &path() const { return path_; }

	// Creates the state directory (mode 0700) when missing, and fsyncs
	// its parent directory so that the new entry is durable. An existing
	// one must be a directory of this process's user that group and
	// others cannot write (EPERM otherwise): what it holds is pushed to
	// the kernel.
	Status EnsureStateDir() const;
	// Holds <state dir>/replipiped.lock (flock, exclusive) while the
	// store lives, or fails at once (EWOULDBLOCK) when another process
	// holds it. Two daemons on one state directory would each reconcile
	// the kernel to their own view and replace each other's pipes.json;
	// the daemon takes the lock before it reads the store.
	Status LockStateDir();
	// Every stored record with its mark; an empty list when pipes.json
	// does not exist yet.
	Result<std::vector<StoreEntry>> LoadEntries();
	// Replaces the whole file with entries. *renamed (if given): the new
	// content took the file's place, whether or not the save then failed
	// (a failure before leaves the file as it was).
	Status SaveEntries(const std::vector<StoreEntry> &entries,
	                   bool *renamed = nullptr);
	// The stored pipes: LoadEntries() without the records marked pending.
	Result<std::vector<PipeRecord>> Load();
	// Replaces the whole file with pipes, none marked.
	Status Save(const std::vector<PipeRecord> &pipes);

	void SetFaultHookForTest(FaultHook hook);

private:
	const std::string dir_;
	const std::string path_;
	UniqueFd lock_fd_; // replipiped.lock, held once LockStateDir() took it
	std::mutex mu_;
	bool loaded_ = false;  // guarded by mu_; Save() needs a good Load()
	FaultHook fault_hook_; // guarded by mu_
};

// Serialization without the file system (the store uses these; so do tests).
std::string StoreEntriesDocument(const std::vector<StoreEntry> &entries);
std::string StoreDocument(const std::vector<PipeRecord> &pipes);
// where names the source in errors (a path).
Result<std::vector<StoreEntry>> ParseStoreEntries(const std::string &text,
                                                  const std::string &where);
// ParseStoreEntries() without the records marked pending.
Result<std::vector<PipeRecord>> ParseStoreDocument(const std::string &text,
                                                   const std::string &where);

} // namespace replipipe
