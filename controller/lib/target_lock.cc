#include "target_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "log.h"
#include "sysfs_read.h"

namespace replipipe
{
namespace
{

// How often AcquireTargetLock() tries again for the exclusive lock.
constexpr auto kLockPoll = std::chrono::milliseconds(10);

std::string CommOfProcess(int pid)
{
	return ReadFirstLine("/proc/" + std::to_string(pid) + "/comm");
}

std::string ProcLocks()
{
	std::ifstream in("/proc/locks");
	std::ostringstream text;
	text << in.rdbuf();
	return text.str();
}

bool SameInode(const struct stat &a, const struct stat &b)
{
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

} // namespace

std::string FlockFileKey(const struct stat &st)
{
	char key[64];
	std::snprintf(key, sizeof(key), "%02x:%02x:%llu", major(st.st_dev),
	              minor(st.st_dev),
	              static_cast<unsigned long long>(st.st_ino));
	return key;
}

std::string FlockHolders(const struct stat &st, std::string_view proc_locks,
                         std::string (*comm_of)(int pid))
{
	const std::string file = FlockFileKey(st);
	std::set<int> pids;
	std::istringstream lines{std::string(proc_locks)};
	std::string line;
	while (std::getline(lines, line)) {
		// "1: FLOCK  ADVISORY  READ  812 00:05:341 0 EOF"; a waiter's
		// line has "->" after the number, and waits, holding nothing.
		std::istringstream words(line);
		std::string id, kind, advisory, type, pid, where;
		if (!(words >> id >> kind >> advisory >> type >> pid >> where))
			continue;
		if (kind != "FLOCK" || where != file)
			continue;
		try {
			pids.insert(std::stoi(pid));
		} catch (const std::exception &) {
		}
	}
	// The others in the order of their pids, this process last: the
	// text does not change with the pid this process happens to have.
	std::string holders;
	for (int pid : pids) {
		if (pid == ::getpid())
			continue;
		if (!holders.empty())
			holders += ", ";
		const std::string comm = pid > 0 ? comm_of(pid) : "";
		holders += "pid " + std::to_string(pid);
		holders += comm.empty() ? ", which has exited: writes it left "
		                          "in flight"
		                        : " (" + comm + ")";
	}
	if (pids.count(::getpid()))
		holders += std::string(holders.empty() ? "" : ", ") +
		           "this replipiped (a copy whose writes are still in "
		           "the kernel)";
	return holders;
}

Result<UniqueFd> AcquireTargetLock(const std::string &path,
                                   std::chrono::milliseconds wait)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid())
		return Status::FromErrno("open " + path, errno);
	const auto until = std::chrono::steady_clock::now() + wait;
	while (::flock(fd.get(), LOCK_EX | LOCK_NB) < 0) {
		const int err = errno;
		if (err == EOPNOTSUPP || err == ENOSYS) {
			LogWarning()
			        << "resync: flock " << path << ": "
			        << std::strerror(err)
			        << "; writes an earlier replipiped left in "
			           "flight to it are not waited for";
			return UniqueFd();
		}
		if (err != EWOULDBLOCK && err != EINTR)
			return Status::FromErrno("flock " + path, err);
		if (std::chrono::steady_clock::now() < until) {
			std::this_thread::sleep_for(kLockPoll);
			continue;
		}
		struct stat st;
		std::string holders;
		if (::fstat(fd.get(), &st) == 0)
			holders = FlockHolders(st, ProcLocks(), CommOfProcess);
		if (holders.empty())
			holders = "a program using it, or writes an earlier "
			          "replipiped left in flight when it exited";
		return Status::Error(path +
		                             " is locked by another open of it "
		                             "(flock): " +
		                             holders +
		                             "; not copying until it is "
		                             "released",
		                     EBUSY);
	}
	// Shared from here on: the copier's fds take theirs before this one
	// is closed, so that no one can take an exclusive lock in between.
	if (::flock(fd.get(), LOCK_SH | LOCK_NB) < 0)
		return Status::Error(path + " was locked by another program "
		                            "(flock) while it was opened; "
		                            "not copying",
		                     EBUSY);
	return fd;
}

Status ShareTargetLock(const std::string &path, const UniqueFd &lock_fd,
                       std::initializer_list<int> fds)
{
	if (!lock_fd.valid())
		return {};
	struct stat locked;
	if (::fstat(lock_fd.get(), &locked) < 0)
		return Status::FromErrno("stat " + path, errno);
	for (int fd : fds) {
		struct stat st;
		if (::fstat(fd, &st) < 0)
			return Status::FromErrno("stat " + path, errno);
		if (!SameInode(st, locked))
			return Status::Error(path + " changed while it was "
			                            "opened",
			                     ENODEV);
		if (::flock(fd, LOCK_SH | LOCK_NB) < 0)
			return Status::FromErrno("flock " + path, errno);
	}
	return {};
}

} // namespace replipipe
