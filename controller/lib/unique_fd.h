// UniqueFd: sole owner of one file descriptor; closes it on destruction.
//
// Move-only. Not thread-safe: one owner at a time, like the fd itself.
#pragma once

#include <unistd.h>

#include <utility>

namespace replipipe
{

class UniqueFd final
{
public:
	UniqueFd() = default;
	explicit UniqueFd(int fd) : fd_(fd) {}
	~UniqueFd() { Reset(); }

	UniqueFd(const UniqueFd &) = delete;
	UniqueFd &operator=(const UniqueFd &) = delete;
	UniqueFd(UniqueFd &&other) noexcept : fd_(other.Release()) {}
	UniqueFd &operator=(UniqueFd &&other) noexcept
	{
		if (this != &other)
			Reset(other.Release());
		return *this;
	}

	bool valid() const { return fd_ >= 0; }
	int get() const { return fd_; }

	// Gives up ownership without closing.
	int Release() { return std::exchange(fd_, -1); }

	// Closes the current fd (if any) and owns fd instead. The result of
	// close() is ignored here: callers that must know whether buffered data
	// reached the disk call fsync() first (close() reports nothing useful
	// after a successful fsync on Linux).
	void Reset(int fd = -1)
	{
		int old = std::exchange(fd_, fd);
		if (old >= 0)
			::close(old);
	}

private:
	int fd_ = -1;
};

} // namespace replipipe
