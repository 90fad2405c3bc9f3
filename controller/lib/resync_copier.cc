#include "resync_copier.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "log.h"
#include "target_lock.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

constexpr uint32_t kBufferAlign = 4096;
// Alignment of offsets and lengths for O_DIRECT on a regular file: the
// largest logical block size in use; smaller tails go through buffered I/O.
constexpr uint32_t kFileDirectAlign = 4096;
// -EAGAIN/-EINTR resubmissions of one request, or refused submissions in a
// row, before giving up.
constexpr unsigned kMaxRetries = 1000;
// Before a transfer that came back EAGAIN is sent again, and between two
// submissions the kernel refused with nothing in flight: 1000 tries take at
// least a second. Sent back at once, a transfer the device keeps turning
// away spent its tries in a few milliseconds of round trips, failing the
// claim on any shortage longer than that.
constexpr auto kRetryPause = std::chrono::milliseconds(1);
// user_data of CopierOptions::held_read_fd's read: no slot.
constexpr uint64_t kHeldReadData = ~uint64_t{0} - 1;
// Settle() looks at the completion queue after 1 ms, then twice as late
// each time, up to every 100 ms: a request that completes soon is seen
// soon, and one that never does costs ten wake-ups a second.
constexpr auto kSettlePollFirst = std::chrono::milliseconds(1);
constexpr auto kSettlePollMax = std::chrono::milliseconds(100);

// A transfer or sync of a device failed with err. ESTALE and ENOENT name
// the claim protocol's results to ResyncJobs (the pair was replaced or
// removed: the job ends without a back-off and its pipe plans again at
// once), ETIME and ECANCELED the copier's own (past the claim's deadline,
// stopped); from a device they are I/O errors like any other, reported as
// EIO with the device's own reason in the text. Else a stale NFS handle
// made a job that failed at once start again at once, forever, and a
// device's ETIME (the block layer's for a command duration limit, since
// Linux 6.5) was taken for a claim lost to a slow target.
Status DeviceIoError(const std::string &what, int err)
{
	Status st = Status::FromErrno(what, err);
	if (err != ESTALE && err != ENOENT && err != ETIME && err != ECANCELED)
		return st;
	return Status::Error(st.message(), EIO);
}

struct FreeDeleter {
	void operator()(void *p) const { std::free(p); }
};

// One side of the copy.
struct Device {
	std::string path;
	UniqueFd fd;          // O_DIRECT unless refused
	UniqueFd buffered_fd; // for transfers O_DIRECT cannot take
	bool direct = false;
	uint32_t align = 1; // offset/length alignment of fd when direct
	uint64_t size = 0;
};

// "8:16".
std::string DevNumber(dev_t rdev)
{
	return std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
}

