// replipipectl as scripts use it (shared DESIGN.md, "The CLI contract"):
// the built binary, run against an in-process daemon. Skipped when the
// binary is not next to this test binary (built by the same build).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_args.h"
#include "control_daemon_fake.h"
#include "control_protocol.h"
#include "listen_only_fake.h"
#include "model.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

using json = nlohmann::json;
using testing::FillListenQueue;
using testing::InProcessDaemon;
using testing::ListenOnly;

// The path of program next to this test binary ("" when there is none).
std::string ProgramPath(const char *program)
{
	std::error_code ec;
	auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
	if (ec)
		return "";
	auto path = self.parent_path() / program;
	return std::filesystem::exists(path) ? path.string() : "";
}

std::string CliPath()
{
	return ProgramPath("replipipectl");
}

struct CliRun {
	int exit = -1;
	std::string out;
	std::string err;
};

std::string ReadAll(int fd)
{
	std::string text;
	char buf[4096];
	ssize_t n;
	while ((n = ::read(fd, buf, sizeof(buf))) > 0)
		text.append(buf, static_cast<size_t>(n));
	return text;
}

// Runs program with args, in the directory cwd (unless empty). A program
// still running after limit_seconds is ended by SIGALRM (exit 128 here):
// a hang fails its test instead of stopping the suite. env: "NAME=value"
// for the program; stdin_path: a file to open as its stdin.
CliRun RunProgram(const std::string &program, std::vector<std::string> args,
                  unsigned limit_seconds, std::vector<std::string> env,
                  const std::string &stdin_path = "",
                  const std::string &cwd = "")
{
	const std::string &cli = program;
	int out[2], err[2];
	EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
	EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
	std::vector<char *> argv;
	argv.push_back(const_cast<char *>(cli.c_str()));
	for (auto &a : args)
		argv.push_back(a.data());
	argv.push_back(nullptr);
	pid_t pid = ::fork();
	if (pid == 0) {
		::dup2(out[1], STDOUT_FILENO);
		::dup2(err[1], STDERR_FILENO);
		if (!stdin_path.empty()) {
			int in = ::open(stdin_path.c_str(),
			                O_RDONLY | O_CLOEXEC);
			if (in < 0 || ::dup2(in, STDIN_FILENO) < 0)
				::_exit(126);
		}
		if (!cwd.empty() && ::chdir(cwd.c_str()) != 0)
			::_exit(126);
		for (std::string &e : env)
			::putenv(e.data());
		::alarm(limit_seconds); // outlives the exec
		::execv(cli.c_str(), argv.data());
		::_exit(127);
	}
	::close(out[1]);
	::close(err[1]);
	CliRun run;
	auto err_text = std::async(std::launch::async,
	                           [fd = err[0]] { return ReadAll(fd); });
	run.out = ReadAll(out[0]);
	run.err = err_text.get();
	::close(out[0]);
	::close(err[0]);
	int status = 0;
	::waitpid(pid, &status, 0);
	run.exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
	return run;
}

// Runs the CLI with REPLIPIPE_SOCKET=socket (unless empty) and args; as
// RunProgram.
CliRun RunCli(const std::string &socket, std::vector<std::string> args,
              unsigned limit_seconds = 60, std::vector<std::string> env = {},
              const std::string &stdin_path = "")
{
	if (!socket.empty())
		env.insert(env.begin(), "REPLIPIPE_SOCKET=" + socket);
	return RunProgram(CliPath(), std::move(args), limit_seconds,
	                  std::move(env), stdin_path);
}

// `list` on path with a call bound of 1 s, where nothing answers: it must
// exit 69 within 10 s and say that replipiped did not answer (and not that
// a change may have been made: list changes nothing).
void ExpectListUnanswered(const std::string &path)
{
	const auto start = std::chrono::steady_clock::now();
	CliRun list = RunCli(path, {"list"}, 20, {"REPLIPIPE_CALL_TIMEOUT=1"});
	EXPECT_LT(std::chrono::steady_clock::now() - start,
	          std::chrono::seconds(10));
	EXPECT_EQ(list.exit, kExitUnavailable) << list.out << list.err;
	EXPECT_NE(list.err.find("replipiped did not answer within 1 s"),
	          std::string::npos)
	        << list.err;
	EXPECT_EQ(list.err.find("may or may not"), std::string::npos)
	        << list.err;
}

// Accepts one connection on listener, reads its request line, sends reply
// (as is) and closes the connection. False when any step fails or takes
// over 20 s.
bool AnswerOnce(int listener, const std::string &reply)
{
	pollfd pfd{listener, POLLIN, 0};
	if (::poll(&pfd, 1, 20000) != 1)
		return false;
	UniqueFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
	if (!conn.valid())
		return false;
	std::string request;
	char c;
	pollfd in{conn.get(), POLLIN, 0};
	while (request.find('\n') == std::string::npos) {
		if (::poll(&in, 1, 20000) != 1 ||
		    ::read(conn.get(), &c, 1) != 1)
			return false;
		request += c;
	}
	return ::send(conn.get(), reply.data(), reply.size(), MSG_NOSIGNAL) ==
	       static_cast<ssize_t>(reply.size());
}

