#include "iscsi_admin.h"

#include <cctype>
#include <cerrno>
#include <sstream>

namespace replipipe
{
namespace
{

// open-iscsi include/iscsi_err.h
enum : int {
	kErrSessNotFound = 2,
	kErrTrans = 4,
	kErrLogin = 5,
	kErrTransTimeout = 8,
	kErrPduTimeout = 11,
	kErrTransNotFound = 12,
	kErrAccess = 13,
	kErrSessExists = 15,
	kErrFatalLogin = 19,
	kErrIscsidNotConn = 20,
	kErrNoObjsFound = 21,
	kErrSysfsLookup = 22, // -m session -r <sid>: no such session
	kErrLoginAuthFailed = 24,
};

// iscsiadm's reason for a failure: its last line, unless a line says what
// went wrong ("initiator reported error (20 - could not connect to
// iscsid)"), which later lines may follow with what it then did not find.
std::string Reason(const std::string &output)
{
	std::istringstream in(output);
	std::string line, last, reported;
	while (std::getline(in, line)) {
		while (!line.empty() &&
		       std::isspace(static_cast<unsigned char>(line.back())))
			line.pop_back();
		if (!line.empty())
			last = line;
		if (line.find("reported error") != std::string::npos)
			reported = line;
	}
	return reported.empty() ? last : reported;
}

std::string Ms(std::chrono::milliseconds b)
{
	return std::to_string(b.count()) + " ms";
}

} // namespace

Status IscsiadmError(int exit_code, const std::string &output,
                     const std::string &what)
{
	std::string detail = Reason(output);
	std::string tail = " (iscsiadm exit " + std::to_string(exit_code) +
	                   (detail.empty() ? "" : ": " + detail) + ")";
	switch (exit_code) {
	case kErrTrans:
	case kErrTransTimeout:
		return Status::Error(what + ": portal unreachable" + tail,
		                     EHOSTUNREACH);
	case kErrLoginAuthFailed:
		return Status::Error(what +
		                             ": login refused: authentication "
		                             "failed (CHAP)" +
		                             tail,
		                     EACCES);
	case kErrLogin:
	case kErrFatalLogin:
	case kErrAccess:
		return Status::Error(what + ": login refused by the target" +
		                             tail,
		                     ECONNREFUSED);
	case kErrIscsidNotConn:
		return Status::Error(what + ": iscsid is not running" + tail,
		                     EIO);
	case kErrTransNotFound:
		return Status::Error(what +
		                             ": the iscsi_tcp transport is not "
		                             "loaded" +
		                             tail,
		                     ENODEV);
	case kErrNoObjsFound:
		return Status::Error(what + ": no such target or node" + tail,
		                     ENOENT);
	default:
		return Status::Error(what + ": failed" + tail, EIO);
	}
}

// -o new: records only for the targets that have none. Without -o,
// discovery also deletes the portal's records of targets no longer offered
// and writes every offered target's record afresh from iscsid.conf: an
// administrator's settings for the portal's other targets were lost to a
// pair's login.
std::vector<std::string> IscsiAdmin::DiscoveryArgs(const IscsiUrl &url) const
{
	return {program_,     "-m", "discovery", "-t", "sendtargets", "-p",
	        url.Portal(), "-I", kIscsiIface, "-o", "new"};
}

std::vector<std::string> IscsiAdmin::LoginArgs(const IscsiUrl &url) const
{
	return {program_, "-m",         "node", "-T",        url.iqn,
	        "-p",     url.Portal(), "-I",   kIscsiIface, "--login"};
}

std::vector<std::string> IscsiAdmin::LogoutArgs(const IscsiUrl &url) const
{
	return {program_, "-m",         "node", "-T",        url.iqn,
	        "-p",     url.Portal(), "-I",   kIscsiIface, "--logout"};
}

std::vector<std::string> IscsiAdmin::SessionLogoutArgs(uint32_t sid) const
{
	return {program_,  "-m", "session", "-r", std::to_string(sid),
	        "--logout"};
}

std::vector<std::string> IscsiAdmin::UpdateArgs(const IscsiUrl &url,
                                                const std::string &key,
                                                const std::string &value) const
{
	return {program_, "-m",         "node", "-T",        url.iqn,
	        "-p",     url.Portal(), "-I",   kIscsiIface, "-o",
	        "update", "-n",         key,    "-v",        value};
}

Result<CommandResult> IscsiAdmin::Run(const std::vector<std::string> &argv,
                                      Bound bound, const std::string &what)
{
	if (bound.count() <= 0)
		return Status::Error(what + ": no time left", ETIMEDOUT);
	auto r = runner_.Run(argv, bound);
	if (!r.ok()) {
		if (r.status().err() == ENOENT)
			return Status::Error(what + ": " + program_ +
			                             " not found (install "
			                             "open-iscsi)",
			                     ENOENT);
		// Not a peer's failure nor a time-out: the daemon stops
		// (SystemCommandRunner::Cancel), and the caller gives up.
		if (r.status().err() == ECANCELED)
			return Status::Error(what + ": " + kStoppingReason,
			                     ECANCELED);
		return Status::Error(what + ": " + r.status().message(), EIO);
	}
	if (r->timed_out)
		return Status::Error(what + ": not done within " + Ms(bound),
		                     ETIMEDOUT);
	return r;
}

std::vector<DiscoveredTarget>
IscsiAdmin::ParseDiscovery(const std::string &output)
{
	std::vector<DiscoveredTarget> out;
	std::istringstream in(output);
	std::string line;
	while (std::getline(in, line)) {
		std::istringstream words(line);
		std::string portal, iqn, extra;
		if (!(words >> portal >> iqn) || (words >> extra))
			continue;
		size_t comma = portal.rfind(',');
		if (comma == std::string::npos)
			continue;
		portal.resize(comma);
		for (char &c : iqn)
			c = static_cast<char>(
			        std::tolower(static_cast<unsigned char>(c)));
		if (!IsIscsiName(iqn))
			continue;
		out.push_back({portal, iqn});
	}
	return out;
}

Result<std::vector<DiscoveredTarget>> IscsiAdmin::Discover(const IscsiUrl &url,
                                                           Bound bound)
{
	const std::string what = "discovery on portal " + url.Portal();
	auto r = Run(DiscoveryArgs(url), bound, what);
	if (!r.ok())
		return r.status();
	// Discovery reports a portal that never answered (connection
	// refused, no route, retries exhausted) as a PDU time-out.
	if (r->exit_code == kErrPduTimeout)
		return Status::Error(what +
		                             ": portal unreachable (iscsiadm "
		                             "exit 11: " +
		                             Reason(r->output) + ")",
		                     EHOSTUNREACH);
	if (r->exit_code != 0)
		return IscsiadmError(r->exit_code, r->output, what);
	return ParseDiscovery(r->output);
}

Status IscsiAdmin::Update(const IscsiUrl &url, const std::string &key,
                          const std::string &value, Bound bound, bool secret)
{
	const std::string what = "set " + key + (secret ? "" : " = " + value) +
	                         " for " + url.iqn + " on " + url.Portal();
	auto r = Run(UpdateArgs(url, key, value), bound, what);
	if (!r.ok())
		return r.status();
	if (r->exit_code != 0)
		// iscsiadm does not echo values, but do not show a secret's
		// output at all.
		return IscsiadmError(r->exit_code, secret ? "" : r->output,
		                     what);
	return Status();
}

Status IscsiAdmin::Login(const IscsiUrl &url, Bound bound)
{
	const std::string what = "login to " + url.iqn + " on " + url.Portal();
	auto r = Run(LoginArgs(url), bound, what);
	if (!r.ok())
		return r.status();
	if (r->exit_code == kErrSessExists)
		return Status::Error(what + ": a session to it exists already",
		                     EEXIST);
	if (r->exit_code != 0)
		return IscsiadmError(r->exit_code, r->output, what);
	return Status();
}

Status IscsiAdmin::Logout(const IscsiUrl &url, Bound bound)
{
	const std::string what =
	        "logout from " + url.iqn + " on " + url.Portal();
	auto r = Run(LogoutArgs(url), bound, what);
	if (!r.ok())
		return r.status();
	if (r->exit_code != 0 && r->exit_code != kErrNoObjsFound &&
	    r->exit_code != kErrSessNotFound)
		return IscsiadmError(r->exit_code, r->output, what);
	return Status();
}

Status IscsiAdmin::LogoutSession(uint32_t sid, const std::string &what,
                                 Bound bound)
{
	const std::string full =
	        "logout of session " + std::to_string(sid) + " (" + what + ")";
	auto r = Run(SessionLogoutArgs(sid), bound, full);
	if (!r.ok())
		return r.status();
	if (r->exit_code == 0)
		return Status();
	// No such session, iscsiadm says; also, seen with open-iscsi 2.1.8,
	// when it could not reach iscsid and the session is still there
	// ("initiator reported error (20 ...)", then "No matching sessions
	// found", exit 21). The caller looks in sysfs.
	if (r->exit_code == kErrNoObjsFound ||
	    r->exit_code == kErrSessNotFound ||
	    r->exit_code == kErrSysfsLookup) {
		const std::string said = Reason(r->output);
		return Status::Error(
		        full + ": iscsiadm found no such session (exit " +
		                std::to_string(r->exit_code) +
		                (said.empty() ? "" : ": " + said) + ")",
		        ENOENT);
	}
	return IscsiadmError(r->exit_code, r->output, full);
}

} // namespace replipipe
