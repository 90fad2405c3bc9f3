#include "iscsi_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "unique_fd.h"

extern char **environ;

namespace replipipe
{

Result<CommandResult>
SystemCommandRunner::Run(const std::vector<std::string> &argv,
                         std::chrono::milliseconds bound)
{
	using Clock = std::chrono::steady_clock;
	if (argv.empty())
		return Status::Error("no command", EINVAL);
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

	CommandResult result;
	const auto deadline = Clock::now() + bound;
	bool eof = false;
	while (!eof) {
		auto left =
		        std::chrono::duration_cast<std::chrono::milliseconds>(
		                deadline - Clock::now());
		if (left.count() <= 0) {
			result.timed_out = true;
			::kill(pid, SIGKILL);
			break;
		}
		pollfd p = {rd.get(), POLLIN, 0};
		int n = ::poll(&p, 1, static_cast<int>(left.count()));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		if (n == 0)
			continue;
		char buf[4096];
		ssize_t got = ::read(rd.get(), buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			eof = true;
			break;
		}
		if (result.output.size() < 65536)
			result.output.append(buf, static_cast<size_t>(got));
	}
	int status = 0;
	pid_t w;
	do {
		w = ::waitpid(pid, &status, 0);
	} while (w < 0 && errno == EINTR);
	if (w == pid) {
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
