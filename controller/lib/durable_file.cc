#include "durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "unique_fd.h"

namespace replipipe
{

Status WriteAll(int fd, const std::string &text, const std::string &path)
{
	size_t done = 0;
	while (done < text.size()) {
		ssize_t n = ::write(fd, text.data() + done, text.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Status::FromErrno("write " + path, errno);
		done += static_cast<size_t>(n);
	}
	return Status();
}

Result<std::string> ReadAll(const std::string &path)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid())
		return Status::FromErrno("open " + path, errno);
	std::string text;
	char buf[65536];
	while (true) {
		ssize_t n = ::read(fd.get(), buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Status::FromErrno("read " + path, errno);
		if (n == 0)
			return text;
		text.append(buf, static_cast<size_t>(n));
	}
}

Status FsyncDir(const std::string &dir)
{
	UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!fd.valid())
		return Status::FromErrno("open directory " + dir, errno);
	if (::fsync(fd.get()) != 0)
		return Status::FromErrno("fsync directory " + dir, errno);
	return Status();
}

Status WriteSyncedTemp(const std::string &tmp, const std::string &text)
{
	// A temp file left by a crash is stale by definition: the file it
	// was to replace is the truth until a rename replaces it.
	if (::unlink(tmp.c_str()) != 0 && errno != ENOENT)
		return Status::FromErrno("remove stale " + tmp, errno);
	UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	                   0600));
	if (!fd.valid())
		return Status::FromErrno("create " + tmp, errno);
	Status st = WriteAll(fd.get(), text, tmp);
	if (st.ok() && ::fsync(fd.get()) != 0)
		st = Status::FromErrno("fsync " + tmp, errno);
	if (!st.ok())
		::unlink(tmp.c_str());
	return st;
}

Status RenameOver(const std::string &tmp, const std::string &path)
{
	if (::rename(tmp.c_str(), path.c_str()) == 0)
		return Status();
	Status st = Status::FromErrno("rename " + tmp + " to " + path, errno);
	::unlink(tmp.c_str());
	return st;
}

} // namespace replipipe
