// NetlinkSocket: one generic netlink socket bound to the "replipipe" family.
//
// Owns an nl_sock (libnl-genl-3). Open() connects, resolves the family and
// its "events" multicast group, and enables extended acks so that a kernel
// rejection comes back with the kernel's own message (NL_SET_ERR_MSG).
// Request() sends one request and waits, bounded by the receive timeout, for
// its complete answer: replies, then an ack, an error or the end of a dump.
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
	// family whose version is not @version is EPROTONOSUPPORT.
	static Result<std::unique_ptr<NetlinkSocket>>
	OpenFamily(const std::string &family, const std::string &group,
	           uint8_t version, std::chrono::milliseconds timeout);
	~NetlinkSocket();
	NetlinkSocket(const NetlinkSocket &) = delete;
	NetlinkSocket &operator=(const NetlinkSocket &) = delete;

	int family_id() const { return family_id_; }
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
	// answer came within timeout(), or a local socket error.
	Status Request(NlMsgPtr msg, const ReplyHandler &on_reply = {});

	// Subscribes to the events group and stops sequence checking (the
	// socket then only listens). Makes the fd non-blocking.
	Status JoinEvents();

private:
	NetlinkSocket() = default;

	nl_sock *sock_ = nullptr;
	int family_id_ = 0;
	uint32_t family_version_ = 0;
	int events_group_ = 0;
	uint8_t request_version_ = 0; // genl header version of requests
	std::chrono::milliseconds timeout_ = kNetlinkDefaultTimeout;
};

} // namespace replipipe
