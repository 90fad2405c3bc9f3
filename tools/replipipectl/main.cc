// replipipectl: the command-line client of replipiped (shared DESIGN.md,
// "The CLI contract"; docs/cli.md). Parsing lives in cli_args.h and output
// in cli_output.h; this file talks to the daemon and picks the exit status.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_args.h"
#include "cli_output.h"
#include "control_client.h"
#include "control_protocol.h"

namespace replipipe
{
namespace
{

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr milliseconds kWaitPoll{500};
// The least time a status request of `wait` has for its reply, also at or
// past the --timeout deadline (the deadline bounds when the wait stops
// asking, not how long one reply may take): the state is always looked at,
// so a pipe that is there already is reached with --timeout 0, and a poll
// that starts just before the deadline still gets its answer. A status
// reply takes milliseconds; this leaves a loaded host ample room, and ends
// a wait on a daemon that does not answer soon after its --timeout.
constexpr milliseconds kWaitReplyAtLeast{3000};
// A send that broke: how long to look for the refusal the daemon sent
// before it closed (busy at its connection cap); it is already queued.
constexpr milliseconds kRefusalReadBound{1000};
// Plain-line progress of `wait` (not a terminal): at most this often.
constexpr std::chrono::seconds kPlainProgressEvery{5};

// JSON output that cannot throw: bytes that are not UTF-8 (an error quoting
// a file name) are printed as U+FFFD.
std::string Dump(const nlohmann::ordered_json &j, int indent = -1)
{
	return j.dump(indent, ' ', false,
	              nlohmann::ordered_json::error_handler_t::replace);
}

// 2.5 -> "2.5", 600 -> "600", 1000000 -> "1000000" (not %g's "1e+06"):
// at most three decimals, trailing zeros dropped.
std::string Seconds(double seconds)
{
	char buf[64];
	std::snprintf(buf, sizeof(buf), "%.3f", seconds);
	std::string text = buf;
	text.erase(text.find_last_not_of('0') + 1);
	if (text.back() == '.')
		text.pop_back();
	return text;
}

// What is left of the time until deadline, at least 0.
milliseconds Left(steady_clock::time_point deadline)
{
	return std::max(milliseconds(0),
	                std::chrono::duration_cast<milliseconds>(
	                        deadline - steady_clock::now()));
}

// Whether command changes something in the daemon (a call of it that got
// no answer may or may not have been applied).
bool ChangesState(CliCommand command)
{
	switch (command) {
	case CliCommand::kCreateOrModify:
	case CliCommand::kDelete:
	case CliCommand::kPause:
	case CliCommand::kResume:
		return true;
	case CliCommand::kList:
	case CliCommand::kStatus:
	case CliCommand::kWait:
	case CliCommand::kEvents:
		return false;
	}
	return true;
}

class Cli
{
public:
	explicit Cli(CliInvocation inv) : inv_(std::move(inv)) {}

	int Run()
	{
		switch (inv_.command) {
		case CliCommand::kCreateOrModify:
			return CreateOrModify();
		case CliCommand::kDelete:
			return Delete();
		case CliCommand::kList:
			return List();
		case CliCommand::kStatus:
			return inv_.watch ? Watch() : Status();
		case CliCommand::kWait:
			return Wait();
		case CliCommand::kEvents:
			return Events();
		case CliCommand::kPause:
		case CliCommand::kResume:
			return SetRunState();
		}
		return kExitUsage;
	}

private:
	// Prints why a call failed; returns the exit status.
	int Fail(const std::string &error, const std::string &code, int exit)
	{
		if (inv_.json)
			std::cout << OneLineJson(ErrorJson(error, code))
			          << std::endl;
		else
			std::cerr << "replipipectl: " << error << std::endl;
		return exit;
	}

	int FailReply(const ControlReply &reply)
	{
		// A ReturnValue stays a number for scripts, as the
		// method's own failures print it (docs/cli.md).
		if (inv_.json && reply.return_value) {
			nlohmann::ordered_json j{
			        {"ReturnValue",
			         static_cast<uint32_t>(*reply.return_value)},
			        {"Error", reply.error}};
			if (!reply.code.empty())
				j["code"] = reply.code;
			std::cout << OneLineJson(j) << std::endl;
			return ExitCodeForReply(reply);
		}
		std::string error = reply.error;
		if (reply.return_value)
			error = "ReturnValue " +
			        std::to_string(static_cast<uint32_t>(
			                *reply.return_value)) +
			        ": " + error;
		return Fail(error, reply.code, ExitCodeForReply(reply));
	}

