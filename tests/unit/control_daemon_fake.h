// InProcessDaemon: replipiped's parts (PipeService over FakeKernel and
// FakeProbe, a store in a temp dir, EventHub, ResyncJobs with fake jobs,
// DaemonService, ControlServer on a temp socket) in the test's process, for
// tests that talk to it through the control socket. The service's probe
// channel is the fake kernel, or what the test makes over it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "control_client.h"
#include "daemon_events.h"
#include "daemon_jobs.h"
#include "daemon_server.h"
#include "daemon_service.h"
#include "fake_kernel_fake.h"
#include "fake_probe_fake.h"
#include "log.h"
#include "pipe_service.h"
#include "store.h"
#include "test_dir_fake.h"

namespace replipipe::testing
{

// What the fake resync jobs did; a job runs until stopped or until its
// source is in `finish`.
struct JobBoard {
	std::mutex mu;
	std::condition_variable cv;
	std::vector<PairJobSpec> started; // guarded by mu
	std::set<std::string> finish;     // guarded by mu
	int running = 0;                  // guarded by mu
	int stopped = 0;                  // guarded by mu

	// Waits until pred() (called under mu) holds; false on time-out.
	bool WaitFor(const std::function<bool()> &pred,
	             std::chrono::milliseconds timeout =
	                     std::chrono::milliseconds(5000))
	{
		std::unique_lock lock(mu);
		return cv.wait_for(lock, timeout, pred);
	}
	void Finish(const std::string &source)
	{
		std::lock_guard lock(mu);
		finish.insert(source);
		cv.notify_all();
	}
};

class FakePairJob final : public PairJob
{
public:
	FakePairJob(JobBoard &board, PairJobSpec spec)
	    : board_(board), spec_(std::move(spec))
	{
	}
	Status Run() override
	{
		std::unique_lock lock(board_.mu);
		++board_.running;
		board_.cv.notify_all();
		board_.cv.wait(lock, [this] {
			return stop_ || board_.finish.count(spec_.source);
		});
		--board_.running;
		if (stop_)
			++board_.stopped;
		board_.cv.notify_all();
		if (stop_)
			return Status::Error("stopped", ECANCELED);
		done_ = true;
		return Status();
	}
	void RequestStop() override
	{
		std::lock_guard lock(board_.mu);
		stop_ = true;
		board_.cv.notify_all();
	}
	ResyncProgress progress() const override
	{
		std::lock_guard lock(board_.mu);
		ResyncProgress p;
		p.total_bytes = 1 << 20;
		p.done_bytes = done_ ? p.total_bytes : p.total_bytes / 4;
		p.rate_bytes_per_s = 4096;
		return p;
	}

private:
	JobBoard &board_;
	const PairJobSpec spec_;
	bool stop_ = false; // guarded by board_.mu
	bool done_ = false; // guarded by board_.mu
};

inline constexpr uint64_t kTestGiB = 1ull << 30;
inline constexpr const char *kTestHost = "node1.example.com";

class InProcessDaemon
{
public:
	// make_probe_channel: the service's probe_kernel over the fake kernel
	// (unset: the fake kernel itself).
	using ProbeChannelMaker =
	        std::function<std::unique_ptr<KernelApi>(KernelApi &kernel)>;