// Two opens of one path name the same file (the path may have been
// re-pointed between them).
bool SameFile(const struct stat &a, const struct stat &b)
{
	if (S_ISBLK(a.st_mode) || S_ISBLK(b.st_mode))
		return S_ISBLK(a.st_mode) && S_ISBLK(b.st_mode) &&
		       a.st_rdev == b.st_rdev;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Opens @path for the copy. @expected_rdev (0: none) is the block device
// the kernel mirrors: a path that names another device by now is refused,
// or the copy would read or overwrite a disk that is not the pair's.
Status OpenDevice(const std::string &path, int access, dev_t expected_rdev,
                  Device *dev)
{
	dev->path = path;
	dev->fd.Reset(::open(path.c_str(), access | O_DIRECT | O_CLOEXEC));
	dev->direct = dev->fd.valid();
	if (!dev->fd.valid()) {
		if (errno != EINVAL)
			return Status::FromErrno("open " + path, errno);
		LogWarning() << "resync: " << path
		             << " refuses O_DIRECT; using buffered I/O";
		dev->fd.Reset(::open(path.c_str(), access | O_CLOEXEC));
		if (!dev->fd.valid())
			return Status::FromErrno("open " + path, errno);
	}
	dev->buffered_fd.Reset(::open(path.c_str(), access | O_CLOEXEC));
	if (!dev->buffered_fd.valid())
		return Status::FromErrno("open " + path, errno);
	struct stat st;
	struct stat buffered_st;
	if (fstat(dev->fd.get(), &st) < 0 ||
	    fstat(dev->buffered_fd.get(), &buffered_st) < 0)
		return Status::FromErrno("stat " + path, errno);
	if (!SameFile(st, buffered_st))
		return Status::Error(path + " changed while it was opened",
		                     ENODEV);
	if (expected_rdev != 0 &&
	    (!S_ISBLK(st.st_mode) || st.st_rdev != expected_rdev))
		return Status::Error(
		        path + " is " +
		                (S_ISBLK(st.st_mode)
		                         ? "block device " +
		                                   DevNumber(st.st_rdev)
		                         : std::string("not a block device")) +
		                " but the kernel mirrors block device " +
		                DevNumber(expected_rdev) +
		                " (the path was re-pointed since the pipe was "
		                "set); not copying",
		        ENODEV);
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(dev->fd.get(), BLKGETSIZE64, &dev->size) < 0)
			return Status::FromErrno("size of " + path, errno);
		int lbs = 512;
		if (ioctl(dev->fd.get(), BLKSSZGET, &lbs) < 0)
			return Status::FromErrno("block size of " + path,
			                         errno);
		dev->align = static_cast<uint32_t>(lbs);
	} else if (S_ISREG(st.st_mode)) {
		dev->size = static_cast<uint64_t>(st.st_size);
		dev->align = kFileDirectAlign;
	} else {
		return Status::Error(path + " is neither a block device nor a "
		                            "regular file",
		                     EINVAL);
	}
	if (!dev->direct)
		dev->align = 1;
	return {};
}

enum class Phase { kRead, kWrite };

// One chunk in flight; its index is its buffer slot and its user_data.
struct Request {
	Phase phase = Phase::kRead;
	uint64_t offset = 0; // of the chunk on both devices
	uint32_t length = 0; // valid bytes of the chunk
	uint32_t done = 0;   // bytes of the current phase transferred
	unsigned retries = 0;
	uint64_t io_offset = 0; // of the last submitted transfer
};

} // namespace

struct RegionCopier::Impl {
	~Impl()
	{
		// ~RegionCopier() settled what a failed wait left in flight.
		assert(outstanding() == 0);
		if (ring_ready)
			io_uring_queue_exit(&ring);
	}

	Status Copy(RegionCopier *owner, uint64_t offset, uint64_t length,
	            Deadline deadline);
	Status Submit(unsigned *refused, bool *again);
	// io_uring_wait_cqe (or CopierOptions::inject_wait's failure).
	int Wait();
	// Handles every completion that is ready.
	void Reap(RegionCopier *owner);
	// The ring broke (why): waits for what the kernel still holds.
	Status Drain(RegionCopier *owner, Status why);
	// Waits, polling the completion queue, for what a failed wait left.
	Status Settle(RegionCopier *owner, Deadline deadline);
	// Submitted to the kernel and not completed yet, the copier's
	// requests and the others (a test's stray or held request).
	uint64_t outstanding() const { return submitted - completed; }
	void Prepare(uint32_t slot);
	void Complete(RegionCopier *owner, uint32_t slot, int res);
	// The slot's transfer ended: free for the next read. Does not
	// allocate (free_slots has queue_depth's capacity).
	void Release(uint32_t slot) noexcept;
	// A completion whose handling threw: the transfer failed.
	void FailUnhandled(uint32_t slot) noexcept;
	bool stopping(const RegionCopier *owner) const
	{
		return !error.ok() || owner->stop_requested() || expired;
	}
	// "resync: <source> -> <target>", for the ring's own errors: a failed
	// job's error is logged as worded here, so it must say whose copy the
	// ring ended, as a transfer's error does with its device and offset.
	std::string who() const
	{
		return "resync: " + source.path + " -> " + target.path;
	}

