// HostIdentity: the names under which this host is the SourceSystem.
#pragma once

#include <string>
#include <string_view>

#include "status.h"

namespace replipipe
{

struct HostIdentity {
	std::string host_name; // gethostname(), e.g. "node1.example.com"

	// gethostname() of this machine.
	static HostIdentity FromSystem();

	// name is the host name, its short form (before the first '.'),
	// "localhost", or, when the host name is short, that name with a
	// domain ("node1.example.com" for "node1", what `hostname -f`
	// prints); host names compare case-insensitively (RFC 4343).
	bool IsThisHost(std::string_view name) const;
	// a and b name one system: equal but for case, or both this host
	// ("localhost" and the host name, say).
	bool SameSystem(std::string_view a, std::string_view b) const;
	// "node1" of "node1.example.com".
	std::string ShortName() const;
};

// A syntactically valid system name: 1 to 255 characters of letters,
// digits, '-', '.', '_', ':' (IPv6) and '[' ']'.
bool IsValidSystemName(std::string_view name);

// The host name SourceSystem/TargetSystem give: a CIM_ComputerSystem
// reference (its Name key; any class whose name ends in ComputerSystem) or
// a bare host name. what ("SourceSystem") prefixes errors; err() EINVAL.
Result<std::string> ParseSystemName(std::string_view text,
                                    std::string_view what);

} // namespace replipipe
