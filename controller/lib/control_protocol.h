// The control protocol between replipipectl (and scripts) and replipiped.
//
// Transport: a Unix stream socket. The client sends one request, a JSON
// object on one line ending in '\n'; the daemon answers with one reply line
// and closes the connection. The `events` request is the exception: after
// its reply line the daemon streams one event per line until either side
// closes.
//
// Request:  {"v": 1, "op": "<op>", ...op's fields}
//   create_or_modify  the CIM method's parameters under their CIM names:
//                     "PipeElementName", "SourceSystem", "TargetSystem",
//                     "Goal" (strings), "SourceEndpoint", "TargetEndpoint"
//                     (arrays of strings), "ReplicationPipe" (string).
//                     A NULL parameter is an absent key or JSON null; an
//                     empty array is an empty set, which is not NULL.
//   delete            "pipe": PIPE
//   list              -
//   status            "pipe": PIPE (optional: all pipes when absent)
//   pause, resume     "pipe": PIPE, "pair": source (optional: every pair)
//   events            -
//   PIPE is a CIM_NetworkPipe reference, its InstanceID, or a unique
//   PipeElementName; the daemon resolves it.
//
// Reply: {"ok": bool, "error": "..." (when !ok), "code": "..." (optional),
//         "ReturnValue": N (create_or_modify and delete, and any other op
//         whose failure maps onto one), "ReplicationPipe": ref,
//         "pipes": [...] (list, status)}
// Event: {"event": "<type>", "time": "...", "instance_id": ..., ...}
//
// Every size is bounded: a request or event line longer than kMaxLineBytes
// is an error, and so is a reply longer than kMaxReplyBytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "method.h"
#include "status.h"

namespace replipipe
{

inline constexpr int kControlProtocolVersion = 1;
inline constexpr size_t kMaxLineBytes = 1 << 20;
// A reply of list or status grows with the host's pairs (about 500 bytes
// each): 1 MiB stopped near 2,000 of them; 64 MiB holds over 100,000.
inline constexpr size_t kMaxReplyBytes = 64 << 20;
inline constexpr const char *kDefaultSocketPath =
        "/run/replipipe/replipiped.sock";
inline constexpr const char *kDefaultStateDir = "/var/lib/replipipe";
inline constexpr const char *kControlGroup = "replipipe";

enum class ControlOp {
	kCreateOrModify,
	kDelete,
	kList,
	kStatus,
	kPause,
	kResume,
	kEvents,
};

const char *ControlOpName(ControlOp op); // "create_or_modify", ...
std::optional<ControlOp> ParseControlOp(std::string_view name);

struct ControlRequest {
	ControlOp op = ControlOp::kList;
	CreateOrModifyCall call;         // kCreateOrModify only
	std::optional<std::string> pipe; // delete, status, pause, resume
	std::optional<std::string> pair; // pause, resume: one pair's source
};

// Machine-readable error categories in a reply's "code".
inline constexpr const char *kCodePermissionDenied = "permission_denied";
inline constexpr const char *kCodeBadRequest = "bad_request";
inline constexpr const char *kCodeNotFound = "not_found";
inline constexpr const char *kCodeBusy = "busy";
inline constexpr const char *kCodeInternal = "internal";
inline constexpr const char *kCodeShuttingDown = "shutting_down";

struct ControlResync {
	uint64_t done_bytes = 0;
	uint64_t total_bytes = 0;
	uint64_t rate_bytes_per_s = 0;
	bool running = false; // a resync job is copying this pair now
	// The pair's jobs that failed in a row (a running one not counted
	// yet): 0 again once a job ends with the pair clean. A job stopped
	// (pause, new settings) or made obsolete (pair replaced) changes
	// nothing. An older daemon sends none: 0.
	uint32_t failures = 0;
	// The last failure's message while failures > 0, else "". ({}: no
	// -Wmissing-field-initializers for {done, total, rate, running}.)
	std::string last_error{};
	// Seconds (rounded up) until the failed pair's next job may start;
	// 0: due now, it starts at the daemon's next look at the pipe (or
	// when a slot or its target frees up). nullopt: no failure, a job is
	// running, or none is planned (the pair is not Syncing).
	std::optional<uint64_t> retry_in_s{};
};

// An iscsi:// target's peer (docs/iscsi.md); status only.
struct ControlPeer {
	std::string portal; // "127.0.0.1:3260"
	std::string iqn;
	uint32_t lun = 0;
	std::string session; // "LOGGED_IN", "FAILED", ..., "none"
	std::string device;  // "/dev/sdb", "" when the LUN has no disk
};

struct ControlPair {
	std::string source;
	std::string target;
	std::optional<ControlPeer> peer; // iscsi:// targets only
	std::string
	        state; // "Syncing", "InSync", "Degraded", "Paused", "Unknown"
	ControlResync resync;
	// Kernel counters; zero when the kernel does not know the pair.
	uint64_t regions = 0;
	uint64_t dirty_regions = 0;
	uint64_t source_bytes = 0;
	uint64_t writes_mirrored = 0;
	uint64_t bytes_mirrored = 0;
	uint64_t target_errors = 0;
	uint64_t lag_bytes = 0;
	// The source's write-intent record: "" none, "loaded" (the pair's
	// first bitmap came from it), "new" (bound anew: everything dirty).
	std::string intent;
	uint64_t intent_loaded_regions = 0;
	uint64_t intent_marked_regions = 0;
};

struct ControlPipe {
	std::string ref; // CIM_NetworkPipe.InstanceID="replipipe:<uuid>"
	std::string instance_id; // replipipe:<uuid>
	std::string name;
	std::string source_system;
	std::string target_system;
	std::string mode; // "Synchronous", "Asynchronous"
	std::string failure_policy;
	uint32_t max_lag_kib = 0;
	uint32_t region_kib = 0;
	uint32_t resync_rate_limit_kibps = 0;
	bool in_kernel = false; // the kernel knows the pipe
	std::vector<ControlPair> pairs;
};

struct ControlReply {
	bool ok = true;
	std::string error;
	std::string code; // empty or one of kCode*
	std::optional<ReturnValue> return_value;
	std::string replication_pipe;
	std::vector<ControlPipe> pipes;
};

struct ControlEvent {
	std::string type; // "pipe_added", "pipe_changed", "pipe_deleted",
	                  // "pair_state", "resync_started", "resync_done",
	                  // "resync_failed", "events_lost"
	std::string time; // RFC 3339, UTC
	std::string instance_id;
	std::string name;
	std::string source;
	std::string target;
	std::string state;
	std::string message; // free text (resync_failed, events_lost)
};

// Encoders return one line without the trailing '\n'.
std::string EncodeRequest(const ControlRequest &request);
Result<ControlRequest> DecodeRequest(std::string_view line);
std::string EncodeReply(const ControlReply &reply);
Result<ControlReply> DecodeReply(std::string_view line);
std::string EncodeEvent(const ControlEvent &event);
Result<ControlEvent> DecodeEvent(std::string_view line);

// A failed reply; `code` one of kCode*.
ControlReply ErrorReply(std::string code, std::string error);
// The reply of a CIM method outcome (ok when kCompleted).
ControlReply MethodReply(const MethodOutcome &outcome);

// The JSON forms `status --json` prints (keys of the CLI contract).
nlohmann::ordered_json ControlPipeToJson(const ControlPipe &pipe);
Result<ControlPipe> ControlPipeFromJson(const nlohmann::json &json);

// Now in RFC 3339 UTC with milliseconds, "2026-11-25T16:03:07.123Z".
std::string NowRfc3339();

} // namespace replipipe
