#include "cli_args.h"

#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include <boost/lexical_cast/try_lexical_convert.hpp>
#include <boost/program_options.hpp>

#include "text_scan.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

namespace po = boost::program_options;

// --timeout and --interval: at most a year. Larger values are typing
// errors, and milliseconds of them would overflow the clocks' int64_t.
constexpr double kMaxSeconds = 365.0 * 24 * 3600;

// $REPLIPIPE_CALL_TIMEOUT: all of text is a plain decimal number of
// seconds (digits and at most one '.'; no blanks, sign, exponent or
// hexadecimal, which strtod(3) would take) above 0, at most a year.
std::optional<double> ParseCallTimeout(const char *text)
{
	size_t digits = 0, points = 0, length = 0;
	for (const char *c = text; *c; ++c, ++length) {
		if (*c >= '0' && *c <= '9')
			++digits;
		else if (*c == '.')
			++points;
		else
			return std::nullopt;
	}
	if (digits == 0 || points > 1)
		return std::nullopt;
	char *end = nullptr;
	errno = 0;
	double seconds = std::strtod(text, &end);
	if (end != text + length || errno != 0 || !(seconds > 0) ||
	    !(seconds <= kMaxSeconds))
		return std::nullopt;
	return seconds;
}

// --timeout and --interval: a number as boost_po reads a double (so that
// an error can quote the text as given). nullopt when it is none.
std::optional<double> ParseSecondsOption(const std::string &text)
{
	double seconds = 0;
	if (!boost::conversion::try_lexical_convert(text, seconds))
		return std::nullopt;
	return seconds;
}

struct CommandInfo {
	CliCommand command;
	const char *name;
	const char *synopsis;
	const char *description;
	const char *example;
};

const CommandInfo kCommands[] = {
        {CliCommand::kCreateOrModify, "create-or-modify",
         "create-or-modify --name NAME --source-system REF --target-system "
         "REF\n"
         "                 [--pair SRC=TGT]... [--clear-pairs]\n"
         "                 [--goal TEXT | --goal-file FILE] [--pipe PIPE]",
         "Calls CreateOrModifyReplicationPipe. Without --pipe a new pipe is\n"
         "created; with --pipe that pipe is modified. Without --pair and\n"
         "--clear-pairs the endpoint arrays are NULL (create: no pairs yet;\n"
         "modify: keep the pairs). --pair replaces the set with the given "
         "pairs\n"
         "(in order); --clear-pairs passes empty arrays (remove every pair).\n"
         "SRC is a replipipe backstore \"replipipe_<N>/<name>\" or a\n"
         "CIM_ProtocolEndpoint reference whose Name holds one; TGT is a block\n"
         "device path or such a reference. SRC=TGT is split at the first '='\n"
         "that is outside double quotes and not followed (after blanks)\n"
         "by '\"'.\n"
         "Prints the pipe reference (CIM_NetworkPipe) on success.",
         "replipipectl create-or-modify --name db --source-system localhost "
         "\\\n"
         "    --target-system backup1 \\\n"
         "    --pair replipipe_0/vol1=/dev/disk/by-id/scsi-36001405d0b1c0000 "
         "\\\n"
         "    --goal 'instance of CIM_SettingData { Mode = \"Asynchronous\"; "
         "};'"},
        {CliCommand::kList, "list", "list",
         "Lists the pipes: reference, name, mode, pair count and states.",
         "replipipectl list"},
        {CliCommand::kStatus, "status",
         "status [PIPE] [--watch [--interval SECONDS]]",
         "Shows every pipe (or PIPE) with its pairs, their states and resync\n"
         "progress. --watch refreshes until interrupted.",
         "replipipectl --json status db"},
        {CliCommand::kWait, "wait",
         "wait PIPE [--state STATE] [--timeout SECONDS]",
         "Waits until every pair of PIPE is in STATE (Syncing, InSync,\n"
         "Degraded or Paused; default InSync). Exits 0 then, 3 on timeout\n"
         "(default: wait forever). Draws a progress bar on a terminal, plain\n"
         "lines otherwise.",
         "replipipectl wait db --state InSync --timeout 600"},
        {CliCommand::kDelete, "delete", "delete PIPE",
         "Deletes PIPE: its pairs stop mirroring; the data stays.",
         "replipipectl delete db"},
        {CliCommand::kEvents, "events", "events",
         "Streams the daemon's events (pipe and pair state changes, resync\n"
         "jobs) until interrupted; with --json one JSON object per line.",
         "replipipectl --json events"},
        {CliCommand::kPause, "pause", "pause PIPE [--pair SRC]",
         "Pauses mirroring of every pair of PIPE (or of the pair whose source\n"
         "is SRC): writes are tracked in the dirty bitmap, resync stops.",
         "replipipectl pause db"},
        {CliCommand::kResume, "resume", "resume PIPE [--pair SRC]",
         "Resumes paused or degraded pairs of PIPE (or the pair SRC): they\n"
         "mirror again and resync what is dirty.",
         "replipipectl resume db --pair replipipe_0/vol1"},
};

