// SystemCommandRunner with real child processes (sh, sleep): the bound,
// and Cancel(), which the daemon calls when it stops so that an iscsiadm
// login to a dead peer does not hold the stop past TimeoutStopSec.
#include "iscsi_runner.h"

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::TempDir;
using Argv = std::vector<std::string>;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// What "promptly" means for a cancelled Run: the child's SIGKILL and reap.
constexpr auto kPrompt = std::chrono::seconds(2);
// Every wait of these tests ends by then, so that a wrong implementation
// fails them instead of hanging them. A Run that Cancel() does not reach
// still returns when its `sleep 30` ends.
constexpr auto kWaitBound = std::chrono::seconds(10);
constexpr milliseconds kLongBound{60000};
constexpr const char *kSecret = "s3cr3t";

// A child that writes its pid to `pidfile` (atomically, so that a reader
// never sees half of it), then becomes `sleep 30`: the pid is the child's.
// kSecret stands for a CHAP secret on the command line.
Argv SleeperWritingPid(const std::string &pidfile, bool close_output = false)
{
	std::string script = "echo $$ > \"$1.tmp\" && mv \"$1.tmp\" \"$1\" && "
	                     "exec sleep 30";
	if (close_output)
		script = "exec >/dev/null 2>&1; " + script;
	return {"sh", "-c", script, "sh", pidfile, kSecret};
}

bool Exists(const std::string &path)
{
	struct stat st;
	return ::stat(path.c_str(), &st) == 0;
}

// The pid in pidfile once it is there; -1 when it does not come by the
// bound.
pid_t WaitForPid(const std::string &pidfile)
{
	const auto until = Clock::now() + kWaitBound;
	while (Clock::now() < until) {
		if (Exists(pidfile)) {
			pid_t pid = -1;
			std::ifstream(pidfile) >> pid;
			return pid;
		}
		std::this_thread::sleep_for(milliseconds(10));
	}
	return -1;
}

bool Gone(pid_t pid)
{
	return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
}

struct Timed {
	Result<CommandResult> result;
	Clock::duration took;
};

std::future<Timed> RunAsync(SystemCommandRunner &runner, Argv argv,
                            milliseconds bound)
{
	return std::async(std::launch::async,
	                  [&runner, argv = std::move(argv), bound] {
		                  const auto t0 = Clock::now();
		                  auto r = runner.Run(argv, bound);
		                  return Timed{std::move(r), Clock::now() - t0};
	                  });
}

void ExpectStopped(const Result<CommandResult> &r)
{
	ASSERT_FALSE(r.ok()) << "exit " << r->exit_code
	                     << (r->timed_out ? " (timed out)" : "");
	EXPECT_EQ(r.status().err(), ECANCELED) << r.status().message();
	EXPECT_NE(r.status().message().find("stopped"), std::string::npos)
	        << r.status().message();
	EXPECT_NE(r.status().message().find("sh"), std::string::npos)
	        << r.status().message();
	// argv[0] only: the rest may hold a CHAP secret.
	EXPECT_EQ(r.status().message().find(kSecret), std::string::npos)
	        << r.status().message();
	EXPECT_EQ(r.status().message().find("sleep"), std::string::npos)
	        << r.status().message();
}

TEST(SystemCommandRunnerTest, CollectsOutputAndExitCode)
{
	SystemCommandRunner runner;
	auto r = runner.Run({"sh", "-c", "echo out; echo err >&2; exit 3"},
	                    kLongBound);
	ASSERT_TRUE(r.ok()) << r.status().message();
	EXPECT_EQ(r->exit_code, 3);
	EXPECT_FALSE(r->timed_out);
	EXPECT_EQ(r->output, "out\nerr\n");
	EXPECT_FALSE(runner.Cancelled());
}

TEST(SystemCommandRunnerTest, MissingProgramIsENOENT)
{
	SystemCommandRunner runner;
	auto r = runner.Run({"replipipe-no-such-program", kSecret}, kLongBound);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.status().err(), ENOENT) << r.status().message();
	EXPECT_EQ(r.status().message().find(kSecret), std::string::npos);
}

TEST(SystemCommandRunnerTest, BoundKillsTheChild)
{
	TempDir dir;
	SystemCommandRunner runner;
	const auto t0 = Clock::now();
	auto r = runner.Run(SleeperWritingPid(dir / "pid"), milliseconds(500));
	EXPECT_LT(Clock::now() - t0, kPrompt);
	ASSERT_TRUE(r.ok()) << r.status().message();
	EXPECT_TRUE(r->timed_out);
	EXPECT_EQ(r->exit_code, 128 + SIGKILL);
	EXPECT_TRUE(Gone(WaitForPid(dir / "pid")));
}

