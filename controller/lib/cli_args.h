// replipipectl's command line: parsing into a ControlRequest plus the CLI's
// own settings, and the exit-status contract (shared DESIGN.md, "The CLI
// contract"; docs/cli.md). Kept out of the executable so that unit tests
// can drive it.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "control_protocol.h"
#include "method.h"
#include "status.h"

namespace boost::program_options
{
class options_description;
} // namespace boost::program_options

namespace replipipe
{

// Exit statuses of replipipectl.
inline constexpr int kExitOk = 0;
// 1..5: the ReturnValue of the method (or the failure that maps onto it).
inline constexpr int kExitWaitTimeout = 3;   // `wait` gave up
inline constexpr int kExitBusy = 16;         // ReturnValue 4096
inline constexpr int kExitUsage = 64;        // EX_USAGE
inline constexpr int kExitNoInput = 66;      // EX_NOINPUT: --goal-file
inline constexpr int kExitUnavailable = 69;  // EX_UNAVAILABLE: no daemon
inline constexpr int kExitProtocol = 76;     // EX_PROTOCOL: bad reply
inline constexpr int kExitNoPermission = 77; // EX_NOPERM: not root/group

// How long one call to replipiped may take, connect, request and reply
// together, for every command but `wait` (whose status requests have
// bounds of their own, within this one); then it exits 69. Past the
// longest the daemon itself takes before it answers, which is what it
// waits for with bounds of its own: a create-or-modify waits up to 5 s for
// the pipe (Busy, PipeServiceOptions::busy_timeout), up to 30 s for the
// iSCSI login and rescan of its new pairs (IscsiSessionsOptions), up to
// 10 s for each of its netlink requests (kNetlinkDefaultTimeout: the pipe
// as the kernel has it, the change, and the undo of a change the kernel
// did not answer) and up to 15 s for an iSCSI logout: 80 s. The rest is
// margin for a loaded host. Longer calls (pause or resume of a dozen
// pairs whose targets do not answer, 10 s each) need kCallTimeoutEnv.
inline constexpr double kCallTimeoutSeconds = 120;
// A create-or-modify logs in to its new pairs' iSCSI targets one after
// another, each within the daemon's login bound
// (IscsiSessionsOptions::login_bound): its call's bound grows by that
// much for each iSCSI target past the first (CallTimeoutFor()).
inline constexpr double kIscsiLoginSeconds = 30;
// Seconds that replace kCallTimeoutSeconds (docs/cli.md).
inline constexpr const char *kCallTimeoutEnv = "REPLIPIPE_CALL_TIMEOUT";

enum class CliCommand {
	kCreateOrModify,
	kList,
	kStatus,
	kWait,
	kDelete,
	kEvents,
	kPause,
	kResume,
};

struct CliInvocation {
	std::string socket_path = kDefaultSocketPath;
	bool json = false;
	CliCommand command = CliCommand::kList;
	// What to send (for wait: the status request that is polled).
	ControlRequest request;
	// create-or-modify --goal-file: read by the caller into
	// request.call.goal (LoadGoalFile()).
	std::optional<std::string> goal_file;
	// status --watch
	bool watch = false;
	double interval_seconds = 1.0;
	// wait
	std::string wait_state = "InSync";
	std::optional<double> timeout_seconds; // nullopt: wait forever
	// The bound of one call to the daemon (CallTimeoutFor(request), or
	// $REPLIPIPE_CALL_TIMEOUT).
	double call_timeout_seconds = kCallTimeoutSeconds;
};

struct CliParse {
	enum class Kind { kRun, kHelp, kVersion, kUsageError };
	Kind kind = Kind::kUsageError;
	std::string text; // help text, or the usage error
	// A usage error's second line, where to read more: printed after
	// text on stderr, left out of the --json document (one message).
	std::string hint;
	CliInvocation invocation;
};

// Whether args ask for --json output (before or after the command). Also for
// a command line that does not parse: its usage error is printed as JSON
// then, as docs/cli.md promises scripts.
bool JsonRequested(const std::vector<std::string> &args);

// args: the arguments after the program name. env_socket: the value of
// REPLIPIPE_SOCKET (nullptr when unset); --socket wins over it.
// env_call_timeout: the value of REPLIPIPE_CALL_TIMEOUT (nullptr or empty
// when unset), seconds above 0 and at most a year as a plain decimal number
// (digits, at most one '.'), else a usage error.
CliParse ParseCli(const std::vector<std::string> &args, const char *env_socket,
                  const char *env_call_timeout = nullptr);

// The words of args that are neither options of desc nor their values
// (all words after "--"), in order; scanning stops at a word that is no
// option of desc (boost_po reports it). An error (a usage error) for an
// option that needs a value written as a word of its own and followed by
// an option of desc ("--x...", "--x=...", or a short option such as
// "-h"): boost_po's parser would take that option as the value, so that
// `--name --clear-pairs` (an unquoted empty variable) renames the pipe to
// "--clear-pairs" and clears nothing. Such a value is written --opt=value.
// Shared by replipipectl and replipiped.
Result<std::vector<std::string>>
PositionalWords(const std::vector<std::string> &args,
                const boost::program_options::options_description &desc);

// The longest path a Unix socket address holds (sun_path less its NUL).
size_t MaxSocketPathBytes();
// A usage error for a socket path that cannot be one (empty or longer than
// MaxSocketPathBytes()), naming it and what (the option or variable).
std::optional<std::string> CheckSocketPath(const std::string &what,
                                           const std::string &path);

// Splits a --pair value SRC=TGT at the first '=' that is outside double
// quotes and not followed (after blanks) by '"' (the '=' of a CIM reference's
// key="value" is followed by a quote), so that either side may be a
// CIM_ProtocolEndpoint reference:
//   replipipe_0/vol1=/dev/sdb
//   CIM_ProtocolEndpoint.Name="replipipe_0/vol1"=/dev/sdb
//   replipipe_0/vol1=CIM_ProtocolEndpoint.Name="/dev/sdb"
Result<std::pair<std::string, std::string>> SplitPairArg(std::string_view arg);

// The bound of one call to the daemon with @request: kCallTimeoutSeconds,
// plus kIscsiLoginSeconds for each target endpoint of a create-or-modify
// past the first that names an iSCSI target ("iscsi://", also inside a
// reference). Local targets need no login: a pipe of many of them keeps
// the plain bound, which is what a daemon that never answers costs.
double CallTimeoutFor(const ControlRequest &request);

// The `wait` target state as the daemon spells it ("insync" -> "InSync");
// nullopt when it is not one of Syncing, InSync, Degraded, Paused.
std::optional<std::string> CanonicalPairState(std::string_view text);

// Reads --goal-file ("-" is stdin). Errors name the file (quoted) and carry the
// errno of open(2) or read(2) (exit 66); err() EILSEQ when the text is not
// UTF-8 and EFBIG when it is longer than the control protocol's line
// (kMaxLineBytes; reading stops there): usage errors, exit 64, not 66.
Result<std::string> LoadGoalFile(const std::string &path);

int ExitCodeForReturnValue(ReturnValue value);
// The exit status of a reply: 0 when ok, else from ReturnValue or code.
int ExitCodeForReply(const ControlReply &reply);

// The help of the whole tool (no command) and of one command.
std::string GlobalHelp();
std::string CommandHelp(CliCommand command);

} // namespace replipipe
