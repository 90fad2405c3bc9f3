// iscsiadm command building and result mapping (IscsiAdmin), and the
// session manager (IscsiSessions) over a fake runner and a temp sysfs.
#include "iscsi_sessions.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "iscsi_targets.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::TempDir;
using Argv = std::vector<std::string>;

constexpr const char *kIqn = "iqn.2003-01.org.linux-iscsi.peer:vol1";

// The handler runs outside mu, as iscsiadm processes run side by side: a
// handler that blocks holds up only its own caller. Once cancelled, like
// SystemCommandRunner::Cancel(), it runs nothing (and records no call).
class FakeRunner : public CommandRunner
{
public:
	std::function<Result<CommandResult>(const Argv &)> handler;
	Result<CommandResult> Run(const Argv &argv,
	                          std::chrono::milliseconds) override
	{
		if (cancelled)
			return Stopped();
		{
			std::lock_guard<std::mutex> lock(mu);
			calls.push_back(argv);
		}
		if (missing)
			return Status::Error("run iscsiadm: not found", ENOENT);
		if (!handler)
			return CommandResult{};
		return handler(argv);
	}
	bool Cancelled() const override { return cancelled; }
	// What a call cut short by a cancel returns.
	static Status Stopped()
	{
		return Status::Error(std::string("run iscsiadm: ") +
		                             kStoppingReason,
		                     ECANCELED);
	}
	bool Ran(const std::string &word) const
	{
		std::lock_guard<std::mutex> lock(mu);
		for (const Argv &a : calls)
			for (const std::string &w : a)
				if (w == word)
					return true;
		return false;
	}
	mutable std::mutex mu;
	std::vector<Argv> calls; // guarded by mu
	bool missing = false;
	std::atomic<bool> cancelled{false};
};

// Every wait in the concurrency tests ends by then, so that a wrong
// implementation fails them instead of hanging them.
constexpr auto kWaitBound = std::chrono::seconds(5);

// A fake iscsiadm call that blocks (a login to a dead peer) until the test
// lets it go.
class Gate
{
public:
	// In the fake: says it is in, then waits to be let go.
	void Pass()
	{
		std::unique_lock<std::mutex> lock(mu_);
		entered_ = true;
		cv_.notify_all();
		cv_.wait_for(lock, kWaitBound, [this] { return open_; });
	}
	bool WaitEntered()
	{
		std::unique_lock<std::mutex> lock(mu_);
		return cv_.wait_for(lock, kWaitBound,
		                    [this] { return entered_; });
	}
	void Open()
	{
		std::lock_guard<std::mutex> lock(mu_);
		open_ = true;
		cv_.notify_all();
	}

private:
	std::mutex mu_;
	std::condition_variable cv_;
	bool entered_ = false; // guarded by mu_
	bool open_ = false;    // guarded by mu_
};

// Which of a test's Attach threads runs an iscsiadm call ('?': the test's).
thread_local char caller = '?';

bool Has(const Argv &argv, const std::string &word)
{
	return std::find(argv.begin(), argv.end(), word) != argv.end();
}

// A login killed at its bound, as to a peer that does not answer.
CommandResult LoginTimedOut()
{
	CommandResult r;
	r.timed_out = true;
	r.exit_code = 137;
	return r;
}

IscsiUrl Url(const std::string &host = "127.0.0.1", uint32_t lun = 0)
{
	IscsiUrl u;
	u.host = host;
	u.iqn = kIqn;
	u.lun = lun;
	return u;
}

// A connector's in_use that always names @targets.
TargetConnector::TargetsInUse InUse(std::vector<std::string> targets)
{
	return [targets = std::move(targets)] { return targets; };
}

CommandResult Exit(int code, std::string out = "")
{
	CommandResult r;
	r.exit_code = code;
	r.output = std::move(out);
	return r;
}

// --- IscsiAdmin -------------------------------------------------------

TEST(IscsiAdminTest, BuildsCommandLines)
{
	FakeRunner runner;
	IscsiAdmin admin(runner, "/sbin/iscsiadm");
	// Every record command names the daemon's iface: without -I,
	// iscsiadm acts on the records of all ifaces.
	EXPECT_EQ(
	        admin.DiscoveryArgs(Url()),
	        (Argv{"/sbin/iscsiadm", "-m", "discovery", "-t", "sendtargets",
	              "-p", "127.0.0.1:3260", "-I", "default", "-o", "new"}));
	EXPECT_EQ(admin.LoginArgs(Url()),
	          (Argv{"/sbin/iscsiadm", "-m", "node", "-T", kIqn, "-p",
	                "127.0.0.1:3260", "-I", "default", "--login"}));
	EXPECT_EQ(admin.LogoutArgs(Url("fd00::1")),
	          (Argv{"/sbin/iscsiadm", "-m", "node", "-T", kIqn, "-p",
	                "[fd00::1]:3260", "-I", "default", "--logout"}));
	EXPECT_EQ(admin.SessionLogoutArgs(7),
	          (Argv{"/sbin/iscsiadm", "-m", "session", "-r", "7",
	                "--logout"}));
	EXPECT_EQ(admin.UpdateArgs(Url(), "node.startup", "manual"),
	          (Argv{"/sbin/iscsiadm", "-m", "node", "-T", kIqn, "-p",
	                "127.0.0.1:3260", "-I", "default", "-o", "update", "-n",
	                "node.startup", "-v", "manual"}));
}

TEST(IscsiAdminTest, ParsesDiscovery)
{
	auto t = IscsiAdmin::ParseDiscovery(
	        "127.0.0.1:3260,1 iqn.2003-01.org.x:a\n"
	        "[fd00::1]:3260,2 IQN.2003-01.org.x:B\n"
	        "iscsiadm: some message\n"
	        "\n");
	ASSERT_EQ(t.size(), 2u);
	EXPECT_EQ(t[0].portal, "127.0.0.1:3260");
	EXPECT_EQ(t[0].iqn, "iqn.2003-01.org.x:a");
	EXPECT_EQ(t[1].portal, "[fd00::1]:3260");
	EXPECT_EQ(t[1].iqn, "iqn.2003-01.org.x:b");
}

