#include "netlink_socket.h"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/replipipe.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/family.h>
#include <netlink/genl/genl.h>
#include <netlink/handlers.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include "netlink_codec.h"

namespace replipipe
{
namespace
{
// Room for a PIPE_SET of REPLIPIPE_MAX_PAIRS pairs with the longest names.
constexpr size_t kRequestBytes = 256 * 1024;
} // namespace
} // namespace replipipe

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

namespace replipipe
{
namespace
{

struct NlCbPut {
	void operator()(nl_cb *cb) const { nl_cb_put(cb); }
};

struct NlSockFree {
	void operator()(nl_sock *sock) const { nl_socket_free(sock); }
};

struct NlCacheFree {
	void operator()(nl_cache *cache) const { nl_cache_free(cache); }
};

// The state of one Request() while libnl's callbacks run.
struct RequestState {
	uint32_t seq = 0;
	const NetlinkSocket::ReplyHandler *on_reply = nullptr;
	bool done = false;
	Status status; // the first error wins
	// status is an ENOENT without extack text: genetlink's answer to a
	// family id it does not know (the family's own ENOENTs say why).
	bool bare_enoent = false;
};

void Fail(RequestState *st, Status status)
{
	if (st->status.ok())
		st->status = std::move(status);
}

// Stale answers (to an earlier request that timed out) are skipped.
int OnSeqCheck(nl_msg *msg, void *arg)
{
	auto *st = static_cast<RequestState *>(arg);
	return nlmsg_hdr(msg)->nlmsg_seq == st->seq ? NL_OK : NL_SKIP;
}

int OnValid(nl_msg *msg, void *arg)
{
	auto *st = static_cast<RequestState *>(arg);
	if (st->on_reply != nullptr && *st->on_reply && st->status.ok())
		Fail(st, (*st->on_reply)(nlmsg_hdr(msg)));
	return NL_OK;
}

int OnAck(nl_msg *, void *arg)
{
	static_cast<RequestState *>(arg)->done = true;
	return NL_STOP;
}

int OnFinish(nl_msg *msg, void *arg)
{
	auto *st = static_cast<RequestState *>(arg);
	std::string extack;
	const int err = ErrorOfDone(nlmsg_hdr(msg), &extack);
	if (err != 0)
		Fail(st, KernelError(err, extack));
	st->done = true;
	return NL_STOP;
}

// libnl hands us the nlmsgerr; the TLVs of the extended ack follow it in the
// same message, whose header sits right before the nlmsgerr.
int OnError(sockaddr_nl *, nlmsgerr *nlerr, void *arg)
{
	auto *st = static_cast<RequestState *>(arg);
	const auto *hdr = reinterpret_cast<const nlmsghdr *>(
	        reinterpret_cast<const char *>(nlerr) - NLMSG_HDRLEN);
	if (hdr->nlmsg_seq != st->seq)
		return NL_SKIP;
	const int err = nlerr->error < 0 ? -nlerr->error : nlerr->error;
	const std::string extack = ExtackOfError(hdr);
	if (st->status.ok() && err == ENOENT && extack.empty())
		st->bare_enoent = true;
	Fail(st, KernelError(err, extack));
	st->done = true;
	return NL_STOP;
}

// A family of another version may have changed what an attribute means
// (uapi/linux/replipipe.h): a client talking to it could misread state.
Status VersionMismatch(const std::string &family, uint32_t have, uint8_t want)
{
	std::string msg = "generic netlink family '" + family +
	                  "' has version " + std::to_string(have) +
	                  ", this program speaks version " +
	                  std::to_string(want);
	if (family == REPLIPIPE_GENL_NAME)
		msg += ": load the replipipe.ko of the same release (dkms "
		       "status replipipe)";
	return Status::Error(msg, EPROTONOSUPPORT);
}

} // namespace

bool IsModuleMissing(const Status &status)
{
	return !status.ok() && status.err() == ENOENT &&
	       status.message() == kModuleMissingMessage;
}

Status FamilyGoneError(const std::string &family, int old_id, int now_id)
{
	const std::string gone = "generic netlink family '" + family + "' id " +
	                         std::to_string(old_id) + " is gone";
	const bool ours = family == REPLIPIPE_GENL_NAME;
	std::string msg;
	if (now_id == 0)
		msg = ours ? "the replipipe kernel module was unloaded (" +
		                      gone + ")"
		           : gone + " (unregistered)";
	else
		msg = ours ? "the replipipe kernel module was reloaded (" +
		                      gone + ", the module now has id " +
		                      std::to_string(now_id) + ")"
		           : gone + ", the family now has id " +
		                      std::to_string(now_id);
	return Status::Error(msg, EIDRM);
}

bool IsFamilyGone(const Status &status)
{
	return !status.ok() && status.err() == EIDRM &&
	       status.message().find("generic netlink family '") !=
	               std::string::npos &&
	       status.message().find(" is gone") != std::string::npos;
}

Result<int> ResolveFamilyId(const std::string &family,
                            std::chrono::milliseconds timeout)
{
	std::unique_ptr<nl_sock, NlSockFree> sock(nl_socket_alloc());
	if (sock == nullptr)
		return Status::Error("netlink: cannot allocate a socket",
		                     ENOMEM);
	int rc = genl_connect(sock.get());
	if (rc < 0)
		return Status::Error(std::string("netlink: connect: ") +
		                             nl_geterror(rc),
		                     EIO);
	// Bounded like every request: nlctrl answers at once, but a receive
	// without a time-out would be the one wait in the daemon with none.
	timeval tv{};
	tv.tv_sec = timeout.count() / 1000;
	tv.tv_usec = (timeout.count() % 1000) * 1000;
	if (setsockopt(nl_socket_get_fd(sock.get()), SOL_SOCKET, SO_RCVTIMEO,
	               &tv, sizeof(tv)) < 0)
		return Status::FromErrno("netlink: set SO_RCVTIMEO", errno);
	// The list of families (a dump), not CTRL_CMD_GETFAMILY by name: for
	// a name it does not have the kernel loads the module that claims it
	// (MODULE_ALIAS_GENL_FAMILY, which replipipe.ko declares), and a
	// check must not load again a module an administrator just unloaded.
	nl_cache *cache = nullptr;
	rc = genl_ctrl_alloc_cache(sock.get(), &cache);
	if (rc < 0)
		return Status::Error(std::string("netlink: list the generic "
		                                 "netlink families: ") +
		                             nl_geterror(rc),
		                     EIO);
	std::unique_ptr<nl_cache, NlCacheFree> families(cache);
	genl_family *found = genl_ctrl_search_by_name(cache, family.c_str());
	if (found == nullptr)
		return Status::Error("generic netlink family '" + family +
		                             "' not found",
		                     ENOENT);
	const int id = genl_family_get_id(found);
	genl_family_put(found);
	return id;
}

void NlMsgFree::operator()(nl_msg *msg) const
{
	nlmsg_free(msg);
}

Result<std::unique_ptr<NetlinkSocket>>
NetlinkSocket::Open(std::chrono::milliseconds timeout)
{
	return OpenFamily(REPLIPIPE_GENL_NAME, REPLIPIPE_MCGRP_EVENTS,
	                  REPLIPIPE_GENL_VERSION, timeout);
}

Result<std::unique_ptr<NetlinkSocket>>
NetlinkSocket::OpenFamily(const std::string &family, const std::string &group,
                          uint8_t version, std::chrono::milliseconds timeout)
{
	std::unique_ptr<NetlinkSocket> s(new NetlinkSocket());
	s->family_name_ = family;
	s->request_version_ = version;
	s->sock_ = nl_socket_alloc();
	if (s->sock_ == nullptr)
		return Status::Error("netlink: cannot allocate a socket",
		                     ENOMEM);
	int rc = genl_connect(s->sock_);
	if (rc < 0)
		return Status::Error(std::string("netlink: connect: ") +
		                             nl_geterror(rc),
		                     EIO);
	// A dump of many pipes, a PIPE_SET of 256 pairs exceed the defaults.
	nl_socket_set_buffer_size(s->sock_, 1 << 20, 1 << 20);
	const int one = 1;
	// Both are best effort: old kernels answer without the TLVs.
	setsockopt(s->fd(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	setsockopt(s->fd(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
	Status st = s->SetTimeout(timeout);
	if (!st.ok())
		return st;

	rc = genl_ctrl_resolve(s->sock_, family.c_str());
	if (rc == -NLE_OBJ_NOTFOUND)
		return Status::Error(
		        family == REPLIPIPE_GENL_NAME
		                ? std::string(kModuleMissingMessage)
		                : "generic netlink family '" + family +
		                          "' not found",
		        ENOENT);
	if (rc < 0)
		return Status::Error("netlink: resolve family '" + family +
		                             "': " + nl_geterror(rc),
		                     EIO);
	s->family_id_ = rc;

	nl_cache *cache = nullptr;
	if (genl_ctrl_alloc_cache(s->sock_, &cache) == 0) {
		if (genl_family *found =
		            genl_ctrl_search_by_name(cache, family.c_str())) {
			s->family_version_ = genl_family_get_version(found);
			genl_family_put(found);
		}
		nl_cache_free(cache);
	}
	if (version != 0 && s->family_version_ != 0 &&
	    s->family_version_ != version)
		return VersionMismatch(family, s->family_version_, version);
	rc = genl_ctrl_resolve_grp(s->sock_, family.c_str(), group.c_str());
	s->events_group_ = rc > 0 ? rc : 0;
	return s;
}

NetlinkSocket::~NetlinkSocket()
{
	if (sock_ != nullptr)
		nl_socket_free(sock_); // closes the fd: the kernel drops claims
}

int NetlinkSocket::fd() const
{
	return nl_socket_get_fd(sock_);
}

Status NetlinkSocket::SetTimeout(std::chrono::milliseconds timeout)
{
	if (timeout.count() <= 0)
		return Status::Error("netlink: timeout must be positive",
		                     EINVAL);
	timeval tv{};
	tv.tv_sec = timeout.count() / 1000;
	tv.tv_usec = (timeout.count() % 1000) * 1000;
	if (setsockopt(fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return Status::FromErrno("netlink: set SO_RCVTIMEO", errno);
	timeout_ = timeout;
	return {};
}

NlMsgPtr NetlinkSocket::NewRequest(uint8_t cmd, int flags) const
{
	NlMsgPtr msg(nlmsg_alloc_size(kRequestBytes));
	if (msg == nullptr)
		throw std::bad_alloc();
	genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family_id_, 0, flags,
	            cmd, request_version_);
	return msg;
}

Status NetlinkSocket::Request(NlMsgPtr msg, const ReplyHandler &on_reply)
{
	std::unique_ptr<nl_cb, NlCbPut> cb(nl_cb_alloc(NL_CB_DEFAULT));
	if (cb == nullptr)
		return Status::Error("netlink: cannot allocate callbacks",
		                     ENOMEM);
	RequestState st;
	st.on_reply = &on_reply;
	nl_cb_set(cb.get(), NL_CB_SEQ_CHECK, NL_CB_CUSTOM, OnSeqCheck, &st);
	nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, OnValid, &st);
	nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, OnAck, &st);
	nl_cb_set(cb.get(), NL_CB_FINISH, NL_CB_CUSTOM, OnFinish, &st);
	nl_cb_err(cb.get(), NL_CB_CUSTOM, OnError, &st);

	int rc = nl_send_auto(sock_, msg.get());
	if (rc < 0)
		return Status::Error(std::string("netlink: send: ") +
		                             nl_geterror(rc),
		                     rc == -NLE_PERM ? EPERM : EIO);
	st.seq = nlmsg_hdr(msg.get())->nlmsg_seq;

	const auto deadline = std::chrono::steady_clock::now() + timeout_;
	while (!st.done) {
		const auto left =
		        std::chrono::duration_cast<std::chrono::milliseconds>(
		                deadline - std::chrono::steady_clock::now());
		if (left.count() <= 0)
			return Status::Error(
			        "netlink: no answer from the kernel within " +
			                std::to_string(timeout_.count()) +
			                " ms",
			        ETIMEDOUT);
		pollfd pfd{fd(), POLLIN, 0};
		rc = poll(&pfd, 1, static_cast<int>(left.count()) + 1);
		if (rc < 0 && errno != EINTR)
			return Status::FromErrno("netlink: poll", errno);
		if (rc <= 0)
			continue;
		// Returns early (0 or -NLE_AGAIN, by libnl version) when
		// SO_RCVTIMEO expires mid-dump; the loop then checks the
		// deadline.
		rc = nl_recvmsgs(sock_, cb.get());
		// Before done: the NLMSG_DONE that ends a dump may be the
		// message that carries NLM_F_DUMP_INTR.
		if (rc == -NLE_DUMP_INTR)
			return Status::Error(
			        "netlink: dump interrupted by a concurrent "
			        "change, retry",
			        EAGAIN);
		if (st.done)
			break;
		if (rc < 0 && rc != -NLE_AGAIN)
			return Status::Error(std::string("netlink: receive: ") +
			                             nl_geterror(rc),
			                     EIO);
	}
	if (st.bare_enoent)
		return UnlessFamilyGone(std::move(st.status));
	return st.status;
}

Status NetlinkSocket::UnlessFamilyGone(Status status) const
{
	// One more round trip, on a socket of its own (this one may still
	// get a late answer), and only for an ENOENT nobody explained.
	auto now = ResolveFamilyId(family_name_, timeout_);
	if (!now.ok() && now.status().err() != ENOENT)
		return status; // cannot tell: the kernel's answer as it came
	const int now_id = now.ok() ? *now : 0;
	if (now_id == family_id_)
		return status;
	return FamilyGoneError(family_name_, family_id_, now_id);
}

Status NetlinkSocket::JoinEvents()
{
	if (events_group_ <= 0)
		return Status::Error("netlink: the family has no events group",
		                     ENOENT);
	nl_socket_disable_seq_check(sock_);
	int rc = nl_socket_add_membership(sock_, events_group_);
	if (rc < 0)
		return Status::Error(
		        std::string("netlink: join events group: ") +
		                nl_geterror(rc),
		        EIO);
	rc = nl_socket_set_nonblocking(sock_);
	if (rc < 0)
		return Status::Error(std::string("netlink: non-blocking: ") +
		                             nl_geterror(rc),
		                     EIO);
	return {};
}

} // namespace replipipe