const CommandInfo *FindCommand(std::string_view name)
{
	for (const auto &info : kCommands)
		if (name == info.name)
			return &info;
	return nullptr;
}

const CommandInfo &InfoOf(CliCommand command)
{
	for (const auto &info : kCommands)
		if (info.command == command)
			return info;
	return kCommands[0];
}

// Options every command accepts, so that `replipipectl status --json` works
// as well as `replipipectl --json status`.
void AddCommonOptions(po::options_description &desc)
{
	desc.add_options()("help,h",
	                   "show this help")("json", "machine-readable output")(
	        "socket", po::value<std::string>()->value_name("PATH"),
	        "daemon socket (default $REPLIPIPE_SOCKET, then "
	        "/run/replipipe/replipiped.sock)");
}

po::options_description CommandOptions(CliCommand command)
{
	po::options_description desc("Options");
	switch (command) {
	case CliCommand::kCreateOrModify:
		desc.add_options()("name",
		                   po::value<std::string>()->value_name("NAME"),
		                   "PipeElementName (required; may be \"\": on "
		                   "modify, keep the name)")(
		        "source-system",
		        po::value<std::string>()->value_name("REF"),
		        "SourceSystem: this host (its name, localhost, or a "
		        "CIM_ComputerSystem reference) (required)")(
		        "target-system",
		        po::value<std::string>()->value_name("REF"),
		        "TargetSystem: the peer (required)")(
		        "pair",
		        po::value<std::vector<std::string>>()
		                ->composing()
		                ->value_name("SRC=TGT"),
		        "an endpoint pair; repeat for several")(
		        "clear-pairs", "pass empty endpoint arrays")(
		        "goal", po::value<std::string>()->value_name("TEXT"),
		        "Goal: MOF text of a CIM_SettingData instance")(
		        "goal-file",
		        po::value<std::string>()->value_name("FILE"),
		        "read the Goal from FILE (- for stdin)")(
		        "pipe", po::value<std::string>()->value_name("PIPE"),
		        "the pipe to modify (ReplicationPipe)");
		break;
	case CliCommand::kStatus:
		desc.add_options()("pipe-arg",
		                   po::value<std::string>()->value_name("PIPE"),
		                   "the pipe (default: all)")(
		        "watch", "refresh until interrupted")(
		        "interval",
		        po::value<std::string>()->value_name("SECONDS"),
		        "refresh interval of --watch (default 1)");
		break;
	case CliCommand::kWait:
		desc.add_options()("pipe-arg",
		                   po::value<std::string>()->value_name("PIPE"),
		                   "the pipe")(
		        "state", po::value<std::string>()->value_name("STATE"),
		        "Syncing, InSync, Degraded or Paused (default InSync)")(
		        "timeout",
		        po::value<std::string>()->value_name("SECONDS"),
		        "give up after SECONDS and exit 3 (default: never)");
		break;
	case CliCommand::kDelete:
		desc.add_options()("pipe-arg",
		                   po::value<std::string>()->value_name("PIPE"),
		                   "the pipe");
		break;
	case CliCommand::kPause:
	case CliCommand::kResume:
		desc.add_options()("pipe-arg",
		                   po::value<std::string>()->value_name("PIPE"),
		                   "the pipe")(
		        "pair", po::value<std::string>()->value_name("SRC"),
		        "only the pair with this source");
		break;
	case CliCommand::kList:
	case CliCommand::kEvents:
		break;
	}
	AddCommonOptions(desc);
	return desc;
}

