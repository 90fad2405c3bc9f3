// IscsiSessions: establishes, finds and ends open-iscsi sessions for
// iscsi:// target endpoints (docs/iscsi.md).
//
// Attach(url), bounded by options.login_bound as a whole:
//   1. a session to (portal, IQN) already in sysfs is used as it is;
//   2. otherwise: discovery (sendtargets) on the portal, which must offer
//      the IQN; the node record is set up (node.startup manual, the
//      replacement timeout, CHAP from <chap_dir>/<iqn> when that file
//      exists); login;
//   3. the session's SCSI host is rescanned (synchronous), the LUN must
//      exist, its disk is found in sysfs and its /dev node must be there
//      with the same device number; the disk must not be write-protected.
// A failure after this call logged in logs out again: a failed Attach
// leaves no session it made, except when the runner was cancelled (the
// daemon stops): then it fails at once with ECANCELED, and a session its
// login made stays (see Attach in the .cc). The size and exclusivity
// checks are the pair verification's (endpoint_check.h), done by the
// caller on the device.
//
// CHAP file: <chap_dir>/<iqn>, owned by root, mode 0600 or 0400 (refused
// otherwise), lines "key = value" with keys username, password and, for
// mutual CHAP, username_in, password_in; '#' starts a comment. The secrets
// go to iscsiadm's node record and appear in no message or log.
//
// Thread-safety: all methods may be called concurrently. Attach and Logout
// run their iscsiadm sequences one at a time per portal, in the order they
// were called, and concurrently with those to other portals: one dead peer
// holds up only the calls to its own portal, for up to login_bound in all
// (a call that waited for its turn while a discovery or login there ran
// out of time fails at once: LoginTimedOutSince), and for no time once the
// runner is cancelled (CommandRunner::Cancelled).
// The portal, not (portal, IQN), because a discovery there deletes and
// rewrites the node records of every target the portal offers (see
// SequenceKey in the .cc). A target that reports more portals than the one
// it was asked at gets records at those too; two URLs that name such a
// target by different portals, or a portal by a host name and by its
// address, are not serialized against each other.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include "iscsi_admin.h"
#include "iscsi_runner.h"
#include "iscsi_sysfs.h"
#include "iscsi_url.h"
#include "keyed_lock.h"
#include "status.h"

namespace replipipe
{

inline constexpr const char *kDefaultChapDir = "/etc/replipipe/chap";

struct IscsiOptions {
	std::string sysfs = "/sys";
	std::string dev = "/dev";
	std::string chap_dir = kDefaultChapDir;
	std::string iscsiadm = "iscsiadm";
	// Discovery + login + disk, as a whole (ReturnValue 3 past it).
	std::chrono::milliseconds login_bound{30000};
	// Logout.
	std::chrono::milliseconds logout_bound{15000};
	std::chrono::milliseconds poll_interval{100};
	// node.session.timeo.replacement_timeout: how long I/O to the LUN is
	// held while the session recovers before it fails (and the pair
	// degrades). open-iscsi's default, 120 s, would stall writers.
	int replacement_timeout_s = 10;
	// The owner a CHAP file must have (tests: their own uid).
	uid_t chap_owner = 0;
	// A portal's host name to its numeric addresses (empty: getaddrinfo,
	// ResolveIscsiHost). A name is resolved once per resolve_ttl: status
	// looks sessions up for every iSCSI pair, and a resolver that does not
	// answer takes seconds per look-up. Describe and DevicePath, which the
	// daemon's main loop calls, never wait for it (see IscsiSessions).
	std::function<std::vector<std::string>(const std::string &host)>
	        resolve;
	std::chrono::milliseconds resolve_ttl{30000};
};

struct IscsiAttachment {
	std::string device;     // "/dev/sdb"
	std::string session;    // "session3"
	bool logged_in = false; // this call made the session
};

// What `status` shows for an iscsi:// pair.
struct IscsiPeerState {
	std::string portal; // "127.0.0.1:3260"
	std::string iqn;
	uint32_t lun = 0;
	std::string session; // sysfs state ("LOGGED_IN", "FAILED", ...),
	                     // or "none" when there is no session
	std::string device;  // "/dev/sdb", "" when the LUN has no disk
};

class IscsiSessions
{
public:
	IscsiSessions(CommandRunner &runner, IscsiOptions options = {});

