// MetricsHttpServer: replipiped's `/metrics` endpoint for Prometheus, a
// minimal HTTP/1.0 responder on a loopback address (--metrics-listen).
//
// GET (or HEAD) /metrics answers 200 with the render function's text; any
// other path 404, any other method on /metrics 405, a malformed or
// oversized request 400 or 431, a render error 503. One response per
// connection, then the server closes it (HTTP/1.0, "Connection: close").
// A render that throws (std::exception) is logged and its connection
// closed without a response; the server goes on.
//
// It must not be able to stall the daemon: it runs on a thread of its own
// with non-blocking sockets and one poll loop; a request is at most
// max_request_bytes, a connection lives at most `timeout` (slow or silent
// clients are dropped), at most max_connections are open (more are closed
// at once). The render function runs on that thread, one scrape at a time.
//
// Only loopback addresses are accepted: the metrics name the pipes' devices
// and peers, and there is no authentication.
//
// Thread-safety: Stop() may be called from any thread, once or more.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "status.h"
#include "unique_fd.h"

namespace replipipe
{

// A parsed --metrics-listen value.
struct LoopbackAddress {
	sockaddr_storage addr{};
	socklen_t len = 0;
	uint16_t port = 0;
	std::string text; // "127.0.0.1:9469", "[::1]:9469"
};

// "HOST:PORT" with HOST an IPv4 address in 127.0.0.0/8, "[::1]" or
// "localhost" (127.0.0.1), PORT 0..65535 (0: the kernel picks one). Any
// other host, a name to resolve included, is an error that says why.
Result<LoopbackAddress> ParseLoopbackAddress(std::string_view text);

struct MetricsHttpOptions {
	size_t max_connections = 8;
	size_t max_request_bytes = 8192;
	std::chrono::milliseconds timeout{10000};
};

// The response to one complete request head (request line and headers,
// up to the empty line). Pure: exposed for the unit tests. render is only
// called for GET /metrics.
using MetricsRender = std::function<Result<std::string>()>;
std::string MetricsHttpResponse(std::string_view request_head,
                                const MetricsRender &render);

class MetricsHttpServer
{
public:
	// Binds and listens, then serves on its own thread. render must
	// outlive the server.
	static Result<std::unique_ptr<MetricsHttpServer>>
	Start(const LoopbackAddress &address, MetricsRender render,
	      MetricsHttpOptions options = {});
	~MetricsHttpServer(); // Stop()
	MetricsHttpServer(const MetricsHttpServer &) = delete;
	MetricsHttpServer &operator=(const MetricsHttpServer &) = delete;

	// Closes the listening socket and every connection; joins the thread.
	void Stop();

	// The bound port (the kernel's pick when the address had port 0).
	uint16_t port() const { return port_; }

private:
	struct Connection;

	MetricsHttpServer(MetricsRender render, MetricsHttpOptions options,
	                  UniqueFd listen_fd, UniqueFd wake_fd, uint16_t port);
	void Loop(const std::stop_token &stop);
	// One readiness event of a connection; false: close it.
	bool Step(Connection &c);
	// Step(), throwing nothing: an exception is logged and closes c.
	bool StepOrClose(Connection &c);
	bool Send(Connection &c);

	const MetricsRender render_;
	const MetricsHttpOptions options_;
	UniqueFd listen_fd_;
	UniqueFd wake_fd_;
	const uint16_t port_;
	std::mutex stop_mu_;  // Stop() from several threads joins once
	std::jthread thread_; // last: stops before the members above go
};

} // namespace replipipe
