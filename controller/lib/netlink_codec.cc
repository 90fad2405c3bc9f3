#include "netlink_codec.h"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/replipipe.h>
#include <netlink/attr.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>

#include <sys/sysmacros.h>

#include <cstring>

namespace replipipe
{
namespace
{

std::string AttrString(const nlattr *attr)
{
	if (attr == nullptr)
		return {};
	const char *data = static_cast<const char *>(nla_data(attr));
	const int len = nla_len(attr);
	if (len <= 0)
		return {};
	return std::string(data, strnlen(data, static_cast<size_t>(len)));
}

uint64_t AttrU64(const nlattr *attr)
{
	uint64_t v = 0;
	if (attr != nullptr && nla_len(attr) >= static_cast<int>(sizeof(v)))
		std::memcpy(&v, nla_data(attr), sizeof(v));
	return v;
}

uint32_t AttrU32(const nlattr *attr)
{
	uint32_t v = 0;
	if (attr != nullptr && nla_len(attr) >= static_cast<int>(sizeof(v)))
		std::memcpy(&v, nla_data(attr), sizeof(v));
	return v;
}

uint8_t AttrU8(const nlattr *attr)
{
	if (attr == nullptr || nla_len(attr) < 1)
		return 0;
	return *static_cast<const uint8_t *>(nla_data(attr));
}

// nla_parse() into tb[0..max], ignoring unknown types (no policy: lengths
// are checked by the getters above).
void ParseAttrs(nlattr **tb, int max, nlattr *head, int len)
{
	std::memset(tb, 0, sizeof(nlattr *) * (max + 1));
	nla_parse(tb, max, head, len, nullptr);
}

// The largest REPLIPIPE_A_PIPE_PAIRS nest PutPipeSpec() makes.
constexpr size_t kMaxNestBytes = 0xffff;

Status PutError(const char *what)
{
	return Status::Error(std::string("netlink message too large adding ") +
	                             what,
	                     EMSGSIZE);
}

} // namespace

Status PutPipeSpec(nl_msg *msg, const KernelPipeSpec &spec)
{
	if (nla_put_string(msg, REPLIPIPE_A_PIPE_ID, spec.id.c_str()) < 0)
		return PutError("pipe id");
	if (nla_put_string(msg, REPLIPIPE_A_PIPE_NAME, spec.name.c_str()) < 0)
		return PutError("pipe name");
	if (nla_put_u8(msg, REPLIPIPE_A_PIPE_MODE,
	               static_cast<uint8_t>(spec.mode)) < 0 ||
	    nla_put_u8(msg, REPLIPIPE_A_PIPE_FAILURE_POLICY,
	               static_cast<uint8_t>(spec.failure_policy)) < 0 ||
	    nla_put_u32(msg, REPLIPIPE_A_PIPE_MAX_LAG_KIB, spec.max_lag_kib) <
	            0 ||
	    nla_put_u32(msg, REPLIPIPE_A_PIPE_REGION_KIB, spec.region_kib) < 0)
		return PutError("pipe settings");
	// An attribute's length is 16 bits: the pairs go into as many
	// REPLIPIPE_A_PIPE_PAIRS nests as they need (libnl's nla_nest_end()
	// drops a nest past 64 KiB, which would send a pipe without pairs).
	nlattr *pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);
	if (pairs == nullptr)
		return PutError("pairs");
	for (const KernelPairSpec &pair : spec.pairs) {
		const size_t pair_bytes =
		        nla_total_size(0) +
		        nla_total_size(static_cast<int>(pair.source.size()) +
		                       1) +
		        nla_total_size(static_cast<int>(pair.target.size()) +
		                       1) +
		        nla_total_size(0);
		const size_t nest_bytes =
		        reinterpret_cast<char *>(nlmsg_tail(nlmsg_hdr(msg))) -
		        reinterpret_cast<char *>(pairs);
		if (nest_bytes + pair_bytes > kMaxNestBytes) {
			if (nla_nest_end(msg, pairs) < 0)
				return PutError("pairs");
			pairs = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIRS);
			if (pairs == nullptr)
				return PutError("pairs");
		}
		nlattr *nest = nla_nest_start(msg, REPLIPIPE_A_PIPE_PAIR);
		if (nest == nullptr ||
		    nla_put_string(msg, REPLIPIPE_A_PAIR_SRC,
		                   pair.source.c_str()) < 0 ||
		    nla_put_string(msg, REPLIPIPE_A_PAIR_TGT,
		                   pair.target.c_str()) < 0 ||
		    (pair.assume_clean &&
		     nla_put_flag(msg, REPLIPIPE_A_PAIR_ASSUME_CLEAN) < 0) ||
		    nla_nest_end(msg, nest) < 0)
			return PutError("pair");
	}
	if (nla_nest_end(msg, pairs) < 0)
		return PutError("pairs");
	return {};
}

