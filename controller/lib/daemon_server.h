// ControlServer: replipiped's Unix socket (control_protocol.h).
//
// One thread accepts; each connection gets a thread of its own that checks
// the peer (SO_PEERCRED, control_peer.h), reads one request line, and either
// answers it through the handler or, for `events`, streams the EventHub
// until the client goes away or the server stops.
//
// Socket file: the parent directory is created 0755 when missing; the
// socket is made 0660 and given group `replipipe` when that group exists,
// before listen() (nobody can connect earlier). A stale socket (nobody
// listening) is replaced; a live one, or a path that is not a socket, is an
// error. Stop() removes the file if it is still ours.
//
// Thread-safety: Stop() may be called from any thread, once or more; the
// handler is called from connection threads concurrently.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "control_peer.h"
#include "control_protocol.h"
#include "daemon_events.h"
#include "status.h"
#include "unique_fd.h"

namespace replipipe
{

// OK when nothing or a stale socket (nobody listening) is at path; else
// why not: another daemon listens there (EADDRINUSE), or a file that is
// not a socket is in the way (EEXIST). replipiped asks before it touches
// the kernel, so that a second daemon stops before it pushes its store
// over the first one's pipes; ControlServer::Start() asks again.
Status CheckSocketPathFree(const std::string &path);

struct ControlServerOptions {
	std::string socket_path = kDefaultSocketPath;
	std::string group = kControlGroup; // chgrp the socket when it exists
	mode_t socket_mode = 0660;
	mode_t dir_mode = 0755;
	// Requests in progress and event streams have caps of their own:
	// long-lived `events` watchers cannot take every connection.
	size_t max_connections = 64;
	size_t max_streams = 32;
	// A client must send its request within this; a blocked event
	// reader is dropped after send_timeout.
	std::chrono::milliseconds request_timeout{30000};
	std::chrono::milliseconds send_timeout{10000};
	// The peer policy (default CheckPeer).
	std::function<PeerDecision(const PeerCredentials &)> check_peer;
};

class ControlServer
{
public:
	using Handler = std::function<ControlReply(const ControlRequest &)>;

	// Binds and listens, then starts accepting. hub serves `events`
	// (null: `events` is refused). handler and hub must outlive the
	// server.
	static Result<std::unique_ptr<ControlServer>>
	Start(ControlServerOptions options, Handler handler, EventHub *hub);
	~ControlServer(); // Stop()
	ControlServer(const ControlServer &) = delete;
	ControlServer &operator=(const ControlServer &) = delete;

	// Stops accepting, ends event streams, waits for the connections in
	// progress to finish their request, removes the socket file.
	void Stop();

	const std::string &socket_path() const { return options_.socket_path; }
	size_t connections() const;

private:
	struct Connection;

	ControlServer(ControlServerOptions options, Handler handler,
	              EventHub *hub, UniqueFd listen_fd, UniqueFd wake_fd,
	              dev_t dev, ino_t ino);

	void AcceptLoop(std::stop_token stop);
	void Serve(Connection *conn, std::stop_token stop);
	// One connection's request and reply (or event stream); may throw,
	// which Serve() catches. peer: who it is, for the log, once known.
	void Converse(int fd, std::stop_token stop, std::string &peer);
	void StreamEvents(int fd, std::stop_token stop);
	void Reap(bool all);
	bool Stopping(const std::stop_token &stop) const;

	const ControlServerOptions options_;
	const Handler handler_;
	EventHub *const hub_;
	UniqueFd listen_fd_;
	// An eventfd written once by Stop(): it stays readable, so every
	// poll() that includes it wakes up.
	UniqueFd wake_fd_;
	const dev_t socket_dev_;
	const ino_t socket_ino_;

	std::atomic<bool> stopping_{false};
	std::mutex stop_mu_;   // serializes Stop()
	bool stopped_ = false; // guarded by stop_mu_

	mutable std::mutex mu_;
	std::list<std::unique_ptr<Connection>> conns_; // guarded by mu_
	size_t streams_ = 0; // of conns_, those streaming events; mu_

	std::jthread accept_thread_; // last: started when the rest exists
};

} // namespace replipipe
