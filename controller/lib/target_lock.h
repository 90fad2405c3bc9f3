// The flock that fences a resync's target (docs/decisions.md, decision 89).
//
// A replipiped that exits (SIGKILL, a crash, the _Exit of a stop past its
// time-out) while io_uring writes to a slow target are in flight does not
// wait for them: the kernel keeps them, and a restarted daemon that copied
// the same regions again and reported them clean could have its newer data
// overwritten when they land. Each request holds the open file it writes
// until it completes, and a flock lives as long as its open file. So a
// copier holds a shared flock on each fd it writes the target with, and
// takes none before no other open of the target holds one.
//
// The lock is on the inode the path opens (the device node): a program that
// writes the device through another node is not seen.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <initializer_list>
#include <string>
#include <string_view>

#include "status.h"
#include "unique_fd.h"

namespace replipipe
{

// Before the target is opened for writing: opens path read-only (closing it
// wakes no udev watch, a failed try leaves no event behind), waits up to
// `wait` for no other open of it to hold a flock (udev holds a shared one
// while it probes a device that was written and closed), and holds a shared
// one. EBUSY after the wait, naming the holders ("pid 812
// (systemd-udevd)", "pid 345, which has exited: writes it left in flight").
// On a filesystem without flock (EOPNOTSUPP, ENOSYS) it logs a warning and
// returns an invalid fd: the copy goes on unfenced.
Result<UniqueFd> AcquireTargetLock(const std::string &path,
                                   std::chrono::milliseconds wait);

// Has each of fds, opens of the same file as lock_fd, hold a shared flock
// too, for as long as they (or requests writing through them) live; lock_fd
// may be closed after. Nothing to do when lock_fd is invalid (no flock).
// ENODEV if an fd is not an open of lock_fd's file (the path was re-pointed
// between the opens).
Status ShareTargetLock(const std::string &path, const UniqueFd &lock_fd,
                       std::initializer_list<int> fds);

// How /proc/locks names the file of st: "00:05:341" (major and minor of
// its filesystem in hex, inode number).
std::string FlockFileKey(const struct stat &st);

// The holders of flocks on the file of st, read from proc_locks (the text of
// /proc/locks): "pid N (comm)" for a live process, "pid N, which has exited:
// writes it left in flight" for a dead one, "this replipiped" for our own;
// comma-separated, "" if none. comm_of(pid) is a process's name, "" if it
// has none (gone).
std::string FlockHolders(const struct stat &st, std::string_view proc_locks,
                         std::string (*comm_of)(int pid));

} // namespace replipipe