	// Prints why the socket could not be reached; returns the exit
	// status. connect() refused by the socket's file mode (0660, group
	// replipipe) is the same refusal as the daemon's SO_PEERCRED check:
	// exit 77, not 69 (docs/cli.md).
	int FailConnect(const Status &st)
	{
		if (st.err() == EACCES || st.err() == EPERM)
			return Fail("permission denied: " + st.message() +
			                    " (uid " +
			                    std::to_string(::getuid()) +
			                    "; only root and members of group "
			                    "replipipe may use replipiped)",
			            kCodePermissionDenied, kExitNoPermission);
		return Fail("cannot reach replipiped: " + st.message() +
		                    " (is replipiped running? --socket or "
		                    "REPLIPIPE_SOCKET select another socket)",
		            "unreachable", kExitUnavailable);
	}

	// How far a call to the daemon got.
	enum class Stage {
		kConnect, // not connected
		kSend,    // connected; the request not (all) sent
		kReply,   // the request sent: the daemon may act on it
	};

	// The bound of a call (kCallTimeoutSeconds or REPLIPIPE_CALL_TIMEOUT).
	milliseconds CallBound() const
	{
		return std::max(milliseconds(1),
		                milliseconds(std::llround(
		                        inv_.call_timeout_seconds * 1000)));
	}

	// The daemon closes a connection whose request line is over the
	// protocol's limit: the CLI would see a broken pipe and say
	// "unreachable" (69). Such a request is the caller's (a Goal file of
	// megabytes): a usage error. False after printing that (*exit holds
	// the status then).
	bool RequestFits(const ControlRequest &request, int *exit)
	{
		const size_t request_bytes = EncodeRequest(request).size();
		if (request_bytes <= kMaxLineBytes)
			return true;
		*exit = Fail("the request is " + std::to_string(request_bytes) +
		                     " bytes of JSON; the control protocol "
		                     "takes at most " +
		                     std::to_string(kMaxLineBytes) +
		                     " (is the Goal that large?)",
		             "usage", kExitUsage);
		return false;
	}

	// Connects, sends request and reads its reply, all within bound. The
	// error is ETIMEDOUT when the daemon did not take the connection or
	// the request, or did not answer, in time; *stage says how far the
	// call got. With client, a connection that got its reply is kept
	// there (events).
	Result<ControlReply>
	Exchange(const ControlRequest &request, milliseconds bound,
	         Stage *stage, std::optional<ControlClient> *client = nullptr)
	{
		const auto deadline = steady_clock::now() + bound;
		*stage = Stage::kConnect;
		auto connected =
		        ControlClient::Connect(inv_.socket_path, bound);
		if (!connected.ok())
			return connected.status();
		*stage = Stage::kSend;
		if (auto sent = connected->Send(request, Left(deadline));
		    !sent.ok()) {
			// A daemon at its connection cap answers busy and
			// closes before it reads the request: the send then
			// breaks, and the answer is still there to read.
			const int err = sent.err();
			if (err != EPIPE && err != ECONNRESET)
				return sent;
			auto refused = connected->Receive(
			        std::min(Left(deadline), kRefusalReadBound));
			if (!refused.ok())
				return sent;
			*stage = Stage::kReply;
			return refused;
		}
		*stage = Stage::kReply;
		auto reply = connected->Receive(Left(deadline));
		if (reply.ok() && client)
			client->emplace(std::move(*connected));
		return reply;
	}

	// A call that may well succeed if made again soon: the daemon's
	// socket refused or missing (it restarts), the connection broken
	// before a reply (it stopped). Not a time-out: that has its own
	// rules (Wait()).
	static bool TransientCallError(const Status &st, Stage stage)
	{
		const int err = st.err();
		if (stage == Stage::kConnect)
			return err == ECONNREFUSED || err == ENOENT;
		return err == EPIPE || err == ECONNRESET;
	}

	// The daemon's answer that it cannot take the call now: at its
	// connection cap, or stopping (a restart follows under systemd).
	static bool TransientReply(const ControlReply &reply)
	{
		return !reply.return_value && (reply.code == kCodeBusy ||
		                               reply.code == kCodeShuttingDown);
	}