	// Set once the deadline of the Copy() running has passed.
	bool expired = false;
	// A transfer came back EAGAIN and is queued again: the next submit
	// waits kRetryPause first.
	bool retry_pause = false;
	uint8_t held_byte = 0; // CopierOptions::held_read_fd reads here

	CopierOptions options;
	Device source;
	Device target;
	std::unique_ptr<uint8_t, FreeDeleter> buffers; // queue_depth chunks
	bool fixed = false;
	io_uring ring{};
	bool ring_ready = false;
	bool ring_broken = false;
	// Every SQE the kernel took, every CQE seen: one CQE per SQE (no
	// multishot requests here).
	uint64_t submitted = 0;
	uint64_t completed = 0;

	// State of the Copy() running.
	std::vector<Request> requests;
	std::vector<uint32_t> free_slots;
	uint32_t inflight = 0;
	Status error; // the first error wins
};

RegionCopier::RegionCopier(std::unique_ptr<Impl> impl) : impl_(std::move(impl))
{
}

RegionCopier::~RegionCopier()
{
	if (impl_->outstanding() == 0)
		return;
	try {
		LogWarning() << impl_->who() << ": " << impl_->outstanding()
		             << " requests still in the kernel; waiting for "
		                "them before the copier is freed";
		(void)impl_->Settle(this, Deadline::max());
	} catch (...) {
		// Out of memory while handling a completion: the kernel may
		// still use the buffers and write the target. They are left
		// allocated, the ring and the fds open, rather than freed
		// under it.
		(void)impl_.release();
	}
}

uint64_t RegionCopier::source_bytes() const
{
	return impl_->source.size;
}
uint64_t RegionCopier::target_bytes() const
{
	return impl_->target.size;
}
bool RegionCopier::direct_io() const
{
	return impl_->source.direct && impl_->target.direct;
}
bool RegionCopier::fixed_buffers() const
{
	return impl_->fixed;
}
uint64_t RegionCopier::in_flight() const
{
	return impl_->outstanding();
}

Result<std::unique_ptr<RegionCopier>>
RegionCopier::Open(const std::string &source_path,
                   const std::string &target_path, const CopierOptions &options)
{
	if (options.queue_depth == 0 || options.queue_depth > 4096)
		return Status::Error("resync queue depth must be 1..4096",
		                     EINVAL);
	if (options.chunk_bytes == 0 || options.chunk_bytes % kBufferAlign ||
	    options.chunk_bytes > (64u << 20))
		return Status::Error("resync chunk size must be a multiple of "
		                     "4 KiB, at most 64 MiB",
		                     EINVAL);
	auto impl = std::make_unique<Impl>();
	impl->options = options;
	Status st = OpenDevice(source_path, O_RDONLY,
	                       options.expected_source_rdev, &impl->source);
	// The target's flock (target_lock.h) is taken before the target is
	// opened for writing, and the fds that write it hold it after.
	UniqueFd target_lock;
	if (st.ok()) {
		auto lock = AcquireTargetLock(target_path,
		                              options.target_lock_wait);
		if (lock.ok())
			target_lock = std::move(*lock);
		else
			st = lock.status();
	}
	if (st.ok())
		st = OpenDevice(target_path, O_WRONLY,
		                options.expected_target_rdev, &impl->target);
	if (st.ok())
		st = ShareTargetLock(target_path, target_lock,
		                     {impl->target.fd.get(),
		                      impl->target.buffered_fd.get()});
	if (!st.ok())
		return st;
	for (const Device *d : {&impl->source, &impl->target})
		if (options.chunk_bytes % d->align != 0)
			return Status::Error(
			        "resync chunk size is not a multiple of the "
			        "block size of " +
			                d->path,
			        EINVAL);

	const size_t total = size_t{options.queue_depth} * options.chunk_bytes;
	void *mem = nullptr;
	if (posix_memalign(&mem, kBufferAlign, total) != 0)
		return Status::Error("resync: cannot allocate " +
		                             std::to_string(total >> 20) +
		                             " MiB of buffers",
		                     ENOMEM);
	impl->buffers.reset(static_cast<uint8_t *>(mem));

	unsigned entries = 1;
	while (entries < options.queue_depth)
		entries <<= 1;
	int rc = io_uring_queue_init(entries, &impl->ring, 0);
	if (rc < 0)
		return Status::FromErrno("resync: io_uring_queue_init", -rc);
	impl->ring_ready = true;

	std::vector<iovec> iov(options.queue_depth);
	for (uint32_t i = 0; i < options.queue_depth; ++i)
		iov[i] = {impl->buffers.get() + size_t{i} * options.chunk_bytes,
		          options.chunk_bytes};
	rc = io_uring_register_buffers(&impl->ring, iov.data(), iov.size());
	impl->fixed = rc == 0;
	if (rc < 0)
		// Typically RLIMIT_MEMLOCK without CAP_IPC_LOCK: still no
		// copies, only per-I/O page pinning.
		LogWarning()
		        << impl->who()
		        << ": io_uring_register_buffers: " << std::strerror(-rc)
		        << "; using unregistered buffers";
	return std::unique_ptr<RegionCopier>(new RegionCopier(std::move(impl)));
}

