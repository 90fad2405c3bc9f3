// replipipectl's output of a pair whose resync jobs fail: the RESYNC column
// and the line of the failure's message (`status`), and the keys of
// `status --json`.
#include "cli_output.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace replipipe
{
namespace
{

using json = nlohmann::json;

const char kRepointed[] =
        "resync pipe 11111111-2222-4333-8444-555555555555 pair "
        "replipipe_0/a: /dev/rp-target is block device 1:2 but the kernel "
        "mirrors block device 1:1 (the path was re-pointed since the pipe "
        "was set); not copying";

ControlPair Pair(const std::string &source, const std::string &state)
{
	ControlPair pair;
	pair.source = source;
	pair.target = "/dev/rp-target";
	pair.state = state;
	return pair;
}

ControlPipe DbPipe()
{
	ControlPipe pipe;
	pipe.ref = "CIM_NetworkPipe.InstanceID=\"replipipe:x\"";
	pipe.instance_id = "replipipe:x";
	pipe.name = "db";
	pipe.source_system = "h";
	pipe.target_system = "t";
	pipe.mode = "Synchronous";
	pipe.failure_policy = "Degrade";
	pipe.region_kib = 64;
	pipe.in_kernel = true;
	return pipe;
}

// A pair whose job failed three times, the next due in 8 s.
ControlPair FailingPair()
{
	ControlPair pair = Pair("replipipe_0/a", "Syncing");
	pair.resync.total_bytes = 32 << 20;
	pair.resync.failures = 3;
	pair.resync.last_error = kRepointed;
	pair.resync.retry_in_s = 8;
	return pair;
}

TEST(CliOutput, StatusTellsWhyAFailingPairHasNoJobAndWhenItGetsOne)
{
	ControlPipe pipe = DbPipe();
	pipe.pairs.push_back(FailingPair());
	ControlPair due = Pair("replipipe_0/b", "Syncing"); // nothing known
	due.resync.failures = 1;
	due.resync.last_error = "write /dev/rp-target: Input/output error";
	due.resync.retry_in_s = 0;
	pipe.pairs.push_back(due);
	ControlPair running = Pair("replipipe_0/c", "Syncing");
	running.resync = {8 << 20, 32 << 20, 0, true};
	running.resync.failures = 2;
	running.resync.last_error = "write /dev/rp-target: No space left";
	pipe.pairs.push_back(running);
	ControlPair paused = Pair("replipipe_0/d", "Paused");
	paused.resync.total_bytes = 1 << 20;
	paused.resync.failures = 1;
	paused.resync.last_error = "read /dev/vg/d: Input/output error";
	pipe.pairs.push_back(paused);
	ControlPair later = Pair("replipipe_0/e", "Syncing");
	later.resync.total_bytes = 1 << 20;
	later.resync.failures = 6;
	later.resync.last_error = "x";
	later.resync.retry_in_s = 90;
	pipe.pairs.push_back(later);
	ControlPair waiting = Pair("replipipe_0/f", "Syncing"); // as before
	waiting.resync.total_bytes = 1 << 20;
	pipe.pairs.push_back(waiting);

	const std::string expected =
	        "pipe db  CIM_NetworkPipe.InstanceID=\"replipipe:x\"\n"
	        "  systems:   h -> t\n"
	        "  settings:  Synchronous, Degrade on failure, regions 64.0 "
	        "KiB, resync rate unlimited\n"
	        "  SOURCE         TARGET          STATE    RESYNC          "
	        "                                         ERRORS\n"
	        "  replipipe_0/a  /dev/rp-target  Syncing  0% 0 B/32.0 MiB "
	        "(no job: failed 3 times, retry in 8s)    0\n"
	        "  replipipe_0/b  /dev/rp-target  Syncing  - (no job: failed "
	        "once, retry due)                       0\n"
	        "  replipipe_0/c  /dev/rp-target  Syncing  25% 8.0 MiB/32.0 "
	        "MiB (attempt 3)                         0\n"
	        "  replipipe_0/d  /dev/rp-target  Paused   0% 0 B/1.0 MiB "
	        "(no job: failed once)                     0\n"
	        "  replipipe_0/e  /dev/rp-target  Syncing  0% 0 B/1.0 MiB "
	        "(no job: failed 6 times, retry in 1m30s)  0\n"
	        "  replipipe_0/f  /dev/rp-target  Syncing  0% 0 B/1.0 MiB "
	        "(no job)                                  0\n"
	        "  last resync failure of replipipe_0/a: " +
	        std::string(kRepointed) +
	        "\n"
	        "  last resync failure of replipipe_0/b: write /dev/rp-target: "
	        "Input/output error\n"
	        "  last resync failure of replipipe_0/c: write /dev/rp-target: "
	        "No space left\n"
	        "  last resync failure of replipipe_0/d: read /dev/vg/d: "
	        "Input/output error\n"
	        "  last resync failure of replipipe_0/e: x\n";
	EXPECT_EQ(FormatStatus({pipe}), expected);
}

// A long message is shown whole, below the table: the RESYNC column (and
// the ERRORS column after it) stays as wide as the short text needs.
TEST(CliOutput, StatusShowsALongFailureWholeBelowTheTable)
{
	ControlPipe pipe = DbPipe();
	ControlPair failing = FailingPair();
	failing.resync.last_error = kRepointed + std::string(3000, 'm');
	pipe.pairs.push_back(failing);
	const std::string text = FormatStatus({pipe});
	EXPECT_NE(text.find("\n  last resync failure of replipipe_0/a: " +
	                    failing.resync.last_error + "\n"),
	          std::string::npos)
	        << text;
	const size_t row = text.find("  replipipe_0/a  ");
	ASSERT_NE(row, std::string::npos) << text;
	const std::string line = text.substr(row, text.find('\n', row) - row);
	EXPECT_EQ(line, "  replipipe_0/a  /dev/rp-target  Syncing  0% 0 B/32.0 "
	                "MiB (no job: failed 3 times, retry in 8s)  0");
}

// `status --json`: the contract's keys as they were, the failure's beside
// them; a pair without failures has 0, "" and null.
TEST(CliOutput, StatusJsonOfAFailingPair)
{
	ControlPipe pipe = DbPipe();
	pipe.pairs.push_back(FailingPair());
	pipe.pairs.push_back(Pair("replipipe_0/b", "InSync"));
	json j = StatusJson({pipe});
	json failing = j["pipes"][0]["pairs"][0]["resync"];
	EXPECT_EQ(failing, json::parse(R"({"done_bytes": 0,
		"total_bytes": 33554432, "rate_bytes_per_s": 0,
		"running": false, "failures": 3, "retry_in_s": 8,
		"last_error": ")" + std::string(kRepointed) +
	                               R"("})"));
	json clean = j["pipes"][0]["pairs"][1]["resync"];
	EXPECT_EQ(clean["failures"], 0);
	EXPECT_EQ(clean["last_error"], "");
	EXPECT_TRUE(clean["retry_in_s"].is_null());
}

// `status --json` prints the contract's keys in DESIGN.md's order, the
// others after them: nlohmann::json sorted them ("failure_policy" first,
// "ref" near the end), which a script reading the text would not expect.
TEST(CliOutput, StatusJsonKeepsTheContractsOrderOfKeys)
{
	ControlPipe pipe = DbPipe();
	pipe.pairs.push_back(FailingPair());
	const std::string text = StatusJson({pipe}).dump();
	auto in_order = [&](std::vector<std::string> keys, size_t from) {
		size_t at = from;
		for (const std::string &key : keys) {
			const size_t next = text.find("\"" + key + "\":", at);
			ASSERT_NE(next, std::string::npos)
			        << key << " not after " << at << " in " << text;
			at = next;
		}
	};
	in_order({"pipes", "ref", "instance_id", "name", "source_system",
	          "target_system", "mode", "failure_policy", "pairs", "source",
	          "target", "state", "resync", "done_bytes", "total_bytes",
	          "rate_bytes_per_s", "running"},
	         0);
	EXPECT_EQ(text.rfind("{\"pipes\":[{\"ref\":", 0), 0u) << text;
}

// create-or-modify --json prints {"ReturnValue": N, "Error": ...} on a
// failure of the method (DESIGN.md), and also when the daemon refused the
// call before the method ran, at its connection cap (Busy, as exit 16 says)
// or for a pipe that is not there (Invalid Parameter, exit 5). A call that
// ran no method for another reason (the daemon stopping, permission denied,
// unreachable) has no ReturnValue: its exit status says why
// (docs/decisions.md 81).
TEST(CliOutput, AMethodRefusedBeforeItRanStillHasAReturnValue)
{
	json busy = MethodJson(ErrorReply(
	        kCodeBusy, "the daemon has too many connections; try again"));
	EXPECT_EQ(busy["ReturnValue"], 4096) << busy.dump();
	EXPECT_EQ(busy["code"], "busy");
	json missing = MethodJson(ErrorReply(kCodeNotFound, "no pipe x"));
	EXPECT_EQ(missing["ReturnValue"], 5) << missing.dump();
	json down = MethodJson(
	        ErrorReply(kCodeShuttingDown, "replipiped is stopping"));
	EXPECT_FALSE(down.contains("ReturnValue"))
	        << "a daemon that stops ran no method: " << down.dump();
	EXPECT_EQ(down["code"], "shutting_down");
}

// The one-line documents are printed as the CLI contract writes them, so
// that a script matching the text, not only one parsing it, finds them.
TEST(CliOutput, MethodJsonIsPrintedInTheContractsForm)
{
	ControlReply ok;
	ok.return_value = ReturnValue::kCompleted;
	ok.replication_pipe = "CIM_NetworkPipe.InstanceID=\"replipipe:1\"";
	EXPECT_EQ(OneLineJson(MethodJson(ok)),
	          R"({"ReturnValue": 0, "ReplicationPipe": )"
	          R"("CIM_NetworkPipe.InstanceID=\"replipipe:1\""})");

	ControlReply bad;
	bad.ok = false;
	bad.return_value = ReturnValue::kInvalidParameter;
	bad.error = "unknown property Colour";
	EXPECT_EQ(OneLineJson(MethodJson(bad)),
	          R"({"ReturnValue": 5, "Error": "unknown property Colour"})");

	EXPECT_EQ(OneLineJson(MethodJson(ErrorReply(kCodeBusy, "full"))),
	          R"({"ReturnValue": 4096, "Error": "full", "code": "busy"})");
	EXPECT_EQ(OneLineJson(ErrorJson("no daemon", "unreachable")),
	          R"({"Error": "no daemon", "code": "unreachable"})");
	EXPECT_EQ(OneLineJson(ErrorJson("bad \xff name", "")),
	          "{\"Error\": \"bad \xef\xbf\xbd name\"}");
	EXPECT_EQ(OneLineJson(nlohmann::ordered_json::array({1, "a"})),
	          R"([1,"a"])");
}

} // namespace
} // namespace replipipe
