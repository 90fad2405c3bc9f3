#include "netlink_resync.h"

#include <linux/genetlink.h>
#include <linux/replipipe.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>

#include <bit>
#include <cstring>

#include "netlink_codec.h"

namespace replipipe
{
namespace
{

Status PutPair(nl_msg *msg, const std::string &pipe_id,
               const std::string &source)
{
	if (nla_put_string(msg, REPLIPIPE_A_PIPE_ID, pipe_id.c_str()) < 0 ||
	    nla_put_string(msg, REPLIPIPE_A_PAIR_SOURCE, source.c_str()) < 0)
		return Status::Error("netlink message too large", EMSGSIZE);
	return {};
}

// Top-level attributes of a reply.
void ParseTop(nlmsghdr *hdr, nlattr **tb)
{
	std::memset(tb, 0, sizeof(nlattr *) * (REPLIPIPE_A_MAX + 1));
	auto *genl = static_cast<genlmsghdr *>(nlmsg_data(hdr));
	nla_parse(tb, REPLIPIPE_A_MAX, genlmsg_attrdata(genl, 0),
	          genlmsg_attrlen(genl, 0), nullptr);
}

template <typename T> bool Get(const nlattr *attr, T *out)
{
	if (attr == nullptr || nla_len(attr) < static_cast<int>(sizeof(T)))
		return false;
	std::memcpy(out, nla_data(attr), sizeof(T));
	return true;
}

std::string PairName(const std::string &pipe_id, const std::string &source)
{
	return "pipe " + pipe_id + " pair " + source;
}

} // namespace

uint64_t DirtyBitmap::count() const
{
	uint64_t n = 0;
	for (uint8_t b : bits)
		n += std::popcount(b);
	return n;
}

Result<std::unique_ptr<NetlinkResyncChannel>>
NetlinkResyncChannel::Open(std::chrono::milliseconds timeout)
{
	auto sock = NetlinkSocket::Open(timeout);
	if (!sock.ok())
		return sock.status();
	return std::unique_ptr<NetlinkResyncChannel>(
	        new NetlinkResyncChannel(std::move(*sock)));
}

Status PutClaimRequest(nl_msg *msg, const std::string &pipe_id,
                       const std::string &source, uint64_t hint,
                       uint32_t max_regions, uint64_t pair_serial)
{
	Status st = PutPair(msg, pipe_id, source);
	if (st.ok() &&
	    (nla_put_u64(msg, REPLIPIPE_A_CLAIM_HINT, hint) < 0 ||
	     nla_put_u32(msg, REPLIPIPE_A_CLAIM_MAX_REGIONS, max_regions) < 0 ||
	     (pair_serial != 0 &&
	      nla_put_u64(msg, REPLIPIPE_A_CLAIM_PAIR_SERIAL, pair_serial) <
	              0)))
		st = Status::Error("netlink message too large", EMSGSIZE);
	return st;
}

Status ParseClaimReply(nlmsghdr *hdr, RegionClaim *claim, bool *pending)
{
	nlattr *tb[REPLIPIPE_A_MAX + 1];
	ParseTop(hdr, tb);
	*claim = RegionClaim();
	*pending = tb[REPLIPIPE_A_CLAIM_PENDING] != nullptr;
	if (*pending) {
		if (!Get(tb[REPLIPIPE_A_CLAIM_ID], &claim->id) ||
		    claim->id == 0)
			return Status::Error("pending claim without CLAIM_ID",
			                     EPROTO);
		return {};
	}
	if (!Get(tb[REPLIPIPE_A_CLAIM_COUNT], &claim->count))
		return Status::Error("reply without CLAIM_COUNT", EPROTO);
	if (claim->count > 0 &&
	    (!Get(tb[REPLIPIPE_A_CLAIM_ID], &claim->id) ||
	     !Get(tb[REPLIPIPE_A_CLAIM_FIRST], &claim->first)))
		return Status::Error("reply without CLAIM_ID/CLAIM_FIRST",
		                     EPROTO);
	uint32_t left_ms = 0;
	if (claim->count > 0 &&
	    Get(tb[REPLIPIPE_A_CLAIM_TIME_LEFT_MS], &left_ms))
		claim->time_left = std::chrono::milliseconds(left_ms);
	return {};
}

// One RESYNC_CLAIM or RESYNC_CLAIM_WAIT request and its reply.
Status NetlinkResyncChannel::ClaimStep(NlMsgPtr msg, RegionClaim *claim,
                                       bool *pending)
{
	bool replied = false;
	Status st = sock_->Request(std::move(msg), [&](nlmsghdr *hdr) {
		replied = true;
		return ParseClaimReply(hdr, claim, pending);
	});
	if (st.ok() && !replied)
		st = Status::Error("kernel sent no reply", EPROTO);
	return st;
}

Result<RegionClaim>
NetlinkResyncChannel::Claim(const std::string &pipe_id,
                            const std::string &source, uint64_t hint,
                            uint32_t max_regions, uint64_t pair_serial,
                            const std::function<bool(uint64_t)> &keep_waiting)
{
	std::lock_guard<std::mutex> lock(mu_);
	const std::string what = "kernel RESYNC_CLAIM " +
	                         PairName(pipe_id, source) + " at region " +
	                         std::to_string(hint);
	NlMsgPtr msg = sock_->NewRequest(REPLIPIPE_CMD_RESYNC_CLAIM);
	Status st = PutClaimRequest(msg.get(), pipe_id, source, hint,
	                            max_regions, pair_serial);
	RegionClaim claim;
	bool pending = false;
	if (st.ok())
		st = ClaimStep(std::move(msg), &claim, &pending);
	// The kernel waits at most REPLIPIPE_CLAIM_WAIT_MS per request (the
	// lock generic netlink holds meanwhile is every family's); its own
	// time-outs end a claim that stays pending (ETIMEDOUT).
	while (st.ok() && pending) {
		const uint64_t id = claim.id;
		if (keep_waiting && !keep_waiting(id)) {
			st = Status::Error(
			        "stopped while the claim was pending",
			        ECANCELED);
		} else {
			msg = sock_->NewRequest(
			        REPLIPIPE_CMD_RESYNC_CLAIM_WAIT);
			if (nla_put_u64(msg.get(), REPLIPIPE_A_CLAIM_ID, id) <
			    0)
				st = Status::Error("netlink message too large",
				                   EMSGSIZE);
			else
				st = ClaimStep(std::move(msg), &claim, &pending)
				             .Context("RESYNC_CLAIM_WAIT "
				                      "claim " +
				                      std::to_string(id));
		}
		// A claim the kernel did not end (stopped, or this side
		// failed: no memory, no answer in time) would hold writes to
		// its regions until its time-out: give it up. Its own error
		// is the one to report; the kernel's answer to this adds
		// none.
		if (!st.ok()) {
			NlMsgPtr give_up =
			        sock_->NewRequest(REPLIPIPE_CMD_RESYNC_FAILED);
			if (nla_put_u64(give_up.get(), REPLIPIPE_A_CLAIM_ID,
			                id) == 0)
				(void)sock_->Request(std::move(give_up));
		}
	}
	if (!st.ok())
		return st.Context(what);
	return claim;
}

Status NetlinkResyncChannel::Finish(uint8_t cmd, uint64_t claim_id,
                                    const char *what)
{
	std::lock_guard<std::mutex> lock(mu_);
	NlMsgPtr msg = sock_->NewRequest(cmd);
	if (nla_put_u64(msg.get(), REPLIPIPE_A_CLAIM_ID, claim_id) < 0)
		return Status::Error("netlink message too large", EMSGSIZE);
	return sock_->Request(std::move(msg))
	        .Context(std::string("kernel ") + what + " claim " +
	                 std::to_string(claim_id));
}

Status NetlinkResyncChannel::Done(uint64_t claim_id)
{
	return Finish(REPLIPIPE_CMD_RESYNC_DONE, claim_id, "RESYNC_DONE");
}

Status NetlinkResyncChannel::Failed(uint64_t claim_id)
{
	return Finish(REPLIPIPE_CMD_RESYNC_FAILED, claim_id, "RESYNC_FAILED");
}

Result<DirtyBitmap> NetlinkResyncChannel::GetBitmap(const std::string &pipe_id,
                                                    const std::string &source)
{
	std::lock_guard<std::mutex> lock(mu_);
	NlMsgPtr msg = sock_->NewRequest(REPLIPIPE_CMD_BITMAP_GET, NLM_F_DUMP);
	Status st = PutPair(msg.get(), pipe_id, source);
	DirtyBitmap bitmap;
	if (st.ok())
		st = sock_->Request(std::move(msg), [&](nlmsghdr *hdr) {
			return MergeBitmapMessage(hdr, &bitmap);
		});
	if (!st.ok())
		return st.Context("kernel BITMAP_GET " +
		                  PairName(pipe_id, source));
	// Bits past nbits in the last byte are not regions.
	if (bitmap.nbits % 8 != 0 && !bitmap.bits.empty())
		bitmap.bits.back() &= (1u << (bitmap.nbits % 8)) - 1;
	return bitmap;
}

Status MergeBitmapMessage(nlmsghdr *hdr, DirtyBitmap *bitmap)
{
	nlattr *tb[REPLIPIPE_A_MAX + 1];
	ParseTop(hdr, tb);
	uint64_t nbits = 0;
	if (Get(tb[REPLIPIPE_A_BITMAP_NBITS], &nbits) && bitmap->bits.empty()) {
		bitmap->nbits = nbits;
		bitmap->bits.assign((nbits + 7) / 8, 0);
	}
	const nlattr *data = tb[REPLIPIPE_A_BITMAP_DATA];
	if (data == nullptr || nla_len(data) == 0)
		return {};
	uint64_t offset = 0;
	Get(tb[REPLIPIPE_A_BITMAP_OFFSET], &offset);
	if (offset % 8 != 0)
		return Status::Error("bitmap chunk offset not a multiple of 8",
		                     EPROTO);
	const uint64_t byte = offset / 8;
	const size_t len = static_cast<size_t>(nla_len(data));
	if (byte + len > bitmap->bits.size())
		return Status::Error("bitmap chunk at region " +
		                             std::to_string(offset) +
		                             " beyond nbits " +
		                             std::to_string(bitmap->nbits),
		                     EPROTO);
	std::memcpy(bitmap->bits.data() + byte, nla_data(data), len);
	return {};
}

Result<uint64_t> NetlinkPairClaims::DirtyRegions()
{
	auto bitmap = channel_->GetBitmap(pipe_id_, source_);
	if (!bitmap.ok())
		return bitmap.status();
	return bitmap->count();
}

} // namespace replipipe
