#include "store.h"

#include <linux/replipipe.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "durable_file.h"
#include "endpoint_check.h"
#include "text_scan.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

using nlohmann::json;

constexpr const char *kFileName = "pipes.json";
constexpr const char *kTempSuffix = ".tmp";
constexpr const char *kLockName = "replipiped.lock";
constexpr const char *kPendingKey = "pending";

const char *PendingName(PendingOp op)
{
	switch (op) {
	case PendingOp::kCreate:
		return "create";
	case PendingOp::kDelete:
		return "delete";
	case PendingOp::kNone:
		break;
	}
	return "";
}

// The mark of one pipe object: none without the field (files written
// before it existed). A value this build does not know is an error, like
// an unknown schema_version: the record may mean something it would get
// wrong.
Result<PendingOp> PendingFromJson(const json &pipe)
{
	auto it = pipe.find(kPendingKey);
	if (it == pipe.end())
		return PendingOp::kNone;
	if (!it->is_string())
		return Status::Error("\"pending\" must be a string", EINVAL);
	const std::string value = it->get<std::string>();
	for (PendingOp op : {PendingOp::kCreate, PendingOp::kDelete})
		if (value == PendingName(op))
			return op;
	return Status::Error("\"pending\" " + it->dump() +
	                             " is not supported (this build reads "
	                             "\"create\" and \"delete\")",
	                     EINVAL);
}

std::vector<PipeRecord> Settled(std::vector<StoreEntry> entries)
{
	std::vector<PipeRecord> pipes;
	for (StoreEntry &e : entries)
		if (e.pending == PendingOp::kNone)
			pipes.push_back(std::move(e.record));
	return pipes;
}

std::vector<StoreEntry> Unmarked(const std::vector<PipeRecord> &pipes)
{
	std::vector<StoreEntry> entries;
	for (const PipeRecord &p : pipes)
		entries.push_back({p, PendingOp::kNone});
	return entries;
}

