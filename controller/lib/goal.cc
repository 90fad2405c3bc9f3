#include "goal.h"

#include <cerrno>
#include <functional>

#include "mof.h"
#include "object_path.h"
#include "text_scan.h"

namespace replipipe
{
namespace
{

constexpr std::string_view kWhat = "Goal";

bool IsPowerOfTwo(int64_t v)
{
	return v > 0 && !(v & (v - 1));
}

class GoalReader
{
public:
	explicit GoalReader(std::string_view text) : text_(text) {}

	Status Apply(const MofProperty &prop, GoalPatch &s);

private:
	Status ErrorAt(size_t pos, const std::string &message, int err = EINVAL)
	{
		Status st = TextError(kWhat, text_, pos, message);
		return Status::Error(st.message(), err);
	}
	Status WrongType(const MofProperty &prop, const char *expected)
	{
		return ErrorAt(prop.value_pos, prop.name + " must be " +
		                                       expected + ", not " +
		                                       prop.value.KindName());
	}
	Result<std::string> String(const MofProperty &prop)
	{
		if (prop.value.kind != MofValue::Kind::kString)
			return WrongType(prop, "a string");
		return prop.value.string;
	}
	Result<uint32_t> Integer(const MofProperty &prop, int64_t min,
	                         int64_t max)
	{
		if (prop.value.kind != MofValue::Kind::kInteger)
			return WrongType(prop, "an integer");
		int64_t v = prop.value.integer;
		if (v < min || v > max)
			return ErrorAt(prop.value_pos,
			               prop.name + " " + std::to_string(v) +
			                       " is out of range (" +
			                       std::to_string(min) + " to " +
			                       std::to_string(max) + ")");
		return static_cast<uint32_t>(v);
	}

