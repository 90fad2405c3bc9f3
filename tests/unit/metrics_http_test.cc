// MetricsHttpServer on an ephemeral loopback port, the loopback-only
// address parser, and the textfile writer.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <new>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "log.h"
#include "metrics_http.h"
#include "metrics_text.h"
#include "metrics_textfile.h"
#include "test_dir_fake.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using std::chrono::steady_clock;

const std::string kBody = "# HELP x_total X.\n# TYPE x_total counter\n"
                          "x_total 1\n";

UniqueFd Connect(uint16_t port)
{
	UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd.valid())
		return fd;
	// A test that hangs fails instead; far beyond the server's time-outs
	// (5 s at most), which must close first.
	timeval tv{15, 0};
	::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	sockaddr_in sa{};
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) <
	    0)
		fd.Reset();
	return fd;
}

// Everything the server sends until it closes; "timed out" when it did
// not close within the socket's 15 s receive time-out.
std::string ReadAll(int fd)
{
	std::string out;
	char buf[4096];
	for (;;) {
		ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
		if (n == 0)
			return out;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? out : "timed out";
		out.append(buf, static_cast<size_t>(n));
	}
}

std::string Fetch(uint16_t port, const std::string &request)
{
	UniqueFd fd = Connect(port);
	if (!fd.valid())
		return "connect failed";
	if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
	    static_cast<ssize_t>(request.size()))
		return "send failed";
	return ReadAll(fd.get());
}

std::string StatusLine(const std::string &response)
{
	return response.substr(0, response.find("\r\n"));
}

std::string Body(const std::string &response)
{
	size_t end = response.find("\r\n\r\n");
	return end == std::string::npos ? "" : response.substr(end + 4);
}

class MetricsHttpTest : public ::testing::Test
{
protected:
	void Start(MetricsHttpOptions options = {})
	{
		auto address = ParseLoopbackAddress("127.0.0.1:0");
		ASSERT_TRUE(address.ok()) << address.status().message();
		auto server = MetricsHttpServer::Start(
		        *address,
		        [this]() -> Result<std::string> {
			        ++renders_;
			        if (throw_once_.exchange(false))
				        throw std::bad_alloc();
			        if (fail_)
				        return Status::Error("kernel gone");
			        return kBody;
		        },
		        options);
		ASSERT_TRUE(server.ok()) << server.status().message();
		server_ = std::move(*server);
		ASSERT_NE(server_->port(), 0);
	}
	uint16_t port() const { return server_->port(); }

	std::atomic<int> renders_{0};
	std::atomic<bool> fail_{false};
	std::atomic<bool> throw_once_{false};
	std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttpTest, GetMetricsServesTheExposition)
{
	Start();
	std::string r = Fetch(port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n"
	                              "User-Agent: test\r\n\r\n");
	EXPECT_EQ(StatusLine(r), "HTTP/1.0 200 OK");
	EXPECT_NE(r.find("\r\nContent-Type: " +
	                 std::string(kMetricsContentType) + "\r\n"),
	          std::string::npos)
	        << r;
	EXPECT_NE(r.find("\r\nContent-Length: " + std::to_string(kBody.size()) +
	                 "\r\n"),
	          std::string::npos)
	        << r;
	EXPECT_EQ(Body(r), kBody);
	EXPECT_EQ(renders_.load(), 1);

	// A query string, bare "\n" line ends, HTTP/1.0 and HEAD.
	r = Fetch(port(), "GET /metrics?name[]=x HTTP/1.0\n\n");
	EXPECT_EQ(StatusLine(r), "HTTP/1.0 200 OK");
	EXPECT_EQ(Body(r), kBody);
	r = Fetch(port(), "HEAD /metrics HTTP/1.0\r\n\r\n");
	EXPECT_EQ(StatusLine(r), "HTTP/1.0 200 OK");
	EXPECT_EQ(Body(r), "");
	EXPECT_NE(r.find("Content-Length: " + std::to_string(kBody.size())),
	          std::string::npos);
}

TEST_F(MetricsHttpTest, OtherPathsAre404)
{
	Start();
	for (const char *path :
	     {"/", "/metrics/", "/metricsx", "/favicon.ico"}) {
		std::string r = Fetch(port(), std::string("GET ") + path +
		                                      " HTTP/1.0\r\n\r\n");
		EXPECT_EQ(StatusLine(r), "HTTP/1.0 404 Not Found") << path;
	}
	EXPECT_EQ(renders_.load(), 0);
}

