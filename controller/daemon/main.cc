// replipiped: owns the pipe store, serves the control socket, follows the
// kernel's events and runs the resync jobs (shared DESIGN.md, "The
// controller"; docs/cli.md for its options and exit statuses).
//
// Start-up order: load the store (a corrupt or unknown-version store stops
// the daemon, the file is left alone), open the kernel's netlink family,
// reconcile, subscribe to events, open the socket, start the jobs, then
// tell systemd READY=1. SIGTERM/SIGINT stop it in reverse: the socket
// first, then the jobs (their claims end as Failed). So does an unload or a
// reload of the module, with a failure status (FamilyCheck below).
#include <fcntl.h>
#include <linux/replipipe.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <boost/lexical_cast/try_lexical_convert.hpp>
#include <boost/program_options.hpp>
#include <systemd/sd-daemon.h>

#include "cli_args.h"
#include "control_protocol.h"
#include "daemon_events.h"
#include "daemon_jobs.h"
#include "daemon_server.h"
#include "daemon_service.h"
#include "endpoint_check.h"
#include "host.h"
#include "iscsi_runner.h"
#include "iscsi_sessions.h"
#include "iscsi_targets.h"
#include "kernel_pool.h"
#include "log.h"
#include "metrics_http.h"
#include "metrics_text.h"
#include "metrics_textfile.h"
#include "netlink_client.h"
#include "netlink_events.h"
#include "pipe_service.h"
#include "store.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

namespace po = boost::program_options;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Exit statuses (docs/cli.md).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;      // start-up error, or the module reloaded
constexpr int kExitUsage = 64;       // EX_USAGE
constexpr int kExitUnavailable = 69; // EX_UNAVAILABLE: module not (any more)
                                     // loaded
constexpr int kExitConfig = 78;      // EX_CONFIG: store unreadable

// How often the jobs and the kernel state are re-checked without an event
// (restarts failed jobs after their back-off, catches lost events, finds a
// module unloaded or reloaded whose announcement was missed: FamilyCheck).
constexpr milliseconds kTick{5000};
// --probe-interval: at most a year, as replipipectl's seconds.
constexpr int64_t kMaxProbeIntervalSeconds = 365 * 24 * 3600;

// How long a stop waits for the resync jobs to end: within the unit's
// TimeoutStopSec=30s, with room for what comes before (the control calls
// in progress: a resume's probes under way, 5 s).
constexpr milliseconds kJobsStopBound{20000};

struct Options {
	std::string state_dir = kDefaultStateDir;
	std::string socket_path = kDefaultSocketPath;
	bool foreground = false;
	unsigned probe_interval_s = 10; // 0: no automatic probe
	LogLevel log_level = LogLevel::kInfo;
	std::optional<LoopbackAddress> metrics_listen; // off by default
	std::string metrics_textfile;                  // empty: off
};

// A usage error: says so (and how to get help), sets *exit_code; nullopt.
std::optional<Options> UsageError(const std::string &message, int *exit_code)
{
	std::cerr << "replipiped: " << message
	          << "\nTry 'replipiped --help'.\n";
	*exit_code = kExitUsage;
	return std::nullopt;
}

