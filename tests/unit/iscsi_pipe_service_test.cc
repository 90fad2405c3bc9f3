// PipeService with a TargetConnector (iscsi:// targets): connect before
// verify, the device to the kernel, the URL to the store, the return values,
// and no connection left behind by a failed call.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include <gtest/gtest.h>

#include "fake_kernel_fake.h"
#include "fake_probe_fake.h"
#include "log.h"
#include "pipe_service.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

using testing::FakeKernel;
using testing::FakeProbe;
using testing::TempDir;

constexpr uint64_t kGiB = 1ull << 30;
constexpr const char *kHost = "node1.example.com";
const std::string kUrl0 = "iscsi://127.0.0.1:3260/iqn.2003-01.org.x:peer/0";
const std::string kUrl1 = "iscsi://127.0.0.1:3260/iqn.2003-01.org.x:peer/1";
// kUrl0's LUN through another portal of the same target.
const std::string kUrl0Portal2 =
        "iscsi://10.0.0.2:3260/iqn.2003-01.org.x:peer/0";

// Targets connect to /dev/sd<n>; errors are scripted per target. A connect
// may take a while (delay, a login's time), and the targets in held do not
// answer until Release() (a peer whose login hangs until the connector's
// bound; here 10 s at most, so that a test of code that waits for them ends).
class FakeConnector : public TargetConnector
{
public:
	bool Handles(const std::string &t) const override
	{
		return LooksLikeIscsiUrl(t);
	}
	Result<std::string> Connect(const std::string &t,
	                            const std::vector<std::string> &,
	                            bool *made) override
	{
		std::unique_lock<std::mutex> lock(mu);
		connects++;
		*made = false;
		const std::chrono::milliseconds wait = delay;
		const bool hold = held.count(t) > 0;
		lock.unlock();
		std::this_thread::sleep_for(wait);
		lock.lock();
		if (hold &&
		    !released_cv.wait_for(lock, std::chrono::seconds(10),
		                          [&] { return released; }))
			return Status::Error("no answer within the bound",
			                     ETIMEDOUT);
		if (auto e = errors.find(t); e != errors.end()) {
			if (e->second == ETIMEDOUT && !disk_timeouts.count(t))
				login_timeouts[Login(t)] =
				        std::chrono::steady_clock::now();
			return Status::Error("scripted failure", e->second);
		}
		*made = !connected.count(t);
		connected[t] = devices.at(t);
		return devices.at(t);
	}
	// A scripted ETIMEDOUT is a login's (of the target, and of those in
	// same_session with it) unless the target is in disk_timeouts.
	bool LoginTimedOutSince(
	        const std::string &t,
	        std::chrono::steady_clock::time_point since) const override
	{
		std::lock_guard<std::mutex> lock(mu);
		auto at = login_timeouts.find(Login(t));
		return at != login_timeouts.end() && at->second >= since;
	}
	std::string Login(const std::string &t) const
	{
		auto other = same_session.find(t);
		return other != same_session.end() ? other->second : t;
	}
	Result<std::string> DevicePath(const std::string &t) override
	{
		std::lock_guard<std::mutex> lock(mu);
		if (!connected.count(t))
			return Status::Error("not connected", ENODEV);
		return connected[t];
	}
	// devices[t] stands for the target's disk, connected or not.
	bool MayBeDiskOf(const std::string &t, const std::string &dev) override
	{
		std::lock_guard<std::mutex> lock(mu);
		return devices.count(t) && devices.at(t) == dev;
	}
	std::vector<DisconnectFailure>
	Disconnect(const std::vector<std::string> &targets,
	           const TargetsInUse &in_use) override
	{
		// Once, without mu: it may call the service.
		if (auto hook = std::exchange(before_disconnect, nullptr))
			hook();
		std::vector<DisconnectFailure> failures;
		for (const std::string &t : targets) {
			// Asked per target, as the real one asks per session.
			const std::vector<std::string> used = in_use();
			std::lock_guard<std::mutex> lock(mu);
			last_in_use = used;
			disconnects[t]++;
			if (std::find(used.begin(), used.end(), t) !=
			    used.end())
				continue;
			if (logout_failures > 0 && connected.count(t)) {
				logout_failures--;
				failures.push_back(
				        {t, t + ": iscsid is not running",
				         "session-" + t});
				continue;
			}
			connected.erase(t);
		}
		return failures;
	}
	SessionDisconnect DisconnectSession(const std::string &t,
	                                    const std::string &session,
	                                    const TargetsInUse &in_use) override
	{
		// Once, without mu: it may call the service.
		if (auto hook = std::exchange(before_disconnect, nullptr))
			hook();
		const std::vector<std::string> used = in_use();
		std::lock_guard<std::mutex> lock(mu);
		retried.push_back(session);
		disconnects[t]++;
		SessionDisconnect out;
		for (const std::string &u : used)
			if (u == t || (same_session.count(t) &&
			               same_session.at(t) == u)) {
				out.outcome = SessionDisconnect::Outcome::kKept;
				out.kept_for = u;
				return out;
			}
		if (logout_failures > 0 && connected.count(t)) {
			logout_failures--;
			out.outcome = SessionDisconnect::Outcome::kFailed;
			out.why = t + ": iscsid is not running";
			return out;
		}
		connected.erase(t);
		return out;
	}
	void Adopt(const std::string &session) override
	{
		std::lock_guard<std::mutex> lock(mu);
		adopted.push_back(session);
	}
	std::optional<PeerView> Describe(const std::string &t) override
	{
		std::lock_guard<std::mutex> lock(mu);
		PeerView v;
		v.session = connected.count(t) ? "LOGGED_IN" : "none";
		return v;
	}
	// The targets in held answer now.
	void Release()
	{
		std::lock_guard<std::mutex> lock(mu);
		released = true;
		released_cv.notify_all();
	}
	mutable std::mutex mu;
	std::condition_variable released_cv; // released
	std::chrono::milliseconds delay{0};
	std::set<std::string> held;
	bool released = false;
	std::map<std::string, std::string> devices{{kUrl0, "/dev/sdx"},
	                                           {kUrl1, "/dev/sdy"},
	                                           {kUrl0Portal2, "/dev/sdz"}};
	std::map<std::string, std::string> connected;
	std::map<std::string, int> errors;
	int connects = 0;
	// What the last Disconnect() was told the other pipes use.
	std::vector<std::string> last_in_use;
	// Runs at the start of the next Disconnect() or DisconnectSession().
	std::function<void()> before_disconnect;
	// The next this many logouts of a connected target fail.
	int logout_failures = 0;
	// Target -> Disconnect() and DisconnectSession() calls that named it.
	std::map<std::string, int> disconnects;
	// The sessions DisconnectSession() was asked to end, in order.
	std::vector<std::string> retried;
	// The sessions Adopt() was told of, in order.
	std::vector<std::string> adopted;
	// Target -> another target its session serves too (another LUN).
	std::map<std::string, std::string> same_session;
	std::set<std::string> disk_timeouts;
	// By target (as Login() names it): when its login last timed out.
	std::map<std::string, std::chrono::steady_clock::time_point>
	        login_timeouts;
};

class IscsiPipeServiceTest : public ::testing::Test
{
protected:
	void SetUp() override
	{
		probe.AddBackstore("replipipe_0/a", "/dev/vg/a", 10 * kGiB);
		probe.AddBackstore("replipipe_0/b", "/dev/vg/b", 10 * kGiB);
		probe.AddDevice("/dev/sdx", 10 * kGiB);
		probe.AddDevice("/dev/sdy", 1 * kGiB); // too small
		probe.AddDevice("/dev/sdz", 10 * kGiB);
		service.SetTargetConnector(&connector);
		ASSERT_TRUE(service.Load().ok());
	}
	CreateOrModifyCall Call(std::vector<std::string> s,
	                        std::vector<std::string> t)
	{
		CreateOrModifyCall c;
		c.pipe_element_name = "p";
		c.source_system = kHost;
		c.target_system = "127.0.0.1";
		c.source_endpoints = std::move(s);
		c.target_endpoints = std::move(t);
		return c;
	}
	std::string Uuid(const MethodOutcome &out)
	{
		auto id = ParsePipeIdentifier(out.replication_pipe);
		return id.ok() && *id ? **id : "";
	}