TEST(IscsiAdminTest, MapsExitCodes)
{
	FakeRunner runner;
	IscsiAdmin admin(runner);
	const auto b = std::chrono::milliseconds(1000);
	struct Case {
		int code;
		int err;
	} cases[] = {{4, EHOSTUNREACH},  {8, EHOSTUNREACH},
	             {24, EACCES},       {5, ECONNREFUSED},
	             {19, ECONNREFUSED}, {20, EIO},
	             {21, ENOENT},       {1, EIO}};
	for (const Case &c : cases) {
		runner.handler = [&](const Argv &) {
			return Exit(c.code, "iscsiadm: reason " +
			                            std::to_string(c.code) +
			                            "\n");
		};
		Status st = admin.Login(Url(), b);
		EXPECT_EQ(st.err(), c.err) << c.code << ": " << st.message();
		EXPECT_NE(st.message().find("reason"), std::string::npos);
	}
	runner.handler = [](const Argv &) { return Exit(15); };
	EXPECT_EQ(admin.Login(Url(), b).err(), EEXIST); // already logged in
	runner.handler = [](const Argv &) { return Exit(21); };
	EXPECT_TRUE(admin.Logout(Url(), b).ok()); // no session
	// -m session -r <sid>: no such session (a session gone meanwhile is
	// sysfs lookup's 22) is ENOENT, which IscsiSessions checks in sysfs.
	for (int gone : {2, 21, 22}) {
		runner.handler = [gone](const Argv &) {
			return Exit(gone,
			            "iscsiadm: No matching sessions found\n");
		};
		Status st = admin.LogoutSession(7, "x on y", b);
		EXPECT_EQ(st.err(), ENOENT) << gone;
		EXPECT_NE(st.message().find("No matching sessions found"),
		          std::string::npos)
		        << st.message();
	}
	runner.handler = [](const Argv &) {
		return Exit(1, "iscsiadm: logout failed\n");
	};
	Status logout = admin.LogoutSession(7, "iqn.x on 127.0.0.1:3260", b);
	EXPECT_EQ(logout.err(), EIO);
	EXPECT_NE(logout.message().find("session 7 (iqn.x on 127.0.0.1:3260)"),
	          std::string::npos)
	        << logout.message();
	runner.handler = [](const Argv &) {
		CommandResult r;
		r.timed_out = true;
		r.exit_code = 137;
		return r;
	};
	EXPECT_EQ(admin.Login(Url(), b).err(), ETIMEDOUT);
	runner.handler = [](const Argv &) {
		return Exit(11, "iscsiadm: Could not perform SendTargets "
		                "discovery: iSCSI PDU timed out\n");
	};
	Status unreachable = admin.Discover(Url(), b).status();
	EXPECT_EQ(unreachable.err(), EHOSTUNREACH);
	EXPECT_NE(unreachable.message().find("unreachable"), std::string::npos);
	runner.missing = true;
	Status st = admin.Discover(Url(), b).status();
	EXPECT_EQ(st.err(), ENOENT);
	EXPECT_NE(st.message().find("open-iscsi"), std::string::npos);
}

// A runner cancelled because the daemon stops: neither a time-out (3) nor
// a peer's failure (EIO), and no secret in the message.
TEST(IscsiAdminTest, CancelledRunnerIsStopped)
{
	FakeRunner runner;
	IscsiAdmin admin(runner);
	const auto b = std::chrono::milliseconds(1000);
	runner.cancelled = true;
	Status login = admin.Login(Url(), b);
	EXPECT_EQ(login.err(), ECANCELED) << login.message();
	EXPECT_EQ(login.message(), std::string("login to ") + kIqn +
	                                   " on 127.0.0.1:3260: stopped: "
	                                   "replipiped is stopping");
	Status update = admin.Update(Url(), "node.session.auth.password",
	                             "s3cr3t", b, true);
	EXPECT_EQ(update.err(), ECANCELED);
	EXPECT_EQ(update.message().find("s3cr3t"), std::string::npos);
	EXPECT_EQ(admin.Discover(Url(), b).status().err(), ECANCELED);
	EXPECT_TRUE(runner.calls.empty());
}

TEST(IscsiAdminTest, SecretsStayOutOfMessages)
{
	FakeRunner runner;
	IscsiAdmin admin(runner);
	runner.handler = [](const Argv &) {
		return Exit(6, "iscsiadm: could not set s3cr3t\n");
	};
	Status st = admin.Update(Url(), "node.session.auth.password", "s3cr3t",
	                         std::chrono::milliseconds(1000), true);
	ASSERT_FALSE(st.ok());
	EXPECT_EQ(st.message().find("s3cr3t"), std::string::npos)
	        << st.message();
}

// --- IscsiSessions ----------------------------------------------------

class IscsiSessionsTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		options.sysfs = sys.path();
		options.dev = dev.path();
		options.chap_dir = chap.path();
		options.login_bound = std::chrono::milliseconds(300);
		options.poll_interval = std::chrono::milliseconds(10);
		options.chap_owner = ::getuid();
		::mkdir(dev.path().c_str(), 0755);
	}

	// What a successful login does in sysfs.
	void MakeSession(bool with_disk)
	{
		sys.Write("class/iscsi_session/session1/targetname",
		          std::string(kIqn) + "\n");
		sys.Write("class/iscsi_session/session1/state", "LOGGED_IN\n");
		sys.Write("class/iscsi_connection/connection1:0/"
		          "persistent_address",
		          "127.0.0.1\n");
		sys.Write("class/iscsi_connection/connection1:0/"
		          "persistent_port",
		          "3260\n");
		if (with_disk) {
			const std::string d = "class/iscsi_session/session1/"
			                      "device/target2:0:0/2:0:0:0/";
			sys.Write(d + "state", "running\n");
			sys.Write(d + "block/sdb/dev", "8:16\n");
			sys.Write(d + "block/sdb/ro", "0\n");
		}
	}
	// A session to the same (portal, IQN) that an administrator logged
	// in through another open-iscsi iface.
	void MakeIfaceSession(int sid, const std::string &iface)
	{
		const std::string dir = "class/iscsi_session/session" +
		                        std::to_string(sid) + "/";
		const std::string conn = "class/iscsi_connection/connection" +
		                         std::to_string(sid) + ":0/";
		sys.Write(dir + "targetname", std::string(kIqn) + "\n");
		sys.Write(dir + "state", "LOGGED_IN\n");
		sys.Write(dir + "ifacename", iface + "\n");
		sys.Write(conn + "persistent_address", "127.0.0.1\n");
		sys.Write(conn + "persistent_port", "3260\n");
	}
	// A fake iscsiadm's -m session -r <sid> --logout that ends the
	// session: its sysfs directory goes.
	bool EndSessionNamedIn(const Argv &a)
	{
		if (a.size() < 6 || a[2] != "session" || a.back() != "--logout")
			return false;
		std::filesystem::remove_all(
		        sys / ("class/iscsi_session/session" + a[4]));
		return true;
	}
	void RemoveSession()
	{
		std::filesystem::remove_all(sys /
		                            "class/iscsi_session/session1");
	}

	// A portal offering kIqn; login makes the session (with_disk), logout
	// removes it.
	void Peer(bool with_disk, int login_exit = 0)
	{
		runner.handler = [this, with_disk,
		                  login_exit](const Argv &a) -> CommandResult {
			if (a[2] == "discovery")
				return Exit(0,
				            std::string("127.0.0.1:3260,1 ") +
				                    kIqn + "\n");
			if (a.back() == "--login") {
				if (login_exit == 0)
					MakeSession(with_disk);
				return Exit(login_exit,
				            "iscsiadm: login says no\n");
			}
			if (a.back() == "--logout") {
				RemoveSession();
				return Exit(0);
			}
			return Exit(0);
		};
	}

	TempDir sys, dev, chap;
	FakeRunner runner;
	IscsiOptions options;
};