	// Prints why a call of bound got no reply; returns the exit status.
	int FailCall(const Status &st, Stage stage, milliseconds bound)
	{
		if (st.err() == ETIMEDOUT)
			return FailNoAnswer(st, stage, bound);
		if (stage == Stage::kConnect)
			return FailConnect(st);
		// A reply that is not the protocol is 76; a connection lost
		// before the whole reply came is the daemon gone: 69
		// (docs/cli.md).
		const bool protocol =
		        st.err() == EPROTO || st.err() == EMSGSIZE;
		return Fail(st.message(), protocol ? "protocol" : "unreachable",
		            protocol ? kExitProtocol : kExitUnavailable);
	}

	// The daemon did not take the connection or the request, or did not
	// answer, within bound: exit 69, saying whether it may have acted.
	int FailNoAnswer(const Status &st, Stage stage, milliseconds bound)
	{
		std::string error = "replipiped did not answer within " +
		                    Seconds(bound.count() / 1000.0) + " s (" +
		                    st.message() + ")";
		if (ChangesState(inv_.command))
			error += stage == Stage::kReply
			                 ? "; the request may or may not have "
			                   "been applied (check with "
			                   "`replipipectl status`)"
			                 : "; the request did not reach it and "
			                   "was not applied";
		return Fail(error, "timeout", kExitUnavailable);
	}

	// One request and its reply, within CallBound(); nullopt after
	// printing why there is none (*exit holds the status then).
	std::optional<ControlReply> Call(const ControlRequest &request,
	                                 int *exit)
	{
		if (!RequestFits(request, exit))
			return std::nullopt;
		const milliseconds bound = CallBound();
		Stage stage = Stage::kConnect;
		auto reply = Exchange(request, bound, &stage);
		if (!reply.ok()) {
			*exit = FailCall(reply.status(), stage, bound);
			return std::nullopt;
		}
		return std::move(*reply);
	}

	int CreateOrModify()
	{
		ControlRequest request = inv_.request;
		if (inv_.goal_file) {
			auto goal = LoadGoalFile(*inv_.goal_file);
			if (!goal.ok()) {
				// Text that is not UTF-8, or too long to
				// send, is the caller's error.
				if (goal.status().err() == EILSEQ ||
				    goal.status().err() == EFBIG)
					return Fail(goal.status().message(),
					            "usage", kExitUsage);
				return Fail(goal.status().message(), "no_input",
				            kExitNoInput);
			}
			request.call.goal = *goal;
		}
		int exit = 0;
		auto reply = Call(request, &exit);
		if (!reply)
			return exit;
		if (inv_.json) {
			std::cout << OneLineJson(MethodJson(*reply))
			          << std::endl;
			return ExitCodeForReply(*reply);
		}
		if (!reply->ok)
			return FailReply(*reply);
		std::cout << reply->replication_pipe << std::endl;
		return kExitOk;
	}

	int Delete()
	{
		int exit = 0;
		auto reply = Call(inv_.request, &exit);
		if (!reply)
			return exit;
		if (inv_.json) {
			std::cout << OneLineJson(MethodJson(*reply))
			          << std::endl;
			return ExitCodeForReply(*reply);
		}
		if (!reply->ok)
			return FailReply(*reply);
		std::cout << "deleted " << reply->replication_pipe << std::endl;
		return kExitOk;
	}

	int List()
	{
		int exit = 0;
		auto reply = Call(inv_.request, &exit);
		if (!reply)
			return exit;
		if (!reply->ok)
			return FailReply(*reply);
		if (inv_.json)
			std::cout << Dump(StatusJson(reply->pipes), 2)
			          << std::endl;
		else
			std::cout << FormatListTable(reply->pipes)
			          << std::flush;
		return kExitOk;
	}

	int Status()
	{
		int exit = 0;
		auto reply = Call(inv_.request, &exit);
		if (!reply)
			return exit;
		if (!reply->ok)
			return FailReply(*reply);
		if (inv_.json)
			std::cout << Dump(StatusJson(reply->pipes), 2)
			          << std::endl;
		else
			std::cout << FormatStatus(reply->pipes) << std::flush;
		return kExitOk;
	}

