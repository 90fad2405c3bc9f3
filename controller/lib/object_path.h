// WBEM object paths (DSP0207 untyped form):
//   [//host/namespace:]Class[.Key="v",Key2=3,Key3=TRUE]
// Strings take \" and \\ escapes (and the MOF ones); integers may be
// negative or 0x hex; booleans are TRUE/FALSE in any case. Key names are
// case-insensitive, in any order, at most once each. Blanks are tolerated
// around '.', ',' and '=' and at both ends.
//
// FormatObjectPath() writes a text that ParseObjectPath() reads back into an
// equal ObjectPath.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace replipipe
{

struct KeyValue {
	enum class Type { kString, kInteger, kBoolean };
	Type type = Type::kString;
	std::string string;
	int64_t integer = 0;
	bool boolean = false;

	static KeyValue String(std::string s)
	{
		KeyValue v;
		v.string = std::move(s);
		return v;
	}
	static KeyValue Integer(int64_t i)
	{
		KeyValue v;
		v.type = Type::kInteger;
		v.integer = i;
		return v;
	}
	static KeyValue Boolean(bool b)
	{
		KeyValue v;
		v.type = Type::kBoolean;
		v.boolean = b;
		return v;
	}
	bool operator==(const KeyValue &) const = default;
};

struct KeyBinding {
	std::string name;
	KeyValue value;
	bool operator==(const KeyBinding &) const = default;
};

struct ObjectPath {
	std::string host;       // empty when the path has no //host/ns: part
	std::string name_space; // e.g. "root/cimv2"; may be set without host
	std::string class_name;
	std::vector<KeyBinding> keys; // in the order given

	// The key named name (case-insensitive), or nullptr.
	const KeyValue *Find(std::string_view name) const;
	// The class name equals name (case-insensitive).
	bool IsClass(std::string_view name) const;
	bool operator==(const ObjectPath &) const = default;
};

// Errors (err() EINVAL) name the column and show the text with a caret.
Result<ObjectPath> ParseObjectPath(std::string_view text);
std::string FormatObjectPath(const ObjectPath &path);
// "..." with " and \ escaped.
std::string QuoteString(std::string_view s);

// True when text should be read as an object path rather than a bare name:
// it starts with "//" or holds a '=' (no host name, backstore name or
// device path of ours does).
bool LooksLikeObjectPath(std::string_view text);

} // namespace replipipe
