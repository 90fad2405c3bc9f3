#include "host.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>

#include "object_path.h"
#include "text_scan.h"

namespace replipipe
{
namespace
{

bool EndsWithIgnoreCase(std::string_view s, std::string_view suffix)
{
	return s.size() >= suffix.size() &&
	       EqualsIgnoreCase(s.substr(s.size() - suffix.size()), suffix);
}

} // namespace

HostIdentity HostIdentity::FromSystem()
{
	char buf[256] = {};
	if (::gethostname(buf, sizeof(buf) - 1) != 0)
		return HostIdentity{"localhost"};
	return HostIdentity{buf};
}

std::string HostIdentity::ShortName() const
{
	return host_name.substr(0, host_name.find('.'));
}

bool HostIdentity::IsThisHost(std::string_view name) const
{
	if (EqualsIgnoreCase(name, "localhost") ||
	    EqualsIgnoreCase(name, host_name) ||
	    EqualsIgnoreCase(name, ShortName()))
		return true;
	// Debian's /etc/hostname holds the short name and `hostname -f` adds
	// the domain from /etc/hosts or DNS: with a short host name, a fully
	// qualified name whose first label is it names this host. (Asking the
	// resolver instead could block the daemon on an unreachable DNS.)
	// A dotted IPv4 address is no host name with a domain.
	const size_t dot = name.find('.');
	if (host_name.find('.') != std::string::npos ||
	    dot == std::string_view::npos || dot == 0)
		return false;
	const std::string_view first = name.substr(0, dot);
	const bool numeric =
	        first.find_first_not_of("0123456789") == std::string_view::npos;
	return !numeric && EqualsIgnoreCase(first, host_name);
}

bool HostIdentity::SameSystem(std::string_view a, std::string_view b) const
{
	return EqualsIgnoreCase(a, b) || (IsThisHost(a) && IsThisHost(b));
}

bool IsValidSystemName(std::string_view name)
{
	if (name.empty() || name.size() > 255)
		return false;
	for (char c : name)
		if (!std::isalnum(static_cast<unsigned char>(c)) &&
		    std::string_view("-._:[]").find(c) ==
		            std::string_view::npos)
			return false;
	return true;
}

Result<std::string> ParseSystemName(std::string_view text,
                                    std::string_view what)
{
	const std::string prefix(what);
	std::string name(text);
	if (LooksLikeObjectPath(text)) {
		auto path = ParseObjectPath(text);
		if (!path.ok())
			return path.status().Context(prefix);
		if (!EndsWithIgnoreCase(path->class_name, "ComputerSystem"))
			return Status::Error(prefix + ": " + path->class_name +
			                             " is not a "
			                             "CIM_ComputerSystem",
			                     EINVAL);
		const KeyValue *key = path->Find("Name");
		if (!key || key->type != KeyValue::Type::kString)
			return Status::Error(prefix + ": the reference has no "
			                              "Name string key",
			                     EINVAL);
		name = key->string;
	}
	if (!IsValidSystemName(name))
		return Status::Error(prefix + ": \"" + name +
		                             "\" is not a host name",
		                     EINVAL);
	return name;
}

} // namespace replipipe
