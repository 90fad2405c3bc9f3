#include "metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <list>
#include <vector>

#include "log.h"
#include "metrics_text.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::string_view kMetricsPath = "/metrics";
// How long a connection stays open after its response for the client to
// close first.
constexpr milliseconds kLinger{1000};

std::string Reply(std::string_view status, std::string_view content_type,
                  const std::string &body, bool with_body,
                  std::string_view extra_headers = {})
{
	std::string out = "HTTP/1.0 ";
	out += status;
	out += "\r\nContent-Type: ";
	out += content_type;
	out += "\r\nContent-Length: " + std::to_string(body.size());
	out += "\r\n";
	out += extra_headers;
	out += "Connection: close\r\n\r\n";
	if (with_body)
		out += body;
	return out;
}

std::string TextReply(std::string_view status, const std::string &body,
                      std::string_view extra_headers = {})
{
	return Reply(status, "text/plain; charset=utf-8", body, true,
	             extra_headers);
}

// Where the request head ends (after its empty line), or npos. Clients may
// end lines with "\n" alone (RFC 9112 section 2.2 lets a server accept it).
size_t HeadEnd(std::string_view data)
{
	size_t crlf = data.find("\r\n\r\n");
	size_t lf = data.find("\n\n");
	if (crlf == std::string_view::npos && lf == std::string_view::npos)
		return std::string_view::npos;
	if (lf == std::string_view::npos ||
	    (crlf != std::string_view::npos && crlf + 4 <= lf + 2))
		return crlf + 4;
	return lf + 2;
}

// A non-blocking socket call that failed with this errno can be retried
// when poll() says so; any other errno ends the connection.
// How long the listener rests after an accept(2) that failed for want of a
// resource (Loop()).
constexpr milliseconds kAcceptRest{250};

bool RetryLater(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

Status NotLoopback(const std::string &quoted, std::string_view use)
{
	return Status::Error("metrics address " + quoted +
	                             ": not a loopback address (the metrics "
	                             "have no authentication; use " +
	                             std::string(use) +
	                             ", and a reverse proxy for remote "
	                             "scrapes)",
	                     EINVAL);
}

} // namespace

Result<LoopbackAddress> ParseLoopbackAddress(std::string_view text)
{
	const std::string quoted = "\"" + std::string(text) + "\"";
	size_t colon = text.rfind(':');
	if (colon == std::string_view::npos || colon + 1 == text.size())
		return Status::Error("metrics address " + quoted +
		                             " is not HOST:PORT",
		                     EINVAL);
	std::string_view host = text.substr(0, colon);
	std::string_view port_text = text.substr(colon + 1);
	unsigned port = 0;
	auto [end, ec] = std::from_chars(
	        port_text.data(), port_text.data() + port_text.size(), port);
	if (ec != std::errc() || end != port_text.data() + port_text.size() ||
	    port > 65535)
		return Status::Error("metrics address " + quoted +
		                             ": the port must be a number from "
		                             "0 to 65535",
		                     EINVAL);

	LoopbackAddress out;
	out.port = static_cast<uint16_t>(port);
	if (host == "localhost")
		host = "127.0.0.1";
	if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
		std::string h(host.substr(1, host.size() - 2));
		sockaddr_in6 sa{};
		sa.sin6_family = AF_INET6;
		sa.sin6_port = htons(out.port);
		if (::inet_pton(AF_INET6, h.c_str(), &sa.sin6_addr) != 1)
			return Status::Error(
			        "metrics address " + quoted + ": \"" + h +
			                "\" is not an IPv6 address",
			        EINVAL);
		if (!IN6_IS_ADDR_LOOPBACK(&sa.sin6_addr))
			return NotLoopback(quoted, "[::1] or 127.0.0.1");
		std::memcpy(&out.addr, &sa, sizeof(sa));
		out.len = sizeof(sa);
		out.text = "[::1]:" + std::to_string(port);
		return out;
	}
	std::string h(host);
	sockaddr_in sa{};
	sa.sin_family = AF_INET;
	sa.sin_port = htons(out.port);
	if (::inet_pton(AF_INET, h.c_str(), &sa.sin_addr) != 1)
		return Status::Error(
		        "metrics address " + quoted + ": \"" + h +
		                "\" is not an IPv4 address, [IPv6] address "
		                "or localhost",
		        EINVAL);
	if ((ntohl(sa.sin_addr.s_addr) >> 24) != 127)
		return NotLoopback(quoted, "127.0.0.1 or [::1]");
	std::memcpy(&out.addr, &sa, sizeof(sa));
	out.len = sizeof(sa);
	out.text = h + ":" + std::to_string(port);
	return out;
}

