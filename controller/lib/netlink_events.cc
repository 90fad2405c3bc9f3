#include "netlink_events.h"

#include <linux/replipipe.h>
#include <netlink/handlers.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <poll.h>

#include "netlink_codec.h"

namespace replipipe
{
namespace
{

struct NlCbPut {
	void operator()(nl_cb *cb) const { nl_cb_put(cb); }
};

struct ReadState {
	std::vector<KernelEvent> events;
	Status status;
};

// Notifications carry sequence number 0: accept every one (libnl's default
// check would call them out of order).
int AcceptAnySeq(nl_msg *, void *)
{
	return NL_OK;
}

int OnEvent(nl_msg *msg, void *arg)
{
	auto *st = static_cast<ReadState *>(arg);
	if (auto event = ParseEventMessage(nlmsg_hdr(msg)))
		st->events.push_back(std::move(*event));
	return NL_OK;
}

} // namespace

const char *KernelEventTypeName(KernelEventType type)
{
	switch (type) {
	case KernelEventType::kPipeAdded:
		return "pipe_added";
	case KernelEventType::kPipeChanged:
		return "pipe_changed";
	case KernelEventType::kPipeDeleted:
		return "pipe_deleted";
	case KernelEventType::kPairState:
		return "pair_state";
	case KernelEventType::kOverrun:
		return "overrun";
	}
	return "unknown";
}

std::optional<KernelEvent> ParseEventMessage(nlmsghdr *hdr)
{
	KernelEvent event;
	switch (GenlCommand(hdr)) {
	case REPLIPIPE_CMD_EVT_PIPE_ADDED:
		event.type = KernelEventType::kPipeAdded;
		break;
	case REPLIPIPE_CMD_EVT_PIPE_CHANGED:
		event.type = KernelEventType::kPipeChanged;
		break;
	case REPLIPIPE_CMD_EVT_PIPE_DELETED:
		event.type = KernelEventType::kPipeDeleted;
		break;
	case REPLIPIPE_CMD_EVT_PAIR_STATE:
		event.type = KernelEventType::kPairState;
		break;
	default:
		return std::nullopt;
	}
	auto pipe = ParsePipeMessage(hdr);
	if (!pipe.ok())
		return std::nullopt;
	event.pipe_id = pipe->id;
	if (event.type == KernelEventType::kPairState && !pipe->pairs.empty())
		event.pair = pipe->pairs.front();
	event.pipe = std::move(*pipe);
	return event;
}

Result<std::unique_ptr<NetlinkEventListener>> NetlinkEventListener::Open()
{
	auto sock = NetlinkSocket::Open();
	if (!sock.ok())
		return sock.status();
	Status st = (*sock)->JoinEvents();
	if (!st.ok())
		return st;
	return std::unique_ptr<NetlinkEventListener>(
	        new NetlinkEventListener(std::move(*sock)));
}

Result<std::vector<KernelEvent>> NetlinkEventListener::Read()
{
	std::unique_ptr<nl_cb, NlCbPut> cb(nl_cb_alloc(NL_CB_DEFAULT));
	if (cb == nullptr)
		return Status::Error("netlink: cannot allocate callbacks",
		                     ENOMEM);
	ReadState st;
	nl_cb_set(cb.get(), NL_CB_SEQ_CHECK, NL_CB_CUSTOM, AcceptAnySeq,
	          nullptr);
	nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, OnEvent, &st);
	for (;;) {
		pollfd pfd{fd(), POLLIN, 0};
		if (poll(&pfd, 1, 0) <= 0)
			break;
		const int rc = nl_recvmsgs(sock_->get(), cb.get());
		if (rc == -NLE_NOMEM) {
			// ENOBUFS: the kernel dropped notifications.
			KernelEvent lost;
			lost.type = KernelEventType::kOverrun;
			st.events.push_back(std::move(lost));
			continue;
		}
		if (rc < 0 && rc != -NLE_AGAIN)
			return Status::Error(
			        std::string("netlink events: receive: ") +
			                nl_geterror(rc),
			        EIO);
	}
	return std::move(st.events);
}

Result<std::vector<KernelEvent>>
NetlinkEventListener::Wait(std::chrono::milliseconds timeout)
{
	pollfd pfd{fd(), POLLIN, 0};
	const int rc = poll(&pfd, 1, static_cast<int>(timeout.count()));
	if (rc < 0 && errno != EINTR)
		return Status::FromErrno("netlink events: poll", errno);
	return Read();
}

} // namespace replipipe
