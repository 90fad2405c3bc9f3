// KernelApi: what the controller needs from replipipe.ko, independent of how
// it is reached. The real implementation speaks generic netlink
// (netlink_client.h); unit tests use an in-memory fake with the same
// semantics as the kernel (uapi/linux/replipipe.h documents them).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include "status.h"

namespace replipipe
{

enum class Mode : uint8_t { kSynchronous = 0, kAsynchronous = 1 };
enum class FailurePolicy : uint8_t { kDegrade = 0, kFailIO = 1 };
// Values equal enum replipipe_pair_state in the uapi header.
enum class PairState : uint8_t {
	kSyncing = 0,
	kInSync = 1,
	kDegraded = 2,
	kPaused = 3
};

const char *ModeName(Mode mode);                // "Synchronous", ...
const char *FailurePolicyName(FailurePolicy p); // "Degrade", "FailIO"
const char *PairStateName(PairState state);     // "Syncing", "InSync", ...
// enum replipipe_intent_state: "" (none), "loaded", "new".
const char *IntentRecordName(uint8_t intent);

// One pair as the kernel is told it.
struct KernelPairSpec {
	std::string source; // "replipipe_<N>/<name>"
	std::string target; // absolute block device path
	bool assume_clean = false;
};

// One pipe as the kernel is told it (PIPE_SET replaces the whole pipe).
struct KernelPipeSpec {
	std::string id; // UUID text
	std::string name;
	Mode mode = Mode::kSynchronous;
	FailurePolicy failure_policy = FailurePolicy::kDegrade;
	uint32_t max_lag_kib = 65536;
	uint32_t region_kib = 64;
	std::vector<KernelPairSpec> pairs;
};

// One pair as the kernel reports it.
struct KernelPairStatus {
	std::string source;
	std::string target;
	PairState state = PairState::kSyncing;
	uint64_t regions = 0;
	uint64_t dirty_regions = 0;
	uint64_t writes_mirrored = 0;
	uint64_t bytes_mirrored = 0;
	uint64_t target_errors = 0;
	uint64_t lag_bytes = 0;
	uint64_t source_bytes = 0;
	// The source's write-intent record (enum replipipe_intent_state):
	// 0 none, 1 the pair's first bitmap came from it, 2 bound anew.
	uint8_t intent = 0;
	uint64_t intent_loaded_regions = 0; // dirty regions the record gave
	uint64_t intent_marked_regions = 0; // regions marked in it now
	// REPLIPIPE_A_PAIR_SERIAL: never the same for two pairs the module
	// made (a PIPE_SET that replaces a pair gives it a new one); 0 when
	// the module does not report it (older modules).
	uint64_t serial = 0;
	// The block devices the module holds open: the source's primary and
	// the target (REPLIPIPE_A_PAIR_SRC_DEV, _TGT_DEV); 0 when not
	// reported (older modules).
	dev_t source_dev = 0;
	dev_t target_dev = 0;
};

struct KernelPipeStatus {
	std::string id;
	std::string name;
	Mode mode = Mode::kSynchronous;
	FailurePolicy failure_policy = FailurePolicy::kDegrade;
	uint32_t max_lag_kib = 0;
	uint32_t region_kib = 0;
	std::vector<KernelPairStatus> pairs;

	// The pair whose source is `source`; nullptr when there is none.
	const KernelPairStatus *FindPair(const std::string &source) const
	{
		for (const KernelPairStatus &pair : pairs)
			if (pair.source == source)
				return &pair;
		return nullptr;
	}
};

// Thread-safety: a single instance may be used from several threads.
// NetlinkKernel serializes the calls on its one socket; KernelPool runs each
// on a connection of its own.
class KernelApi
{
public:
	virtual ~KernelApi() = default;

	// Create or replace (REPLIPIPE_CMD_PIPE_SET). Errors carry the kernel's
	// extack text; err() is the errno (ETIMEDOUT when it did not answer).
	virtual Status SetPipe(const KernelPipeSpec &spec) = 0;
	virtual Status DeletePipe(const std::string &id) = 0;
	// nullopt when the kernel has no pipe with that id.
	virtual Result<std::optional<KernelPipeStatus>>
	GetPipe(const std::string &id) = 0;
	virtual Result<std::vector<KernelPipeStatus>> ListPipes() = 0;
	// PAIR_SET: kPaused pauses, kSyncing resumes (Paused or Degraded) once
	// a probe of the target succeeded: the probe's error if it did not
	// (EIO, ETIMEDOUT after 5 s), EBUSY if the state changed during the
	// probe. Returns once the probe has ended, or EINPROGRESS should the
	// kernel not end it within kResumeProbeBound (netlink_resume_wait.h).
	virtual Status SetPairState(const std::string &pipe_id,
	                            const std::string &source,
	                            PairState state) = 0;
};

} // namespace replipipe
