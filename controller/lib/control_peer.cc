#include "control_peer.h"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "control_protocol.h"

namespace replipipe
{
namespace
{

// Buffer size for the *_r look-ups; grown on ERANGE.
long InitialBufferSize(int name)
{
	long size = ::sysconf(name);
	return size > 0 ? size : 16384;
}

} // namespace

PeerDecision DecidePeer(const PeerCredentials &peer,
                        const std::vector<gid_t> &uid_groups,
                        std::optional<gid_t> control_gid, uid_t self_uid)
{
	if (peer.uid == 0 || peer.uid == self_uid)
		return {true, ""};
	if (control_gid) {
		if (peer.gid == *control_gid)
			return {true, ""};
		if (std::find(uid_groups.begin(), uid_groups.end(),
		              *control_gid) != uid_groups.end())
			return {true, ""};
	}
	std::string reason = "permission denied: uid " +
	                     std::to_string(peer.uid) +
	                     " is not root and not in group " + kControlGroup;
	if (!control_gid)
		reason += std::string(" (group ") + kControlGroup +
		          " does not exist on this host)";
	return {false, reason};
}

Result<PeerCredentials> GetPeerCredentials(int fd)
{
	ucred cred{};
	socklen_t len = sizeof(cred);
	if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return Status::FromErrno("getsockopt(SO_PEERCRED)", errno);
	return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

std::optional<gid_t> LookupGroup(const std::string &name)
{
	std::vector<char> buf(
	        static_cast<size_t>(InitialBufferSize(_SC_GETGR_R_SIZE_MAX)));
	for (;;) {
		group grp{};
		group *found = nullptr;
		int rc = ::getgrnam_r(name.c_str(), &grp, buf.data(),
		                      buf.size(), &found);
		if (rc == ERANGE && buf.size() < (1u << 24)) {
			buf.resize(buf.size() * 2);
			continue;
		}
		if (rc != 0 || !found)
			return std::nullopt;
		return found->gr_gid;
	}
}

std::vector<gid_t> GroupsOfUid(uid_t uid)
{
	std::vector<char> buf(
	        static_cast<size_t>(InitialBufferSize(_SC_GETPW_R_SIZE_MAX)));
	passwd pw{};
	passwd *found = nullptr;
	for (;;) {
		int rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found);
		if (rc == ERANGE && buf.size() < (1u << 24)) {
			buf.resize(buf.size() * 2);
			continue;
		}
		if (rc != 0 || !found)
			return {};
		break;
	}
	std::vector<gid_t> groups(64);
	for (;;) {
		int count = static_cast<int>(groups.size());
		if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(),
		                   &count) >= 0) {
			groups.resize(static_cast<size_t>(count));
			return groups;
		}
		// count now holds the number needed.
		if (count <= static_cast<int>(groups.size()) || count > 65536)
			return {};
		groups.resize(static_cast<size_t>(count));
	}
}

PeerDecision CheckPeer(const PeerCredentials &peer)
{
	return DecidePeer(peer, GroupsOfUid(peer.uid),
	                  LookupGroup(kControlGroup), ::geteuid());
}

} // namespace replipipe
