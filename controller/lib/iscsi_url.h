// iSCSI target endpoints: "iscsi://<portal-host>[:<port>]/<target-iqn>/<lun>"
// (docs/iscsi.md). A TargetEndpoint in this form names a LUN on the peer's
// iSCSI target; the pipe logs in to it (iscsi_sessions.h) and the kernel
// mirrors to the SCSI disk the LUN becomes.
//
// Syntax, checked by ParseIscsiUrl (errors err() EINVAL, ReturnValue 5):
//   scheme      "iscsi://", ASCII case-insensitive
//   portal-host a host name (letters, digits, '-', '.'), an IPv4 address, or
//               an IPv6 address in brackets ("[fd00::1]")
//   port        1..65535, default 3260
//   target-iqn  an iSCSI name: "iqn.", "eui." or "naa." followed by letters,
//               digits and ".-:"; at most 223 bytes; iSCSI names are
//               case-insensitive, so it is kept in lower case
//   lun         decimal, 0..16383 (Linux SAM flat addressing)
// The canonical text (Canonical()) is what the store keeps: lower-case
// scheme, host and IQN, the port always written.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "status.h"

namespace replipipe
{

inline constexpr uint16_t kIscsiDefaultPort = 3260;
inline constexpr uint32_t kIscsiMaxLun = 16383;
inline constexpr size_t kIscsiNameMaxLen = 223; // RFC 3720 3.2.6.1

struct IscsiUrl {
	std::string host; // without brackets for IPv6
	uint16_t port = kIscsiDefaultPort;
	std::string iqn;
	uint32_t lun = 0;

	// "host:port" ("[v6]:port"): what iscsiadm's -p takes.
	std::string Portal() const;
	// "iscsi://host:port/iqn/lun"
	std::string Canonical() const;
	bool operator==(const IscsiUrl &) const = default;
};

// True when text starts with "iscsi://" (any case): it is meant as an iSCSI
// endpoint, so a parse error is reported as such.
bool LooksLikeIscsiUrl(std::string_view text);
Result<IscsiUrl> ParseIscsiUrl(std::string_view text);
// iSCSI name rule of ParseIscsiUrl (input already lower case).
bool IsIscsiName(std::string_view name);

} // namespace replipipe