// 1-based line and column of byte offset pos in text.
std::string LineColumn(const std::string &text, size_t pos)
{
	pos = std::min(pos, text.size());
	size_t line = 1, col = 1;
	for (size_t i = 0; i < pos; i++) {
		if (text[i] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	return "line " + std::to_string(line) + ", column " +
	       std::to_string(col);
}

// A stored pipe holds what a successful call could have stored: the same
// rules as the method's parameters (text, ranges, endpoint syntax in its
// canonical form, pair count, no endpoint twice). A file edited by hand, or
// written by a broken build, stops the daemon here rather than reaching
// the kernel or configfs paths.
Status CheckStoredPipe(const PipeRecord &pipe)
{
	for (const auto &[value, name] :
	     {std::pair{&pipe.name, "name"},
	      std::pair{&pipe.source_system, "source_system"},
	      std::pair{&pipe.target_system, "target_system"},
	      std::pair{&pipe.settings.element_name, "element_name"}})
		if (Status st = CheckText(*value, name); !st.ok())
			return st;
	if (pipe.name.size() > REPLIPIPE_NAME_MAX_LEN)
		return Status::Error(
		        "\"name\" is longer than " +
		                std::to_string(REPLIPIPE_NAME_MAX_LEN) +
		                " bytes",
		        EINVAL);
	const PipeSettings &s = pipe.settings;
	if (s.region_kib < kMinRegionKiB || s.region_kib > kMaxRegionKiB)
		return Status::Error(
		        "\"region_kib\" " + std::to_string(s.region_kib) +
		                " is not in " + std::to_string(kMinRegionKiB) +
		                ".." + std::to_string(kMaxRegionKiB),
		        EINVAL);
	if (s.max_lag_kib < kMinMaxLagKiB || s.max_lag_kib > kMaxMaxLagKiB)
		return Status::Error(
		        "\"max_lag_kib\" " + std::to_string(s.max_lag_kib) +
		                " is not in " + std::to_string(kMinMaxLagKiB) +
		                ".." + std::to_string(kMaxMaxLagKiB),
		        EINVAL);
	if (pipe.pairs.size() > REPLIPIPE_MAX_PAIRS)
		return Status::Error(
		        "more than " + std::to_string(REPLIPIPE_MAX_PAIRS) +
		                " pairs",
		        EINVAL);
	std::set<std::string> sources, targets;
	for (size_t i = 0; i < pipe.pairs.size(); i++) {
		const PairRecord &p = pipe.pairs[i];
		const std::string at = "pair " + std::to_string(i);
		auto src = ParseSourceEndpoint(p.source);
		if (!src.ok())
			return src.status().Context(at);
		auto tgt = ParseTargetEndpoint(p.target);
		if (!tgt.ok())
			return tgt.status().Context(at);
		// Stored as the call normalized them: anything else was not
		// written by replipiped.
		if (src->name != p.source || !src->system_name.empty())
			return Status::Error(
			        at + ": source \"" + p.source +
			                "\" is not a backstore name",
			        EINVAL);
		if (tgt->name != p.target || !tgt->system_name.empty())
			return Status::Error(at + ": target \"" + p.target +
			                             "\" is not in its normal "
			                             "form (\"" +
			                             tgt->name + "\")",
			                     EINVAL);
		if (!sources.insert(p.source).second)
			return Status::Error(at + ": source " + p.source +
			                             " is in the pipe twice",
			                     EINVAL);
		if (!targets.insert(TargetIdentity(p.target)).second)
			return Status::Error(at + ": target " + p.target +
			                             " is in the pipe twice",
			                     EINVAL);
	}
	return Status();
}

} // namespace

std::string StoreEntriesDocument(const std::vector<StoreEntry> &entries)
{
	json list = json::array();
	for (const StoreEntry &e : entries) {
		json pipe = PipeToJson(e.record);
		if (e.pending != PendingOp::kNone)
			pipe[kPendingKey] = PendingName(e.pending);
		list.push_back(std::move(pipe));
	}
	json doc = {{"schema_version", kStoreSchemaVersion}, {"pipes", list}};
	// Never throws: bytes that are not UTF-8 are written as U+FFFD, so
	// that a Save() after a kernel change cannot throw past its undo.
	return doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string StoreDocument(const std::vector<PipeRecord> &pipes)
{
	return StoreEntriesDocument(Unmarked(pipes));
}

Result<std::vector<PipeRecord>> ParseStoreDocument(const std::string &text,
                                                   const std::string &where)
{
	auto entries = ParseStoreEntries(text, where);
	if (!entries.ok())
		return entries.status();
	return Settled(std::move(*entries));
}

Result<std::vector<StoreEntry>> ParseStoreEntries(const std::string &text,
                                                  const std::string &where)
{
	json doc;
	try {
		doc = json::parse(text);
	} catch (const json::parse_error &e) {
		// e.byte is 1-based: the byte at which parsing failed.
		size_t pos = e.byte > 0 ? e.byte - 1 : 0;
		return Status::Error(where + ": " + LineColumn(text, pos) +
		                             ": not valid JSON (" + e.what() +
		                             ")",
		                     EINVAL);
	}
	if (!doc.is_object())
		return Status::Error(where + ": not a JSON object", EINVAL);
	auto version = doc.find("schema_version");
	if (version == doc.end() || !version->is_number_integer())
		return Status::Error(where + ": no integer \"schema_version\"",
		                     EINVAL);
	if (version->get<int64_t>() != kStoreSchemaVersion)
		return Status::Error(
		        where + ": schema_version " + version->dump() +
		                " is not supported (this build reads " +
		                std::to_string(kStoreSchemaVersion) + ")",
		        EINVAL);
	auto list = doc.find("pipes");
	if (list == doc.end() || !list->is_array())
		return Status::Error(where + ": \"pipes\" must be an array",
		                     EINVAL);
	std::vector<StoreEntry> entries;
	std::set<std::string> ids;
	std::map<std::string, std::string> source_pipes, target_pipes;
	for (size_t i = 0; i < list->size(); i++) {
		auto pipe = PipeFromJson((*list)[i]);
		if (!pipe.ok())
			return pipe.status().Context(where + ": pipes[" +
			                             std::to_string(i) + "]");
		const std::string at =
		        where + ": pipes[" + std::to_string(i) + "]";
		if (!ids.insert(pipe->instance_id).second)
			return Status::Error(at + ": instance_id " +
			                             pipe->instance_id +
			                             " appears twice",
			                     EINVAL);
		if (Status st = CheckStoredPipe(*pipe); !st.ok())
			return st.Context(at + " (pipe " + pipe->instance_id +
			                  ")");
		auto pending = PendingFromJson((*list)[i]);
		if (!pending.ok())
			return pending.status().Context(
			        at + " (pipe " + pipe->instance_id + ")");
		// A pending record still holds its endpoints (the kernel may
		// have the pipe): the same one-pipe rule applies to it.
		// A source belongs to at most one pipe, and so does a target
		// (TargetIdentity: one iSCSI LUN by any portal).
		for (const PairRecord &p : pipe->pairs) {
			for (const auto &[key, endpoint, owners] :
			     {std::tuple{p.source, &p.source, &source_pipes},
			      std::tuple{TargetIdentity(p.target), &p.target,
			                 &target_pipes}}) {
				auto [it, fresh] =
				        owners->emplace(key, pipe->instance_id);
				if (!fresh)
					return Status::Error(
					        at + ": " + *endpoint +
					                " is also in pipe " +
					                it->second,
					        EINVAL);
			}
		}
		entries.push_back({std::move(*pipe), *pending});
	}
	return entries;
}

Store::Store(std::string state_dir)
    : dir_(std::move(state_dir)), path_(dir_ + "/" + kFileName)
{
}

namespace
{

// The daemon runs as root and pushes what pipes.json defines to the kernel
// at every start, without checking the endpoints again: whoever can write
// the state directory can have any free block device overwritten by a
// resync. So an existing directory must be this process's own and not
// writable by group or others (the unit makes it 0700, root's).
Status CheckStateDirSafe(const std::string &dir)
{
	struct stat st;
	if (::stat(dir.c_str(), &st) != 0)
		return Status::FromErrno("state directory " + dir, errno);
	if (!S_ISDIR(st.st_mode))
		return Status::Error("state directory " + dir +
		                             " is not a directory",
		                     ENOTDIR);
	if (st.st_uid != ::geteuid())
		return Status::Error(
		        "state directory " + dir + " is owned by uid " +
		                std::to_string(st.st_uid) +
		                ", not by this daemon's (" +
		                std::to_string(::geteuid()) +
		                "): whoever can write it defines the pipes "
		                "this daemon pushes; chown it",
		        EPERM);
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		char mode[8];
		std::snprintf(mode, sizeof(mode), "%04o",
		              static_cast<unsigned>(st.st_mode & 07777));
		return Status::Error(
		        "state directory " + dir + " (mode " + mode +
		                ") is writable by group or others: "
		                "whoever can write it defines the "
		                "pipes this daemon pushes; chmod "
		                "go-w it",
		        EPERM);
	}
	return Status();
}

} // namespace

Status Store::EnsureStateDir() const
{
	if (::mkdir(dir_.c_str(), 0700) != 0) {
		if (errno == EEXIST)
			return CheckStateDirSafe(dir_);
		return Status::FromErrno("create state directory " + dir_,
		                         errno);
	}
	// The new entry is in the parent directory: without this a power
	// loss may lose the directory, and the store then written into it.
	std::string parent = dir_;
	while (parent.size() > 1 && parent.back() == '/')
		parent.pop_back();
	const size_t slash = parent.rfind('/');
	parent = slash == std::string::npos ? "."
	         : slash == 0               ? "/"
	                                    : parent.substr(0, slash);
	return FsyncDir(parent).Context("create state directory " + dir_);
}

Result<std::vector<StoreEntry>> Store::LoadEntries()
{
	std::lock_guard<std::mutex> lock(mu_);
	loaded_ = false;
	struct stat st;
	if (::stat(path_.c_str(), &st) != 0) {
		if (errno != ENOENT)
			return Status::FromErrno("stat " + path_, errno);
		loaded_ = true; // first start: nothing stored yet
		return std::vector<StoreEntry>();
	}
	auto text = ReadAll(path_);
	if (!text.ok())
		return text.status();
	auto entries = ParseStoreEntries(*text, path_);
	if (entries.ok())
		loaded_ = true;
	return entries;
}

Result<std::vector<PipeRecord>> Store::Load()
{
	auto entries = LoadEntries();
	if (!entries.ok())
		return entries.status();
	return Settled(std::move(*entries));
}

Status Store::Save(const std::vector<PipeRecord> &pipes)
{
	return SaveEntries(Unmarked(pipes));
}

Status Store::SaveEntries(const std::vector<StoreEntry> &entries,
                          bool *renamed)
{
	std::lock_guard<std::mutex> lock(mu_);
	if (renamed)
		*renamed = false;
	if (!loaded_)
		return Status::Error(path_ + ": not saved: the store was not "
		                             "loaded successfully, refusing "
		                             "to overwrite it",
		                     EIO);
	const std::string tmp = path_ + kTempSuffix;
	if (Status st = WriteSyncedTemp(tmp, StoreEntriesDocument(entries));
	    !st.ok())
		return st;
	if (fault_hook_)
		if (Status st = fault_hook_(SaveStep::kTempSynced); !st.ok())
			return st;
	if (Status st = RenameOver(tmp, path_); !st.ok())
		return st;
	if (renamed)
		*renamed = true;
	if (fault_hook_)
		if (Status st = fault_hook_(SaveStep::kRenamed); !st.ok())
			return st;
	// Without this the rename may not survive a power loss.
	return FsyncDir(dir_);
}

Status Store::LockStateDir()
{
	const std::string lock_path = dir_ + "/" + kLockName;
	UniqueFd fd(::open(lock_path.c_str(),
	                   O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
	if (!fd.valid())
		return Status::FromErrno("open " + lock_path, errno);
	int rc;
	do {
		rc = ::flock(fd.get(), LOCK_EX | LOCK_NB);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0 && errno == EWOULDBLOCK)
		return Status::Error(
		        "state directory " + dir_ +
		                " is in use by another replipiped (it holds " +
		                lock_path +
		                "); stop that one, or give this one another "
		                "--state-dir",
		        EWOULDBLOCK);
	if (rc < 0)
		return Status::FromErrno("flock " + lock_path, errno);
	lock_fd_ = std::move(fd);
	return Status();
}

void Store::SetFaultHookForTest(FaultHook hook)
{
	std::lock_guard<std::mutex> lock(mu_);
	fault_hook_ = std::move(hook);
}

} // namespace replipipe
