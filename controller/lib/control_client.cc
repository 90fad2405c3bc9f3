#include "control_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <thread>

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A full listen queue is retried after this, doubling up to kConnectRetryMax:
// connect(2) cannot wait for room within a bound of its own on a
// non-blocking socket.
constexpr milliseconds kConnectRetryFirst{5};
constexpr milliseconds kConnectRetryMax{100};

// poll(2)'s timeout for deadline: at most INT_MAX ms (24.8 days; a
// REPLIPIPE_CALL_TIMEOUT may be a year), so a poll that ends with nothing
// ready is a time-out only once Expired(deadline).
int PollTimeout(steady_clock::time_point deadline, bool forever)
{
	if (forever)
		return -1;
	auto left = std::chrono::duration_cast<milliseconds>(
	        deadline - steady_clock::now());
	return static_cast<int>(std::clamp<int64_t>(
	        left.count(), 0, std::numeric_limits<int>::max()));
}

bool Expired(steady_clock::time_point deadline, bool forever)
{
	return !forever && steady_clock::now() >= deadline;
}

// A negative timeout is none: deadline is then unused.
steady_clock::time_point DeadlineOf(milliseconds timeout)
{
	return timeout.count() < 0 ? steady_clock::time_point::max()
	                           : steady_clock::now() + timeout;
}

// What is left of the time until deadline (negative: none was set).
milliseconds Left(steady_clock::time_point deadline, bool forever)
{
	if (forever)
		return milliseconds(-1);
	return std::max(milliseconds(0),
	                std::chrono::duration_cast<milliseconds>(
	                        deadline - steady_clock::now()));
}

// Writes all of data to a connected stream socket by deadline (forever:
// none), without blocking in send(2): a peer that reads nothing fills the
// socket's buffer, and a blocking send would wait for it without end.
Status SendAllBy(int fd, std::string_view data,
                 steady_clock::time_point deadline, bool forever)
{
	while (!data.empty()) {
		ssize_t n = ::send(fd, data.data(), data.size(),
		                   MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0) {
			data.remove_prefix(static_cast<size_t>(n));
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return Status::FromErrno("send", errno);
		pollfd pfd{fd, POLLOUT, 0};
		int ready = ::poll(&pfd, 1, PollTimeout(deadline, forever));
		if (ready < 0 && errno != EINTR)
			return Status::FromErrno("poll", errno);
		if (ready == 0 && Expired(deadline, forever))
			return Status::Error("timed out sending (the peer does "
			                     "not read)",
			                     ETIMEDOUT);
	}
	return Status();
}

} // namespace

Result<std::optional<std::string>> LineReader::ReadLine(milliseconds timeout)
{
	using Line = std::optional<std::string>;
	const bool forever = timeout.count() < 0;
	const auto deadline = DeadlineOf(timeout);
	for (;;) {
		// From where the last look stopped: a reply of megabytes comes
		// in many reads, and scanning it whole each time is quadratic.
		size_t newline = buffer_.find('\n', scanned_);
		if (newline != std::string::npos) {
			std::string line = buffer_.substr(0, newline);
			buffer_.erase(0, newline + 1);
			scanned_ = 0;
			return Line(std::move(line));
		}
		scanned_ = buffer_.size();
		if (buffer_.size() > max_bytes_)
			return Status::Error(
			        "line longer than " +
			                std::to_string(max_bytes_) + " bytes",
			        EMSGSIZE);
		pollfd pfd{fd_, POLLIN, 0};
		int ready = ::poll(&pfd, 1, PollTimeout(deadline, forever));
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			return Status::FromErrno("poll", errno);
		}
		if (ready == 0) {
			if (!Expired(deadline, forever))
				continue;
			return Status::Error("timed out waiting for a line",
			                     ETIMEDOUT);
		}
		char chunk[65536];
		ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return Status::FromErrno("recv", errno);
		}
		if (n == 0) {
			if (buffer_.empty())
				return Line();
			return Status::Error("connection closed in the middle "
			                     "of a line",
			                     ECONNRESET);
		}
		buffer_.append(chunk, static_cast<size_t>(n));
	}
}

