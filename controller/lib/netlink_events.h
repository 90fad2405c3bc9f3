// NetlinkEventListener: the kernel's notifications on the "events" multicast
// group, parsed. Its fd is non-blocking and poll()able (POLLIN = events may be
// waiting); Read() returns every event already queued, without blocking.
//
// When the socket's receive buffer overflowed the kernel dropped events:
// Read() then yields one kOverrun event, after which the listener must
// re-read the kernel's state (PIPE_GET dump) instead of trusting deltas.
//
// Thread-safety: none; one thread reads.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernel_api.h"
#include "netlink_socket.h"

namespace replipipe
{

enum class KernelEventType {
	kPipeAdded,
	kPipeChanged,
	kPipeDeleted,
	kPairState,
	kOverrun, // events were lost
};

// "pipe_added", "pipe_changed", "pipe_deleted", "pair_state", "overrun".
const char *KernelEventTypeName(KernelEventType type);

struct KernelEvent {
	KernelEventType type = KernelEventType::kOverrun;
	std::string pipe_id;
	// The pipe as the event carries it (pairs included except for
	// kPipeDeleted; for kPairState only the one pair).
	std::optional<KernelPipeStatus> pipe;
	// kPairState: the pair whose state changed.
	std::optional<KernelPairStatus> pair;
};

class NetlinkEventListener
{
public:
	static Result<std::unique_ptr<NetlinkEventListener>> Open();

	int fd() const { return sock_->fd(); }
	// Every event already queued (possibly none). Never blocks.
	Result<std::vector<KernelEvent>> Read();
	// Waits up to timeout for at least one event (empty on time-out).
	Result<std::vector<KernelEvent>>
	Wait(std::chrono::milliseconds timeout);

private:
	explicit NetlinkEventListener(std::unique_ptr<NetlinkSocket> sock)
	    : sock_(std::move(sock))
	{
	}

	std::unique_ptr<NetlinkSocket> sock_;
};

// An event from one notification message; nullopt for other commands.
// Exposed for unit tests.
std::optional<KernelEvent> ParseEventMessage(nlmsghdr *hdr);

} // namespace replipipe
