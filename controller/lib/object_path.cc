#include "object_path.h"

#include <cerrno>

#include "text_scan.h"

namespace replipipe
{
namespace
{

constexpr const char *kWhat = "object path";

Result<KeyValue> ParseKeyValue(TextScanner &scan)
{
	char c = scan.Peek();
	if (c == '"') {
		auto s = scan.QuotedString();
		if (!s.ok())
			return s.status();
		return KeyValue::String(std::move(*s));
	}
	if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
		auto i = scan.Integer();
		if (!i.ok())
			return i.status();
		return KeyValue::Integer(*i);
	}
	if (scan.ConsumeKeyword("true"))
		return KeyValue::Boolean(true);
	if (scan.ConsumeKeyword("false"))
		return KeyValue::Boolean(false);
	return scan.Error("expected a key value (a \"string\", an integer, "
	                  "TRUE or FALSE), found " +
	                  scan.DescribeNext());
}

// "//host/namespace:" or "namespace:" before the class name.
Status ParsePrefix(TextScanner &scan, ObjectPath &path)
{
	std::string_view rest = scan.text().substr(scan.pos());
	if (rest.starts_with("//")) {
		size_t slash = rest.find('/', 2);
		if (slash == std::string_view::npos || slash == 2)
			return scan.Error("expected //host/namespace: before "
			                  "the class name");
		path.host = std::string(rest.substr(2, slash - 2));
		scan.Advance(slash + 1);
		rest = rest.substr(slash + 1);
		size_t colon = rest.find(':');
		if (colon == std::string_view::npos || colon == 0)
			return scan.Error("expected namespace: after "
			                  "//" +
			                  path.host + "/");
		path.name_space = std::string(rest.substr(0, colon));
		scan.Advance(colon + 1);
		return Status();
	}
	// A ':' before any '.', '=' or '"' can only end a namespace: class
	// names have no ':'.
	size_t stop = rest.find_first_of(".=\"");
	size_t colon = rest.substr(0, stop).find(':');
	if (colon != std::string_view::npos) {
		if (colon == 0)
			return scan.Error("empty namespace before ':'");
		path.name_space = std::string(rest.substr(0, colon));
		scan.Advance(colon + 1);
	}
	return Status();
}

} // namespace

const KeyValue *ObjectPath::Find(std::string_view name) const
{
	for (const KeyBinding &k : keys)
		if (EqualsIgnoreCase(k.name, name))
			return &k.value;
	return nullptr;
}

bool ObjectPath::IsClass(std::string_view name) const
{
	return EqualsIgnoreCase(class_name, name);
}

bool LooksLikeObjectPath(std::string_view text)
{
	size_t i = text.find_first_not_of(" \t");
	return (i != std::string_view::npos &&
	        text.substr(i).starts_with("//")) ||
	       text.find('=') != std::string_view::npos;
}

Result<ObjectPath> ParseObjectPath(std::string_view text)
{
	TextScanner scan(text, kWhat);
	ObjectPath path;
	(void)scan.SkipSpace(false);
	if (Status st = ParsePrefix(scan, path); !st.ok())
		return st;
	auto cls = scan.Identifier("a class name");
	if (!cls.ok())
		return cls.status();
	path.class_name = std::move(*cls);
	(void)scan.SkipSpace(false);
	if (scan.Consume('.')) {
		do {
			(void)scan.SkipSpace(false);
			size_t key_pos = scan.pos();
			auto name = scan.Identifier("a key name");
			if (!name.ok())
				return name.status();
			if (path.Find(*name))
				return scan.ErrorAt(key_pos,
				                    "key " + *name +
				                            " given twice");
			(void)scan.SkipSpace(false);
			if (!scan.Consume('='))
				return scan.Error("expected '=' after key " +
				                  *name + ", found " +
				                  scan.DescribeNext());
			(void)scan.SkipSpace(false);
			auto value = ParseKeyValue(scan);
			if (!value.ok())
				return value.status();
			path.keys.push_back(
			        {std::move(*name), std::move(*value)});
			(void)scan.SkipSpace(false);
		} while (scan.Consume(','));
	}
	if (!scan.AtEnd())
		return scan.Error("unexpected " + scan.DescribeNext() +
		                  (path.keys.empty()
		                           ? " (expected '.' and keys)"
		                           : " (expected ',' or the end)"));
	return path;
}

std::string QuoteString(std::string_view s)
{
	std::string out = "\"";
	for (char c : s) {
		if (c == '"' || c == '\\')
			out += '\\';
		if (c == '\n') {
			out += "\\n";
			continue;
		}
		out += c;
	}
	return out + "\"";
}

std::string FormatObjectPath(const ObjectPath &path)
{
	std::string out;
	if (!path.host.empty())
		out += "//" + path.host + "/";
	if (!path.name_space.empty())
		out += path.name_space + ":";
	out += path.class_name;
	for (size_t i = 0; i < path.keys.size(); i++) {
		const KeyBinding &k = path.keys[i];
		out += i == 0 ? "." : ",";
		out += k.name + "=";
		switch (k.value.type) {
		case KeyValue::Type::kString:
			out += QuoteString(k.value.string);
			break;
		case KeyValue::Type::kInteger:
			out += std::to_string(k.value.integer);
			break;
		case KeyValue::Type::kBoolean:
			out += k.value.boolean ? "TRUE" : "FALSE";
			break;
		}
	}
	return out;
}

} // namespace replipipe