// nullopt: exit with *exit_code (help, version, usage error).
std::optional<Options> ParseArgs(int argc, char **argv, int *exit_code)
{
	Options opts;
	// 100 columns: boost_po's 80 split the default socket path in two.
	po::options_description desc(
	        "Usage: replipiped [--state-dir DIR] [--socket PATH] "
	        "[--foreground]\n"
	        "                  [--probe-interval SECONDS] [--log-level "
	        "LEVEL]\n"
	        "                  [--metrics-listen ADDRESS:PORT] "
	        "[--metrics-textfile PATH]\n"
	        "                  [--version] [--help]\n\nOptions",
	        100, 50);
	desc.add_options()(
	        "state-dir",
	        po::value<std::string>(&opts.state_dir)->value_name("DIR"),
	        "pipe store directory (default /var/lib/replipipe)")(
	        "socket",
	        po::value<std::string>(&opts.socket_path)->value_name("PATH"),
	        "control socket (default /run/replipipe/replipiped.sock)")(
	        "foreground", "do not detach (systemd runs it so)")(
	        "probe-interval",
	        po::value<std::string>()->value_name("SECONDS"),
	        "resume Degraded pairs whose target answers again, tried "
	        "every SECONDS (default 10, 0 = never)")(
	        "log-level", po::value<std::string>()->value_name("LEVEL"),
	        "error, warning, notice, info (default) or debug")(
	        "metrics-listen",
	        po::value<std::string>()->value_name("ADDRESS:PORT"),
	        "serve Prometheus metrics at http://ADDRESS:PORT/metrics; "
	        "loopback only (127.0.0.1:9469, [::1]:9469); default off")(
	        "metrics-textfile",
	        po::value<std::string>(&opts.metrics_textfile)
	                ->value_name("PATH"),
	        "write the metrics to PATH (absolute) every 5 s for "
	        "node_exporter's textfile collector; default off")(
	        "version", "print the version")("help,h", "this help");
	po::variables_map vm;
	// An option's value that is the next option (`--state-dir
	// --foreground`: a state directory "--foreground"), and words that are
	// no option (boost_po ignores them), are usage errors.
	auto words =
	        PositionalWords(std::vector<std::string>(
	                                argv + (argc > 0 ? 1 : 0), argv + argc),
	                        desc);
	if (!words.ok())
		return UsageError(words.status().message(), exit_code);
	if (!words->empty())
		return UsageError("unexpected argument \"" + words->front() +
		                          "\" (replipiped takes options only)",
		                  exit_code);
	try {
		po::store(
		        po::command_line_parser(argc, argv)
		                .options(desc)
		                .style(po::command_line_style::default_style &
		                       ~po::command_line_style::allow_guessing)
		                .run(),
		        vm);
		po::notify(vm);
	} catch (const po::error &e) {
		return UsageError(e.what(), exit_code);
	}
	if (vm.count("help")) {
		std::cout << desc
		          << "\nExample:\n  replipiped --foreground "
		             "--log-level debug --metrics-listen "
		             "127.0.0.1:9469\n";
		*exit_code = kExitOk;
		return std::nullopt;
	}
	if (vm.count("version")) {
		std::cout << "replipiped " << REPLIPIPE_VERSION << "\n";
		*exit_code = kExitOk;
		return std::nullopt;
	}
	if (vm.count("log-level")) {
		auto level = ParseLogLevel(vm["log-level"].as<std::string>());
		if (!level)
			return UsageError(
			        "--log-level must be error, warning, notice, "
			        "info or debug, not \"" +
			                vm["log-level"].as<std::string>() +
			                "\"",
			        exit_code);
		opts.log_level = *level;
	}
	if (vm.count("probe-interval")) {
		// Signed: "-1" read as unsigned wrapped to 4294967295.
		const std::string &text =
		        vm["probe-interval"].as<std::string>();
		int64_t seconds = -1;
		if (!boost::conversion::try_lexical_convert(text, seconds) ||
		    seconds < 0 || seconds > kMaxProbeIntervalSeconds)
			return UsageError(
			        "--probe-interval must be 0 (never) or a whole "
			        "number of seconds up to " +
			                std::to_string(
			                        kMaxProbeIntervalSeconds) +
			                " (a year), not \"" + text + "\"",
			        exit_code);
		opts.probe_interval_s = static_cast<unsigned>(seconds);
	}
	if (vm.count("metrics-listen")) {
		auto address = ParseLoopbackAddress(
		        vm["metrics-listen"].as<std::string>());
		if (address.ok() && address->port == 0)
			address = Status::Error("metrics address \"" +
			                        address->text +
			                        "\": the port must not be 0");
		if (!address.ok()) {
			std::cerr << "replipiped: --metrics-listen: "
			          << address.status().message()
			          << "\nTry 'replipiped --help'.\n";
			*exit_code = kExitUsage;
			return std::nullopt;
		}
		opts.metrics_listen = *address;
	}
	if (vm.count("metrics-textfile") &&
	    (opts.metrics_textfile.empty() ||
	     opts.metrics_textfile.front() != '/' ||
	     opts.metrics_textfile.back() == '/')) {
		std::cerr
		        << "replipiped: --metrics-textfile must be an absolute "
		           "file path, e.g. /var/lib/prometheus/node-exporter/"
		           "replipipe.prom\n";
		*exit_code = kExitUsage;
		return std::nullopt;
	}
	opts.foreground = vm.count("foreground") > 0;
	if (opts.state_dir.empty())
		return UsageError("--state-dir must not be empty", exit_code);
	if (auto error = CheckSocketPath("--socket", opts.socket_path))
		return UsageError(*error, exit_code);
	return opts;
}

