#include "mof.h"

#include <cerrno>

#include <gtest/gtest.h>

#include "text_scan.h"

namespace replipipe
{
namespace
{

TEST(Mof, ParsesInstance)
{
	auto m = ParseMofInstance(R"(
// a comment
instance of CIM_SettingData /* inline */ {
	Mode = "Asynchronous";
	MaxLagKiB = 0x100;
	Neg = -5;
	Flag = true;
	Nothing = NULL;
	List = {1, 2, 3};
	Empty = {};
	Text = "a\"b\\c\n\t\x41" " more";
};
)");
	ASSERT_TRUE(m.ok()) << m.status().message();
	EXPECT_EQ(m->class_name, "CIM_SettingData");
	ASSERT_EQ(m->properties.size(), 8u);
	EXPECT_EQ(m->properties[0].value.string, "Asynchronous");
	EXPECT_EQ(m->properties[1].value.integer, 256);
	EXPECT_EQ(m->properties[2].value.integer, -5);
	EXPECT_EQ(m->properties[3].value.kind, MofValue::Kind::kBoolean);
	EXPECT_TRUE(m->properties[3].value.boolean);
	EXPECT_EQ(m->properties[4].value.kind, MofValue::Kind::kNull);
	ASSERT_EQ(m->properties[5].value.elements.size(), 3u);
	EXPECT_EQ(m->properties[5].value.elements[2].integer, 3);
	EXPECT_TRUE(m->properties[6].value.elements.empty());
	EXPECT_EQ(m->properties[7].value.string, "a\"b\\c\n\tA more");
}

TEST(Mof, TrailingSemicolonOptionalKeywordsCaseInsensitive)
{
	auto m = ParseMofInstance("INSTANCE OF X { A = FALSE; }");
	ASSERT_TRUE(m.ok()) << m.status().message();
	EXPECT_FALSE(m->properties[0].value.boolean);
}

TEST(Mof, UnicodeEscapeIsUtf8)
{
	auto m = ParseMofInstance("instance of X { A = \"\\x00e9\"; };");
	ASSERT_TRUE(m.ok()) << m.status().message();
	EXPECT_EQ(m->properties[0].value.string, "\xc3\xa9");
}

// A \x escape names a UCS-2 code point; D800-DFFF are UTF-16 surrogates,
// which have no UTF-8 form: JSON output of such a string would throw.
TEST(Mof, SurrogateEscapesAndInvalidUtf8AreRefused)
{
	for (const char *text : {"instance of X { A = \"\\xD800\"; };",
	                         "instance of X { A = \"ab\\xdfff\"; };"}) {
		auto m = ParseMofInstance(text, "Goal");
		ASSERT_FALSE(m.ok()) << text;
		EXPECT_EQ(m.status().err(), EINVAL);
		EXPECT_NE(
		        m.status().message().find("surrogates (D800 to DFFF)"),
		        std::string::npos)
		        << m.status().message();
	}
	auto m =
	        ParseMofInstance("instance of X { A = \"\\xD800\"; };", "Goal");
	EXPECT_EQ(m.status().message().rfind("Goal: column 22: ", 0), 0u)
	        << m.status().message();
	// Raw bytes that are not UTF-8: a lone continuation byte, an
	// overlong '/', an encoded surrogate, a truncated sequence.
	for (const char *bad :
	     {"\x80", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82"}) {
		auto r = ParseMofInstance(
		        std::string("instance of X { A = \"a") + bad +
		        "\"; };");
		ASSERT_FALSE(r.ok());
		EXPECT_NE(r.status().message().find("invalid UTF-8"),
		          std::string::npos)
		        << r.status().message();
	}
	// Next to the surrogates, and valid multi-byte text, all is fine.
	auto ok = ParseMofInstance(
	        "instance of X { A = \"\\xD7FF\\xE000 \xe2\x82\xac\"; };");
	ASSERT_TRUE(ok.ok()) << ok.status().message();
	EXPECT_EQ(ok->properties[0].value.string,
	          "\xed\x9f\xbf\xee\x80\x80 \xe2\x82\xac");
}

TEST(Utf8, FirstInvalidByte)
{
	EXPECT_EQ(InvalidUtf8At("plain"), std::string_view::npos);
	EXPECT_EQ(InvalidUtf8At("\xf0\x9f\x98\x80 \xc3\xa9"),
	          std::string_view::npos);
	EXPECT_EQ(InvalidUtf8At("ab\xff"), 2u);
	EXPECT_EQ(InvalidUtf8At("a\xf4\x90\x80\x80"), 1u);    // > U+10FFFF
	EXPECT_EQ(InvalidUtf8At("\xc3\xa9\xed\xbf\xbf"), 2u); // DFFF
}

TEST(Mof, KeepsPositions)
{
	std::string text = "instance of X {\n  Foo = 1;\n};";
	auto m = ParseMofInstance(text);
	ASSERT_TRUE(m.ok());
	EXPECT_EQ(text.substr(m->properties[0].name_pos, 3), "Foo");
	EXPECT_EQ(text[m->properties[0].value_pos], '1');
	EXPECT_EQ(text.substr(m->class_pos, 1), "X");
}

TEST(Mof, EmptyText)
{
	EXPECT_TRUE(MofIsEmpty(""));
	EXPECT_TRUE(MofIsEmpty("  // nothing\n /* here */ "));
	EXPECT_FALSE(MofIsEmpty("instance"));
}

struct BadMof {
	const char *text;
	const char *message_part;
	const char *where; // "line L, column C"
};

void PrintTo(const BadMof &bad, std::ostream *os)
{
	*os << bad.text;
}

class MofErrors : public ::testing::TestWithParam<BadMof>
{
};

TEST_P(MofErrors, PointAtTheOffendingText)
{
	const BadMof &bad = GetParam();
	auto m = ParseMofInstance(bad.text, "Goal");
	ASSERT_FALSE(m.ok()) << bad.text;
	const std::string &msg = m.status().message();
	EXPECT_NE(msg.find(bad.message_part), std::string::npos) << msg;
	EXPECT_NE(msg.find(bad.where), std::string::npos) << msg;
	EXPECT_NE(msg.find('^'), std::string::npos) << msg;
	EXPECT_EQ(msg.rfind("Goal: ", 0), 0u) << msg;
}

INSTANTIATE_TEST_SUITE_P(
        All, MofErrors,
        ::testing::Values(
                BadMof{"instance X {};", "expected 'of'", "column 10"},
                BadMof{"class X {};", "expected 'instance of", "column 1"},
                BadMof{"instance of X {\n A = 1\n};", "expected ';'",
                       "line 3, column 1"},
                BadMof{"instance of X {\n A = \"x;\n};", "unterminated string",
                       "line 2, column 6"},
                BadMof{"instance of X { A = 1.5; };", "not an integer",
                       "column 21"},
                BadMof{"instance of X { A = 1; a = 2; };",
                       "property a given twice", "column 24"},
                BadMof{"instance of X { A = {1, {2}}; };", "arrays of arrays",
                       "column 25"},
                BadMof{"instance of X { A = {1 2}; };", "expected ',' or '}'",
                       "column 24"},
                BadMof{"instance of X { A = 1; }; extra", "after the instance",
                       "column 27"},
                BadMof{"instance of X { A = 1; } /* open",
                       "unterminated /* comment", "column 26"},
                BadMof{"instance of X { A = bogus; };", "expected a value",
                       "column 21"},
                BadMof{"instance of X { A = \"\\x\"; };", "\\x needs",
                       "column 22"},
                BadMof{"instance of X { A = 1;", "expected a property name",
                       "column 23"}));

TEST(Mof, CaretUnderTheToken)
{
	auto m = ParseMofInstance("instance of X {\n\tA = @;\n};");
	ASSERT_FALSE(m.ok());
	EXPECT_NE(m.status().message().find("\n  \tA = @;\n  \t    ^"),
	          std::string::npos)
	        << m.status().message();
}

} // namespace
} // namespace replipipe