// Queues the next transfer of request slot: what is left of its phase, on
// the O_DIRECT fd when offset and length allow, else on the buffered fd.
void RegionCopier::Impl::Prepare(uint32_t slot)
{
	Request &r = requests[slot];
	const Device &dev = r.phase == Phase::kRead ? source : target;
	const uint64_t pos = r.offset + r.done;
	uint32_t len = r.length - r.done;
	int fd = dev.fd.get();
	if (dev.direct) {
		// A read may ask for the rounded-up length: at the end of the
		// device it comes back short, which is the end of the chunk.
		const uint32_t rounded =
		        r.phase == Phase::kRead
		                ? (len + dev.align - 1) / dev.align * dev.align
		                : len / dev.align * dev.align;
		if (pos % dev.align == 0 && rounded > 0 &&
		    r.done + rounded <= options.chunk_bytes)
			len = rounded;
		else
			fd = dev.buffered_fd.get();
	}
	uint8_t *buf =
	        buffers.get() + size_t{slot} * options.chunk_bytes + r.done;
	io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	assert(sqe != nullptr); // entries >= queue_depth >= inflight
	if (r.phase == Phase::kRead) {
		if (fixed)
			io_uring_prep_read_fixed(sqe, fd, buf, len, pos, slot);
		else
			io_uring_prep_read(sqe, fd, buf, len, pos);
	} else {
		if (fixed)
			io_uring_prep_write_fixed(sqe, fd, buf, len, pos, slot);
		else
			io_uring_prep_write(sqe, fd, buf, len, pos);
	}
	io_uring_sqe_set_data64(sqe, slot);
	r.io_offset = pos;
}