	std::string_view text_;
};

Status GoalReader::Apply(const MofProperty &prop, GoalPatch &s)
{
	const std::string &name = prop.name;
	auto is = [&](std::string_view n) { return EqualsIgnoreCase(name, n); };
	if (prop.value.kind == MofValue::Kind::kNull) {
		// NULL is as if the property were left out (the patch keeps
		// what it had), but only for a property we know.
		for (const char *known :
		     {"Mode", "FailurePolicy", "MaxLagKiB",
		      "ResyncRateLimitKiBps", "RegionSizeKiB", "ElementName",
		      "Bidirectional", "InstanceID", "Caption", "Description"})
			if (is(known))
				return Status();
	}
	if (is("Mode")) {
		auto v = String(prop);
		if (!v.ok())
			return v.status();
		if (auto m = ParseModeName(*v)) {
			s.mode = *m;
			return Status();
		}
		if (EqualsIgnoreCase(*v, "Adaptive") ||
		    EqualsIgnoreCase(*v, "Active"))
			return ErrorAt(prop.value_pos,
			               "Mode \"" + *v +
			                       "\" is not supported (only "
			                       "Synchronous and Asynchronous)",
			               EOPNOTSUPP);
		return ErrorAt(prop.value_pos,
		               "Mode \"" + *v +
		                       "\" is not a mode (expected "
		                       "\"Synchronous\" or \"Asynchronous\")");
	}
	if (is("FailurePolicy")) {
		auto v = String(prop);
		if (!v.ok())
			return v.status();
		auto p = ParseFailurePolicyName(*v);
		if (!p)
			return ErrorAt(prop.value_pos,
			               "FailurePolicy \"" + *v +
			                       "\" is not a policy (expected "
			                       "\"Degrade\" or \"FailIO\")");
		s.failure_policy = *p;
		return Status();
	}
	if (is("MaxLagKiB")) {
		auto v = Integer(prop, kMinMaxLagKiB, kMaxMaxLagKiB);
		if (!v.ok())
			return v.status();
		s.max_lag_kib = *v;
		return Status();
	}
	if (is("ResyncRateLimitKiBps")) {
		auto v = Integer(prop, 0, UINT32_MAX);
		if (!v.ok())
			return v.status();
		s.resync_rate_kibps = *v;
		return Status();
	}
	if (is("RegionSizeKiB")) {
		auto v = Integer(prop, kMinRegionKiB, kMaxRegionKiB);
		if (!v.ok())
			return v.status();
		if (!IsPowerOfTwo(*v))
			return ErrorAt(prop.value_pos,
			               "RegionSizeKiB " + std::to_string(*v) +
			                       " is not a power of two");
		s.region_kib = *v;
		return Status();
	}
	if (is("ElementName")) {
		auto v = String(prop);
		if (!v.ok())
			return v.status();
		// Its escapes (\t, \x1b) may make control characters, which
		// the store refuses to load: the daemon would not start.
		if (Status st = CheckText(*v, "ElementName"); !st.ok())
			return ErrorAt(prop.value_pos, st.message());
		s.element_name = *v;
		return Status();
	}
	if (is("Bidirectional")) {
		if (prop.value.kind != MofValue::Kind::kBoolean)
			return WrongType(prop, "a boolean");
		if (prop.value.boolean)
			return ErrorAt(prop.value_pos,
			               "Bidirectional pipes are not supported "
			               "(a pipe mirrors its source system to "
			               "its target system)",
			               EOPNOTSUPP);
		return Status();
	}
	if (is("InstanceID") || is("Caption") || is("Description")) {
		auto v = String(prop);
		return v.ok() ? Status() : v.status();
	}
	return ErrorAt(prop.name_pos, "unknown property " + name);
}

} // namespace

PipeSettings GoalPatch::ApplyTo(PipeSettings base) const
{
	if (mode)
		base.mode = *mode;
	if (failure_policy)
		base.failure_policy = *failure_policy;
	if (max_lag_kib)
		base.max_lag_kib = *max_lag_kib;
	if (resync_rate_kibps)
		base.resync_rate_kibps = *resync_rate_kibps;
	if (region_kib)
		base.region_kib = *region_kib;
	if (element_name)
		base.element_name = *element_name;
	return base;
}

Result<PipeSettings> ParseGoal(std::string_view text)
{
	auto patch = ParseGoalPatch(text);
	if (!patch.ok())
		return patch.status();
	return patch->ApplyTo(PipeSettings());
}

Result<GoalPatch> ParseGoalPatch(std::string_view text, Status *unsupported)
{
	GoalPatch settings;
	if (MofIsEmpty(text))
		return settings;
	auto inst = ParseMofInstance(text, kWhat);
	if (!inst.ok())
		return inst.status();
	if (!EqualsIgnoreCase(inst->class_name, "CIM_SettingData") &&
	    !EqualsIgnoreCase(inst->class_name, "REPLIPIPE_PipeSettingData"))
		return TextError(kWhat, text, inst->class_pos,
		                 "class " + inst->class_name +
		                         " is not CIM_SettingData or "
		                         "REPLIPIPE_PipeSettingData");
	// Every property is read: an invalid one makes the Goal invalid
	// wherever it stands, and only a Goal otherwise valid is Not
	// Supported (DESIGN.md). Of each kind, the first error is told.
	GoalReader reader(text);
	Status not_offered;
	for (const MofProperty &prop : inst->properties) {
		Status st = reader.Apply(prop, settings);
		if (st.ok())
			continue;
		if (st.err() != EOPNOTSUPP)
			return st;
		if (not_offered.ok())
			not_offered = st;
	}
	if (not_offered.ok())
		return settings;
	if (!unsupported)
		return not_offered;
	*unsupported = not_offered;
	return settings;
}

std::string FormatGoal(const PipeSettings &s)
{
	std::string out = "instance of REPLIPIPE_PipeSettingData {\n";
	out += "\tMode = " + QuoteString(ModeName(s.mode)) + ";\n";
	out += "\tFailurePolicy = " +
	       QuoteString(FailurePolicyName(s.failure_policy)) + ";\n";
	out += "\tMaxLagKiB = " + std::to_string(s.max_lag_kib) + ";\n";
	out += "\tResyncRateLimitKiBps = " +
	       std::to_string(s.resync_rate_kibps) + ";\n";
	out += "\tRegionSizeKiB = " + std::to_string(s.region_kib) + ";\n";
	out += "\tElementName = " + QuoteString(s.element_name) + ";\n";
	return out + "};\n";
}

} // namespace replipipe
