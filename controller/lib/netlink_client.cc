#include "netlink_client.h"

#include <linux/replipipe.h>
#include <netlink/attr.h>

#include "netlink_codec.h"
#include "netlink_dump_retry.h"
#include "netlink_resume_wait.h"

namespace replipipe
{
namespace
{

Status PutString(nl_msg *msg, int type, const std::string &value)
{
	if (nla_put_string(msg, type, value.c_str()) < 0)
		return Status::Error("netlink message too large", EMSGSIZE);
	return {};
}

} // namespace

Result<std::unique_ptr<NetlinkKernel>>
NetlinkKernel::Open(std::chrono::milliseconds timeout)
{
	auto sock = NetlinkSocket::Open(timeout);
	if (!sock.ok())
		return sock.status();
	return std::unique_ptr<NetlinkKernel>(
	        new NetlinkKernel(std::move(*sock)));
}

Status NetlinkKernel::SetPipe(const KernelPipeSpec &spec)
{
	std::lock_guard<std::mutex> lock(mu_);
	NlMsgPtr msg = sock_->NewRequest(REPLIPIPE_CMD_PIPE_SET);
	Status st = PutPipeSpec(msg.get(), spec);
	if (st.ok())
		st = sock_->Request(std::move(msg));
	return st.Context("kernel PIPE_SET pipe " + spec.id);
}

Status NetlinkKernel::DeletePipe(const std::string &id)
{
	std::lock_guard<std::mutex> lock(mu_);
	NlMsgPtr msg = sock_->NewRequest(REPLIPIPE_CMD_PIPE_DEL);
	Status st = PutString(msg.get(), REPLIPIPE_A_PIPE_ID, id);
	if (st.ok())
		st = sock_->Request(std::move(msg));
	return st.Context("kernel PIPE_DEL pipe " + id);
}

Result<std::optional<KernelPipeStatus>>
NetlinkKernel::GetPipe(const std::string &id)
{
	std::lock_guard<std::mutex> lock(mu_);
	NlMsgPtr msg = sock_->NewRequest(REPLIPIPE_CMD_PIPE_GET);
	Status st = PutString(msg.get(), REPLIPIPE_A_PIPE_ID, id);
	std::optional<KernelPipeStatus> found;
	if (st.ok())
		st = sock_->Request(std::move(msg), [&](nlmsghdr *hdr) {
			auto pipe = ParsePipeMessage(hdr);
			if (!pipe.ok())
				return pipe.status();
			found = std::move(*pipe);
			return Status();
		});
	if (!st.ok() && st.err() == ENOENT)
		return std::optional<KernelPipeStatus>();
	if (!st.ok())
		return st.Context("kernel PIPE_GET pipe " + id);
	return found;
}

Result<std::vector<KernelPipeStatus>> NetlinkKernel::ListPipes()
{
	std::lock_guard<std::mutex> lock(mu_);
	std::vector<KernelPipeStatus> pipes;
	// Pipes that changed during the dump fail it: dump again.
	Status st = RetryDump([&] {
		pipes.clear();
		return sock_->Request(
		        sock_->NewRequest(REPLIPIPE_CMD_PIPE_GET, NLM_F_DUMP),
		        [&](nlmsghdr *hdr) {
			        auto pipe = ParsePipeMessage(hdr);
			        if (!pipe.ok())
				        return pipe.status();
			        pipes.push_back(std::move(*pipe));
			        return Status();
		        });
	});
	if (!st.ok())
		return st.Context("kernel PIPE_GET dump");
	return pipes;
}

Status NetlinkKernel::SetPairState(const std::string &pipe_id,
                                   const std::string &source, PairState state)
{
	std::lock_guard<std::mutex> lock(mu_);
	auto ask = [&](bool again) {
		NlMsgPtr msg = sock_->NewRequest(REPLIPIPE_CMD_PAIR_SET);
		Status st = PutString(msg.get(), REPLIPIPE_A_PIPE_ID, pipe_id);
		if (st.ok())
			st = PutString(msg.get(), REPLIPIPE_A_PAIR_SOURCE,
			               source);
		if (st.ok() && nla_put_u8(msg.get(), REPLIPIPE_A_PAIR_STATE,
		                          static_cast<uint8_t>(state)) < 0)
			st = Status::Error("netlink message too large",
			                   EMSGSIZE);
		if (st.ok() && again &&
		    nla_put_flag(msg.get(), REPLIPIPE_A_PAIR_RESUME_WAIT) < 0)
			st = Status::Error("netlink message too large",
			                   EMSGSIZE);
		if (st.ok())
			st = sock_->Request(std::move(msg));
		return st;
	};
	Status st =
	        state == PairState::kSyncing ? AskUntilProbed(ask) : ask(false);
	return st.Context("kernel PAIR_SET pipe " + pipe_id + " pair " +
	                  source);
}

} // namespace replipipe
