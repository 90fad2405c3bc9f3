#include "goal.h"

#include <gtest/gtest.h>

namespace replipipe
{
namespace
{

TEST(Goal, EmptyGivesDefaults)
{
	for (const char *text : {"", "  \n", "// only a comment"}) {
		auto s = ParseGoal(text);
		ASSERT_TRUE(s.ok()) << s.status().message();
		EXPECT_EQ(*s, PipeSettings());
	}
	PipeSettings d;
	EXPECT_EQ(d.mode, Mode::kSynchronous);
	EXPECT_EQ(d.failure_policy, FailurePolicy::kDegrade);
	EXPECT_EQ(d.max_lag_kib, 65536u);
	EXPECT_EQ(d.resync_rate_kibps, 0u);
	EXPECT_EQ(d.region_kib, 64u);
}

TEST(Goal, EveryProperty)
{
	auto s = ParseGoal(R"(instance of REPLIPIPE_PipeSettingData {
		mode = "asynchronous"; FAILUREPOLICY = "FailIO";
		MaxLagKiB = 1024; ResyncRateLimitKiBps = 50000;
		RegionSizeKiB = 0x400; ElementName = "db mirror";
		InstanceID = "x"; Caption = "c"; Description = NULL;
		Bidirectional = FALSE; })");
	ASSERT_TRUE(s.ok()) << s.status().message();
	EXPECT_EQ(s->mode, Mode::kAsynchronous);
	EXPECT_EQ(s->failure_policy, FailurePolicy::kFailIO);
	EXPECT_EQ(s->max_lag_kib, 1024u);
	EXPECT_EQ(s->resync_rate_kibps, 50000u);
	EXPECT_EQ(s->region_kib, 1024u);
	EXPECT_EQ(s->element_name, "db mirror");
}

TEST(Goal, NullKeepsDefault)
{
	auto s = ParseGoal("instance of CIM_SettingData { Mode = NULL; };");
	ASSERT_TRUE(s.ok()) << s.status().message();
	EXPECT_EQ(s->mode, Mode::kSynchronous);
}

// The patch names what the Goal gives, so that a modify changes only that
// (decision 6); NULL is as if left out.
TEST(Goal, PatchHoldsOnlyWhatIsGiven)
{
	auto empty = ParseGoalPatch("  // nothing\n");
	ASSERT_TRUE(empty.ok()) << empty.status().message();
	EXPECT_EQ(*empty, GoalPatch());
	auto none = ParseGoalPatch("instance of CIM_SettingData { };");
	ASSERT_TRUE(none.ok()) << none.status().message();
	EXPECT_EQ(*none, GoalPatch());

	auto p = ParseGoalPatch("instance of CIM_SettingData { "
	                        "ResyncRateLimitKiBps = 64; Mode = NULL; "
	                        "ElementName = \"\"; };");
	ASSERT_TRUE(p.ok()) << p.status().message();
	GoalPatch want;
	want.resync_rate_kibps = 64;
	want.element_name = "";
	EXPECT_EQ(*p, want);

	PipeSettings base;
	base.mode = Mode::kAsynchronous;
	base.region_kib = 128;
	base.max_lag_kib = 1024;
	base.element_name = "old";
	PipeSettings expected = base;
	expected.resync_rate_kibps = 64;
	expected.element_name = "";
	EXPECT_EQ(p->ApplyTo(base), expected);
	EXPECT_EQ(GoalPatch().ApplyTo(base), base);
}

TEST(Goal, FormatRoundTrips)
{
	PipeSettings in;
	in.mode = Mode::kAsynchronous;
	in.failure_policy = FailurePolicy::kFailIO;
	in.max_lag_kib = 128;
	in.resync_rate_kibps = 7;
	in.region_kib = 4;
	in.element_name = "q\"uote\\";
	auto out = ParseGoal(FormatGoal(in));
	ASSERT_TRUE(out.ok()) << out.status().message();
	EXPECT_EQ(*out, in);
}

struct BadGoal {
	const char *text;
	int err; // EINVAL -> 5, EOPNOTSUPP -> 1
	const char *message_part;
};

void PrintTo(const BadGoal &bad, std::ostream *os)
{
	*os << bad.text;
}

class GoalErrors : public ::testing::TestWithParam<BadGoal>
{
};

TEST_P(GoalErrors, Rejected)
{
	const BadGoal &bad = GetParam();
	auto s = ParseGoal(bad.text);
	ASSERT_FALSE(s.ok()) << bad.text;
	EXPECT_EQ(s.status().err(), bad.err) << s.status().message();
	EXPECT_NE(s.status().message().find(bad.message_part),
	          std::string::npos)
	        << s.status().message();
	EXPECT_NE(s.status().message().find('^'), std::string::npos);
}

#define G(body) "instance of CIM_SettingData { " body " };"
INSTANTIATE_TEST_SUITE_P(
        All, GoalErrors,
        ::testing::Values(
                BadGoal{"instance of CIM_Foo { };", EINVAL,
                        "class CIM_Foo is not CIM_SettingData"},
                BadGoal{G("Colour = \"red\";"), EINVAL,
                        "unknown property Colour"},
                BadGoal{G("Colour = NULL;"), EINVAL, "unknown property Colour"},
                BadGoal{G("Mode = 1;"), EINVAL,
                        "Mode must be a string, not an integer"},
                BadGoal{G("Mode = \"Fast\";"), EINVAL,
                        "\"Fast\" is not a mode"},
                BadGoal{G("Mode = \"Adaptive\";"), EOPNOTSUPP, "not supported"},
                BadGoal{G("Bidirectional = TRUE;"), EOPNOTSUPP,
                        "Bidirectional pipes are not supported"},
                BadGoal{G("Bidirectional = 1;"), EINVAL, "must be a boolean"},
                BadGoal{G("FailurePolicy = \"Panic\";"), EINVAL,
                        "not a policy"},
                BadGoal{G("MaxLagKiB = 63;"), EINVAL,
                        "MaxLagKiB 63 is out of range (64 to 1048576)"},
                BadGoal{G("MaxLagKiB = 1048577;"), EINVAL, "out of range"},
                BadGoal{G("MaxLagKiB = \"64\";"), EINVAL,
                        "must be an integer, not a string"},
                BadGoal{G("ResyncRateLimitKiBps = -1;"), EINVAL,
                        "out of range"},
                BadGoal{G("RegionSizeKiB = 48;"), EINVAL,
                        "48 is not a power of two"},
                BadGoal{G("RegionSizeKiB = 2;"), EINVAL, "out of range"},
                BadGoal{G("RegionSizeKiB = 131072;"), EINVAL, "out of range"},
                BadGoal{G("ElementName = {\"a\"};"), EINVAL,
                        "must be a string, not an array"},
                BadGoal{G("Mode = \"Synchronous\""), EINVAL, "expected ';'"},
                // Escapes that make control characters, which the store
                // refuses to load (replipiped would not start).
                BadGoal{G("ElementName = \"a\\tb\";"), EINVAL,
                        "ElementName contains the control character 0x09"},
                BadGoal{G("ElementName = \"\\x1b[31m\";"), EINVAL,
                        "ElementName contains the control character 0x1b"},
                // MOF's octal: refused, not read as decimal.
                BadGoal{G("MaxLagKiB = 0100;"), EINVAL,
                        "a leading 0 makes an octal number"},
                BadGoal{G("RegionSizeKiB = 010;"), EINVAL,
                        "a leading 0 makes an octal number"}));
#undef G

// Every property is read: a Goal with an invalid property is invalid (5,
// EINVAL) wherever that property stands, and only a Goal otherwise valid
// that asks for something not offered is Not Supported (1, EOPNOTSUPP).
// Before, the first error won: the order of the properties decided.
// Asked for, an unsupported Goal gives the offered properties it sets, and
// the EOPNOTSUPP error beside them: the pipe service checks those values
// against the pipe before it answers Not Supported. Not asked for, it is
// the error.
TEST(Goal, AnUnsupportedGoalGivesItsOfferedValuesWhenAsked)
{
	const char *text =
	        "instance of CIM_SettingData { Bidirectional = TRUE; "
	        "RegionSizeKiB = 128; Mode = \"Active\"; };";
	Status unsupported;
	auto patch = ParseGoalPatch(text, &unsupported);
	ASSERT_TRUE(patch.ok()) << patch.status().message();
	EXPECT_EQ(patch->region_kib, 128u);
	EXPECT_FALSE(patch->mode.has_value());
	EXPECT_EQ(unsupported.err(), EOPNOTSUPP);
	EXPECT_NE(unsupported.message().find("Bidirectional"),
	          std::string::npos)
	        << unsupported.message();
	auto plain = ParseGoalPatch(text);
	ASSERT_FALSE(plain.ok());
	EXPECT_EQ(plain.status().err(), EOPNOTSUPP);
	// An offered Goal leaves it untouched.
	Status none;
	ASSERT_TRUE(ParseGoalPatch("instance of CIM_SettingData { "
	                           "RegionSizeKiB = 128; };",
	                           &none)
	                    .ok());
	EXPECT_TRUE(none.ok());
}

TEST(Goal, AnInvalidPropertyWinsOverAnUnsupportedOneInEitherOrder)
{
	struct Case {
		const char *text;
		const char *message_part;
	};
	for (const Case &c : {
	             Case{"instance of CIM_SettingData { Mode = \"Adaptive\"; "
	                  "Bogus = 1; };",
	                  "unknown property Bogus"},
	             Case{"instance of CIM_SettingData { Bogus = 1; "
	                  "Mode = \"Adaptive\"; };",
	                  "unknown property Bogus"},
	             Case{"instance of CIM_SettingData { Bidirectional = TRUE; "
	                  "MaxLagKiB = 1; };",
	                  "MaxLagKiB 1 is out of range"},
	             Case{"instance of CIM_SettingData { MaxLagKiB = 1; "
	                  "Bidirectional = TRUE; };",
	                  "MaxLagKiB 1 is out of range"},
	     }) {
		auto s = ParseGoalPatch(c.text);
		ASSERT_FALSE(s.ok()) << c.text;
		EXPECT_EQ(s.status().err(), EINVAL)
		        << c.text << ": " << s.status().message();
		EXPECT_NE(s.status().message().find(c.message_part),
		          std::string::npos)
		        << s.status().message();
	}
	// Two unsupported values, nothing invalid: Not Supported.
	auto both = ParseGoalPatch("instance of CIM_SettingData { "
	                           "Bidirectional = TRUE; Mode = \"Active\"; "
	                           "MaxLagKiB = 1024; };");
	ASSERT_FALSE(both.ok());
	EXPECT_EQ(both.status().err(), EOPNOTSUPP) << both.status().message();
}

// A lone 0 and 0x hex stay integers.
TEST(Goal, ZeroAndHexIntegers)
{
	auto s = ParseGoalPatch(
	        "instance of CIM_SettingData { "
	        "ResyncRateLimitKiBps = 0; MaxLagKiB = 0x100; };");
	ASSERT_TRUE(s.ok()) << s.status().message();
	const PipeSettings settings = s->ApplyTo(PipeSettings());
	EXPECT_EQ(settings.resync_rate_kibps, 0u);
	EXPECT_EQ(settings.max_lag_kib, 256u);
}

TEST(Goal, UnknownPropertyPointsAtIt)
{
	auto s = ParseGoal("instance of CIM_SettingData {\n"
	                   "  Mode = \"Synchronous\";\n"
	                   "  Speed = 3;\n};");
	ASSERT_FALSE(s.ok());
	EXPECT_NE(s.status().message().find("Goal: line 3, column 3: unknown "
	                                    "property Speed"),
	          std::string::npos)
	        << s.status().message();
}

} // namespace
} // namespace replipipe
