// TargetConnector: how PipeService turns a stored target endpoint that is
// not a local block device (an iscsi:// URL) into one: it establishes the
// connection before the pair is verified and created, maps the stored name
// to the device the kernel mirrors to, and ends connections no pair uses.
// The store keeps the URL; the kernel and the resync jobs get the device.
//
// IscsiTargetConnector is the implementation over IscsiSessions. Sessions
// are per (portal, IQN): several LUNs of one target share one session,
// which is logged out when the last pair using any of them goes. Which
// session a URL uses is what sysfs says (IscsiSessions::FindSession), not
// its text: "localhost" and "127.0.0.1", or two spellings of one IPv6
// address, name one session.
// A session that existed before replipipe first used it and that no stored
// pair used then is the administrator's: it is never logged out (this is
// remembered for the daemon's lifetime only).
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "iscsi_sessions.h"
#include "status.h"

namespace replipipe
{

// A connection Disconnect() could not end.
struct DisconnectFailure {
	std::string target; // as given to Disconnect()
	std::string why;
	std::string session; // the connection it tried to end ("session3")
};

// What DisconnectSession() did.
struct SessionDisconnect {
	enum class Outcome {
		kEnded,  // logged out now, or gone already
		kKept,   // still wanted: see kept_for
		kFailed, // see why
	};
	Outcome outcome = Outcome::kEnded;
	// kKept: the target in use that the session serves; "" when it is
	// kept as the administrator's.
	std::string kept_for;
	std::string why;
};

struct PeerView {
	std::string portal;
	std::string iqn;
	uint32_t lun = 0;
	std::string session; // "LOGGED_IN", "FAILED", ..., "none"
	std::string device;  // "" when the LUN has no disk now
};

class TargetConnector
{
public:
	virtual ~TargetConnector() = default;
	// The target is one this connector handles (stored name form).
	virtual bool Handles(const std::string &target) const = 0;
	// Establishes the connection and returns the local block device.
	// *made: this call made the connection (Disconnect it if the call
	// that needed it fails). in_use: the targets stored pairs use now.
	// Errors: ETIMEDOUT (ReturnValue 3) or another errno (4), never
	// EINVAL.
	virtual Result<std::string>
	Connect(const std::string &target,
	        const std::vector<std::string> &in_use, bool *made) = 0;
	// The device of a connected target, without connecting.
	virtual Result<std::string> DevicePath(const std::string &target) = 0;
	// Whether @device (a path the kernel mirrors a pair to) may be the
	// target's disk while DevicePath() gives none: false when @device is
	// a device now that is no disk of the target (another LUN, a local
	// disk), true when it is gone (a lost session's disk, held open by
	// the kernel's pair) or is the target's.
	virtual bool MayBeDiskOf(const std::string &target,
	                         const std::string &device) = 0;
	// Whether logging in to what the target is reached through (iSCSI:
	// its portal and target name, whatever the LUN) ran out of time at or
	// after @since: the peer did not answer then.
	virtual bool
	LoginTimedOutSince(const std::string &target,
	                   std::chrono::steady_clock::time_point since) const
	{
		(void)target;
		(void)since;
		return false;
	}
	// The connection @session is the daemon's own, whoever made it: one
	// whose logout it owes (decision 102). A Connect() that finds it
	// then does not take it for the administrator's.
	virtual void Adopt(const std::string &session) { (void)session; }
	// The targets stored pairs, pending creates and calls in progress
	// use, asked when a connection is about to end.
	using TargetsInUse = std::function<std::vector<std::string>()>;
	// Ends the connections of targets that no target in in_use() shares.
	// in_use is asked for each connection in the turn that ends it, so a
	// call that took another target of that connection meanwhile keeps
	// it. Returns the targets whose connection it could not end, and
	// why (the caller logs them and tries again).
	virtual std::vector<DisconnectFailure>
	Disconnect(const std::vector<std::string> &targets,
	           const TargetsInUse &in_use) = 0;
	// Ends connection @session (a DisconnectFailure's) of @target, and
	// no other, unless a target in in_use() shares it (asked as above).
	virtual SessionDisconnect
	DisconnectSession(const std::string &target, const std::string &session,
	                  const TargetsInUse &in_use) = 0;
	virtual std::optional<PeerView> Describe(const std::string &target) = 0;
};

class IscsiTargetConnector final : public TargetConnector
{
public:
	explicit IscsiTargetConnector(IscsiSessions &sessions)
	    : sessions_(sessions)
	{
	}
	bool Handles(const std::string &target) const override;
	Result<std::string> Connect(const std::string &target,
	                            const std::vector<std::string> &in_use,
	                            bool *made) override;
	Result<std::string> DevicePath(const std::string &target) override;
	bool MayBeDiskOf(const std::string &target,
	                 const std::string &device) override;
	bool LoginTimedOutSince(
	        const std::string &target,
	        std::chrono::steady_clock::time_point since) const override;
	std::vector<DisconnectFailure>
	Disconnect(const std::vector<std::string> &targets,
	           const TargetsInUse &in_use) override;
	SessionDisconnect
	DisconnectSession(const std::string &target, const std::string &session,
	                  const TargetsInUse &in_use) override;
	std::optional<PeerView> Describe(const std::string &target) override;
	void Adopt(const std::string &session) override;

private:
	// Ends the session of url (only: that sysfs session, see
	// IscsiSessions::Logout) unless it is the administrator's or a
	// target in in_use() shares it; *session (if not null): the session
	// it found.
	SessionDisconnect End(const IscsiUrl &url, const std::string &only,
	                      const TargetsInUse &in_use, std::string *session);
	// The first target in @targets that uses the sysfs session @session.
	std::optional<std::string>
	UsedBy(const std::vector<std::string> &targets,
	       const std::string &session) const;
	bool Uses(const std::vector<std::string> &targets,
	          const std::string &session) const
	{
		return UsedBy(targets, session).has_value();
	}

	IscsiSessions &sessions_;
	std::mutex mu_;
	// Sysfs session names ("session3"; never reused before a reboot),
	// guarded by mu_: made by Connect (ours_), found logged in with no
	// stored pair using them (foreign_).
	std::set<std::string> ours_;
	std::set<std::string> foreign_;
};

} // namespace replipipe