void RegionCopier::Impl::Complete(RegionCopier *owner, uint32_t slot, int res)
{
	Request &r = requests[slot];
	const bool reading = r.phase == Phase::kRead;
	const Device &dev = reading ? source : target;
	if (options.inject)
		res = options.inject(reading ? CopierOptions::Op::kRead
		                             : CopierOptions::Op::kWrite,
		                     r.io_offset, res);
	auto release = [&] { Release(slot); };
	auto fail = [&](Status st) {
		if (error.ok())
			error = std::move(st);
		release();
	};
	const std::string what = std::string(reading ? "read " : "write ") +
	                         dev.path + " at offset " +
	                         std::to_string(r.io_offset);
	if (res == -EAGAIN || res == -EINTR) {
		// Not a failure of the device: once stopping, the stop, the
		// deadline or the first error says why the copy ended (a
		// stop reported as EAGAIN counted as a failed job).
		if (stopping(owner))
			return release();
		if (++r.retries > kMaxRetries)
			return fail(DeviceIoError(
			        what + " after " + std::to_string(kMaxRetries) +
			                " retries",
			        -res));
		// EINTR is no shortage: sent again at once.
		retry_pause = retry_pause || res == -EAGAIN;
		return Prepare(slot);
	}
	// Once a stop is asked for, it is why the copy ended, also when what
	// was in flight then fails (a pair paused during its target's outage
	// would count a failed job and back off).
	if (res < 0 && !(owner->stop_requested() && error.ok()))
		return fail(DeviceIoError(what, -res));
	if (stopping(owner))
		return release();
	if (res == 0)
		return fail(Status::Error(
		        what + ": " +
		                (reading ? "unexpected end of device"
		                         : "no progress (0 bytes written)"),
		        EIO));
	r.retries = 0;
	r.done += static_cast<uint32_t>(res);
	if (r.done < r.length)
		return Prepare(slot); // short transfer: continue
	if (reading) {
		// The read becomes the write of the same buffer.
		r.phase = Phase::kWrite;
		r.done = 0;
		return Prepare(slot);
	}
	owner->batch_bytes_.fetch_add(r.length);
	owner->copied_bytes_.fetch_add(r.length);
	release();
}

Status RegionCopier::Copy(uint64_t offset, uint64_t length, Deadline deadline)
{
	batch_bytes_.store(0);
	return impl_->Copy(this, offset, length, deadline);
}

Status RegionCopier::Settle(Deadline deadline)
{
	return impl_->Settle(this, deadline);
}

Status RegionCopier::Sync()
{
	// One call covers both target fds: they are opens of the same path,
	// so they share one inode and its page cache, and fdatasync writes
	// back that inode's dirty pages whichever fd wrote them before it
	// flushes the device's cache.
	const Device &target = impl_->target;
	int rc = ::fdatasync(target.fd.get()) == 0 ? 0 : -errno;
	if (impl_->options.inject)
		rc = impl_->options.inject(CopierOptions::Op::kSync, 0, rc);
	if (rc < 0)
		return DeviceIoError("fdatasync " + target.path, -rc);
	return {};
}

// Submits what is queued. *again: nothing was submitted and nothing is in
// the kernel, so no completion will come to wait for: submit again.
Status RegionCopier::Impl::Submit(unsigned *refused, bool *again)
{
	*again = false;
	if (io_uring_sq_ready(&ring) == 0)
		return {};
	int rc = options.inject_submit ? options.inject_submit() : 0;
	if (rc == 0)
		rc = io_uring_submit(&ring);
	if (rc > 0) {
		submitted += static_cast<unsigned>(rc);
		*refused = 0;
		return {};
	}
	if (rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR) {
		// Nothing more can be trusted to complete.
		ring_broken = true;
		return Status::FromErrno(who() + ": io_uring_submit", -rc);
	}
	// Nothing submitted (EAGAIN: the kernel lacks resources; EBUSY: it
	// must post completions first). The completions of what is in the
	// kernel free both: wait for them. With nothing there, a wait would
	// last forever: submit again shortly, even when stopping (what is
	// queued drains through the kernel like the rest).
	if (outstanding() > 0)
		return {};
	if (++*refused > kMaxRetries) {
		// Queued, never submitted: no later submit may run them.
		ring_broken = true;
		return Status::FromErrno(who() + ": io_uring_submit refused " +
		                                 std::to_string(kMaxRetries) +
		                                 " times in a row",
		                         rc < 0 ? -rc : EAGAIN);
	}
	if (rc != -EINTR)
		std::this_thread::sleep_for(kRetryPause);
	*again = true;
	return {};
}

int RegionCopier::Impl::Wait()
{
	if (options.inject_wait)
		if (int rc = options.inject_wait(); rc < 0)
			return rc;
	io_uring_cqe *cqe = nullptr;
	return io_uring_wait_cqe(&ring, &cqe);
}

