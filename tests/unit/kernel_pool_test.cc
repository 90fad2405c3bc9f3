// KernelPool over fake connections (SerialKernel: one at a time each, as a
// NetlinkKernel socket) to one FakeKernel.
#include "kernel_pool.h"

#include <cerrno>
#include <chrono>
#include <future>
#include <mutex>
#include <optional>

#include <gtest/gtest.h>

#include "fake_kernel_fake.h"
#include "kernel_gate_fake.h"
#include "serial_kernel_fake.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using testing::FakeKernel;
using testing::KernelGate;
using testing::SerialKernel;

// Long enough for a call on a loaded machine under the sanitizers, short
// next to the blocked call's wait.
constexpr milliseconds kPrompt{3000};

KernelPipeSpec OnePairPipe(const std::string &id)
{
	KernelPipeSpec spec;
	spec.id = id;
	spec.name = "db";
	spec.pairs.push_back({"replipipe_0/" + id, "/dev/sd" + id});
	return spec;
}

// Opens SerialKernel connections to one FakeKernel and counts them; fails
// while open_error is set.
struct Connections {
	FakeKernel kernel;
	std::mutex mu;
	int opened = 0;                   // guarded by mu
	std::optional<Status> open_error; // guarded by mu

	KernelPool::Opener Opener()
	{
		return [this]() -> Result<std::unique_ptr<KernelApi>> {
			std::lock_guard lock(mu);
			if (open_error)
				return *open_error;
			++opened;
			return std::unique_ptr<KernelApi>(
			        new SerialKernel(kernel));
		};
	}
	void FailOpens(std::optional<Status> error)
	{
		std::lock_guard lock(mu);
		open_error = std::move(error);
	}
	int Opened()
	{
		std::lock_guard lock(mu);
		return opened;
	}
};

TEST(KernelPool, CallsInTurnShareOneConnection)
{
	Connections c;
	KernelPool pool("netlink probe socket", c.Opener());
	EXPECT_EQ(c.Opened(), 0) << "opened before it was needed";
	ASSERT_TRUE(pool.SetPipe(OnePairPipe("a")).ok());
	ASSERT_TRUE(pool.SetPairState("a", "replipipe_0/a", PairState::kPaused)
	                    .ok());
	auto listed = pool.ListPipes();
	ASSERT_TRUE(listed.ok()) << listed.status().message();
	EXPECT_EQ(listed->size(), 1u);
	auto got = pool.GetPipe("a");
	ASSERT_TRUE(got.ok() && *got);
	EXPECT_EQ((*got)->pairs.at(0).state, PairState::kPaused);
	EXPECT_EQ(c.Opened(), 1);
	EXPECT_EQ(pool.idle(), 1u);
}

// The case the pool is for: a PAIR_SET stuck on one connection (a probe
// waiting on a dead target) while another call comes. It gets a connection
// of its own and answers; both connections are idle afterwards, as many as
// max_idle allows.
TEST(KernelPool, ACallBlockedInTheKernelHoldsNoOther)
{
	KernelGate gate; // outlives every call below
	Connections c;
	KernelPool pool("netlink probe socket", c.Opener(), 1);
	ASSERT_TRUE(pool.SetPipe(OnePairPipe("a")).ok());
	ASSERT_TRUE(pool.SetPipe(OnePairPipe("b")).ok());
	c.kernel.SetEntryHook(gate.BlockFirst(FakeKernel::Op::kSetPairState));

	auto probe = std::async(std::launch::async, [&pool] {
		return pool.SetPairState("a", "replipipe_0/a",
		                         PairState::kSyncing);
	});
	ASSERT_TRUE(gate.WaitEntered(kPrompt)) << "the probe never started";
	auto resume = std::async(std::launch::async, [&pool] {
		return pool.SetPairState("b", "replipipe_0/b",
		                         PairState::kSyncing);
	});
	const bool prompt =
	        resume.wait_for(kPrompt) == std::future_status::ready;
	gate.Release();
	EXPECT_TRUE(prompt) << "the call waited for another's connection";
	EXPECT_TRUE(resume.get().ok());
	EXPECT_TRUE(probe.get().ok());
	EXPECT_EQ(c.Opened(), 2);
	EXPECT_EQ(pool.idle(), 1u) << "kept more idle connections than asked";
	c.kernel.SetEntryHook({});
}

// A connection whose call failed may be in any state (a time-out, a local
// socket error): the next call opens a new one. The error is the
// connection's, as it gave it.
TEST(KernelPool, AFailedCallClosesItsConnection)
{
	Connections c;
	KernelPool pool("netlink probe socket", c.Opener());
	ASSERT_TRUE(pool.SetPipe(OnePairPipe("a")).ok());
	c.kernel.FailNext(ETIMEDOUT, FakeKernel::Op::kSetPairState,
	                  "no answer for the test");
	Status st = pool.SetPairState("a", "replipipe_0/a", PairState::kPaused);
	EXPECT_EQ(st.err(), ETIMEDOUT);
	EXPECT_EQ(st.message(), "no answer for the test");
	EXPECT_EQ(pool.idle(), 0u);
	EXPECT_TRUE(pool.SetPairState("a", "replipipe_0/a", PairState::kPaused)
	                    .ok());
	EXPECT_EQ(c.Opened(), 2);
	EXPECT_EQ(pool.idle(), 1u);
}

// A connection that cannot be opened fails the call with what could not be
// opened and why; the pool opens one again at the next call.
TEST(KernelPool, AConnectionThatCannotBeOpenedFailsTheCall)
{
	Connections c;
	KernelPool pool("netlink probe socket", c.Opener());
	c.FailOpens(Status::Error("module not loaded", ENOENT));
	Status st = pool.SetPairState("a", "replipipe_0/a", PairState::kPaused);
	EXPECT_EQ(st.err(), ENOENT);
	EXPECT_EQ(st.message(),
	          "netlink probe socket: open: module not loaded");
	auto listed = pool.ListPipes();
	EXPECT_FALSE(listed.ok());

	c.FailOpens(std::nullopt);
	listed = pool.ListPipes();
	EXPECT_TRUE(listed.ok()) << listed.status().message();
	EXPECT_EQ(c.Opened(), 1);
}

} // namespace
} // namespace replipipe