	// A pipe replipipe_0/a -> kUrl0 made and deleted through svc, the
	// next failures logouts of kUrl0 failing: kUrl0's logout is owed.
	void DeleteWithAFailedLogout(PipeService &svc, int failures)
	{
		MethodOutcome out =
		        svc.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
		ASSERT_EQ(out.return_value, ReturnValue::kCompleted)
		        << out.error;
		connector.logout_failures = failures;
		ASSERT_EQ(svc.Delete(out.replication_pipe).return_value,
		          ReturnValue::kCompleted);
		ASSERT_TRUE(connector.connected.count(kUrl0));
		ASSERT_EQ(svc.OwedLogouts(), (std::vector<std::string>{kUrl0}));
	}

	// The marks of the records the store file holds now.
	std::vector<PendingOp> MarksInStore()
	{
		Store look{dir.path()};
		std::vector<PendingOp> marks;
		auto entries = look.LoadEntries();
		EXPECT_TRUE(entries.ok()) << entries.status().message();
		if (entries.ok())
			for (const StoreEntry &e : *entries)
				marks.push_back(e.pending);
		return marks;
	}

	// A modify of pipe that adds replipipe_0/a -> kUrl0.
	MethodOutcome AddUrl0Pair(const MethodOutcome &pipe)
	{
		CreateOrModifyCall add = Call({"replipipe_0/a"}, {kUrl0});
		add.replication_pipe = pipe.replication_pipe;
		return service.CreateOrModify(add);
	}

	// The kernel pipe uuid mirrors to kUrl0's disk and its session is
	// still logged in.
	void ExpectKernelMirrorsToUrl0(const std::string &uuid)
	{
		auto k = kernel.Find(uuid);
		ASSERT_TRUE(k);
		ASSERT_EQ(k->pairs.size(), 1u);
		EXPECT_EQ(k->pairs[0].target, "/dev/sdx");
		EXPECT_TRUE(connector.connected.count(kUrl0))
		        << "the session of a pair the kernel mirrors to was "
		           "logged out";
	}

	// The daemon started again on the same kernel and store, with
	// connector for its peers, its store loaded (not reconciled yet);
	// null when the load failed.
	std::unique_ptr<PipeService> Restarted(TargetConnector &connector)
	{
		auto again = std::make_unique<PipeService>(kernel, store, probe,
		                                           HostIdentity{kHost});
		again->SetTargetConnector(&connector);
		if (Status st = again->Load(); !st.ok()) {
			ADD_FAILURE() << "load: " << st.message();
			return nullptr;
		}
		return again;
	}

	// A stored pipe "name", replipipe_1/<name> -> url, which is
	// iscsi://10.0.1.<n>:3260/iqn.2003-01.org.x:<name>/0 (disk
	// /dev/<name>), made through connector; its UUID.
	std::string CreatePeerPipe(const std::string &name, int n,
	                           std::string *url)
	{
		*url = "iscsi://10.0.1." + std::to_string(n) +
		       ":3260/iqn.2003-01.org.x:" + name + "/0";
		return CreateStoredPipe(name, *url, "/dev/" + name);
	}
	// A stored pipe "name": replipipe_1/<name> -> /dev/<name>.
	std::string CreateLocalPipe(const std::string &name)
	{
		return CreateStoredPipe(name, "/dev/" + name, "/dev/" + name);
	}
	std::string CreateStoredPipe(const std::string &name,
	                             const std::string &target,
	                             const std::string &disk)
	{
		probe.AddBackstore("replipipe_1/" + name, "/dev/vg/" + name,
		                   10 * kGiB);
		probe.AddDevice(disk, 10 * kGiB);
		if (target != disk)
			connector.devices[target] = disk;
		CreateOrModifyCall call =
		        Call({"replipipe_1/" + name}, {target});
		call.pipe_element_name = name;
		MethodOutcome out = service.CreateOrModify(call);
		EXPECT_EQ(out.return_value, ReturnValue::kCompleted)
		        << out.error;
		return Uuid(out);
	}

	TempDir dir;
	Store store{dir.path()};
	FakeKernel kernel;
	FakeProbe probe;
	FakeConnector connector;
	PipeService service{kernel, store, probe, HostIdentity{kHost},
	                    PipeServiceOptions{std::chrono::milliseconds(100)}};
};

std::string Lines(const std::vector<std::string> &lines)
{
	std::string all;
	for (const std::string &line : lines)
		all += line + "\n";
	return all;
}

long long MsSince(std::chrono::steady_clock::time_point t)
{
	return std::chrono::duration_cast<std::chrono::milliseconds>(
	               std::chrono::steady_clock::now() - t)
	        .count();
}

TEST_F(IscsiPipeServiceTest, KernelGetsTheDeviceStoreKeepsTheUrl)
{
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	auto k = kernel.Find(Uuid(out));
	ASSERT_TRUE(k);
	ASSERT_EQ(k->pairs.size(), 1u);
	EXPECT_EQ(k->pairs[0].target, "/dev/sdx");
	EXPECT_NE(dir.Read("pipes.json").find(kUrl0), std::string::npos);
	EXPECT_EQ(dir.Read("pipes.json").find("/dev/sdx"), std::string::npos);
	auto rec = service.GetPipe(Uuid(out));
	ASSERT_TRUE(rec.ok());
	EXPECT_EQ(service.ForKernel(*rec).pairs[0].target, "/dev/sdx");
	EXPECT_EQ(service.DescribePeer(kUrl0)->session, "LOGGED_IN");
	EXPECT_FALSE(service.DescribePeer("/dev/sdx"));

	// Delete ends the connection.
	ASSERT_EQ(service.Delete(out.replication_pipe).return_value,
	          ReturnValue::kCompleted);
	EXPECT_FALSE(connector.connected.count(kUrl0));
}

TEST_F(IscsiPipeServiceTest, ReferenceFormWithSystemName)
{
	MethodOutcome out = service.CreateOrModify(Call(
	        {"replipipe_0/a"}, {"CIM_ProtocolEndpoint.Name=\"" + kUrl0 +
	                            "\",SystemName=\"127.0.0.1\""}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
}

TEST_F(IscsiPipeServiceTest, ReturnValues)
{
	// malformed URL: 5, nothing connected
	MethodOutcome bad = service.CreateOrModify(
	        Call({"replipipe_0/a"}, {"iscsi://127.0.0.1/iqn.x:y/lun"}));
	EXPECT_EQ(bad.return_value, ReturnValue::kInvalidParameter);
	EXPECT_EQ(connector.connects, 0);
	// unreachable / refused: 4 with the reason
	connector.errors[kUrl0] = EHOSTUNREACH;
	MethodOutcome un =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	EXPECT_EQ(un.return_value, ReturnValue::kFailed);
	EXPECT_NE(un.error.find("scripted failure"), std::string::npos);
	// login not done within the bound: 3
	connector.errors[kUrl0] = ETIMEDOUT;
	EXPECT_EQ(service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}))
	                  .return_value,
	          ReturnValue::kTimeout);
	EXPECT_TRUE(kernel.Snapshot().empty());
	EXPECT_TRUE(service.ListPipes().empty());
}

// One LUN reached through two portals is one target: a second session
// would be a second /dev/sdX for it, so device numbers cannot tell. Both
// uses are refused before anything logs in.
TEST_F(IscsiPipeServiceTest, OneLunThroughTwoPortalsIsOneTarget)
{
	MethodOutcome twice = service.CreateOrModify(Call(
	        {"replipipe_0/a", "replipipe_0/b"}, {kUrl0, kUrl0Portal2}));
	EXPECT_EQ(twice.return_value, ReturnValue::kInvalidParameter);
	EXPECT_NE(twice.error.find("TargetEndpoint " + kUrl0Portal2 +
	                           " is given twice"),
	          std::string::npos)
	        << twice.error;
	EXPECT_EQ(connector.connects, 0);

	MethodOutcome first =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(first.return_value, ReturnValue::kCompleted) << first.error;
	const int connects = connector.connects;
	MethodOutcome second =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {kUrl0Portal2}));
	EXPECT_EQ(second.return_value, ReturnValue::kInvalidParameter);
	EXPECT_NE(second.error.find("is already the target of replipipe_0/a"),
	          std::string::npos)
	        << second.error;
	EXPECT_EQ(connector.connects, connects);
	EXPECT_FALSE(connector.connected.count(kUrl0Portal2));
	EXPECT_EQ(service.ListPipes().size(), 1u);
}

