#include "mof.h"

#include <gtest/gtest.h>

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
