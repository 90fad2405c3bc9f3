#include "model.h"

#include <linux/replipipe.h>

#include <cctype>
#include <cerrno>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "object_path.h"
#include "text_scan.h"

namespace replipipe
{
namespace
{

using nlohmann::json;

constexpr std::string_view kInstancePrefix = "replipipe:";

bool IsPowerOfTwo(uint32_t v)
{
	return v && !(v & (v - 1));
}

// Reads j[key] as T; errors name the key and what was expected.
template <typename T>
Result<T> Field(const json &j, const char *key, const char *expected)
{
	auto it = j.find(key);
	if (it == j.end())
		return Status::Error(std::string("missing \"") + key + "\"",
		                     EINVAL);
	if constexpr (std::is_same_v<T, std::string>) {
		if (!it->is_string())
			return Status::Error(std::string("\"") + key +
			                             "\" must be " + expected,
			                     EINVAL);
	} else {
		if (!it->is_number_unsigned() ||
		    it->template get<uint64_t>() > UINT32_MAX)
			return Status::Error(std::string("\"") + key +
			                             "\" must be " + expected,
			                     EINVAL);
	}
	return it->template get<T>();
}

Result<PipeSettings> SettingsFromJson(const json &j)
{
	if (!j.is_object())
		return Status::Error("\"settings\" must be an object", EINVAL);
	PipeSettings s;
	auto mode = Field<std::string>(j, "mode", "a string");
	if (!mode.ok())
		return mode.status();
	auto m = ParseModeName(*mode);
	if (!m)
		return Status::Error("unknown mode \"" + *mode + "\"", EINVAL);
	s.mode = *m;
	auto policy = Field<std::string>(j, "failure_policy", "a string");
	if (!policy.ok())
		return policy.status();
	auto p = ParseFailurePolicyName(*policy);
	if (!p)
		return Status::Error(
		        "unknown failure_policy \"" + *policy + "\"", EINVAL);
	s.failure_policy = *p;
	const char *kU32 = "an unsigned 32-bit integer";
	auto lag = Field<uint32_t>(j, "max_lag_kib", kU32);
	auto rate = Field<uint32_t>(j, "resync_rate_kibps", kU32);
	auto region = Field<uint32_t>(j, "region_kib", kU32);
	auto element = Field<std::string>(j, "element_name", "a string");
	for (const Status *st : {&lag.status(), &rate.status(),
	                         &region.status(), &element.status()})
		if (!st->ok())
			return *st;
	if (!IsPowerOfTwo(*region))
		return Status::Error("\"region_kib\" " +
		                             std::to_string(*region) +
		                             " is not a power of two",
		                     EINVAL);
	s.max_lag_kib = *lag;
	s.resync_rate_kibps = *rate;
	s.region_kib = *region;
	s.element_name = *element;
	return s;
}

} // namespace

const char *ModeName(Mode mode)
{
	switch (mode) {
	case Mode::kSynchronous:
		return "Synchronous";
	case Mode::kAsynchronous:
		return "Asynchronous";
	}
	return "Unknown";
}

const char *FailurePolicyName(FailurePolicy p)
{
	switch (p) {
	case FailurePolicy::kDegrade:
		return "Degrade";
	case FailurePolicy::kFailIO:
		return "FailIO";
	}
	return "Unknown";
}

const char *PairStateName(PairState state)
{
	switch (state) {
	case PairState::kSyncing:
		return "Syncing";
	case PairState::kInSync:
		return "InSync";
	case PairState::kDegraded:
		return "Degraded";
	case PairState::kPaused:
		return "Paused";
	}
	return "Unknown";
}

const char *IntentRecordName(uint8_t intent)
{
	switch (intent) {
	case REPLIPIPE_INTENT_LOADED:
		return "loaded";
	case REPLIPIPE_INTENT_NEW:
		return "new";
	default:
		return "";
	}
}

std::optional<Mode> ParseModeName(std::string_view name)
{
	for (Mode m : {Mode::kSynchronous, Mode::kAsynchronous})
		if (EqualsIgnoreCase(name, ModeName(m)))
			return m;
	return std::nullopt;
}

std::optional<FailurePolicy> ParseFailurePolicyName(std::string_view name)
{
	for (FailurePolicy p :
	     {FailurePolicy::kDegrade, FailurePolicy::kFailIO})
		if (EqualsIgnoreCase(name, FailurePolicyName(p)))
			return p;
	return std::nullopt;
}

std::optional<PairState> ParsePairStateName(std::string_view name)
{
	for (PairState s : {PairState::kSyncing, PairState::kInSync,
	                    PairState::kDegraded, PairState::kPaused})
		if (EqualsIgnoreCase(name, PairStateName(s)))
			return s;
	return std::nullopt;
}

KernelPipeSpec ToKernelSpec(const PipeRecord &pipe)
{
	KernelPipeSpec spec;
	spec.id = pipe.instance_id;
	spec.name = pipe.name;
	spec.mode = pipe.settings.mode;
	spec.failure_policy = pipe.settings.failure_policy;
	spec.max_lag_kib = pipe.settings.max_lag_kib;
	spec.region_kib = pipe.settings.region_kib;
	for (const PairRecord &p : pipe.pairs)
		spec.pairs.push_back({p.source, p.target, false});
	return spec;
}

nlohmann::json PipeToJson(const PipeRecord &pipe)
{
	json pairs = json::array();
	for (const PairRecord &p : pipe.pairs)
		pairs.push_back({{"source", p.source}, {"target", p.target}});
	const PipeSettings &s = pipe.settings;
	return {
	        {"instance_id", pipe.instance_id},
	        {"name", pipe.name},
	        {"source_system", pipe.source_system},
	        {"target_system", pipe.target_system},
	        {"settings",
	         {{"mode", ModeName(s.mode)},
	          {"failure_policy", FailurePolicyName(s.failure_policy)},
	          {"max_lag_kib", s.max_lag_kib},
	          {"resync_rate_kibps", s.resync_rate_kibps},
	          {"region_kib", s.region_kib},
	          {"element_name", s.element_name}}},
	        {"pairs", pairs},
	};
}

Result<PipeRecord> PipeFromJson(const nlohmann::json &j)
{
	if (!j.is_object())
		return Status::Error("a pipe must be a JSON object", EINVAL);
	PipeRecord pipe;
	auto id = Field<std::string>(j, "instance_id", "a string");
	if (!id.ok())
		return id.status();
	if (!IsUuidText(*id))
		return Status::Error("\"instance_id\" \"" + *id +
		                             "\" is not a UUID",
		                     EINVAL);
	pipe.instance_id = *id;
	auto context = [&](const Status &st) {
		return st.Context("pipe " + pipe.instance_id);
	};
	auto name = Field<std::string>(j, "name", "a string");
	auto src = Field<std::string>(j, "source_system", "a string");
	auto tgt = Field<std::string>(j, "target_system", "a string");
	for (const Status *st : {&name.status(), &src.status(), &tgt.status()})
		if (!st->ok())
			return context(*st);
	pipe.name = *name;
	pipe.source_system = *src;
	pipe.target_system = *tgt;
	auto settings = j.find("settings");
	if (settings == j.end())
		return context(Status::Error("missing \"settings\"", EINVAL));
	auto s = SettingsFromJson(*settings);
	if (!s.ok())
		return context(s.status());
	pipe.settings = *s;
	auto pairs = j.find("pairs");
	if (pairs == j.end() || !pairs->is_array())
		return context(
		        Status::Error("\"pairs\" must be an array", EINVAL));
	for (size_t i = 0; i < pairs->size(); i++) {
		const json &p = (*pairs)[i];
		auto ps = p.is_object()
		                  ? Field<std::string>(p, "source", "a string")
		                  : Result<std::string>(Status::Error(
		                            "not an object", EINVAL));
		auto pt = p.is_object()
		                  ? Field<std::string>(p, "target", "a string")
		                  : Result<std::string>(ps.status());
		for (const Status *st : {&ps.status(), &pt.status()})
			if (!st->ok())
				return context(st->Context("pair " +
				                           std::to_string(i)));
		pipe.pairs.push_back({*ps, *pt});
	}
	return pipe;
}

std::string InstanceIdFor(std::string_view uuid)
{
	return std::string(kInstancePrefix) + std::string(uuid);
}

std::string InstanceIdOf(const PipeRecord &pipe)
{
	return InstanceIdFor(pipe.instance_id);
}

std::string PipeReference(std::string_view uuid)
{
	ObjectPath path;
	path.class_name = "CIM_NetworkPipe";
	path.keys.push_back(
	        {"InstanceID", KeyValue::String(InstanceIdFor(uuid))});
	return FormatObjectPath(path);
}

std::string PipeLabel(const PipeRecord &pipe)
{
	return "pipe " + PipeReference(pipe.instance_id) +
	       (pipe.name.empty() ? "" : " (\"" + pipe.name + "\")");
}

bool IsUuidText(std::string_view text)
{
	if (text.size() != 36)
		return false;
	for (size_t i = 0; i < text.size(); i++) {
		char c = text[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!std::isxdigit(static_cast<unsigned char>(c)) ||
		           std::isupper(static_cast<unsigned char>(c))) {
			return false;
		}
	}
	return true;
}

Result<std::optional<std::string>> ParsePipeIdentifier(std::string_view text)
{
	auto uuid_of_instance_id =
	        [](std::string_view id) -> std::optional<std::string> {
		if (id.size() > kInstancePrefix.size() &&
		    EqualsIgnoreCase(id.substr(0, kInstancePrefix.size()),
		                     kInstancePrefix) &&
		    IsUuidText(id.substr(kInstancePrefix.size())))
			return std::string(id.substr(kInstancePrefix.size()));
		return std::nullopt;
	};
	if (IsUuidText(text))
		return std::optional<std::string>(std::string(text));
	if (auto uuid = uuid_of_instance_id(text))
		return uuid;
	if (!LooksLikeObjectPath(text))
		return std::optional<std::string>();
	auto path = ParseObjectPath(text);
	if (!path.ok()) {
		// A broken CIM_NetworkPipe reference is an error; any other
		// text may still be a PipeElementName.
		std::string lower(text.substr(0, text.find('=')));
		for (char &c : lower)
			c = static_cast<char>(
			        std::tolower(static_cast<unsigned char>(c)));
		if (text.starts_with("//") ||
		    lower.find("cim_networkpipe") != std::string::npos)
			return path.status();
		return std::optional<std::string>();
	}
	if (!path->IsClass("CIM_NetworkPipe"))
		return std::optional<std::string>();
	const KeyValue *id = path->Find("InstanceID");
	if (!id || id->type != KeyValue::Type::kString)
		return Status::Error("CIM_NetworkPipe reference \"" +
		                             std::string(text) +
		                             "\" has no InstanceID string key",
		                     EINVAL);
	auto uuid = uuid_of_instance_id(id->string);
	if (!uuid)
		return Status::Error("InstanceID \"" + id->string +
		                             "\" is not a replipipe pipe "
		                             "(expected \"replipipe:<uuid>\")",
		                     EINVAL);
	return uuid;
}

std::string NewUuid()
{
	std::ifstream in("/proc/sys/kernel/random/uuid");
	std::string line;
	if (in && std::getline(in, line) && IsUuidText(line))
		return line;
	std::random_device rd;
	std::uniform_int_distribution<int> hex(0, 15);
	std::string out;
	const char *digits = "0123456789abcdef";
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			out += '-';
		else if (i == 14)
			out += '4'; // version 4
		else if (i == 19)
			out += digits[8 + hex(rd) % 4]; // variant 10xx
		else
			out += digits[hex(rd)];
	}
	return out;
}

} // namespace replipipe