	int Watch()
	{
		const bool tty = ::isatty(STDOUT_FILENO);
		const auto interval = milliseconds(
		        static_cast<int64_t>(inv_.interval_seconds * 1000));
		for (bool first = true;; first = false) {
			int exit = 0;
			auto reply = Call(inv_.request, &exit);
			if (!reply)
				return exit;
			if (!reply->ok)
				return FailReply(*reply);
			if (inv_.json) {
				// One document per line, to be read as a
				// stream.
				std::cout << Dump(StatusJson(reply->pipes))
				          << std::endl;
			} else {
				if (tty)
					std::cout << "\033[H\033[2J";
				else if (!first)
					std::cout << "\n";
				std::cout << FormatStatus(reply->pipes)
				          << std::flush;
			}
			std::this_thread::sleep_for(interval);
		}
	}

	int Wait()
	{
		const std::string &state = inv_.wait_state;
		const std::string &pipe_arg = *inv_.request.pipe;
		const bool tty = !inv_.json && ::isatty(STDOUT_FILENO);
		const auto start = steady_clock::now();
		std::optional<steady_clock::time_point> deadline;
		if (inv_.timeout_seconds)
			deadline =
			        start + milliseconds(static_cast<int64_t>(
			                        *inv_.timeout_seconds * 1000));
		int exit = 0;
		if (!RequestFits(inv_.request, &exit))
			return exit;
		std::string last_line;
		steady_clock::time_point last_print{};
		// The last answer (none yet): what a wait that times out
		// without a reply to its last request reports.
		std::optional<std::pair<std::string, WaitSummary>> last;
		// Since when the daemon has not answered (transiently).
		std::optional<steady_clock::time_point> failing_since;
		for (;;) {
			// Each status request gets the time up to the
			// deadline, at least kWaitReplyAtLeast, at most the
			// bound of any call. When that reaches the deadline,
			// no answer within it is the wait's time-out (3);
			// else the daemon's silence (69).
			milliseconds bound = CallBound();
			bool to_deadline = false;
			if (deadline) {
				const milliseconds left = Left(*deadline);
				bound = std::min(
				        bound,
				        std::max(kWaitReplyAtLeast, left));
				to_deadline = bound >= left;
			}
			Stage stage = Stage::kConnect;
			auto reply = Exchange(inv_.request, bound, &stage);
			// A daemon that restarts (a module reload makes the
			// unit restart it: docs/decisions.md 60), is at its
			// connection cap or is stopping is asked again, until
			// the deadline (without one, for one call bound): a
			// wait outlives a restart.
			const bool transient =
			        reply.ok()
			                ? !reply->ok && TransientReply(*reply)
			                : TransientCallError(reply.status(),
			                                     stage);
			if (!transient) {
				failing_since.reset();
			} else {
				const auto now = steady_clock::now();
				if (!failing_since) {
					failing_since = now;
					std::cerr
					        << "replipiped: "
					        << (reply.ok()
					                    ? reply->error
					                    : reply.status()
					                              .message())
					        << "; asking again"
					        << std::endl;
				}
				const auto until =
				        deadline ? *deadline
				                 : *failing_since + CallBound();
				if (now + kWaitPoll < until) {
					std::this_thread::sleep_for(kWaitPoll);
					continue;
				}
			}
			if (!reply.ok()) {
				Finish(tty, 0);
				const auto &st = reply.status();
				if (st.err() != ETIMEDOUT || !to_deadline)
					return FailCall(st, stage, bound);
				const std::string unanswered =
				        " (replipiped did not answer the last "
				        "status request)";
				if (last)
					return FailWaitTimedOut(last->first,
					                        last->second,
					                        unanswered);
				return Fail("no reply from replipiped by the "
				            "deadline (" +
				                    st.message() + ")",
				            "timeout", kExitWaitTimeout);
			}
			if (!reply->ok) {
				Finish(tty, 0);
				return FailReply(*reply);
			}
			if (reply->pipes.size() != 1) {
				Finish(tty, 0);
				return Fail(
				        "the daemon answered with " +
				                std::to_string(
				                        reply->pipes.size()) +
				                " pipes for " + pipe_arg,
				        "protocol", kExitProtocol);
			}
			const ControlPipe &pipe = reply->pipes[0];
			const std::string label = pipe.name.empty()
			                                  ? pipe.instance_id
			                                  : pipe.name;
			WaitSummary summary = SummarizeWait(pipe, state);
			last.emplace(label, summary);
			if (tty) {
				std::cout << "\r\033[K" << label << " "
				          << ProgressBar(summary, state)
				          << std::flush;
				drew_ = true;
			} else if (!inv_.json) {
				std::string line =
				        ProgressLine(label, summary, state);
				auto now = steady_clock::now();
				if (summary.reached ||
				    (line != last_line &&
				     now - last_print >= kPlainProgressEvery)) {
					std::cout << line << std::endl;
					last_line = line;
					last_print = now;
				}
			}
			if (summary.reached) {
				Finish(tty, kExitOk);
				if (inv_.json)
					std::cout << Dump(StatusJson(
					                          reply->pipes),
					                  2)
					          << std::endl;
				return kExitOk;
			}
			auto now = steady_clock::now();
			if (deadline && now >= *deadline) {
				Finish(tty, 0);
				return FailWaitTimedOut(label, summary, "");
			}
			auto sleep = kWaitPoll;
			if (deadline && *deadline - now < sleep)
				sleep = std::chrono::duration_cast<
				        milliseconds>(*deadline - now);
			std::this_thread::sleep_for(sleep);
		}
	}