// Without --foreground: the parent waits until the child is ready (or
// failed) and exits with its verdict, so that `replipiped && next` works.
// Must run before any thread exists.
class Detacher
{
public:
	// Returns in the child only (the parent exits).
	void Detach()
	{
		int fds[2];
		if (::pipe2(fds, O_CLOEXEC) < 0) {
			LogError() << "pipe: " << std::strerror(errno);
			std::exit(kExitFailure);
		}
		pid_t pid = ::fork();
		if (pid < 0) {
			LogError() << "fork: " << std::strerror(errno);
			std::exit(kExitFailure);
		}
		if (pid > 0) {
			::close(fds[1]);
			char status = 1;
			ssize_t n;
			do {
				n = ::read(fds[0], &status, 1);
			} while (n < 0 && errno == EINTR);
			if (n == 1 && status == 0)
				std::exit(kExitOk);
			int wstatus = 0;
			if (::waitpid(pid, &wstatus, 0) == pid &&
			    WIFEXITED(wstatus))
				std::exit(WEXITSTATUS(wstatus));
			std::exit(kExitFailure);
		}
		::close(fds[0]);
		ready_fd_.Reset(fds[1]);
		::setsid();
		UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
		if (null.valid()) {
			::dup2(null.get(), STDIN_FILENO);
			::dup2(null.get(), STDOUT_FILENO);
		}
	}
	void Ready()
	{
		if (!ready_fd_.valid())
			return;
		char ok = 0;
		(void)!::write(ready_fd_.get(), &ok, 1);
		ready_fd_.Reset();
	}

private:
	UniqueFd ready_fd_;
};

class Notifier
{
public:
	void Ready(const std::string &status)
	{
		sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
		last_ = status;
	}
	void Status(const std::string &status)
	{
		if (status == last_)
			return;
		sd_notifyf(0, "STATUS=%s", status.c_str());
		LogInfo() << "status: " << status;
		last_ = status;
	}
	void Stopping() { sd_notify(0, "STOPPING=1\nSTATUS=stopping"); }

private:
	std::string last_;
};

// --metrics-textfile: rewritten at start and every tick, removed at a clean
// stop (node_exporter then stops exporting figures nobody updates). A
// failure is logged when it first happens and when it clears, not at every
// tick.
class MetricsTextfile
{
public:
	using Render = std::function<Result<std::string>()>;
	MetricsTextfile(std::string path, Render render)
	    : path_(std::move(path)), render_(std::move(render))
	{
	}
	Status Write()
	{
		if (path_.empty())
			return Status();
		auto text = render_();
		Status st = text.ok() ? WriteMetricsTextfile(path_, *text)
		                      : text.status().Context(
		                                "metrics textfile " + path_);
		if (!st.ok() && st.message() != last_error_)
			LogWarning() << st.message();
		else if (st.ok() && !last_error_.empty())
			LogNotice() << "metrics textfile " << path_
			            << " written again";
		last_error_ = st.ok() ? "" : st.message();
		return st;
	}
	void Remove()
	{
		if (!path_.empty() && ::unlink(path_.c_str()) < 0 &&
		    errno != ENOENT)
			LogWarning() << "metrics textfile: remove " << path_
			             << ": " << std::strerror(errno);
	}

private:
	const std::string path_;
	const Render render_;
	std::string last_error_;
};