TEST_F(IscsiPipeServiceTest, TooSmallLunIsRefusedAndDisconnected)
{
	MethodOutcome out = service.CreateOrModify(
	        Call({"replipipe_0/a", "replipipe_0/b"}, {kUrl0, kUrl1}));
	EXPECT_EQ(out.return_value, ReturnValue::kFailed);
	EXPECT_NE(out.error.find("smaller"), std::string::npos) << out.error;
	EXPECT_NE(out.error.find(kUrl1), std::string::npos) << out.error;
	EXPECT_TRUE(connector.connected.empty());
	EXPECT_TRUE(kernel.Snapshot().empty());
}

// An iscsi:// URL to this host's own portal naming the source's LUN: the
// disk the login made is checked like any target, the pair is refused as
// "source = target" (5) and the session it made is logged out again.
TEST_F(IscsiPipeServiceTest, SourcesOwnLunOverLocalIscsiIsRefused)
{
	probe.SetLocalLioLuns(
	        "/dev/sdx",
	        {{"sdx", "3:0:0:0",
	          "iSCSI iqn.2003-01.org.x:peer/tpgt_1 LUN 0 (portal "
	          "127.0.0.1:3260)",
	          "replipipe_0/a", "/dev/vg/a"}});
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	EXPECT_EQ(out.return_value, ReturnValue::kInvalidParameter);
	EXPECT_NE(out.error.find("which exports replipipe_0/a itself"),
	          std::string::npos)
	        << out.error;
	EXPECT_NE(out.error.find("(" + kUrl0 + " is /dev/sdx)"),
	          std::string::npos)
	        << out.error;
	EXPECT_EQ(connector.connects, 1);
	EXPECT_TRUE(connector.connected.empty());
	EXPECT_TRUE(kernel.Snapshot().empty());
	EXPECT_TRUE(service.ListPipes().empty());
}

TEST_F(IscsiPipeServiceTest, KernelRefusalDisconnects)
{
	kernel.FailNext(EIO, FakeKernel::Op::kSetPipe);
	EXPECT_EQ(service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}))
	                  .return_value,
	          ReturnValue::kFailed);
	EXPECT_TRUE(connector.connected.empty());
}

// Another LUN of a session is mirrored by a create in flight, whose kernel
// PIPE_SET has not answered yet (the pipe is not stored, only its pending
// mark and its reservation are): a delete of the pipe using the first LUN
// must count it as in use, or the real connector logs the session out
// under the new pair (iscsi_targets.cc, Shared()).
TEST_F(IscsiPipeServiceTest, ADeleteCountsTheTargetsOfACreateInFlightAsInUse)
{
	const std::string url2 =
	        "iscsi://127.0.0.1:3260/iqn.2003-01.org.x:peer/2";
	connector.devices[url2] = "/dev/sdw";
	probe.AddDevice("/dev/sdw", 10 * kGiB);
	MethodOutcome first =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {url2}));
	ASSERT_EQ(first.return_value, ReturnValue::kCompleted) << first.error;

	std::promise<void> entered;
	std::promise<void> release;
	std::shared_future<void> released = release.get_future().share();
	std::atomic<bool> held{false};
	kernel.SetEntryHook([&](FakeKernel::Op op) {
		if (op == FakeKernel::Op::kSetPipe && !held.exchange(true)) {
			entered.set_value();
			released.wait();
		}
	});
	MethodOutcome second;
	std::thread in_flight([&] {
		second = service.CreateOrModify(
		        Call({"replipipe_0/a"}, {kUrl0}));
	});
	entered.get_future().wait();
	MethodOutcome deleted = service.Delete(first.replication_pipe);
	std::vector<std::string> in_use;
	{
		std::lock_guard<std::mutex> lock(connector.mu);
		in_use = connector.last_in_use;
	}
	release.set_value();
	in_flight.join();
	kernel.SetEntryHook({});

	EXPECT_EQ(deleted.return_value, ReturnValue::kCompleted)
	        << deleted.error;
	EXPECT_NE(std::find(in_use.begin(), in_use.end(), kUrl0), in_use.end())
	        << "the delete's disconnect did not count the target of the "
	           "create in flight as in use";
	EXPECT_EQ(std::find(in_use.begin(), in_use.end(), url2), in_use.end())
	        << "the deleted pipe's own target was counted as in use";
	ASSERT_EQ(second.return_value, ReturnValue::kCompleted) << second.error;
	EXPECT_TRUE(connector.connected.count(kUrl0));
	EXPECT_FALSE(connector.connected.count(url2));
}

// A record left marked pending is settled with its endpoints reserved
// until its sessions are logged out: a create of the same target meanwhile
// gets Busy. Before, the record went first: such a create reused the
// session (nothing to log in to), and the settle's logout, told the target
// was in use by nobody, logged it out from under the new pipe.
TEST_F(IscsiPipeServiceTest, ASettleKeepsItsTargetReservedUntilItsLogout)
{
	// a -> kUrl0 left marked: its store write and its undo failed.
	std::atomic<bool> failing{false};
	kernel.SetEntryHook([&](FakeKernel::Op op) {
		if (op == FakeKernel::Op::kSetPipe)
			failing = true;
	});
	store.SetFaultHookForTest([&](Store::SaveStep) {
		return failing ? Status::Error("disk full", ENOSPC) : Status();
	});
	kernel.FailNext(EIO, FakeKernel::Op::kDeletePipe);
	MethodOutcome left =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	kernel.SetEntryHook({});
	store.SetFaultHookForTest({});
	ASSERT_EQ(left.return_value, ReturnValue::kUnspecifiedError)
	        << left.error;

	MethodOutcome during;
	connector.before_disconnect = [&] {
		during = service.CreateOrModify(
		        Call({"replipipe_0/b"}, {kUrl0}));
	};
	auto settled = service.SettleLeftovers(std::chrono::milliseconds(0));
	ASSERT_EQ(settled.size(), 1u);
	EXPECT_TRUE(settled[0].done) << settled[0].line;
	EXPECT_EQ(during.return_value, ReturnValue::kBusy) << during.error;
	EXPECT_FALSE(connector.connected.count(kUrl0));

	// After it, the target makes a new pipe, logged in anew.
	MethodOutcome after =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {kUrl0}));
	EXPECT_EQ(after.return_value, ReturnValue::kCompleted) << after.error;
	EXPECT_TRUE(connector.connected.count(kUrl0));
}

