#include "iscsi_url.h"

#include <arpa/inet.h>

#include <cctype>
#include <cerrno>

namespace replipipe
{
namespace
{

constexpr std::string_view kScheme = "iscsi://";

std::string Lower(std::string_view s)
{
	std::string out(s);
	for (char &c : out)
		c = static_cast<char>(
		        std::tolower(static_cast<unsigned char>(c)));
	return out;
}

Status Bad(std::string_view text, const std::string &why)
{
	return Status::Error("iSCSI endpoint \"" + std::string(text) +
	                             "\": " + why +
	                             " (expected iscsi://<portal-host>[:<port>]"
	                             "/<target-iqn>/<lun>)",
	                     EINVAL);
}

bool IsHostName(std::string_view h)
{
	if (h.empty() || h.size() > 253 || h.front() == '.' ||
	    h.front() == '-' || h.back() == '.' || h.back() == '-')
		return false;
	for (char c : h)
		if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' &&
		    c != '.')
			return false;
	return h.find("..") == std::string_view::npos;
}

// Decimal without sign or leading '+'; false on overflow past max.
bool ParseDecimal(std::string_view s, uint32_t max, uint32_t *out)
{
	if (s.empty() || s.size() > 10)
		return false;
	uint64_t v = 0;
	for (char c : s) {
		if (!std::isdigit(static_cast<unsigned char>(c)))
			return false;
		v = v * 10 + static_cast<uint64_t>(c - '0');
	}
	if (v > max)
		return false;
	*out = static_cast<uint32_t>(v);
	return true;
}

} // namespace

std::string IscsiUrl::Portal() const
{
	const bool v6 = host.find(':') != std::string::npos;
	return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string IscsiUrl::Canonical() const
{
	return std::string(kScheme) + Portal() + "/" + iqn + "/" +
	       std::to_string(lun);
}

bool LooksLikeIscsiUrl(std::string_view text)
{
	return text.size() >= kScheme.size() &&
	       Lower(text.substr(0, kScheme.size())) == kScheme;
}

bool IsIscsiName(std::string_view name)
{
	if (name.size() < 5 || name.size() > kIscsiNameMaxLen)
		return false;
	if (!name.starts_with("iqn.") && !name.starts_with("eui.") &&
	    !name.starts_with("naa."))
		return false;
	for (char c : name)
		if (!(std::islower(static_cast<unsigned char>(c)) ||
		      std::isdigit(static_cast<unsigned char>(c)) || c == '.' ||
		      c == '-' || c == ':'))
			return false;
	return true;
}

Result<IscsiUrl> ParseIscsiUrl(std::string_view text)
{
	if (!LooksLikeIscsiUrl(text))
		return Bad(text, "not an iscsi:// URL");
	for (char c : text)
		if (static_cast<unsigned char>(c) <= ' ' ||
		    static_cast<unsigned char>(c) >= 0x7f)
			return Bad(text, "blanks, control or non-ASCII "
			                 "characters are not allowed");
	std::string_view rest = text.substr(kScheme.size());
	size_t slash = rest.find('/');
	if (slash == std::string_view::npos)
		return Bad(text, "no target IQN");
	std::string_view authority = rest.substr(0, slash);
	rest = rest.substr(slash + 1);

	IscsiUrl url;
	std::string_view host, port;
	if (authority.starts_with("[")) {
		size_t close = authority.find(']');
		if (close == std::string_view::npos)
			return Bad(text, "unterminated [IPv6 address]");
		host = authority.substr(1, close - 1);
		std::string_view after = authority.substr(close + 1);
		if (!after.empty()) {
			if (after.front() != ':')
				return Bad(text, "junk after ]");
			port = after.substr(1);
			if (port.empty())
				return Bad(text, "empty port");
		}
		in6_addr a6;
		if (::inet_pton(AF_INET6, std::string(host).c_str(), &a6) != 1)
			return Bad(text, "\"" + std::string(host) +
			                         "\" is not an IPv6 address");
	} else {
		size_t colon = authority.find(':');
		host = authority.substr(0, colon);
		if (colon != std::string_view::npos) {
			port = authority.substr(colon + 1);
			if (port.empty())
				return Bad(text, "empty port");
		}
		if (host.empty())
			return Bad(text, "no portal host");
		if (!IsHostName(host))
			return Bad(text, "\"" + std::string(host) +
			                         "\" is not a host name or "
			                         "address");
	}
	url.host = Lower(host);
	if (!port.empty()) {
		uint32_t p = 0;
		if (!ParseDecimal(port, 65535, &p) || p == 0)
			return Bad(text, "port \"" + std::string(port) +
			                         "\" is not 1..65535");
		url.port = static_cast<uint16_t>(p);
	}

	slash = rest.find('/');
	if (slash == std::string_view::npos)
		return Bad(text, "no LUN after the target IQN");
	std::string iqn = Lower(rest.substr(0, slash));
	std::string_view lun = rest.substr(slash + 1);
	if (iqn.empty())
		return Bad(text, "empty target IQN");
	if (!IsIscsiName(iqn))
		return Bad(text, "\"" + iqn +
		                         "\" is not an iSCSI name (iqn., eui. "
		                         "or naa., then letters, digits and "
		                         "\".-:\", at most 223 bytes)");
	url.iqn = std::move(iqn);
	if (lun.empty())
		return Bad(text, "empty LUN");
	if (!ParseDecimal(lun, kIscsiMaxLun, &url.lun))
		return Bad(text, "LUN \"" + std::string(lun) +
		                         "\" is not a number 0.." +
		                         std::to_string(kIscsiMaxLun));
	return url;
}

} // namespace replipipe
