#include "metrics_text.h"

#include <cstdint>
#include <initializer_list>
#include <utility>

namespace replipipe
{
namespace
{

using Label = std::pair<std::string_view, std::string_view>;

// The pair states replipipe_pair_state is one-hot over (PairStateName()).
constexpr const char *kPairStates[] = {"Syncing", "InSync", "Degraded",
                                       "Paused"};

// HELP text: '\\' and newline escaped (quotes stay as they are).
std::string EscapeHelp(std::string_view text)
{
	std::string out;
	out.reserve(text.size());
	for (char c : text) {
		if (c == '\\')
			out += "\\\\";
		else if (c == '\n')
			out += "\\n";
		else
			out += c;
	}
	return out;
}

// Builds the exposition family by family: every sample of a family must
// follow its HELP and TYPE lines without another family in between.
class Exposition
{
public:
	void Family(std::string_view name, std::string_view type,
	            std::string_view help)
	{
		name_ = name;
		text_ += "# HELP ";
		text_ += name;
		text_ += ' ';
		text_ += EscapeHelp(help);
		text_ += "\n# TYPE ";
		text_ += name;
		text_ += ' ';
		text_ += type;
		text_ += '\n';
	}

	// A sample of the current family.
	void Sample(std::initializer_list<Label> labels, uint64_t value)
	{
		text_ += name_;
		if (labels.size()) {
			text_ += '{';
			bool first = true;
			for (const Label &label : labels) {
				if (!first)
					text_ += ',';
				first = false;
				text_ += label.first;
				text_ += "=\"";
				text_ += EscapeLabelValue(label.second);
				text_ += '"';
			}
			text_ += '}';
		}
		text_ += ' ';
		text_ += std::to_string(value);
		text_ += '\n';
	}

