// The Goal parameter: MOF text of one CIM_SettingData or
// REPLIPIPE_PipeSettingData instance -> PipeSettings.
//
// Properties (names case-insensitive): Mode, FailurePolicy, MaxLagKiB,
// ResyncRateLimitKiBps, RegionSizeKiB, ElementName; DESIGN.md gives values
// and defaults. A Goal sets the properties it names; the others (and those
// given as NULL) keep their values: the defaults on create, the pipe's
// current settings on modify (docs/decisions.md, 6). Also accepted and ignored:
// InstanceID, Caption, Description (strings every CIM_SettingData carries, so a
// client that serializes a whole instance is not refused for them).
//
// Valid CIM that this provider does not offer, err() EOPNOTSUPP
// (ReturnValue 1, Not Supported):
//   Mode = "Adaptive" or "Active" (the other CIM_StorageSynchronized modes)
//   Bidirectional = TRUE (a bidirectional pipe; pipes here are one-way)
// Everything else wrong, err() EINVAL (ReturnValue 5): syntax, other classes,
// unknown property (the message names it), wrong type, out of range.
// Every property is checked, and an EINVAL error wins over an EOPNOTSUPP
// one whatever their order: 1 only for a Goal that is otherwise valid.
// Messages point at the offending text (line, column, caret).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "model.h"
#include "status.h"

namespace replipipe
{

// The properties a Goal gives a value; nullopt: left out (or NULL).
struct GoalPatch {
	std::optional<Mode> mode;
	std::optional<FailurePolicy> failure_policy;
	std::optional<uint32_t> max_lag_kib;
	std::optional<uint32_t> resync_rate_kibps;
	std::optional<uint32_t> region_kib;
	std::optional<std::string> element_name;

	// base with the given properties replaced.
	PipeSettings ApplyTo(PipeSettings base) const;
	bool operator==(const GoalPatch &) const = default;
};

// Blank text (or only comments) gives an empty patch. unsupported: when
// given, a Goal that is otherwise valid but asks for what is not offered
// gives its patch (the offered properties) and sets *unsupported to the
// EOPNOTSUPP error, so that a caller can check those values too before it
// answers Not Supported; when not, that Goal is the EOPNOTSUPP error.
Result<GoalPatch> ParseGoalPatch(std::string_view text,
                                 Status *unsupported = nullptr);
// The patch applied to the defaults (create).
Result<PipeSettings> ParseGoal(std::string_view text);

// The Goal MOF that ParseGoal() reads back into settings (for docs, tests
// and the CLI's display).
std::string FormatGoal(const PipeSettings &settings);

} // namespace replipipe
