#include "resync_pair.h"

#include <linux/replipipe.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "log.h"

namespace replipipe
{
namespace
{

// A claim holds writes to its regions and is lost whole if the daemon dies
// (the regions stay dirty and are copied again), so its size is capped: one
// full queue (queue_depth x chunk_bytes, 32 MiB by default), at least 8 MiB,
// and at most a quarter second's worth of the rate limit (a write to a
// claimed region waits for the whole claim, and a claim is copied at full
// speed: the limit waits between claims). Within the cap the ClaimSizer
// sizes claims from the target's measured speed (resync_claim_size.h).
// Smaller claims drain the queue between claims: tests/bench/resync-vm.sh
// measured 220 MB/s with 8 MiB claims against 520 with 32 or 64 MiB (QD 32 x
// 1 MiB, 5 ms legs); a fast target grows back to the cap in a few claims.
constexpr uint64_t kMinDefaultClaimBytes = 8ull << 20;
// SettleCopy() says it still waits this often.
constexpr auto kSettleLogEvery = std::chrono::minutes(1);

int64_t NowNs()
{
	return std::chrono::duration_cast<std::chrono::nanoseconds>(
	               std::chrono::steady_clock::now().time_since_epoch())
	        .count();
}

// "1.2 s": a duration for a log line.
std::string Seconds(std::chrono::nanoseconds d)
{
	char buf[32];
	std::snprintf(buf, sizeof(buf), "%.1f s",
	              std::chrono::duration<double>(d).count());
	return buf;
}

} // namespace

Result<std::unique_ptr<PairResync>>
PairResync::Create(const PairResyncOptions &options, ClaimSource *claims)
{
	auto copier = RegionCopier::Open(options.source_path,
	                                 options.target_path, options.copier);
	if (!copier.ok())
		return copier.status().Context("resync pipe " +
		                               options.pipe_id + " pair " +
		                               options.source);
	return std::make_unique<PairResync>(options, claims,
	                                    std::move(*copier));
}

PairResync::PairResync(const PairResyncOptions &options, ClaimSource *claims,
                       std::unique_ptr<RegionCopier> copier)
    : options_(options), claims_(claims), copier_(std::move(copier)),
      // Credit saved while claims are slower than the limit is capped at
      // a quarter second, like a claim: the burst after stays as short.
      pace_(options.copier.rate_limit_kibps * 1024,
            std::max<uint64_t>(options.copier.rate_limit_kibps * 1024 / 4, 1))
{
	ClaimSizer::Options sizing;
	sizing.region_bytes = std::max<uint64_t>(options_.region_bytes, 1);
	sizing.target = options_.claim_target;
	sizing.fixed = options_.max_regions_per_claim != 0;
	if (sizing.fixed) {
		sizing.max_regions = options_.max_regions_per_claim;
	} else {
		uint64_t claim_bytes = std::max<uint64_t>(
		        kMinDefaultClaimBytes,
		        uint64_t{options_.copier.queue_depth} *
		                options_.copier.chunk_bytes);
		if (options_.copier.rate_limit_kibps != 0)
			claim_bytes = std::min<uint64_t>(
			        claim_bytes,
			        options_.copier.rate_limit_kibps * 1024 / 4);
		sizing.max_regions = static_cast<uint32_t>(
		        std::clamp<uint64_t>(claim_bytes / sizing.region_bytes,
		                             1, REPLIPIPE_CLAIM_MAX_REGIONS));
	}
	sizer_ = ClaimSizer(sizing);
	RefreshClaimTimeout();
}

void PairResync::RequestStop()
{
	copier_->RequestStop();
	// Under the lock: Pace() checks the flag and waits under it, so the
	// wake-up cannot fall between the two.
	std::lock_guard<std::mutex> lock(stop_mu_);
	stop_cv_.notify_all();
}

bool PairResync::Pace()
{
	std::unique_lock<std::mutex> lock(stop_mu_);
	for (;;) {
		if (copier_->stop_requested())
			return false;
		const auto wait = pace_.Wait(0);
		if (wait <= TokenBucket::Clock::duration::zero())
			return true;
		stop_cv_.wait_for(lock, wait);
	}
}

void PairResync::RefreshClaimTimeout()
{
	if (options_.claim_timeout.count() > 0) {
		sizer_.SetClaimTimeout(options_.claim_timeout);
		return;
	}
	auto secs = ReadClaimTimeout(options_.claim_timeout_path);
	sizer_.SetClaimTimeout(secs ? ClaimSizer::Duration(*secs)
	                            : ClaimSizer::kDefaultTimeout);
}

// how: what became of the claim ("the kernel dropped it (...)");
// copied_regions: how many of its regions were copied in elapsed, which
// sizes the next claims. A lost claim of one region ends the resync: not
// even one region fits the time-out.
Status PairResync::ClaimLost(const RegionClaim &claim,
                             ClaimSizer::Duration elapsed,
                             const std::string &how, uint64_t copied_regions)
{
	const uint64_t region = options_.region_bytes;
	const std::string what =
	        "claim " + std::to_string(claim.id) + " (regions " +
	        std::to_string(claim.first) + "+" +
	        std::to_string(claim.count) + ", " +
	        std::to_string(uint64_t{claim.count} * region) +
	        " bytes) lasted " + Seconds(elapsed) +
	        " (claim, copy, fdatasync) against claim_timeout_sec " +
	        Seconds(sizer_.claim_timeout()) + "; " + how +
	        ", its regions stay dirty";
	claims_lost_.fetch_add(1);
	if (!sizer_.Lost(claim.count,
	                 static_cast<uint32_t>(std::min<uint64_t>(
	                         copied_regions, claim.count)),
	                 elapsed))
		return Status::Error(what + "; not even one region can be "
		                            "copied in time: the target is "
		                            "too slow or stuck",
		                     ETIMEDOUT);
	LogWarning() << "resync pipe " << options_.pipe_id << " pair "
	             << options_.source << ": " << what
	             << "; carrying on with claims of " << sizer_.next()
	             << " regions (" << uint64_t{sizer_.next()} * region
	             << " bytes)";
	return {};
}

Status PairResync::Run()
{
	Status st = RunClaims();
	SettleCopy();
	return st.Context("resync pipe " + options_.pipe_id + " pair " +
	                  options_.source);
}

void PairResync::SettleCopy()
{
	if (copier_->in_flight() == 0)
		return;
	const std::string who = "resync pipe " + options_.pipe_id + " pair " +
	                        options_.source + " -> " + options_.target_path;
	LogError() << who << ": " << copier_->in_flight()
	           << " requests of its copy are still in the kernel after "
	              "its io_uring failed; the job ends, and its target "
	              "takes another, once they have completed";
	const auto started = std::chrono::steady_clock::now();
	for (;;) {
		Status st = copier_->Settle(std::chrono::steady_clock::now() +
		                            kSettleLogEvery);
		const auto waited = std::chrono::steady_clock::now() - started;
		if (st.ok()) {
			LogNotice() << who << ": the requests of its copy "
			            << "completed after " << Seconds(waited);
			return;
		}
		LogWarning() << who << ": " << st.message() << " after "
		             << Seconds(waited) << "; still waiting";
	}
}

Status PairResync::RunClaims()
{
	const uint64_t region = options_.region_bytes;
	// The last region of a pair whose primary grew since it was made
	// ends past the pair: copied to its end, it would write past a
	// target of the pair's size (ENOSPC on every try, a resync that
	// never ends).
	uint64_t size = copier_->source_bytes();
	if (options_.pair_bytes)
		size = std::min(size, options_.pair_bytes);
	if (region == 0)
		return Status::Error("region size is 0", EINVAL);
	start_ns_.store(NowNs());
	auto dirty = claims_->DirtyRegions();
	if (!dirty.ok())
		return dirty.status();
	total_bytes_.store(std::min(*dirty * region, size));

	uint64_t hint = 0;
	for (;;) {
		// The rate limit waits here, between claims, where no write
		// waits for it.
		if (!Pace())
			return Status::Error("stopped", ECANCELED);
		RefreshClaimTimeout();
		const auto asked = std::chrono::steady_clock::now();
		auto claim = claims_->Claim(hint, sizer_.next());
		if (!claim.ok())
			return claim.status();
		// The kernel's deadline starts inside Claim(), after any wait
		// at a removed pair's fence and before the drain of writes in
		// flight. Without its word on the time left, the claim is
		// timed from the request: never later than the kernel.
		const auto deadline =
		        claim->time_left ? std::chrono::steady_clock::now() +
		                                   *claim->time_left
		                         : asked + sizer_.claim_timeout();
		// Since when the claim has held writes: its size is measured
		// against that (ClaimSizer).
		const auto started = deadline - sizer_.claim_timeout();
		if (claim->count == 0) {
			if (hint == 0) {
				// Clean: the estimate becomes the count.
				total_bytes_.store(committed_bytes_.load());
				return {};
			}
			hint = 0;
			continue;
		}
		const uint64_t offset = claim->first * region;
		const uint64_t length =
		        offset < size
		                ? std::min(uint64_t{claim->count} * region,
		                           size - offset)
		                : 0;
		copying_.store(true);
		// Past the kernel's deadline the claim is dropped (the writes
		// it held go on to both legs): the rest of its copy would be
		// wasted, so the copier stops there.
		Status st = copier_->Copy(offset, length, deadline);
		// Done makes the kernel clear the regions' dirty bits (and the
		// write-intent record forget them): only once the copy is on
		// stable storage, or a power loss of a target with a volatile
		// cache leaves an InSync pair with stale blocks.
		if (st.ok())
			st = copier_->Sync();
		copying_.store(false);
		pace_.Take(copier_->batch_bytes());
		const auto elapsed = std::chrono::steady_clock::now() - started;
		if (st.err() == ETIME) {
			// Given up, not failed: the regions stay dirty whether
			// the kernel ends the claim now or dropped it already.
			Status failed = claims_->Failed(claim->id);
			if (!failed.ok() && failed.err() != ENOENT)
				return failed;
			st = ClaimLost(*claim, elapsed,
			               "its copy stopped at the deadline (" +
			                       st.message() + ")",
			               copier_->batch_bytes() / region);
			if (!st.ok())
				return st;
			hint = claim->first;
			continue;
		}
		if (!st.ok()) {
			Status failed = claims_->Failed(claim->id);
			if (!failed.ok())
				LogWarning()
				        << "resync pipe " << options_.pipe_id
				        << " pair " << options_.source << ": "
				        << failed.message();
			return st;
		}
		st = claims_->Done(claim->id);
		// The kernel drops a claim past its deadline when its reaper
		// looks, once a second. A claim
		// gone sooner was ended by something else (its pair removed):
		// that is an error, not a target too slow for the claim. Timed
		// to Done's answer: RESYNC_DONE waits for rp_config_lock (a
		// PIPE_SET may hold it for seconds), and the reaper may drop
		// the claim meanwhile.
		if (!st.ok() && st.err() == ENOENT &&
		    std::chrono::steady_clock::now() +
		                    std::chrono::seconds(1) >=
		            deadline) {
			// Dropped, not failed: the copy stands, but a write
			// released by the drop may have reached the primary
			// after it was read, so the bits stay set and the
			// regions are copied again, in smaller claims.
			st = ClaimLost(*claim, elapsed,
			               "the kernel dropped it (" +
			                       st.message() + ")",
			               claim->count);
			if (!st.ok())
				return st;
			hint = claim->first;
			continue;
		}
		if (!st.ok())
			return st;
		sizer_.Finished(claim->count, elapsed);
		const uint64_t done =
		        committed_bytes_.fetch_add(length) + length;
		claims_done_.fetch_add(1);
		// Regions dirtied after the start add to the work.
		if (done > total_bytes_.load())
			total_bytes_.store(done);
		hint = claim->first + claim->count;
	}
}

ResyncProgress PairResync::progress() const
{
	ResyncProgress p;
	p.done_bytes = committed_bytes_.load();
	// The claim being copied counts as it goes (bytes of a claim that then
	// fails are no longer counted).
	const uint64_t current = copying_.load() ? copier_->batch_bytes() : 0;
	p.total_bytes = total_bytes_.load();
	if (p.done_bytes + current <= p.total_bytes)
		p.done_bytes += current;
	p.claims = claims_done_.load();
	p.claims_lost = claims_lost_.load();
	const int64_t start = start_ns_.load();
	if (start != 0) {
		const double secs = (NowNs() - start) / 1e9;
		if (secs > 0)
			p.rate_bytes_per_s =
			        static_cast<uint64_t>(p.done_bytes / secs);
	}
	return p;
}

Result<std::string> BackstorePrimaryDevice(const std::string &backstore,
                                           const std::string &configfs_core)
{
	const std::string path = configfs_core + "/" + backstore + "/udev_path";
	std::ifstream in(path);
	if (!in)
		return Status::FromErrno("read " + path,
		                         errno ? errno : ENOENT);
	std::string dev;
	std::getline(in, dev);
	while (!dev.empty() && (dev.back() == '\n' || dev.back() == ' '))
		dev.pop_back();
	if (dev.empty())
		return Status::Error("backstore " + backstore +
		                             " has no udev_path (" + path + ")",
		                     ENOENT);
	return dev;
}

} // namespace replipipe
