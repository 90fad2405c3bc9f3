// Logging to stderr with systemd priority prefixes ("<3>message"), which
// journald turns into the record's priority. One write(2) per line so that
// lines from several threads never interleave.
//
// Thread-safety: every function may be called from any thread.
#pragma once

#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace replipipe
{

// Values are the syslog priorities journald understands.
enum class LogLevel : int {
	kError = 3,
	kWarning = 4,
	kNotice = 5,
	kInfo = 6,
	kDebug = 7,
};

// Lines above this level are dropped. Default: kInfo.
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
bool LogEnabled(LogLevel level);

// "error", "warning", "notice", "info", "debug" (also "err", "warn", and the
// digits 3..7). nullopt for anything else.
std::optional<LogLevel> ParseLogLevel(std::string_view text);
const char *LogLevelName(LogLevel level);

// Writes "<N>" + message + "\n" to stderr when the level is enabled.
// Embedded newlines become separate lines with the same prefix.
void Log(LogLevel level, std::string_view message);

// Builds a line with operator<< and logs it when destroyed:
//   LogLine(LogLevel::kInfo) << "pipe " << id << " created";
class LogLine
{
public:
	explicit LogLine(LogLevel level) : level_(level) {}
	~LogLine()
	{
		if (LogEnabled(level_))
			Log(level_, out_.str());
	}
	LogLine(const LogLine &) = delete;
	LogLine &operator=(const LogLine &) = delete;

	template <typename T> LogLine &operator<<(const T &value)
	{
		if (LogEnabled(level_))
			out_ << value;
		return *this;
	}

private:
	LogLevel level_;
	std::ostringstream out_;
};

inline LogLine LogError()
{
	return LogLine(LogLevel::kError);
}
inline LogLine LogWarning()
{
	return LogLine(LogLevel::kWarning);
}
inline LogLine LogNotice()
{
	return LogLine(LogLevel::kNotice);
}
inline LogLine LogInfo()
{
	return LogLine(LogLevel::kInfo);
}
inline LogLine LogDebug()
{
	return LogLine(LogLevel::kDebug);
}

} // namespace replipipe
