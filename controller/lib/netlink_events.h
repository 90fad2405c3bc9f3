// NetlinkEventListener: the kernel's notifications on the "events" multicast
// group, parsed. Its fd is non-blocking and poll()able (POLLIN = events may be
// waiting); Read() returns every event already queued, without blocking.
//
// When the socket's receive buffer overflowed the kernel dropped events:
// Read() then yields one kOverrun event, after which the listener must
// re-read the kernel's state (PIPE_GET dump) instead of trusting deltas.
// A receive that fails otherwise ends the batch the same way, with the
// events read before it kept and the reason beside them: what was queued
// after it is not read, and a socket that keeps failing would keep polling
// readable, so the caller opens a new one.
//
// Thread-safety: none; one thread reads.
#pragma once

#include <chrono>
#include <cstdint>
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

// What one read of a notification socket found.
template <typename Event> struct EventBatch {
	// In the order they came; ends with an overrun (events lost) when
	// receive_error is set.
	std::vector<Event> events;
	// Why a receive failed (ok when none did).
	Status receive_error;
};

class NetlinkEventListener
{
public:
	static Result<std::unique_ptr<NetlinkEventListener>> Open();

	int fd() const { return sock_->fd(); }
	// The socket's netlink port id (its address).
	uint32_t port() const;
	// Every event already queued (possibly none). Never blocks.
	EventBatch<KernelEvent> Read();
	// Waits up to timeout for at least one event (none on time-out);
	// a failed poll is a receive_error.
	EventBatch<KernelEvent> Wait(std::chrono::milliseconds timeout);

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

// A registration or removal of one generic netlink family, as the kernel's
// genl controller (nlctrl) announces it on its "notify" group.
struct FamilyEvent {
	enum class Type {
		kRegistered,   // CTRL_CMD_NEWFAMILY: a module registered it
		kUnregistered, // CTRL_CMD_DELFAMILY: its module went
		kOverrun,      // announcements were lost: look it up again
	};
	Type type = Type::kOverrun;
	int id = 0; // the family id the announcement names (0: kOverrun)
};

// FamilyWatch: nlctrl's announcements about one family (replipiped's:
// REPLIPIPE_GENL_NAME), so that a daemon learns at once that the module behind
// its sockets was unloaded or loaded again. Those sockets keep the family id
// they resolved, and a new registration gets a new id (the kernel allocates
// them cyclically), so after a reload they talk to nobody
// (docs/decisions.md, 60). The fd is non-blocking and poll()able; Read()
// returns every announcement already queued, without blocking. Another
// family's announcements are dropped.
//
// Thread-safety: none; one thread reads.
class FamilyWatch
{
public:
	static Result<std::unique_ptr<FamilyWatch>>
	Open(const std::string &family);

	int fd() const { return sock_->fd(); }
	const std::string &family() const { return family_; }
	// Every announcement already queued (possibly none). Never blocks.
	EventBatch<FamilyEvent> Read();

private:
	FamilyWatch(std::unique_ptr<NetlinkSocket> sock, std::string family)
	    : sock_(std::move(sock)), family_(std::move(family))
	{
	}

	std::unique_ptr<NetlinkSocket> sock_;
	const std::string family_;
};

// The announcement about @family in one nlctrl notification; nullopt for
// other commands (multicast groups) and other families. Exposed for unit
// tests.
std::optional<FamilyEvent> ParseFamilyMessage(nlmsghdr *hdr,
                                              const std::string &family);

} // namespace replipipe