std::string MetricsHttpResponse(std::string_view head,
                                const MetricsRender &render)
{
	std::string_view line = head.substr(0, head.find('\n'));
	if (!line.empty() && line.back() == '\r')
		line.remove_suffix(1);
	// METHOD SP TARGET SP HTTP/x.y
	size_t sp1 = line.find(' ');
	size_t sp2 =
	        sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
	if (sp1 == 0 || sp2 == std::string_view::npos || sp2 == sp1 + 1 ||
	    line.find(' ', sp2 + 1) != std::string_view::npos ||
	    !line.substr(sp2 + 1).starts_with("HTTP/"))
		return TextReply("400 Bad Request", "malformed request line\n");
	std::string_view method = line.substr(0, sp1);
	std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
	std::string_view path = target.substr(0, target.find('?'));
	if (path != kMetricsPath)
		return TextReply("404 Not Found",
		                 "not found; the metrics are at /metrics\n");
	const bool head_only = method == "HEAD";
	if (method != "GET" && !head_only)
		return TextReply("405 Method Not Allowed",
		                 "only GET and HEAD are allowed\n",
		                 "Allow: GET, HEAD\r\n");
	Result<std::string> body = render();
	if (!body.ok())
		return TextReply("503 Service Unavailable",
		                 body.status().message() + "\n");
	return Reply("200 OK", kMetricsContentType, *body, !head_only);
}

struct MetricsHttpServer::Connection {
	enum class Phase { kReading, kWriting, kDraining };

	Connection(UniqueFd f, steady_clock::time_point d)
	    : fd(std::move(f)), deadline(d)
	{
	}
	UniqueFd fd;
	steady_clock::time_point deadline;
	Phase phase = Phase::kReading;
	std::string in;
	std::string out;
	size_t sent = 0;
};

Result<std::unique_ptr<MetricsHttpServer>>
MetricsHttpServer::Start(const LoopbackAddress &address, MetricsRender render,
                         MetricsHttpOptions options)
{
	const std::string where = "metrics listener " + address.text;
	UniqueFd fd(::socket(address.addr.ss_family,
	                     SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
	if (!fd.valid())
		return Status::FromErrno(where + ": socket", errno);
	int one = 1;
	if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one,
	                 sizeof(one)) < 0)
		return Status::FromErrno(where + ": SO_REUSEADDR", errno);
	if (::bind(fd.get(), reinterpret_cast<const sockaddr *>(&address.addr),
	           address.len) < 0)
		return Status::FromErrno(where + ": bind", errno);
	if (::listen(fd.get(), 16) < 0)
		return Status::FromErrno(where + ": listen", errno);
	sockaddr_storage bound{};
	socklen_t len = sizeof(bound);
	if (::getsockname(fd.get(), reinterpret_cast<sockaddr *>(&bound),
	                  &len) < 0)
		return Status::FromErrno(where + ": getsockname", errno);
	uint16_t port = bound.ss_family == AF_INET6
	                        ? ntohs(reinterpret_cast<sockaddr_in6 *>(&bound)
	                                        ->sin6_port)
	                        : ntohs(reinterpret_cast<sockaddr_in *>(&bound)
	                                        ->sin_port);
	UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!wake.valid())
		return Status::FromErrno(where + ": eventfd", errno);

	std::unique_ptr<MetricsHttpServer> server(
	        new MetricsHttpServer(std::move(render), options, std::move(fd),
	                              std::move(wake), port));
	server->thread_ = std::jthread(
	        [s = server.get()](std::stop_token stop) { s->Loop(stop); });
	return server;
}

MetricsHttpServer::MetricsHttpServer(MetricsRender render,
                                     MetricsHttpOptions options,
                                     UniqueFd listen_fd, UniqueFd wake_fd,
                                     uint16_t port)
    : render_(std::move(render)), options_(options),
      listen_fd_(std::move(listen_fd)), wake_fd_(std::move(wake_fd)),
      port_(port)
{
}

MetricsHttpServer::~MetricsHttpServer()
{
	Stop();
}

void MetricsHttpServer::Stop()
{
	std::lock_guard lock(stop_mu_);
	if (!thread_.joinable())
		return;
	thread_.request_stop();
	uint64_t one = 1;
	if (::write(wake_fd_.get(), &one, sizeof(one)) < 0)
		LogWarning() << "metrics listener: wake-up write failed: "
		             << std::strerror(errno);
	thread_.join();
	listen_fd_.Reset();
}

bool MetricsHttpServer::StepOrClose(Connection &c)
{
	// An exception must not end this thread (std::terminate would end
	// the daemon): the render reads the kernel's status through
	// NetlinkSocket, which throws std::bad_alloc for a message it cannot
	// allocate. The scrape fails, its connection is closed, the next is
	// served.
	try {
		return Step(c);
	} catch (const std::exception &e) {
		LogError() << "metrics listener: a request failed, closing "
		              "its connection: "
		           << e.what();
		return false;
	}
}

