// replipipectl's output: tables for people, the JSON documents of the CLI
// contract for scripts, and the `wait` progress. Pure functions of the
// replies, so that unit tests can check them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "control_protocol.h"

namespace replipipe
{

// 1536 -> "1.5 KiB"; below 1 KiB plain bytes, "512 B".
std::string FormatBytes(uint64_t bytes);

// `list`: one line per pipe.
std::string FormatListTable(const std::vector<ControlPipe> &pipes);
// `status`: per pipe a header and its pairs with state and resync progress.
std::string FormatStatus(const std::vector<ControlPipe> &pipes);
// `events` without --json: one line.
std::string FormatEvent(const ControlEvent &event);

// {"pipes": [...]}, the `status --json` document of the CLI contract.
nlohmann::ordered_json StatusJson(const std::vector<ControlPipe> &pipes);
// {"ReturnValue": N, "ReplicationPipe": ref} on success, {"ReturnValue": N,
// "Error": text} on failure; a failure without a ReturnValue gives
// {"Error": text, "code": code}, with ReturnValue 4096 when the code is busy
// (the daemon's connection cap) and 5 when it is not_found. Keys in that
// order, as the CLI contract writes them.
nlohmann::ordered_json MethodJson(const ControlReply &reply);
// A failure of any command in --json mode: {"Error": text[, "code"]}.
nlohmann::ordered_json ErrorJson(const std::string &error,
                                 const std::string &code);
// One line in the form the CLI contract shows, {"ReturnValue": 0,
// "ReplicationPipe": "..."}: the keys in their order, ": " and ", " between
// them, nested values compact. Bytes that are not UTF-8 (an error quoting a
// file name) are printed as U+FFFD.
std::string OneLineJson(const nlohmann::ordered_json &j);

// Where `wait` stands for one pipe.
struct WaitSummary {
	size_t pairs = 0;
	size_t in_state = 0; // pairs already in the wanted state
	uint64_t done_bytes = 0;
	uint64_t total_bytes = 0;
	uint64_t rate_bytes_per_s = 0;
	bool reached = false; // every pair is in the state
};
WaitSummary SummarizeWait(const ControlPipe &pipe, const std::string &state);
// "[#######.............]  35%  1.0 GiB/2.9 GiB  120.0 MiB/s  1/2 InSync"
// (the bar only when there is something to copy), width = bar cells.
std::string ProgressBar(const WaitSummary &summary, const std::string &state,
                        size_t width = 30);
// "db: 1/2 pairs InSync; resync 35% (1.0 GiB of 2.9 GiB, 120.0 MiB/s)"
std::string ProgressLine(const std::string &pipe, const WaitSummary &summary,
                         const std::string &state);

} // namespace replipipe