// Whether the module behind the daemon's sockets is still the one they were
// opened for. Each socket keeps the genl family id it resolved, and the
// kernel gives the family a new id at each registration, so after an unload
// every request goes to nobody, and after a reload to nobody too while the
// new module is empty: every stored pipe must be pushed again, which is what
// a start does (Reconcile). So the daemon stops with a failure status and
// replipiped.service starts it again (docs/decisions.md, 60).
//
// It asks nlctrl for the family's id when told to look: at every tick, and
// when nlctrl announces a registration or removal of the family (FamilyWatch)
// or lost announcements.
class FamilyCheck
{
public:
	explicit FamilyCheck(int id) : id_(id) {}

	// nlctrl announced that the family's id @id went: the family is gone
	// even if it is registered again under the same id (after the cyclic
	// allocator wrapped).
	void Unregistered(int id)
	{
		if (id == id_)
			unregistered_ = true;
	}

	// What stops the daemon: the module was unloaded or reloaded.
	struct Gone {
		Status error; // FamilyGoneError()
		bool unloaded = false;
	};
	// Gone, or nullopt while the family keeps its id. A failed look-up is
	// no verdict: logged when its reason changes, asked again at the next
	// tick.
	std::optional<Gone> Look()
	{
		auto now = ResolveFamilyId(REPLIPIPE_GENL_NAME);
		if (!now.ok() && now.status().err() != ENOENT) {
			if (now.status().message() != last_error_)
				LogWarning() << "kernel: cannot look up the "
				                "generic netlink family: "
				             << now.status().message();
			last_error_ = now.status().message();
			return std::nullopt;
		}
		last_error_.clear();
		const int now_id = now.ok() ? *now : 0;
		if (now_id == id_ && !unregistered_)
			return std::nullopt;
		return Gone{FamilyGoneError(REPLIPIPE_GENL_NAME, id_, now_id),
		            now_id == 0};
	}

private:
	const int id_;
	bool unregistered_ = false;
	std::string last_error_;
};

// Logs why the daemon stops for a module that went; its exit status.
int StopForFamily(const FamilyCheck::Gone &gone)
{
	if (gone.unloaded) {
		LogError()
		        << "kernel: " << gone.error.message()
		        << "; stopping with exit status " << kExitUnavailable
		        << ": nothing is mirrored without it. Start "
		           "replipiped again once it is loaded (modprobe "
		           "replipipe): the start pushes the stored pipes to "
		           "it. replipiped.service does both by itself "
		           "(Restart=on-failure, ExecStartPre=modprobe); stop "
		           "the service to keep the module unloaded";
		return kExitUnavailable;
	}
	LogError() << "kernel: " << gone.error.message()
	           << "; the new module has none of the old one's pipes and "
	              "this daemon's sockets name the old family: stopping "
	              "with exit status "
	           << kExitFailure
	           << " so that a start pushes the stored pipes to it "
	              "(replipiped.service restarts by itself)";
	return kExitFailure;
}

// One of nlctrl's announcements about the family, logged; a removal is
// noted in @family.
void LogFamilyEvent(const FamilyEvent &change, FamilyCheck *family)
{
	switch (change.type) {
	case FamilyEvent::Type::kRegistered:
		LogInfo() << "kernel: nlctrl: generic netlink family "
		          << REPLIPIPE_GENL_NAME << " registered with id "
		          << change.id;
		break;
	case FamilyEvent::Type::kUnregistered:
		LogInfo() << "kernel: nlctrl: generic netlink family "
		          << REPLIPIPE_GENL_NAME << " (id " << change.id
		          << ") was unregistered";
		family->Unregistered(change.id);
		break;
	case FamilyEvent::Type::kOverrun:
		LogInfo() << "kernel: nlctrl's announcements were lost; "
		             "looking the family up";
		break;
	}
}

