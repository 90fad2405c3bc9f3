// Reading sysfs and configfs the tolerant way: an attribute or directory
// that is missing or unreadable reads as empty, since what the callers walk
// (SCSI hosts, iSCSI sessions, LIO's TPGs) can change or vanish under them,
// and a missing piece only means "not this one".
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace replipipe
{

// The first line of path without trailing white space; "" if unreadable.
std::string ReadFirstLine(const std::filesystem::path &path);

// The entries of dir, sorted (a stable order for the walks and their
// tests); none if dir cannot be read.
std::vector<std::filesystem::path>
SortedEntries(const std::filesystem::path &dir);

} // namespace replipipe
