#include "metrics_textfile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "unique_fd.h"

namespace replipipe
{

Status WriteMetricsTextfile(const std::string &path, const std::string &text)
{
	const size_t slash = path.rfind('/');
	const std::string dir =
	        slash == std::string::npos ? "" : path.substr(0, slash + 1);
	const std::string name =
	        slash == std::string::npos ? path : path.substr(slash + 1);
	if (name.empty())
		return Status::Error("metrics textfile \"" + path +
		                             "\" names a directory",
		                     EISDIR);
	const std::string tmp =
	        dir + "." + name + "." + std::to_string(::getpid()) + ".tmp";
	// The name is ours, but what is there already is not to be trusted:
	// left by a crashed daemon whose pid this one reuses, or put there
	// by another user of a group-writable textfile directory. Written
	// through, a hard link or a file someone else holds open would take
	// the metrics, a FIFO would block the write for good, and a symlink
	// (refused by O_NOFOLLOW) would fail every write. So it goes, and a
	// file of our own is created in its place (O_EXCL: if something
	// takes the name in between, this write fails).
	if (::unlink(tmp.c_str()) < 0 && errno != ENOENT)
		return Status::FromErrno(
		        "metrics textfile: remove stale " + tmp, errno);
	UniqueFd fd(::open(tmp.c_str(),
	                   O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
	                   0644));
	if (!fd.valid())
		return Status::FromErrno("metrics textfile: create " + tmp,
		                         errno);
	auto fail = [&tmp](Status st) {
		::unlink(tmp.c_str());
		return st;
	};
	if (::fchmod(fd.get(), 0644) < 0)
		return fail(Status::FromErrno("metrics textfile: chmod " + tmp,
		                              errno));
	size_t done = 0;
	while (done < text.size()) {
		ssize_t n = ::write(fd.get(), text.data() + done,
		                    text.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(Status::FromErrno(
			        "metrics textfile: write " + tmp, errno));
		done += static_cast<size_t>(n);
	}
	if (::close(fd.Release()) < 0)
		return fail(Status::FromErrno("metrics textfile: close " + tmp,
		                              errno));
	if (::rename(tmp.c_str(), path.c_str()) < 0)
		return fail(Status::FromErrno("metrics textfile: rename " +
		                                      tmp + " to " + path,
		                              errno));
	return Status();
}

} // namespace replipipe