dev_t DecodeKernelDev(uint32_t encoded)
{
	// The inverse of the kernel's new_encode_dev().
	const unsigned int major_number = (encoded & 0xfff00) >> 8;
	const unsigned int minor_number =
	        (encoded & 0xff) | ((encoded >> 12) & 0xfff00);
	return makedev(major_number, minor_number);
}

KernelPairStatus ParsePairNest(const nlattr *nest)
{
	nlattr *tb[REPLIPIPE_A_PAIR_MAX + 1];
	ParseAttrs(tb, REPLIPIPE_A_PAIR_MAX,
	           static_cast<nlattr *>(nla_data(nest)), nla_len(nest));
	KernelPairStatus pair;
	pair.source = AttrString(tb[REPLIPIPE_A_PAIR_SRC]);
	pair.target = AttrString(tb[REPLIPIPE_A_PAIR_TGT]);
	pair.state = static_cast<PairState>(AttrU8(tb[REPLIPIPE_A_PAIR_ST]));
	pair.regions = AttrU64(tb[REPLIPIPE_A_PAIR_REGIONS]);
	pair.dirty_regions = AttrU64(tb[REPLIPIPE_A_PAIR_DIRTY_REGIONS]);
	pair.writes_mirrored = AttrU64(tb[REPLIPIPE_A_PAIR_WRITES_MIRRORED]);
	pair.bytes_mirrored = AttrU64(tb[REPLIPIPE_A_PAIR_BYTES_MIRRORED]);
	pair.target_errors = AttrU64(tb[REPLIPIPE_A_PAIR_TARGET_ERRORS]);
	pair.lag_bytes = AttrU64(tb[REPLIPIPE_A_PAIR_LAG_BYTES]);
	pair.source_bytes = AttrU64(tb[REPLIPIPE_A_PAIR_SOURCE_BYTES]);
	pair.intent = AttrU8(tb[REPLIPIPE_A_PAIR_INTENT]);
	pair.intent_loaded_regions =
	        AttrU64(tb[REPLIPIPE_A_PAIR_INTENT_LOADED]);
	pair.intent_marked_regions =
	        AttrU64(tb[REPLIPIPE_A_PAIR_INTENT_MARKED]);
	pair.serial = AttrU64(tb[REPLIPIPE_A_PAIR_SERIAL]);
	if (tb[REPLIPIPE_A_PAIR_SRC_DEV] != nullptr)
		pair.source_dev =
		        DecodeKernelDev(AttrU32(tb[REPLIPIPE_A_PAIR_SRC_DEV]));
	if (tb[REPLIPIPE_A_PAIR_TGT_DEV] != nullptr)
		pair.target_dev =
		        DecodeKernelDev(AttrU32(tb[REPLIPIPE_A_PAIR_TGT_DEV]));
	return pair;
}

uint8_t GenlCommand(const nlmsghdr *hdr)
{
	if (hdr->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN)
		return 0;
	const auto *genl = static_cast<const genlmsghdr *>(
	        nlmsg_data(const_cast<nlmsghdr *>(hdr)));
	return genl->cmd;
}