	std::string Take() { return std::move(text_); }

private:
	std::string text_;
	std::string name_;
};

// What the pair's dirty bitmap covers, in bytes: dirty regions times the
// region size, at most the source's size (the last region may be partial).
uint64_t DirtyBytes(const ControlPipe &pipe, const ControlPair &pair)
{
	uint64_t dirty = pair.dirty_regions * uint64_t{pipe.region_kib} * 1024;
	if (pair.source_bytes && dirty > pair.source_bytes)
		dirty = pair.source_bytes;
	return dirty;
}

struct PairFamily {
	const char *name;
	const char *type;
	const char *help;
	uint64_t (*value)(const ControlPipe &, const ControlPair &);
};

// Every per-pair family but replipipe_pair_state (one-hot, see below).
constexpr PairFamily kPairFamilies[] = {
        {"replipipe_pair_source_bytes", "gauge",
         "Size of the pair's source backstore in bytes.",
         [](const ControlPipe &, const ControlPair &p) {
	         return p.source_bytes;
         }},
        {"replipipe_pair_dirty_bytes", "gauge",
         "Bytes in dirty regions: the target may differ from the source "
         "there.",
         [](const ControlPipe &pipe, const ControlPair &p) {
	         return DirtyBytes(pipe, p);
         }},
        {"replipipe_pair_resync_done_bytes", "gauge",
         "Bytes copied by the current (or last) resync of the pair.",
         [](const ControlPipe &, const ControlPair &p) {
	         return p.resync.done_bytes;
         }},
        {"replipipe_pair_resync_total_bytes", "gauge",
         "Bytes the current (or last) resync of the pair has to copy.",
         [](const ControlPipe &, const ControlPair &p) {
	         return p.resync.total_bytes;
         }},
        {"replipipe_pair_resync_rate_bytes_per_second", "gauge",
         "Copy rate of the pair's running resync in bytes per second.",
         [](const ControlPipe &, const ControlPair &p) {
	         return p.resync.rate_bytes_per_s;
         }},
        {"replipipe_pair_resync_running", "gauge",
         "1 while a resync job copies the pair, else 0.",
         [](const ControlPipe &, const ControlPair &p) {
	         return uint64_t{p.resync.running};
         }},
        // A gauge, not a counter: it goes back to 0 once a job ends clean.
        {"replipipe_pair_resync_failures", "gauge",
         "Resync jobs of the pair that failed in a row (0 once one ends "
         "with the pair clean).",
         [](const ControlPipe &, const ControlPair &p) {
	         return uint64_t{p.resync.failures};
         }},
        {"replipipe_pair_mirrored_writes_total", "counter",
         "Writes mirrored to the pair's target since the kernel pipe was "
         "created.",
         [](const ControlPipe &, const ControlPair &p) {
	         return p.writes_mirrored;
         }},
        {"replipipe_pair_mirrored_bytes_total", "counter",
         "Bytes mirrored to the pair's target since the kernel pipe was "
         "created.",
         [](const ControlPipe &, const ControlPair &p) {
	         return p.bytes_mirrored;
         }},
        {"replipipe_pair_target_errors_total", "counter",
         "Writes to the pair's target that failed.",
         [](const ControlPipe &, const ControlPair &p) {
	         return p.target_errors;
         }},
        {"replipipe_pair_lag_bytes", "gauge",
         "Bytes written to the source and not yet to the target "
         "(asynchronous pipes).",
         [](const ControlPipe &, const ControlPair &p) { return p.lag_bytes; }},
};

} // namespace

std::string EscapeLabelValue(std::string_view value)
{
	std::string out;
	out.reserve(value.size());
	for (char c : value) {
		if (c == '\\')
			out += "\\\\";
		else if (c == '"')
			out += "\\\"";
		else if (c == '\n')
			out += "\\n";
		else
			out += c;
	}
	return out;
}

std::string RenderMetrics(const std::vector<ControlPipe> &pipes)
{
	Exposition out;
	size_t pair_count = 0;
	for (const ControlPipe &pipe : pipes)
		pair_count += pipe.pairs.size();

	out.Family("replipipe_build_info", "gauge",
	           "Version of replipiped, as a label; always 1.");
	out.Sample({{"version", REPLIPIPE_VERSION}}, 1);
	out.Family("replipipe_pipes", "gauge",
	           "Replication pipes in the daemon's store.");
	out.Sample({}, pipes.size());
	out.Family("replipipe_pairs", "gauge",
	           "Endpoint pairs of the stored replication pipes.");
	out.Sample({}, pair_count);

	out.Family("replipipe_pipe_info", "gauge",
	           "A replication pipe's settings, as labels; always 1.");
	for (const ControlPipe &p : pipes)
		out.Sample({{"pipe", p.instance_id},
		            {"pipe_name", p.name},
		            {"source_system", p.source_system},
		            {"target_system", p.target_system},
		            {"mode", p.mode},
		            {"failure_policy", p.failure_policy}},
		           1);
	out.Family("replipipe_pipe_in_kernel", "gauge",
	           "1 when the kernel module knows the stored pipe, else 0.");
	for (const ControlPipe &p : pipes)
		out.Sample({{"pipe", p.instance_id}, {"pipe_name", p.name}},
		           p.in_kernel ? 1 : 0);
	out.Family("replipipe_pipe_max_lag_bytes", "gauge",
	           "Asynchronous pipes: bytes in flight to the target before "
	           "writers are throttled (MaxLagKiB).");
	for (const ControlPipe &p : pipes)
		out.Sample({{"pipe", p.instance_id}, {"pipe_name", p.name}},
		           uint64_t{p.max_lag_kib} * 1024);

	out.Family("replipipe_pair_state", "gauge",
	           "1 for the pair's current state, 0 for the others; all 0 "
	           "when the kernel does not know the pair.");
	for (const ControlPipe &p : pipes)
		for (const ControlPair &pair : p.pairs)
			for (const char *state : kPairStates)
				out.Sample({{"pipe", p.instance_id},
				            {"pipe_name", p.name},
				            {"source", pair.source},
				            {"target", pair.target},
				            {"state", state}},
				           pair.state == state ? 1 : 0);

	for (const PairFamily &family : kPairFamilies) {
		out.Family(family.name, family.type, family.help);
		for (const ControlPipe &p : pipes)
			for (const ControlPair &pair : p.pairs)
				out.Sample({{"pipe", p.instance_id},
				            {"pipe_name", p.name},
				            {"source", pair.source},
				            {"target", pair.target}},
				           family.value(p, pair));
	}
	return out.Take();
}

} // namespace replipipe