bool TakesPipeArg(CliCommand command)
{
	return command == CliCommand::kStatus || command == CliCommand::kWait ||
	       command == CliCommand::kDelete ||
	       command == CliCommand::kPause || command == CliCommand::kResume;
}

// Options are never abbreviated: --p must not silently mean --pipe.
constexpr int kStyle = po::command_line_style::default_style &
                       ~po::command_line_style::allow_guessing;

CliParse UsageError(const std::string &prefix, const std::string &message)
{
	CliParse parse;
	parse.kind = CliParse::Kind::kUsageError;
	parse.text = "replipipectl" + prefix + ": " + message;
	parse.hint = "Try 'replipipectl" + prefix + " --help'.";
	return parse;
}

CliParse Help(std::string text)
{
	CliParse parse;
	parse.kind = CliParse::Kind::kHelp;
	parse.text = std::move(text);
	return parse;
}

// The daemon speaks JSON, whose strings are UTF-8: a value sent to it that
// is not UTF-8 is a usage error, named by its option.
std::optional<std::string> CheckUtf8(const std::string &what,
                                     const std::string &value)
{
	const size_t at = InvalidUtf8At(value);
	if (at == std::string::npos)
		return std::nullopt;
	return what + " is not UTF-8 text (byte " + std::to_string(at) + ")";
}

std::optional<std::string> CheckRequestUtf8(const ControlRequest &req)
{
	std::vector<std::pair<std::string, const std::string *>> values = {
	        {"--name", &req.call.pipe_element_name},
	        {"--source-system", &req.call.source_system},
	        {"--target-system", &req.call.target_system},
	        {"--goal", &req.call.goal}};
	for (const auto *endpoints :
	     {&req.call.source_endpoints, &req.call.target_endpoints})
		if (*endpoints)
			for (const std::string &e : **endpoints)
				values.push_back({"--pair", &e});
	if (req.call.replication_pipe)
		values.push_back({"--pipe", &*req.call.replication_pipe});
	if (req.pipe)
		values.push_back({"PIPE", &*req.pipe});
	if (req.pair)
		values.push_back({"--pair", &*req.pair});
	for (const auto &[what, value] : values)
		if (auto error = CheckUtf8(what, *value))
			return error;
	return std::nullopt;
}

