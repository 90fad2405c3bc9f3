// MOF instance text, the form CIM passes a Goal in:
//   instance of Class { Prop = value; ... };
// Values: "strings" (escapes \" \\ \' \b \t \n \f \r \xH..H; adjacent strings
// concatenate), integers (negative, 0x hex), TRUE/FALSE, NULL, arrays
// {v, v} of those. // and /* */ comments anywhere blanks may be. The final
// ';' is optional. Keywords and property names are case-insensitive; a
// property given twice is an error.
//
// Every property keeps its offset in the text so that a caller that rejects
// it later (goal.cc) can point at it with TextError().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace replipipe
{

struct MofValue {
	enum class Kind { kNull, kString, kInteger, kBoolean, kArray };
	Kind kind = Kind::kNull;
	std::string string;
	int64_t integer = 0;
	bool boolean = false;
	std::vector<MofValue> elements; // kArray

	// "a string", "an integer", ... for error messages.
	const char *KindName() const;
};

struct MofProperty {
	std::string name;
	MofValue value;
	size_t name_pos = 0;  // offset of the name in the text
	size_t value_pos = 0; // offset of the value
};

struct MofInstance {
	std::string class_name;
	size_t class_pos = 0;
	std::vector<MofProperty> properties;
};

// Errors (err() EINVAL) give line and column and show the line with a caret;
// what names the text ("Goal").
Result<MofInstance> ParseMofInstance(std::string_view text,
                                     std::string_view what = "MOF");

// True when text holds nothing but blanks and comments.
bool MofIsEmpty(std::string_view text);

} // namespace replipipe
