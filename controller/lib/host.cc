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
	return EqualsIgnoreCase(name, "localhost") ||
	       EqualsIgnoreCase(name, host_name) ||
	       EqualsIgnoreCase(name, ShortName());
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