TEST_F(IscsiSessionsTest, WrongIqnIsRefusedWithoutLogin)
{
	runner.handler = [](const Argv &) {
		return Exit(0, "127.0.0.1:3260,1 iqn.2003-01.org.x:other\n");
	};
	IscsiSessions s(runner, options);
	auto a = s.Attach(Url());
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), ENXIO);
	EXPECT_NE(a.status().message().find("iqn.2003-01.org.x:other"),
	          std::string::npos);
	EXPECT_FALSE(runner.Ran("--login"));
}

TEST_F(IscsiSessionsTest, UnreachablePortal)
{
	runner.handler = [](const Argv &) {
		return Exit(4, "iscsiadm: cannot make connection to 127.0.0.1: "
		               "Connection refused\n");
	};
	IscsiSessions s(runner, options);
	auto a = s.Attach(Url());
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), EHOSTUNREACH);
	EXPECT_NE(a.status().message().find("Connection refused"),
	          std::string::npos);
}

TEST_F(IscsiSessionsTest, SetsUpTheNodeThenLogsIn)
{
	Peer(true);
	dev.Write("sdb", "");
	IscsiSessions s(runner, options);
	auto a = s.Attach(Url());
	// dev/sdb is no block device in a temp dir: refused, logged out.
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), EIO) << a.status().message();
	EXPECT_TRUE(runner.Ran("node.startup"));
	EXPECT_TRUE(runner.Ran("node.session.timeo.replacement_timeout"));
	EXPECT_FALSE(runner.Ran("node.session.auth.authmethod")); // no file
	EXPECT_TRUE(runner.Ran("--login"));
	EXPECT_TRUE(runner.Ran("--logout"));
	EXPECT_FALSE(s.FindSession(Url()));
}

TEST_F(IscsiSessionsTest, DiskNeverAppearsIsATimeoutAndLogsOut)
{
	Peer(false);
	IscsiSessions s(runner, options);
	const auto before = std::chrono::steady_clock::now();
	auto a = s.Attach(Url());
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), ETIMEDOUT) << a.status().message();
	EXPECT_TRUE(runner.Ran("--logout"));
	EXPECT_FALSE(s.FindSession(Url()));
	// The login answered: the LUN's own failure, not the peer's.
	EXPECT_FALSE(s.LoginTimedOutSince(Url("127.0.0.1", 1), before));
}

// A session that exists by the time of the login (iscsiadm's exit 15:
// another tool logged in after FindSession() looked) is not this call's:
// when its disk is refused (dev/sdb is no block device here) or does not
// appear, it stays logged in. (Before, it was taken for this call's and
// logged out.)
TEST_F(IscsiSessionsTest, ASessionMadeMeanwhileIsNotOurs)
{
	for (const bool with_disk : {true, false}) {
		RemoveSession();
		{
			std::lock_guard<std::mutex> lock(runner.mu);
			runner.calls.clear();
		}
		runner.handler = [&](const Argv &a) -> CommandResult {
			if (a[2] == "discovery")
				return Exit(0,
				            std::string("127.0.0.1:3260,1 ") +
				                    kIqn);
			if (a.back() == "--login") {
				MakeSession(with_disk);
				if (with_disk)
					dev.Write("sdb", "");
				return Exit(15);
			}
			if (a.back() == "--logout")
				RemoveSession();
			return Exit(0);
		};
		options.login_bound = std::chrono::milliseconds(300);
		IscsiSessions s(runner, options);
		auto a = s.Attach(Url());
		ASSERT_FALSE(a.ok());
		EXPECT_EQ(a.status().err(), with_disk ? EIO : ETIMEDOUT)
		        << a.status().message();
		EXPECT_NE(a.status().message().find("stays logged in"),
		          std::string::npos)
		        << a.status().message();
		EXPECT_FALSE(runner.Ran("--logout")) << with_disk;
		EXPECT_TRUE(s.FindSession(Url())) << with_disk;
	}
}

TEST_F(IscsiSessionsTest, LoginRefused)
{
	Peer(false, 24);
	IscsiSessions s(runner, options);
	auto a = s.Attach(Url());
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), EACCES);
	EXPECT_FALSE(s.FindSession(Url()));
}

TEST_F(IscsiSessionsTest, LoginTimeoutLogsOutWhatIscsidMayHaveMade)
{
	runner.handler = [this](const Argv &a) -> CommandResult {
		if (a[2] == "discovery")
			return Exit(0, std::string("127.0.0.1:3260,1 ") + kIqn);
		if (a.back() == "--login") {
			MakeSession(true); // iscsid finished after all
			CommandResult r;
			r.timed_out = true;
			return r;
		}
		if (a.back() == "--logout")
			RemoveSession();
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	const auto before = std::chrono::steady_clock::now();
	auto a = s.Attach(Url());
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), ETIMEDOUT);
	EXPECT_TRUE(runner.Ran("--logout"));
	EXPECT_FALSE(s.FindSession(Url()));
	// Told for every LUN of that portal and target (the connector skips
	// them in the same pass), from then on only; not for another portal.
	EXPECT_TRUE(s.LoginTimedOutSince(Url("127.0.0.1", 1), before));
	EXPECT_FALSE(
	        s.LoginTimedOutSince(Url(), std::chrono::steady_clock::now()));
	EXPECT_FALSE(s.LoginTimedOutSince(Url("10.0.0.9"), before));
	IscsiTargetConnector c(s);
	EXPECT_TRUE(
	        c.LoginTimedOutSince(Url("127.0.0.1", 1).Canonical(), before));
}

// The daemon stops during a login that iscsid completes all the same: the
// Attach fails as stopped, not as a time-out, tries no logout (the
// cancelled runner would refuse it), and the session stays; the next
// start's Attach takes it as it is, without iscsiadm.
TEST_F(IscsiSessionsTest, CancelledLoginLeavesTheSessionForTheNextStart)
{
	options.login_bound = std::chrono::milliseconds(10000);
	runner.handler = [this](const Argv &a) -> Result<CommandResult> {
		if (a[2] == "discovery")
			return Exit(0, std::string("127.0.0.1:3260,1 ") + kIqn);
		if (a.back() == "--login") {
			MakeSession(true); // iscsid finished after all
			runner.cancelled = true;
			return FakeRunner::Stopped();
		}
		return Exit(0);
	};
	const auto t0 = std::chrono::steady_clock::now();
	{
		IscsiSessions s(runner, options);
		auto a = s.Attach(Url());
		ASSERT_FALSE(a.ok());
		EXPECT_EQ(a.status().err(), ECANCELED) << a.status().message();
		EXPECT_NE(a.status().message().find("login to"),
		          std::string::npos)
		        << a.status().message();
		EXPECT_NE(a.status().message().find("stopped: replipiped is "
		                                    "stopping"),
		          std::string::npos)
		        << a.status().message();
		EXPECT_FALSE(runner.Ran("--logout"));
		EXPECT_TRUE(s.FindSession(Url()));
	}
	EXPECT_LT(std::chrono::steady_clock::now() - t0, kWaitBound);

	FakeRunner next; // the next start's
	IscsiSessions s(next, options);
	dev.Write("sdb", "");
	auto a = s.Attach(Url());
	// dev/sdb is no block device in a temp dir: refused, but only at the
	// disk, so the session was taken as it is, and no iscsiadm ran.
	EXPECT_EQ(a.status().err(), EIO) << a.status().message();
	EXPECT_TRUE(next.calls.empty());
	EXPECT_TRUE(s.FindSession(Url()));
}

