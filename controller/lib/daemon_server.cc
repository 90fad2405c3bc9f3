#include "daemon_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>

#include "control_client.h"
#include "log.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;

constexpr milliseconds kPollSlice{250};

Status MakeParentDir(const std::string &socket_path, mode_t mode)
{
	std::filesystem::path parent =
	        std::filesystem::path(socket_path).parent_path();
	if (parent.empty())
		return Status();
	struct stat st {
	};
	if (::stat(parent.c_str(), &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return Status::Error("socket directory " +
			                             parent.string() +
			                             " is not a directory",
			                     ENOTDIR);
		return Status();
	}
	std::error_code ec;
	std::filesystem::create_directories(parent, ec);
	if (ec)
		return Status::Error("create socket directory " +
		                             parent.string() + ": " +
		                             ec.message(),
		                     ec.value());
	// mkdir's mode is filtered by the umask; say it exactly.
	if (::chmod(parent.c_str(), mode) < 0)
		return Status::FromErrno("chmod " + parent.string(), errno);
	return Status();
}

// How long a socket that is there may take to accept the probe's connection.
constexpr std::chrono::seconds kStaleSocketProbe{5};

// CheckSocketPathFree(); *stale: a socket nobody listens on is there.
Status CheckSocketPath(const std::string &path, bool *stale)
{
	struct stat st {
	};
	*stale = false;
	if (::lstat(path.c_str(), &st) < 0) {
		if (errno == ENOENT)
			return Status();
		return Status::FromErrno("stat " + path, errno);
	}
	if (!S_ISSOCK(st.st_mode))
		return Status::Error(path + " exists and is not a socket; "
		                            "not replacing it",
		                     EEXIST);
	// Bounded: a listener that never accepts keeps its queue full, and an
	// unbounded connect would hang this start.
	auto probe = ControlClient::Connect(path, kStaleSocketProbe);
	if (probe.ok())
		return Status::Error("another daemon is already listening on " +
		                             path,
		                     EADDRINUSE);
	if (probe.status().err() == ETIMEDOUT)
		return Status::Error(
		        "a process listens on " + path +
		                " but accepts no connection (its queue stayed "
		                "full for " +
		                std::to_string(kStaleSocketProbe.count()) +
		                " s); not replacing it",
		        EADDRINUSE);
	if (probe.status().err() != ECONNREFUSED)
		return probe.status().Context("check existing socket");
	*stale = true;
	return Status();
}

// Removes a socket nobody listens on; refuses anything else in the way.
Status ClearStaleSocket(const std::string &path)
{
	bool stale = false;
	if (Status st = CheckSocketPath(path, &stale); !st.ok() || !stale)
		return st;
	if (::unlink(path.c_str()) < 0 && errno != ENOENT)
		return Status::FromErrno("remove stale socket " + path, errno);
	LogInfo() << "removed stale socket " << path;
	return Status();
}

bool Readable(int fd)
{
	pollfd pfd{fd, POLLIN, 0};
	return ::poll(&pfd, 1, 0) > 0;
}

} // namespace

Status CheckSocketPathFree(const std::string &path)
{
	bool stale = false;
	return CheckSocketPath(path, &stale);
}

struct ControlServer::Connection {
	explicit Connection(UniqueFd f) : fd(std::move(f)) {}
	UniqueFd fd;
	std::atomic<bool> done{false};
	std::jthread thread; // last
};

