#include "netlink_events.h"

#include <linux/genetlink.h>
#include <linux/replipipe.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/handlers.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <poll.h>

#include <cstring>

#include "netlink_codec.h"

namespace replipipe
{
namespace
{

struct NlCbPut {
	void operator()(nl_cb *cb) const { nl_cb_put(cb); }
};

// Notifications carry sequence number 0: accept every one (libnl's default
// check would call them out of order).
int AcceptAnySeq(nl_msg *, void *)
{
	return NL_OK;
}

int OnEvent(nl_msg *msg, void *arg)
{
	auto *events = static_cast<std::vector<KernelEvent> *>(arg);
	if (auto event = ParseEventMessage(nlmsg_hdr(msg)))
		events->push_back(std::move(*event));
	return NL_OK;
}

struct FamilyReadState {
	const std::string *family = nullptr;
	std::vector<FamilyEvent> events;
};

int OnFamilyEvent(nl_msg *msg, void *arg)
{
	auto *st = static_cast<FamilyReadState *>(arg);
	if (auto event = ParseFamilyMessage(nlmsg_hdr(msg), *st->family))
		st->events.push_back(*event);
	return NL_OK;
}

// Reads every message already queued on @sock into @on_valid's state; an
// overflowed receive buffer (ENOBUFS: the kernel dropped messages) calls
// @on_overrun. Another failure stops the reading: what @on_valid got before
// it stays. Never blocks (the socket is non-blocking).
template <typename OnOverrun>
Status ReadQueued(NetlinkSocket &sock, nl_recvmsg_msg_cb_t on_valid,
                  void *state, const OnOverrun &on_overrun, const char *what)
{
	std::unique_ptr<nl_cb, NlCbPut> cb(nl_cb_alloc(NL_CB_DEFAULT));
	if (cb == nullptr)
		return Status::Error("netlink: cannot allocate callbacks",
		                     ENOMEM);
	nl_cb_set(cb.get(), NL_CB_SEQ_CHECK, NL_CB_CUSTOM, AcceptAnySeq,
	          nullptr);
	nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, on_valid, state);
	for (;;) {
		pollfd pfd{sock.fd(), POLLIN, 0};
		if (poll(&pfd, 1, 0) <= 0)
			break;
		const int rc = nl_recvmsgs(sock.get(), cb.get());
		if (rc == -NLE_NOMEM) {
			// ENOBUFS: the kernel dropped notifications.
			on_overrun();
			continue;
		}
		if (rc < 0 && rc != -NLE_AGAIN)
			return Status::Error(std::string(what) + ": receive: " +
			                             nl_geterror(rc),
			                     EIO);
	}
	return {};
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

uint32_t NetlinkEventListener::port() const
{
	return nl_socket_get_local_port(sock_->get());
}

EventBatch<KernelEvent> NetlinkEventListener::Read()
{
	EventBatch<KernelEvent> batch;
	const auto lost = [&batch] {
		KernelEvent overrun;
		overrun.type = KernelEventType::kOverrun;
		batch.events.push_back(std::move(overrun));
	};
	batch.receive_error = ReadQueued(*sock_, OnEvent, &batch.events, lost,
	                                 "netlink events");
	if (!batch.receive_error.ok())
		lost();
	return batch;
}

EventBatch<KernelEvent>
NetlinkEventListener::Wait(std::chrono::milliseconds timeout)
{
	pollfd pfd{fd(), POLLIN, 0};
	const int rc = poll(&pfd, 1, static_cast<int>(timeout.count()));
	if (rc < 0 && errno != EINTR) {
		EventBatch<KernelEvent> batch;
		batch.receive_error =
		        Status::FromErrno("netlink events: poll", errno);
		return batch;
	}
	return Read();
}

std::optional<FamilyEvent> ParseFamilyMessage(nlmsghdr *hdr,
                                              const std::string &family)
{
	if (hdr->nlmsg_type != GENL_ID_CTRL ||
	    hdr->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN)
		return std::nullopt;
	FamilyEvent event;
	switch (GenlCommand(hdr)) {
	case CTRL_CMD_NEWFAMILY:
		event.type = FamilyEvent::Type::kRegistered;
		break;
	case CTRL_CMD_DELFAMILY:
		event.type = FamilyEvent::Type::kUnregistered;
		break;
	default:
		return std::nullopt;
	}
	nlattr *tb[CTRL_ATTR_MAX + 1] = {};
	if (genlmsg_parse(hdr, 0, tb, CTRL_ATTR_MAX, nullptr) < 0 ||
	    tb[CTRL_ATTR_FAMILY_NAME] == nullptr ||
	    tb[CTRL_ATTR_FAMILY_ID] == nullptr ||
	    nla_len(tb[CTRL_ATTR_FAMILY_ID]) < 2)
		return std::nullopt;
	// The name up to its NUL or its length, whichever comes first.
	const auto *name =
	        static_cast<const char *>(nla_data(tb[CTRL_ATTR_FAMILY_NAME]));
	const size_t len = strnlen(
	        name, static_cast<size_t>(nla_len(tb[CTRL_ATTR_FAMILY_NAME])));
	if (std::string(name, len) != family)
		return std::nullopt;
	event.id = nla_get_u16(tb[CTRL_ATTR_FAMILY_ID]);
	return event;
}

Result<std::unique_ptr<FamilyWatch>>
FamilyWatch::Open(const std::string &family)
{
	// nlctrl's version does not matter: the socket sends nothing.
	auto sock = NetlinkSocket::OpenFamily("nlctrl", "notify", 0,
	                                      kNetlinkDefaultTimeout);
	if (!sock.ok())
		return sock.status().Context("nlctrl");
	if (Status st = (*sock)->JoinEvents(); !st.ok())
		return st.Context("nlctrl notify group");
	return std::unique_ptr<FamilyWatch>(
	        new FamilyWatch(std::move(*sock), family));
}

EventBatch<FamilyEvent> FamilyWatch::Read()
{
	FamilyReadState st;
	st.family = &family_;
	EventBatch<FamilyEvent> batch;
	batch.receive_error = ReadQueued(
	        *sock_, OnFamilyEvent, &st,
	        [&st] { st.events.push_back(FamilyEvent{}); }, "nlctrl");
	if (!batch.receive_error.ok())
		st.events.push_back(FamilyEvent{});
	batch.events = std::move(st.events);
	return batch;
}

} // namespace replipipe
