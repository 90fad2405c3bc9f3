// Who may use the control socket: root, the daemon's own user, and members
// of group `replipipe` (primary or supplementary, as the group database says
// for the peer's uid, or the peer process's own gid). DecidePeer() is the
// policy as a pure function; the rest gathers its inputs.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "status.h"

namespace replipipe
{

struct PeerCredentials {
	pid_t pid = 0;
	uid_t uid = 0;
	gid_t gid = 0;
};

struct PeerDecision {
	bool allowed = false;
	std::string reason; // why not, when !allowed
};

// uid_groups: the groups the group database gives the peer's uid
// (getgrouplist); control_gid: gid of group `replipipe`, nullopt when the
// group does not exist; self_uid: the daemon's effective uid.
PeerDecision DecidePeer(const PeerCredentials &peer,
                        const std::vector<gid_t> &uid_groups,
                        std::optional<gid_t> control_gid, uid_t self_uid);

// SO_PEERCRED of a connected Unix socket.
Result<PeerCredentials> GetPeerCredentials(int fd);

// The gid of a group by name (getgrnam_r); nullopt when there is none.
std::optional<gid_t> LookupGroup(const std::string &name);

// The groups of uid's user (getgrouplist of its name and primary gid).
// Empty when the uid has no passwd entry.
std::vector<gid_t> GroupsOfUid(uid_t uid);

// DecidePeer() with the inputs gathered from the system databases.
PeerDecision CheckPeer(const PeerCredentials &peer);

} // namespace replipipe
