#include "control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using std::chrono::steady_clock;

int PollTimeout(steady_clock::time_point deadline, bool forever)
{
	if (forever)
		return -1;
	auto left = std::chrono::duration_cast<milliseconds>(
	        deadline - steady_clock::now());
	return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

} // namespace

Result<std::optional<std::string>> LineReader::ReadLine(milliseconds timeout)
{
	using Line = std::optional<std::string>;
	const bool forever = timeout.count() < 0;
	const auto deadline = steady_clock::now() + timeout;
	for (;;) {
		size_t newline = buffer_.find('\n');
		if (newline != std::string::npos) {
			std::string line = buffer_.substr(0, newline);
			buffer_.erase(0, newline + 1);
			return Line(std::move(line));
		}
		if (buffer_.size() > kMaxLineBytes)
			return Status::Error(
			        "line longer than " +
			                std::to_string(kMaxLineBytes) +
			                " bytes",
			        EMSGSIZE);
		pollfd pfd{fd_, POLLIN, 0};
		int ready = ::poll(&pfd, 1, PollTimeout(deadline, forever));
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			return Status::FromErrno("poll", errno);
		}
		if (ready == 0)
			return Status::Error("timed out waiting for a line",
			                     ETIMEDOUT);
		char chunk[16384];
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
			                     EPROTO);
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

Result<ControlClient> ControlClient::Connect(const std::string &socket_path)
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
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd.valid())
		return Status::FromErrno("socket(AF_UNIX)", errno);
	int rc;
	do {
		rc = ::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr),
		               sizeof(addr));
	} while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return Status::FromErrno("connect to " + socket_path, errno);
	return ControlClient(std::move(fd), socket_path);
}

Result<ControlReply> ControlClient::Call(const ControlRequest &request,
                                         milliseconds timeout)
{
	Status sent =
	        WriteAllToSocket(fd_.get(), EncodeRequest(request) + "\n");
	if (!sent.ok())
		return sent.Context("sending the request to " + socket_path_);
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