// Fills the request from the command's options; a usage error otherwise.
std::optional<std::string> BuildRequest(CliCommand command,
                                        const po::variables_map &vm,
                                        CliInvocation &inv)
{
	ControlRequest &req = inv.request;
	std::optional<std::string> pipe_arg;
	if (vm.count("pipe-arg"))
		pipe_arg = vm["pipe-arg"].as<std::string>();
	switch (command) {
	case CliCommand::kCreateOrModify: {
		req.op = ControlOp::kCreateOrModify;
		for (const char *required :
		     {"name", "source-system", "target-system"})
			if (!vm.count(required))
				return std::string("--") + required +
				       " is required";
		CreateOrModifyCall &call = req.call;
		call.pipe_element_name = vm["name"].as<std::string>();
		call.source_system = vm["source-system"].as<std::string>();
		call.target_system = vm["target-system"].as<std::string>();
		if (call.source_system.empty() || call.target_system.empty())
			return std::string("--source-system and "
			                   "--target-system must not be empty");
		const bool clear = vm.count("clear-pairs") > 0;
		if (vm.count("pair")) {
			if (clear)
				return std::string("--pair and --clear-pairs "
				                   "exclude each other");
			call.source_endpoints.emplace();
			call.target_endpoints.emplace();
			for (const auto &arg :
			     vm["pair"].as<std::vector<std::string>>()) {
				auto split = SplitPairArg(arg);
				if (!split.ok())
					return split.status().message();
				call.source_endpoints->push_back(split->first);
				call.target_endpoints->push_back(split->second);
			}
		} else if (clear) {
			call.source_endpoints.emplace();
			call.target_endpoints.emplace();
		}
		if (vm.count("goal") && vm.count("goal-file"))
			return std::string(
			        "--goal and --goal-file exclude each other");
		if (vm.count("goal"))
			call.goal = vm["goal"].as<std::string>();
		if (vm.count("goal-file"))
			inv.goal_file = vm["goal-file"].as<std::string>();
		if (vm.count("pipe")) {
			call.replication_pipe = vm["pipe"].as<std::string>();
			if (call.replication_pipe->empty())
				return std::string("--pipe must not be empty");
		}
		return std::nullopt;
	}
	case CliCommand::kList:
		req.op = ControlOp::kList;
		return std::nullopt;
	case CliCommand::kEvents:
		req.op = ControlOp::kEvents;
		return std::nullopt;
	case CliCommand::kStatus:
		req.op = ControlOp::kStatus;
		req.pipe = pipe_arg;
		inv.watch = vm.count("watch") > 0;
		if (vm.count("interval")) {
			// Without --watch it would be ignored.
			if (!inv.watch)
				return std::string("--interval is given "
				                   "without --watch");
			const std::string &text =
			        vm["interval"].as<std::string>();
			auto seconds = ParseSecondsOption(text);
			if (!seconds || !(*seconds >= 0.1) ||
			    !(*seconds <= kMaxSeconds))
				return "--interval must be at least 0.1 and at "
				       "most " +
				       std::to_string(int64_t(kMaxSeconds)) +
				       " seconds (a year), not \"" + text +
				       "\"";
			inv.interval_seconds = *seconds;
		}
		break;
	case CliCommand::kWait:
		req.op = ControlOp::kStatus;
		req.pipe = pipe_arg;
		if (vm.count("state")) {
			auto state = CanonicalPairState(
			        vm["state"].as<std::string>());
			if (!state)
				return "--state must be Syncing, InSync, "
				       "Degraded or Paused, not \"" +
				       vm["state"].as<std::string>() + "\"";
			inv.wait_state = *state;
		}
		if (vm.count("timeout")) {
			const std::string &text =
			        vm["timeout"].as<std::string>();
			auto t = ParseSecondsOption(text);
			if (!t || !(*t >= 0) || !(*t <= kMaxSeconds))
				return "--timeout must be a non-negative "
				       "number "
				       "of seconds, at most " +
				       std::to_string(int64_t(kMaxSeconds)) +
				       " (a year), not \"" + text + "\"";
			inv.timeout_seconds = *t;
		}
		break;
	case CliCommand::kDelete:
		req.op = ControlOp::kDelete;
		req.pipe = pipe_arg;
		break;
	case CliCommand::kPause:
	case CliCommand::kResume:
		req.op = command == CliCommand::kPause ? ControlOp::kPause
		                                       : ControlOp::kResume;
		req.pipe = pipe_arg;
		if (vm.count("pair")) {
			req.pair = vm["pair"].as<std::string>();
			if (req.pair->empty())
				return std::string("--pair must not be empty");
		}
		break;
	}
	// An empty PIPE (an unset variable, quoted) names no pipe; the
	// daemon would answer "not found" (5), or `status` show every pipe.
	if (req.pipe && req.pipe->empty())
		return std::string("PIPE must not be empty");
	if (!req.pipe && command != CliCommand::kStatus)
		return std::string("PIPE is required");
	return std::nullopt;
}

} // namespace

double CallTimeoutFor(const ControlRequest &request)
{
	if (request.op != ControlOp::kCreateOrModify ||
	    !request.call.target_endpoints)
		return kCallTimeoutSeconds;
	int logins = 0;
	for (const std::string &target : *request.call.target_endpoints) {
		std::string lower(target);
		for (char &c : lower)
			c = static_cast<char>(
			        std::tolower(static_cast<unsigned char>(c)));
		if (lower.find("iscsi://") != std::string::npos)
			++logins;
	}
	return kCallTimeoutSeconds +
	       kIscsiLoginSeconds * std::max(0, logins - 1);
}

