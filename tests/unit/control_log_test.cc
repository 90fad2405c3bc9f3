#include "log.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace replipipe
{
namespace
{

// Captures what is written to stderr while alive.
class StderrCapture
{
public:
	StderrCapture()
	{
		EXPECT_EQ(::pipe2(fds_, O_NONBLOCK), 0);
		saved_ = ::dup(STDERR_FILENO);
		::dup2(fds_[1], STDERR_FILENO);
	}
	~StderrCapture()
	{
		Restore();
		::close(fds_[0]);
		::close(fds_[1]);
	}
	std::string Take()
	{
		Restore();
		std::string text;
		char buf[4096];
		ssize_t n;
		while ((n = ::read(fds_[0], buf, sizeof(buf))) > 0)
			text.append(buf, static_cast<size_t>(n));
		return text;
	}

private:
	void Restore()
	{
		if (saved_ >= 0) {
			::dup2(saved_, STDERR_FILENO);
			::close(saved_);
			saved_ = -1;
		}
	}
	int fds_[2];
	int saved_ = -1;
};

TEST(ControlLog, PrefixesEveryLineWithItsPriority)
{
	LogLevel before = GetLogLevel();
	SetLogLevel(LogLevel::kInfo);
	StderrCapture capture;
	LogError() << "pipe " << 7 << " failed";
	LogInfo() << "two\nlines";
	LogDebug() << "not shown at info";
	std::string text = capture.Take();
	SetLogLevel(before);
	EXPECT_EQ(text, "<3>pipe 7 failed\n<6>two\n<6>lines\n");
}

TEST(ControlLog, Levels)
{
	EXPECT_EQ(ParseLogLevel("debug"), LogLevel::kDebug);
	EXPECT_EQ(ParseLogLevel("warn"), LogLevel::kWarning);
	EXPECT_EQ(ParseLogLevel("3"), LogLevel::kError);
	EXPECT_FALSE(ParseLogLevel("loud").has_value());
	EXPECT_STREQ(LogLevelName(LogLevel::kNotice), "notice");
	LogLevel before = GetLogLevel();
	SetLogLevel(LogLevel::kWarning);
	EXPECT_TRUE(LogEnabled(LogLevel::kError));
	EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
	SetLogLevel(before);
}

} // namespace
} // namespace replipipe