// Cancelled after the login, while the disk is awaited: the Attach stops
// waiting (not after the rest of login_bound) and tries no logout.
TEST_F(IscsiSessionsTest, CancelStopsTheWaitForTheDisk)
{
	options.login_bound = std::chrono::milliseconds(10000);
	runner.handler = [this](const Argv &a) -> Result<CommandResult> {
		if (a[2] == "discovery")
			return Exit(0, std::string("127.0.0.1:3260,1 ") + kIqn);
		if (a.back() == "--login") {
			MakeSession(false); // the disk never comes
			runner.cancelled = true;
		}
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	const auto t0 = std::chrono::steady_clock::now();
	auto a = s.Attach(Url());
	EXPECT_LT(std::chrono::steady_clock::now() - t0,
	          std::chrono::seconds(2));
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), ECANCELED) << a.status().message();
	EXPECT_NE(a.status().message().find("stays logged in"),
	          std::string::npos)
	        << a.status().message();
	EXPECT_FALSE(runner.Ran("--logout"));
}

TEST_F(IscsiSessionsTest, ChapFromARootOnlyFile)
{
	chap.Write(kIqn, "# peer vol1\nusername = alice\npassword = s3cr3t\n");
	::chmod((chap / kIqn).c_str(), 0600);
	Peer(false);
	IscsiSessions s(runner, options);
	(void)s.Attach(Url());
	bool user = false, pass = false;
	for (const Argv &a : runner.calls) {
		for (size_t i = 0; i + 2 < a.size(); i++) {
			if (a[i] == "node.session.auth.username")
				user = a[i + 2] == "alice";
			if (a[i] == "node.session.auth.password")
				pass = a[i + 2] == "s3cr3t";
		}
	}
	EXPECT_TRUE(user);
	EXPECT_TRUE(pass);
	EXPECT_TRUE(runner.Ran("CHAP"));
}

TEST_F(IscsiSessionsTest, ChapFileReadableByOthersIsRefused)
{
	chap.Write(kIqn, "username = alice\npassword = s3cr3t\n");
	::chmod((chap / kIqn).c_str(), 0644);
	Peer(true);
	IscsiSessions s(runner, options);
	auto a = s.Attach(Url());
	ASSERT_FALSE(a.ok());
	EXPECT_EQ(a.status().err(), EACCES);
	EXPECT_EQ(a.status().message().find("s3cr3t"), std::string::npos);
	EXPECT_FALSE(runner.Ran("--login"));
}

TEST_F(IscsiSessionsTest, DescribeAndDevicePathFromSysfs)
{
	IscsiSessions s(runner, options);
	IscsiPeerState none = s.Describe(Url());
	EXPECT_EQ(none.session, "none");
	EXPECT_EQ(none.portal, "127.0.0.1:3260");
	EXPECT_EQ(s.DevicePath(Url()).status().err(), ENODEV);
	MakeSession(true);
	IscsiPeerState st = s.Describe(Url());
	EXPECT_EQ(st.session, "LOGGED_IN");
	EXPECT_EQ(st.device, dev.path() + "/sdb");
	EXPECT_EQ(*s.DevicePath(Url()), dev.path() + "/sdb");
	EXPECT_EQ(s.DevicePath(Url("127.0.0.1", 1)).status().err(), ENODEV);
	// Another portal is another session.
	IscsiUrl other = Url("10.0.0.9");
	EXPECT_EQ(s.Describe(other).session, "none");
	EXPECT_TRUE(runner.calls.empty()); // sysfs only
}

// What the kernel mirrors a pair to, when the pair's URL has no device now:
// that LUN's disk in a session to the IQN (through any portal), or a path
// that names nothing now (a lost session's disk, gone from /dev), may be
// it; a device that is there and is not that disk is not.
TEST_F(IscsiSessionsTest, WhatMayBeALunsDisk)
{
	IscsiSessions s(runner, options);
	const std::string sdb = dev.path() + "/sdb";
	const std::string sdc = dev.path() + "/sdc";
	dev.Write("sdc", ""); // a device node that is some other disk
	EXPECT_TRUE(s.MayBeDiskOf(Url(), sdb)) << "nothing at the path";
	EXPECT_FALSE(s.MayBeDiskOf(Url(), sdc));
	MakeSession(true);
	dev.Write("sdb", "");
	EXPECT_TRUE(s.MayBeDiskOf(Url(), sdb));
	EXPECT_TRUE(s.MayBeDiskOf(Url("10.0.0.9"), sdb)) << "another portal";
	EXPECT_FALSE(s.MayBeDiskOf(Url(), sdc));
	EXPECT_FALSE(s.MayBeDiskOf(Url("127.0.0.1", 1), sdb))
	        << "another LUN's disk";
	IscsiUrl other_iqn = Url();
	other_iqn.iqn = "iqn.2003-01.org.x:other";
	EXPECT_FALSE(s.MayBeDiskOf(other_iqn, sdb)) << "another target's";
	EXPECT_TRUE(runner.calls.empty()); // sysfs only
}

TEST_F(IscsiSessionsTest, ConnectorLogsOutOnlyUnsharedOwnedSessions)
{
	MakeSession(true);
	IscsiSessions s(runner, options);
	IscsiTargetConnector c(s);
	runner.handler = [this](const Argv &a) {
		if (a.back() == "--logout")
			RemoveSession();
		return Exit(0);
	};
	const std::string lun0 = Url().Canonical();
	const std::string lun1 = Url("127.0.0.1", 1).Canonical();
	EXPECT_TRUE(c.Handles(lun0));
	EXPECT_FALSE(c.Handles("/dev/sdb"));
	// LUN 1 of the same session is still used: no logout.
	EXPECT_TRUE(c.Disconnect({lun0}, InUse({lun1})).empty());
	EXPECT_FALSE(runner.Ran("--logout"));
	EXPECT_TRUE(c.Disconnect({lun0}, InUse({})).empty());
	EXPECT_TRUE(runner.Ran("--logout"));
	auto peer = c.Describe(lun0);
	ASSERT_TRUE(peer);
	EXPECT_EQ(peer->session, "none");
	EXPECT_FALSE(c.Describe("/dev/sdb"));
}