Result<std::pair<std::string, std::string>> SplitPairArg(std::string_view arg)
{
	bool quoted = false;
	for (size_t i = 0; i < arg.size(); ++i) {
		char c = arg[i];
		if (quoted) {
			if (c == '\\')
				++i; // skip the escaped character
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (c == '"') {
			quoted = true;
			continue;
		}
		if (c != '=')
			continue;
		// key="value" (blanks allowed around '=') is inside a
		// reference.
		size_t next = i + 1;
		while (next < arg.size() &&
		       (arg[next] == ' ' || arg[next] == '\t'))
			++next;
		if (next < arg.size() && arg[next] == '"')
			continue;
		std::string source(arg.substr(0, i));
		std::string target(arg.substr(i + 1));
		if (source.empty() || target.empty())
			break;
		return std::pair(std::move(source), std::move(target));
	}
	return Status::Error("--pair \"" + std::string(arg) +
	                     "\" is not SRC=TGT (e.g. "
	                     "replipipe_0/vol1=/dev/sdb)");
}

std::optional<std::string> CanonicalPairState(std::string_view text)
{
	for (const char *state : {"Syncing", "InSync", "Degraded", "Paused"}) {
		std::string_view s(state);
		if (s.size() != text.size())
			continue;
		bool same = true;
		for (size_t i = 0; i < s.size(); ++i)
			same = same &&
			       std::tolower(static_cast<unsigned char>(s[i])) ==
			               std::tolower(static_cast<unsigned char>(
			                       text[i]));
		if (same)
			return std::string(state);
	}
	return std::nullopt;
}

namespace
{

// All of fd up to its end; a failed read(2) is an error about what.
// Stops one byte past max_bytes: a Goal longer than the control protocol's
// line can never be sent, and `--goal-file /dev/zero` must not read forever.
Result<std::string> ReadToEnd(int fd, const std::string &what, size_t max_bytes)
{
	std::string text;
	char chunk[16384];
	for (;;) {
		ssize_t n = ::read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return Status::FromErrno("read " + what, errno);
		}
		if (n == 0)
			return text;
		text.append(chunk, static_cast<size_t>(n));
		if (text.size() > max_bytes)
			return Status::Error(
			        what +
			                " is longer than the control protocol "
			                "takes (at most " +
			                std::to_string(max_bytes) + " bytes)",
			        EFBIG);
	}
}

} // namespace

// Plain read(2): std::ifstream turns a read error into an end of file (an
// empty Goal would be the defaults), or throws (a directory, in libstdc++).
Result<std::string> LoadGoalFile(const std::string &path)
{
	const bool from_stdin = path == "-";
	const std::string what =
	        from_stdin ? "the Goal on stdin" : "Goal file \"" + path + "\"";
	UniqueFd file;
	if (!from_stdin) {
		file.Reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
		if (!file.valid())
			return Status::FromErrno("open " + what, errno);
	}
	auto text = ReadToEnd(from_stdin ? STDIN_FILENO : file.get(), what,
	                      kMaxLineBytes);
	if (!text.ok())
		return text.status();
	if (auto error = CheckUtf8(what, *text))
		return Status::Error(*error, EILSEQ);
	return text;
}

int ExitCodeForReturnValue(ReturnValue value)
{
	auto n = static_cast<uint32_t>(value);
	if (n <= 5)
		return static_cast<int>(n);
	if (value == ReturnValue::kBusy)
		return kExitBusy;
	return static_cast<int>(ReturnValue::kUnspecifiedError);
}

int ExitCodeForReply(const ControlReply &reply)
{
	if (reply.ok)
		return kExitOk;
	if (reply.code == kCodePermissionDenied)
		return kExitNoPermission;
	if (reply.return_value &&
	    *reply.return_value != ReturnValue::kCompleted)
		return ExitCodeForReturnValue(*reply.return_value);
	if (reply.code == kCodeBusy)
		return kExitBusy;
	if (reply.code == kCodeNotFound)
		return static_cast<int>(ReturnValue::kInvalidParameter);
	if (reply.code == kCodeBadRequest)
		return kExitProtocol;
	if (reply.code == kCodeShuttingDown)
		return kExitUnavailable;
	return static_cast<int>(ReturnValue::kUnspecifiedError);
}

std::string GlobalHelp()
{
	std::ostringstream out;
	out << "Usage: replipipectl [--socket PATH] [--json] COMMAND ...\n\n"
	       "Manages replication pipes through the replipiped daemon.\n\n"
	       "Commands:\n";
	for (const auto &info : kCommands)
		out << "  " << info.synopsis << "\n";
	out << "\nPIPE: a CIM_NetworkPipe reference, its InstanceID, or a "
	       "PipeElementName that is unique.\n\n"
	       "Global options:\n"
	       "  --socket PATH   daemon socket (default $REPLIPIPE_SOCKET, "
	       "then "
	    << kDefaultSocketPath
	    << ")\n"
	       "  --json          machine-readable output\n"
	       "  --version       print the version\n"
	       "  -h, --help      this help; COMMAND --help for a command's\n\n"
	       "Exit status: 0 success; 1-5 the method's ReturnValue (3 also "
	       "a wait\ntimeout); 16 Busy; 64 usage error; 66 Goal file "
	       "unreadable; 69 daemon\nunreachable or not answering (within "
	       "$REPLIPIPE_CALL_TIMEOUT s, default 120);\n76 bad reply; 77 "
	       "permission denied.\n\n"
	       "Example:\n  replipipectl create-or-modify --name db "
	       "--source-system localhost \\\n"
	       "      --target-system backup1 --pair "
	       "replipipe_0/vol1=/dev/sdb\n"
	       "  replipipectl wait db --timeout 600\n";
	return out.str();
}

