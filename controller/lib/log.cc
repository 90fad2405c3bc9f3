#include "log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace replipipe
{
namespace
{

std::atomic<int> g_log_level{static_cast<int>(LogLevel::kInfo)};

// Writes all of `text` to stderr; gives up on errors other than EINTR (there
// is nowhere to report them).
void WriteAll(std::string_view text)
{
	while (!text.empty()) {
		ssize_t n = ::write(STDERR_FILENO, text.data(), text.size());
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		text.remove_prefix(static_cast<size_t>(n));
	}
}

} // namespace

void SetLogLevel(LogLevel level)
{
	g_log_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

LogLevel GetLogLevel()
{
	return static_cast<LogLevel>(
	        g_log_level.load(std::memory_order_relaxed));
}

bool LogEnabled(LogLevel level)
{
	return static_cast<int>(level) <=
	       g_log_level.load(std::memory_order_relaxed);
}

std::optional<LogLevel> ParseLogLevel(std::string_view text)
{
	if (text == "error" || text == "err" || text == "3")
		return LogLevel::kError;
	if (text == "warning" || text == "warn" || text == "4")
		return LogLevel::kWarning;
	if (text == "notice" || text == "5")
		return LogLevel::kNotice;
	if (text == "info" || text == "6")
		return LogLevel::kInfo;
	if (text == "debug" || text == "7")
		return LogLevel::kDebug;
	return std::nullopt;
}

const char *LogLevelName(LogLevel level)
{
	switch (level) {
	case LogLevel::kError:
		return "error";
	case LogLevel::kWarning:
		return "warning";
	case LogLevel::kNotice:
		return "notice";
	case LogLevel::kInfo:
		return "info";
	case LogLevel::kDebug:
		return "debug";
	}
	return "unknown";
}

void Log(LogLevel level, std::string_view message)
{
	if (!LogEnabled(level))
		return;
	const std::string prefix =
	        "<" + std::to_string(static_cast<int>(level)) + ">";
	std::string out;
	out.reserve(message.size() + prefix.size() + 1);
	// Every line carries the prefix: journald reads each one separately.
	size_t start = 0;
	do {
		size_t end = message.find('\n', start);
		if (end == std::string_view::npos)
			end = message.size();
		out += prefix;
		out.append(message.substr(start, end - start));
		out += '\n';
		start = end + 1;
	} while (start < message.size());
	WriteAll(out);
}

} // namespace replipipe
