// RegionCopier: copies byte ranges of a source device to the same offsets of
// a target device with io_uring (liburing).
//
// The loop is liburing's io_uring-cp: at most queue_depth chunks in flight,
// each owning one slot of a registered buffer; a completed read becomes the
// write of the same slot (no copy in user space); -EAGAIN/-EINTR are
// resubmitted (EAGAIN after a short pause, a bounded number of times in a
// row), short transfers continue where they stopped. Both devices are
// opened O_DIRECT; if the open refuses O_DIRECT (EINVAL, e.g. some
// filesystems) that device falls back to buffered I/O and it is logged. A
// transfer that is not a multiple of the device's direct-I/O alignment (the
// unaligned tail of a regular file) goes through a second, buffered fd.
//
// On an error or a stop request, no new I/O is issued and everything in
// flight is drained before Copy() returns; the ring is idle between calls.
// That holds when the ring itself broke too (a submit failed or was refused
// too often): Copy() waits for every request the kernel still holds, so
// that the target is no longer written and the buffers are unused once it
// returns. Only a wait that fails (io_uring_wait_cqe) returns with requests
// in the kernel: in_flight() counts them, Settle() waits for them without
// io_uring_enter, and the destructor does too. Nothing the kernel may still
// use (the buffers, the ring) is ever freed, and nothing that owns the copier
// may let its target go to another copy, before they have completed.
// A submission the kernel refuses for want of resources (EAGAIN, EBUSY) is
// retried after completions are reaped, or, with none to reap, after a
// short sleep, a bounded number of times. A completion that is none of the
// copier's requests is ignored. Copy() does not make the target durable:
// Sync() does, once per batch of copies (a resync claim) rather than per
// write.
//
// Copy() runs at full speed: the rate limit paces the claims between
// copies (PairResync), never a copy.
//
// Open() fails (EBUSY) while another open of the target holds a flock, and
// the copier then holds a shared one on the target until its fds are
// closed. A process that exits with writes in flight leaves them to the
// kernel, and each keeps its open file, so its lock, until it lands: a
// restarted daemon does not copy to the target before the writes of the
// one that died are done (they could overwrite its newer copy).
//
// Thread-safety: Copy(), Settle(), in_flight() and the destructor from one
// thread at a time, the one that calls Copy() (the kernel posts some
// completions only when that thread enters or leaves a system call).
// RequestStop(), stop_requested(), batch_bytes() and copied_bytes() from any
// thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>

#include "status.h"

