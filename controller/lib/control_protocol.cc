#include "control_protocol.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <initializer_list>

#include <nlohmann/json.hpp>

namespace replipipe
{
namespace
{

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

struct OpName {
	ControlOp op;
	const char *name;
};

constexpr OpName kOpNames[] = {
        {ControlOp::kCreateOrModify, "create_or_modify"},
        {ControlOp::kDelete, "delete"},
        {ControlOp::kList, "list"},
        {ControlOp::kStatus, "status"},
        {ControlOp::kPause, "pause"},
        {ControlOp::kResume, "resume"},
        {ControlOp::kEvents, "events"},
};

Result<json> ParseObject(std::string_view line, const char *what,
                         size_t max_bytes = kMaxLineBytes)
{
	if (line.size() > max_bytes)
		return Status::Error(std::string(what) + " is longer than " +
		                     std::to_string(max_bytes) + " bytes");
	json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
	if (j.is_discarded())
		return Status::Error(std::string(what) + " is not valid JSON");
	if (!j.is_object())
		return Status::Error(std::string(what) +
		                     " is not a JSON object");
	return j;
}

// Every key of `j` must be in `allowed`: a misspelt parameter must not turn
// into a NULL one silently.
Status CheckKeys(const json &j, std::initializer_list<const char *> allowed)
{
	for (const auto &item : j.items()) {
		bool known = false;
		for (const char *key : allowed)
			known = known || item.key() == key;
		if (!known)
			return Status::Error("unknown request field \"" +
			                     item.key() + "\"");
	}
	return Status();
}

// A string field: absent/null gives nullopt, a non-string is an error.
Result<std::optional<std::string>> OptString(const json &j, const char *key)
{
	auto it = j.find(key);
	if (it == j.end() || it->is_null())
		return std::optional<std::string>();
	if (!it->is_string())
		return Status::Error(std::string("field \"") + key +
		                     "\" must be a string");
	return std::optional<std::string>(it->get<std::string>());
}

// A string parameter where NULL means empty (PipeElementName, Goal, ...).
Result<std::string> StringOrEmpty(const json &j, const char *key)
{
	auto value = OptString(j, key);
	if (!value.ok())
		return value.status();
	return value->value_or("");
}

// An array of strings: absent/null gives nullopt (NULL), [] an empty set.
Result<std::optional<std::vector<std::string>>> OptStringArray(const json &j,
                                                               const char *key)
{
	using Array = std::optional<std::vector<std::string>>;
	auto it = j.find(key);
	if (it == j.end() || it->is_null())
		return Array();
	if (!it->is_array())
		return Status::Error(std::string("field \"") + key +
		                     "\" must be an array of strings or null");
	std::vector<std::string> values;
	for (const auto &element : *it) {
		if (!element.is_string())
			return Status::Error(std::string("field \"") + key +
			                     "\" must hold only strings");
		values.push_back(element.get<std::string>());
	}
	return Array(std::move(values));
}

void PutOptArray(json &j, const char *key,
                 const std::optional<std::vector<std::string>> &values)
{
	if (values)
		j[key] = *values;
	else
		j[key] = nullptr;
}

// Serializes without ever throwing: a string that is not valid UTF-8 (an
// error message quoting the caller's bytes) is written with U+FFFD in place
// of the bad bytes instead of throwing json::type_error 316.
template <typename Json> std::string DumpLine(const Json &j)
{
	return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

template <typename T> T Get(const json &j, const char *key, T fallback)
{
	auto it = j.find(key);
	if (it == j.end() || it->is_null())
		return fallback;
	return it->get<T>();
}

ordered_json ResyncToJson(const ControlResync &r)
{
	ordered_json retry_in_s = nullptr;
	if (r.retry_in_s)
		retry_in_s = *r.retry_in_s;
	return ordered_json{{"done_bytes", r.done_bytes},
	                    {"total_bytes", r.total_bytes},
	                    {"rate_bytes_per_s", r.rate_bytes_per_s},
	                    {"running", r.running},
	                    {"failures", r.failures},
	                    {"last_error", r.last_error},
	                    {"retry_in_s", std::move(retry_in_s)}};
}

// A daemon older than the keys failures, last_error and retry_in_s sends
// none of them: no failure known, no retry planned.
ControlResync ResyncFromJson(const json &j)
{
	ControlResync r;
	r.done_bytes = Get<uint64_t>(j, "done_bytes", 0);
	r.total_bytes = Get<uint64_t>(j, "total_bytes", 0);
	r.rate_bytes_per_s = Get<uint64_t>(j, "rate_bytes_per_s", 0);
	r.running = Get<bool>(j, "running", false);
	r.failures = Get<uint32_t>(j, "failures", 0);
	r.last_error = Get<std::string>(j, "last_error", "");
	if (auto it = j.find("retry_in_s"); it != j.end() && !it->is_null())
		r.retry_in_s = it->get<uint64_t>();
	return r;
}

ordered_json ControlPairToJson(const ControlPair &pair)
{
	ordered_json j{{"source", pair.source},
	               {"target", pair.target},
	               {"state", pair.state},
	               {"resync", ResyncToJson(pair.resync)},
	               {"regions", pair.regions},
	               {"dirty_regions", pair.dirty_regions},
	               {"source_bytes", pair.source_bytes},
	               {"writes_mirrored", pair.writes_mirrored},
	               {"bytes_mirrored", pair.bytes_mirrored},
	               {"target_errors", pair.target_errors},
	               {"lag_bytes", pair.lag_bytes}};
	if (!pair.intent.empty())
		j["intent"] = ordered_json{
		        {"record", pair.intent},
		        {"loaded_regions", pair.intent_loaded_regions},
		        {"marked_regions", pair.intent_marked_regions}};
	if (pair.peer) // iscsi:// targets (docs/iscsi.md)
		j["peer"] = ordered_json{{"portal", pair.peer->portal},
		                         {"iqn", pair.peer->iqn},
		                         {"lun", pair.peer->lun},
		                         {"session", pair.peer->session},
		                         {"device", pair.peer->device}};
	return j;
}

ControlPair ControlPairFromJson(const json &j)
{
	ControlPair pair;
	pair.source = Get<std::string>(j, "source", "");
	pair.target = Get<std::string>(j, "target", "");
	pair.state = Get<std::string>(j, "state", "");
	if (auto it = j.find("peer"); it != j.end() && it->is_object()) {
		ControlPeer peer;
		peer.portal = Get<std::string>(*it, "portal", "");
		peer.iqn = Get<std::string>(*it, "iqn", "");
		peer.lun = Get<uint32_t>(*it, "lun", 0);
		peer.session = Get<std::string>(*it, "session", "");
		peer.device = Get<std::string>(*it, "device", "");
		pair.peer = peer;
	}
	if (auto it = j.find("resync"); it != j.end() && it->is_object())
		pair.resync = ResyncFromJson(*it);
	pair.regions = Get<uint64_t>(j, "regions", 0);
	pair.dirty_regions = Get<uint64_t>(j, "dirty_regions", 0);
	pair.source_bytes = Get<uint64_t>(j, "source_bytes", 0);
	pair.writes_mirrored = Get<uint64_t>(j, "writes_mirrored", 0);
	pair.bytes_mirrored = Get<uint64_t>(j, "bytes_mirrored", 0);
	pair.target_errors = Get<uint64_t>(j, "target_errors", 0);
	pair.lag_bytes = Get<uint64_t>(j, "lag_bytes", 0);
	if (auto it = j.find("intent"); it != j.end() && it->is_object()) {
		pair.intent = Get<std::string>(*it, "record", "");
		pair.intent_loaded_regions =
		        Get<uint64_t>(*it, "loaded_regions", 0);
		pair.intent_marked_regions =
		        Get<uint64_t>(*it, "marked_regions", 0);
	}
	return pair;
}

} // namespace

const char *ControlOpName(ControlOp op)
{
	for (const auto &entry : kOpNames)
		if (entry.op == op)
			return entry.name;
	return "unknown";
}

std::optional<ControlOp> ParseControlOp(std::string_view name)
{
	for (const auto &entry : kOpNames)
		if (name == entry.name)
			return entry.op;
	return std::nullopt;
}

std::string EncodeRequest(const ControlRequest &request)
{
	json j{{"v", kControlProtocolVersion},
	       {"op", ControlOpName(request.op)}};
	switch (request.op) {
	case ControlOp::kCreateOrModify: {
		const CreateOrModifyCall &call = request.call;
		j["PipeElementName"] = call.pipe_element_name;
		j["SourceSystem"] = call.source_system;
		j["TargetSystem"] = call.target_system;
		PutOptArray(j, "SourceEndpoint", call.source_endpoints);
		PutOptArray(j, "TargetEndpoint", call.target_endpoints);
		j["Goal"] = call.goal;
		if (call.replication_pipe)
			j["ReplicationPipe"] = *call.replication_pipe;
		else
			j["ReplicationPipe"] = nullptr;
		break;
	}
	case ControlOp::kDelete:
	case ControlOp::kStatus:
	case ControlOp::kPause:
	case ControlOp::kResume:
		if (request.pipe)
			j["pipe"] = *request.pipe;
		if (request.pair)
			j["pair"] = *request.pair;
		break;
	case ControlOp::kList:
	case ControlOp::kEvents:
		break;
	}
	return j.dump();
}

Result<ControlRequest> DecodeRequest(std::string_view line)
{
	auto parsed = ParseObject(line, "request");
	if (!parsed.ok())
		return parsed.status();
	const json &j = *parsed;

	auto version = j.find("v");
	if (version == j.end() || !version->is_number_integer())
		return Status::Error("request has no protocol version \"v\"");
	if (version->get<int64_t>() != kControlProtocolVersion)
		return Status::Error("request has protocol version " +
		                     std::to_string(version->get<int64_t>()) +
		                     ", this daemon speaks " +
		                     std::to_string(kControlProtocolVersion));
	auto op_field = OptString(j, "op");
	if (!op_field.ok())
		return op_field.status();
	if (!*op_field)
		return Status::Error("request has no \"op\"");
	auto op = ParseControlOp(**op_field);
	if (!op)
		return Status::Error("unknown op \"" + **op_field + "\"");

	ControlRequest request;
	request.op = *op;
	Status keys;
	switch (*op) {
	case ControlOp::kCreateOrModify:
		keys = CheckKeys(j,
		                 {"v", "op", "PipeElementName", "SourceSystem",
		                  "TargetSystem", "SourceEndpoint",
		                  "TargetEndpoint", "Goal", "ReplicationPipe"});
		break;
	case ControlOp::kDelete:
	case ControlOp::kStatus:
		keys = CheckKeys(j, {"v", "op", "pipe"});
		break;
	case ControlOp::kPause:
	case ControlOp::kResume:
		keys = CheckKeys(j, {"v", "op", "pipe", "pair"});
		break;
	case ControlOp::kList:
	case ControlOp::kEvents:
		keys = CheckKeys(j, {"v", "op"});
		break;
	}
	if (!keys.ok())
		return keys.Context(std::string("op ") + ControlOpName(*op));

	if (*op == ControlOp::kCreateOrModify) {
		CreateOrModifyCall &call = request.call;
		auto name = StringOrEmpty(j, "PipeElementName");
		auto source = StringOrEmpty(j, "SourceSystem");
		auto target = StringOrEmpty(j, "TargetSystem");
		auto goal = StringOrEmpty(j, "Goal");
		auto sources = OptStringArray(j, "SourceEndpoint");
		auto targets = OptStringArray(j, "TargetEndpoint");
		auto pipe = OptString(j, "ReplicationPipe");
		for (const Status *s :
		     {&name.status(), &source.status(), &target.status(),
		      &goal.status(), &sources.status(), &targets.status(),
		      &pipe.status()})
			if (!s->ok())
				return *s;
		call.pipe_element_name = *name;
		call.source_system = *source;
		call.target_system = *target;
		call.goal = *goal;
		call.source_endpoints = std::move(*sources);
		call.target_endpoints = std::move(*targets);
		call.replication_pipe = std::move(*pipe);
		return request;
	}
	auto pipe = OptString(j, "pipe");
	if (!pipe.ok())
		return pipe.status();
	auto pair = OptString(j, "pair");
	if (!pair.ok())
		return pair.status();
	request.pipe = std::move(*pipe);
	request.pair = std::move(*pair);
	bool needs_pipe = *op == ControlOp::kDelete ||
	                  *op == ControlOp::kPause || *op == ControlOp::kResume;
	if (needs_pipe && (!request.pipe || request.pipe->empty()))
		return Status::Error(std::string("op ") + ControlOpName(*op) +
		                     " needs \"pipe\"");
	return request;
}

// In DESIGN.md's order of keys, for `status --json` (StatusJson()).
nlohmann::ordered_json ControlPipeToJson(const ControlPipe &pipe)
{
	ordered_json pairs = ordered_json::array();
	for (const ControlPair &pair : pipe.pairs)
		pairs.push_back(ControlPairToJson(pair));
	return ordered_json{
	        {"ref", pipe.ref},
	        {"instance_id", pipe.instance_id},
	        {"name", pipe.name},
	        {"source_system", pipe.source_system},
	        {"target_system", pipe.target_system},
	        {"mode", pipe.mode},
	        {"failure_policy", pipe.failure_policy},
	        {"max_lag_kib", pipe.max_lag_kib},
	        {"region_kib", pipe.region_kib},
	        {"resync_rate_limit_kibps", pipe.resync_rate_limit_kibps},
	        {"in_kernel", pipe.in_kernel},
	        {"pairs", std::move(pairs)}};
}

Result<ControlPipe> ControlPipeFromJson(const nlohmann::json &j)
{
	if (!j.is_object())
		return Status::Error("pipe is not a JSON object");
	try {
		ControlPipe pipe;
		pipe.ref = Get<std::string>(j, "ref", "");
		pipe.instance_id = Get<std::string>(j, "instance_id", "");
		pipe.name = Get<std::string>(j, "name", "");
		pipe.source_system = Get<std::string>(j, "source_system", "");
		pipe.target_system = Get<std::string>(j, "target_system", "");
		pipe.mode = Get<std::string>(j, "mode", "");
		pipe.failure_policy = Get<std::string>(j, "failure_policy", "");
		pipe.max_lag_kib = Get<uint32_t>(j, "max_lag_kib", 0);
		pipe.region_kib = Get<uint32_t>(j, "region_kib", 0);
		pipe.resync_rate_limit_kibps =
		        Get<uint32_t>(j, "resync_rate_limit_kibps", 0);
		pipe.in_kernel = Get<bool>(j, "in_kernel", false);
		if (auto it = j.find("pairs"); it != j.end() && it->is_array())
			for (const json &pair : *it)
				pipe.pairs.push_back(ControlPairFromJson(pair));
		return pipe;
	} catch (const json::exception &e) {
		return Status::Error(std::string("malformed pipe: ") +
		                     e.what());
	}
}

std::string EncodeReply(const ControlReply &reply)
{
	json j{{"ok", reply.ok}};
	if (!reply.ok)
		j["error"] = reply.error;
	if (!reply.code.empty())
		j["code"] = reply.code;
	if (reply.return_value)
		j["ReturnValue"] = static_cast<uint32_t>(*reply.return_value);
	if (!reply.replication_pipe.empty())
		j["ReplicationPipe"] = reply.replication_pipe;
	if (!reply.pipes.empty()) {
		json pipes = json::array();
		for (const ControlPipe &pipe : reply.pipes)
			pipes.push_back(json(ControlPipeToJson(pipe)));
		j["pipes"] = std::move(pipes);
	}
	return DumpLine(j);
}

Result<ControlReply> DecodeReply(std::string_view line)
{
	auto parsed = ParseObject(line, "reply", kMaxReplyBytes);
	if (!parsed.ok())
		return parsed.status();
	const json &j = *parsed;
	try {
		ControlReply reply;
		auto ok = j.find("ok");
		if (ok == j.end() || !ok->is_boolean())
			return Status::Error("reply has no boolean \"ok\"");
		reply.ok = ok->get<bool>();
		reply.error = Get<std::string>(j, "error", "");
		reply.code = Get<std::string>(j, "code", "");
		if (auto it = j.find("ReturnValue"); it != j.end())
			reply.return_value =
			        static_cast<ReturnValue>(it->get<uint32_t>());
		reply.replication_pipe =
		        Get<std::string>(j, "ReplicationPipe", "");
		if (auto it = j.find("pipes"); it != j.end()) {
			if (!it->is_array())
				return Status::Error(
				        "reply's \"pipes\" is not an array");
			for (const json &p : *it) {
				auto pipe = ControlPipeFromJson(p);
				if (!pipe.ok())
					return pipe.status();
				reply.pipes.push_back(std::move(*pipe));
			}
		}
		if (!reply.ok && reply.error.empty())
			reply.error = "the daemon reported an error without "
			              "a message";
		return reply;
	} catch (const json::exception &e) {
		return Status::Error(std::string("malformed reply: ") +
		                     e.what());
	}
}

// In docs/cli.md's order of keys: `events --json` prints this line as is.
std::string EncodeEvent(const ControlEvent &event)
{
	ordered_json j{{"event", event.type}, {"time", event.time}};
	auto put = [&j](const char *key, const std::string &value) {
		if (!value.empty())
			j[key] = value;
	};
	put("instance_id", event.instance_id);
	put("name", event.name);
	put("source", event.source);
	put("target", event.target);
	put("state", event.state);
	put("message", event.message);
	return DumpLine(j);
}

Result<ControlEvent> DecodeEvent(std::string_view line)
{
	auto parsed = ParseObject(line, "event");
	if (!parsed.ok())
		return parsed.status();
	const json &j = *parsed;
	try {
		ControlEvent event;
		event.type = Get<std::string>(j, "event", "");
		if (event.type.empty())
			return Status::Error("event has no \"event\" type");
		event.time = Get<std::string>(j, "time", "");
		event.instance_id = Get<std::string>(j, "instance_id", "");
		event.name = Get<std::string>(j, "name", "");
		event.source = Get<std::string>(j, "source", "");
		event.target = Get<std::string>(j, "target", "");
		event.state = Get<std::string>(j, "state", "");
		event.message = Get<std::string>(j, "message", "");
		return event;
	} catch (const json::exception &e) {
		return Status::Error(std::string("malformed event: ") +
		                     e.what());
	}
}

ControlReply ErrorReply(std::string code, std::string error)
{
	ControlReply reply;
	reply.ok = false;
	reply.code = std::move(code);
	reply.error = std::move(error);
	return reply;
}

ControlReply MethodReply(const MethodOutcome &outcome)
{
	ControlReply reply;
	reply.return_value = outcome.return_value;
	reply.ok = outcome.return_value == ReturnValue::kCompleted;
	if (reply.ok) {
		reply.replication_pipe = outcome.replication_pipe;
	} else {
		reply.error = outcome.error;
		if (outcome.return_value == ReturnValue::kBusy)
			reply.code = kCodeBusy;
	}
	return reply;
}

std::string NowRfc3339()
{
	using namespace std::chrono;
	auto now = system_clock::now();
	std::time_t seconds = system_clock::to_time_t(now);
	auto millis =
	        duration_cast<milliseconds>(now.time_since_epoch()) % 1000;
	std::tm tm{};
	gmtime_r(&seconds, &tm);
	char buf[40];
	size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ",
	              static_cast<int>(millis.count()));
	return buf;
}

} // namespace replipipe