void RegionCopier::Impl::Reap(RegionCopier *owner)
{
	unsigned head;
	unsigned seen = 0;
	io_uring_cqe *cqe;
	io_uring_for_each_cqe(&ring, head, cqe)
	{
		++seen;
		const uint64_t data = io_uring_cqe_get_data64(cqe);
		// Not a request of ours (liburing's internal timeout
		// completes with LIBURING_UDATA_TIMEOUT): no slot.
		if (data >= requests.size())
			continue;
		const auto slot = static_cast<uint32_t>(data);
		try {
			Complete(owner, slot, cqe->res);
		} catch (...) {
			// Thrown before the request changed: its error message
			// had no memory. Out of the loop, it left this batch
			// unadvanced, and the next Reap() (Settle(), the
			// destructor's) took a read's completion for its write
			// and freed the slot twice. The transfer counts failed,
			// so the copy fails and starts nothing more.
			FailUnhandled(slot);
		}
	}
	io_uring_cq_advance(&ring, seen);
	completed += seen;
}

void RegionCopier::Impl::Release(uint32_t slot) noexcept
{
	free_slots.push_back(slot);
	--inflight;
}

// Does not allocate: an error with an empty message (Copy() words it).
void RegionCopier::Impl::FailUnhandled(uint32_t slot) noexcept
{
	if (error.ok())
		error = Status::Error(std::string(), ENOMEM);
	Release(slot);
}

// The ring broke with requests maybe still in the kernel: a submit failed
// hard while others were in flight, or was refused too often, or a wait
// failed. Once Copy() returns, the job may end, its target count as free for
// another job (ResyncJobs) and the buffers and fds go with the copier: a
// read or write of this copy landing later would overwrite that job's data
// or use freed memory. So wait for every completion the kernel owes,
// without submitting anything (what is queued was never submitted and
// never will be: the ring is not used again). With the first error set,
// the completions start no new transfer (Complete()). Reads and writes of
// a block device cannot be cancelled once issued, so waiting is all there
// is; it lasts as long as the slowest request, as a drain after a stop.
// A wait that fails here returns at once, the requests still in flight
// (in_flight()): the caller reports its claim failed, so that the kernel
// lets the writes the claim holds go on, then waits for them (Settle(), the
// destructor at the latest).
Status RegionCopier::Impl::Drain(RegionCopier *owner, Status why)
{
	if (error.ok())
		error = why;
	while (outstanding() > 0) {
		int rc = Wait();
		if (rc == -EINTR || rc == -EAGAIN)
			continue;
		if (rc < 0) {
			// What the kernel posted already is not in flight.
			Reap(owner);
			if (outstanding() == 0)
				break;
			return Status::Error(
			        why.message() +
			                "; draining: io_uring_wait_cqe: " +
			                std::strerror(-rc) + ", " +
			                std::to_string(outstanding()) +
			                " requests still in the kernel",
			        why.err());
		}
		Reap(owner);
	}
	return why;
}

// The kernel posts completions to the completion queue, a mapping shared
// with it, whether or not io_uring_enter works: reading it needs no system
// call. Those it completes through task work it posts when this thread
// enters or leaves a system call (the sleep here), which is why Settle()
// runs on the thread that submitted. The queue holds twice the submission
// queue's entries, more than can be in flight, so no completion waits in
// the kernel's overflow list, which only io_uring_enter would flush.
Status RegionCopier::Impl::Settle(RegionCopier *owner, Deadline deadline)
{
	auto pause = std::chrono::duration_cast<std::chrono::nanoseconds>(
	        kSettlePollFirst);
	for (;;) {
		Reap(owner);
		if (outstanding() == 0)
			return {};
		const auto now = std::chrono::steady_clock::now();
		if (now >= deadline)
			return Status::Error(
			        "resync: " + std::to_string(outstanding()) +
			                " requests of " + source.path + " -> " +
			                target.path + " still in the kernel",
			        ETIME);
		std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(
		        pause, deadline - now));
		pause = std::min<std::chrono::nanoseconds>(pause * 2,
		                                           kSettlePollMax);
	}
}