	// "timed out after N s: X of Y pairs of PIPE are STATE" + note; exit 3.
	int FailWaitTimedOut(const std::string &label,
	                     const WaitSummary &summary,
	                     const std::string &note)
	{
		return Fail("timed out after " +
		                    Seconds(*inv_.timeout_seconds) +
		                    " s: " + std::to_string(summary.in_state) +
		                    " of " + std::to_string(summary.pairs) +
		                    " pairs of " + label + " are " +
		                    inv_.wait_state + note,
		            "timeout", kExitWaitTimeout);
	}

	// Ends the progress bar's line.
	int Finish(bool tty, int exit)
	{
		if (tty && drew_)
			std::cout << std::endl;
		drew_ = false;
		return exit;
	}

	int Events()
	{
		// The subscription's reply within the bound of a call; then
		// events come when they come.
		const milliseconds bound = CallBound();
		Stage stage = Stage::kConnect;
		std::optional<ControlClient> client;
		auto reply = Exchange(inv_.request, bound, &stage, &client);
		if (!reply.ok())
			return FailCall(reply.status(), stage, bound);
		if (!reply->ok)
			return FailReply(*reply);
		for (;;) {
			auto line = client->ReadEventLine();
			if (!line.ok())
				return Fail(line.status().message(),
				            "unreachable", kExitUnavailable);
			if (!*line)
				return Fail("replipiped closed the event "
				            "stream",
				            "unreachable", kExitUnavailable);
			if (inv_.json) {
				std::cout << **line << std::endl;
				continue;
			}
			auto event = DecodeEvent(**line);
			if (event.ok())
				std::cout << FormatEvent(*event) << std::endl;
			else
				std::cout << **line << std::endl;
		}
	}

	int SetRunState()
	{
		int exit = 0;
		auto reply = Call(inv_.request, &exit);
		if (!reply)
			return exit;
		if (!reply->ok)
			return FailReply(*reply);
		if (inv_.json)
			std::cout << OneLineJson({{"ok", true}}) << std::endl;
		else
			std::cout << (inv_.command == CliCommand::kPause
			                      ? "paused "
			                      : "resumed ")
			          << *inv_.request.pipe
			          << (inv_.request.pair
			                      ? " pair " + *inv_.request.pair
			                      : std::string())
			          << std::endl;
		return kExitOk;
	}

	const CliInvocation inv_;
	bool drew_ = false;
};

} // namespace
} // namespace replipipe

int main(int argc, char **argv)
{
	using namespace replipipe;
	std::vector<std::string> args(argv + 1, argv + argc);
	CliParse parse = ParseCli(args, std::getenv("REPLIPIPE_SOCKET"),
	                          std::getenv(kCallTimeoutEnv));
	switch (parse.kind) {
	case CliParse::Kind::kHelp:
	case CliParse::Kind::kVersion:
		std::cout << parse.text << std::endl;
		return kExitOk;
	case CliParse::Kind::kUsageError:
		if (JsonRequested(args))
			std::cout << OneLineJson(ErrorJson(parse.text, "usage"))
			          << std::endl;
		else
			std::cerr << parse.text << '\n'
			          << parse.hint << std::endl;
		return kExitUsage;
	case CliParse::Kind::kRun:
		break;
	}
	return Cli(std::move(parse.invocation)).Run();
}