// Logout ends the one session it decided on, by its sid. It ran the node
// record's logout (-m node -T -p --logout), which ends every session of the
// record: an administrator's through another iface went with the daemon's.
TEST_F(IscsiSessionsTest, LogoutEndsItsOwnSessionByItsSidOnly)
{
	MakeSession(true); // no ifacename: a kernel without it, the default
	MakeIfaceSession(2, "adm");
	runner.handler = [this](const Argv &a) {
		EndSessionNamedIn(a);
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	std::vector<std::string> asked;
	const auto keep = [&](const IscsiSysfsSession &found) {
		asked.push_back(found.name);
		return false;
	};
	bool kept = true;
	ASSERT_TRUE(s.Logout(Url(), keep, &kept).ok());
	EXPECT_FALSE(kept);
	EXPECT_EQ(asked, (std::vector<std::string>{"session1"}));
	ASSERT_EQ(runner.calls.size(), 1u);
	EXPECT_EQ(runner.calls[0],
	          (Argv{"iscsiadm", "-m", "session", "-r", "1", "--logout"}));
}

// A session on another iface is never the daemon's (its logins name
// "default"): Logout leaves it, and does not even ask keep about it.
TEST_F(IscsiSessionsTest, ASessionOnAnotherIfaceIsNeverLoggedOut)
{
	MakeIfaceSession(3, "adm");
	runner.handler = [this](const Argv &a) {
		EndSessionNamedIn(a);
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	bool asked = false;
	const auto keep = [&](const IscsiSysfsSession &) {
		asked = true;
		return false;
	};
	bool kept = true;
	ASSERT_TRUE(s.Logout(Url(), keep, &kept).ok());
	EXPECT_FALSE(kept);
	EXPECT_FALSE(asked);
	EXPECT_TRUE(runner.calls.empty());
	// Its own iface named in sysfs: that one it does end.
	MakeIfaceSession(4, "default");
	ASSERT_TRUE(s.Logout(Url(), keep, &kept).ok());
	EXPECT_TRUE(asked);
	ASSERT_EQ(runner.calls.size(), 1u);
	EXPECT_EQ(runner.calls[0],
	          (Argv{"iscsiadm", "-m", "session", "-r", "4", "--logout"}));
}

// A logout tried again is for the session whose logout failed, found by its
// name, not whatever sysfs shows for the URL by then: an administrator's
// later session on the default iface is not ended, and a portal name that
// does not resolve this time does not pass for "no session".
TEST_F(IscsiSessionsTest, ALogoutTriedAgainEndsOnlyTheSessionItWasFor)
{
	MakeIfaceSession(5, "default"); // the administrator's, later
	runner.handler = [this](const Argv &a) {
		EndSessionNamedIn(a);
		return Exit(0);
	};
	options.resolve = [](const std::string &) {
		return std::vector<std::string>{}; // resolves to nothing
	};
	IscsiSessions s(runner, options);
	// session1, owed, ended meanwhile: nothing to do.
	ASSERT_TRUE(s.Logout(Url(), {}, nullptr, "session1").ok());
	EXPECT_TRUE(runner.calls.empty());
	// Still there, named by a host name that resolves to nothing now.
	MakeSession(true);
	ASSERT_TRUE(
	        s.Logout(Url("peer.example"), {}, nullptr, "session1").ok());
	ASSERT_EQ(runner.calls.size(), 1u);
	EXPECT_EQ(runner.calls[0],
	          (Argv{"iscsiadm", "-m", "session", "-r", "1", "--logout"}));
	EXPECT_TRUE(s.FindSession(Url()).has_value()); // session5 stays
	EXPECT_EQ(s.FindSession(Url())->name, "session5");
}

// A sid comes back after scsi_transport_iscsi is loaded again: an owed
// logout's session1 may then be an administrator's, through another iface
// or to another target. The one owed is gone; the other stays.
TEST_F(IscsiSessionsTest, AnOwedSessionsNameThatIsAnothersNowIsNotLoggedOut)
{
	MakeIfaceSession(1, "adm");
	runner.handler = [this](const Argv &a) {
		EndSessionNamedIn(a);
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	ASSERT_TRUE(s.Logout(Url(), {}, nullptr, "session1").ok());
	EXPECT_TRUE(runner.calls.empty());
	// On the daemon's iface, but to another IQN.
	std::filesystem::remove_all(sys / "class/iscsi_session/session1");
	MakeIfaceSession(1, "default");
	sys.Write("class/iscsi_session/session1/targetname",
	          "iqn.2003-01.org.example:other\n");
	ASSERT_TRUE(s.Logout(Url(), {}, nullptr, "session1").ok());
	EXPECT_TRUE(runner.calls.empty());
	EXPECT_TRUE(
	        std::filesystem::exists(sys / "class/iscsi_session/session1"));
	// To the IQN, on another port.
	sys.Write("class/iscsi_session/session1/targetname",
	          std::string(kIqn) + "\n");
	sys.Write("class/iscsi_connection/connection1:0/persistent_port",
	          "3261\n");
	ASSERT_TRUE(s.Logout(Url(), {}, nullptr, "session1").ok());
	EXPECT_TRUE(runner.calls.empty());
	// Its target name does not read (a session going away): not known
	// to be another's, so the logout stays owed (an error), none run.
	sys.Write("class/iscsi_connection/connection1:0/persistent_port",
	          "3260\n");
	std::filesystem::remove(sys /
	                        "class/iscsi_session/session1/targetname");
	Status unknown = s.Logout(Url(), {}, nullptr, "session1");
	EXPECT_EQ(unknown.err(), EAGAIN) << unknown.message();
	EXPECT_TRUE(runner.calls.empty());
	// The owed one itself, on a kernel without ifacename: ended.
	sys.Write("class/iscsi_session/session1/targetname",
	          std::string(kIqn) + "\n");
	std::filesystem::remove(sys / "class/iscsi_session/session1/ifacename");
	ASSERT_TRUE(s.Logout(Url(), {}, nullptr, "session1").ok());
	ASSERT_EQ(runner.calls.size(), 1u);
	EXPECT_EQ(runner.calls[0],
	          (Argv{"iscsiadm", "-m", "session", "-r", "1", "--logout"}));
}

// A session an owed logout names, found by a create after a restart (the
// daemon that made it is gone), is still the daemon's once adopted: a
// Connect() that finds a session it did not make, with no stored pair on
// it, takes it for the administrator's, and the owed logout then ended as
// "the administrator's", leaving the session for good.
TEST_F(IscsiSessionsTest, AnAdoptedSessionThatAConnectFindsIsStillTheDaemons)
{
	// Attach needs dev/sdb to be a block device: any of the host's.
	std::string block;
	struct stat st;
	for (const auto &e : std::filesystem::directory_iterator("/dev"))
		if (::stat(e.path().c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
			block = e.path().string();
			break;
		}
	if (block.empty())
		GTEST_SKIP() << "no block device in /dev";
	MakeSession(true);
	sys.Write("class/iscsi_session/session1/device/target2:0:0/2:0:0:0/"
	          "block/sdb/dev",
	          std::to_string(major(st.st_rdev)) + ":" +
	                  std::to_string(minor(st.st_rdev)) + "\n");
	std::filesystem::create_symlink(block, dev / "sdb");
	runner.handler = [this](const Argv &a) {
		if (a.back() == "--logout")
			RemoveSession();
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	const std::string target = Url().Canonical();
	bool made = true;
	{
		IscsiTargetConnector found(s);
		auto d = found.Connect(target, {}, &made);
		ASSERT_TRUE(d.ok()) << d.status().message();
		EXPECT_FALSE(made);
		EXPECT_EQ(found.DisconnectSession(target, "session1", InUse({}))
		                  .outcome,
		          SessionDisconnect::Outcome::kKept);
		EXPECT_FALSE(runner.Ran("--logout"));
	}
	IscsiTargetConnector c(s);
	c.Adopt("session1");
	auto d = c.Connect(target, {}, &made);
	ASSERT_TRUE(d.ok()) << d.status().message();
	EXPECT_EQ(c.DisconnectSession(target, "session1", InUse({})).outcome,
	          SessionDisconnect::Outcome::kEnded);
	EXPECT_TRUE(runner.Ran("--logout"));
}

// iscsiadm 2.1.8 that cannot reach iscsid says "No matching sessions found"
// and exits 21, as for a session that is gone; the session is still there.
// That counted as logged out: the session stayed for good. Sysfs decides.
TEST_F(IscsiSessionsTest, ALogoutIsDoneWhenSysfsSaysSo)
{
	MakeSession(true);
	IscsiSessions s(runner, options);
	runner.handler = [](const Argv &) {
		return Exit(21,
		            "iscsiadm: initiator reported error (20 - could "
		            "not connect to iscsid)\n"
		            "iscsiadm: No matching sessions found\n");
	};
	Status st = s.Logout(Url());
	EXPECT_EQ(st.err(), EIO);
	EXPECT_NE(st.message().find("session 1"), std::string::npos)
	        << st.message();
	EXPECT_NE(st.message().find("still there"), std::string::npos)
	        << st.message();
	EXPECT_NE(st.message().find("could not connect to iscsid"),
	          std::string::npos)
	        << st.message();
	// Exit 0 with the session still there is no logout either.
	runner.handler = [](const Argv &) { return Exit(0); };
	EXPECT_EQ(s.Logout(Url()).err(), EIO);
	// Gone meanwhile (another tool's logout): 21 is right.
	runner.handler = [this](const Argv &) {
		RemoveSession();
		return Exit(21, "iscsiadm: No matching sessions found\n");
	};
	EXPECT_TRUE(s.Logout(Url()).ok());
}

// A portal's host name is resolved once per resolve_ttl, not at every look-up
// of a session: status looks one up per iSCSI pair, and a resolver that does
// not answer took its time-out each time. A name that does not resolve is
// remembered as well.
TEST_F(IscsiSessionsTest, AHostNameIsResolvedOncePerTtl)
{
	MakeSession(true);
	std::atomic<int> calls{0};
	options.resolve = [&calls](const std::string &host) {
		++calls;
		return host == "peer.example"
		               ? std::vector<std::string>{"127.0.0.1"}
		               : std::vector<std::string>{};
	};
	{
		IscsiSessions s(runner, options);
		EXPECT_TRUE(s.FindSession(Url("peer.example")));
		EXPECT_TRUE(s.FindSession(Url("peer.example", 1)));
		EXPECT_EQ(s.Describe(Url("peer.example")).session, "LOGGED_IN");
		EXPECT_EQ(*s.DevicePath(Url("peer.example")),
		          dev.path() + "/sdb");
		EXPECT_EQ(calls, 1);
		EXPECT_FALSE(s.FindSession(Url("other.example")));
		EXPECT_FALSE(s.FindSession(Url("other.example")));
		EXPECT_EQ(calls, 2);
		// Numeric hosts need no resolver.
		EXPECT_TRUE(s.FindSession(Url("127.0.0.1")));
		EXPECT_EQ(calls, 2);
	}
	// Past the TTL (0 here) it is asked again.
	options.resolve_ttl = std::chrono::milliseconds(0);
	calls = 0;
	IscsiSessions s(runner, options);
	EXPECT_TRUE(s.FindSession(Url("peer.example")));
	EXPECT_TRUE(s.FindSession(Url("peer.example")));
	EXPECT_EQ(calls, 2);
}

// A resolver that answers a portal name with an address the session does not
// have (@first_answer, when set) at its first call, and with the session's
// address at every later call once the test lets it go. Shared with the
// refreshes that run it in the background, so that one still running when a
// test ends early touches nothing freed.
struct SlowResolver {
	Gate gate;
	std::atomic<int> calls{0};
	std::optional<std::string> first_answer;
};

std::function<std::vector<std::string>(const std::string &)>
Resolver(const std::shared_ptr<SlowResolver> &slow)
{
	return [slow](const std::string &) {
		if (++slow->calls == 1 && slow->first_answer)
			return std::vector<std::string>{*slow->first_answer};
		slow->gate.Pass();
		return std::vector<std::string>{"127.0.0.1"};
	};
}

// Lets the resolver go when a test ends, however it ends.
struct OpenAtEnd {
	std::shared_ptr<SlowResolver> slow;
	~OpenAtEnd() { slow->gate.Open(); }
};

// Far below the resolver's wait (kWaitBound), far above a look-up in a temp
// sysfs, also on a loaded machine (eight shards under ASan at once).
constexpr auto kPrompt = std::chrono::seconds(2);

// Whether @fn returned within kPrompt.
template <typename Fn> bool Prompt(const Fn &fn)
{
	const auto started = std::chrono::steady_clock::now();
	fn();
	return std::chrono::steady_clock::now() - started < kPrompt;
}

// Whether Describe finds the session within kWaitBound.
bool FoundInTime(const IscsiSessions &s, const IscsiUrl &url)
{
	const auto deadline = std::chrono::steady_clock::now() + kWaitBound;
	while (s.Describe(url).session != "LOGGED_IN") {
		if (std::chrono::steady_clock::now() >= deadline)
			return false;
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	}
	return true;
}

// The daemon's main loop looks sessions up through Describe (status, for the
// metrics textfile) and DevicePath (the periodic refresh's device for the
// resync jobs). At each expiry of a portal name's addresses, a resolver that
// did not answer held the loop for its time-out (here the 5 s the resolver
// waits for the gate). They now use the addresses they have, stale, and
// refresh them in the background, one refresh per name at a time; once the
// resolver answers, its addresses are used.
TEST_F(IscsiSessionsTest, DescribeAndDevicePathDoNotWaitForTheResolver)
{
	MakeSession(true);
	auto slow = std::make_shared<SlowResolver>();
	slow->first_answer = "10.0.0.9"; // an address the name had before
	OpenAtEnd open_at_end{slow};
	options.resolve = Resolver(slow);
	options.resolve_ttl = std::chrono::milliseconds(0); // always stale
	IscsiSessions s(runner, options);
	IscsiTargetConnector c(s);
	const IscsiUrl url = Url("peer.example");
	const std::string target = url.Canonical();
	EXPECT_FALSE(s.FindSession(url)); // the first answer: not the session
	ASSERT_EQ(slow->calls, 1);

	IscsiPeerState st;
	ASSERT_TRUE(Prompt([&] { st = s.Describe(url); }))
	        << "Describe waited for the resolver";
	EXPECT_EQ(st.session, "none"); // by the stale addresses
	Result<std::string> path = Status();
	ASSERT_TRUE(Prompt([&] { path = s.DevicePath(url); }))
	        << "DevicePath waited for the resolver";
	EXPECT_EQ(path.status().err(), ENODEV);
	std::optional<PeerView> peer;
	ASSERT_TRUE(Prompt([&] { peer = c.Describe(target); }))
	        << "the connector's Describe waited for the resolver";
	ASSERT_TRUE(peer);
	EXPECT_EQ(peer->session, "none");
	ASSERT_TRUE(Prompt([&] { path = c.DevicePath(target); }))
	        << "the connector's DevicePath waited for the resolver";
	EXPECT_FALSE(path.ok());
	// One refresh of the name, in the background, for all those calls.
	ASSERT_TRUE(slow->gate.WaitEntered());
	EXPECT_EQ(slow->calls, 2);

	slow->gate.Open();
	EXPECT_TRUE(FoundInTime(s, url));
	path = s.DevicePath(url);
	ASSERT_TRUE(path.ok()) << path.status().message();
	EXPECT_EQ(*path, dev.path() + "/sdb");
	peer = c.Describe(target);
	ASSERT_TRUE(peer);
	EXPECT_EQ(peer->device, dev.path() + "/sdb");
}

// A name not resolved yet (the daemon just started, its reconcile's login
// still waiting for the resolver) matches no session until a refresh in the
// background has answered: the loop does not wait for that either.
TEST_F(IscsiSessionsTest, ANameNotResolvedYetMatchesOnceItIs)
{
	MakeSession(true);
	auto slow = std::make_shared<SlowResolver>();
	OpenAtEnd open_at_end{slow};
	options.resolve = Resolver(slow);
	IscsiSessions s(runner, options);
	const IscsiUrl url = Url("peer.example");
	IscsiPeerState st;
	ASSERT_TRUE(Prompt([&] { st = s.Describe(url); }))
	        << "Describe waited for the resolver";
	EXPECT_EQ(st.session, "none");
	ASSERT_TRUE(slow->gate.WaitEntered());
	slow->gate.Open();
	EXPECT_TRUE(FoundInTime(s, url));
	EXPECT_EQ(slow->calls, 1); // the answer is kept for resolve_ttl
}

// What logs in and out (Attach, Logout, the connector's in-use checks) goes
// by FindSession, which still waits for the resolver's answer to a stale
// name: by the stale addresses the session would not be found, and an
// Attach would log in again.
TEST_F(IscsiSessionsTest, FindSessionWaitsForTheResolversAnswer)
{
	MakeSession(true);
	auto slow = std::make_shared<SlowResolver>();
	slow->first_answer = "10.0.0.9";
	OpenAtEnd open_at_end{slow};
	options.resolve = Resolver(slow);
	options.resolve_ttl = std::chrono::milliseconds(0);
	IscsiSessions s(runner, options);
	const IscsiUrl url = Url("peer.example");
	EXPECT_FALSE(s.FindSession(url));
	auto found = std::async(std::launch::async,
	                        [&] { return s.FindSession(url).has_value(); });
	ASSERT_TRUE(slow->gate.WaitEntered());
	EXPECT_EQ(found.wait_for(std::chrono::milliseconds(100)),
	          std::future_status::timeout);
	slow->gate.Open();
	EXPECT_TRUE(found.get());
}

// A session is the one sysfs shows, whatever a URL's spelling: LUN 1 named
// by "localhost", or by another writing of the IPv6 address, keeps the
// session LUN 0 named by the address uses. Keyed by the URLs' text, the
// removal of LUN 0's pair logged it out under LUN 1's.
TEST_F(IscsiSessionsTest, ConnectorKeepsASessionAnotherSpellingOfItsPortalUses)
{
	MakeSession(true);
	IscsiSessions s(runner, options);
	IscsiTargetConnector c(s);
	runner.handler = [this](const Argv &a) {
		if (a.back() == "--logout")
			RemoveSession();
		return Exit(0);
	};
	ASSERT_TRUE(s.FindSession(Url("localhost", 1)))
	        << "localhost does not resolve to 127.0.0.1 here";
	EXPECT_TRUE(c.Disconnect({Url().Canonical()},
	                         InUse({Url("localhost", 1).Canonical()}))
	                    .empty());
	EXPECT_FALSE(runner.Ran("--logout"));

	sys.Write("class/iscsi_connection/connection1:0/persistent_address",
	          "fd00::1\n");
	EXPECT_TRUE(c.Disconnect({Url("fd00::1").Canonical()},
	                         InUse({Url("fd00:0::1", 1).Canonical()}))
	                    .empty());
	EXPECT_FALSE(runner.Ran("--logout"));
	// No other pair uses it: logged out.
	EXPECT_TRUE(
	        c.Disconnect({Url("fd00::1").Canonical()}, InUse({})).empty());
	EXPECT_TRUE(runner.Ran("--logout"));
	EXPECT_FALSE(s.FindSession(Url("fd00::1")));
}

// What is in use is asked in the portal's turn, not when the removal
// starts: a create of LUN 1 reserved while the removal of LUN 0's pair
// waited for that turn (here behind an Attach to another IQN of the
// portal) keeps the session. Asked up front, the removal logged out the
// session the create had just found.
TEST_F(IscsiSessionsTest, ConnectorAsksWhatIsInUseInThePortalsTurn)
{
	options.login_bound = std::chrono::milliseconds(10000);
	MakeSession(true);
	IscsiUrl other = Url();
	other.iqn = "iqn.2003-01.org.linux-iscsi.peer:vol2";
	Gate discovery;
	runner.handler = [&](const Argv &a) -> CommandResult {
		if (a[2] == "discovery") {
			discovery.Pass();
			return Exit(0, "127.0.0.1:3260,1 " + std::string(kIqn) +
			                       "\n");
		}
		if (a.back() == "--logout")
			RemoveSession();
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	IscsiTargetConnector c(s);
	auto holder =
	        std::async(std::launch::async, [&] { return s.Attach(other); });
	ASSERT_TRUE(discovery.WaitEntered());
	std::mutex mu;
	std::vector<std::string> in_use; // guarded by mu
	bool turn_came = false;          // guarded by mu
	bool asked_early = false;        // guarded by mu
	auto removal = std::async(std::launch::async, [&] {
		return c.Disconnect({Url().Canonical()}, [&] {
			std::lock_guard<std::mutex> lock(mu);
			asked_early = asked_early || !turn_came;
			return in_use;
		});
	});
	// The removal is waiting for the portal; a create reserves LUN 1.
	std::this_thread::sleep_for(std::chrono::milliseconds(200));
	{
		std::lock_guard<std::mutex> lock(mu);
		in_use = {Url("127.0.0.1", 1).Canonical()};
		turn_came = true;
	}
	discovery.Open();
	EXPECT_EQ(holder.get().status().err(), ENXIO);
	EXPECT_TRUE(removal.get().empty());
	std::lock_guard<std::mutex> lock(mu);
	EXPECT_FALSE(asked_early);
	EXPECT_FALSE(runner.Ran("--logout"));
	EXPECT_TRUE(s.FindSession(Url()));
}

// One dead peer used to hold up every login: Attach and Logout were
// serialized behind one mutex, so an Attach to a healthy portal waited out
// the whole login bound of one to a dead one.
TEST_F(IscsiSessionsTest, ALoginToADeadPortalHoldsUpNoOtherPortal)
{
	options.login_bound = std::chrono::milliseconds(10000);
	const IscsiUrl dead = Url("10.0.0.1");
	const IscsiUrl healthy = Url("127.0.0.1");
	Gate dead_login;
	runner.handler = [&](const Argv &a) -> CommandResult {
		const bool to_dead = Has(a, dead.Portal());
		if (a[2] == "discovery")
			return Exit(0, (to_dead ? "10.0.0.1:3260,1 "
			                        : "127.0.0.1:3260,1 ") +
			                       std::string(kIqn) + "\n");
		if (a.back() == "--login") {
			if (to_dead) {
				dead_login.Pass();
				return LoginTimedOut();
			}
			return Exit(24, "iscsiadm: authentication failed\n");
		}
		if (a.back() == "--logout" && !to_dead)
			RemoveSession();
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	auto to_dead =
	        std::async(std::launch::async, [&] { return s.Attach(dead); });
	const bool blocked = dead_login.WaitEntered();
	auto to_healthy = std::async(std::launch::async, [&] {
		Status attach = s.Attach(healthy).status();
		MakeSession(false); // the administrator's, say
		Status logout = s.Logout(healthy);
		return std::make_pair(attach, logout);
	});
	const bool healthy_done =
	        to_healthy.wait_for(kWaitBound) == std::future_status::ready;
	dead_login.Open();
	EXPECT_TRUE(blocked) << "the login to the dead portal never started";
	EXPECT_TRUE(healthy_done) << "Attach and Logout to a healthy portal "
	                             "waited for a login to a dead one";
	auto [attach, logout] = to_healthy.get();
	EXPECT_EQ(attach.err(), EACCES) << attach.message();
	EXPECT_TRUE(logout.ok()) << logout.message();
	EXPECT_FALSE(s.FindSession(healthy));
	EXPECT_EQ(to_dead.get().status().err(), ETIMEDOUT);
}

// A discovery on a portal rewrites the node records of every IQN the
// portal offers: an Attach to another IQN there must not start before the
// first one's sequence (here its logout after the login timed out) ends.
TEST_F(IscsiSessionsTest, SequencesOnOnePortalDoNotOverlap)
{
	options.login_bound = std::chrono::milliseconds(10000);
	const IscsiUrl first = Url();
	IscsiUrl second = Url();
	second.iqn = "iqn.2003-01.org.linux-iscsi.peer:vol2";
	Gate first_login;
	std::mutex order_mu;
	std::condition_variable order_cv;
	std::string order; // guarded by order_mu: one letter per call
	runner.handler = [&](const Argv &a) -> CommandResult {
		{
			std::lock_guard<std::mutex> lock(order_mu);
			order += caller;
			order_cv.notify_all();
		}
		if (a[2] == "discovery")
			return Exit(0, "127.0.0.1:3260,1 " + first.iqn +
			                       "\n127.0.0.1:3260,1 " +
			                       second.iqn + "\n");
		if (a.back() == "--login") {
			if (caller == 'A') {
				first_login.Pass();
				return LoginTimedOut();
			}
			return Exit(24, "iscsiadm: authentication failed\n");
		}
		return Exit(0);
	};
	IscsiSessions s(runner, options);
	auto a = std::async(std::launch::async, [&] {
		caller = 'A';
		return s.Attach(first).status();
	});
	const bool blocked = first_login.WaitEntered();
	auto b = std::async(std::launch::async, [&] {
		caller = 'B';
		return s.Attach(second).status();
	});
	// Correct code keeps B out for good; give wrong code a moment to let
	// it in.
	bool overlapped;
	{
		std::unique_lock<std::mutex> lock(order_mu);
		overlapped = order_cv.wait_for(
		        lock, std::chrono::milliseconds(300),
		        [&] { return order.find('B') != std::string::npos; });
	}
	first_login.Open();
	EXPECT_TRUE(blocked) << "the first login never started";
	EXPECT_EQ(a.get().err(), ETIMEDOUT);
	EXPECT_EQ(b.get().err(), EACCES);
	EXPECT_FALSE(overlapped);
	std::lock_guard<std::mutex> lock(order_mu);
	EXPECT_EQ(order, "AAAAABBBB"); // discovery, 2 updates, login, logout
}

// A portal that does not answer: an Attach that waited for its turn while
// the one before it ran out of time there fails at once, running nothing,
// instead of taking its own bound (the calls behind logins to a dead peer
// took one bound each, one after the other). One asked after that tries.
TEST_F(IscsiSessionsTest, ACallThatWaitedBehindADeadPortalFailsAtOnce)
{
	options.login_bound = std::chrono::milliseconds(10000);
	const IscsiUrl first = Url();
	IscsiUrl second = Url();
	second.iqn = "iqn.2003-01.org.linux-iscsi.peer:vol2";
	Gate first_discovery;
	std::mutex order_mu;
	std::string order; // guarded by order_mu: one letter per command
	runner.handler = [&](const Argv &a) -> CommandResult {
		{
			std::lock_guard<std::mutex> lock(order_mu);
			order += caller;
		}
		if (a[2] == "discovery" && caller == 'A') {
			first_discovery.Pass();
			return LoginTimedOut(); // killed at its bound
		}
		return Exit(24, "iscsiadm: authentication failed\n");
	};
	IscsiSessions s(runner, options);
	auto a = std::async(std::launch::async, [&] {
		caller = 'A';
		return s.Attach(first).status();
	});
	const bool blocked = first_discovery.WaitEntered();
	auto b = std::async(std::launch::async, [&] {
		caller = 'B';
		return s.Attach(second).status();
	});
	// B waits for the portal's turn (SequencesOnOnePortalDoNotOverlap);
	// let it get there before A's discovery ends.
	std::this_thread::sleep_for(std::chrono::milliseconds(200));
	first_discovery.Open();
	EXPECT_TRUE(blocked) << "the first discovery never started";
	const Status a_status = a.get();
	EXPECT_EQ(a_status.err(), ETIMEDOUT) << a_status.message();
	const Status b_status = b.get();
	EXPECT_EQ(b_status.err(), ETIMEDOUT) << b_status.message();
	EXPECT_NE(b_status.message().find("not tried: a discovery or login at "
	                                  "127.0.0.1:3260 ran out of time "
	                                  "while this call waited for its "
	                                  "turn"),
	          std::string::npos)
	        << b_status.message();
	{
		std::lock_guard<std::mutex> lock(order_mu);
		EXPECT_EQ(order, "A"); // A's discovery, nothing of B's
	}
	// Asked now, after the time-out: tried (and refused, here).
	auto c = std::async(std::launch::async, [&] {
		caller = 'C';
		return s.Attach(second).status();
	});
	EXPECT_EQ(c.get().err(), EACCES);
	std::lock_guard<std::mutex> lock(order_mu);
	EXPECT_EQ(order.substr(0, 2), "AC");
}

} // namespace
} // namespace replipipe
