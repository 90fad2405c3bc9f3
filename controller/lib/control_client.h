// ControlClient: the CLI's side of the control socket (control_protocol.h).
//
// Connect() opens the Unix socket; Call() sends one request and reads its
// reply; for `events`, ReadEvent() then returns the streamed events one by
// one. Every error says which socket and what failed.
//
// Thread-safety: none; one client per thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "control_protocol.h"
#include "status.h"
#include "unique_fd.h"

namespace replipipe
{

// Reads '\n'-terminated lines from a stream socket, bounded by
// kMaxLineBytes. Not thread-safe.
class LineReader
{
public:
	explicit LineReader(int fd) : fd_(fd) {}

	// The next line without its '\n'. nullopt at a clean end of stream
	// (no partial line pending). Errors: ETIMEDOUT when timeout passed,
	// EMSGSIZE for an overlong line, EPROTO for a truncated last line, or
	// the socket's errno. A negative timeout waits forever.
	Result<std::optional<std::string>>
	ReadLine(std::chrono::milliseconds timeout =
	                 std::chrono::milliseconds(-1));

private:
	int fd_;
	std::string buffer_;
};

// Writes all of data to fd (a socket: MSG_NOSIGNAL, no SIGPIPE).
Status WriteAllToSocket(int fd, std::string_view data);

class ControlClient
{
public:
	// Connects to the daemon's socket. A failure here means the daemon is
	// unreachable (no socket, refused, not permitted to connect).
	static Result<ControlClient> Connect(const std::string &socket_path);

	ControlClient(ControlClient &&) = default;
	ControlClient &operator=(ControlClient &&) = default;

	// Sends request and reads its reply. A connection closed before the
	// reply arrived gives ECONNRESET.
	Result<ControlReply>
	Call(const ControlRequest &request,
	     std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));

	// After Call() of an `events` request: the next event, or nullopt when
	// the daemon closed the stream. A timeout gives ETIMEDOUT.
	Result<std::optional<ControlEvent>>
	ReadEvent(std::chrono::milliseconds timeout =
	                  std::chrono::milliseconds(-1));
	// The raw next event line (for --json output).
	Result<std::optional<std::string>>
	ReadEventLine(std::chrono::milliseconds timeout =
	                      std::chrono::milliseconds(-1));

	int fd() const { return fd_.get(); }
	const std::string &socket_path() const { return socket_path_; }

private:
	ControlClient(UniqueFd fd, std::string socket_path)
	    : fd_(std::move(fd)), socket_path_(std::move(socket_path)),
	      reader_(fd_.get())
	{
	}

	UniqueFd fd_;
	std::string socket_path_;
	LineReader reader_;
};

// One request, one reply: Connect() + Call(). Connection errors carry
// err() from connect(2).
Result<ControlReply> CallDaemon(const std::string &socket_path,
                                const ControlRequest &request);

} // namespace replipipe