std::string CommandHelp(CliCommand command)
{
	const CommandInfo &info = InfoOf(command);
	std::ostringstream out;
	out << "Usage: replipipectl [--socket PATH] [--json] " << info.synopsis
	    << "\n\n"
	    << info.description << "\n\n";
	po::options_description desc = CommandOptions(command);
	std::ostringstream options;
	options << desc;
	// pipe-arg is the positional PIPE; not an option users type.
	std::string text = options.str();
	std::istringstream lines(text);
	std::string line;
	while (std::getline(lines, line))
		if (line.find("--pipe-arg") == std::string::npos)
			out << line << "\n";
	out << "\nExample:\n  " << info.example << "\n";
	return out.str();
}

namespace
{

// The option of desc that word names ("--name", "--name=value", or a short
// option "-h"), or nullptr.
const po::option_description *OptionOf(const std::string &word,
                                       const po::options_description &desc)
{
	if (word.size() > 2 && word[0] == '-' && word[1] == '-')
		return desc.find_nothrow(word.substr(2, word.find('=') - 2),
		                         false);
	if (word.size() == 2 && word[0] == '-' && word[1] != '-')
		return desc.find_nothrow(word, false);
	return nullptr;
}

} // namespace

Result<std::vector<std::string>>
PositionalWords(const std::vector<std::string> &args,
                const po::options_description &desc)
{
	std::vector<std::string> positional;
	for (size_t i = 0; i < args.size(); ++i) {
		const std::string &word = args[i];
		if (word == "--") {
			positional.insert(positional.end(),
			                  args.begin() + i + 1, args.end());
			break;
		}
		if (word.size() < 2 || word[0] != '-') {
			positional.push_back(word);
			continue;
		}
		const po::option_description *option = OptionOf(word, desc);
		if (!option)
			break; // not an option of desc: boost_po says so
		// Its value in the next word? (Not "--x=value", not a flag.)
		if (word.find('=') != std::string::npos ||
		    option->semantic()->min_tokens() == 0 ||
		    i + 1 == args.size())
			continue;
		const std::string &value = args[++i];
		if (OptionOf(value, desc))
			return Status::Error(
			        word +
			        " needs a value, but the word after it, "
			        "\"" +
			        value +
			        "\", is an option (if that is the value, "
			        "write " +
			        word + "=" + value + ")");
	}
	return positional;
}

size_t MaxSocketPathBytes()
{
	return sizeof(sockaddr_un{}.sun_path) - 1;
}

std::optional<std::string> CheckSocketPath(const std::string &what,
                                           const std::string &path)
{
	if (!path.empty() && path.size() <= MaxSocketPathBytes())
		return std::nullopt;
	return what + " must be a socket path of 1 to " +
	       std::to_string(MaxSocketPathBytes()) + " bytes, not \"" + path +
	       "\"";
}

bool JsonRequested(const std::vector<std::string> &args)
{
	for (const std::string &arg : args) {
		if (arg == "--")
			break;
		if (arg == "--json")
			return true;
	}
	return false;
}

