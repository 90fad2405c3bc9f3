// NetlinkSocket: one generic netlink socket bound to the "replipipe" family.
//
// Owns an nl_sock (libnl-genl-3). Open() connects, resolves the family and
// its "events" multicast group, and enables extended acks so that a kernel
// rejection comes back with the kernel's own message (NL_SET_ERR_MSG).
// Request() sends one request and waits, bounded by the receive timeout, for
// its complete answer: replies, then an ack, an error or the end of a dump.
//
// A socket keeps the family id it resolved at Open(). The kernel gives a
// family a new id at each registration (cyclically), so once the module is
// unloaded, or unloaded and loaded again, every request of the socket goes to
// an id that no family has: Request() then fails with IsFamilyGone() instead
// of the bare ENOENT genetlink answers, which would read as "no such pipe".
// Nothing reopens the socket: the new module is empty, and what it must get
// is the caller's business (replipiped exits and a start reconciles,
// docs/decisions.md, 60).
//
// Thread-safety: none. A socket is used by one thread at a time; classes that
// share one (NetlinkKernel) serialize with their own mutex.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "status.h"

struct nl_sock;
struct nl_msg;
struct nlmsghdr;

namespace replipipe
{

// The message Open() fails with when the family is not registered; its
// Status has err() == ENOENT.
inline constexpr const char *kModuleMissingMessage =
        "replipipe kernel module not loaded (generic netlink family "
        "'replipipe' not found)";
inline constexpr std::chrono::milliseconds kNetlinkDefaultTimeout{10000};

// True for the Status Open() returns when the module is not loaded.
bool IsModuleMissing(const Status &status);

// The error of a request to family @family, opened as id @old_id, when the
// family is no longer registered under that id: @now_id is its id now, 0
// when no family of that name is registered. err() is EIDRM. For
// "replipipe": "the replipipe kernel module was unloaded (generic netlink
// family 'replipipe' id 27 is gone)", or "... was reloaded (generic netlink
// family 'replipipe' id 27 is gone, the module now has id 28)".
Status FamilyGoneError(const std::string &family, int old_id, int now_id);
// True for a FamilyGoneError(), with or without context prefixed.
bool IsFamilyGone(const Status &status);

// The id the kernel has now for the generic netlink family @family, from
// nlctrl's list of families on a socket of its own (0.1 ms for 15 families:
// cheap enough for a periodic check). ENOENT when no family of that name is
// registered. Unlike Open(), it never makes the kernel load the module that
// provides the family.
Result<int>
ResolveFamilyId(const std::string &family,
                std::chrono::milliseconds timeout = kNetlinkDefaultTimeout);

struct NlMsgFree {
	void operator()(nl_msg *msg) const;
};
using NlMsgPtr = std::unique_ptr<nl_msg, NlMsgFree>;

class NetlinkSocket
{
public:
	static Result<std::unique_ptr<NetlinkSocket>>
	Open(std::chrono::milliseconds timeout = kNetlinkDefaultTimeout);
	// The same for any genl family and group (tests use "nlctrl"). A
	// missing family is ENOENT, kModuleMissingMessage for "replipipe"; a
	// family whose version is not @version is EPROTONOSUPPORT (@version 0:
	// any version, for a socket that only listens).
	static Result<std::unique_ptr<NetlinkSocket>>
	OpenFamily(const std::string &family, const std::string &group,
	           uint8_t version, std::chrono::milliseconds timeout);
	~NetlinkSocket();
	NetlinkSocket(const NetlinkSocket &) = delete;
	NetlinkSocket &operator=(const NetlinkSocket &) = delete;

	int family_id() const { return family_id_; }
	const std::string &family_name() const { return family_name_; }
	// The family's version as the kernel registered it (0 if unknown).
	uint32_t family_version() const { return family_version_; }
	// Multicast group id of "events" (0 if the kernel has none).
	int events_group() const { return events_group_; }
	int fd() const;
	nl_sock *get() const { return sock_; }

	// Bound on the wait for a complete answer (also SO_RCVTIMEO).
	Status SetTimeout(std::chrono::milliseconds timeout);
	std::chrono::milliseconds timeout() const { return timeout_; }

	// A request for cmd of this family; flags add to NLM_F_REQUEST
	// (e.g. NLM_F_DUMP). Never null.
	NlMsgPtr NewRequest(uint8_t cmd, int flags = 0) const;

	// Called for every reply message (not acks, errors or NLMSG_DONE).
	// A failed Status stops the request and is returned (after the rest
	// of the answer is read, so the socket stays usable).
	using ReplyHandler = std::function<Status(nlmsghdr *)>;
	// Sends msg and waits for the whole answer. Errors: the kernel's errno
	// and extack text ("<extack>: <strerror>"), ETIMEDOUT when no complete
	// answer came within timeout(), a local socket error, or
	// IsFamilyGone() when genetlink found no family under family_id().
	Status Request(NlMsgPtr msg, const ReplyHandler &on_reply = {});

	// Subscribes to the events group and stops sequence checking (the
	// socket then only listens). Makes the fd non-blocking.
	Status JoinEvents();

	// Tests: as if the family had had @id when the socket was opened (a
	// module reloaded since has another).
	void SetFamilyIdForTest(int id) { family_id_ = id; }

private:
	NetlinkSocket() = default;

	// A bare ENOENT to a request (genetlink's, not the family's: ours
	// always says why): @status, or FamilyGoneError() when family_id_ no
	// longer names family_name_.
	Status UnlessFamilyGone(Status status) const;

	nl_sock *sock_ = nullptr;
	std::string family_name_;
	int family_id_ = 0;
	uint32_t family_version_ = 0;
	int events_group_ = 0;
	uint8_t request_version_ = 0; // genl header version of requests
	std::chrono::milliseconds timeout_ = kNetlinkDefaultTimeout;
};

} // namespace replipipe