Result<std::unique_ptr<ControlServer>>
ControlServer::Start(ControlServerOptions options, Handler handler,
                     EventHub *hub)
{
	const std::string &path = options.socket_path;
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (path.empty() || path.size() >= sizeof(addr.sun_path))
		return Status::Error("control socket path \"" + path +
		                             "\" is empty or too long",
		                     ENAMETOOLONG);
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	if (!options.check_peer)
		options.check_peer = CheckPeer;

	if (Status st = MakeParentDir(path, options.dir_mode); !st.ok())
		return st;
	if (Status st = ClearStaleSocket(path); !st.ok())
		return st;

	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd.valid())
		return Status::FromErrno("socket(AF_UNIX)", errno);
	if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&addr),
	           sizeof(addr)) < 0)
		return Status::FromErrno("bind " + path, errno);
	// From here on the file is ours: remove it on every failure.
	auto fail = [&path](Status st) {
		::unlink(path.c_str());
		return st;
	};
	if (::chmod(path.c_str(), options.socket_mode) < 0)
		return fail(Status::FromErrno("chmod " + path, errno));
	if (auto gid = LookupGroup(options.group)) {
		if (::chown(path.c_str(), static_cast<uid_t>(-1), *gid) < 0)
			return fail(Status::FromErrno(
			        "chgrp " + options.group + " " + path, errno));
	} else {
		LogNotice() << "group " << options.group
		            << " does not exist: only root (and this "
		               "daemon's user) may use "
		            << path;
	}
	struct stat st {
	};
	if (::stat(path.c_str(), &st) < 0)
		return fail(Status::FromErrno("stat " + path, errno));
	if (::listen(fd.get(), 128) < 0)
		return fail(Status::FromErrno("listen " + path, errno));
	UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!wake.valid())
		return fail(Status::FromErrno("eventfd", errno));

	std::unique_ptr<ControlServer> server(new ControlServer(
	        std::move(options), std::move(handler), hub, std::move(fd),
	        std::move(wake), st.st_dev, st.st_ino));
	server->accept_thread_ =
	        std::jthread([s = server.get()](std::stop_token stop) {
		        s->AcceptLoop(stop);
	        });
	return server;
}

ControlServer::ControlServer(ControlServerOptions options, Handler handler,
                             EventHub *hub, UniqueFd listen_fd,
                             UniqueFd wake_fd, dev_t dev, ino_t ino)
    : options_(std::move(options)), handler_(std::move(handler)), hub_(hub),
      listen_fd_(std::move(listen_fd)), wake_fd_(std::move(wake_fd)),
      socket_dev_(dev), socket_ino_(ino)
{
}

ControlServer::~ControlServer()
{
	Stop();
}

bool ControlServer::Stopping(const std::stop_token &stop) const
{
	return stopping_.load() || stop.stop_requested();
}

void ControlServer::Stop()
{
	std::lock_guard stop_lock(stop_mu_);
	if (stopped_)
		return;
	stopped_ = true;
	stopping_.store(true);
	uint64_t one = 1;
	if (::write(wake_fd_.get(), &one, sizeof(one)) < 0)
		LogWarning() << "control server: wake-up write failed: "
		             << std::strerror(errno);
	if (accept_thread_.joinable()) {
		accept_thread_.request_stop();
		accept_thread_.join();
	}
	// New clients get ECONNREFUSED/ENOENT from here on.
	listen_fd_.Reset();
	struct stat st {
	};
	const std::string &path = options_.socket_path;
	if (::lstat(path.c_str(), &st) == 0 && st.st_dev == socket_dev_ &&
	    st.st_ino == socket_ino_)
		::unlink(path.c_str());
	Reap(true);
}

size_t ControlServer::connections() const
{
	std::lock_guard lock(mu_);
	return conns_.size();
}

void ControlServer::Reap(bool all)
{
	std::list<std::unique_ptr<Connection>> finished;
	{
		std::lock_guard lock(mu_);
		for (auto it = conns_.begin(); it != conns_.end();) {
			if (all || (*it)->done.load()) {
				finished.push_back(std::move(*it));
				it = conns_.erase(it);
			} else {
				++it;
			}
		}
	}
	for (auto &conn : finished) {
		if (all)
			conn->thread.request_stop();
		if (conn->thread.joinable())
			conn->thread.join();
	}
}

