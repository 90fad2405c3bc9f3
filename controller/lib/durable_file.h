// Files that must survive a crash or a power loss: whole-file reads, and the
// write half of an atomic replace (a temp file written and fsynced, then
// renamed over the old one, then the directory fsynced). The state
// directory's files (pipes.json, owed-logouts.json) are written this way.
#pragma once

#include <string>

#include "status.h"

namespace replipipe
{

// Writes all of text to fd; path names the file in errors.
Status WriteAll(int fd, const std::string &text, const std::string &path);
// The whole file.
Result<std::string> ReadAll(const std::string &path);
// Makes the directory's entries (a rename into it) durable.
Status FsyncDir(const std::string &dir);
// Creates tmp (mode 0600; a stale one, left by a crash, is removed first)
// with text, fsynced: ready to be renamed over the file it replaces. On
// failure tmp is removed.
Status WriteSyncedTemp(const std::string &tmp, const std::string &text);
// Renames tmp over path; on failure tmp is removed. The rename is durable
// only once the directory is fsynced (FsyncDir()).
Status RenameOver(const std::string &tmp, const std::string &path);

} // namespace replipipe