// The old runner waited for the exit without a bound once the output
// ended: a child that closed its output and lingered held Run for good.
TEST(SystemCommandRunnerTest, BoundHoldsAfterTheOutputEnds)
{
	TempDir dir;
	SystemCommandRunner runner;
	const auto t0 = Clock::now();
	auto r = runner.Run(SleeperWritingPid(dir / "pid", true),
	                    milliseconds(500));
	EXPECT_LT(Clock::now() - t0, kPrompt);
	ASSERT_TRUE(r.ok()) << r.status().message();
	EXPECT_TRUE(r->timed_out);
	EXPECT_TRUE(Gone(WaitForPid(dir / "pid")));
}

// The daemon's stop during a login to a dead peer: Run returns at once
// with ECANCELED, not after the bound, and the child is gone (killed and
// reaped, not left behind).
TEST(SystemCommandRunnerTest, CancelEndsARunInProgress)
{
	TempDir dir;
	SystemCommandRunner runner;
	auto run = RunAsync(runner, SleeperWritingPid(dir / "pid"), kLongBound);
	const pid_t pid = WaitForPid(dir / "pid");
	ASSERT_GT(pid, 0) << "the child never started";
	const auto t0 = Clock::now();
	runner.Cancel();
	EXPECT_LT(Clock::now() - t0, kPrompt) << "Cancel() waited";
	ASSERT_EQ(run.wait_for(kWaitBound), std::future_status::ready)
	        << "Run still going " << kWaitBound.count()
	        << " s after Cancel()";
	Timed t = run.get();
	EXPECT_LT(Clock::now() - t0, kPrompt) << "Run was not cancelled";
	ExpectStopped(t.result);
	EXPECT_TRUE(Gone(pid));
	EXPECT_TRUE(runner.Cancelled());
}

// Cancelled while it waits for the exit of a child that closed its output.
TEST(SystemCommandRunnerTest, CancelReachesAChildThatClosedItsOutput)
{
	TempDir dir;
	SystemCommandRunner runner;
	auto run = RunAsync(runner, SleeperWritingPid(dir / "pid", true),
	                    kLongBound);
	const pid_t pid = WaitForPid(dir / "pid");
	ASSERT_GT(pid, 0) << "the child never started";
	const auto t0 = Clock::now();
	runner.Cancel();
	ASSERT_EQ(run.wait_for(kWaitBound), std::future_status::ready)
	        << "Run still going " << kWaitBound.count()
	        << " s after Cancel()";
	Timed t = run.get();
	EXPECT_LT(Clock::now() - t0, kPrompt) << "Run was not cancelled";
	ExpectStopped(t.result);
	EXPECT_TRUE(Gone(pid));
}

// Several iscsiadm calls run side by side (one per portal): one Cancel()
// ends them all.
TEST(SystemCommandRunnerTest, CancelEndsEveryConcurrentRun)
{
	constexpr int kRuns = 4;
	TempDir dir;
	SystemCommandRunner runner;
	std::vector<std::future<Timed>> runs;
	for (int i = 0; i < kRuns; i++)
		runs.push_back(RunAsync(
		        runner, SleeperWritingPid(dir / std::to_string(i)),
		        kLongBound));
	std::vector<pid_t> pids;
	for (int i = 0; i < kRuns; i++) {
		pids.push_back(WaitForPid(dir / std::to_string(i)));
		ASSERT_GT(pids.back(), 0) << "child " << i << " never started";
	}
	const auto t0 = Clock::now();
	runner.Cancel();
	for (int i = 0; i < kRuns; i++) {
		ASSERT_EQ(runs[i].wait_for(kWaitBound),
		          std::future_status::ready)
		        << "run " << i << " still going " << kWaitBound.count()
		        << " s after Cancel()";
		Timed t = runs[i].get();
		EXPECT_LT(Clock::now() - t0, kPrompt)
		        << "run " << i << " was not cancelled";
		ExpectStopped(t.result);
		EXPECT_TRUE(Gone(pids[i])) << "child " << i;
	}
}

// After Cancel() nothing starts: the command would have made a file.
TEST(SystemCommandRunnerTest, RunAfterCancelStartsNothing)
{
	TempDir dir;
	SystemCommandRunner runner;
	runner.Cancel();
	runner.Cancel(); // twice is fine
	const std::string made = dir / "made";
	const auto t0 = Clock::now();
	auto r = runner.Run({"sh", "-c", "touch \"$1\"", "sh", made, kSecret},
	                    kLongBound);
	EXPECT_LT(Clock::now() - t0, kPrompt);
	ExpectStopped(r);
	// A child that had been started would have made it by now.
	std::this_thread::sleep_for(milliseconds(300));
	EXPECT_FALSE(Exists(made));
}

} // namespace
} // namespace replipipe