	explicit InProcessDaemon(
	        std::function<PeerDecision(const PeerCredentials &)>
	                check_peer = {},
	        PipePusher::Options push_options = {},
	        const ProbeChannelMaker &make_probe_channel = {})
	    : store_(dir_ / "state"),
	      pipes_(kernel_, store_, probe_, HostIdentity{kTestHost},
	             PipeServiceOptions{std::chrono::milliseconds(500)}),
	      jobs_(
	              [this](const PairJobSpec &spec)
	                      -> Result<std::unique_ptr<PairJob>> {
		              {
			              std::lock_guard lock(board_.mu);
			              board_.started.push_back(spec);
			              board_.cv.notify_all();
		              }
		              return std::unique_ptr<PairJob>(
		                      new FakePairJob(board_, spec));
	              },
	              [this](const ControlEvent &e) { hub_.Publish(e); },
	              ResyncJobsOptions{std::chrono::milliseconds(10),
	                                std::chrono::milliseconds(100),
	                                std::chrono::milliseconds(0)}),
	      probe_channel_(make_probe_channel ? make_probe_channel(kernel_)
	                                        : nullptr),
	      service_(pipes_, kernel_, &jobs_, hub_, push_options,
	               probe_channel_.get())
	{
		for (const char *name : {"a", "b", "c"})
			probe_.AddBackstore(std::string("replipipe_0/") + name,
			                    std::string("/dev/vg/") + name,
			                    10 * kTestGiB);
		for (const char *dev : {"/dev/sdb", "/dev/sdc", "/dev/sdd"})
			probe_.AddDevice(dev, 10 * kTestGiB);
		SetLogLevel(LogLevel::kWarning); // keep test output readable
		EXPECT_TRUE(store_.EnsureStateDir().ok());
		Status loaded = pipes_.Load();
		EXPECT_TRUE(loaded.ok()) << loaded.message();
		ControlServerOptions options;
		options.socket_path = socket_path();
		options.group = "replipipe-no-such-group-for-tests";
		options.check_peer = std::move(check_peer);
		auto server = ControlServer::Start(
		        options,
		        [this](const ControlRequest &r) {
			        return service_.Handle(r);
		        },
		        &hub_);
		EXPECT_TRUE(server.ok()) << server.status().message();
		if (server.ok())
			server_ = std::move(*server);
	}
	~InProcessDaemon()
	{
		if (server_)
			server_->Stop();
		jobs_.StopAll();
	}

	std::string socket_path() const { return dir_ / "run/replipiped.sock"; }

	// Waits until the daemon's jobs (not just the fake jobs' Run()) have
	// ended: ResyncJobs marks a job finished after Run() returns, so the
	// board's `running` reaches 0 a little earlier.
	bool WaitJobsIdle()
	{
		const auto deadline = std::chrono::steady_clock::now() +
		                      std::chrono::seconds(5);
		while (jobs_.running() != 0) {
			if (std::chrono::steady_clock::now() > deadline)
				return false;
			std::this_thread::sleep_for(
			        std::chrono::milliseconds(2));
		}
		return true;
	}

	// One request through the socket; a failed call fails the test.
	ControlReply Call(const ControlRequest &request)
	{
		auto reply = CallDaemon(socket_path(), request);
		EXPECT_TRUE(reply.ok()) << reply.status().message();
		return reply.ok() ? *reply
		                  : ErrorReply(kCodeInternal, "call failed");
	}

	CreateOrModifyCall Call(std::vector<std::string> sources,
	                        std::vector<std::string> targets)
	{
		CreateOrModifyCall c;
		c.pipe_element_name = "db";
		c.source_system = kTestHost;
		c.target_system = "node2";
		c.source_endpoints = std::move(sources);
		c.target_endpoints = std::move(targets);
		return c;
	}

	static ControlRequest Create(CreateOrModifyCall call)
	{
		ControlRequest r;
		r.op = ControlOp::kCreateOrModify;
		r.call = std::move(call);
		return r;
	}
	static ControlRequest Op(ControlOp op,
	                         std::optional<std::string> pipe = {},
	                         std::optional<std::string> pair = {})
	{
		ControlRequest r;
		r.op = op;
		r.pipe = std::move(pipe);
		r.pair = std::move(pair);
		return r;
	}

	TempDir dir_;
	FakeKernel kernel_;
	FakeProbe probe_;
	Store store_;
	PipeService pipes_;
	EventHub hub_;
	JobBoard board_;
	ResyncJobs jobs_;
	std::unique_ptr<KernelApi> probe_channel_; // may be null
	DaemonService service_;
	std::unique_ptr<ControlServer> server_;
};

} // namespace replipipe::testing
