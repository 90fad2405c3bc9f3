// Unix sockets that listen and never accept: a daemon that hangs. Used by
// the CLI's and the daemon's tests of what waits on such a socket.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "unique_fd.h"

namespace replipipe::testing
{

// A Unix socket at path that listens with backlog and never accepts:
// connections queue (until the queue is full) and nothing ever answers.
// Invalid on failure.
inline UniqueFd ListenOnly(const std::string &path, int backlog)
{
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (!fd.valid() || path.size() >= sizeof(addr.sun_path))
		return UniqueFd();
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&addr),
	           sizeof(addr)) < 0 ||
	    ::listen(fd.get(), backlog) < 0)
		return UniqueFd();
	return fd;
}

// A non-blocking connect to path; invalid with *err = errno when it fails
// (EAGAIN: the listener's queue is full).
inline UniqueFd ConnectNonBlocking(const std::string &path, int *err)
{
	UniqueFd fd(::socket(AF_UNIX,
	                     SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	*err = 0;
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr),
	              sizeof(addr)) < 0) {
		*err = errno;
		return UniqueFd();
	}
	return fd;
}

// Connects to path (a ListenOnly socket with backlog 0) until its queue is
// full; the connections returned keep it full while they are held. *err is
// EAGAIN when the queue filled.
inline std::vector<UniqueFd> FillListenQueue(const std::string &path, int *err)
{
	std::vector<UniqueFd> queued;
	for (int i = 0; i < 8; ++i) {
		UniqueFd conn = ConnectNonBlocking(path, err);
		if (!conn.valid())
			break;
		queued.push_back(std::move(conn));
	}
	return queued;
}

} // namespace replipipe::testing
