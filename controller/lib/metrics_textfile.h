// The node_exporter textfile form of replipiped's metrics
// (--metrics-textfile): the exposition written atomically, so that the
// collector never reads half a file.
#pragma once

#include <string>

#include "status.h"

namespace replipipe
{

// Writes text to a temporary file beside path (".<name>.<pid>.tmp": not
// *.prom, so the collector ignores it; whatever was at that name is
// removed first and the file created anew, never written through), makes
// it 0644 (the collector runs as another user; the daemon's umask is 0077)
// and renames it over path.
// No fsync: a scrape wants the latest figures, and after a crash the next
// write replaces whatever is left. On failure path is left as it was and
// the temporary file is removed.
Status WriteMetricsTextfile(const std::string &path, const std::string &text);

} // namespace replipipe