TEST_F(MetricsHttpTest, OtherMethodsAre405)
{
	Start();
	for (const char *method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
		std::string r =
		        Fetch(port(), std::string(method) +
		                              " /metrics HTTP/1.0\r\n"
		                              "Content-Length: 3\r\n\r\nabc");
		EXPECT_EQ(StatusLine(r), "HTTP/1.0 405 Method Not Allowed")
		        << method;
		EXPECT_NE(r.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos)
		        << r;
	}
	EXPECT_EQ(renders_.load(), 0);
}

TEST_F(MetricsHttpTest, MalformedAndOversizedRequests)
{
	MetricsHttpOptions options;
	options.max_request_bytes = 256;
	Start(options);
	EXPECT_EQ(StatusLine(Fetch(port(), "GET\r\n\r\n")),
	          "HTTP/1.0 400 Bad Request");
	EXPECT_EQ(StatusLine(Fetch(port(), "GET /metrics\r\n\r\n")),
	          "HTTP/1.0 400 Bad Request");
	EXPECT_EQ(StatusLine(Fetch(port(), "GET  /metrics HTTP/1.0\r\n\r\n")),
	          "HTTP/1.0 400 Bad Request");
	EXPECT_EQ(StatusLine(Fetch(port(), "GET /metrics FTP/1.0\r\n\r\n")),
	          "HTTP/1.0 400 Bad Request");
	std::string big =
	        "GET /metrics HTTP/1.0\r\nX-Pad: " + std::string(1000, 'a') +
	        "\r\n\r\n";
	EXPECT_EQ(StatusLine(Fetch(port(), big)),
	          "HTTP/1.0 431 Request Header Fields Too Large");
	EXPECT_EQ(renders_.load(), 0);
}

TEST_F(MetricsHttpTest, RenderErrorIs503)
{
	Start();
	fail_ = true;
	std::string r = Fetch(port(), "GET /metrics HTTP/1.0\r\n\r\n");
	EXPECT_EQ(StatusLine(r), "HTTP/1.0 503 Service Unavailable");
	EXPECT_EQ(Body(r), "kernel gone\n");
}

// The render reads the status through NetlinkSocket, which throws
// std::bad_alloc for a message it cannot allocate. Escaping the listener's
// thread, it would end the daemon (std::terminate): that scrape's
// connection is closed without a response and the next scrape is served.
TEST_F(MetricsHttpTest, ARenderThatThrowsClosesItsConnectionOnly)
{
	Start();
	throw_once_ = true;
	EXPECT_EQ(Fetch(port(), "GET /metrics HTTP/1.0\r\n\r\n"), "");
	std::string r = Fetch(port(), "GET /metrics HTTP/1.0\r\n\r\n");
	EXPECT_EQ(StatusLine(r), "HTTP/1.0 200 OK");
	EXPECT_EQ(Body(r), kBody);
	EXPECT_EQ(renders_.load(), 2);
}

TEST_F(MetricsHttpTest, SilentClientsNeitherStallOthersNorStayForever)
{
	// Bounds far from the time-out (5 s) on either side: on a loaded
	// machine (eight shards under ASan at once) a fetch can take a while.
	MetricsHttpOptions options;
	options.timeout = milliseconds(5000);
	Start(options);
	UniqueFd silent = Connect(port());
	ASSERT_TRUE(silent.valid());
	UniqueFd partial = Connect(port());
	ASSERT_TRUE(partial.valid());
	ASSERT_EQ(::send(partial.get(), "GET /met", 8, MSG_NOSIGNAL), 8);

	// Served while the other two hang (they would hold it 5 s).
	auto t0 = steady_clock::now();
	EXPECT_EQ(StatusLine(Fetch(port(), "GET /metrics HTTP/1.0\r\n\r\n")),
	          "HTTP/1.0 200 OK");
	EXPECT_LT(steady_clock::now() - t0, milliseconds(2500));

	// Both are closed at their deadline without a response.
	EXPECT_EQ(ReadAll(silent.get()), "");
	EXPECT_EQ(ReadAll(partial.get()), "");
	EXPECT_GE(steady_clock::now() - t0, milliseconds(4000));
}

