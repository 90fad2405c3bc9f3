// TextScanner: the lexer pieces the object-path and MOF parsers share
// (identifiers, quoted strings with escapes, integers) and the one place
// that turns an offset into "line L, column C" with the line and a caret,
// so that every parse error points at the offending text.
//
// Not thread-safe; one scanner per parse. The text must outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "status.h"

namespace replipipe
{

// "<what>: line L, column C: <message>" (just "column C" for one-line text),
// then the offending line and a caret under position pos. err() is EINVAL.
Status TextError(std::string_view what, std::string_view text, size_t pos,
                 const std::string &message);

class TextScanner
{
public:
	// what names the text in errors ("object path", "Goal").
	TextScanner(std::string_view text, std::string what)
	    : text_(text), what_(std::move(what))
	{
	}

	std::string_view text() const { return text_; }
	size_t pos() const { return pos_; }
	bool AtEnd() const { return pos_ >= text_.size(); }
	char Peek(size_t ahead = 0) const
	{
		return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
	}
	void Advance(size_t n = 1) { pos_ = std::min(pos_ + n, text_.size()); }

	// Skips blanks; with comments, also // and /* */ comments (an
	// unterminated /* is an error).
	Status SkipSpace(bool comments);
	// Consumes c if it is next.
	bool Consume(char c);
	// Consumes word (ASCII case-insensitive) when it is next and not
	// followed by an identifier character.
	bool ConsumeKeyword(std::string_view word);

	static bool IsIdentStart(char c);
	static bool IsIdentChar(char c);
	// [A-Za-z_][A-Za-z0-9_]*
	Result<std::string> Identifier(std::string_view what_for);
	// A "..." string: \" \\ \' \b \t \n \f \r and \xH..H (1 to 4 hex
	// digits, a UCS-2 code point, stored as UTF-8). The result is always
	// valid UTF-8: a surrogate (\xD800-\xDFFF) or a malformed UTF-8
	// sequence in the text is an error.
	Result<std::string> QuotedString();
	// [-+]?(0x[0-9a-f]+|[0-9]+), range of int64_t.
	Result<int64_t> Integer();

	Status ErrorAt(size_t pos, const std::string &message) const
	{
		return TextError(what_, text_, pos, message);
	}
	Status Error(const std::string &message) const
	{
		return ErrorAt(pos_, message);
	}
	// "'x'" for the next character, or "end of text".
	std::string DescribeNext() const;

private:
	std::string_view text_;
	std::string what_;
	size_t pos_ = 0;
};

// ASCII case-insensitive equality (CIM names are case-insensitive).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// Length of the well-formed UTF-8 sequence (RFC 3629: shortest form, no
// surrogates, at most U+10FFFF) at the start of text; 0 when there is none.
size_t Utf8SequenceLength(std::string_view text);
// Offset of the first byte of text that is not well-formed UTF-8, or
// std::string_view::npos when all of it is.
size_t InvalidUtf8At(std::string_view text);

// A name or a path kept as text: UTF-8 without NUL or other control
// characters (below 0x20, and 0x7f). stat() and the kernel (nla_put_string)
// read C strings, so an embedded NUL would have them see a shorter name
// than the store keeps (and the resync jobs would never match the pair).
// MOF text (a Goal) may hold blanks: tab, line feed, vertical tab, form feed
// and carriage return. Errors name the value as `name` and say where.
Status CheckText(std::string_view value, const std::string &name,
                 bool mof_text = false);

} // namespace replipipe