Status WriteAllToSocket(int fd, std::string_view data)
{
	while (!data.empty()) {
		ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return Status::FromErrno("send", errno);
		}
		data.remove_prefix(static_cast<size_t>(n));
	}
	return Status();
}

Result<ControlClient> ControlClient::Connect(const std::string &socket_path,
                                             milliseconds timeout)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path))
		return Status::Error(
		        "control socket path \"" + socket_path +
		                "\" is empty or longer than " +
		                std::to_string(sizeof(addr.sun_path) - 1) +
		                " bytes",
		        ENAMETOOLONG);
	std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
	// Non-blocking: a blocking connect to a listener whose queue is full
	// waits until it accepts, with no bound.
	UniqueFd fd(::socket(AF_UNIX,
	                     SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (!fd.valid())
		return Status::FromErrno("socket(AF_UNIX)", errno);
	const bool forever = timeout.count() < 0;
	const auto deadline = DeadlineOf(timeout);
	milliseconds retry = kConnectRetryFirst;
	for (;;) {
		if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr),
		              sizeof(addr)) == 0)
			break;
		if (errno == EINTR)
			continue;
		// AF_UNIX connects at once or fails; EAGAIN is a full queue
		// (connect(2)).
		if (errno != EAGAIN)
			return Status::FromErrno("connect to " + socket_path,
			                         errno);
		const milliseconds left = Left(deadline, forever);
		if (left.count() == 0)
			return Status::Error(
			        "connect to " + socket_path +
			                ": the listener's queue of pending "
			                "connections stayed full for " +
			                std::to_string(timeout.count()) + " ms",
			        ETIMEDOUT);
		std::this_thread::sleep_for(forever ? retry
		                                    : std::min(retry, left));
		retry = std::min(retry * 2, kConnectRetryMax);
	}
	// Blocking again, as callers that use fd() expect; the sends of
	// Send() do not block, and reads poll first.
	int flags = ::fcntl(fd.get(), F_GETFL);
	if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) < 0)
		return Status::FromErrno("fcntl " + socket_path, errno);
	return ControlClient(std::move(fd), socket_path);
}

Result<ControlReply> ControlClient::Call(const ControlRequest &request,
                                         milliseconds timeout)
{
	const bool forever = timeout.count() < 0;
	const auto deadline = DeadlineOf(timeout);
	if (Status sent = Send(request, timeout); !sent.ok())
		return sent;
	return Receive(Left(deadline, forever));
}

Status ControlClient::Send(const ControlRequest &request, milliseconds timeout)
{
	return SendAllBy(fd_.get(), EncodeRequest(request) + "\n",
	                 DeadlineOf(timeout), timeout.count() < 0)
	        .Context("sending the request to " + socket_path_);
}

Result<ControlReply> ControlClient::Receive(milliseconds timeout)
{
	auto line = reader_.ReadLine(timeout);
	if (!line.ok())
		return line.status().Context("reading the reply from " +
		                             socket_path_);
	if (!*line)
		return Status::Error("the daemon at " + socket_path_ +
		                             " closed the connection without "
		                             "a reply",
		                     ECONNRESET);
	auto reply = DecodeReply(**line);
	if (!reply.ok())
		return Status::Error(reply.status().message(), EPROTO)
		        .Context("reply from " + socket_path_);
	return reply;
}

Result<std::optional<std::string>>
ControlClient::ReadEventLine(milliseconds timeout)
{
	auto line = reader_.ReadLine(timeout);
	if (!line.ok())
		return line.status().Context("reading events from " +
		                             socket_path_);
	return line;
}

Result<std::optional<ControlEvent>>
ControlClient::ReadEvent(milliseconds timeout)
{
	using Event = std::optional<ControlEvent>;
	auto line = ReadEventLine(timeout);
	if (!line.ok())
		return line.status();
	if (!*line)
		return Event();
	auto event = DecodeEvent(**line);
	if (!event.ok())
		return Status::Error(event.status().message(), EPROTO)
		        .Context("event from " + socket_path_);
	return Event(std::move(*event));
}

Result<ControlReply> CallDaemon(const std::string &socket_path,
                                const ControlRequest &request)
{
	auto client = ControlClient::Connect(socket_path);
	if (!client.ok())
		return client.status();
	return client->Call(request);
}

} // namespace replipipe
