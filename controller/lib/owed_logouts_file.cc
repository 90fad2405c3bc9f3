#include "owed_logouts_file.h"

#include <unistd.h>

#include <cerrno>

#include <nlohmann/json.hpp>

#include "durable_file.h"

namespace replipipe
{
namespace
{

using nlohmann::json;

constexpr const char *kFileName = "owed-logouts.json";
constexpr const char *kTempSuffix = ".tmp";

std::string Trimmed(std::string s)
{
	while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
		s.pop_back();
	return s;
}

} // namespace

OwedLogoutsFile::OwedLogoutsFile(const std::string &state_dir,
                                 std::string boot_id_path)
    : dir_(state_dir), path_(state_dir + "/" + kFileName),
      boot_id_path_(std::move(boot_id_path))
{
}

Result<std::string> OwedLogoutsFile::BootId() const
{
	auto text = ReadAll(boot_id_path_);
	if (!text.ok())
		return text.status().Context("the kernel's boot id");
	std::string id = Trimmed(*text);
	if (id.empty())
		return Status::Error("the kernel's boot id: " + boot_id_path_ +
		                             " is empty",
		                     EIO);
	return id;
}

Result<OwedLogoutsLoaded> OwedLogoutsFile::Load() const
{
	OwedLogoutsLoaded out;
	if (::access(path_.c_str(), F_OK) != 0) {
		if (errno == ENOENT)
			return out;
		return Status::FromErrno("access " + path_, errno);
	}
	auto text = ReadAll(path_);
	if (!text.ok())
		return text.status();
	auto boot = BootId();
	if (!boot.ok())
		return boot.status().Context(path_);
	json doc = json::parse(*text, nullptr, false);
	if (doc.is_discarded() || !doc.is_object() ||
	    !doc.contains("boot_id") || !doc["boot_id"].is_string() ||
	    !doc.contains("logouts") || !doc["logouts"].is_array())
		return Status::Error(path_ + ": not an object with a string "
		                             "\"boot_id\" and an array "
		                             "\"logouts\"",
		                     EINVAL);
	if (doc["boot_id"].get<std::string>() != *boot) {
		out.other_boot = true;
		return out;
	}
	for (const json &e : doc["logouts"]) {
		if (!e.is_object() || !e.contains("target") ||
		    !e["target"].is_string() || !e.contains("session") ||
		    !e["session"].is_string())
			return Status::Error(path_ + ": a logout without a "
			                             "string \"target\" and "
			                             "\"session\"",
			                     EINVAL);
		OwedLogoutEntry entry;
		entry.target = e["target"].get<std::string>();
		entry.session = e["session"].get<std::string>();
		// An empty name would have the logout look the session up by
		// its target, and end whichever it found there.
		if (entry.session.empty())
			return Status::Error(path_ + ": a logout with an empty "
			                             "\"session\"",
			                     EINVAL);
		if (e.contains("why") && e["why"].is_string())
			entry.why = e["why"].get<std::string>();
		out.entries.push_back(std::move(entry));
	}
	return out;
}

Status OwedLogoutsFile::Save(const std::vector<OwedLogoutEntry> &entries) const
{
	if (entries.empty()) {
		if (::unlink(path_.c_str()) != 0) {
			if (errno == ENOENT)
				return Status();
			return Status::FromErrno("remove " + path_, errno);
		}
		return FsyncDir(dir_);
	}
	auto boot = BootId();
	if (!boot.ok())
		return boot.status().Context("save " + path_);
	json doc = {{"boot_id", *boot}, {"logouts", json::array()}};
	for (const OwedLogoutEntry &e : entries)
		doc["logouts"].push_back({{"target", e.target},
		                          {"session", e.session},
		                          {"why", e.why}});
	const std::string tmp = path_ + kTempSuffix;
	// Never throws: a why is iscsiadm's output, which may hold bytes that
	// are not UTF-8 (written as U+FFFD); a Save() that threw turned the
	// modify or delete that owed the logout, done, into an error.
	const std::string text =
	        doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
	if (Status st = WriteSyncedTemp(tmp, text); !st.ok())
		return st;
	if (Status st = RenameOver(tmp, path_); !st.ok())
		return st;
	return FsyncDir(dir_);
}

} // namespace replipipe
