// ControlClient: the CLI's side of the control socket (control_protocol.h).
//
// Connect() opens the Unix socket; Call() sends one request and reads its
// reply; for `events`, ReadEvent() then returns the streamed events one by
// one. Every error says which socket and what failed. Each step takes a
// timeout (negative: none), so that a daemon that hangs holds nobody
// forever: connect, send and reply all fail with ETIMEDOUT when it passes.
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

// Reads '\n'-terminated lines from a stream socket, each bounded by
// max_bytes. Not thread-safe.
class LineReader
{
public:
	explicit LineReader(int fd, size_t max_bytes = kMaxLineBytes)
	    : fd_(fd), max_bytes_(max_bytes)
	{
	}

	// The next line without its '\n'. nullopt at a clean end of stream
	// (no partial line pending). Errors: ETIMEDOUT when timeout passed,
	// EMSGSIZE for an overlong line, ECONNRESET for a stream that ends in
	// the middle of a line (the peer went away while it wrote), or the
	// socket's errno. A negative timeout waits forever.
	Result<std::optional<std::string>>
	ReadLine(std::chrono::milliseconds timeout =
	                 std::chrono::milliseconds(-1));

private:
	int fd_;
	size_t max_bytes_;
	std::string buffer_;
	size_t scanned_ = 0; // bytes of buffer_ known to hold no '\n'
};

// Writes all of data to fd (a socket: MSG_NOSIGNAL, no SIGPIPE).
Status WriteAllToSocket(int fd, std::string_view data);

class ControlClient
{
public:
	// Connects to the daemon's socket. A listener whose queue of pending
	// connections is full takes no connection until it accepts one (a
	// daemon that hangs never does): that is retried until timeout passed
	// (negative: forever), then ETIMEDOUT. Any other failure means the
	// daemon is unreachable (no socket, refused, not permitted to connect).
	static Result<ControlClient>
	Connect(const std::string &socket_path,
	        std::chrono::milliseconds timeout =
	                std::chrono::milliseconds(-1));

	ControlClient(ControlClient &&) = default;
	ControlClient &operator=(ControlClient &&) = default;

	// Send() then Receive(), within timeout together.
	Result<ControlReply>
	Call(const ControlRequest &request,
	     std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));

	// Sends request. ETIMEDOUT when the daemon did not take all of it
	// within timeout: it has no request line then, and acts on nothing.
	Status
	Send(const ControlRequest &request,
	     std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));
	// Reads the reply to what Send() sent. ETIMEDOUT when none came within
	// timeout (the daemon may still act on the request), ECONNRESET when
	// the connection ended before the whole reply, EPROTO for a reply that
	// is not the protocol, EMSGSIZE for one over its line limit.
	Result<ControlReply> Receive(std::chrono::milliseconds timeout =
	                                     std::chrono::milliseconds(-1));

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
	      reader_(fd_.get(), kMaxReplyBytes)
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