// Accepts one connection on listener, sends reply (as is) and closes the
// connection without reading the request, as replipiped does at its
// connection cap. False when a step fails or takes over 20 s.
bool RefuseOnce(int listener, const std::string &reply)
{
	pollfd pfd{listener, POLLIN, 0};
	if (::poll(&pfd, 1, 20000) != 1)
		return false;
	UniqueFd conn(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
	return conn.valid() &&
	       ::send(conn.get(), reply.data(), reply.size(), MSG_NOSIGNAL) ==
	               static_cast<ssize_t>(reply.size());
}

// A daemon's view of pipe "db": one pair replipipe_0/a -> /dev/rp-target
// in state, as fake daemons answer `status` with it.
ControlPipe DbPipe(const std::string &state)
{
	ControlPipe pipe;
	pipe.ref = "CIM_NetworkPipe.InstanceID=\"replipipe:x\"";
	pipe.instance_id = "replipipe:x";
	pipe.name = "db";
	pipe.mode = "Synchronous";
	pipe.in_kernel = true;
	ControlPair pair;
	pair.source = "replipipe_0/a";
	pair.target = "/dev/rp-target";
	pair.state = state;
	pipe.pairs.push_back(pair);
	return pipe;
}

std::string TrimNewlines(std::string text)
{
	while (!text.empty() && text.back() == '\n')
		text.pop_back();
	return text;
}

class CliE2E : public ::testing::Test
{
protected:
	void SetUp() override
	{
		if (CliPath().empty())
			GTEST_SKIP() << "replipipectl not built next to the "
			                "test binary";
	}

	CliRun Cli(std::vector<std::string> args)
	{
		return RunCli(d.socket_path(), std::move(args));
	}

	// create-or-modify of pipe "g" with --goal-file goal_file.
	static std::vector<std::string>
	CreateWithGoalFile(const std::string &goal_file, bool as_json)
	{
		std::vector<std::string> args = {"create-or-modify",
		                                 "--name",
		                                 "g",
		                                 "--source-system",
		                                 "localhost",
		                                 "--target-system",
		                                 "node2",
		                                 "--goal-file",
		                                 goal_file};
		if (as_json)
			args.insert(args.begin(), "--json");
		return args;
	}

	std::string CreateDb()
	{
		CliRun run = Cli({"create-or-modify", "--name", "db",
		                  "--source-system", testing::kTestHost,
		                  "--target-system", "node2", "--pair",
		                  "replipipe_0/a=/dev/sdb"});
		EXPECT_EQ(run.exit, 0) << run.err;
		std::string ref = run.out;
		while (!ref.empty() && ref.back() == '\n')
			ref.pop_back();
		return ref;
	}

	InProcessDaemon d;
};

TEST_F(CliE2E, CreatePrintsTheReference)
{
	std::string ref = CreateDb();
	// The reference alone, on one line (CreateDb() took its newline).
	EXPECT_EQ(ref.rfind("CIM_NetworkPipe.InstanceID=\"replipipe:", 0), 0u)
	        << ref;
	EXPECT_EQ(ref.find_first_of("\n "), std::string::npos) << ref;
	EXPECT_EQ(ref.back(), '"') << ref;
	CliRun list = Cli({"list"});
	EXPECT_EQ(list.exit, 0);
	EXPECT_NE(list.out.find("db"), std::string::npos) << list.out;
	CliRun status = Cli({"status", "db"});
	EXPECT_EQ(status.exit, 0);
	EXPECT_NE(status.out.find("replipipe_0/a"), std::string::npos)
	        << status.out;
	EXPECT_NE(status.out.find("Syncing"), std::string::npos);
}

TEST_F(CliE2E, CreateJsonSuccessAndFailure)
{
	CliRun ok = Cli({"--json", "create-or-modify", "--name", "x",
	                 "--source-system", "localhost", "--target-system",
	                 "node2"});
	ASSERT_EQ(ok.exit, 0) << ok.out << ok.err;
	json j = json::parse(ok.out);
	EXPECT_EQ(j["ReturnValue"], 0);
	EXPECT_TRUE(j["ReplicationPipe"].is_string());
	EXPECT_FALSE(j.contains("Error"));
	// The text as the CLI contract writes it, for scripts that match it.
	EXPECT_EQ(ok.out.rfind(R"({"ReturnValue": 0, "ReplicationPipe": ")", 0),
	          0u)
	        << ok.out;

	// The backstore does not exist: peer verification fails (4).
	CliRun failed = Cli({"--json", "create-or-modify", "--name", "y",
	                     "--source-system", "localhost", "--target-system",
	                     "node2", "--pair", "replipipe_0/zz=/dev/sdb"});
	EXPECT_EQ(failed.exit, 4) << failed.out;
	j = json::parse(failed.out);
	EXPECT_EQ(j["ReturnValue"], 4);
	EXPECT_TRUE(j["Error"].is_string());
	EXPECT_FALSE(j.contains("ReplicationPipe"));
	EXPECT_EQ(failed.out.rfind(R"({"ReturnValue": 4, "Error": ")", 0), 0u)
	        << failed.out;

	// An unknown Goal property: Invalid Parameter (5).
	CliRun bad_goal =
	        Cli({"create-or-modify", "--name", "y", "--source-system",
	             "localhost", "--target-system", "node2", "--goal",
	             "instance of CIM_SettingData { Bogus = 1; };"});
	EXPECT_EQ(bad_goal.exit, 5) << bad_goal.err;
	EXPECT_NE(bad_goal.err.find("Bogus"), std::string::npos)
	        << bad_goal.err;
}

TEST_F(CliE2E, GoalFile)
{
	d.dir_.Write("goal.mof", "instance of CIM_SettingData {\n"
	                         "  Mode = \"Asynchronous\";\n};\n");
	CliRun run = Cli({"create-or-modify", "--name", "g", "--source-system",
	                  "localhost", "--target-system", "node2",
	                  "--goal-file", d.dir_ / "goal.mof"});
	ASSERT_EQ(run.exit, 0) << run.err;
	CliRun status = Cli({"--json", "status", "g"});
	ASSERT_EQ(status.exit, 0);
	EXPECT_EQ(json::parse(status.out)["pipes"][0]["mode"], "Asynchronous");

	CliRun missing = Cli({"create-or-modify", "--name", "g",
	                      "--source-system", "localhost", "--target-system",
	                      "node2", "--goal-file", d.dir_ / "nope.mof"});
	EXPECT_EQ(missing.exit, kExitNoInput);
}

// Used to end in an uncaught nlohmann::json type_error (abort) or an
// int64_t overflow; now usage errors with a message.
TEST_F(CliE2E, NonUtf8AndAbsurdSecondsExit64)
{
	CliRun name =
	        Cli({"create-or-modify", "--name", "caf\xe9", "--source-system",
	             "localhost", "--target-system", "node2"});
	EXPECT_EQ(name.exit, kExitUsage) << name.err;
	EXPECT_NE(name.err.find("--name is not UTF-8 text (byte 3)"),
	          std::string::npos)
	        << name.err;

	d.dir_.Write(
	        "latin1.mof",
	        "instance of CIM_SettingData { ElementName = \"caf\xe9\"; };");
	for (bool as_json : {false, true}) {
		CliRun goal =
		        Cli(CreateWithGoalFile(d.dir_ / "latin1.mof", as_json));
		EXPECT_EQ(goal.exit, kExitUsage) << goal.out << goal.err;
		EXPECT_NE((goal.out + goal.err).find("is not UTF-8 text"),
		          std::string::npos)
		        << goal.out << goal.err;
	}
	// A Goal file name that is not UTF-8, with --json: the error quoting
	// it is still printed as JSON.
	CliRun missing =
	        Cli({"--json", "create-or-modify", "--name", "g",
	             "--source-system", "localhost", "--target-system", "node2",
	             "--goal-file", d.dir_ / "nope-\xff.mof"});
	EXPECT_EQ(missing.exit, kExitNoInput) << missing.err;
	EXPECT_TRUE(json::accept(missing.out)) << missing.out;

	CliRun wait = Cli({"wait", "db", "--timeout", "1e300"});
	EXPECT_EQ(wait.exit, kExitUsage) << wait.err;
	EXPECT_NE(wait.err.find("at most 31536000"), std::string::npos)
	        << wait.err;
	EXPECT_TRUE(d.pipes_.ListPipes().empty());
}

TEST_F(CliE2E, StatusJsonContract)
{
	const std::string ref = CreateDb();
	CliRun run = Cli({"--json", "status"});
	ASSERT_EQ(run.exit, 0) << run.err;
	json j = json::parse(run.out);
	ASSERT_EQ(j["pipes"].size(), 1u);
	const json &pipe = j["pipes"][0];
	for (const char *key : {"ref", "instance_id", "name", "source_system",
	                        "target_system", "mode", "pairs"})
		EXPECT_TRUE(pipe.contains(key)) << key;
	// The values, not only the keys: the reference create-or-modify
	// printed, its InstanceID, and what the call set.
	EXPECT_EQ(pipe["ref"], ref);
	EXPECT_EQ("CIM_NetworkPipe.InstanceID=\"" +
	                  pipe["instance_id"].get<std::string>() + "\"",
	          ref);
	EXPECT_EQ(pipe["name"], "db");
	EXPECT_EQ(pipe["source_system"], testing::kTestHost);
	EXPECT_EQ(pipe["target_system"], "node2");
	EXPECT_EQ(pipe["mode"], "Synchronous");
	ASSERT_EQ(pipe["pairs"].size(), 1u);
	const json &pair = pipe["pairs"][0];
	EXPECT_EQ(pair["source"], "replipipe_0/a");
	EXPECT_EQ(pair["target"], "/dev/sdb");
	EXPECT_EQ(pair["state"], "Syncing");
	for (const char *key :
	     {"done_bytes", "total_bytes", "rate_bytes_per_s"})
		EXPECT_TRUE(pair["resync"][key].is_number_unsigned()) << key;
}

// A pair whose resync jobs fail, as a daemon tells it: `status` says how
// often, when the next job is due and why (the message whole), and
// `status --json` passes the daemon's keys on.
TEST_F(CliE2E, StatusOfAPairWhoseResyncFails)
{
	const std::string message =
	        "resync pipe 11111111-2222-4333-8444-555555555555 pair "
	        "replipipe_0/a: /dev/rp-target is block device 1:2 but the "
	        "kernel mirrors block device 1:1 (the path was re-pointed "
	        "since the pipe was set); not copying";
	ControlReply reply;
	reply.pipes.push_back(DbPipe("Syncing"));
	ControlPair &pair = reply.pipes[0].pairs[0];
	pair.resync.total_bytes = 32 << 20;
	pair.resync.failures = 3;
	pair.resync.last_error = message;
	pair.resync.retry_in_s = 8;
	const std::string line = EncodeReply(reply) + "\n";

	int n = 0;
	for (bool as_json : {false, true}) {
		const std::string path =
		        d.dir_ / ("fake" + std::to_string(n++) + ".sock");
		UniqueFd listener = ListenOnly(path, 4);
		ASSERT_TRUE(listener.valid());
		auto answered = std::async(std::launch::async, [&] {
			return AnswerOnce(listener.get(), line);
		});
		std::vector<std::string> args = {"status"};
		if (as_json)
			args.insert(args.begin(), "--json");
		CliRun run = RunCli(path, args, 20);
		ASSERT_TRUE(answered.get());
		ASSERT_EQ(run.exit, 0) << run.out << run.err;
		if (!as_json) {
			EXPECT_NE(run.out.find(
			                  "Syncing  0% 0 B/32.0 MiB (no job: "
			                  "failed 3 times, retry in 8s)"),
			          std::string::npos)
			        << run.out;
			EXPECT_NE(run.out.find("\n  last resync failure of "
			                       "replipipe_0/a: " +
			                       message + "\n"),
			          std::string::npos)
			        << run.out;
			continue;
		}
		json j = json::parse(run.out, nullptr, false);
		ASSERT_FALSE(j.is_discarded()) << run.out;
		json resync = j["pipes"][0]["pairs"][0]["resync"];
		EXPECT_EQ(resync["total_bytes"], 32u << 20);
		EXPECT_EQ(resync["failures"], 3);
		EXPECT_EQ(resync["last_error"], message);
		EXPECT_EQ(resync["retry_in_s"], 8);
	}
}

TEST_F(CliE2E, WaitTimesOutThenSucceeds)
{
	std::string ref = CreateDb();
	CliRun timeout = Cli({"wait", "db", "--timeout", "0.3"});
	EXPECT_EQ(timeout.exit, 3) << timeout.out << timeout.err;
	EXPECT_NE(timeout.err.find("timed out"), std::string::npos);

	auto uuid = ParsePipeIdentifier(ref);
	ASSERT_TRUE(uuid.ok() && *uuid);
	d.board_.Finish("replipipe_0/a");
	d.kernel_.ForcePairState(**uuid, "replipipe_0/a", PairState::kInSync);
	d.service_.RefreshPipe(**uuid);
	CliRun done =
	        Cli({"wait", ref, "--state", "InSync", "--timeout", "10"});
	EXPECT_EQ(done.exit, 0) << done.out << done.err;
	EXPECT_NE(done.out.find("1/1 pairs InSync"), std::string::npos)
	        << done.out;

	CliRun pause = Cli({"pause", "db"});
	EXPECT_EQ(pause.exit, 0) << pause.err;
	EXPECT_EQ(Cli({"wait", "db", "--state", "paused", "--timeout", "10"})
	                  .exit,
	          0);
	EXPECT_EQ(Cli({"resume", "db"}).exit, 0);
}

TEST_F(CliE2E, ExitStatuses)
{
	CreateDb();
	EXPECT_EQ(Cli({"delete", "no-such-pipe"}).exit, 5);
	EXPECT_EQ(Cli({"wait", "no-such-pipe", "--timeout", "1"}).exit, 5);
	EXPECT_EQ(Cli({"status", "--bogus"}).exit, kExitUsage);
	EXPECT_EQ(Cli({}).exit, kExitUsage);
	EXPECT_EQ(RunCli(d.dir_ / "nobody.sock", {"list"}).exit,
	          kExitUnavailable);
	// --socket wins over REPLIPIPE_SOCKET.
	EXPECT_EQ(RunCli(d.dir_ / "nobody.sock",
	                 {"--socket", d.socket_path(), "list"})
	                  .exit,
	          0);
	CliRun help = Cli({"wait", "--help"});
	EXPECT_EQ(help.exit, 0);
	EXPECT_NE(help.out.find("Example"), std::string::npos);

	CliRun deleted = Cli({"delete", "db"});
	EXPECT_EQ(deleted.exit, 0) << deleted.err;
	EXPECT_EQ(deleted.out.rfind("deleted CIM_NetworkPipe", 0), 0u);
}

// docs/cli.md: with --json, failures without a ReturnValue are JSON on
// stdout; a command line that does not parse is one of them.
TEST_F(CliE2E, JsonUsageErrorIsJsonOnStdout)
{
	for (const std::vector<std::string> &args :
	     {std::vector<std::string>{"--json", "status", "--bogus"},
	      std::vector<std::string>{"status", "--bogus", "--json"},
	      std::vector<std::string>{"--json", "no-such-command"}}) {
		CliRun run = Cli(args);
		EXPECT_EQ(run.exit, kExitUsage) << run.err;
		ASSERT_TRUE(json::accept(run.out)) << run.out;
		json reply = json::parse(run.out);
		EXPECT_EQ(reply["code"], "usage") << run.out;
		EXPECT_NE(
		        reply["Error"].get<std::string>().find("replipipectl"),
		        std::string::npos)
		        << run.out;
		// One message: --help's hint is for a reader of stderr.
		EXPECT_EQ(reply["Error"].get<std::string>().find('\n'),
		          std::string::npos)
		        << run.out;
	}
	CliRun plain = Cli({"status", "--bogus"});
	EXPECT_EQ(plain.exit, kExitUsage);
	EXPECT_TRUE(plain.out.empty()) << plain.out;
	EXPECT_NE(plain.err.find("--bogus"), std::string::npos) << plain.err;
	EXPECT_NE(plain.err.find("\nTry 'replipipectl status --help'."),
	          std::string::npos)
	        << plain.err;
}

// A request over the control protocol's 1 MiB line: the daemon would close
// the connection (a broken pipe, "unreachable", 69). It is the caller's
// doing, so a usage error that says why, and nothing reaches the daemon.
// A Goal of exactly 1 MiB is read whole and the request around it is too
// long; a longer one, or one that never ends, is not read past 1 MiB.
TEST_F(CliE2E, RequestOverTheLineLimitExits64)
{
	d.dir_.Write("line.mof", std::string(kMaxLineBytes, ' '));
	d.dir_.Write("huge.mof", std::string(2 << 20, ' '));
	const std::vector<std::pair<std::string, std::string>> cases = {
	        {d.dir_ / "line.mof",
	         "the control protocol takes at most 1048576"},
	        {d.dir_ / "huge.mof",
	         "is longer than the control protocol takes (at most "
	         "1048576 bytes)"},
	        {"/dev/zero", "Goal file \"/dev/zero\" is longer than the "
	                      "control protocol takes"},
	};
	for (const auto &[goal_file, says] : cases) {
		for (bool as_json : {false, true}) {
			CliRun run =
			        Cli(CreateWithGoalFile(goal_file, as_json));
			EXPECT_EQ(run.exit, kExitUsage)
			        << goal_file << run.out << run.err;
			const std::string said =
			        as_json && json::accept(run.out)
			                ? json::parse(run.out)["Error"]
			                          .get<std::string>()
			                : run.err;
			EXPECT_NE(said.find(says), std::string::npos)
			        << goal_file << run.out << run.err;
		}
	}
	CliRun list = Cli({"--json", "list"});
	ASSERT_EQ(list.exit, 0) << list.err;
	EXPECT_TRUE(json::parse(list.out)["pipes"].empty()) << list.out;
}

// --timeout bounds the whole wait: a daemon that takes the connection and
// never answers makes `wait` exit 3 at its deadline, not hang.
TEST_F(CliE2E, WaitTimeoutBoundsASilentDaemon)
{
	const std::string path = d.dir_ / "silent.sock";
	UniqueFd silent(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	ASSERT_TRUE(silent.valid());
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	ASSERT_LT(path.size(), sizeof(addr.sun_path));
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	ASSERT_EQ(::bind(silent.get(), reinterpret_cast<sockaddr *>(&addr),
	                 sizeof(addr)),
	          0);
	ASSERT_EQ(::listen(silent.get(), 4), 0); // never accepted
	const auto start = std::chrono::steady_clock::now();
	CliRun run =
	        RunCli(path, {"--json", "wait", "db", "--timeout", "1"}, 20);
	const auto took = std::chrono::steady_clock::now() - start;
	EXPECT_EQ(run.exit, kExitWaitTimeout) << run.out << run.err;
	EXPECT_LT(took, std::chrono::seconds(10));
	ASSERT_TRUE(json::accept(run.out)) << run.out;
	EXPECT_EQ(json::parse(run.out)["code"], "timeout") << run.out;
}

// A ReturnValue of a command other than the method's stays a number.
TEST_F(CliE2E, JsonFailureOfOtherCommandsKeepsTheReturnValue)
{
	CreateDb();
	CliRun paused = Cli({"--json", "pause", "no-such-pipe"});
	EXPECT_EQ(paused.exit, 5) << paused.out << paused.err;
	json j = json::parse(paused.out);
	EXPECT_EQ(j["ReturnValue"], 5) << paused.out;
	EXPECT_EQ(j["code"], "not_found") << paused.out;
	EXPECT_NE(j["Error"].get<std::string>().find("no-such-pipe"),
	          std::string::npos)
	        << paused.out;
}

TEST_F(CliE2E, BusyExits16)
{
	std::string ref = CreateDb();
	// Hold the pipe: a modify blocks in the kernel until released.
	std::promise<void> release;
	std::shared_future<void> released = release.get_future().share();
	std::atomic<bool> armed{true};
	d.kernel_.SetEntryHook([&](testing::FakeKernel::Op op) {
		if (op == testing::FakeKernel::Op::kSetPipe &&
		    armed.exchange(false))
			released.wait();
	});
	ControlRequest modify;
	modify.op = ControlOp::kCreateOrModify;
	modify.call.source_system = testing::kTestHost;
	modify.call.target_system = "node2";
	modify.call.replication_pipe = ref;
	modify.call.source_endpoints = std::vector<std::string>{};
	modify.call.target_endpoints = std::vector<std::string>{};
	auto holder = std::async(std::launch::async, [&] {
		return CallDaemon(d.socket_path(), modify);
	});
	while (d.kernel_.calls(testing::FakeKernel::Op::kSetPipe) < 2)
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	CliRun busy = Cli({"--json", "create-or-modify", "--name", "",
	                   "--source-system", testing::kTestHost,
	                   "--target-system", "node2", "--pipe", ref});
	release.set_value();
	EXPECT_EQ(busy.exit, kExitBusy) << busy.out << busy.err;
	EXPECT_EQ(json::parse(busy.out)["ReturnValue"], 4096);
	auto held = holder.get();
	ASSERT_TRUE(held.ok());
	EXPECT_TRUE(held->ok) << held->error;
}

// replipiped at its connection cap answers busy and closes without reading
// the request. A request larger than the socket's buffer then fails to send
// (EPIPE): the CLI reads the answer anyway and exits 16 with ReturnValue
// 4096, not 69 (unreachable) as it did.
TEST_F(CliE2E, BusyAtTheConnectionCapExits16AlsoWhenTheSendBreaks)
{
	const std::string goal = d.dir_ / "big-goal.mof";
	{
		std::ofstream out(goal);
		out << "instance of CIM_SettingData { ElementName = \""
		    << std::string(600 * 1024, 'x') << "\"; };\n";
	}
	const std::string path = d.dir_ / "capped.sock";
	UniqueFd listener = ListenOnly(path, 4);
	ASSERT_TRUE(listener.valid());
	const std::string busy =
	        EncodeReply(ErrorReply(kCodeBusy, "the daemon has too many "
	                                          "connections; try again")) +
	        "\n";
	auto refused = std::async(std::launch::async, [&] {
		return RefuseOnce(listener.get(), busy);
	});
	std::vector<std::string> args = CreateWithGoalFile(goal, true);
	CliRun run = RunCli(path, args, 20);
	ASSERT_TRUE(refused.get());
	EXPECT_EQ(run.exit, kExitBusy) << run.out << run.err;
	ASSERT_TRUE(json::accept(run.out)) << run.out << run.err;
	EXPECT_EQ(json::parse(run.out)["ReturnValue"], 4096) << run.out;
}

// `wait` outlives a daemon restart (the unit restarts replipiped after a
// module reload) and its connection cap: no socket at first, then a busy
// refusal, then the answer that the pipe is InSync: exit 0, not 69 at the
// first failure.
TEST_F(CliE2E, WaitAsksAgainWhileTheDaemonRestartsOrIsBusy)
{
	const std::string path = d.dir_ / "restarting.sock";
	ControlReply insync;
	insync.pipes.push_back(DbPipe("InSync"));
	const std::string busy =
	        EncodeReply(ErrorReply(kCodeBusy, "too many connections")) +
	        "\n";
	auto daemon = std::async(std::launch::async, [&] {
		std::this_thread::sleep_for(std::chrono::milliseconds(1500));
		UniqueFd listener = ListenOnly(path, 4);
		return listener.valid() && RefuseOnce(listener.get(), busy) &&
		       AnswerOnce(listener.get(), EncodeReply(insync) + "\n");
	});
	CliRun run = RunCli(path, {"wait", "db", "--timeout", "20"}, 30);
	EXPECT_TRUE(daemon.get());
	EXPECT_EQ(run.exit, 0) << run.out << run.err;
	EXPECT_NE(run.err.find("asking again"), std::string::npos) << run.err;
}

// Without a daemon that comes back, the wait ends at its deadline, saying
// the daemon is unreachable (69).
TEST_F(CliE2E, WaitOnADaemonThatStaysAwayEndsAtItsDeadline)
{
	const auto start = std::chrono::steady_clock::now();
	CliRun run = RunCli(d.dir_ / "absent.sock",
	                    {"wait", "db", "--timeout", "2"}, 30);
	const auto took = std::chrono::steady_clock::now() - start;
	EXPECT_EQ(run.exit, kExitUnavailable) << run.out << run.err;
	EXPECT_GE(took, std::chrono::milliseconds(1400));
	EXPECT_LT(took, std::chrono::seconds(10));
}

TEST_F(CliE2E, EventsStream)
{
	CreateDb();
	const std::string cli = CliPath();
	int out[2];
	ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
	std::string socket = d.socket_path();
	pid_t pid = ::fork();
	if (pid == 0) {
		::dup2(out[1], STDOUT_FILENO);
		::execl(cli.c_str(), cli.c_str(), "--socket", socket.c_str(),
		        "--json", "events", static_cast<char *>(nullptr));
		::_exit(127);
	}
	::close(out[1]);
	// The first line within 60 s: the CLI under ASan starts, connects and
	// gets the snapshot in about 2 s, up to 4 s seen with eight shards at
	// once on two cores; the bound is only against a hang.
	std::string text;
	char c;
	pollfd pfd{out[0], POLLIN, 0};
	const auto deadline =
	        std::chrono::steady_clock::now() + std::chrono::seconds(60);
	while (text.find('\n') == std::string::npos) {
		const auto left =
		        std::chrono::duration_cast<std::chrono::milliseconds>(
		                deadline - std::chrono::steady_clock::now())
		                .count();
		if (left <= 0 || ::poll(&pfd, 1, static_cast<int>(left)) <= 0 ||
		    ::read(out[0], &c, 1) != 1)
			break;
		text += c;
	}
	::kill(pid, SIGTERM);
	::waitpid(pid, nullptr, 0);
	::close(out[0]);
	ASSERT_NE(text.find('\n'), std::string::npos) << text;
	json event = json::parse(text);
	EXPECT_EQ(event["event"], "pair_state");
	EXPECT_EQ(event["source"], "replipipe_0/a");
	EXPECT_EQ(event["state"], "Syncing");
}

// Every call but `wait` is bounded (REPLIPIPE_CALL_TIMEOUT, default 120 s;
// 1 s here): a daemon that takes the connection and never answers makes it
// exit 69 and say so, and for a call that changes something, that the
// change may or may not have been made.
TEST_F(CliE2E, CallsOtherThanWaitAreBoundedOnASilentDaemon)
{
	const std::string path = d.dir_ / "silent.sock";
	UniqueFd silent = ListenOnly(path, 4); // never accepted
	ASSERT_TRUE(silent.valid());
	const std::vector<std::string> env = {"REPLIPIPE_CALL_TIMEOUT=1"};
	ExpectListUnanswered(path);

	const auto start = std::chrono::steady_clock::now();
	CliRun create = RunCli(path,
	                       {"--json", "create-or-modify", "--name", "x",
	                        "--source-system", "localhost",
	                        "--target-system", "node2"},
	                       20, env);
	EXPECT_LT(std::chrono::steady_clock::now() - start,
	          std::chrono::seconds(10));
	EXPECT_EQ(create.exit, kExitUnavailable) << create.out << create.err;
	ASSERT_TRUE(json::accept(create.out)) << create.out << create.err;
	const std::string error = json::parse(create.out)["Error"];
	for (const char *needle :
	     {"replipiped did not answer within 1 s",
	      "may or may not have been applied", "replipipectl status"})
		EXPECT_NE(error.find(needle), std::string::npos)
		        << needle << " not in: " << error;

	// A wait's status request whose bound reaches the deadline: no
	// answer is the wait's time-out (3), not the daemon's silence (69).
	CliRun wait = RunCli(path, {"--json", "wait", "db", "--timeout", "1"},
	                     20, env);
	EXPECT_EQ(wait.exit, kExitWaitTimeout) << wait.out << wait.err;
	ASSERT_TRUE(json::accept(wait.out)) << wait.out << wait.err;
	EXPECT_EQ(json::parse(wait.out)["code"], "timeout") << wait.out;
}

// A call bound past poll(2)'s int of milliseconds (24.8 days; docs/cli.md
// allows a year) waits: it wrapped, and 4294968 s became 0.7 s, after
// which the CLI gave up saying it had waited 4294968 s. Here the CLI must
// still be waiting when the test's alarm ends it after 3 s (exit 128).
TEST_F(CliE2E, ACallBoundOverPollsRangeDoesNotWrap)
{
	const std::string path = d.dir_ / "silent.sock";
	UniqueFd silent = ListenOnly(path, 4); // never accepted
	ASSERT_TRUE(silent.valid());
	CliRun list =
	        RunCli(path, {"list"}, 3, {"REPLIPIPE_CALL_TIMEOUT=4294968"});
	EXPECT_EQ(list.exit, 128)
	        << "the call ended before its bound: " << list.err;
}

// connect() to a listener whose queue of pending connections is full
// blocks until it accepts one, here never: the connect is bounded too, by
// the wait's deadline or the call's bound.
TEST_F(CliE2E, ConnectIsBoundedWhenTheListenQueueIsFull)
{
	const std::string path = d.dir_ / "full.sock";
	UniqueFd listener = ListenOnly(path, 0);
	ASSERT_TRUE(listener.valid());
	int err = 0;
	// held open: the queue stays full
	std::vector<UniqueFd> queued = FillListenQueue(path, &err);
	ASSERT_EQ(err, EAGAIN) << std::strerror(err);
	ASSERT_FALSE(queued.empty());

	const auto start = std::chrono::steady_clock::now();
	CliRun wait =
	        RunCli(path, {"--json", "wait", "db", "--timeout", "1"}, 20);
	EXPECT_LT(std::chrono::steady_clock::now() - start,
	          std::chrono::seconds(10));
	EXPECT_EQ(wait.exit, kExitWaitTimeout) << wait.out << wait.err;
	ASSERT_TRUE(json::accept(wait.out)) << wait.out << wait.err;
	EXPECT_EQ(json::parse(wait.out)["code"], "timeout") << wait.out;
	ExpectListUnanswered(path);
}

// --timeout bounds when a wait stops polling, not how long one status
// reply may take: the state is looked at at least once, so a pipe that is
// InSync already is reached even with --timeout 0.
TEST_F(CliE2E, WaitTimeoutZeroOnAnInSyncPipeExits0)
{
	auto uuid = ParsePipeIdentifier(CreateDb());
	ASSERT_TRUE(uuid.ok() && *uuid);
	d.board_.Finish("replipipe_0/a");
	d.kernel_.ForcePairState(**uuid, "replipipe_0/a", PairState::kInSync);
	d.service_.RefreshPipe(**uuid);
	CliRun run = Cli({"wait", "db", "--timeout", "0"});
	EXPECT_EQ(run.exit, kExitOk) << run.out << run.err;
	EXPECT_NE(run.out.find("1/1 pairs InSync"), std::string::npos)
	        << run.out << run.err;
}

// A wait that times out says how far the pipe got, on stderr or as the
// JSON error: X of Y pairs in the state.
TEST_F(CliE2E, TimedOutWaitSaysHowManyPairsAreInTheState)
{
	CliRun created = Cli(
	        {"create-or-modify", "--name", "db", "--source-system",
	         testing::kTestHost, "--target-system", "node2", "--pair",
	         "replipipe_0/a=/dev/sdb", "--pair", "replipipe_0/b=/dev/sdc"});
	ASSERT_EQ(created.exit, 0) << created.err;
	auto uuid = ParsePipeIdentifier(TrimNewlines(created.out));
	ASSERT_TRUE(uuid.ok() && *uuid);
	d.board_.Finish("replipipe_0/a");
	d.kernel_.ForcePairState(**uuid, "replipipe_0/a", PairState::kInSync);
	d.service_.RefreshPipe(**uuid); // replipipe_0/b stays Syncing

	const std::string said =
	        "timed out after 1 s: 1 of 2 pairs of db are InSync";
	CliRun plain = Cli({"wait", "db", "--timeout", "1"});
	EXPECT_EQ(plain.exit, kExitWaitTimeout) << plain.out << plain.err;
	EXPECT_NE(plain.err.find(said), std::string::npos) << plain.err;

	CliRun as_json = Cli({"--json", "wait", "db", "--timeout", "1"});
	EXPECT_EQ(as_json.exit, kExitWaitTimeout) << as_json.out << as_json.err;
	ASSERT_TRUE(json::accept(as_json.out)) << as_json.out << as_json.err;
	json j = json::parse(as_json.out);
	EXPECT_EQ(j["code"], "timeout") << as_json.out;
	EXPECT_NE(j["Error"].get<std::string>().find(said), std::string::npos)
	        << as_json.out;
}

// A --goal-file that cannot be read exits 66 and names it with the reason:
// a directory used to abort replipipectl (an exception out of
// std::ifstream), and a read error on stdin looked like its end (an empty
// Goal: the defaults).
TEST_F(CliE2E, GoalFileReadErrorsExit66)
{
	const std::string dir = d.dir_ / "goal.d";
	ASSERT_TRUE(std::filesystem::create_directory(dir));
	const std::string why = std::strerror(EISDIR);
	for (bool as_json : {false, true}) {
		CliRun run = Cli(CreateWithGoalFile(dir, as_json));
		EXPECT_EQ(run.exit, kExitNoInput) << run.out << run.err;
		std::string said = run.err;
		if (as_json) {
			EXPECT_TRUE(json::accept(run.out))
			        << run.out << run.err;
			if (!json::accept(run.out))
				continue;
			said = json::parse(run.out)["Error"];
			// docs/cli.md: {"Error": ..., "code": ...}.
			EXPECT_EQ(json::parse(run.out)["code"], "no_input")
			        << run.out;
		}
		EXPECT_NE(said.find(dir), std::string::npos) << said;
		EXPECT_NE(said.find(why), std::string::npos) << said;
	}
	CliRun from_stdin = RunCli(d.socket_path(),
	                           CreateWithGoalFile("-", false), 60, {}, dir);
	EXPECT_EQ(from_stdin.exit, kExitNoInput)
	        << from_stdin.out << from_stdin.err;
	EXPECT_NE(from_stdin.err.find("stdin"), std::string::npos)
	        << from_stdin.err;
	EXPECT_NE(from_stdin.err.find(why), std::string::npos)
	        << from_stdin.err;
	EXPECT_TRUE(d.pipes_.ListPipes().empty());
}

// A connection lost in the middle of the reply is the daemon gone (69,
// docs/cli.md); a reply that is not the protocol is 76.
TEST_F(CliE2E, LostConnectionExits69AndAGarbledReply76)
{
	struct Case {
		const char *reply;
		int exit;
	};
	int n = 0;
	for (const Case &c : {Case{"{\"ok\": tr", kExitUnavailable},
	                      Case{"this is not json\n", kExitProtocol}}) {
		const std::string path =
		        d.dir_ / ("fake" + std::to_string(n++) + ".sock");
		UniqueFd listener = ListenOnly(path, 4);
		ASSERT_TRUE(listener.valid());
		auto answered = std::async(std::launch::async, [&] {
			return AnswerOnce(listener.get(), c.reply);
		});
		CliRun run = RunCli(path, {"list"}, 20);
		EXPECT_TRUE(answered.get()) << c.reply;
		EXPECT_EQ(run.exit, c.exit) << c.reply << ": " << run.err;
	}
}

// An option that needs a value does not take the option after it as its
// value: `--name --clear-pairs` renamed the pipe to "--clear-pairs" and
// exited 0. Now 64, and the pipe is left alone.
TEST_F(CliE2E, AnOptionWithoutItsValueIsAUsageError)
{
	CreateDb();
	for (bool as_json : {false, true}) {
		std::vector<std::string> args = {"create-or-modify",
		                                 "--source-system",
		                                 testing::kTestHost,
		                                 "--target-system",
		                                 "node2",
		                                 "--pipe",
		                                 "db",
		                                 "--name",
		                                 "--clear-pairs"};
		if (as_json)
			args.push_back("--json");
		CliRun run = Cli(args);
		EXPECT_EQ(run.exit, kExitUsage) << run.out << run.err;
		const std::string said = as_json && json::accept(run.out)
		                                 ? json::parse(run.out)["Error"]
		                                           .get<std::string>()
		                                 : run.err;
		EXPECT_NE(said.find("--name"), std::string::npos) << said;
		EXPECT_NE(said.find("\"--clear-pairs\""), std::string::npos)
		        << said;
	}
	CliRun pause = Cli({"pause", "db", "--pair", "--json"});
	EXPECT_EQ(pause.exit, kExitUsage) << pause.out << pause.err;
	CliRun status = Cli({"--json", "status", "db"});
	ASSERT_EQ(status.exit, 0) << status.err;
	json pipe = json::parse(status.out)["pipes"][0];
	EXPECT_EQ(pipe["name"], "db");
	ASSERT_EQ(pipe["pairs"].size(), 1u);
	EXPECT_EQ(pipe["pairs"][0]["state"], "Syncing");
}

// Usage errors, not the daemon's: an empty PIPE or --pair (exited 5 from
// the daemon), an empty or too long --socket (exited 69, "cannot reach").
TEST_F(CliE2E, EmptyValuesAndBadSocketsExit64)
{
	CreateDb();
	for (const std::vector<std::string> &args :
	     {std::vector<std::string>{"status", ""},
	      std::vector<std::string>{"pause", "db", "--pair", ""},
	      std::vector<std::string>{"resume", "db", "--pair", ""},
	      std::vector<std::string>{"--socket", "", "list"},
	      std::vector<std::string>{"--socket", "/" + std::string(200, 's'),
	                               "list"},
	      std::vector<std::string>{"--socket", d.socket_path(), "list",
	                               "--socket", d.socket_path()}}) {
		CliRun run = Cli(args);
		EXPECT_EQ(run.exit, kExitUsage) << args[0] << " " << args[1]
		                                << ": " << run.out << run.err;
		EXPECT_EQ(run.err.find("cannot reach"), std::string::npos)
		        << run.err;
	}
	CliRun as_json = Cli({"--json", "--socket", "", "list"});
	EXPECT_EQ(as_json.exit, kExitUsage) << as_json.out << as_json.err;
	ASSERT_TRUE(json::accept(as_json.out)) << as_json.out;
	EXPECT_EQ(json::parse(as_json.out)["code"], "usage") << as_json.out;
}

// replipiped's own command line; the daemon runs in a directory of its own
// with its state and socket there, and a run that gets past the parsing
// (the bugs) is ended after 10 s.
class DaemonArgs : public ::testing::Test
{
protected:
	void SetUp() override
	{
		if (ProgramPath("replipiped").empty())
			GTEST_SKIP() << "replipiped not built next to the test "
			                "binary";
	}

	CliRun Run(std::vector<std::string> args)
	{
		return RunProgram(ProgramPath("replipiped"), std::move(args),
		                  10, {}, "", dir_.path());
	}

	// The options that keep a daemon that starts inside dir_.
	std::vector<std::string> Contained(std::vector<std::string> more)
	{
		std::vector<std::string> args = {"--state-dir", dir_ / "state",
		                                 "--socket", dir_ / "s.sock",
		                                 "--foreground"};
		args.insert(args.end(), more.begin(), more.end());
		return args;
	}

	testing::TempDir dir_;
};

// A daemon started on another state directory but the socket a running one
// listens on stops before it touches the kernel: it used to reconcile
// first, pushing its own store over the running daemon's pipes, and only
// then found the socket taken. Here (no module on the build host) it
// reached netlink first and exited 69, "module not loaded".
TEST_F(DaemonArgs, ASecondDaemonOnTheSameSocketStopsBeforeTheKernel)
{
	UniqueFd running = ListenOnly(dir_ / "s.sock", 4);
	ASSERT_TRUE(running.valid());
	CliRun run = Run(Contained({}));
	EXPECT_EQ(run.exit, 1) << run.err;
	EXPECT_NE(run.err.find("another daemon is already listening"),
	          std::string::npos)
	        << run.err;
	EXPECT_EQ(run.err.find("netlink"), std::string::npos) << run.err;
}

TEST_F(DaemonArgs, AnOptionWithoutItsValueIsAUsageError)
{
	CliRun run = Run(
	        {"--socket", dir_ / "s.sock", "--state-dir", "--foreground"});
	EXPECT_EQ(run.exit, kExitUsage) << run.err;
	EXPECT_NE(run.err.find("--state-dir"), std::string::npos) << run.err;
	EXPECT_NE(run.err.find("\"--foreground\""), std::string::npos)
	        << run.err;
	EXPECT_FALSE(std::filesystem::exists(dir_ / "--foreground"));
	run = Run(Contained({"--log-level", "-h"}));
	EXPECT_EQ(run.exit, kExitUsage) << run.err;
	// --opt=value is the way to give such a value.
	run = Run(Contained({"--log-level=--foreground"}));
	EXPECT_EQ(run.exit, kExitUsage) << run.err;
	EXPECT_NE(run.err.find("not \"--foreground\""), std::string::npos)
	        << run.err;
}

TEST_F(DaemonArgs, BadValuesAreUsageErrorsThatNameThem)
{
	for (const char *interval : {"-1", "4294967296", "31536001"}) {
		CliRun run = Run(Contained({"--probe-interval", interval}));
		EXPECT_EQ(run.exit, kExitUsage) << interval << ": " << run.err;
		EXPECT_NE(run.err.find("--probe-interval"), std::string::npos)
		        << run.err;
		EXPECT_NE(run.err.find(std::string("\"") + interval + "\""),
		          std::string::npos)
		        << run.err;
	}
	CliRun run = Run(Contained({"--log-level", "bogus"}));
	EXPECT_EQ(run.exit, kExitUsage) << run.err;
	EXPECT_NE(run.err.find("\"bogus\""), std::string::npos) << run.err;

	run = Run(Contained({"extra"}));
	EXPECT_EQ(run.exit, kExitUsage) << run.err;
	EXPECT_NE(run.err.find("\"extra\""), std::string::npos) << run.err;
	run = Run({"extra", "--version"});
	EXPECT_EQ(run.exit, kExitUsage) << run.out << run.err;

	run = Run({"--state-dir", dir_ / "state", "--socket",
	           "/" + std::string(200, 's'), "--foreground"});
	EXPECT_EQ(run.exit, kExitUsage) << run.err;
	EXPECT_FALSE(std::filesystem::exists(dir_ / "state"));
}

// The help is not wrapped inside a path (boost's 80 columns split the
// default socket path in two).
TEST_F(DaemonArgs, HelpKeepsPathsWhole)
{
	CliRun run = Run({"--help"});
	EXPECT_EQ(run.exit, 0) << run.err;
	for (const char *whole :
	     {"(default /run/replipipe/replipiped.sock)",
	      "(default /var/lib/replipipe)", "--probe-interval SECONDS"})
		EXPECT_NE(run.out.find(whole), std::string::npos)
		        << whole << " not in:\n"
		        << run.out;
}

} // namespace
} // namespace replipipe
