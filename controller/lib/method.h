// The CIM method CreateOrModifyReplicationPipe and the other operations the
// control socket offers, as one service object that the daemon owns.
//
// Semantics and return values: shared DESIGN.md, "CreateOrModifyReplicationPipe
// on Linux". A call that does not return kCompleted changes nothing: neither
// the store nor the kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace replipipe
{

// ReturnValue of the CIM method (DMTF values).
enum class ReturnValue : uint32_t {
	kCompleted = 0,
	kNotSupported = 1,
	kUnspecifiedError = 2,
	kTimeout = 3,
	kFailed = 4,
	kInvalidParameter = 5,
	kBusy = 4096,
};

// The method's parameters. std::nullopt stands for a NULL parameter.
struct CreateOrModifyCall {
	std::string pipe_element_name;
	std::string source_system; // CIM_ComputerSystem reference or host name
	std::string target_system;
	std::optional<std::vector<std::string>> source_endpoints;
	std::optional<std::vector<std::string>> target_endpoints;
	std::string goal; // MOF text; empty means defaults
	std::optional<std::string> replication_pipe; // in: pipe to modify
};

struct MethodOutcome {
	ReturnValue return_value = ReturnValue::kUnspecifiedError;
	std::string
	        replication_pipe; // out: CIM_NetworkPipe reference on success
	std::string error;        // why, when return_value != kCompleted
};

} // namespace replipipe
