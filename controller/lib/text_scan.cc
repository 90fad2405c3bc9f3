#include "text_scan.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <limits>

namespace replipipe
{
namespace
{

int HexDigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool IsSurrogate(uint32_t cp)
{
	return cp >= 0xd800 && cp <= 0xdfff;
}

// cp < 0x10000 and not a surrogate: 1 to 3 bytes.
void AppendUtf8(std::string &out, uint32_t cp)
{
	if (cp < 0x80) {
		out += static_cast<char>(cp);
	} else if (cp < 0x800) {
		out += static_cast<char>(0xc0 | (cp >> 6));
		out += static_cast<char>(0x80 | (cp & 0x3f));
	} else {
		out += static_cast<char>(0xe0 | (cp >> 12));
		out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
		out += static_cast<char>(0x80 | (cp & 0x3f));
	}
}

} // namespace

size_t Utf8SequenceLength(std::string_view text)
{
	if (text.empty())
		return 0;
	const auto byte = [&](size_t i) {
		return static_cast<unsigned char>(text[i]);
	};
	const unsigned char lead = byte(0);
	if (lead < 0x80)
		return 1;
	size_t len;
	uint32_t cp, min;
	if (lead >= 0xc2 && lead <= 0xdf) {
		len = 2;
		cp = lead & 0x1f;
		min = 0x80;
	} else if (lead >= 0xe0 && lead <= 0xef) {
		len = 3;
		cp = lead & 0x0f;
		min = 0x800;
	} else if (lead >= 0xf0 && lead <= 0xf4) {
		len = 4;
		cp = lead & 0x07;
		min = 0x10000;
	} else {
		return 0; // a continuation byte, 0xc0/0xc1 or 0xf5..0xff
	}
	if (text.size() < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((byte(i) & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (byte(i) & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || IsSurrogate(cp))
		return 0;
	return len;
}

size_t InvalidUtf8At(std::string_view text)
{
	for (size_t i = 0; i < text.size();) {
		const size_t n = Utf8SequenceLength(text.substr(i));
		if (n == 0)
			return i;
		i += n;
	}
	return std::string_view::npos;
}

Status CheckText(std::string_view value, const std::string &name, bool mof_text)
{
	if (size_t at = InvalidUtf8At(value); at != std::string_view::npos)
		return Status::Error(name + " is not valid UTF-8 (byte " +
		                             std::to_string(at) + ")",
		                     EINVAL);
	for (size_t i = 0; i < value.size(); i++) {
		const auto c = static_cast<unsigned char>(value[i]);
		if (mof_text && c >= '\t' && c <= '\r')
			continue;
		if (c >= 0x20 && c != 0x7f)
			continue;
		static const char kHex[] = "0123456789abcdef";
		return Status::Error(
		        name + " contains the control character " + "0x" +
		                kHex[c >> 4] + kHex[c & 15] + " (byte " +
		                std::to_string(i) + "); it is not allowed",
		        EINVAL);
	}
	return Status();
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b)
{
	return a.size() == b.size() &&
	       std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
		       return std::tolower(static_cast<unsigned char>(x)) ==
		              std::tolower(static_cast<unsigned char>(y));
	       });
}

Status TextError(std::string_view what, std::string_view text, size_t pos,
                 const std::string &message)
{
	pos = std::min(pos, text.size());
	size_t nl = text.substr(0, pos).rfind('\n');
	size_t line_start = nl == std::string_view::npos ? 0 : nl + 1;
	size_t line_end = text.find('\n', pos);
	if (line_end == std::string_view::npos)
		line_end = text.size();
	size_t line_no =
	        1 + std::count(text.begin(), text.begin() + line_start, '\n');
	bool multi_line = text.find('\n') != std::string_view::npos;

	std::string where =
	        multi_line ? "line " + std::to_string(line_no) + ", column "
	                   : "column ";
	where += std::to_string(pos - line_start + 1);

	// Keep tabs in the caret line so that the caret lines up.
	std::string line(text.substr(line_start, line_end - line_start));
	std::string caret;
	for (size_t i = line_start; i < pos; i++)
		caret += text[i] == '\t' ? '\t' : ' ';
	caret += '^';
	return Status::Error(std::string(what) + ": " + where + ": " + message +
	                             "\n  " + line + "\n  " + caret,
	                     EINVAL);
}

Status TextScanner::SkipSpace(bool comments)
{
	while (!AtEnd()) {
		char c = Peek();
		if (std::isspace(static_cast<unsigned char>(c))) {
			Advance();
		} else if (comments && c == '/' && Peek(1) == '/') {
			while (!AtEnd() && Peek() != '\n')
				Advance();
		} else if (comments && c == '/' && Peek(1) == '*') {
			size_t start = pos_;
			size_t end = text_.find("*/", pos_ + 2);
			if (end == std::string_view::npos)
				return ErrorAt(start,
				               "unterminated /* comment");
			pos_ = end + 2;
		} else {
			break;
		}
	}
	return Status();
}

bool TextScanner::Consume(char c)
{
	if (AtEnd() || Peek() != c)
		return false;
	Advance();
	return true;
}

bool TextScanner::IsIdentStart(char c)
{
	return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}

bool TextScanner::IsIdentChar(char c)
{
	return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

bool TextScanner::ConsumeKeyword(std::string_view word)
{
	if (pos_ + word.size() > text_.size())
		return false;
	if (!EqualsIgnoreCase(text_.substr(pos_, word.size()), word))
		return false;
	if (IsIdentChar(Peek(word.size())))
		return false;
	Advance(word.size());
	return true;
}

std::string TextScanner::DescribeNext() const
{
	if (AtEnd())
		return "end of text";
	return std::string("'") + Peek() + "'";
}

Result<std::string> TextScanner::Identifier(std::string_view what_for)
{
	if (!IsIdentStart(Peek()))
		return Error("expected " + std::string(what_for) + ", found " +
		             DescribeNext());
	size_t start = pos_;
	while (IsIdentChar(Peek()))
		Advance();
	return std::string(text_.substr(start, pos_ - start));
}

Result<std::string> TextScanner::QuotedString()
{
	size_t start = pos_;
	if (!Consume('"'))
		return Error("expected a string in double quotes, found " +
		             DescribeNext());
	std::string out;
	while (true) {
		if (AtEnd())
			return ErrorAt(start, "unterminated string");
		char c = Peek();
		if (c == '"') {
			Advance();
			return out;
		}
		if (c == '\n')
			return ErrorAt(start, "unterminated string (a new "
			                      "line inside quotes)");
		if (c != '\\') {
			const size_t n = Utf8SequenceLength(text_.substr(pos_));
			if (n == 0)
				return Error("invalid UTF-8 in a string");
			out.append(text_.substr(pos_, n));
			Advance(n);
			continue;
		}
		size_t esc = pos_;
		Advance();
		char e = Peek();
		Advance();
		switch (e) {
		case '"':
		case '\\':
		case '\'':
			out += e;
			break;
		case 'b':
			out += '\b';
			break;
		case 't':
			out += '\t';
			break;
		case 'n':
			out += '\n';
			break;
		case 'f':
			out += '\f';
			break;
		case 'r':
			out += '\r';
			break;
		case 'x':
		case 'X': {
			uint32_t cp = 0;
			int digits = 0;
			while (digits < 4 && HexDigit(Peek()) >= 0) {
				cp = cp * 16 + HexDigit(Peek());
				Advance();
				digits++;
			}
			if (digits == 0)
				return ErrorAt(esc, "\\x needs 1 to 4 hex "
				                    "digits");
			if (cp == 0)
				return ErrorAt(esc, "\\x0 (NUL) is not "
				                    "allowed in a string");
			if (IsSurrogate(cp))
				return ErrorAt(esc, "\\x escapes of UTF-16 "
				                    "surrogates (D800 to DFFF) "
				                    "are not characters");
			AppendUtf8(out, cp);
			break;
		}
		default:
			return ErrorAt(esc, std::string("unknown escape \\") +
			                            (e ? std::string(1, e)
			                               : std::string()));
		}
	}
}

Result<int64_t> TextScanner::Integer()
{
	size_t start = pos_;
	bool negative = false;
	if (Peek() == '-' || Peek() == '+') {
		negative = Peek() == '-';
		Advance();
	}
	unsigned base = 10;
	if (Peek() == '0' && (Peek(1) == 'x' || Peek(1) == 'X')) {
		base = 16;
		Advance(2);
	}
	// Accumulate in unsigned so that INT64_MIN parses without overflow.
	const uint64_t limit =
	        negative ? uint64_t(std::numeric_limits<int64_t>::max()) + 1
	                 : uint64_t(std::numeric_limits<int64_t>::max());
	uint64_t value = 0;
	int digits = 0;
	while (true) {
		int d = HexDigit(Peek());
		if (d < 0 || unsigned(d) >= base)
			break;
		if (value > (limit - d) / base)
			return ErrorAt(start, "integer out of range");
		value = value * base + d;
		Advance();
		digits++;
	}
	if (digits == 0)
		return ErrorAt(start,
		               "expected an integer, found " + DescribeNext());
	// In MOF (DSP0221) 0100 is octal, 64: refused rather than read as
	// a hundred or as sixty-four without the writer knowing which.
	if (base == 10 && digits > 1 && text_[pos_ - digits] == '0')
		return ErrorAt(start, "a leading 0 makes an octal number in "
		                      "MOF; write the integer in decimal, "
		                      "without it, or in 0x hex");
	if (IsIdentChar(Peek()) || Peek() == '.')
		return ErrorAt(start, "not an integer (only decimal and 0x "
		                      "hex integers are accepted)");
	if (negative)
		return value == limit ? std::numeric_limits<int64_t>::min()
		                      : -static_cast<int64_t>(value);
	return static_cast<int64_t>(value);
}

} // namespace replipipe