void ControlServer::AcceptLoop(std::stop_token stop)
{
	while (!Stopping(stop)) {
		pollfd pfds[2] = {{listen_fd_.get(), POLLIN, 0},
		                  {wake_fd_.get(), POLLIN, 0}};
		int ready = ::poll(pfds, 2, 1000);
		Reap(false);
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			LogError() << "control server: poll: "
			           << std::strerror(errno);
			return;
		}
		if (pfds[1].revents || Stopping(stop))
			return;
		if (!(pfds[0].revents & POLLIN))
			continue;
		UniqueFd client(::accept4(listen_fd_.get(), nullptr, nullptr,
		                          SOCK_CLOEXEC));
		if (!client.valid()) {
			if (errno != EINTR && errno != EAGAIN &&
			    errno != ECONNABORTED)
				LogWarning() << "control server: accept: "
				             << std::strerror(errno);
			if (errno == EMFILE || errno == ENFILE)
				std::this_thread::sleep_for(kPollSlice);
			continue;
		}
		std::lock_guard lock(mu_);
		if (conns_.size() - streams_ >= options_.max_connections) {
			ControlReply busy =
			        ErrorReply(kCodeBusy, "the daemon has too many "
			                              "connections; try again");
			const std::string text = EncodeReply(busy) + "\n";
			// Best effort: the client may see ECONNRESET instead.
			(void)!::send(client.get(), text.data(), text.size(),
			              MSG_NOSIGNAL | MSG_DONTWAIT);
			continue;
		}
		// A thread that cannot start (EAGAIN at the unit's task
		// limit, no memory) costs this client its connection, not
		// the daemon its control socket: the exception would end
		// the accept loop's thread, i.e. std::terminate.
		try {
			conns_.push_back(std::make_unique<Connection>(
			        std::move(client)));
			Connection *conn = conns_.back().get();
			conn->thread =
			        std::jthread([this, conn](std::stop_token s) {
				        Serve(conn, s);
			        });
		} catch (const std::exception &e) {
			if (!conns_.empty() &&
			    !conns_.back()->thread.joinable())
				conns_.pop_back();
			LogWarning() << "control server: dropping a client: "
			             << e.what();
		}
	}
}

void ControlServer::Serve(Connection *conn, std::stop_token stop)
{
	const int fd = conn->fd.get();
	// When Serve() ends the client must see EOF at once, not when the
	// accept loop next reaps the connection (up to its poll interval):
	// scripts that read the socket until EOF would wait for it.
	struct DoneFlag {
		int fd;
		std::atomic<bool> &done;
		~DoneFlag()
		{
			::shutdown(fd, SHUT_RDWR);
			done.store(true);
		}
	} done_flag{fd, conn->done};

	timeval send_timeout{};
	send_timeout.tv_sec = options_.send_timeout.count() / 1000;
	send_timeout.tv_usec = (options_.send_timeout.count() % 1000) * 1000;
	::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout,
	             sizeof(send_timeout));

	// Nothing may escape this thread (std::terminate would end the
	// daemon): an exception outside the handler (an allocation that
	// fails in the peer check, the request's reader, an event stream's
	// subscription) costs this client its connection, which DoneFlag
	// closes, and is logged.
	std::string peer = "a client"; // who, for the log, once known
	try {
		Converse(fd, stop, peer);
	} catch (const std::exception &e) {
		LogError() << "control: connection of " << peer
		           << " failed, closing it: " << e.what();
	}
}

