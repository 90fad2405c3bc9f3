// OwedLogoutsFile: <state_dir>/owed-logouts.json, the iSCSI logouts a
// daemon could not do (iscsid down at a delete, say) and owes still, so
// that a daemon started after it tries them again (decision 102):
//   {"boot_id": "<the kernel's boot id>",
//    "logouts": [{"target": <URL>, "session": "session3", "why": ...}]}
// A session lives no longer than its boot, and after a reboot its name
// may be another session's: a file written in another boot owes nothing.
// Written atomically, as pipes.json; no file when nothing is owed.
#pragma once

#include <string>
#include <vector>

#include "status.h"

namespace replipipe
{

struct OwedLogoutEntry {
	std::string target;  // the pair's target URL
	std::string session; // the sysfs session to end ("session3")
	std::string why;     // why the last try failed
	bool operator==(const OwedLogoutEntry &) const = default;
};

struct OwedLogoutsLoaded {
	std::vector<OwedLogoutEntry> entries; // this boot's
	// The file was written in another boot: its entries are dropped.
	bool other_boot = false;
};

class OwedLogoutsFile
{
public:
	// boot_id_path: /proc/sys/kernel/random/boot_id (tests: a file).
	OwedLogoutsFile(const std::string &state_dir, std::string boot_id_path);

	const std::string &path() const { return path_; }
	// None when there is no file. An unreadable or malformed file is an
	// error that names it.
	Result<OwedLogoutsLoaded> Load() const;
	// Replaces the file with entries; removes it when there are none.
	Status Save(const std::vector<OwedLogoutEntry> &entries) const;

private:
	Result<std::string> BootId() const;

	const std::string dir_;
	const std::string path_;
	const std::string boot_id_path_;
};

} // namespace replipipe
