// Running open-iscsi's iscsiadm (or any helper) with a bound, so that the
// iSCSI code can be tested with a fake runner (tests/unit/iscsi_*_test.cc)
// and nothing waits forever for a peer; and cancelling what runs when the
// daemon stops, so that a login to a dead peer (login_bound, 30 s) does not
// hold the stop past systemd's TimeoutStopSec.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "status.h"
#include "unique_fd.h"

namespace replipipe
{

// What a cancelled Run's error says after the program's name, and what the
// iSCSI code says of the steps it gives up because of it.
inline constexpr const char *kStoppingReason =
        "stopped: replipiped is stopping";

struct CommandResult {
	int exit_code = 0;      // 128+N when killed by signal N
	bool timed_out = false; // the bound expired; the child was killed
	std::string output;     // stdout and stderr, interleaved
};

// Thread-safety: implementations must allow concurrent calls.
class CommandRunner
{
public:
	virtual ~CommandRunner() = default;
	// argv[0] is looked up in PATH. An error only when the program could
	// not be started (ENOENT: not installed) or the runner was cancelled
	// (ECANCELED, see Cancelled()); a non-zero exit is a result.
	// Implementations must not log argv, nor put more than argv[0] in a
	// message: it may hold a CHAP secret.
	virtual Result<CommandResult> Run(const std::vector<std::string> &argv,
	                                  std::chrono::milliseconds bound) = 0;
	// True once the runner was cancelled: every Run fails with ECANCELED
	// from then on, and callers that wait for the effects of a command
	// (a disk that appears after a login) stop waiting too.
	virtual bool Cancelled() const { return false; }
};

// posix_spawnp(), stdin from /dev/null, output through a pipe (at most
// 64 KiB kept), SIGKILL when the bound expires or on Cancel().
//
// Cancel() is for the daemon's stop, and for good: there is no undo. It
// kills the children of the Run calls in progress, which then fail with
// ECANCELED ("stopped: replipiped is stopping"), and every later Run fails
// the same way without starting anything. SIGKILL, not SIGTERM first: what
// the children do (an iscsiadm login) is iscsid's to finish or undo, not
// theirs, so a grace period would buy nothing but time the stop does not
// have; and the bound already kills the same way.
//
// Only the Run that spawned a child signals it, and always before it reaps
// it: a pid is never signalled after its zombie was reaped, so a recycled
// pid is never hit. Cancel() therefore does not kill anything itself; it
// sets the flag and makes an eventfd readable (it stays so), which wakes
// every Run out of its poll() at once to kill its child.
//
// Thread-safety: Run and Cancel may be called concurrently from any
// threads.
class SystemCommandRunner final : public CommandRunner
{
public:
	SystemCommandRunner();
	SystemCommandRunner(const SystemCommandRunner &) = delete;
	SystemCommandRunner &operator=(const SystemCommandRunner &) = delete;

	Result<CommandResult> Run(const std::vector<std::string> &argv,
	                          std::chrono::milliseconds bound) override;
	bool Cancelled() const override
	{
		return cancelled_.load(std::memory_order_acquire);
	}
	// Returns at once; the Runs in progress return shortly after (the
	// time for their children to die of SIGKILL and be reaped).
	void Cancel();

private:
	std::atomic<bool> cancelled_{false};
	// Written once by Cancel() and never read: it stays readable, so
	// every poll() on it returns. Invalid when the eventfd could not be
	// made; Run then looks at cancelled_ every kCancelPoll instead.
	UniqueFd wake_;
};

} // namespace replipipe