void ControlServer::Converse(int fd, std::stop_token stop, std::string &peer)
{
	// A reply that cannot be encoded is logged and the connection closed
	// without one.
	auto reply = [fd](const ControlReply &r) {
		try {
			Status st = WriteAllToSocket(fd, EncodeReply(r) + "\n");
			if (!st.ok())
				LogDebug() << "control: reply not delivered: "
				           << st.message();
			return st.ok();
		} catch (const std::exception &e) {
			LogError() << "control: reply not encoded, closing the "
			              "connection: "
			           << e.what();
			return false;
		}
	};

	auto cred = GetPeerCredentials(fd);
	PeerDecision decision;
	if (cred.ok()) {
		peer = "pid " + std::to_string(cred->pid) + " (uid " +
		       std::to_string(cred->uid) + ")";
		decision = options_.check_peer(*cred);
	} else {
		decision = {false,
		            "permission denied: " + cred.status().message()};
	}

	// Read the request before answering even a refusal: closing a Unix
	// socket with unread data makes the peer's read fail (ECONNRESET)
	// instead of showing our reply.
	LineReader reader(fd);
	std::optional<std::string> line;
	const auto deadline =
	        std::chrono::steady_clock::now() + options_.request_timeout;
	while (!Stopping(stop)) {
		auto got = reader.ReadLine(kPollSlice);
		if (got.ok()) {
			line = std::move(*got);
			if (!line)
				return; // closed without a request
			break;
		}
		if (got.status().err() != ETIMEDOUT) {
			LogDebug() << "control: " << got.status().message();
			if (got.status().err() == EMSGSIZE)
				reply(ErrorReply(kCodeBadRequest,
				                 got.status().message()));
			return;
		}
		if (std::chrono::steady_clock::now() >= deadline) {
			reply(ErrorReply(kCodeBadRequest,
			                 "no request within the time limit"));
			return;
		}
	}
	if (!line) {
		reply(ErrorReply(kCodeShuttingDown,
		                 "the daemon is shutting down"));
		return;
	}
	if (!decision.allowed) {
		LogWarning() << "control: refused pid "
		             << (cred.ok() ? std::to_string(cred->pid) : "?")
		             << ": " << decision.reason;
		reply(ErrorReply(kCodePermissionDenied, decision.reason));
		return;
	}
	auto request = DecodeRequest(*line);
	if (!request.ok()) {
		reply(ErrorReply(kCodeBadRequest,
		                 "bad request: " + request.status().message()));
		return;
	}
	LogDebug() << "control: uid " << cred->uid << " pid " << cred->pid
	           << ": " << ControlOpName(request->op);
	if (Stopping(stop)) {
		reply(ErrorReply(kCodeShuttingDown,
		                 "the daemon is shutting down"));
		return;
	}
	if (request->op == ControlOp::kEvents) {
		if (!hub_) {
			reply(ErrorReply(kCodeInternal,
			                 "this server has no event stream"));
			return;
		}
		size_t streams = 0;
		bool admitted = false;
		{
			std::lock_guard lock(mu_);
			streams = streams_;
			admitted = streams_ < options_.max_streams;
			if (admitted)
				++streams_;
		}
		if (!admitted) {
			reply(ErrorReply(kCodeBusy,
			                 "the daemon serves " +
			                         std::to_string(streams) +
			                         " event streams, its most; "
			                         "try again"));
			return;
		}
		// Given back however the stream ends, an exception included.
		struct StreamSlot {
			ControlServer &server;
			~StreamSlot()
			{
				std::lock_guard lock(server.mu_);
				--server.streams_;
			}
		} slot{*this};
		StreamEvents(fd, stop);
		return;
	}
	ControlReply answer;
	try {
		answer = handler_(*request);
	} catch (const std::exception &e) {
		LogError() << "control: op " << ControlOpName(request->op)
		           << " failed: " << e.what();
		answer = ErrorReply(kCodeInternal,
		                    std::string("internal error: ") + e.what());
		answer.return_value = ReturnValue::kUnspecifiedError;
	}
	reply(answer);
}

void ControlServer::StreamEvents(int fd, std::stop_token stop)
{
	// Subscribe before answering: nothing between the two is missed, and
	// the snapshot of pair states comes first.
	auto sub = hub_->Subscribe();
	if (!WriteAllToSocket(fd, EncodeReply(ControlReply{}) + "\n").ok())
		return;
	while (!Stopping(stop)) {
		for (const ControlEvent &event : sub->Wait(kPollSlice))
			if (!WriteAllToSocket(fd, EncodeEvent(event) + "\n")
			             .ok())
				return;
		if (Readable(wake_fd_.get()))
			return;
		if (Readable(fd)) {
			// The client sends nothing more: data is ignored,
			// end of file or an error ends the stream.
			char sink[256];
			ssize_t n =
			        ::recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
			if (n == 0 ||
			    (n < 0 && errno != EAGAIN && errno != EINTR))
				return;
		}
	}
}

} // namespace replipipe