TEST_F(MetricsHttpTest, ConnectionsBeyondTheLimitAreClosedAtOnce)
{
	MetricsHttpOptions options;
	options.max_connections = 2;
	options.timeout = milliseconds(5000); // as above
	Start(options);
	UniqueFd a = Connect(port());
	UniqueFd b = Connect(port());
	ASSERT_TRUE(a.valid() && b.valid());
	// The server accepts both before it accepts the third (one queue).
	std::this_thread::sleep_for(milliseconds(100));
	auto t0 = steady_clock::now();
	EXPECT_EQ(Fetch(port(), "GET /metrics HTTP/1.0\r\n\r\n"), "");
	EXPECT_LT(steady_clock::now() - t0, milliseconds(2500));
	// Once the silent ones time out, there is room again.
	EXPECT_EQ(ReadAll(a.get()), "");
	EXPECT_EQ(ReadAll(b.get()), "");
	EXPECT_EQ(StatusLine(Fetch(port(), "GET /metrics HTTP/1.0\r\n\r\n")),
	          "HTTP/1.0 200 OK");
}

// At the process's fd limit, accept(2) fails with EMFILE while the
// connection stays pending: the listener rests instead of polling it again
// at once, which spun a core. Measured as the process's CPU time over half
// a second with one such connection pending.
TEST_F(MetricsHttpTest, AnAcceptThatFailsAtTheFdLimitDoesNotSpin)
{
	Start();
	UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	ASSERT_TRUE(client.valid());
	// UBSan (the test command's unit build) checks the type of an object
	// whose member is called; the first time it meets a type it reads
	// the vtable through a pipe (sanitizer_common's
	// IsAccessibleMemoryRange). With no fd left that fails, and the
	// listener's log line about EMFILE is reported as a call on an
	// object with an invalid vptr. A line with a number (a member
	// operator<<, as that line's) logged first, with fds to spare, has
	// it know the type. Alone in its process the test failed so.
	::testing::internal::CaptureStderr();
	LogWarning() << "before the fd limit of " << 64;
	(void)::testing::internal::GetCapturedStderr();
	rlimit saved{};
	ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
	// Every fd up to a low limit taken: the next accept gets EMFILE.
	rlimit low = saved;
	low.rlim_cur = 64;
	std::vector<UniqueFd> fillers;
	ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
	for (;;) {
		UniqueFd f(::dup(STDERR_FILENO));
		if (!f.valid())
			break;
		fillers.push_back(std::move(f));
	}
	sockaddr_in sa{};
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port());
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	const int connected = ::connect(
	        client.get(), reinterpret_cast<sockaddr *>(&sa), sizeof(sa));
	rusage before{}, after{};
	::getrusage(RUSAGE_SELF, &before);
	std::this_thread::sleep_for(milliseconds(500));
	::getrusage(RUSAGE_SELF, &after);
	fillers.clear();
	ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
	ASSERT_EQ(connected, 0) << std::strerror(errno);
	auto cpu = [](const rusage &r) {
		return std::chrono::seconds(r.ru_utime.tv_sec +
		                            r.ru_stime.tv_sec) +
		       std::chrono::microseconds(r.ru_utime.tv_usec +
		                                 r.ru_stime.tv_usec);
	};
	EXPECT_LT(cpu(after) - cpu(before), milliseconds(150))
	        << "the listener spun on a failing accept";
	// With fds again, the pending connection is served.
	ASSERT_TRUE(::send(client.get(), "GET /metrics HTTP/1.0\r\n\r\n", 26,
	                   MSG_NOSIGNAL) == 26);
	timeval tv{5, 0};
	::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	EXPECT_EQ(StatusLine(ReadAll(client.get())), "HTTP/1.0 200 OK");
}

TEST_F(MetricsHttpTest, StopClosesTheListener)
{
	Start();
	uint16_t p = port();
	server_->Stop();
	server_->Stop(); // twice is fine
	EXPECT_FALSE(Connect(p).valid());
}

TEST(MetricsAddress, LoopbackOnly)
{
	auto v4 = ParseLoopbackAddress("127.0.0.1:9469");
	ASSERT_TRUE(v4.ok()) << v4.status().message();
	EXPECT_EQ(v4->port, 9469);
	EXPECT_EQ(v4->addr.ss_family, AF_INET);
	EXPECT_EQ(v4->text, "127.0.0.1:9469");
	EXPECT_TRUE(ParseLoopbackAddress("127.1.2.3:80").ok());
	auto local = ParseLoopbackAddress("localhost:9469");
	ASSERT_TRUE(local.ok());
	EXPECT_EQ(local->text, "127.0.0.1:9469");
	auto v6 = ParseLoopbackAddress("[::1]:9469");
	ASSERT_TRUE(v6.ok()) << v6.status().message();
	EXPECT_EQ(v6->addr.ss_family, AF_INET6);
	EXPECT_EQ(v6->text, "[::1]:9469");

	for (const char *bad : {"0.0.0.0:9469", "192.168.1.10:9469",
	                        "[::]:9469", "[2001:db8::1]:9469"}) {
		auto r = ParseLoopbackAddress(bad);
		ASSERT_FALSE(r.ok()) << bad;
		EXPECT_NE(r.status().message().find("not a loopback address"),
		          std::string::npos)
		        << r.status().message();
	}
	for (const char *bad :
	     {"127.0.0.1", "127.0.0.1:", ":9469", "127.0.0.1:65536",
	      "127.0.0.1:-1", "127.0.0.1:94x", "example.org:9469", "::1:9469",
	      "[::1:9469"})
		EXPECT_FALSE(ParseLoopbackAddress(bad).ok()) << bad;
}

