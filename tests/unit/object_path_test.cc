#include "object_path.h"

#include <gtest/gtest.h>

namespace replipipe
{
namespace
{

TEST(ObjectPath, ParsesClassAndStringKey)
{
	auto p = ParseObjectPath(
	        "CIM_NetworkPipe.InstanceID=\"replipipe:1234\"");
	ASSERT_TRUE(p.ok()) << p.status().message();
	EXPECT_EQ(p->class_name, "CIM_NetworkPipe");
	EXPECT_TRUE(p->host.empty());
	ASSERT_EQ(p->keys.size(), 1u);
	EXPECT_EQ(p->Find("instanceid")->string, "replipipe:1234");
	EXPECT_TRUE(p->IsClass("cim_networkpipe"));
}

TEST(ObjectPath, ParsesHostNamespaceAndTypedKeys)
{
	auto p = ParseObjectPath(
	        "//srv:5989/root/cimv2:CIM_X.B=TRUE, A = -12 ,C=0x1f,D=false");
	ASSERT_TRUE(p.ok()) << p.status().message();
	EXPECT_EQ(p->host, "srv:5989");
	EXPECT_EQ(p->name_space, "root/cimv2");
	EXPECT_EQ(p->Find("b")->type, KeyValue::Type::kBoolean);
	EXPECT_TRUE(p->Find("B")->boolean);
	EXPECT_EQ(p->Find("A")->integer, -12);
	EXPECT_EQ(p->Find("c")->integer, 31);
	EXPECT_FALSE(p->Find("d")->boolean);
	EXPECT_EQ(p->Find("missing"), nullptr);
}

TEST(ObjectPath, NamespaceWithoutHost)
{
	auto p = ParseObjectPath("root/cimv2:CIM_X.Name=\"a:b.c\"");
	ASSERT_TRUE(p.ok()) << p.status().message();
	EXPECT_EQ(p->name_space, "root/cimv2");
	EXPECT_EQ(p->Find("Name")->string, "a:b.c");
}

TEST(ObjectPath, EscapesInStrings)
{
	auto p = ParseObjectPath(R"(C.K="a\"b\\c",L="x=1,y")");
	ASSERT_TRUE(p.ok()) << p.status().message();
	EXPECT_EQ(p->Find("K")->string, "a\"b\\c");
	EXPECT_EQ(p->Find("L")->string, "x=1,y");
}

TEST(ObjectPath, KeylessClassPath)
{
	auto p = ParseObjectPath("  CIM_ComputerSystem  ");
	ASSERT_TRUE(p.ok()) << p.status().message();
	EXPECT_TRUE(p->keys.empty());
}

TEST(ObjectPath, RoundTrips)
{
	for (const char *text :
	     {"CIM_NetworkPipe.InstanceID=\"replipipe:x\"",
	      "//h/root/cimv2:C.A=\"q\\\"uote\\\\\",B=42,C=TRUE,D=-1",
	      "ns:C.K=\"line\\nbreak\"", "C"}) {
		auto p = ParseObjectPath(text);
		ASSERT_TRUE(p.ok()) << text << ": " << p.status().message();
		std::string formatted = FormatObjectPath(*p);
		auto again = ParseObjectPath(formatted);
		ASSERT_TRUE(again.ok()) << formatted;
		EXPECT_EQ(*p, *again) << formatted;
		EXPECT_EQ(FormatObjectPath(*again), formatted);
	}
}

TEST(ObjectPath, FormatterEscapes)
{
	ObjectPath p;
	p.class_name = "C";
	p.keys.push_back({"K", KeyValue::String("a\"b\\")});
	EXPECT_EQ(FormatObjectPath(p), R"(C.K="a\"b\\")");
}

struct BadPath {
	const char *text;
	const char *message_part;
	const char *caret_line; // expected caret line (after "  ")
};

void PrintTo(const BadPath &bad, std::ostream *os)
{
	*os << bad.text;
}

class ObjectPathErrors : public ::testing::TestWithParam<BadPath>
{
};

TEST_P(ObjectPathErrors, PointAtTheOffendingText)
{
	const BadPath &bad = GetParam();
	auto p = ParseObjectPath(bad.text);
	ASSERT_FALSE(p.ok()) << bad.text;
	const std::string &m = p.status().message();
	EXPECT_NE(m.find(bad.message_part), std::string::npos) << m;
	EXPECT_NE(m.find(std::string("\n  ") + bad.text + "\n  " +
	                 bad.caret_line),
	          std::string::npos)
	        << m;
	EXPECT_EQ(p.status().err(), EINVAL);
}

INSTANTIATE_TEST_SUITE_P(
        All, ObjectPathErrors,
        ::testing::Values(
                BadPath{"C.K=\"open", "unterminated string", "    ^"},
                BadPath{"C.K=abc", "expected a key value", "    ^"},
                BadPath{"C.K", "expected '='", "   ^"},
                BadPath{"C.K=1,K=2", "key K given twice", "      ^"},
                BadPath{"C.K=1 x", "unexpected 'x'", "      ^"},
                BadPath{"1C.K=1", "expected a class name", "^"},
                BadPath{"C.K=\"a\\q\"", "unknown escape \\q", "      ^"},
                BadPath{"//host", "expected //host/namespace:", "^"},
                BadPath{"C.K=99999999999999999999", "out of range", "    ^"},
                BadPath{"C.", "expected a key name", "  ^"}));

TEST(ObjectPath, ErrorNamesColumn)
{
	auto p = ParseObjectPath("C.K=abc");
	ASSERT_FALSE(p.ok());
	EXPECT_EQ(p.status().message().rfind("object path: column 5:", 0), 0u)
	        << p.status().message();
}

TEST(ObjectPath, LooksLikeObjectPath)
{
	EXPECT_TRUE(LooksLikeObjectPath("C.K=1"));
	EXPECT_TRUE(LooksLikeObjectPath("//h/ns:C"));
	EXPECT_FALSE(LooksLikeObjectPath("node1.example.com"));
	EXPECT_FALSE(LooksLikeObjectPath("replipipe_0/vol1"));
}

} // namespace
} // namespace replipipe