CliParse ParseCli(const std::vector<std::string> &args, const char *env_socket,
                  const char *env_call_timeout)
{
	CliParse parse;
	CliInvocation &inv = parse.invocation;
	// Where the socket comes from, for its usage error.
	std::string socket_from = "the default socket";
	if (env_socket && *env_socket) {
		inv.socket_path = env_socket;
		socket_from = "REPLIPIPE_SOCKET";
	}

	// The global options come before the command; the command is the
	// first word that is neither an option nor --socket's value.
	size_t command_at = args.size();
	for (size_t i = 0; i < args.size(); ++i) {
		const std::string &arg = args[i];
		if (arg == "--socket") {
			++i;
			continue;
		}
		if (!arg.empty() && arg[0] == '-')
			continue;
		command_at = i;
		break;
	}
	std::vector<std::string> global(
	        args.begin(), args.begin() + static_cast<long>(command_at));
	po::options_description global_desc;
	global_desc.add_options()("help,h", "")("version", "")("json", "")(
	        "socket", po::value<std::string>());
	po::variables_map global_vm;
	if (auto words = PositionalWords(global, global_desc); !words.ok())
		return UsageError("", words.status().message());
	try {
		po::store(po::command_line_parser(global)
		                  .options(global_desc)
		                  .style(kStyle)
		                  .run(),
		          global_vm);
		po::notify(global_vm);
	} catch (const po::error &e) {
		return UsageError("", e.what());
	}
	if (global_vm.count("socket")) {
		inv.socket_path = global_vm["socket"].as<std::string>();
		socket_from = "--socket";
	}
	inv.json = global_vm.count("json") > 0;
	if (global_vm.count("version")) {
		parse.kind = CliParse::Kind::kVersion;
		parse.text = std::string("replipipectl ") + REPLIPIPE_VERSION;
		return parse;
	}
	if (command_at == args.size()) {
		if (global_vm.count("help"))
			return Help(GlobalHelp());
		return UsageError("", "no command given");
	}
	const CommandInfo *info = FindCommand(args[command_at]);
	if (!info) {
		if (args[command_at] == "help")
			return Help(GlobalHelp());
		return UsageError("", "unknown command \"" + args[command_at] +
		                              "\"");
	}
	if (global_vm.count("help"))
		return Help(CommandHelp(info->command));
	inv.command = info->command;
	const std::string prefix = std::string(" ") + info->name;

	std::vector<std::string> rest(
	        args.begin() + static_cast<long>(command_at) + 1, args.end());
	po::options_description desc = CommandOptions(info->command);
	po::positional_options_description positional;
	if (TakesPipeArg(info->command))
		positional.add("pipe-arg", 1);
	po::variables_map vm;
	auto words = PositionalWords(rest, desc);
	if (!words.ok())
		return UsageError(prefix, words.status().message());
	// Boost_po's "too many positional options" does not say which.
	const size_t takes = TakesPipeArg(info->command) ? 1 : 0;
	if (words->size() > takes)
		return UsageError(
		        prefix,
		        "unexpected argument \"" + (*words)[takes] + "\"" +
		                (takes ? " after PIPE \"" + (*words)[0] + "\""
		                       : std::string(" (") + info->name +
		                                 " takes options only)"));
	try {
		po::store(po::command_line_parser(rest)
		                  .options(desc)
		                  .positional(positional)
		                  .style(kStyle)
		                  .run(),
		          vm);
		po::notify(vm);
	} catch (const po::error &e) {
		return UsageError(prefix, e.what());
	}
	if (vm.count("help"))
		return Help(CommandHelp(info->command));
	if (vm.count("socket")) {
		// As boost_po says for the other options given twice.
		if (global_vm.count("socket"))
			return UsageError(
			        prefix, "option '--socket' cannot be specified "
			                "more than once");
		inv.socket_path = vm["socket"].as<std::string>();
		socket_from = "--socket";
	}
	// The caller's mistake (64), not an unreachable daemon (69).
	if (auto error = CheckSocketPath(socket_from, inv.socket_path))
		return UsageError(prefix, *error);
	if (vm.count("json"))
		inv.json = true;
	if (auto error = BuildRequest(info->command, vm, inv))
		return UsageError(prefix, *error);
	if (auto error = CheckRequestUtf8(inv.request))
		return UsageError(prefix, *error);
	inv.call_timeout_seconds = CallTimeoutFor(inv.request);
	if (env_call_timeout && *env_call_timeout) {
		auto seconds = ParseCallTimeout(env_call_timeout);
		if (!seconds)
			return UsageError(
			        prefix,
			        std::string(kCallTimeoutEnv) +
			                " must be a plain decimal number of "
			                "seconds above 0 and at most " +
			                std::to_string(int64_t(kMaxSeconds)) +
			                " (a year), not \"" + env_call_timeout +
			                "\"");
		inv.call_timeout_seconds = *seconds;
	}
	parse.kind = CliParse::Kind::kRun;
	return parse;
}

} // namespace replipipe