// A modify adding an iscsi:// pair: the kernel applies its PIPE_SET, the
// store write fails and so does the undo (PIPE_SET of the stored pipe).
// The kernel pipe mirrors to the new pair's disk, so its session stays
// logged in. Before, the failed call logged it out from under the pair.
TEST_F(IscsiPipeServiceTest, AFailedUndoKeepsTheSessionTheKernelMirrorsTo)
{
	MethodOutcome out = service.CreateOrModify(Call({}, {}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	const std::string uuid = Uuid(out);

	std::atomic<bool> failing{false};
	kernel.SetApplyHook([&](const KernelPipeSpec &) {
		// The modify's PIPE_SET is in: the store fails from here on,
		// and so does the next PIPE_SET (the undo).
		if (!failing.exchange(true))
			kernel.FailNext(EIO, FakeKernel::Op::kSetPipe);
	});
	store.SetFaultHookForTest([&](Store::SaveStep) {
		return failing ? Status::Error("disk full", ENOSPC) : Status();
	});
	MethodOutcome failed = AddUrl0Pair(out);
	kernel.SetApplyHook({});
	store.SetFaultHookForTest({});

	ASSERT_EQ(failed.return_value, ReturnValue::kUnspecifiedError)
	        << failed.error;
	EXPECT_NE(failed.error.find("undoing the kernel change failed"),
	          std::string::npos)
	        << failed.error;
	ExpectKernelMirrorsToUrl0(uuid);
}

// The same after a PIPE_SET that timed out but was applied: the undo
// fails, the session stays.
TEST_F(IscsiPipeServiceTest, AFailedUndoAfterATimeoutKeepsTheSession)
{
	MethodOutcome out = service.CreateOrModify(Call({}, {}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	const std::string uuid = Uuid(out);

	std::atomic<bool> applied{false};
	kernel.SetApplyHook([&](const KernelPipeSpec &) {
		if (!applied.exchange(true))
			kernel.FailNext(EIO, FakeKernel::Op::kSetPipe);
	});
	kernel.FailNextAfterApply(ETIMEDOUT);
	MethodOutcome failed = AddUrl0Pair(out);
	kernel.SetApplyHook({});

	ASSERT_EQ(failed.return_value, ReturnValue::kTimeout) << failed.error;
	EXPECT_NE(failed.error.find("undoing it failed too"), std::string::npos)
	        << failed.error;
	ExpectKernelMirrorsToUrl0(uuid);
}

// A modify that moved pair a from kUrl0 to a local disk and was killed
// after its PIPE_SET (a modify writes no mark: the next start puts the
// stored definition back). That start finds kUrl0's peer down: kUrl0 has
// no device, and the kernel mirrors a to /dev/sdw, which is not kUrl0's
// disk. Before, the start took /dev/sdw for kUrl0's lost disk and said
// "adopted from the kernel": the kernel kept mirroring to a device the
// store and `status` do not show, and no later push looked again. Now
// nothing is adopted or pushed, the pipe waits for repair, and once the
// peer answers the stored target is put back. A kernel pair on kUrl0's
// own disk, its session lost, is still adopted.
TEST_F(IscsiPipeServiceTest, AKernelPairOnAnotherDeviceIsNotTakenForALostDisk)
{
	probe.AddDevice("/dev/sdw", 10 * kGiB);
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	const std::string uuid = Uuid(out);
	auto put_kernel_target = [&](const std::string &target) {
		auto k = kernel.Find(uuid);
		ASSERT_TRUE(k);
		KernelPipeSpec spec;
		spec.id = uuid;
		spec.name = k->name;
		spec.mode = k->mode;
		spec.failure_policy = k->failure_policy;
		spec.max_lag_kib = k->max_lag_kib;
		spec.region_kib = k->region_kib;
		spec.pairs.push_back({"replipipe_0/a", target, false});
		ASSERT_TRUE(kernel.SetPipe(spec).ok());
	};
	FakeConnector down;
	down.errors[kUrl0] = EHOSTUNREACH;

	// kUrl0's own disk, its session gone: adopted, and logged in to
	// again: the kernel's pair is on a disk that no longer answers.
	// Before, nothing logged in again until the daemon's next start.
	{
		auto again = Restarted(down);
		ASSERT_TRUE(again);
		auto report = again->Reconcile();
		ASSERT_TRUE(report.ok());
		EXPECT_NE(Lines(*report).find(
		                  "adopted from the kernel, a target on a "
		                  "device its peer no longer gives"),
		          std::string::npos)
		        << Lines(*report);
		EXPECT_TRUE(again->PipesToRepair().count(uuid));
		auto pushed = again->PushIfNeeded(uuid);
		EXPECT_FALSE(pushed.ok()) << "settled with the peer down";
		EXPECT_TRUE(again->PipesToRepair().count(uuid));
		EXPECT_EQ(kernel.Find(uuid)->pairs[0].target, "/dev/sdx");
		// The peer answers; the new session's disk has another name.
		probe.AddDevice("/dev/sdv", 10 * kGiB);
		down.errors.clear();
		down.devices[kUrl0] = "/dev/sdv";
		pushed = again->PushIfNeeded(uuid);
		ASSERT_TRUE(pushed.ok()) << pushed.status().message();
		EXPECT_EQ(*pushed, PushOutcome::kReplaced);
		EXPECT_EQ(kernel.Find(uuid)->pairs[0].target, "/dev/sdv");
		EXPECT_FALSE(again->PipesToRepair().count(uuid));
		// Down again, its disk gone: what the rest of the test has.
		down.errors[kUrl0] = EHOSTUNREACH;
		down.connected.clear();
		down.devices[kUrl0] = "/dev/sdx";
		put_kernel_target("/dev/sdx");
	}

	put_kernel_target("/dev/sdw");
	auto again = Restarted(down);
	ASSERT_TRUE(again);
	auto report = again->Reconcile();
	ASSERT_TRUE(report.ok());
	const std::string all = Lines(*report);
	EXPECT_EQ(all.find("adopted"), std::string::npos) << all;
	for (const char *needle :
	     {"not compared with the kernel", "target " /* kUrl0 */,
	      "the kernel mirrors that pair to /dev/sdw, which is another "
	      "device"})
		EXPECT_NE(all.find(needle), std::string::npos)
		        << needle << " not in: " << all;
	EXPECT_NE(all.find(kUrl0), std::string::npos) << all;
	EXPECT_TRUE(again->PipesToRepair().count(uuid));
	EXPECT_EQ(kernel.Find(uuid)->pairs[0].target, "/dev/sdw");

	// The peer still down: the refresh's push fails and the pipe waits.
	auto pushed = again->PushIfNeeded(uuid);
	EXPECT_FALSE(pushed.ok());
	EXPECT_TRUE(again->PipesToRepair().count(uuid));
	EXPECT_EQ(kernel.Find(uuid)->pairs[0].target, "/dev/sdw");

	// The peer answers: the stored target goes back to the kernel.
	down.errors.clear();
	pushed = again->PushIfNeeded(uuid);
	ASSERT_TRUE(pushed.ok()) << pushed.status().message();
	EXPECT_EQ(*pushed, PushOutcome::kReplaced);
	EXPECT_EQ(kernel.Find(uuid)->pairs[0].target, "/dev/sdx");
	EXPECT_FALSE(again->PipesToRepair().count(uuid));
}

// A modify moving pair a from kUrl0 to /dev/sdw whose store write fails
// while kUrl0's session is lost: its undo cannot give the kernel kUrl0's
// disk back. Before, the undo sent the kernel's /dev/sdw again (taken for
// kUrl0's lost disk) and the call said the change was undone; now it says
// the undo failed and why, and the pipe waits for repair.
TEST_F(IscsiPipeServiceTest, AnUndoWithoutTheOldTargetsDiskSaysItFailed)
{
	probe.AddDevice("/dev/sdw", 10 * kGiB);
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	const std::string uuid = Uuid(out);
	store.SetFaultHookForTest([&](Store::SaveStep) {
		// The session ends as the store fails.
		std::lock_guard<std::mutex> lock(connector.mu);
		connector.connected.erase(kUrl0);
		connector.errors[kUrl0] = EHOSTUNREACH;
		return Status::Error("disk full", ENOSPC);
	});
	CreateOrModifyCall move = Call({"replipipe_0/a"}, {"/dev/sdw"});
	move.replication_pipe = out.replication_pipe;
	MethodOutcome failed = service.CreateOrModify(move);
	store.SetFaultHookForTest({});
	ASSERT_EQ(failed.return_value, ReturnValue::kUnspecifiedError)
	        << failed.error;
	for (const char *needle :
	     {"undoing the kernel change failed",
	      "the stored definition cannot go back",
	      "the kernel mirrors that pair to /dev/sdw, which is another "
	      "device"})
		EXPECT_NE(failed.error.find(needle), std::string::npos)
		        << needle << " not in: " << failed.error;
	EXPECT_TRUE(service.PipesToRepair().count(uuid));
	EXPECT_EQ(kernel.Find(uuid)->pairs[0].target, "/dev/sdw");
}

// A create whose PIPE_SET timed out but was applied, and whose undo
// (PIPE_DEL) fails: its record stays marked and its session stays logged
// in until SettleLeftovers() has deleted the kernel pipe.
TEST_F(IscsiPipeServiceTest, ACreateLeftMarkedKeepsItsSessionUntilSettled)
{
	kernel.FailNextAfterApply(ETIMEDOUT);
	kernel.FailNext(EIO, FakeKernel::Op::kDeletePipe);
	MethodOutcome left =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(left.return_value, ReturnValue::kTimeout) << left.error;
	ASSERT_EQ(kernel.Snapshot().size(), 1u);
	EXPECT_TRUE(connector.connected.count(kUrl0))
	        << "the session of a pair the kernel mirrors to was logged out";

	auto settled = service.SettleLeftovers(std::chrono::milliseconds(0));
	ASSERT_EQ(settled.size(), 1u);
	EXPECT_TRUE(settled[0].done) << settled[0].line;
	EXPECT_TRUE(kernel.Snapshot().empty());
	EXPECT_FALSE(connector.connected.count(kUrl0));
}

// A timed-out PIPE_SET that the undo took back, and a refused one: the
// kernel has none of the new pairs, and the sessions the call made go.
TEST_F(IscsiPipeServiceTest, AnUndoneTimeoutLogsOutTheNewSession)
{
	MethodOutcome out = service.CreateOrModify(Call({}, {}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	kernel.FailNextAfterApply(ETIMEDOUT);
	MethodOutcome failed = AddUrl0Pair(out);
	ASSERT_EQ(failed.return_value, ReturnValue::kTimeout) << failed.error;
	EXPECT_TRUE(kernel.Find(Uuid(out))->pairs.empty());
	EXPECT_FALSE(connector.connected.count(kUrl0));

	kernel.FailNext(EIO, FakeKernel::Op::kSetPipe);
	failed = AddUrl0Pair(out);
	ASSERT_EQ(failed.return_value, ReturnValue::kFailed) << failed.error;
	EXPECT_TRUE(kernel.Find(Uuid(out))->pairs.empty());
	EXPECT_FALSE(connector.connected.count(kUrl0));
}

// A target given as the disk that another pipe's iscsi:// target is
// connected as is that target under another name: a reused endpoint, 5,
// refused before anything is verified or pushed, as a symlink of a local
// target is. Before, the URL had no device number, the store's checks let
// it pass, and the kernel's exclusive hold made it 4 ("in use").
TEST_F(IscsiPipeServiceTest, AConnectedDiskUnderItsDevicePathIsAReusedTarget)
{
	// replipipe.ko: its pairs' targets held exclusively.
	auto dev_of = [this](const std::string &path) -> uint64_t {
		auto d = probe.Device(path);
		return d.ok() && d->is_block_device ? d->rdev : 0;
	};
	kernel.SetDeviceResolver(dev_of);
	probe.SetHeldCheck([this, dev_of](uint64_t rdev) {
		for (const KernelPipeStatus &p : kernel.Snapshot())
			for (const KernelPairStatus &q : p.pairs)
				if (dev_of(q.target) == rdev)
					return true;
		return false;
	});
	probe.AddBackstore("replipipe_0/c", "/dev/vg/c", 10 * kGiB);
	probe.AddDevice("/dev/sdw", 10 * kGiB);

	MethodOutcome a =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(a.return_value, ReturnValue::kCompleted) << a.error;
	const int sets = kernel.calls(FakeKernel::Op::kSetPipe);

	MethodOutcome b =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {"/dev/sdx"}));
	EXPECT_EQ(b.return_value, ReturnValue::kInvalidParameter) << b.error;
	EXPECT_NE(b.error.find("TargetEndpoint /dev/sdx is already the target "
	                       "of replipipe_0/a (as " +
	                       kUrl0 + ")"),
	          std::string::npos)
	        << b.error;
	EXPECT_EQ(kernel.calls(FakeKernel::Op::kSetPipe), sets);

	// The pipe's own pair given with the disk's path is that pair, kept:
	// the store keeps the URL, and the session stays.
	CreateOrModifyCall same = Call({"replipipe_0/a"}, {"/dev/sdx"});
	same.replication_pipe = a.replication_pipe;
	MethodOutcome kept = service.CreateOrModify(same);
	ASSERT_EQ(kept.return_value, ReturnValue::kCompleted) << kept.error;
	EXPECT_EQ(service.GetPipe(a.replication_pipe)->pairs[0].target, kUrl0);
	EXPECT_TRUE(connector.connected.count(kUrl0));

	// The other way round: a pipe has the disk by its path, and a URL
	// whose session is already logged in (the administrator's) names it.
	MethodOutcome c =
	        service.CreateOrModify(Call({"replipipe_0/c"}, {"/dev/sdw"}));
	ASSERT_EQ(c.return_value, ReturnValue::kCompleted) << c.error;
	const std::string url2 =
	        "iscsi://127.0.0.1:3260/iqn.2003-01.org.x:peer/2";
	connector.devices[url2] = "/dev/sdw";
	connector.connected[url2] = "/dev/sdw";
	MethodOutcome d =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {url2}));
	EXPECT_EQ(d.return_value, ReturnValue::kInvalidParameter) << d.error;
	EXPECT_NE(d.error.find("TargetEndpoint " + url2 +
	                       " is already the target of replipipe_0/c (as "
	                       "/dev/sdw)"),
	          std::string::npos)
	        << d.error;
	EXPECT_TRUE(connector.connected.count(url2));
}

// A logout that fails (iscsid not running when the pipe is deleted) used to
// be logged and forgotten: the session stayed logged in for good, and a
// later pipe to that target took it for the administrator's. It is owed
// now, and tried again at each settle until it ends.
TEST_F(IscsiPipeServiceTest, AFailedLogoutIsTriedAgainUntilItEnds)
{
	ASSERT_NO_FATAL_FAILURE(DeleteWithAFailedLogout(service, 2));
	EXPECT_TRUE(service.HasLeftovers());
	service.SettleLeftovers(std::chrono::milliseconds(0)); // fails again
	EXPECT_TRUE(connector.connected.count(kUrl0));
	EXPECT_TRUE(service.HasLeftovers());
	service.SettleLeftovers(std::chrono::milliseconds(0));
	EXPECT_FALSE(connector.connected.count(kUrl0));
	EXPECT_TRUE(service.OwedLogouts().empty());
	EXPECT_FALSE(service.HasLeftovers());
	EXPECT_EQ(connector.disconnects[kUrl0], 3);
	// The session whose logout failed, not whatever serves kUrl0 now.
	EXPECT_EQ(connector.retried,
	          (std::vector<std::string>{"session-" + kUrl0,
	                                    "session-" + kUrl0}));
	// Nothing owed: a settle asks the connector for nothing.
	service.SettleLeftovers(std::chrono::milliseconds(0));
	EXPECT_EQ(connector.disconnects[kUrl0], 3);
}

// A daemon started again in the same boot owes what the one before it
// owed (owed-logouts.json, decision 102): before, the session was left
// logged in for good.
TEST_F(IscsiPipeServiceTest, TheNextDaemonOfTheBootOwesTheLogoutStill)
{
	ASSERT_NO_FATAL_FAILURE(DeleteWithAFailedLogout(service, 1));
	// The session stays the daemon's (IscsiTargetConnector::Adopt()).
	EXPECT_EQ(connector.adopted,
	          (std::vector<std::string>{"session-" + kUrl0}));
	Store store2{dir.path()};
	PipeService next{kernel, store2, probe, HostIdentity{kHost},
	                 PipeServiceOptions{std::chrono::milliseconds(100)}};
	ASSERT_TRUE(next.Load().ok());
	next.SetTargetConnector(&connector); // after Load(), as may be
	EXPECT_EQ(next.OwedLogouts(), (std::vector<std::string>{kUrl0}));
	EXPECT_EQ(connector.adopted,
	          (std::vector<std::string>{"session-" + kUrl0,
	                                    "session-" + kUrl0}));
	EXPECT_TRUE(next.HasLeftovers());
	next.SettleLeftovers(std::chrono::milliseconds(0));
	EXPECT_FALSE(connector.connected.count(kUrl0));
	EXPECT_EQ(connector.retried,
	          (std::vector<std::string>{"session-" + kUrl0}));
	EXPECT_TRUE(next.OwedLogouts().empty());
	// Paid: the daemon after that owes nothing.
	Store store3{dir.path()};
	PipeService third{kernel, store3, probe, HostIdentity{kHost}};
	ASSERT_TRUE(third.Load().ok());
	EXPECT_TRUE(third.OwedLogouts().empty());
}

// A daemon killed between a delete's store write and its logout owed
// nothing: the record was gone, and the session stayed for good. The
// logout now runs while the delete's mark is still in the store, so the
// next start finishes it (SettleLeftovers()).
TEST_F(IscsiPipeServiceTest, ADeleteLogsOutBeforeItsMarkLeavesTheStore)
{
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	std::vector<PendingOp> seen;
	connector.before_disconnect = [&] { seen = MarksInStore(); };
	ASSERT_EQ(service.Delete(out.replication_pipe).return_value,
	          ReturnValue::kCompleted);
	EXPECT_EQ(seen, (std::vector<PendingOp>{PendingOp::kDelete}));
	EXPECT_FALSE(connector.connected.count(kUrl0));
	EXPECT_TRUE(MarksInStore().empty());
}

// The same when the next start finishes a delete a killed daemon left.
TEST_F(IscsiPipeServiceTest, ASettledDeleteLogsOutBeforeItsMarkLeavesTheStore)
{
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	auto entries = store.LoadEntries();
	ASSERT_TRUE(entries.ok());
	ASSERT_EQ(entries->size(), 1u);
	(*entries)[0].pending = PendingOp::kDelete; // killed after its mark
	ASSERT_TRUE(store.SaveEntries(*entries).ok());
	Store store2{dir.path()};
	PipeService next{kernel, store2, probe, HostIdentity{kHost},
	                 PipeServiceOptions{std::chrono::milliseconds(100)}};
	next.SetTargetConnector(&connector);
	ASSERT_TRUE(next.Load().ok());
	std::vector<PendingOp> seen;
	connector.before_disconnect = [&] { seen = MarksInStore(); };
	next.SettleLeftovers(std::chrono::milliseconds(100));
	EXPECT_EQ(seen, (std::vector<PendingOp>{PendingOp::kDelete}));
	EXPECT_FALSE(connector.connected.count(kUrl0));
	EXPECT_TRUE(MarksInStore().empty());
}

// A reboot ended the session, and its name may be another's now.
TEST_F(IscsiPipeServiceTest, AnotherBootOwesNoLogout)
{
	TempDir boot;
	boot.Write("boot_id", "boot-a\n");
	PipeServiceOptions options{std::chrono::milliseconds(100)};
	options.boot_id_path = boot / "boot_id";
	TempDir state;
	Store store1{state.path()};
	PipeService before{kernel, store1, probe, HostIdentity{kHost}, options};
	before.SetTargetConnector(&connector);
	ASSERT_TRUE(before.Load().ok());
	ASSERT_NO_FATAL_FAILURE(DeleteWithAFailedLogout(before, 1));
	ASSERT_TRUE(std::filesystem::exists(state / "owed-logouts.json"));
	boot.Write("boot_id", "boot-b\n");
	Store store2{state.path()};
	PipeService after{kernel, store2, probe, HostIdentity{kHost}, options};
	after.SetTargetConnector(&connector);
	ASSERT_TRUE(after.Load().ok());
	EXPECT_TRUE(after.OwedLogouts().empty());
	EXPECT_FALSE(after.HasLeftovers());
	after.SettleLeftovers(std::chrono::milliseconds(0));
	EXPECT_TRUE(connector.retried.empty());
	EXPECT_FALSE(std::filesystem::exists(state / "owed-logouts.json"));
}

// A call in flight that holds the owed target, or another LUN its session
// serves, keeps the session for now but does not settle the debt: it may
// fail, and having found the session rather than made it, it would not log
// out of it. Settling the debt then left the session logged in for good.
TEST_F(IscsiPipeServiceTest, AnOwedLogoutOutlivesACallInFlightThatFails)
{
	ASSERT_NO_FATAL_FAILURE(DeleteWithAFailedLogout(service, 1));
	connector.same_session[kUrl0] = kUrl1;
	for (const std::string &held : {kUrl0, kUrl1}) {
		connector.held = {held};
		connector.errors[held] = EIO;
		{
			std::lock_guard<std::mutex> lock(connector.mu);
			connector.released = false;
			connector.connects = 0;
		}
		auto call = std::async(std::launch::async, [&] {
			return service.CreateOrModify(
			        Call({"replipipe_0/b"}, {held}));
		});
		for (int i = 0; i < 500; ++i) {
			{
				std::lock_guard<std::mutex> lock(connector.mu);
				if (connector.connects >= 1)
					break;
			}
			std::this_thread::sleep_for(
			        std::chrono::milliseconds(10));
		}
		service.SettleLeftovers(std::chrono::milliseconds(0));
		EXPECT_EQ(service.OwedLogouts(),
		          (std::vector<std::string>{kUrl0}))
		        << held;
		EXPECT_TRUE(connector.connected.count(kUrl0)) << held;
		connector.Release();
		EXPECT_EQ(call.get().return_value, ReturnValue::kFailed)
		        << held;
	}
	// The calls failed: the next try ends the session. (The call that
	// held kUrl0 itself was not even asked about: no try while a call
	// holds the target.)
	service.SettleLeftovers(std::chrono::milliseconds(0));
	EXPECT_FALSE(connector.connected.count(kUrl0));
	EXPECT_TRUE(service.OwedLogouts().empty());
	EXPECT_EQ(connector.retried.size(), 2u);
}

// While an owed logout is tried, its target is reserved: a call that wants
// it waits, then is Busy, and says why (not "being added to pipe  by
// another call", the owner being no pipe).
TEST_F(IscsiPipeServiceTest, ACallWantingATargetWhoseLogoutIsTriedIsBusy)
{
	PipeServiceOptions options;
	options.busy_timeout = std::chrono::milliseconds(100);
	PipeService quick{kernel, store, probe, HostIdentity{kHost}, options};
	quick.SetTargetConnector(&connector);
	ASSERT_TRUE(quick.Load().ok());
	ASSERT_NO_FATAL_FAILURE(DeleteWithAFailedLogout(quick, 1));
	MethodOutcome during;
	connector.before_disconnect = [&] {
		during = quick.CreateOrModify(Call({"replipipe_0/b"}, {kUrl0}));
	};
	quick.SettleLeftovers(std::chrono::milliseconds(0));
	EXPECT_EQ(during.return_value, ReturnValue::kBusy) << during.error;
	EXPECT_NE(during.error.find("logging out of its session"),
	          std::string::npos)
	        << during.error;
	EXPECT_TRUE(quick.OwedLogouts().empty());
	EXPECT_FALSE(connector.connected.count(kUrl0));
}

// An owed logout whose target a pipe uses again is not done, and no longer
// owed: the session is that pipe's now.
TEST_F(IscsiPipeServiceTest, AnOwedLogoutOfATargetUsedAgainIsDropped)
{
	ASSERT_NO_FATAL_FAILURE(DeleteWithAFailedLogout(service, 1));
	MethodOutcome again =
	        service.CreateOrModify(Call({"replipipe_0/b"}, {kUrl0}));
	ASSERT_EQ(again.return_value, ReturnValue::kCompleted) << again.error;
	service.SettleLeftovers(std::chrono::milliseconds(0));
	EXPECT_TRUE(connector.connected.count(kUrl0));
	EXPECT_TRUE(service.OwedLogouts().empty());
	EXPECT_FALSE(service.HasLeftovers());
}

TEST_F(IscsiPipeServiceTest, ModifyRemovingThePairDisconnects)
{
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	// A modify that keeps the pair keeps the device in the kernel.
	CreateOrModifyCall keep;
	keep.replication_pipe = out.replication_pipe;
	keep.pipe_element_name = "renamed";
	ASSERT_EQ(service.CreateOrModify(keep).return_value,
	          ReturnValue::kCompleted);
	EXPECT_EQ(kernel.Find(Uuid(out))->pairs[0].target, "/dev/sdx");
	EXPECT_EQ(connector.connects, 1);
	CreateOrModifyCall clear;
	clear.replication_pipe = out.replication_pipe;
	clear.source_endpoints.emplace();
	clear.target_endpoints.emplace();
	ASSERT_EQ(service.CreateOrModify(clear).return_value,
	          ReturnValue::kCompleted);
	EXPECT_FALSE(connector.connected.count(kUrl0));
}

// A modify of a pipe the kernel lacks (its module reloaded since the
// daemon's last push) while a kept pair's session is down: the kernel has no
// device to keep for that pair, and the URL is no path. The call answers 4
// and names the target and why it has no device, and changes nothing; it
// gave the kernel the URL and answered with the kernel's "must be an
// absolute path".
TEST_F(IscsiPipeServiceTest, AModifyKeepingATargetWithoutASessionSaysSo)
{
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	const std::string uuid = Uuid(out);
	ASSERT_TRUE(kernel.DeletePipe(uuid).ok());
	connector.connected.clear();
	CreateOrModifyCall rename;
	rename.replication_pipe = out.replication_pipe;
	rename.pipe_element_name = "renamed";
	MethodOutcome renamed = service.CreateOrModify(rename);
	EXPECT_EQ(renamed.return_value, ReturnValue::kFailed) << renamed.error;
	for (const char *needle : {"target iscsi://", "not connected",
	                           "the kernel does not have the pipe"})
		EXPECT_NE(renamed.error.find(needle), std::string::npos)
		        << needle << " not in: " << renamed.error;
	EXPECT_EQ(renamed.error.find("kernel:"), std::string::npos)
	        << renamed.error;
	EXPECT_FALSE(kernel.Find(uuid)) << "the failed call made the pipe";
	auto stored = store.Load();
	ASSERT_TRUE(stored.ok());
	ASSERT_EQ(stored->size(), 1u);
	EXPECT_NE((*stored)[0].name, "renamed");
	EXPECT_EQ((*stored)[0].pairs[0].target, kUrl0);
}

TEST_F(IscsiPipeServiceTest, ReconcileReconnectsBeforePushing)
{
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	// A restart: the kernel and the sessions are gone.
	ASSERT_TRUE(kernel.DeletePipe(Uuid(out)).ok());
	connector.connected.clear();
	FakeConnector fresh;
	auto again = Restarted(fresh);
	ASSERT_TRUE(again);
	auto report = again->Reconcile();
	ASSERT_TRUE(report.ok());
	EXPECT_EQ(fresh.connects, 1);
	auto k = kernel.Find(Uuid(out));
	ASSERT_TRUE(k);
	EXPECT_EQ(k->pairs[0].target, "/dev/sdx");

	// Peer down at start: reported, not pushed with a URL.
	ASSERT_TRUE(kernel.DeletePipe(Uuid(out)).ok());
	FakeConnector down;
	down.errors[kUrl0] = EHOSTUNREACH;
	PipeService third{kernel, store, probe, HostIdentity{kHost}};
	third.SetTargetConnector(&down);
	ASSERT_TRUE(third.Load().ok());
	auto r3 = third.Reconcile();
	ASSERT_TRUE(r3.ok());
	EXPECT_FALSE(kernel.Find(Uuid(out)));
	bool said = false;
	for (const std::string &line : *r3)
		said = said || line.find("not pushed") != std::string::npos;
	EXPECT_TRUE(said);
}

// A peer down, two LUNs of its target in one pipe: once the first LUN's
// login ran out of time (the connector's bound, 30 s in the daemon, with
// the pipe's lock held), the second is not tried in the same pass: it
// would take the bound again. Each is reported. A login refused at once,
// or a LUN whose disk did not appear in time after its login, is no
// reason to skip the other LUN.
TEST_F(IscsiPipeServiceTest, ALoginThatTimedOutIsNotTriedAgainForAnotherLun)
{
	connector.devices[kUrl1] = "/dev/sdz";
	MethodOutcome out = service.CreateOrModify(
	        Call({"replipipe_0/a", "replipipe_0/b"}, {kUrl0, kUrl1}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	// Restarts with the peer down: the kernel and the sessions gone.
	ASSERT_TRUE(kernel.DeletePipe(Uuid(out)).ok());
	enum class Failure { kLoginTimeout, kRefused, kDiskTimeout };
	for (Failure f : {Failure::kLoginTimeout, Failure::kRefused,
	                  Failure::kDiskTimeout}) {
		FakeConnector down;
		down.devices = connector.devices;
		const int err =
		        f == Failure::kRefused ? EHOSTUNREACH : ETIMEDOUT;
		down.errors[kUrl0] = err;
		down.errors[kUrl1] = err;
		down.same_session[kUrl1] = kUrl0;
		if (f == Failure::kDiskTimeout)
			down.disk_timeouts = {kUrl0, kUrl1};
		auto again = Restarted(down);
		ASSERT_TRUE(again);
		auto report = again->Reconcile();
		ASSERT_TRUE(report.ok()) << report.status().message();
		const std::string all = Lines(*report);
		EXPECT_FALSE(kernel.Find(Uuid(out))) << all;
		EXPECT_NE(all.find("peer " + kUrl0 + ": scripted failure"),
		          std::string::npos)
		        << all;
		if (f == Failure::kLoginTimeout) {
			EXPECT_EQ(down.connects, 1) << all;
			EXPECT_NE(all.find("peer " + kUrl1 +
			                   ": not tried, a login to its portal "
			                   "and target timed out during this "
			                   "pass"),
			          std::string::npos)
			        << all;
		} else {
			EXPECT_EQ(down.connects, 2) << all;
			EXPECT_NE(all.find("peer " + kUrl1 +
			                   ": scripted failure"),
			          std::string::npos)
			        << all;
		}
	}
}

// A DR site down at boot (decision 59): each stored pipe's peer takes a
// whole login bound to fail (here 1 s; IscsiSessions gives 30 s), and a
// pipe that needs no peer is stored after them. Start-up's reconcile took
// one bound per dead peer before it pushed that pipe, opened the daemon's
// socket or told systemd READY=1: three LUNs on a dead peer took systemd's
// whole start timeout. Now the peers are waited for together, and the pipe
// without one is pushed while they are.
TEST_F(IscsiPipeServiceTest, ReconcileDoesNotWaitForDeadPeersOneAfterTheOther)
{
	constexpr int kDead = 8;
	std::vector<std::string> dead;
	for (int i = 0; i < kDead; ++i) {
		std::string url;
		CreatePeerPipe("dr" + std::to_string(i), i + 1, &url);
		dead.push_back(url);
	}
	const std::string local = CreateLocalPipe("local");
	// The reboot: the kernel and the sessions are gone, the peers down.
	for (const KernelPipeStatus &k : kernel.Snapshot())
		ASSERT_TRUE(kernel.DeletePipe(k.id).ok());
	FakeConnector down;
	down.devices = connector.devices;
	// A second per dead peer: the bounds below stay far from the times
	// they tell apart on a loaded machine (eight shards under ASan).
	constexpr std::chrono::milliseconds kBound{1000};
	down.delay = kBound;
	for (const std::string &url : dead)
		down.errors[url] = EHOSTUNREACH;
	std::atomic<long long> local_pushed_ms{-1};
	const auto start = std::chrono::steady_clock::now();
	kernel.SetApplyHook([&](const KernelPipeSpec &spec) {
		if (spec.id == local)
			local_pushed_ms = MsSince(start);
	});
	auto again = Restarted(down);
	ASSERT_TRUE(again);
	auto report = again->Reconcile();
	const long long took = MsSince(start);
	kernel.SetApplyHook({});
	ASSERT_TRUE(report.ok()) << report.status().message();
	EXPECT_EQ(down.connects, kDead);
	// One after the other: 8 x 1 s.
	EXPECT_LT(took, 5 * kBound.count()) << Lines(*report);
	// Before the first dead peer's bound ended.
	EXPECT_GE(local_pushed_ms, 0);
	EXPECT_LT(local_pushed_ms, kBound.count())
	        << "the pipe without a peer waited for the dead peers";
	EXPECT_TRUE(kernel.Find(local));
	EXPECT_EQ(kernel.Snapshot().size(), 1u);
	// Each dead peer's pipe is reported, in store order.
	const std::string all = Lines(*report);
	size_t at = 0;
	for (int i = 0; i < kDead; ++i) {
		at = all.find("\"dr" + std::to_string(i) + "\"", at);
		ASSERT_NE(at, std::string::npos) << all;
		EXPECT_NE(all.find("not pushed to the kernel", at),
		          std::string::npos)
		        << all;
	}
	EXPECT_NE(all.find("pushed to the kernel (1 pairs, full resync)", at),
	          std::string::npos)
	        << all;
}

// Peers whose logins hang (until the connector's bound, 30 s in the
// daemon): Reconcile() returns after peer_wait, whatever their number,
// having pushed meanwhile the pipes that need no peer and those whose peer
// answered, and says which wait for their peers. Those are reconciled in
// the background once their peers answer: sessions first, then the push (a
// pipe the kernel lacked) or the comparison (one it has, which it keeps
// mirroring meanwhile).
TEST_F(IscsiPipeServiceTest, ReconcileLeavesPeersThatHangToTheBackground)
{
	std::string url[3];
	std::string hung[3];
	for (int i = 0; i < 3; ++i)
		hung[i] = CreatePeerPipe("hung" + std::to_string(i), i + 1,
		                         &url[i]);
	const std::string live =
	        Uuid(service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0})));
	const std::string local = CreateLocalPipe("local");
	// The restart finds only hung2's pipe in the kernel.
	for (const KernelPipeStatus &k : kernel.Snapshot()) {
		if (k.id != hung[2]) {
			ASSERT_TRUE(kernel.DeletePipe(k.id).ok());
		}
	}
	FakeConnector slow;
	slow.devices = connector.devices;
	slow.held = {url[0], url[1], url[2]};
	PipeServiceOptions options;
	options.busy_timeout = std::chrono::milliseconds(100);
	options.peer_wait = std::chrono::milliseconds(200);
	auto again = std::make_unique<PipeService>(
	        kernel, store, probe, HostIdentity{kHost}, options);
	again->SetTargetConnector(&slow);
	ASSERT_TRUE(again->Load().ok());
	const auto start = std::chrono::steady_clock::now();
	auto report = again->Reconcile();
	const long long took = MsSince(start);
	ASSERT_TRUE(report.ok()) << report.status().message();
	const std::string all = Lines(*report);
	// A reconcile that waited for the hung peers would take the fake's
	// 10 s (its held logins give up then); 5 s leaves room for a loaded
	// machine.
	EXPECT_GE(took, 150) << all;
	EXPECT_LT(took, 5000) << all;
	EXPECT_TRUE(kernel.Find(local)) << all;
	ASSERT_TRUE(kernel.Find(live)) << all;
	EXPECT_EQ(kernel.Find(live)->pairs[0].target, "/dev/sdx");
	EXPECT_FALSE(kernel.Find(hung[0]));
	EXPECT_FALSE(kernel.Find(hung[1]));
	EXPECT_TRUE(kernel.Find(hung[2]));
	EXPECT_NE(all.find("(\"hung0\"): its peers were not connected within "
	                   "200 ms; not in the kernel until they are"),
	          std::string::npos)
	        << all;
	EXPECT_NE(all.find("(\"hung2\"): its peers were not connected within "
	                   "200 ms; the kernel keeps the pipe"),
	          std::string::npos)
	        << all;
	EXPECT_EQ(report->size(), 5u) << all;

	// The peers answer: each pipe's session, then its push or its
	// comparison (a GetPipe once connected).
	const int asked = kernel.calls(FakeKernel::Op::kGetPipe);
	const LogLevel level = GetLogLevel();
	SetLogLevel(LogLevel::kNotice); // what is done late is a notice
	::testing::internal::CaptureStderr();
	slow.Release();
	for (int i = 0; i < 500; ++i) {
		if (kernel.Find(hung[0]) && kernel.Find(hung[1]) &&
		    kernel.calls(FakeKernel::Op::kGetPipe) >= asked + 3)
			break;
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	}
	again.reset(); // every line logged
	const std::string log = ::testing::internal::GetCapturedStderr();
	SetLogLevel(level);
	auto logged = [&log](const std::string &what) {
		const size_t at = log.find(what);
		if (at == std::string::npos)
			return false;
		const size_t line = log.rfind('\n', at) + 1;
		return log.compare(line, 3, "<5>") == 0 &&
		       log.find("reconcile: ", line) < at;
	};
	for (int i = 0; i < 2; ++i) {
		auto k = kernel.Find(hung[i]);
		ASSERT_TRUE(k) << "not pushed once its peer answered";
		EXPECT_EQ(k->pairs[0].target, "/dev/hung" + std::to_string(i));
		EXPECT_TRUE(logged("(\"hung" + std::to_string(i) +
		                   "\"): pushed to the kernel"))
		        << log;
	}
	EXPECT_TRUE(logged("(\"hung2\"): adopted from the kernel")) << log;
	EXPECT_EQ(slow.connected.size(), 4u);
}

// A restart finds the kernel with another definition than the store (a
// modify killed between its PIPE_SET and its store write). Its reconcile
// finds the pipe held by a call (a retried modify, logging in to a peer),
// which then fails and leaves the kernel as it was. The pipe was then in no
// one's hands: only the next start would put the stored definition back. It
// is marked for repair now, and the next refresh's push compares the two.
TEST_F(IscsiPipeServiceTest, APipeBusyAtReconcileIsComparedLater)
{
	MethodOutcome out =
	        service.CreateOrModify(Call({"replipipe_0/a"}, {kUrl0}));
	ASSERT_EQ(out.return_value, ReturnValue::kCompleted) << out.error;
	const std::string uuid = Uuid(out);
	// The kernel got a modify's second pair; the store did not.
	auto k = kernel.Find(uuid);
	ASSERT_TRUE(k);
	KernelPipeSpec modified;
	modified.id = uuid;
	modified.name = k->name;
	modified.pairs = {{"replipipe_0/a", "/dev/sdx"},
	                  {"replipipe_0/b", "/dev/sdz"}};
	ASSERT_TRUE(kernel.SetPipe(modified).ok());

	const std::string hung =
	        "iscsi://10.0.3.1:3260/iqn.2003-01.org.x:hung/0";
	FakeConnector slow;
	slow.devices = connector.devices;
	slow.devices[hung] = "/dev/sdw";
	slow.held = {hung};
	slow.errors[hung] = EIO;
	PipeServiceOptions options;
	options.busy_timeout = std::chrono::milliseconds(100);
	options.peer_wait = std::chrono::milliseconds(200);
	PipeService again{kernel, store, probe, HostIdentity{kHost}, options};
	again.SetTargetConnector(&slow);
	ASSERT_TRUE(again.Load().ok());
	// The retried modify holds the pipe while its peer's login hangs.
	CreateOrModifyCall retry =
	        Call({"replipipe_0/a", "replipipe_0/b"}, {kUrl0, hung});
	retry.replication_pipe = out.replication_pipe;
	auto call = std::async(std::launch::async,
	                       [&] { return again.CreateOrModify(retry); });
	for (int i = 0; i < 500; ++i) {
		{
			std::lock_guard<std::mutex> lock(slow.mu);
			if (slow.connects >= 1) // the call holds the pipe
				break;
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	}
	auto report = again.Reconcile();
	ASSERT_TRUE(report.ok()) << report.status().message();
	// Its worker gives up on the pipe the call holds, within peer_wait or
	// after it in the background (a busy machine): marked for repair.
	for (int i = 0; i < 500 && again.PipesToRepair().empty(); ++i)
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	EXPECT_EQ(again.PipesToRepair(), std::set<std::string>{uuid})
	        << Lines(*report);
	slow.Release();
	EXPECT_EQ(call.get().return_value, ReturnValue::kFailed);
	ASSERT_EQ(kernel.Find(uuid)->pairs.size(), 2u) << "setup: changed";
	auto pushed = again.PushIfNeeded(uuid);
	ASSERT_TRUE(pushed.ok()) << pushed.status().message();
	EXPECT_EQ(*pushed, PushOutcome::kReplaced);
	EXPECT_EQ(kernel.Find(uuid)->pairs.size(), 1u);
}

// The daemon stops while a peer's login started by the reconcile still
// hangs: the service's destructor waits for it (it uses the connector and
// the kernel), and nothing is pushed once the stop was asked for.
TEST_F(IscsiPipeServiceTest, AStopDuringAPeersLoginWaitsForItAndPushesNothing)
{
	std::string url;
	const std::string hung = CreatePeerPipe("hung", 1, &url);
	ASSERT_TRUE(kernel.DeletePipe(hung).ok());
	FakeConnector slow;
	slow.devices = connector.devices;
	slow.held = {url};
	PipeServiceOptions options;
	options.peer_wait = std::chrono::milliseconds(50);
	auto again = std::make_unique<PipeService>(
	        kernel, store, probe, HostIdentity{kHost}, options);
	again->SetTargetConnector(&slow);
	ASSERT_TRUE(again->Load().ok());
	ASSERT_TRUE(again->Reconcile().ok());
	again->BeginShutdown();
	auto answer = std::async(std::launch::async, [&] {
		std::this_thread::sleep_for(std::chrono::milliseconds(200));
		slow.Release();
	});
	const auto start = std::chrono::steady_clock::now();
	again.reset();
	EXPECT_GE(MsSince(start), 100) << "the login was not waited for";
	answer.get();
	EXPECT_EQ(slow.connects, 1);
	EXPECT_FALSE(kernel.Find(hung)) << "pushed after the stop";
}

} // namespace
} // namespace replipipe