Status RegionCopier::Impl::Copy(RegionCopier *owner, uint64_t offset,
                                uint64_t length, Deadline deadline)
{
	if (ring_broken)
		return Status::Error(who() + ": io_uring failed earlier", EIO);
	// The slots and buffers below are reset: none may still be the
	// kernel's (a copy that returned early leaves them to Settle()).
	if (outstanding() > 0)
		return Status::Error(who() + ": " +
		                             std::to_string(outstanding()) +
		                             " requests of an earlier copy are "
		                             "still in the kernel",
		                     EBUSY);
	const uint64_t end =
	        std::min(source.size, offset + std::min(length, source.size));
	const uint64_t start = std::min(offset, end);
	uint64_t next = start;
	const uint32_t chunk = options.chunk_bytes;
	requests.assign(options.queue_depth, Request{});
	free_slots.clear();
	for (uint32_t i = options.queue_depth; i-- > 0;)
		free_slots.push_back(i);
	inflight = 0;
	error = Status();
	expired = false;
	retry_pause = false;
	if (options.stray_completion) {
		io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		assert(sqe != nullptr); // the ring is idle between calls
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, *options.stray_completion);
		// Alone: it must not take an entry the requests need.
		if (int rc = io_uring_submit(&ring); rc > 0)
			submitted += static_cast<unsigned>(rc);
	}
	if (options.held_read_fd) {
		io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		assert(sqe != nullptr); // the ring is idle between calls
		io_uring_prep_read(sqe, *options.held_read_fd, &held_byte, 1,
		                   0);
		io_uring_sqe_set_data64(sqe, kHeldReadData);
		if (int rc = io_uring_submit(&ring); rc > 0)
			submitted += static_cast<unsigned>(rc);
	}
	unsigned refused = 0; // submissions refused in a row

	for (;;) {
		// Start reads while slots, work and time allow.
		expired = expired ||
		          (deadline != Deadline::max() &&
		           std::chrono::steady_clock::now() >= deadline);
		while (!stopping(owner) && next < end && !free_slots.empty()) {
			const uint32_t len = static_cast<uint32_t>(
			        std::min<uint64_t>(chunk, end - next));
			const uint32_t slot = free_slots.back();
			free_slots.pop_back();
			requests[slot] = Request{Phase::kRead, next, len};
			Prepare(slot);
			++inflight;
			next += len;
		}
		if (inflight == 0 && io_uring_sq_ready(&ring) == 0 &&
		    outstanding() == 0)
			break; // done, failed or stopped, and drained
		// Once per round, however many transfers came back EAGAIN;
		// the completions of the others wait in the completion queue,
		// which holds all of them.
		if (std::exchange(retry_pause, false))
			std::this_thread::sleep_for(kRetryPause);
		bool again = false;
		Status submitted = Submit(&refused, &again);
		if (!submitted.ok())
			return Drain(owner, submitted);
		if (again)
			continue;
		int rc = Wait();
		if (rc == -EINTR || rc == -EAGAIN)
			continue;
		if (rc < 0) {
			ring_broken = true;
			return Drain(
			        owner,
			        Status::FromErrno(who() + ": io_uring_wait_cqe",
			                          -rc));
		}
		// Every completion that is ready, then one submit for all the
		// transfers they started.
		Reap(owner);
	}
	if (!error.ok() && error.message().empty())
		return Status::FromErrno(who() + ": handling a completion",
		                         error.err());
	if (!error.ok())
		return error;
	if (owner->stop_requested() && owner->batch_bytes() < end - start)
		return Status::Error("resync: stopped", ECANCELED);
	if (expired && owner->batch_bytes() < end - start)
		return Status::Error(
		        "resync: past the deadline after " +
		                std::to_string(owner->batch_bytes()) + " of " +
		                std::to_string(end - start) + " bytes",
		        ETIME);
	return {};
}

} // namespace replipipe