// A new socket on the kernel's events group, in @listener; null when it
// cannot be opened (the main loop's tick tries again).
void ReopenKernelEvents(std::unique_ptr<NetlinkEventListener> &listener)
{
	listener.reset();
	auto opened = NetlinkEventListener::Open();
	if (!opened.ok()) {
		LogWarning() << "netlink events: cannot open a new socket: "
		             << opened.status().message()
		             << "; the kernel's state is re-read every "
		             << kTick.count() / 1000 << " s until one opens";
		return;
	}
	listener = std::move(*opened);
	LogNotice() << "netlink events: listening on a new socket (port "
	            << listener->port() << ")";
}

// Hands the kernel's queued events to @service. After a failed receive the
// socket is replaced before the events go on: the batch ends with an
// overrun, whose re-read of the kernel's state then also covers what
// happened while no socket listened.
void ReadKernelEvents(std::unique_ptr<NetlinkEventListener> &listener,
                      DaemonService &service)
{
	auto batch = listener->Read();
	if (!batch.receive_error.ok()) {
		LogWarning() << batch.receive_error.message()
		             << "; the events after it are lost";
		ReopenKernelEvents(listener);
	}
	for (const KernelEvent &event : batch.events) {
		LogDebug() << "kernel event " << KernelEventTypeName(event.type)
		           << " pipe " << event.pipe_id;
		service.OnKernelEvent(event);
	}
}

// A KernelPool::Opener: one more netlink socket.
Result<std::unique_ptr<KernelApi>> OpenKernelSocket()
{
	auto opened = NetlinkKernel::Open();
	if (!opened.ok())
		return opened.status();
	return std::unique_ptr<KernelApi>(std::move(*opened));
}