	Result<IscsiAttachment> Attach(const IscsiUrl &url);
	// Tells, in the portal's turn, whether a session is still wanted.
	using KeepSession = std::function<bool(const IscsiSysfsSession &)>;
	// Logs out of the session to (portal, IQN) on the daemon's iface
	// (kIscsiIface), by its sid, unless keep (when set) says it is still
	// wanted: asked in the portal's turn, so an Attach to another LUN of
	// that target called before it has found or made the session by then.
	// Sessions on other ifaces are an administrator's: never ended here,
	// nor asked about. No session is success; *kept (if not null) says
	// whether keep held it. only (when set): that sysfs session
	// ("session3") and no other, whatever sysfs shows for url now: one
	// whose logout failed before (no name is resolved to find it). Sids
	// are not reused before a reboot or a reload of scsi_transport_iscsi;
	// a session of that name to another IQN or port, or on another iface,
	// is not it, and the one owed is gone.
	Status Logout(const IscsiUrl &url, const KeepSession &keep = {},
	              bool *kept = nullptr, const std::string &only = "");
	// sysfs only (cheap; no iscsiadm). Describe and DevicePath never wait
	// for the resolver: the daemon's main loop calls them (status for the
	// metrics textfile, the periodic refresh's device for the resync
	// jobs), and a resolver that does not answer held it for its time-out
	// at each expiry of a portal name's addresses. They match a session by
	// the addresses last resolved, stale or none (not resolved yet, or it
	// failed: no session), and have a refresh run in the background.
	IscsiPeerState Describe(const IscsiUrl &url) const;
	// The LUN's /dev path from sysfs; ENODEV when there is no session or
	// no disk.
	Result<std::string> DevicePath(const IscsiUrl &url) const;
	// Whether the path @device may be the LUN's disk: it is the disk of
	// that LUN in a session to the IQN (through any portal), or there is
	// nothing at that path now (a disk whose session ended is gone from
	// /dev while a holder keeps it open). A device there that is not
	// that LUN's disk: false. sysfs only, like DevicePath.
	bool MayBeDiskOf(const IscsiUrl &url, const std::string &device) const;
	// The session to (portal, IQN), if any. Waits for the resolver when a
	// portal name's addresses are stale: Attach, Logout and the connector
	// decide on its answer whether a session is there (to log in to, to
	// log out of, in use), where a stale answer could log in twice or end
	// a session still wanted.
	std::optional<IscsiSysfsSession> FindSession(const IscsiUrl &url) const;
	// Whether an Attach's discovery at the portal or login to (portal,
	// IQN) ran out of time at or after @since (the peer did not answer
	// it), and none answered since. Not a LUN's own failure after the
	// login (no disk). An Attach that waited for the portal's turn while
	// one did fails at once (ETIMEDOUT) instead of taking its own bound.
	bool
	LoginTimedOutSince(const IscsiUrl &url,
	                   std::chrono::steady_clock::time_point since) const;

	const IscsiOptions &options() const { return options_; }

private:
	Status ApplyChap(const IscsiUrl &url, std::chrono::milliseconds bound);
	Result<IscsiAttachment>
	WaitForDisk(const IscsiUrl &url,
	            std::chrono::steady_clock::time_point deadline);
	// Whether sysfs session @name is gone, or goes within a second
	// (before deadline).
	bool SessionEnds(const std::string &name,
	                 std::chrono::steady_clock::time_point deadline) const;
	// Records (or, @timed_out false, forgets) that a discovery or login
	// (login_timeouts_'s @key) ran out of time now.
	void NoteTimeout(const std::string &key, bool timed_out);
	// Writes "- - -" to the session's SCSI host's scan attribute;
	// false when there is none.
	bool Rescan(const std::string &session) const;

	// How a look-up gets a portal name's addresses when the cache has
	// none fresh.
	enum class Resolve {
		kWait,   // asks the resolver and waits for its answer
		kCached, // the cache's (stale, or none), and a refresh in the
		         // background
	};
	// Which sessions a look-up considers.
	enum class Iface {
		kAny,    // any iface: a session to use, whoever made it
		kDaemon, // kIscsiIface only: the sessions the daemon can have
		         // made, the only ones it may log out of
	};
	// The first session to (portal, IQN), in sid order.
	std::optional<IscsiSysfsSession> Find(const IscsiUrl &url, Resolve how,
	                                      Iface iface = Iface::kAny) const;
	// Whether s, named by an owed logout, is still a session to url's
	// IQN and port on the daemon's iface; EAGAIN when sysfs does not tell.
	Result<bool> IsStillUrls(const IscsiUrl &url,
	                         const IscsiSysfsSession &s) const;
	// "a.b.c.d" / "::1" / host name matches a session's numeric address.
	bool HostMatches(const std::string &url_host,
	                 const std::string &address, Resolve how) const;
	// @host's addresses, from the cache while they are fresh.
	std::vector<std::string> Addresses(const std::string &host,
	                                   Resolve how) const;

	struct ResolveCache; // in the .cc

	IscsiAdmin admin_;
	CommandRunner &runner_; // for Cancelled(); admin_ runs the commands
	const IscsiOptions options_;
	KeyedLock sequences_; // Attach and Logout, keyed by SequenceKey()
	mutable std::mutex login_timeouts_mu_;
	// By "<portal>" (a discovery) and "<portal> <IQN>" (a login): when
	// one there last ran out of time; guarded by login_timeouts_mu_.
	std::map<std::string, std::chrono::steady_clock::time_point>
	        login_timeouts_;
	// Shared with the refreshes in the background, which may outlive this
	// object (getaddrinfo cannot be cancelled).
	const std::shared_ptr<ResolveCache> cache_;
};

// The numeric addresses getaddrinfo gives for @host (none when it fails).
std::vector<std::string> ResolveIscsiHost(const std::string &host);

} // namespace replipipe
