// The Goal parameter: MOF text of one CIM_SettingData or
// REPLIPIPE_PipeSettingData instance -> PipeSettings.
//
// Properties (names case-insensitive, NULL = default): Mode, FailurePolicy,
// MaxLagKiB, ResyncRateLimitKiBps, RegionSizeKiB, ElementName; DESIGN.md
// gives values and defaults. Also accepted and ignored: InstanceID, Caption,
// Description (strings every CIM_SettingData carries, so a client that
// serializes a whole instance is not refused for them).
//
// Valid CIM that this provider does not offer, err() EOPNOTSUPP
// (ReturnValue 1, Not Supported):
//   Mode = "Adaptive" or "Active" (the other CIM_StorageSynchronized modes)
//   Bidirectional = TRUE (a bidirectional pipe; pipes here are one-way)
// Everything else wrong, err() EINVAL (ReturnValue 5): syntax, other classes,
// unknown property (the message names it), wrong type, out of range.
// Messages point at the offending text (line, column, caret).
#pragma once

#include <string_view>

#include "model.h"
#include "status.h"

namespace replipipe
{

// Blank text (or only comments) gives the defaults.
Result<PipeSettings> ParseGoal(std::string_view text);

// The Goal MOF that ParseGoal() reads back into settings (for docs, tests
// and the CLI's display).
std::string FormatGoal(const PipeSettings &settings);

} // namespace replipipe