int Run(const Options &opts, Detacher &detacher)
{
	LogNotice() << "replipiped " << REPLIPIPE_VERSION
	            << " starting: state dir " << opts.state_dir << ", socket "
	            << opts.socket_path;

	Store store(opts.state_dir);
	if (Status st = store.EnsureStateDir(); !st.ok()) {
		LogError() << "state directory: " << st.message();
		return kExitConfig;
	}
	// Before anything is read or pushed: a second daemon on this state
	// directory stops here, not after it reconciled the kernel.
	if (Status st = store.LockStateDir(); !st.ok()) {
		LogError() << st.message();
		return kExitFailure;
	}
	// The kernel's pipes are one per host, the state directory's lock is
	// not: a daemon on another state directory but this socket (a copy
	// started by hand while the service runs) stops here, before it
	// pushes its store over the running daemon's pipes.
	if (Status st = CheckSocketPathFree(opts.socket_path); !st.ok()) {
		LogError() << "control socket: " << st.message();
		return kExitFailure;
	}

	// The store first: a corrupt one is reported whatever the kernel's
	// state (PipeService::Load() reads it again below).
	if (auto stored = store.Load(); !stored.ok()) {
		LogError() << "pipe store: " << stored.status().message()
		           << " (the file is left as it is; fix or move it "
		              "away, then start again)";
		return kExitConfig;
	}

	// Before the kernel socket resolves the family: an unload or reload
	// from then on is announced here (FamilyCheck).
	std::unique_ptr<FamilyWatch> watch;
	if (auto opened = FamilyWatch::Open(REPLIPIPE_GENL_NAME); opened.ok())
		watch = std::move(*opened);
	else
		LogWarning() << "kernel: cannot follow the generic netlink "
		                "controller's announcements ("
		             << opened.status().message()
		             << "); an unload or reload of the module is found "
		                "by the check every "
		             << kTick.count() / 1000 << " s only";

	auto kernel = NetlinkKernel::Open();
	if (!kernel.ok()) {
		if (IsModuleMissing(kernel.status())) {
			LogError() << kModuleMissingMessage
			           << "; load it with: modprobe replipipe";
			return kExitUnavailable;
		}
		LogError() << "netlink: " << kernel.status().message();
		return kExitFailure;
	}
	LogInfo() << "kernel: generic netlink family " << REPLIPIPE_GENL_NAME
	          << " id " << (*kernel)->family_id() << " version "
	          << (*kernel)->family_version();
	FamilyCheck family((*kernel)->family_id());

	// The degraded-pair probes and resumes run on netlink sockets of their
	// own, one per request in progress (KernelPool): one can take the
	// kernel's 5 s probe bound, and NetlinkKernel serializes the requests
	// of one socket (DaemonService). Opened when first needed.
	KernelPool probe_kernel("netlink probe socket", OpenKernelSocket);

	SystemEndpointProbe probe;
	// iscsi:// target endpoints (docs/iscsi.md). Before the service, which
	// uses them until its destructor: Reconcile() may leave a peer's
	// connection going in the background (decision 59).
	SystemCommandRunner iscsi_runner;
	IscsiSessions iscsi_sessions(iscsi_runner);
	IscsiTargetConnector iscsi_targets(iscsi_sessions);
	PipeService pipes(**kernel, store, probe, HostIdentity::FromSystem());
	pipes.SetTargetConnector(&iscsi_targets);
	if (Status st = pipes.Load(); !st.ok()) {
		LogError() << "pipe store: " << st.message()
		           << " (the file is left as it is; fix or move it "
		              "away, then start again)";
		return kExitConfig;
	}
	LogInfo() << "store " << store.path() << ": "
	          << pipes.ListPipes().size() << " pipes";

	// Bounded (PipeServiceOptions::peer_wait) whatever the number of
	// peers that do not answer: the socket, the resync jobs and READY=1
	// follow, within systemd's start timeout (decision 59).
	auto reconciled = pipes.Reconcile();
	if (!reconciled.ok()) {
		LogError() << reconciled.status().message();
		return kExitFailure;
	}
	for (const std::string &line : *reconciled)
		LogNotice() << "reconcile: " << line;

	std::unique_ptr<NetlinkEventListener> listener;
	if (auto opened = NetlinkEventListener::Open(); opened.ok()) {
		listener = std::move(*opened);
		LogDebug() << "netlink events: listening on port "
		           << listener->port();
	} else {
		LogError() << "netlink events: " << opened.status().message();
		return kExitFailure;
	}

	EventHub hub;
	// Nothing waits for a job but jobs.StopAll() below: when a job ends,
	// the service plans its pipe again (DaemonService).
	ResyncJobs jobs(
	        NetlinkPairJobFactory(),
	        [&hub](const ControlEvent &event) { hub.Publish(event); });
	DaemonService service(pipes, **kernel, &jobs, hub, {}, &probe_kernel);

	// Metrics: the status reply `replipipectl status --json` shows,
	// rendered for Prometheus (metrics_text.h).
	auto render_metrics = [&service]() -> Result<std::string> {
		ControlRequest request;
		request.op = ControlOp::kStatus;
		ControlReply reply = service.Handle(request);
		if (!reply.ok)
			return Status::Error("status: " + reply.error);
		return RenderMetrics(reply.pipes);
	};
	std::unique_ptr<MetricsHttpServer> metrics_server;
	if (opts.metrics_listen) {
		auto started = MetricsHttpServer::Start(*opts.metrics_listen,
		                                        render_metrics);
		if (!started.ok()) {
			LogError() << started.status().message();
			return kExitFailure;
		}
		metrics_server = std::move(*started);
		LogInfo() << "metrics at http://" << opts.metrics_listen->text
		          << "/metrics";
	}
	MetricsTextfile textfile(opts.metrics_textfile, render_metrics);
	// Written once before the control socket opens and the first refresh
	// starts resync jobs: a start that ends here returns at once, not
	// after waiting for jobs without bound (~ResyncJobs()).
	if (!textfile.Write().ok()) {
		LogError() << "--metrics-textfile " << opts.metrics_textfile
		           << " cannot be written (see above); stopping";
		return kExitConfig;
	}

	// Signals arrive on a signalfd; they were blocked before any thread.
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	UniqueFd signal_fd(
	        ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK));
	if (!signal_fd.valid()) {
		LogError() << "signalfd: " << std::strerror(errno);
		return kExitFailure;
	}

	ControlServerOptions server_options;
	server_options.socket_path = opts.socket_path;
	auto server = ControlServer::Start(
	        server_options,
	        [&service](const ControlRequest &request) {
		        return service.Handle(request);
	        },
	        &hub);
	if (!server.ok()) {
		LogError() << "control socket: " << server.status().message();
		return kExitFailure;
	}
	LogInfo() << "listening on " << opts.socket_path;

	service.RefreshAll();
	Notifier notifier;
	notifier.Ready(DaemonService::StatusText(service.Counts()));
	detacher.Ready();
	LogNotice() << "ready: " << DaemonService::StatusText(service.Counts());

	const milliseconds probe_every{uint64_t{opts.probe_interval_s} * 1000};
	auto next_tick = steady_clock::now() + kTick;
	auto next_probe = steady_clock::now() + probe_every;
	// A signal stops the daemon with 0; a main loop that cannot go on
	// with 1, so that systemd (Restart=on-failure) starts it again.
	int exit_status = kExitOk;
	for (;;) {
		auto wake = next_tick;
		if (probe_every.count() && next_probe < wake)
			wake = next_probe;
		auto left = std::chrono::duration_cast<milliseconds>(
		        wake - steady_clock::now());
		pollfd pfds[3] = {{signal_fd.get(), POLLIN, 0},
		                  {listener ? listener->fd() : -1, POLLIN, 0},
		                  {watch ? watch->fd() : -1, POLLIN, 0}};
		int ready = ::poll(
		        pfds, 3,
		        left.count() > 0 ? static_cast<int>(left.count()) : 0);
		const int poll_errno = errno;
		if (ready < 0 && poll_errno != EINTR) {
			LogError() << "main loop: poll of the signalfd and the "
			              "kernel's netlink sockets: "
			           << std::strerror(poll_errno)
			           << "; stopping with exit status "
			           << kExitFailure;
			exit_status = kExitFailure;
			break;
		}
		if (ready > 0 && (pfds[0].revents & POLLIN)) {
			signalfd_siginfo info{};
			if (::read(signal_fd.get(), &info, sizeof(info)) ==
			    sizeof(info)) {
				if (info.ssi_signo == SIGHUP) {
					LogNotice() << "SIGHUP: re-reading the "
					               "kernel's state";
					service.RefreshAll();
				} else {
					LogNotice()
					        << "signal "
					        << strsignal(static_cast<int>(
					                   info.ssi_signo))
					        << ": shutting down";
					break;
				}
			}
		}
		// Before the kernel's events: those of a module that went are
		// moot, and its successor's never reach the old socket.
		bool look = steady_clock::now() >= next_tick;
		if (ready > 0 && watch &&
		    (pfds[2].revents & (POLLIN | POLLERR))) {
			// Looks after an announcement about the family (or
			// lost ones) only: the removal of its groups comes
			// before that of the family, and the look-up would
			// then race the removal; other families' are none
			// of ours.
			auto changes = watch->Read();
			for (const FamilyEvent &change : changes.events) {
				LogFamilyEvent(change, &family);
				look = true;
			}
			if (!changes.receive_error.ok()) {
				// Not read again: a socket that fails keeps
				// polling readable, and the loop would spin.
				LogWarning()
				        << "kernel: "
				        << changes.receive_error.message()
				        << "; no longer following the "
				           "announcements: an unload or "
				           "reload of the module is found by "
				           "the check every "
				        << kTick.count() / 1000 << " s";
				watch.reset();
			}
		}
		if (look) {
			if (auto gone = family.Look()) {
				exit_status = StopForFamily(*gone);
				break;
			}
		}
		if (ready > 0 && listener &&
		    (pfds[1].revents & (POLLIN | POLLERR)))
			ReadKernelEvents(listener, service);
		if (probe_every.count() && steady_clock::now() >= next_probe) {
			// On the service's probe thread: this loop keeps
			// serving signals and events meanwhile. A probe
			// still going skips this turn.
			if (!service.RequestProbe())
				LogDebug() << "probe: the previous one is "
				              "still going";
			next_probe = steady_clock::now() + probe_every;
		}
		if (steady_clock::now() >= next_tick) {
			if (!listener)
				ReopenKernelEvents(listener);
			service.RefreshAll();
			notifier.Status(
			        DaemonService::StatusText(service.Counts()));
			(void)textfile.Write();
			next_tick = steady_clock::now() + kTick;
		}
	}

	notifier.Stopping();
	// The server waits for the calls in progress: a resume of many dead
	// targets stops after the probes under way (5 s at most).
	service.BeginShutdown();
	// No more background connections to peers left by the reconcile; the
	// one in progress, if any, ends at the cancel below. Before it, so
	// that such a connection, failed by the cancel, is not taken for a
	// peer that does not answer and acted on.
	pipes.BeginShutdown();
	// Before anything waits for the work in progress (the two calls above
	// only set flags): an iSCSI login to a dead peer (login_bound, 30 s,
	// then a logout of up to 15 s) would hold the stop past
	// TimeoutStopSec=30s, and systemd's SIGKILL would cut short whatever
	// came after it. Those calls now fail at once as "stopped"; a session
	// such a login made may stay logged in (IscsiSessions::Attach says
	// what the next start does with it).
	iscsi_runner.Cancel();
	if (metrics_server)
		metrics_server->Stop();
	textfile.Remove();
	(*server)->Stop();
	// No call can change the store now. A failed save whose old content
	// could not be written back left the file holding a change its caller
	// was told failed, which the next start would apply; the periodic
	// refresh writes it again, and so does a stop, as the last chance.
	if (Status st = pipes.RewriteStaleStore(); !st.ok())
		LogError()
		        << "stopping with a store that may hold a change that "
		           "failed: "
		        << st.message();
	// A job drains its requests before it ends, and a target that never
	// completes one (a suspended dm device, multipath queue_if_no_path)
	// would hold the stop until systemd kills us (TimeoutStopSec=30s).
	if (!jobs.StopAllWithin(kJobsStopBound)) {
		LogWarning() << "stopped with resync jobs still waiting for "
		                "their targets; their claims end with the "
		                "process, the regions stay dirty";
		// Their threads use what this frame holds: no destructors.
		std::_Exit(exit_status);
	}
	LogNotice() << "stopped";
	return exit_status;
}

} // namespace
} // namespace replipipe

int main(int argc, char **argv)
{
	using namespace replipipe;
	int exit_code = 0;
	auto opts = ParseArgs(argc, argv, &exit_code);
	if (!opts)
		return exit_code;
	SetLogLevel(opts->log_level);

	// Before any thread: block the signals the main loop reads from a
	// signalfd, so that no other thread takes them; a client that goes
	// away must not kill us with SIGPIPE.
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, nullptr);
	signal(SIGPIPE, SIG_IGN);

	Detacher detacher;
	if (!opts->foreground)
		detacher.Detach();
	// A failing Run() exits, which closes the pipe: the detached parent
	// then reports the child's exit status.
	return Run(*opts, detacher);
}
