#include "iscsi_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>

extern char **environ;

namespace replipipe
{
namespace
{

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kOutputKept = 65536;
// Without an eventfd, how often a Run looks whether it was cancelled.
constexpr int kCancelPollMs = 100;
// Without a pidfd, how often a Run that read its child's EOF looks
// whether the child has exited.
constexpr int kExitPollMs = 10;

Status Stopped(const std::string &program)
{
	return Status::Error("run " + program + ": " + kStoppingReason,
	                     ECANCELED);
}

// A pidfd of the child, readable once it has exited: so that waiting for
// the exit is bounded and cancellable like the reading. -1 when the kernel
// has none (before 5.3); the caller then polls waitpid().
int OpenPidFd(pid_t pid)
{
#ifdef SYS_pidfd_open
	return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

// The child of one Run, owned by that Run's thread alone. It is signalled
// only while not reaped (a zombie keeps its pid), so a recycled pid is never
// hit; and it is killed and reaped on every way out of Run, so no zombie
// and no child outlives the call.
class Child final
{
public:
	explicit Child(pid_t pid) : pid_(pid) {}
	~Child()
	{
		Kill();
		Reap();
	}
	Child(const Child &) = delete;
	Child &operator=(const Child &) = delete;

	bool reaped() const { return reaped_; }
	// The wait status, when it is known.
	bool known() const { return known_; }
	int status() const { return status_; }

	void Kill()
	{
		if (!reaped_)
			::kill(pid_, SIGKILL);
	}
	void TryReap() { Wait(WNOHANG); }
	void Reap() { Wait(0); }

private:
	void Wait(int flags)
	{
		if (reaped_)
			return;
		pid_t w;
		do {
			w = ::waitpid(pid_, &status_, flags);
		} while (w < 0 && errno == EINTR);
		if (w == pid_) {
			reaped_ = known_ = true;
		} else if (w < 0) {
			// ECHILD: reaped behind our back (SIGCHLD ignored);
			// the pid may be anyone's now, never signal it.
			reaped_ = true;
		}
	}

	const pid_t pid_;
	bool reaped_ = false;
	bool known_ = false;
	int status_ = 0;
};

} // namespace

SystemCommandRunner::SystemCommandRunner()
    : wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
{
}

void SystemCommandRunner::Cancel()
{
	// The flag first: a Run woken by the eventfd must find it set.
	cancelled_.store(true, std::memory_order_release);
	if (wake_.valid()) {
		const uint64_t one = 1;
		(void)!::write(wake_.get(), &one, sizeof(one));
	}
}

Result<CommandResult>
SystemCommandRunner::Run(const std::vector<std::string> &argv,
                         std::chrono::milliseconds bound)
{
	if (argv.empty())
		return Status::Error("no command", EINVAL);
	// A Cancel() between this check and the spawn is caught at the top
	// of the loop below, before any wait: that child is killed at once.
	if (Cancelled())
		return Stopped(argv[0]);
	int fds[2];
	if (::pipe2(fds, O_CLOEXEC) != 0)
		return Status::FromErrno("pipe", errno);
	UniqueFd rd(fds[0]), wr(fds[1]);

	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
	posix_spawn_file_actions_adddup2(&fa, wr.get(), 2);
	posix_spawnattr_t attr;
	posix_spawnattr_init(&attr);
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	// The daemon blocks SIGTERM etc. for its signalfd: the child must
	// not inherit that mask, nor ignored signals.
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
	                                        POSIX_SPAWN_SETSIGDEF);

	std::vector<char *> args;
	for (const std::string &a : argv)
		args.push_back(const_cast<char *>(a.c_str()));
	args.push_back(nullptr);
	pid_t pid = -1;
	int rc =
	        ::posix_spawnp(&pid, args[0], &fa, &attr, args.data(), environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (rc != 0)
		return Status::FromErrno("run " + argv[0], rc);
	wr.Reset();
	Child child(pid);
	UniqueFd exited(OpenPidFd(pid));

	// Until both the output's EOF and the exit: a child that closes its
	// output and lingers is bounded too.
	CommandResult result;
	const auto deadline = Clock::now() + bound;
	bool eof = false;
	while (!eof || !child.reaped()) {
		if (Cancelled())
			return Stopped(argv[0]); // ~Child kills and reaps
		auto left = std::chrono::duration_cast<milliseconds>(
		        deadline - Clock::now());
		if (left.count() <= 0) {
			result.timed_out = true;
			break;
		}
		int wait_ms = static_cast<int>(
		        std::min<milliseconds::rep>(left.count(), INT_MAX));
		if (!wake_.valid())
			wait_ms = std::min(wait_ms, kCancelPollMs);
		if (eof && !exited.valid())
			wait_ms = std::min(wait_ms, kExitPollMs);
		pollfd p[3] = {
		        {eof ? -1 : rd.get(), POLLIN, 0},
		        {child.reaped() ? -1 : exited.get(), POLLIN, 0},
		        {wake_.get(), POLLIN, 0},
		};
		int n = ::poll(p, 3, wait_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Status::FromErrno("run " + argv[0] + ": poll",
			                         errno);
		if (p[0].revents) {
			char buf[4096];
			ssize_t got = ::read(rd.get(), buf, sizeof(buf));
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				eof = true;
			else if (result.output.size() < kOutputKept)
				result.output.append(buf,
				                     static_cast<size_t>(got));
		}
		if (eof || p[1].revents)
			child.TryReap();
	}
	if (result.timed_out)
		child.Kill();
	child.Reap();
	if (child.known()) {
		const int status = child.status();
		if (WIFEXITED(status))
			result.exit_code = WEXITSTATUS(status);
		else if (WIFSIGNALED(status))
			result.exit_code = 128 + WTERMSIG(status);
	}
	// exec failed in the child (posix_spawnp reports it as 127 on glibc
	// when the program is missing).
	if (!result.timed_out && result.exit_code == 127 &&
	    result.output.empty())
		return Status::Error("run " + argv[0] + ": not found in PATH",
		                     ENOENT);
	return result;
}

} // namespace replipipe