namespace replipipe
{

struct CopierOptions {
	// Requests in flight and their size. 32 x 1 MiB: on this host's
	// virtio disk (tests/bench/resync-host.sh, 1 GiB file, median of 3)
	// 952 MB/s against 298 for dd bs=1M direct; QD 16 x 1 MiB 682, QD 4
	// 602, QD 1 260; 256 KiB chunks peak lower (661 at QD 16). The design
	// notes' dm-delay legs (5 ms) need >= 16 in flight to near fio's
	// ~500 MB/s. 32 MiB of pinned buffers per copier.
	uint32_t queue_depth = 32;
	uint32_t chunk_bytes = 1u << 20; // multiple of 4096
	// The resync rate limit (0 = unlimited). Copy() ignores it: it always
	// copies at full speed, because a resync claim holds application
	// writes to its regions while it is copied. PairResync paces its
	// claims with it instead (resync_rate.h).
	uint64_t rate_limit_kibps = 0;
	// The block devices the kernel mirrors, the source's primary and the
	// target (REPLIPIPE_A_PAIR_SRC_DEV, _TGT_DEV; 0: not reported). Open()
	// refuses a path that names another device (ENODEV).
	dev_t expected_source_rdev = 0;
	dev_t expected_target_rdev = 0;
	// How long Open() waits for another open of the target that holds a
	// flock (writes a replipiped that exited left in flight, or another
	// program) before it fails with EBUSY. The copier holds a shared
	// flock on the target until its fds are closed, which is after its
	// last request has completed, even when the process has exited.
	std::chrono::milliseconds target_lock_wait{1000};
	// Tests only: called with each completion before it is handled, and
	// with the result of Sync()'s fdatasync (offset 0); a negative errno
	// replaces the result (fault injection).
	enum class Op { kRead, kWrite, kSync };
	std::function<int(Op op, uint64_t offset, int result)> inject;
	// Tests only: called before each io_uring_submit; a negative errno is
	// taken as the submit's result and nothing is submitted (the kernel
	// refusing a submission: EAGAIN, EBUSY).
	std::function<int()> inject_submit;
	// Tests only: called before each io_uring_wait_cqe; a negative errno
	// is taken as the wait's result and no wait is made (a ring whose
	// wait fails: EFAULT, ENXIO).
	std::function<int()> inject_wait;
	// Tests only: each Copy() first completes a NOP with this user_data,
	// a completion that is none of the copier's requests (as liburing's
	// own timeout with LIBURING_UDATA_TIMEOUT).
	std::optional<uint64_t> stray_completion;
	// Tests only: each Copy() first submits a one-byte read of this fd (a
	// pipe the test writes to when it likes), a request of no slot that
	// the kernel holds until then (as a slow device would).
	std::optional<int> held_read_fd;
};

class RegionCopier
{
public:
	// Opens source (read) and target (write; never created or truncated).
	static Result<std::unique_ptr<RegionCopier>>
	Open(const std::string &source_path, const std::string &target_path,
	     const CopierOptions &options);
	// Waits for the requests still in the kernel (Settle()), however long
	// they take, before it frees the buffers and closes the ring.
	~RegionCopier();
	RegionCopier(const RegionCopier &) = delete;
	RegionCopier &operator=(const RegionCopier &) = delete;

	using Deadline = std::chrono::steady_clock::time_point;
	// Copies [offset, offset + length) clamped to the source size.
	// Blocks until done, failed (first error, with the device, offset and
	// errno), stopped (ECANCELED) or past the deadline before the end
	// (ETIME: a resync claim the kernel drops at its deadline is not
	// worth copying further; a device's own ETIME or ECANCELED is EIO).
	// Nothing is in flight on return, unless the ring failed to wait for
	// the requests in flight (the error says how many are left): then
	// in_flight() > 0 until Settle() has seen them complete. A copier whose
	// ring failed copies no more.
	Status Copy(uint64_t offset, uint64_t length,
	            Deadline deadline = Deadline::max());
	// Requests submitted and not seen completed: 0 but after a Copy()
	// whose ring failed to wait for them.
	uint64_t in_flight() const;
	// Waits until in_flight() is 0 (OK) or the deadline has passed
	// (ETIME, "resync: <n> requests of <source> -> <target> still in the
	// kernel"). It reads the completion queue, polling, without the
	// io_uring_enter that failed; a ring that never completes them keeps
	// them in flight for good.
	Status Settle(Deadline deadline = Deadline::max());
	// Makes everything Copy() wrote to the target durable: one fdatasync,
	// which writes back the target's page cache (the buffered writes) and
	// flushes the device's volatile write cache (the O_DIRECT ones).
	// Error: "fdatasync <target>: <strerror>".
	Status Sync();

	uint64_t source_bytes() const;
	uint64_t target_bytes() const;
	// Both sides opened O_DIRECT.
	bool direct_io() const;
	// Buffers registered with the ring (read_fixed/write_fixed).
	bool fixed_buffers() const;

	void RequestStop() { stop_.store(true); }
	bool stop_requested() const { return stop_.load(); }

	// Bytes written by the current (or last) Copy() call.
	uint64_t batch_bytes() const { return batch_bytes_.load(); }
	// Bytes written since Open().
	uint64_t copied_bytes() const { return copied_bytes_.load(); }

	struct Impl;

private:
	explicit RegionCopier(std::unique_ptr<Impl> impl);

	std::unique_ptr<Impl> impl_;
	std::atomic<bool> stop_{false};
	std::atomic<uint64_t> batch_bytes_{0};
	std::atomic<uint64_t> copied_bytes_{0};
};

} // namespace replipipe