TEST(MetricsTextfile, WrittenWhole0644AndNoTemporaryLeft)
{
	testing::TempDir dir;
	const std::string path = dir / "replipipe.prom";
	mode_t old = ::umask(0077);
	Status st = WriteMetricsTextfile(path, kBody);
	Status again = WriteMetricsTextfile(path, kBody + "y 2\n");
	::umask(old);
	ASSERT_TRUE(st.ok()) << st.message();
	ASSERT_TRUE(again.ok()) << again.message();
	EXPECT_EQ(dir.Read("replipipe.prom"), kBody + "y 2\n");
	struct stat sb {
	};
	ASSERT_EQ(::stat(path.c_str(), &sb), 0);
	EXPECT_EQ(sb.st_mode & 07777, 0644u);
	size_t files = 0;
	for (const auto &entry :
	     std::filesystem::directory_iterator(dir.path())) {
		(void)entry;
		++files;
	}
	EXPECT_EQ(files, 1u);
}

TEST(MetricsTextfile, FailureSaysWhereAndLeavesNothing)
{
	testing::TempDir dir;
	Status st = WriteMetricsTextfile(dir / "missing/replipipe.prom", kBody);
	ASSERT_FALSE(st.ok());
	EXPECT_NE(st.message().find(dir / "missing/.replipipe.prom."),
	          std::string::npos)
	        << st.message();
	EXPECT_EQ(st.err(), ENOENT);

	// The target is a directory: rename fails, the temporary goes.
	std::filesystem::create_directory(dir / "taken.prom");
	dir.Write("taken.prom/x", "keep");
	st = WriteMetricsTextfile(dir / "taken.prom", kBody);
	ASSERT_FALSE(st.ok());
	EXPECT_NE(st.message().find("rename"), std::string::npos)
	        << st.message();
	size_t files = 0;
	for (const auto &entry :
	     std::filesystem::directory_iterator(dir.path())) {
		(void)entry;
		++files;
	}
	EXPECT_EQ(files, 1u);
}

// Something already at the temporary name (".<name>.<pid>.tmp": a crash
// of an earlier daemon with the same pid, or another user of a
// group-writable textfile directory) is never written through: not a
// symlink to another file (the write used to fail with ELOOP, and the first
// write's failure stops the daemon), nor a hard link to one (it used to be
// truncated and overwritten in place).
TEST(MetricsTextfile, WhatIsAtTheTemporaryNameIsReplacedNotWrittenThrough)
{
	testing::TempDir dir;
	const std::string path = dir / "replipipe.prom";
	const std::string tmp_name =
	        ".replipipe.prom." + std::to_string(::getpid()) + ".tmp";
	dir.Write("other", "keep");
	for (const bool symlink : {true, false}) {
		SCOPED_TRACE(symlink ? "symlink" : "hard link");
		if (symlink)
			ASSERT_EQ(::symlink((dir / "other").c_str(),
			                    (dir / tmp_name).c_str()),
			          0);
		else
			ASSERT_EQ(::link((dir / "other").c_str(),
			                 (dir / tmp_name).c_str()),
			          0);
		Status st = WriteMetricsTextfile(path, kBody);
		ASSERT_TRUE(st.ok()) << st.message();
		EXPECT_EQ(dir.Read("replipipe.prom"), kBody);
		EXPECT_EQ(dir.Read("other"), "keep");
		struct stat sb {
		};
		ASSERT_EQ(::lstat(path.c_str(), &sb), 0);
		EXPECT_TRUE(S_ISREG(sb.st_mode));
		EXPECT_EQ(sb.st_nlink, 1u);
		EXPECT_NE(::lstat((dir / tmp_name).c_str(), &sb), 0);
	}
}

} // namespace
} // namespace replipipe
