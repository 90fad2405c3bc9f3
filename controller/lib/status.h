// Status and Result: errors as values that carry their context.
//
// Success costs nothing (no message allocated). An error carries an errno
// (0 when none applies) and a message that says what failed, on which object
// and why. Build one with Status::Error() or Status::FromErrno(), which is
// the one place an errno becomes text.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace replipipe
{

class Status
{
public:
	Status() = default;

	static Status Error(std::string message, int err = 0)
	{
		return Status(std::move(message), err);
	}
	// "<what>: <strerror(err)>", e.g. FromErrno("open /dev/sdb", errno).
	static Status FromErrno(const std::string &what, int err)
	{
		return Status(what + ": " + std::strerror(err), err);
	}

	bool ok() const { return !failed_; }
	int err() const { return err_; }
	const std::string &message() const { return message_; }

	// Prefixes context: "pipe X: " + message. No-op on success.
	Status Context(const std::string &prefix) const
	{
		if (ok())
			return *this;
		return Status(prefix + ": " + message_, err_);
	}

private:
	Status(std::string message, int err)
	    : failed_(true), err_(err), message_(std::move(message))
	{
	}

	bool failed_ = false;
	int err_ = 0;
	std::string message_;
};

// A value or the Status that says why there is none.
template <typename T> class Result
{
public:
	Result(T value) : v_(std::move(value)) {}
	Result(Status status) : v_(std::move(status)) {}

	bool ok() const { return std::holds_alternative<T>(v_); }
	const Status &status() const
	{
		static const Status kOk;
		return ok() ? kOk : std::get<Status>(v_);
	}
	T &value() { return std::get<T>(v_); }
	const T &value() const { return std::get<T>(v_); }
	T &operator*() { return value(); }
	const T &operator*() const { return value(); }
	T *operator->() { return &value(); }
	const T *operator->() const { return &value(); }

private:
	std::variant<T, Status> v_;
};

} // namespace replipipe
