#include "netlink_dump_retry.h"

#include <cerrno>
#include <string>

#include "log.h"

namespace replipipe
{

Status RetryDump(const std::function<Status()> &dump, unsigned attempts)
{
	Status st;
	for (unsigned i = 1;; ++i) {
		st = dump();
		if (st.ok() || (st.err() != EMSGSIZE && st.err() != EAGAIN))
			return st;
		if (i >= attempts)
			return st.Context("dumped " + std::to_string(i) +
			                  " times, the pipes changed during "
			                  "each");
		LogDebug() << "netlink dump: " << st.message()
		           << "; dumping again";
	}
}

} // namespace replipipe
