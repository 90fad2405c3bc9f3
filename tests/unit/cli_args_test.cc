#include "cli_args.h"

#include <cerrno>
#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

namespace replipipe
{
namespace
{

CliParse Parse(std::vector<std::string> args, const char *env = nullptr)
{
	return ParseCli(args, env);
}

CliInvocation ParseRun(std::vector<std::string> args, const char *env = nullptr)
{
	CliParse parse = Parse(std::move(args), env);
	EXPECT_EQ(parse.kind, CliParse::Kind::kRun) << parse.text;
	return parse.invocation;
}

void ExpectUsage(std::vector<std::string> args, const std::string &needle = "")
{
	CliParse parse = Parse(args);
	std::string joined;
	for (const auto &a : args)
		joined += a + " ";
	EXPECT_EQ(parse.kind, CliParse::Kind::kUsageError) << joined;
	EXPECT_NE(parse.text.find(needle), std::string::npos)
	        << parse.text << " lacks " << needle;
}

const std::vector<std::string> kCreate = {
        "create-or-modify", "--name",          "db",     "--source-system",
        "localhost",        "--target-system", "backup1"};

std::vector<std::string> Create(std::vector<std::string> more)
{
	std::vector<std::string> args = kCreate;
	args.insert(args.end(), more.begin(), more.end());
	return args;
}

TEST(CliArgs, CreateWithoutPairsGivesNullArrays)
{
	CliInvocation inv = ParseRun(kCreate);
	EXPECT_EQ(inv.command, CliCommand::kCreateOrModify);
	EXPECT_EQ(inv.request.op, ControlOp::kCreateOrModify);
	const CreateOrModifyCall &call = inv.request.call;
	EXPECT_EQ(call.pipe_element_name, "db");
	EXPECT_EQ(call.source_system, "localhost");
	EXPECT_EQ(call.target_system, "backup1");
	EXPECT_FALSE(call.source_endpoints.has_value());
	EXPECT_FALSE(call.target_endpoints.has_value());
	EXPECT_FALSE(call.replication_pipe.has_value());
	EXPECT_EQ(call.goal, "");
	EXPECT_EQ(inv.socket_path, kDefaultSocketPath);
	EXPECT_FALSE(inv.json);
}

TEST(CliArgs, ClearPairsGivesEmptyArrays)
{
	CliInvocation inv = ParseRun(Create({"--clear-pairs", "--pipe", "db"}));
	ASSERT_TRUE(inv.request.call.source_endpoints.has_value());
	ASSERT_TRUE(inv.request.call.target_endpoints.has_value());
	EXPECT_TRUE(inv.request.call.source_endpoints->empty());
	EXPECT_TRUE(inv.request.call.target_endpoints->empty());
	EXPECT_EQ(inv.request.call.replication_pipe, "db");
}

TEST(CliArgs, PairsInOrder)
{
	CliInvocation inv =
	        ParseRun(Create({"--pair", "replipipe_0/a=/dev/sdb", "--pair",
	                         "replipipe_1/b=/dev/disk/by-id/x", "--goal",
	                         "instance of CIM_SettingData { };"}));
	const CreateOrModifyCall &call = inv.request.call;
	ASSERT_TRUE(call.source_endpoints && call.target_endpoints);
	EXPECT_EQ(*call.source_endpoints,
	          (std::vector<std::string>{"replipipe_0/a", "replipipe_1/b"}));
	EXPECT_EQ(*call.target_endpoints,
	          (std::vector<std::string>{"/dev/sdb", "/dev/disk/by-id/x"}));
	EXPECT_EQ(call.goal, "instance of CIM_SettingData { };");
}

TEST(CliArgs, SplitPairHandlesReferences)
{
	struct Case {
		const char *arg, *source, *target;
	} cases[] = {
	        {"replipipe_0/vol1=/dev/sdb", "replipipe_0/vol1", "/dev/sdb"},
	        {R"(CIM_ProtocolEndpoint.Name="replipipe_0/vol1"=/dev/sdb)",
	         R"(CIM_ProtocolEndpoint.Name="replipipe_0/vol1")", "/dev/sdb"},
	        {R"(replipipe_0/vol1=CIM_ProtocolEndpoint.Name="/dev/sdb")",
	         "replipipe_0/vol1", R"(CIM_ProtocolEndpoint.Name="/dev/sdb")"},
	        {R"(CIM_ProtocolEndpoint.Name="a=b",SystemName="h"=)"
	         R"(CIM_ProtocolEndpoint.Name = "/dev/x")",
	         R"(CIM_ProtocolEndpoint.Name="a=b",SystemName="h")",
	         R"(CIM_ProtocolEndpoint.Name = "/dev/x")"},
	        {R"(CIM_ProtocolEndpoint.Name="a\"=b"=/dev/sdc)",
	         R"(CIM_ProtocolEndpoint.Name="a\"=b")", "/dev/sdc"},
	        {"replipipe_0/v=/dev/odd=name", "replipipe_0/v",
	         "/dev/odd=name"},
	};
	for (const Case &c : cases) {
		auto split = SplitPairArg(c.arg);
		ASSERT_TRUE(split.ok()) << c.arg;
		EXPECT_EQ(split->first, c.source) << c.arg;
		EXPECT_EQ(split->second, c.target) << c.arg;
	}
	for (const char *bad : {"", "=", "a=", "=b", "nothing",
	                        R"(CIM_ProtocolEndpoint.Name="x")"})
		EXPECT_FALSE(SplitPairArg(bad).ok()) << bad;
}

TEST(CliArgs, CreateUsageErrors)
{
	ExpectUsage({"create-or-modify", "--name", "db"}, "--source-system");
	ExpectUsage(Create({"--pair", "a=/dev/x", "--clear-pairs"}), "exclude");
	ExpectUsage(Create({"--goal", "x", "--goal-file", "f"}), "exclude");
	ExpectUsage(Create({"--pair", "nonsense"}), "SRC=TGT");
	ExpectUsage(Create({"--bogus"}), "bogus");
	ExpectUsage(Create({"--pi", "db"})); // no abbreviations
	ExpectUsage(Create({"extra-positional"}));
}

TEST(CliArgs, GoalFileIsRecorded)
{
	CliInvocation inv = ParseRun(Create({"--goal-file", "/tmp/goal.mof"}));
	EXPECT_EQ(inv.goal_file, "/tmp/goal.mof");
}

TEST(CliArgs, GlobalOptionsAndSocket)
{
	CliInvocation inv = ParseRun(
	        {"--socket", "/tmp/s.sock", "--json", "list"}, "/env.sock");
	EXPECT_EQ(inv.socket_path, "/tmp/s.sock");
	EXPECT_TRUE(inv.json);
	EXPECT_EQ(inv.request.op, ControlOp::kList);

	inv = ParseRun({"list"}, "/env.sock");
	EXPECT_EQ(inv.socket_path, "/env.sock");
	inv = ParseRun({"--socket=/a.sock", "list"}, "/env.sock");
	EXPECT_EQ(inv.socket_path, "/a.sock");
	// Global options are also accepted after the command.
	inv = ParseRun({"status", "--json", "--socket", "/b.sock"});
	EXPECT_TRUE(inv.json);
	EXPECT_EQ(inv.socket_path, "/b.sock");
}

TEST(CliArgs, StatusWaitDelete)
{
	CliInvocation inv = ParseRun({"status"});
	EXPECT_EQ(inv.request.op, ControlOp::kStatus);
	EXPECT_FALSE(inv.request.pipe.has_value());
	EXPECT_FALSE(inv.watch);

	inv = ParseRun({"status", "db", "--watch"});
	EXPECT_EQ(inv.request.pipe, "db");
	EXPECT_TRUE(inv.watch);

	inv = ParseRun({"wait", "db"});
	EXPECT_EQ(inv.command, CliCommand::kWait);
	EXPECT_EQ(inv.request.op, ControlOp::kStatus);
	EXPECT_EQ(inv.request.pipe, "db");
	EXPECT_EQ(inv.wait_state, "InSync");
	EXPECT_FALSE(inv.timeout_seconds.has_value());

	inv = ParseRun({"wait", "db", "--state", "paused", "--timeout", "2.5"});
	EXPECT_EQ(inv.wait_state, "Paused");
	EXPECT_EQ(inv.timeout_seconds, 2.5);

	inv = ParseRun(
	        {"delete", R"(CIM_NetworkPipe.InstanceID="replipipe:1234")"});
	EXPECT_EQ(inv.request.op, ControlOp::kDelete);
	EXPECT_EQ(inv.request.pipe,
	          R"(CIM_NetworkPipe.InstanceID="replipipe:1234")");

	ExpectUsage({"wait"}, "PIPE");
	ExpectUsage({"wait", "db", "--state", "Bogus"}, "Bogus");
	ExpectUsage({"wait", "db", "--timeout", "-1"}, "timeout");
	ExpectUsage({"wait", "db", "--timeout", "soon"});
	ExpectUsage({"delete"}, "PIPE");
	ExpectUsage({"delete", "a", "b"});
}

// Seconds become int64_t milliseconds: 1e300 overflowed (undefined
// behaviour). Past a year is a usage error, as is any value sent to the
// daemon that is not UTF-8 (JSON would throw on it).
TEST(CliArgs, AbsurdSecondsAndNonUtf8AreUsageErrors)
{
	ExpectUsage({"wait", "db", "--timeout", "1e300"},
	            "--timeout must be a non-negative number of seconds, at "
	            "most 31536000");
	ExpectUsage({"wait", "db", "--timeout", "inf"}, "--timeout");
	ExpectUsage({"wait", "db", "--timeout", "nan"}, "--timeout");
	ExpectUsage({"status", "--watch", "--interval", "1e19"},
	            "--interval must be at least 0.1 and at most 31536000");
	EXPECT_EQ(ParseRun({"wait", "db", "--timeout", "31536000"})
	                  .timeout_seconds,
	          31536000.0);

	ExpectUsage({"create-or-modify", "--name", "db\xff", "--source-system",
	             "localhost", "--target-system", "backup1"},
	            "--name is not UTF-8 text (byte 2)");
	ExpectUsage(Create({"--pair", "replipipe_0/a=/dev/\xc0\xaf"}),
	            "--pair is not UTF-8 text");
	ExpectUsage(Create({"--goal", "\xed\xa0\x80"}), "--goal is not UTF-8");
	ExpectUsage({"delete", "db\x80"}, "PIPE is not UTF-8");
	ExpectUsage({"pause", "db", "--pair", "\xfe"}, "--pair is not UTF-8");
	// UTF-8 is fine.
	EXPECT_EQ(ParseRun(Create({"--pipe", "r\xc3\xa9plique"}))
	                  .request.call.replication_pipe,
	          "r\xc3\xa9plique");
}

TEST(CliArgs, GoalFileThatIsNotUtf8)
{
	const std::string path = ::testing::TempDir() + "/goal-latin1.mof";
	{
		std::ofstream out(path, std::ios::binary);
		out << "instance of CIM_SettingData { ElementName = "
		       "\"caf\xe9\"; };";
	}
	auto goal = LoadGoalFile(path);
	ASSERT_FALSE(goal.ok());
	EXPECT_EQ(goal.status().err(), EILSEQ);
	EXPECT_EQ(goal.status().message(),
	          "Goal file \"" + path + "\" is not UTF-8 text (byte 48)");
	std::remove(path.c_str());
}

// A --goal-file that cannot be read is an error that names it with the
// reason (exit 66): a directory made std::ifstream throw (an abort).
TEST(CliArgs, GoalFileThatCannotBeRead)
{
	const std::string dir = ::testing::TempDir();
	auto goal = LoadGoalFile(dir);
	ASSERT_FALSE(goal.ok());
	EXPECT_EQ(goal.status().err(), EISDIR);
	EXPECT_NE(goal.status().message().find(dir), std::string::npos)
	        << goal.status().message();

	const std::string missing = dir + "/no-such-goal.mof";
	goal = LoadGoalFile(missing);
	ASSERT_FALSE(goal.ok());
	EXPECT_EQ(goal.status().err(), ENOENT);
	EXPECT_NE(goal.status().message().find(missing), std::string::npos)
	        << goal.status().message();
}

// A Goal is read up to the control protocol's line and no further: a
// device that never ends is an error (EFBIG), not a read until memory runs
// out.
TEST(CliArgs, GoalFileIsNotReadPastTheLineLimit)
{
	auto goal = LoadGoalFile("/dev/zero");
	ASSERT_FALSE(goal.ok());
	EXPECT_EQ(goal.status().err(), EFBIG);
	EXPECT_EQ(goal.status().message(),
	          "Goal file \"/dev/zero\" is longer than the control "
	          "protocol "
	          "takes (at most 1048576 bytes)");
}

// A create-or-modify's bound grows by one iSCSI login for each iSCSI
// target past the first (the daemon logs in to them one after another);
// local targets, and every other command, keep the plain bound; the
// environment still wins.
TEST(CliArgs, CallTimeoutGrowsWithTheISCSILogins)
{
	EXPECT_EQ(ParseRun(kCreate).call_timeout_seconds, kCallTimeoutSeconds);
	EXPECT_EQ(ParseRun(Create({"--pair", "replipipe_0/a=/dev/sdb", "--pair",
	                           "replipipe_0/b=/dev/sdc"}))
	                  .call_timeout_seconds,
	          kCallTimeoutSeconds);
	EXPECT_EQ(ParseRun(Create({"--pair",
	                           "replipipe_0/a=iscsi://h/iqn.x:a/0"}))
	                  .call_timeout_seconds,
	          kCallTimeoutSeconds);
	const std::vector<std::string> three =
	        Create({"--pair", "replipipe_0/a=iscsi://h/iqn.x:a/0", "--pair",
	                "replipipe_0/b=/dev/sdc", "--pair",
	                "replipipe_0/c=ISCSI://h2:3261/iqn.x:c/1", "--pair",
	                "replipipe_0/d=CIM_ProtocolEndpoint.Name=\"iscsi://h/"
	                "iqn.x:d/2\""});
	EXPECT_EQ(ParseRun(three).call_timeout_seconds,
	          kCallTimeoutSeconds + 2 * kIscsiLoginSeconds);
	CliParse parse = ParseCli(three, nullptr, "7");
	ASSERT_EQ(parse.kind, CliParse::Kind::kRun) << parse.text;
	EXPECT_EQ(parse.invocation.call_timeout_seconds, 7);
	EXPECT_EQ(ParseRun({"list"}).call_timeout_seconds, kCallTimeoutSeconds);
}

// REPLIPIPE_CALL_TIMEOUT replaces the bound of one call to the daemon
// (docs/cli.md); a value that is not a number of seconds above 0 and at
// most a year is a usage error that names it.
TEST(CliArgs, CallTimeoutFromTheEnvironment)
{
	EXPECT_EQ(ParseRun({"list"}).call_timeout_seconds, kCallTimeoutSeconds);
	CliParse parse = ParseCli({"list"}, nullptr, "2.5");
	ASSERT_EQ(parse.kind, CliParse::Kind::kRun) << parse.text;
	EXPECT_EQ(parse.invocation.call_timeout_seconds, 2.5);
	parse = ParseCli({"list"}, nullptr, ""); // empty: unset
	ASSERT_EQ(parse.kind, CliParse::Kind::kRun) << parse.text;
	EXPECT_EQ(parse.invocation.call_timeout_seconds, kCallTimeoutSeconds);
	for (const char *bad : {"0", "-1", "soon", "2s", "1e300", "nan"}) {
		parse = ParseCli({"list"}, nullptr, bad);
		EXPECT_EQ(parse.kind, CliParse::Kind::kUsageError) << bad;
		EXPECT_NE(parse.text.find("REPLIPIPE_CALL_TIMEOUT"),
		          std::string::npos)
		        << parse.text;
	}
}

TEST(CliArgs, PauseResume)
{
	CliInvocation inv = ParseRun({"pause", "db"});
	EXPECT_EQ(inv.request.op, ControlOp::kPause);
	EXPECT_EQ(inv.request.pipe, "db");
	EXPECT_FALSE(inv.request.pair.has_value());
	inv = ParseRun({"resume", "db", "--pair", "replipipe_0/a"});
	EXPECT_EQ(inv.request.op, ControlOp::kResume);
	EXPECT_EQ(inv.request.pair, "replipipe_0/a");
	inv = ParseRun({"events"});
	EXPECT_EQ(inv.request.op, ControlOp::kEvents);
}

TEST(CliArgs, HelpAndUnknownCommands)
{
	EXPECT_EQ(Parse({"--help"}).kind, CliParse::Kind::kHelp);
	EXPECT_EQ(Parse({}).kind, CliParse::Kind::kUsageError);
	ExpectUsage({"frobnicate"}, "unknown command");
	ExpectUsage({"--bogus", "list"});
	for (const char *command :
	     {"create-or-modify", "list", "status", "wait", "delete", "events",
	      "pause", "resume"}) {
		CliParse parse = Parse({command, "--help"});
		EXPECT_EQ(parse.kind, CliParse::Kind::kHelp) << command;
		EXPECT_NE(parse.text.find("Example"), std::string::npos)
		        << command;
		EXPECT_EQ(parse.text.find("pipe-arg"), std::string::npos)
		        << parse.text;
		EXPECT_EQ(Parse({"--help", command}).kind,
		          CliParse::Kind::kHelp);
	}
	EXPECT_EQ(Parse({"--version"}).kind, CliParse::Kind::kVersion);
}

TEST(CliArgs, ExitCodes)
{
	ControlReply ok;
	EXPECT_EQ(ExitCodeForReply(ok), 0);
	for (uint32_t rv = 1; rv <= 5; ++rv) {
		ControlReply r =
		        MethodReply({static_cast<ReturnValue>(rv), "", "x"});
		EXPECT_EQ(ExitCodeForReply(r), static_cast<int>(rv));
	}
	EXPECT_EQ(ExitCodeForReply(MethodReply({ReturnValue::kBusy, "", "x"})),
	          kExitBusy);
	EXPECT_EQ(ExitCodeForReturnValue(static_cast<ReturnValue>(77)), 2);
	EXPECT_EQ(ExitCodeForReply(ErrorReply(kCodePermissionDenied, "x")),
	          kExitNoPermission);
	EXPECT_EQ(ExitCodeForReply(ErrorReply(kCodeNotFound, "x")), 5);
	EXPECT_EQ(ExitCodeForReply(ErrorReply(kCodeBadRequest, "x")),
	          kExitProtocol);
	EXPECT_EQ(ExitCodeForReply(ErrorReply(kCodeInternal, "x")), 2);
	EXPECT_EQ(ExitCodeForReply(ErrorReply(kCodeShuttingDown, "x")),
	          kExitUnavailable);
	EXPECT_EQ(kExitUsage, 64);
	EXPECT_EQ(kExitUnavailable, 69);
	EXPECT_EQ(kExitBusy, 16);
}

// Every needle is in the usage error of args.
void ExpectUsageNaming(std::vector<std::string> args,
                       const std::vector<std::string> &needles,
                       const char *env_call_timeout = nullptr,
                       const char *env_socket = nullptr)
{
	CliParse parse = ParseCli(args, env_socket, env_call_timeout);
	std::string joined;
	for (const auto &a : args)
		joined += "'" + a + "' ";
	EXPECT_EQ(parse.kind, CliParse::Kind::kUsageError) << joined;
	for (const std::string &needle : needles)
		EXPECT_NE(parse.text.find(needle), std::string::npos)
		        << joined << ": \"" << parse.text << "\" lacks "
		        << needle;
}

// Boost's parser takes the word after an option that needs a value as that
// value even when it is another option: `--name --clear-pairs` (an empty
// shell variable left unquoted) renamed the pipe to "--clear-pairs" and
// did not clear the pairs. Now a usage error that names both words; a
// value that is an option's name is written --opt=value.
TEST(CliArgs, AnOptionDoesNotTakeTheNextOptionAsItsValue)
{
	ExpectUsageNaming({"create-or-modify", "--source-system", "a",
	                   "--target-system", "b", "--pipe", "db", "--name",
	                   "--clear-pairs"},
	                  {"--name", "\"--clear-pairs\""});
	ExpectUsageNaming(Create({"--goal", "--pipe", "db"}),
	                  {"--goal", "\"--pipe\""});
	ExpectUsageNaming(Create({"--goal-file", "--pipe=db"}),
	                  {"--goal-file", "\"--pipe=db\""});
	ExpectUsageNaming({"pause", "db", "--pair", "--json"},
	                  {"--pair", "\"--json\""});
	ExpectUsageNaming({"resume", "db", "--pair", "--socket", "/s"},
	                  {"--pair", "\"--socket\""});
	ExpectUsageNaming({"--socket", "--json", "list"},
	                  {"--socket", "\"--json\""});
	ExpectUsageNaming({"list", "--socket", "--help"},
	                  {"--socket", "\"--help\""});
	ExpectUsageNaming({"wait", "db", "--state", "--timeout", "5"},
	                  {"--state", "\"--timeout\""});
	ExpectUsageNaming({"wait", "db", "--state", "-h"}, {"--state"});
	ExpectUsageNaming({"status", "--watch", "--interval", "--json"},
	                  {"--interval", "\"--json\""});

	// --opt=value takes any value, and a word that is no option of the
	// command is a value.
	CliInvocation inv = ParseRun({"create-or-modify", "--source-system",
	                              "a", "--target-system", "b", "--pipe",
	                              "db", "--name=--clear-pairs"});
	EXPECT_EQ(inv.request.call.pipe_element_name, "--clear-pairs");
	EXPECT_FALSE(inv.request.call.source_endpoints.has_value());
	inv = ParseRun({"pause", "db", "--pair=--json"});
	EXPECT_EQ(inv.request.pair, "--json");
	EXPECT_FALSE(inv.json);
	inv = ParseRun({"--socket=--json", "list"});
	EXPECT_EQ(inv.socket_path, "--json");
	inv = ParseRun(Create({"--goal", "--not-an-option"}));
	EXPECT_EQ(inv.request.call.goal, "--not-an-option");
	inv = ParseRun(Create({"--goal", "-x"}));
	EXPECT_EQ(inv.request.call.goal, "-x");
	inv = ParseRun({"pause", "db", "--pair", "replipipe_0/a", "--json"});
	EXPECT_EQ(inv.request.pair, "replipipe_0/a");
	EXPECT_TRUE(inv.json);
}

// The socket is the caller's: an empty one, or one longer than a Unix
// socket address holds (107 bytes), is a usage error that names it, not
// "cannot reach replipiped" (69). So is a second --socket after the
// command.
TEST(CliArgs, BadOrRepeatedSocketIsAUsageError)
{
	const std::string longest = "/" + std::string(106, 's');
	const std::string too_long = longest + "s";
	ExpectUsageNaming({"--socket", "", "list"}, {"--socket", "\"\""});
	ExpectUsageNaming({"list", "--socket", ""}, {"--socket", "\"\""});
	ExpectUsageNaming({"--socket", too_long, "list"},
	                  {"--socket", "\"" + too_long + "\"", "107"});
	ExpectUsageNaming({"list"}, {"REPLIPIPE_SOCKET", too_long}, nullptr,
	                  too_long.c_str());
	EXPECT_EQ(ParseRun({"--socket", longest, "list"}).socket_path, longest);
	// An empty REPLIPIPE_SOCKET is unset.
	EXPECT_EQ(ParseRun({"list"}, "").socket_path, kDefaultSocketPath);

	ExpectUsageNaming(
	        {"--socket", "/a.sock", "list", "--socket", "/b.sock"},
	        {"--socket", "more than once"});
	ExpectUsageNaming(
	        {"--socket=/a.sock", "status", "db", "--socket=/a.sock"},
	        {"--socket", "more than once"});
}

// Usage errors name the word they refuse.
TEST(CliArgs, UsageErrorsNameTheValue)
{
	ExpectUsageNaming({"delete", "a", "b"}, {"\"b\""});
	ExpectUsageNaming({"status", "db", "extra"}, {"\"extra\""});
	ExpectUsageNaming({"list", "foo"}, {"\"foo\""});
	ExpectUsageNaming({"events", "--json", "foo"}, {"\"foo\""});
	ExpectUsageNaming(Create({"extra-positional"}),
	                  {"\"extra-positional\""});
	ExpectUsageNaming({"wait", "db", "--timeout", "99999999999999999999"},
	                  {"--timeout", "\"99999999999999999999\""});
	ExpectUsageNaming({"wait", "db", "--timeout", "soon"},
	                  {"--timeout", "\"soon\""});
	ExpectUsageNaming({"status", "--watch", "--interval", "0.05"},
	                  {"--interval", "\"0.05\""});
	ExpectUsageNaming({"status", "--watch", "--interval", "often"},
	                  {"--interval", "\"often\""});
	// Numbers that are in range are still taken as before.
	CliInvocation inv =
	        ParseRun({"status", "--watch", "--interval", "0.5"});
	EXPECT_EQ(inv.interval_seconds, 0.5);
	inv = ParseRun({"wait", "db", "--timeout", "1e3"});
	EXPECT_EQ(inv.timeout_seconds, 1000.0);
}

// An empty --goal-file is named as "", not as nothing ("open Goal file :").
TEST(CliArgs, GoalFileErrorsQuoteTheName)
{
	auto goal = LoadGoalFile("");
	ASSERT_FALSE(goal.ok());
	EXPECT_EQ(goal.status().err(), ENOENT);
	EXPECT_NE(goal.status().message().find("Goal file \"\""),
	          std::string::npos)
	        << goal.status().message();
}

// --interval without --watch would be silently ignored; and
// REPLIPIPE_CALL_TIMEOUT is a plain decimal number (strtod took blanks
// before it and hexadecimal).
TEST(CliArgs, IntervalNeedsWatchAndCallTimeoutIsPlainDecimal)
{
	ExpectUsageNaming({"status", "--interval", "5"},
	                  {"--interval", "--watch"});
	ExpectUsageNaming({"status", "db", "--interval=5"},
	                  {"--interval", "--watch"});
	EXPECT_EQ(ParseRun({"status", "--interval", "5", "--watch"})
	                  .interval_seconds,
	          5.0);

	for (const char *bad : {" 5", "5 ", "\t5", "0x10", "+5", "1e3", "5.0.1",
	                        ".", "-0", "INF", "1,5"})
		ExpectUsageNaming({"list"},
		                  {"REPLIPIPE_CALL_TIMEOUT",
		                   "\"" + std::string(bad) + "\""},
		                  bad);
	struct Good {
		const char *text;
		double seconds;
	};
	for (const Good &good :
	     {Good{"5", 5}, Good{"2.5", 2.5}, Good{"0.5", 0.5}, Good{".5", 0.5},
	      Good{"007", 7}, Good{"31536000", 31536000}}) {
		CliParse parse = ParseCli({"list"}, nullptr, good.text);
		ASSERT_EQ(parse.kind, CliParse::Kind::kRun)
		        << good.text << ": " << parse.text;
		EXPECT_EQ(parse.invocation.call_timeout_seconds, good.seconds)
		        << good.text;
	}
}

// An empty PIPE or --pair is a usage error for every command; `status ""`
// and `pause db --pair ""` went to the daemon (exit 5).
TEST(CliArgs, EmptyPipeOrPairIsAUsageError)
{
	for (const char *command :
	     {"status", "wait", "delete", "pause", "resume"})
		ExpectUsageNaming({command, ""}, {"PIPE must not be empty"});
	ExpectUsageNaming({"status", "--watch", ""},
	                  {"PIPE must not be empty"});
	ExpectUsageNaming({"pause", "db", "--pair", ""},
	                  {"--pair must not be empty"});
	ExpectUsageNaming({"resume", "--pair", "", "db"},
	                  {"--pair must not be empty"});
	ExpectUsageNaming(Create({"--pipe", ""}), {"--pipe must not be empty"});
	// The name may be empty: on modify it keeps the name.
	EXPECT_EQ(ParseRun({"create-or-modify", "--name", "", "--source-system",
	                    "a", "--target-system", "b", "--pipe", "db"})
	                  .request.call.pipe_element_name,
	          "");
}

// The help spells the status synopsis as docs/cli.md does.
TEST(CliArgs, StatusSynopsisSaysSeconds)
{
	const std::string synopsis = "status [PIPE] [--watch [--interval "
	                             "SECONDS]]";
	EXPECT_NE(GlobalHelp().find(synopsis), std::string::npos)
	        << GlobalHelp();
	EXPECT_NE(CommandHelp(CliCommand::kStatus).find(synopsis),
	          std::string::npos)
	        << CommandHelp(CliCommand::kStatus);
}

TEST(CliArgs, CanonicalPairState)
{
	EXPECT_EQ(CanonicalPairState("insync"), "InSync");
	EXPECT_EQ(CanonicalPairState("SYNCING"), "Syncing");
	EXPECT_EQ(CanonicalPairState("Degraded"), "Degraded");
	EXPECT_FALSE(CanonicalPairState("InSyn").has_value());
}

} // namespace
} // namespace replipipe
