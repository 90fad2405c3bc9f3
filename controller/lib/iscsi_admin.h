// The iscsiadm commands the pipe runs, and what their exit codes mean
// (open-iscsi's include/iscsi_err.h). Building the command lines is kept
// apart from running them so that unit tests check both with a fake
// CommandRunner.
//
// Errors carry an errno that PipeService maps onto ReturnValues:
//   ETIMEDOUT    the bound expired (ReturnValue 3)
//   EHOSTUNREACH portal unreachable / connection refused (4)
//   EACCES       login refused: authentication failed (4)
//   ECONNREFUSED login refused by the target (4)
//   ENOENT       iscsiadm not installed, or no such node record (4)
//   ECANCELED    the runner was cancelled: the daemon is stopping (4)
//   EIO          anything else, with iscsiadm's last line of output (4)
// Never EINVAL: that would read as "invalid parameter".
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "iscsi_runner.h"
#include "iscsi_url.h"
#include "status.h"

namespace replipipe
{

// The open-iscsi iface of every session the daemon makes: its discovery,
// node records, logins and record logouts name it. Without -I, iscsiadm
// acts on the records of every iface: a login also logged in through an
// administrator's other ifaces, and a logout ended their sessions too.
inline constexpr const char *kIscsiIface = "default";

struct DiscoveredTarget {
	std::string portal; // as iscsiadm prints it, without ",tpgt"
	std::string iqn;
};

class IscsiAdmin
{
public:
	using Bound = std::chrono::milliseconds;
	IscsiAdmin(CommandRunner &runner, std::string program = "iscsiadm")
	    : runner_(runner), program_(std::move(program))
	{
	}

	// -m discovery -t sendtargets -p <portal> -I default -o new
	std::vector<std::string> DiscoveryArgs(const IscsiUrl &url) const;
	// -m node -T <iqn> -p <portal> -I default --login / --logout
	std::vector<std::string> LoginArgs(const IscsiUrl &url) const;
	std::vector<std::string> LogoutArgs(const IscsiUrl &url) const;
	// -m session -r <sid> --logout: that one session, whatever its iface
	std::vector<std::string> SessionLogoutArgs(uint32_t sid) const;
	// -m node -T <iqn> -p <portal> -I default -o update -n <key> -v <value>
	std::vector<std::string> UpdateArgs(const IscsiUrl &url,
	                                    const std::string &key,
	                                    const std::string &value) const;

	Result<std::vector<DiscoveredTarget>> Discover(const IscsiUrl &url,
	                                               Bound bound);
	// secret: the value is a credential; it appears in no message.
	Status Update(const IscsiUrl &url, const std::string &key,
	              const std::string &value, Bound bound,
	              bool secret = false);
	// Already logged in is EEXIST: a session this call did not make
	// (another tool's, or one made since the caller looked), which the
	// caller must never log out.
	Status Login(const IscsiUrl &url, Bound bound);
	// Ends the sessions of the record on the daemon's iface. No such
	// session counts as success.
	Status Logout(const IscsiUrl &url, Bound bound);
	// Ends session <sid> only; what names it in messages ("iqn on
	// portal"). ENOENT: iscsiadm found no such session, which it also
	// says when it could not reach iscsid (the caller checks sysfs).
	Status LogoutSession(uint32_t sid, const std::string &what,
	                     Bound bound);

	// "127.0.0.1:3260,1 iqn.x" lines -> targets (other lines ignored).
	static std::vector<DiscoveredTarget>
	ParseDiscovery(const std::string &output);

private:
	Result<CommandResult> Run(const std::vector<std::string> &argv,
	                          Bound bound, const std::string &what);

	CommandRunner &runner_;
	const std::string program_;
};

// exit code of iscsiadm (non-zero) -> Status with the errno above. what
// says what was tried ("login to <url>").
Status IscsiadmError(int exit_code, const std::string &output,
                     const std::string &what);

} // namespace replipipe
