// NetlinkResyncChannel: the resync region protocol over its own generic
// netlink socket. A claim belongs to the socket that made it: closing the
// channel (destroying it) makes the kernel drop its open claims, whose
// regions stay dirty.
//
// Thread-safety: every method takes mu_; a claim loop normally owns one
// channel per pair or per engine.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "netlink_socket.h"
#include "resync_claims.h"

namespace replipipe
{

// A pair's dirty bitmap: bit i (little-endian within each byte) is region i.
struct DirtyBitmap {
	uint64_t nbits = 0;
	std::vector<uint8_t> bits; // (nbits + 7) / 8 bytes

	bool test(uint64_t i) const { return (bits[i / 8] >> (i % 8)) & 1; }
	uint64_t count() const;
};

class NetlinkResyncChannel
{
public:
	static Result<std::unique_ptr<NetlinkResyncChannel>>
	Open(std::chrono::milliseconds timeout = kNetlinkDefaultTimeout);

	// pair_serial: the REPLIPIPE_A_PAIR_SERIAL of the pair the claim is
	// for (0: any pair with that source; older modules report none). The
	// kernel refuses a claim on another pair with ESTALE. Returns once the
	// claim is granted or failed. keep_waiting (if set) sees the claim's id
	// at each answer that it is pending; false gives the claim up
	// (RESYNC_FAILED) and Claim() fails with ECANCELED.
	Result<RegionClaim>
	Claim(const std::string &pipe_id, const std::string &source,
	      uint64_t hint, uint32_t max_regions, uint64_t pair_serial = 0,
	      const std::function<bool(uint64_t)> &keep_waiting = {});
	Status Done(uint64_t claim_id);
	Status Failed(uint64_t claim_id);
	// BITMAP_GET dump, chunks reassembled.
	Result<DirtyBitmap> GetBitmap(const std::string &pipe_id,
	                              const std::string &source);

private:
	explicit NetlinkResyncChannel(std::unique_ptr<NetlinkSocket> sock)
	    : sock_(std::move(sock))
	{
	}
	Status Finish(uint8_t cmd, uint64_t claim_id, const char *what);
	Status ClaimStep(NlMsgPtr msg, RegionClaim *claim, bool *pending);

	std::mutex mu_;
	std::unique_ptr<NetlinkSocket> sock_; // guarded by mu_
};

// Adds one BITMAP_GET reply (NBITS sizes the bitmap on first sight; DATA
// at OFFSET fills it). Exposed for unit tests.
Status MergeBitmapMessage(nlmsghdr *hdr, DirtyBitmap *bitmap);
// A RESYNC_CLAIM or RESYNC_CLAIM_WAIT reply: a granted claim (count 0:
// nothing was dirty), or a pending one (*pending; only claim->id is set).
// Exposed for unit tests.
Status ParseClaimReply(nlmsghdr *hdr, RegionClaim *claim, bool *pending);
// The attributes of a RESYNC_CLAIM request; REPLIPIPE_A_CLAIM_PAIR_SERIAL
// only when pair_serial is not 0. Exposed for unit tests.
Status PutClaimRequest(nl_msg *msg, const std::string &pipe_id,
                       const std::string &source, uint64_t hint,
                       uint32_t max_regions, uint64_t pair_serial);

// ClaimSource for one pair over a channel (which must outlive it). With a
// pair_serial (not 0) every claim names the pair it was planned for: once a
// PIPE_SET has replaced that pair, Claim() fails with ESTALE.
class NetlinkPairClaims final : public ClaimSource
{
public:
	NetlinkPairClaims(NetlinkResyncChannel *channel, std::string pipe_id,
	                  std::string source, uint64_t pair_serial = 0)
	    : channel_(channel), pipe_id_(std::move(pipe_id)),
	      source_(std::move(source)), pair_serial_(pair_serial)
	{
	}
	Result<RegionClaim> Claim(uint64_t hint, uint32_t max_regions) override
	{
		return channel_->Claim(
		        pipe_id_, source_, hint, max_regions, pair_serial_,
		        [this](uint64_t) { return !stopping_.load(); });
	}
	// A claim pending now or later is given up (ECANCELED) rather than
	// waited for, up to twice claim_timeout_sec. Any thread.
	void RequestStop() { stopping_ = true; }
	Status Done(uint64_t claim_id) override
	{
		return channel_->Done(claim_id);
	}
	Status Failed(uint64_t claim_id) override
	{
		return channel_->Failed(claim_id);
	}
	Result<uint64_t> DirtyRegions() override;

private:
	NetlinkResyncChannel *channel_;
	std::atomic<bool> stopping_{false};
	std::string pipe_id_;
	std::string source_;
	uint64_t pair_serial_;
};

} // namespace replipipe
