// The pipe definitions as the controller stores them (store.h) and the
// conversions to what the kernel is told (KernelPipeSpec) and to what CIM
// clients see (CIM_NetworkPipe references).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernel_api.h"
#include "status.h"

namespace replipipe
{

constexpr uint32_t kDefaultMaxLagKiB = 65536;
constexpr uint32_t kDefaultRegionKiB = 64;
// The Goal's ranges (DESIGN.md), also checked when the store is read.
constexpr uint32_t kMinRegionKiB = 4;
constexpr uint32_t kMaxRegionKiB = 65536;
constexpr uint32_t kMinMaxLagKiB = 64;
constexpr uint32_t kMaxMaxLagKiB = 1024 * 1024;

// What a Goal sets (goal.h); defaults are DESIGN.md's.
struct PipeSettings {
	Mode mode = Mode::kSynchronous;
	FailurePolicy failure_policy = FailurePolicy::kDegrade;
	uint32_t max_lag_kib = kDefaultMaxLagKiB; // async only
	uint32_t resync_rate_kibps = 0;           // 0 = unlimited
	uint32_t region_kib = kDefaultRegionKiB;  // power of two, 4..65536
	std::string element_name;                 // the Goal's ElementName
	bool operator==(const PipeSettings &) const = default;
};

struct PairRecord {
	std::string source; // "replipipe_<N>/<name>"
	std::string target; // absolute block device path
	bool operator==(const PairRecord &) const = default;
};

struct PipeRecord {
	std::string
	        instance_id; // UUID v4 text; InstanceID is "replipipe:" + it
	std::string name;    // PipeElementName; not unique
	std::string source_system;
	std::string target_system;
	PipeSettings settings;
	std::vector<PairRecord> pairs;
	bool operator==(const PipeRecord &) const = default;
};

// Mode, FailurePolicy from their names (ModeName() etc. in kernel_api.h),
// ASCII case-insensitive.
std::optional<Mode> ParseModeName(std::string_view name);
std::optional<FailurePolicy> ParseFailurePolicyName(std::string_view name);
std::optional<PairState> ParsePairStateName(std::string_view name);

// The spec PIPE_SET gets. Pairs the kernel already has (same source and
// target) keep their state whatever assume_clean says; new ones start a full
// resync because assume_clean is false: the controller never claims a
// target is already a copy.
KernelPipeSpec ToKernelSpec(const PipeRecord &pipe);

// JSON form of one pipe (store.h writes a list of these).
nlohmann::json PipeToJson(const PipeRecord &pipe);
// Validates as it reads; errors say which field is wrong and why.
Result<PipeRecord> PipeFromJson(const nlohmann::json &j);

// "replipipe:<uuid>"
std::string InstanceIdOf(const PipeRecord &pipe);
std::string InstanceIdFor(std::string_view uuid);
// CIM_NetworkPipe.InstanceID="replipipe:<uuid>"
std::string PipeReference(std::string_view uuid);
// For messages: pipe <reference> ("<name>"), the name only when it has one.
std::string PipeLabel(const PipeRecord &pipe);

// The UUID named by text: a CIM_NetworkPipe reference (optionally with
// //host/namespace:), its InstanceID "replipipe:<uuid>", or the bare UUID.
// std::nullopt when text is none of those; a Status error (EINVAL) when it
// is a CIM_NetworkPipe reference that is malformed.
Result<std::optional<std::string>> ParsePipeIdentifier(std::string_view text);

// A UUID in its 8-4-4-4-12 lower-case hex text form.
bool IsUuidText(std::string_view text);
// A new random (v4) UUID: /proc/sys/kernel/random/uuid, or
// std::random_device when that cannot be read.
std::string NewUuid();

} // namespace replipipe
