#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>

#include "target_lock.h"

namespace replipipe
{
namespace
{

// The other holders' pids are above PID_MAX_LIMIT (4194304): none is this
// test's own, whatever pid it has.
std::string CommOf(int pid)
{
	return pid == 5000812 ? "systemd-udevd" : "";
}

struct stat FileAt(unsigned maj, unsigned min, ino_t ino)
{
	struct stat st = {};
	st.st_dev = makedev(maj, min);
	st.st_ino = ino;
	return st;
}

// /proc/locks as Linux prints it: a waiter's line ("->") holds nothing,
// POSIX locks are not flocks, and another file's lines are not ours.
TEST(FlockHolders, NamesEachHolderOfTheFilesFlocksOnce)
{
	const std::string self = std::to_string(::getpid());
	const std::string text =
	        "1: POSIX  ADVISORY  WRITE 5000901 00:05:341 0 EOF\n"
	        "2: FLOCK  ADVISORY  READ  5000812 00:05:341 0 EOF\n"
	        "2: -> FLOCK  ADVISORY  WRITE 5000077 00:05:341 0 EOF\n"
	        "3: FLOCK  ADVISORY  READ  5000345 00:05:341 0 EOF\n"
	        "4: FLOCK  ADVISORY  READ  5000345 00:05:341 0 EOF\n"
	        "5: FLOCK  ADVISORY  WRITE 5000500 00:05:342 0 EOF\n"
	        "6: FLOCK  ADVISORY  READ  " +
	        self +
	        " fd:01:341 0 EOF\n"
	        "7: FLOCK  ADVISORY  READ  " +
	        self + " 00:05:341 0 EOF\n";
	EXPECT_EQ(FlockHolders(FileAt(0, 5, 341), text, CommOf),
	          "pid 5000345, which has exited: writes it left in flight, "
	          "pid 5000812 (systemd-udevd), this replipiped (a copy whose "
	          "writes are still in the kernel)");
	EXPECT_EQ(FlockHolders(FileAt(0xfd, 1, 341), text, CommOf),
	          "this replipiped (a copy whose writes are still in the "
	          "kernel)");
	EXPECT_EQ(FlockHolders(FileAt(0, 5, 999), text, CommOf), "");
	EXPECT_EQ(FlockHolders(FileAt(0, 5, 341), "", CommOf), "");
}

} // namespace
} // namespace replipipe