Result<KernelPipeStatus> ParsePipeMessage(nlmsghdr *hdr)
{
	nlattr *tb[REPLIPIPE_A_MAX + 1];
	if (hdr->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN)
		return Status::Error("short generic netlink message", EPROTO);
	ParseAttrs(
	        tb, REPLIPIPE_A_MAX,
	        genlmsg_attrdata(static_cast<genlmsghdr *>(nlmsg_data(hdr)), 0),
	        genlmsg_attrlen(static_cast<genlmsghdr *>(nlmsg_data(hdr)), 0));
	if (tb[REPLIPIPE_A_PIPE_ID] == nullptr)
		return Status::Error("kernel message without a pipe id",
		                     EPROTO);
	KernelPipeStatus pipe;
	pipe.id = AttrString(tb[REPLIPIPE_A_PIPE_ID]);
	pipe.name = AttrString(tb[REPLIPIPE_A_PIPE_NAME]);
	pipe.mode = static_cast<Mode>(AttrU8(tb[REPLIPIPE_A_PIPE_MODE]));
	pipe.failure_policy = static_cast<FailurePolicy>(
	        AttrU8(tb[REPLIPIPE_A_PIPE_FAILURE_POLICY]));
	pipe.max_lag_kib = AttrU32(tb[REPLIPIPE_A_PIPE_MAX_LAG_KIB]);
	pipe.region_kib = AttrU32(tb[REPLIPIPE_A_PIPE_REGION_KIB]);
	// The pairs of every REPLIPIPE_A_PIPE_PAIRS nest, in order: a pipe
	// whose pairs take more than 64 KiB comes in several (nla_parse()
	// keeps only the last one in tb).
	const nlattr *top;
	int top_rem;
	nla_for_each_attr(
	        top,
	        genlmsg_attrdata(static_cast<genlmsghdr *>(nlmsg_data(hdr)), 0),
	        genlmsg_attrlen(static_cast<genlmsghdr *>(nlmsg_data(hdr)), 0),
	        top_rem)
	{
		if (nla_type(top) != REPLIPIPE_A_PIPE_PAIRS)
			continue;
		const nlattr *pos;
		int rem;
		nla_for_each_nested(pos, top, rem)
		{
			pipe.pairs.push_back(ParsePairNest(pos));
		}
	}
	// A pair event carries its one pair at the top level.
	if (tb[REPLIPIPE_A_PIPE_PAIR] != nullptr)
		pipe.pairs.push_back(ParsePairNest(tb[REPLIPIPE_A_PIPE_PAIR]));
	return pipe;
}

namespace
{

std::string ExtackOfTlvs(const char *tlvs, int len)
{
	if (len <= 0)
		return {};
	nlattr *tb[NLMSGERR_ATTR_MAX + 1];
	ParseAttrs(tb, NLMSGERR_ATTR_MAX,
	           reinterpret_cast<nlattr *>(const_cast<char *>(tlvs)), len);
	std::string message = AttrString(tb[NLMSGERR_ATTR_MSG]);
	if (!message.empty())
		return message;
	if (tb[NLMSGERR_ATTR_MISS_TYPE] != nullptr)
		return "missing attribute type " +
		       std::to_string(AttrU32(tb[NLMSGERR_ATTR_MISS_TYPE]));
	if (tb[NLMSGERR_ATTR_OFFS] != nullptr)
		return "invalid attribute at offset " +
		       std::to_string(AttrU32(tb[NLMSGERR_ATTR_OFFS]));
	return {};
}

} // namespace

std::string ExtackOfError(const nlmsghdr *hdr)
{
	if (!(hdr->nlmsg_flags & NLM_F_ACK_TLVS))
		return {};
	const size_t payload = hdr->nlmsg_len - NLMSG_HDRLEN;
	if (hdr->nlmsg_len < NLMSG_HDRLEN || payload < sizeof(nlmsgerr))
		return {};
	const char *data = static_cast<const char *>(
	        nlmsg_data(const_cast<nlmsghdr *>(hdr)));
	const auto *err = reinterpret_cast<const nlmsgerr *>(data);
	size_t offset = sizeof(nlmsgerr);
	if (!(hdr->nlmsg_flags & NLM_F_CAPPED) &&
	    err->msg.nlmsg_len > NLMSG_HDRLEN)
		offset += err->msg.nlmsg_len - NLMSG_HDRLEN;
	offset = NLMSG_ALIGN(offset);
	if (offset >= payload)
		return {};
	return ExtackOfTlvs(data + offset, static_cast<int>(payload - offset));
}

int ErrorOfDone(const nlmsghdr *hdr, std::string *extack)
{
	const size_t payload = hdr->nlmsg_len - NLMSG_HDRLEN;
	if (hdr->nlmsg_len < NLMSG_HDRLEN || payload < sizeof(int))
		return 0;
	const char *data = static_cast<const char *>(
	        nlmsg_data(const_cast<nlmsghdr *>(hdr)));
	int err;
	std::memcpy(&err, data, sizeof(err));
	if (extack != nullptr && (hdr->nlmsg_flags & NLM_F_ACK_TLVS)) {
		const size_t offset = NLMSG_ALIGN(sizeof(int));
		if (offset < payload)
			*extack = ExtackOfTlvs(
			        data + offset,
			        static_cast<int>(payload - offset));
	}
	return err < 0 ? -err : err;
}

Status KernelError(int err, const std::string &extack)
{
	if (extack.empty())
		return Status::Error(std::strerror(err), err);
	return Status::FromErrno(extack, err);
}

} // namespace replipipe
