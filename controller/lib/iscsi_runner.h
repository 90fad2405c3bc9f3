// Running open-iscsi's iscsiadm (or any helper) with a bound, so that the
// iSCSI code can be tested with a fake runner (tests/unit/iscsi_*_test.cc)
// and nothing waits forever for a peer.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "status.h"

namespace replipipe
{

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
	// not be started (ENOENT: not installed); a non-zero exit is a result.
	// Implementations must not log argv: it may hold a CHAP secret.
	virtual Result<CommandResult> Run(const std::vector<std::string> &argv,
	                                  std::chrono::milliseconds bound) = 0;
};

// posix_spawnp(), stdin from /dev/null, output through a pipe (at most
// 64 KiB kept), SIGKILL when the bound expires.
class SystemCommandRunner final : public CommandRunner
{
public:
	Result<CommandResult> Run(const std::vector<std::string> &argv,
	                          std::chrono::milliseconds bound) override;
};

} // namespace replipipe
