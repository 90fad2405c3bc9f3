#include "cli_output.h"

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

namespace replipipe
{
namespace
{

using json = nlohmann::json;

// Left-aligned columns, two blanks apart; the last column is not padded.
std::string Table(const std::vector<std::vector<std::string>> &rows,
                  const std::string &indent = "")
{
	std::vector<size_t> widths;
	for (const auto &row : rows)
		for (size_t i = 0; i < row.size(); ++i) {
			if (widths.size() <= i)
				widths.push_back(0);
			widths[i] = std::max(widths[i], row[i].size());
		}
	std::string out;
	for (const auto &row : rows) {
		std::string line = indent;
		for (size_t i = 0; i < row.size(); ++i) {
			line += row[i];
			if (i + 1 < row.size())
				line += std::string(
				        widths[i] - row[i].size() + 2, ' ');
		}
		while (!line.empty() && line.back() == ' ')
			line.pop_back();
		out += line + "\n";
	}
	return out;
}

unsigned Percent(uint64_t done, uint64_t total)
{
	if (total == 0)
		return 100;
	return static_cast<unsigned>(
	        std::min<uint64_t>(100, (done * 100) / total));
}

// "1h02m", "3m05s", "42s".
std::string DurationText(uint64_t s)
{
	char buf[32];
	if (s >= 3600)
		std::snprintf(buf, sizeof(buf), "%lluh%02llum",
		              static_cast<unsigned long long>(s / 3600),
		              static_cast<unsigned long long>(s / 60 % 60));
	else if (s >= 60)
		std::snprintf(buf, sizeof(buf), "%llum%02llus",
		              static_cast<unsigned long long>(s / 60),
		              static_cast<unsigned long long>(s % 60));
	else
		std::snprintf(buf, sizeof(buf), "%llus",
		              static_cast<unsigned long long>(s));
	return buf;
}

// "ETA 1h02m", "ETA 3m05s", "ETA 42s"; empty without a rate.
std::string EtaText(uint64_t done, uint64_t total, uint64_t rate)
{
	if (rate == 0 || done >= total)
		return "";
	return "ETA " + DurationText((total - done + rate - 1) / rate);
}

// Why a pair has no job: "no job: failed 3 times, retry in 8s"; "retry
// due" when its back-off has passed, no retry when none is planned (the
// pair is not Syncing). The failure's message goes on a line of its own
// (FormatStatus()): it may be long.
std::string NoJobText(const ControlResync &r)
{
	std::string text = "no job";
	if (r.failures == 0)
		return text;
	text += r.failures == 1
	                ? ": failed once"
	                : ": failed " + std::to_string(r.failures) + " times";
	if (r.retry_in_s)
		text += *r.retry_in_s
		                ? ", retry in " + DurationText(*r.retry_in_s)
		                : std::string(", retry due");
	return text;
}

std::string ResyncText(const ControlPair &pair)
{
	const ControlResync &r = pair.resync;
	const bool failed = r.failures > 0;
	if (r.total_bytes == 0) {
		if (r.running)
			return "starting";
		return failed ? "- (" + NoJobText(r) + ")" : "-";
	}
	std::string text =
	        std::to_string(Percent(r.done_bytes, r.total_bytes)) + "% " +
	        FormatBytes(r.done_bytes) + "/" + FormatBytes(r.total_bytes);
	if (r.running && r.rate_bytes_per_s) {
		text += " " + FormatBytes(r.rate_bytes_per_s) + "/s";
		const std::string eta = EtaText(r.done_bytes, r.total_bytes,
		                                r.rate_bytes_per_s);
		if (!eta.empty())
			text += " " + eta;
	}
	if (r.running && failed)
		// The jobs before this one failed.
		text += " (attempt " +
		        std::to_string(uint64_t{r.failures} + 1) + ")";
	else if (!r.running && (failed || r.done_bytes < r.total_bytes))
		text += " (" + NoJobText(r) + ")";
	return text;
}

// "2 InSync, 1 Syncing" in a fixed state order.
std::string StateSummary(const ControlPipe &pipe)
{
	if (pipe.pairs.empty())
		return "no pairs";
	std::string out;
	for (const char *state :
	     {"InSync", "Syncing", "Degraded", "Paused", "Unknown"}) {
		size_t n = std::count_if(pipe.pairs.begin(), pipe.pairs.end(),
		                         [state](const ControlPair &p) {
			                         return p.state == state;
		                         });
		if (n == 0)
			continue;
		if (!out.empty())
			out += ", ";
		out += std::to_string(n) + " " + state;
	}
	return out;
}

} // namespace

std::string FormatBytes(uint64_t bytes)
{
	static const char *const kUnits[] = {"KiB", "MiB", "GiB",
	                                     "TiB", "PiB", "EiB"};
	if (bytes < 1024)
		return std::to_string(bytes) + " B";
	double value = static_cast<double>(bytes) / 1024;
	size_t unit = 0;
	while (value >= 1024 && unit + 1 < std::size(kUnits)) {
		value /= 1024;
		++unit;
	}
	char buf[32];
	std::snprintf(buf, sizeof(buf), "%.1f %s", value, kUnits[unit]);
	return buf;
}

std::string FormatListTable(const std::vector<ControlPipe> &pipes)
{
	if (pipes.empty())
		return "no pipes\n";
	std::vector<std::vector<std::string>> rows = {
	        {"NAME", "INSTANCEID", "TARGET SYSTEM", "MODE", "PAIRS"}};
	for (const ControlPipe &pipe : pipes)
		rows.push_back({pipe.name.empty() ? "-" : pipe.name,
		                pipe.instance_id, pipe.target_system, pipe.mode,
		                StateSummary(pipe)});
	return Table(rows);
}

std::string FormatStatus(const std::vector<ControlPipe> &pipes)
{
	if (pipes.empty())
		return "no pipes\n";
	std::string out;
	for (size_t i = 0; i < pipes.size(); ++i) {
		const ControlPipe &pipe = pipes[i];
		if (i > 0)
			out += "\n";
		out += "pipe " + (pipe.name.empty() ? "-" : pipe.name) + "  " +
		       pipe.ref + "\n";
		std::string settings = pipe.mode;
		if (pipe.mode == "Asynchronous")
			settings +=
			        ", max lag " +
			        FormatBytes(uint64_t{pipe.max_lag_kib} * 1024);
		settings += ", " + pipe.failure_policy +
		            " on failure, regions " +
		            FormatBytes(uint64_t{pipe.region_kib} * 1024);
		settings +=
		        ", resync rate " +
		        (pipe.resync_rate_limit_kibps
		                 ? FormatBytes(
		                           uint64_t{
		                                   pipe.resync_rate_limit_kibps} *
		                           1024) +
		                           "/s"
		                 : std::string("unlimited"));
		out += Table({{"systems:", pipe.source_system + " -> " +
		                                   pipe.target_system},
		              {"settings:", settings}},
		             "  ");
		if (!pipe.in_kernel)
			out += "  warning: the kernel does not know this pipe "
			       "(is replipipe.ko loaded? see the daemon's "
			       "log)\n";
		if (pipe.pairs.empty()) {
			out += "  no pairs\n";
			continue;
		}
		// Asynchronous pipes also show the current lag (bytes
		// acknowledged, not yet on the target).
		const bool async = pipe.mode == "Asynchronous";
		std::vector<std::vector<std::string>> rows = {
		        {"SOURCE", "TARGET", "STATE", "RESYNC", "ERRORS"}};
		if (async)
			rows[0].push_back("LAG");
		for (const ControlPair &pair : pipe.pairs) {
			rows.push_back({pair.source, pair.target, pair.state,
			                ResyncText(pair),
			                std::to_string(pair.target_errors)});
			if (async)
				rows.back().push_back(
				        FormatBytes(pair.lag_bytes));
		}
		out += Table(rows, "  ");
		// Whole, below the table: a long message would stretch the
		// RESYNC column of every pair.
		for (const ControlPair &pair : pipe.pairs)
			if (!pair.resync.last_error.empty())
				out += "  last resync failure of " +
				       pair.source + ": " +
				       pair.resync.last_error + "\n";
		for (const ControlPair &pair : pipe.pairs)
			if (pair.peer) // iscsi:// targets (docs/iscsi.md)
				out += "  peer of " + pair.source +
				       ": portal " + pair.peer->portal + ", " +
				       pair.peer->iqn + " LUN " +
				       std::to_string(pair.peer->lun) +
				       ", session " + pair.peer->session +
				       ", device " +
				       (pair.peer->device.empty()
				                ? std::string("none")
				                : pair.peer->device) +
				       "\n";
		// Where the first bitmap came from matters after a crash: a
		// record that knew the pair means a partial resync.
		for (const ControlPair &pair : pipe.pairs)
			if (!pair.intent.empty())
				out += "  write-intent record of " +
				       pair.source + ": " +
				       (pair.intent == "loaded"
				                ? std::to_string(
				                          pair.intent_loaded_regions) +
				                          " regions taken from "
				                          "it"
				                : std::string(
				                          "bound anew, full "
				                          "resync")) +
				       ", " +
				       std::to_string(
				               pair.intent_marked_regions) +
				       " marked now\n";
	}
	return out;
}

std::string FormatEvent(const ControlEvent &event)
{
	std::string line = event.time + " " + event.type;
	std::string pipe = event.name.empty() ? event.instance_id
	                                      : event.name + " (" +
	                                                event.instance_id + ")";
	if (!pipe.empty())
		line += " pipe " + pipe;
	if (!event.source.empty()) {
		line += " pair " + event.source;
		if (!event.target.empty())
			line += " -> " + event.target;
	}
	if (!event.state.empty())
		line += ": " + event.state;
	if (!event.message.empty())
		line += ": " + event.message;
	return line;
}

// In DESIGN.md's order of keys (ordered_json: json sorts them).
nlohmann::ordered_json StatusJson(const std::vector<ControlPipe> &pipes)
{
	nlohmann::ordered_json list = nlohmann::ordered_json::array();
	for (const ControlPipe &pipe : pipes)
		list.push_back(ControlPipeToJson(pipe));
	return nlohmann::ordered_json{{"pipes", std::move(list)}};
}

nlohmann::ordered_json MethodJson(const ControlReply &reply)
{
	nlohmann::ordered_json j = nlohmann::ordered_json::object();
	if (reply.return_value)
		j["ReturnValue"] = static_cast<uint32_t>(*reply.return_value);
	if (reply.ok) {
		if (!reply.return_value)
			j["ReturnValue"] = 0;
		j["ReplicationPipe"] = reply.replication_pipe;
		return j;
	}
	if (!reply.return_value) {
		// Refused before the method ran, as the method itself would
		// have answered: the daemon's connection cap is Busy (exit
		// 16), a pipe that is not there Invalid Parameter (exit 5).
		// Scripts read ReturnValue whatever the failure.
		if (reply.code == kCodeBusy)
			j["ReturnValue"] =
			        static_cast<uint32_t>(ReturnValue::kBusy);
		else if (reply.code == kCodeNotFound)
			j["ReturnValue"] = static_cast<uint32_t>(
			        ReturnValue::kInvalidParameter);
	}
	j["Error"] = reply.error;
	if (reply.return_value)
		return j;
	if (!reply.code.empty())
		j["code"] = reply.code;
	return j;
}

nlohmann::ordered_json ErrorJson(const std::string &error,
                                 const std::string &code)
{
	nlohmann::ordered_json j{{"Error", error}};
	if (!code.empty())
		j["code"] = code;
	return j;
}

std::string OneLineJson(const nlohmann::ordered_json &j)
{
	constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
	if (!j.is_object())
		return j.dump(-1, ' ', false, kReplace);
	std::string line = "{";
	for (const auto &[key, value] : j.items()) {
		if (line.size() > 1)
			line += ", ";
		line += nlohmann::ordered_json(key).dump(-1, ' ', false,
		                                         kReplace);
		line += ": ";
		line += value.dump(-1, ' ', false, kReplace);
	}
	return line + "}";
}

WaitSummary SummarizeWait(const ControlPipe &pipe, const std::string &state)
{
	WaitSummary s;
	s.pairs = pipe.pairs.size();
	for (const ControlPair &pair : pipe.pairs) {
		if (pair.state == state)
			++s.in_state;
		s.done_bytes += pair.resync.done_bytes;
		s.total_bytes += pair.resync.total_bytes;
		s.rate_bytes_per_s += pair.resync.rate_bytes_per_s;
	}
	s.reached = s.in_state == s.pairs;
	return s;
}

std::string ProgressBar(const WaitSummary &summary, const std::string &state,
                        size_t width)
{
	std::string out;
	if (summary.total_bytes > 0) {
		unsigned pct = Percent(summary.done_bytes, summary.total_bytes);
		size_t filled = width * pct / 100;
		out = "[" + std::string(filled, '#') +
		      std::string(width - filled, '.') + "] ";
		char buf[8];
		std::snprintf(buf, sizeof(buf), "%3u%%", pct);
		out += buf;
		out += "  " + FormatBytes(summary.done_bytes) + "/" +
		       FormatBytes(summary.total_bytes);
		if (summary.rate_bytes_per_s)
			out += "  " + FormatBytes(summary.rate_bytes_per_s) +
			       "/s";
		const std::string eta =
		        EtaText(summary.done_bytes, summary.total_bytes,
		                summary.rate_bytes_per_s);
		if (!eta.empty())
			out += "  " + eta;
		out += "  ";
	}
	out += std::to_string(summary.in_state) + "/" +
	       std::to_string(summary.pairs) + " " + state;
	return out;
}

std::string ProgressLine(const std::string &pipe, const WaitSummary &summary,
                         const std::string &state)
{
	std::string line = pipe + ": " + std::to_string(summary.in_state) +
	                   "/" + std::to_string(summary.pairs) + " pairs " +
	                   state;
	if (summary.total_bytes > 0) {
		line += "; resync " +
		        std::to_string(Percent(summary.done_bytes,
		                               summary.total_bytes)) +
		        "% (" + FormatBytes(summary.done_bytes) + " of " +
		        FormatBytes(summary.total_bytes);
		if (summary.rate_bytes_per_s)
			line += ", " + FormatBytes(summary.rate_bytes_per_s) +
			        "/s";
		const std::string eta =
		        EtaText(summary.done_bytes, summary.total_bytes,
		                summary.rate_bytes_per_s);
		if (!eta.empty())
			line += ", " + eta;
		line += ")";
	}
	return line;
}

} // namespace replipipe