bool MetricsHttpServer::Step(Connection &c)
{
	char buf[2048];
	if (c.phase == Connection::Phase::kWriting)
		return Send(c);
	ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
	if (n < 0)
		return RetryLater(errno);
	if (n == 0)
		return false; // the client is done (or gave up)
	if (c.phase == Connection::Phase::kDraining)
		return true; // discard until the client closes
	c.in.append(buf, static_cast<size_t>(n));
	size_t end = HeadEnd(c.in);
	if (end != std::string::npos && end <= options_.max_request_bytes) {
		c.out = MetricsHttpResponse(
		        std::string_view(c.in).substr(0, end), render_);
	} else if (c.in.size() > options_.max_request_bytes) {
		c.out = TextReply(
		        "431 Request Header Fields Too Large",
		        "the request is longer than " +
		                std::to_string(options_.max_request_bytes) +
		                " bytes\n");
	} else {
		return true; // more to come
	}
	c.in.clear();
	c.phase = Connection::Phase::kWriting;
	return Send(c);
}

// Sends what the socket takes; once all is sent, half-closes and drains
// what the client still sends, so that closing does not reset the
// connection under the response (a lingering close, bounded by the
// connection's deadline).
bool MetricsHttpServer::Send(Connection &c)
{
	while (c.sent < c.out.size()) {
		ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent,
		                   c.out.size() - c.sent, MSG_NOSIGNAL);
		if (n < 0)
			return RetryLater(errno);
		c.sent += static_cast<size_t>(n);
	}
	if (::shutdown(c.fd.get(), SHUT_WR) < 0)
		return false;
	c.phase = Connection::Phase::kDraining;
	c.deadline = std::min(c.deadline, steady_clock::now() + kLinger);
	return true;
}

void MetricsHttpServer::Loop(const std::stop_token &stop)
{
	std::list<Connection> conns;
	std::vector<pollfd> pfds;
	// After an accept(2) that failed for want of a resource (EMFILE at
	// the fd limit): the pending connection keeps the listener readable,
	// and polling it again at once spun a core and logged the failure
	// hundreds of thousands of times a second. It rests until then,
	// logged once per streak.
	steady_clock::time_point accept_rests_until{};
	bool accept_failing = false;
	while (!stop.stop_requested()) {
		auto now = steady_clock::now();
		// Connections past their deadline go, whatever their phase.
		conns.remove_if([now](const Connection &c) {
			return c.deadline <= now;
		});
		auto wake = now + milliseconds(60000);
		const bool resting = now < accept_rests_until;
		if (resting)
			wake = accept_rests_until;
		// A negative fd is left out by poll(2).
		pfds.assign({{wake_fd_.get(), POLLIN, 0},
		             {resting ? -1 : listen_fd_.get(), POLLIN, 0}});
		for (const Connection &c : conns) {
			wake = std::min(wake, c.deadline);
			pfds.push_back(
			        {c.fd.get(),
			         static_cast<short>(
			                 c.phase == Connection::Phase::kWriting
			                         ? POLLOUT
			                         : POLLIN),
			         0});
		}
		auto wait =
		        std::chrono::duration_cast<milliseconds>(wake - now);
		int ready = ::poll(pfds.data(), pfds.size(),
		                   static_cast<int>(std::max<int64_t>(
		                           wait.count() + 1, 0)));
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			LogError() << "metrics listener: poll: "
			           << std::strerror(errno);
			return;
		}
		if (pfds[0].revents)
			return; // Stop()

		// Existing connections first (their pollfds follow in order).
		size_t i = 2;
		for (auto it = conns.begin(); it != conns.end(); ++i) {
			Connection &c = *it;
			bool keep = true;
			if (pfds[i].revents)
				keep = StepOrClose(c);
			it = keep ? std::next(it) : conns.erase(it);
		}

		if (pfds[1].revents & POLLIN) {
			for (;;) {
				int fd = ::accept4(
				        listen_fd_.get(), nullptr, nullptr,
				        SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0) {
					if (RetryLater(errno) ||
					    errno == ECONNABORTED)
						break;
					if (!accept_failing)
						LogWarning()
						        << "metrics listener: "
						           "accept: "
						        << std::strerror(errno)
						        << "; trying again "
						           "every "
						        << kAcceptRest.count()
						        << " ms";
					accept_failing = true;
					accept_rests_until =
					        steady_clock::now() +
					        kAcceptRest;
					break;
				}
				accept_failing = false;
				UniqueFd conn(fd);
				if (conns.size() >= options_.max_connections) {
					LogDebug() << "metrics listener: "
					              "connection limit, "
					              "dropped one";
					continue; // closed by UniqueFd
				}
				try {
					conns.emplace_back(
					        std::move(conn),
					        steady_clock::now() +
					                options_.timeout);
				} catch (const std::exception &e) {
					LogError() << "metrics listener: "
					              "dropped a connection: "
					           << e.what();
				}
			}
		}
	}
}

} // namespace replipipe
