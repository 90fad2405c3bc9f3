#include "iscsi_sessions.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>

#include "log.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

milliseconds Left(Clock::time_point deadline)
{
	auto left = std::chrono::duration_cast<milliseconds>(deadline -
	                                                     Clock::now());
	return left.count() > 0 ? left : milliseconds(0);
}

std::string Trim(std::string s)
{
	while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
		s.pop_back();
	size_t i = 0;
	while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i])))
		i++;
	return s.substr(i);
}

std::string Numeric(const std::string &addr)
{
	char buf[INET6_ADDRSTRLEN];
	in_addr a4;
	in6_addr a6;
	if (::inet_pton(AF_INET, addr.c_str(), &a4) == 1)
		return ::inet_ntop(AF_INET, &a4, buf, sizeof(buf));
	if (::inet_pton(AF_INET6, addr.c_str(), &a6) == 1)
		return ::inet_ntop(AF_INET6, &a6, buf, sizeof(buf));
	return "";
}

// What Attach and Logout serialize on: the portal. Discovery there (-o
// new, IscsiAdmin::DiscoveryArgs()) only adds the records of targets that
// have none, but an Attach to an IQN whose record another Attach is making
// and updating (node.startup, replacement timeout, CHAP) must not log in
// half-way through. Logout takes the same key so that it never ends a
// session an Attach to that target is still setting up. An address
// is written one way so that "fd00::1" and "fd00:0::1" are one key.
std::string SequenceKey(const IscsiUrl &url)
{
	const std::string numeric = Numeric(url.host);
	return (numeric.empty() ? url.host : numeric) + "," +
	       std::to_string(url.port);
}

// A kernel without ifacename: open-iscsi's default, as before.
bool OnDaemonIface(const IscsiSysfsSession &s)
{
	return s.iface.empty() || s.iface == kIscsiIface;
}

} // namespace

std::vector<std::string> ResolveIscsiHost(const std::string &host)
{
	std::vector<std::string> addresses;
	addrinfo hints{};
	hints.ai_socktype = SOCK_STREAM;
	addrinfo *res = nullptr;
	if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0)
		return addresses;
	for (addrinfo *ai = res; ai; ai = ai->ai_next) {
		char buf[INET6_ADDRSTRLEN] = "";
		if (ai->ai_family == AF_INET)
			::inet_ntop(
			        AF_INET,
			        &reinterpret_cast<sockaddr_in *>(ai->ai_addr)
			                 ->sin_addr,
			        buf, sizeof(buf));
		else if (ai->ai_family == AF_INET6)
			::inet_ntop(
			        AF_INET6,
			        &reinterpret_cast<sockaddr_in6 *>(ai->ai_addr)
			                 ->sin6_addr,
			        buf, sizeof(buf));
		if (buf[0] != '\0')
			addresses.emplace_back(buf);
	}
	::freeaddrinfo(res);
	return addresses;
}

// The addresses of the portal names looked up. Shared with the refreshes
// running in the background: one that outlives its IscsiSessions (a
// resolver still not answering when the daemon stops) uses only this.
struct IscsiSessions::ResolveCache {
	// Refreshes in the background at once, whatever the number of names:
	// each may hold a thread for the resolver's time-out.
	static constexpr size_t kMaxRefreshes = 8;

	struct Entry {
		std::vector<std::string> addresses; // none: it did not resolve
		Clock::time_point expiry;           // {}: never resolved
		bool refreshing = false; // a refresh in the background
	};

	ResolveCache(
	        std::function<std::vector<std::string>(const std::string &)>
	                resolve_fn,
	        milliseconds time_to_live)
	    : resolve(std::move(resolve_fn)), ttl(time_to_live)
	{
	}

	std::vector<std::string> Ask(const std::string &host) const
	{
		return resolve ? resolve(host) : ResolveIscsiHost(host);
	}

	// Starts a refresh of @host's entry @e on a thread of its own,
	// unless one is going (one per name) or kMaxRefreshes are. mu held.
	static void StartRefreshLocked(const std::shared_ptr<ResolveCache> &c,
	                               const std::string &host, Entry &e);
	void Refresh(const std::string &host);

	const std::function<std::vector<std::string>(const std::string &)>
	        resolve;
	const milliseconds ttl;
	std::mutex mu;
	std::map<std::string, Entry> entries; // guarded by mu
	size_t refreshing = 0; // guarded by mu; entries refreshing
};

void IscsiSessions::ResolveCache::StartRefreshLocked(
        const std::shared_ptr<ResolveCache> &c, const std::string &host,
        Entry &e)
{
	if (e.refreshing || c->refreshing >= kMaxRefreshes)
		return;
	// Detached: nothing can wait for getaddrinfo within a bound, and the
	// daemon's stop must not wait for it; the thread holds the cache.
	try {
		std::thread([c, host] { c->Refresh(host); }).detach();
	} catch (const std::system_error &) {
		// No thread now (the task limit): the next look-up tries
		// again.
		return;
	}
	e.refreshing = true;
	++c->refreshing;
}

void IscsiSessions::ResolveCache::Refresh(const std::string &host)
{
	std::optional<std::vector<std::string>> answer;
	try {
		answer = Ask(host);
	} catch (...) {
		// Out of memory, or an injected resolver's: nothing may
		// leave a detached thread. The entry stays stale; the next
		// look-up tries again.
	}
	// mu is taken after StartRefreshLocked() released it, which set the
	// flags this clears.
	std::lock_guard<std::mutex> lock(mu);
	Entry &e = entries[host];
	if (answer) {
		e.addresses = std::move(*answer);
		// From the answer: a resolver slower than ttl would otherwise
		// be asked again back to back.
		e.expiry = Clock::now() + ttl;
	}
	e.refreshing = false;
	--refreshing;
}

std::vector<std::string> IscsiSessions::Addresses(const std::string &host,
                                                  Resolve how) const
{
	ResolveCache &c = *cache_;
	const auto now = Clock::now();
	{
		std::lock_guard<std::mutex> lock(c.mu);
		auto it = c.entries.find(host);
		if (it != c.entries.end() && now < it->second.expiry)
			return it->second.addresses;
		if (how == Resolve::kCached) {
			ResolveCache::Entry &e = c.entries[host];
			ResolveCache::StartRefreshLocked(cache_, host, e);
			return e.addresses;
		}
	}
	// Unlocked: a resolver that does not answer holds only this call.
	std::vector<std::string> addresses = c.Ask(host);
	std::lock_guard<std::mutex> lock(c.mu);
	ResolveCache::Entry &e = c.entries[host];
	e.addresses = addresses;
	e.expiry = now + c.ttl;
	return addresses;
}

bool IscsiSessions::HostMatches(const std::string &url_host,
                                const std::string &address, Resolve how) const
{
	if (address.empty())
		return false;
	if (strcasecmp(url_host.c_str(), address.c_str()) == 0)
		return true;
	const std::string have = Numeric(address);
	if (have.empty())
		return false;
	if (std::string want = Numeric(url_host); !want.empty())
		return want == have;
	for (const std::string &a : Addresses(url_host, how))
		if (a == have)
			return true;
	return false;
}

IscsiSessions::IscsiSessions(CommandRunner &runner, IscsiOptions options)
    : admin_(runner, options.iscsiadm), runner_(runner),
      options_(std::move(options)),
      cache_(std::make_shared<ResolveCache>(options_.resolve,
                                            options_.resolve_ttl))
{
}

std::optional<IscsiSysfsSession>
IscsiSessions::Find(const IscsiUrl &url, Resolve how, Iface iface) const
{
	for (IscsiSysfsSession &s : ListIscsiSessions(options_.sysfs)) {
		if (iface == Iface::kDaemon && !OnDaemonIface(s))
			continue;
		if (strcasecmp(s.target.c_str(), url.iqn.c_str()) == 0 &&
		    s.port == url.port && HostMatches(url.host, s.address, how))
			return s;
	}
	return std::nullopt;
}

std::optional<IscsiSysfsSession>
IscsiSessions::FindSession(const IscsiUrl &url) const
{
	return Find(url, Resolve::kWait);
}

IscsiPeerState IscsiSessions::Describe(const IscsiUrl &url) const
{
	IscsiPeerState st;
	st.portal = url.Portal();
	st.iqn = url.iqn;
	st.lun = url.lun;
	st.session = "none";
	if (auto s = Find(url, Resolve::kCached)) {
		st.session = s->state.empty() ? "unknown" : s->state;
		IscsiSysfsDisk disk =
		        FindIscsiDisk(options_.sysfs, s->name, url.lun);
		if (!disk.name.empty())
			st.device = options_.dev + "/" + disk.name;
	}
	return st;
}

Result<std::string> IscsiSessions::DevicePath(const IscsiUrl &url) const
{
	auto s = Find(url, Resolve::kCached);
	if (!s)
		return Status::Error("no iSCSI session to " + url.iqn + " on " +
		                             url.Portal(),
		                     ENODEV);
	IscsiSysfsDisk disk = FindIscsiDisk(options_.sysfs, s->name, url.lun);
	if (disk.name.empty())
		return Status::Error("LUN " + std::to_string(url.lun) + " of " +
		                             url.iqn + " (" + s->name +
		                             ") has no disk",
		                     ENODEV);
	return options_.dev + "/" + disk.name;
}

bool IscsiSessions::MayBeDiskOf(const IscsiUrl &url,
                                const std::string &device) const
{
	for (const IscsiSysfsSession &s : ListIscsiSessions(options_.sysfs)) {
		if (strcasecmp(s.target.c_str(), url.iqn.c_str()) != 0)
			continue;
		IscsiSysfsDisk disk =
		        FindIscsiDisk(options_.sysfs, s.name, url.lun);
		if (!disk.name.empty() &&
		    device == options_.dev + "/" + disk.name)
			return true;
	}
	// The daemon gives the kernel a LUN's disk by its name under /dev
	// (DevicePath()), and a disk's name is not taken again while a
	// holder keeps it open: a path that names nothing now may be it.
	struct stat st;
	return ::lstat(device.c_str(), &st) != 0 && errno == ENOENT;
}

Status IscsiSessions::ApplyChap(const IscsiUrl &url, milliseconds bound)
{
	const std::string path = options_.chap_dir + "/" + url.iqn;
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
	if (!fd.valid()) {
		if (errno == ENOENT)
			return Status(); // no CHAP for this target
		return Status::FromErrno("CHAP file " + path, errno);
	}
	struct stat st;
	if (::fstat(fd.get(), &st) != 0)
		return Status::FromErrno("CHAP file " + path, errno);
	if (!S_ISREG(st.st_mode) || st.st_uid != options_.chap_owner ||
	    (st.st_mode & 077) != 0)
		return Status::Error("CHAP file " + path +
		                             " must be a regular file owned by "
		                             "root with mode 0600 or 0400; "
		                             "refused to use it",
		                     EACCES);
	std::string text;
	char buf[4096];
	ssize_t n;
	while ((n = ::read(fd.get(), buf, sizeof(buf))) > 0 &&
	       text.size() < 65536)
		text.append(buf, static_cast<size_t>(n));
	std::map<std::string, std::string> kv;
	std::istringstream in(text);
	std::string line;
	int lineno = 0;
	while (std::getline(in, line)) {
		lineno++;
		line = Trim(line);
		if (line.empty() || line[0] == '#')
			continue;
		size_t eq = line.find('=');
		std::string key =
		        eq == std::string::npos ? "" : Trim(line.substr(0, eq));
		if (key != "username" && key != "password" &&
		    key != "username_in" && key != "password_in")
			return Status::Error("CHAP file " + path + " line " +
			                             std::to_string(lineno) +
			                             ": expected username, "
			                             "password, username_in or "
			                             "password_in = value",
			                     EIO);
		kv[key] = Trim(line.substr(eq + 1));
	}
	if (kv["username"].empty() || kv["password"].empty())
		return Status::Error("CHAP file " + path +
		                             ": username and password are "
		                             "required",
		                     EIO);
	if (kv.count("username_in") != kv.count("password_in"))
		return Status::Error("CHAP file " + path +
		                             ": username_in and password_in go "
		                             "together",
		                     EIO);
	const auto deadline = Clock::now() + bound;
	struct Item {
		const char *node_key;
		const char *file_key;
		bool secret;
	};
	const Item items[] = {
	        {"node.session.auth.username", "username", false},
	        {"node.session.auth.password", "password", true},
	        {"node.session.auth.username_in", "username_in", false},
	        {"node.session.auth.password_in", "password_in", true},
	};
	if (Status s = admin_.Update(url, "node.session.auth.authmethod",
	                             "CHAP", Left(deadline));
	    !s.ok())
		return s;
	for (const Item &it : items) {
		auto v = kv.find(it.file_key);
		if (v == kv.end())
			continue;
		if (Status s = admin_.Update(url, it.node_key, v->second,
		                             Left(deadline), it.secret);
		    !s.ok())
			return s;
	}
	return Status();
}

bool IscsiSessions::Rescan(const std::string &session) const
{
	namespace fs = std::filesystem;
	std::error_code ec;
	fs::path dev =
	        fs::canonical(fs::path(options_.sysfs) / "class" /
	                              "iscsi_session" / session / "device",
	                      ec);
	if (ec)
		return false;
	std::string host = dev.parent_path().filename().string();
	if (!host.starts_with("host"))
		return false;
	const std::string scan =
	        options_.sysfs + "/class/scsi_host/" + host + "/scan";
	UniqueFd fd(::open(scan.c_str(), O_WRONLY | O_CLOEXEC));
	// Synchronous: the target's LUNs exist when the write returns.
	return fd.valid() && ::write(fd.get(), "- - -", 5) == 5;
}

namespace
{

// The disk's sysfs entry and its /dev node appear before the block layer
// lets it be opened: add_disk() adds the device (sysfs, devtmpfs) and only
// then the block device, and sd probes asynchronously. An open meanwhile
// fails with ENXIO (seen as "open /dev/sda for writing: No such device or
// address" right after a login). Other errors are the endpoint check's to
// report.
bool DiskOpens(const std::string &path)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
	return fd.valid() || (errno != ENXIO && errno != ENODEV);
}

} // namespace

Result<IscsiAttachment> IscsiSessions::WaitForDisk(const IscsiUrl &url,
                                                   Clock::time_point deadline)
{
	const std::string what = "LUN " + std::to_string(url.lun) + " of " +
	                         url.iqn + " on " + url.Portal();
	std::optional<IscsiSysfsSession> s;
	bool rescanned = false, scan_done = false;
	for (;;) {
		s = FindSession(url);
		if (s && s->state == "LOGGED_IN") {
			if (!rescanned) {
				scan_done = Rescan(s->name);
				rescanned = true;
			}
			IscsiSysfsDisk disk =
			        FindIscsiDisk(options_.sysfs, s->name, url.lun);
			if (disk.name.empty() && disk.scsi_state.empty() &&
			    scan_done)
				return Status::Error(
				        what + ": the target has no "
				               "such LUN",
				        ENXIO);
			const std::string path = options_.dev + "/" + disk.name;
			struct stat st;
			if (!disk.name.empty() &&
			    ::stat(path.c_str(), &st) == 0) {
				std::string rdev =
				        std::to_string(major(st.st_rdev)) +
				        ":" + std::to_string(minor(st.st_rdev));
				if (!S_ISBLK(st.st_mode) ||
				    (!disk.dev.empty() && rdev != disk.dev))
					return Status::Error(
					        what + ": " + path +
					                " is not the disk's "
					                "device node (" +
					                disk.dev + ")",
					        EIO);
				if (disk.read_only)
					return Status::Error(
					        what + " (" + path +
					                ") is write-"
					                "protected",
					        EROFS);
				if (DiskOpens(path)) {
					IscsiAttachment a;
					a.device = path;
					a.session = s->name;
					return a;
				}
			}
		}
		if (Clock::now() >= deadline)
			break;
		// The rest of login_bound would hold the daemon's stop.
		if (runner_.Cancelled())
			return Status::Error(what + ": " + kStoppingReason,
			                     ECANCELED);
		std::this_thread::sleep_for(
		        std::min(options_.poll_interval, Left(deadline)));
	}
	if (!s)
		return Status::Error(what + ": no session appeared in sysfs "
		                            "within the bound",
		                     ETIMEDOUT);
	if (s->state != "LOGGED_IN")
		return Status::Error(what + ": session " + s->name + " is " +
		                             s->state +
		                             ", not LOGGED_IN, at the bound",
		                     ETIMEDOUT);
	return Status::Error(what + ": no disk with a /dev node appeared "
	                            "within the bound",
	                     ETIMEDOUT);
}

namespace
{

// login_timeouts_'s keys: a discovery's is the portal's, whatever the IQN;
// a login's is the portal's and the IQN's.
std::string DiscoveryKey(const IscsiUrl &url)
{
	return url.Portal();
}

std::string LoginKey(const IscsiUrl &url)
{
	return url.Portal() + " " + url.iqn;
}

} // namespace

void IscsiSessions::NoteTimeout(const std::string &key, bool timed_out)
{
	std::lock_guard lock(login_timeouts_mu_);
	if (timed_out)
		login_timeouts_[key] = Clock::now();
	else
		login_timeouts_.erase(key);
}

bool IscsiSessions::LoginTimedOutSince(const IscsiUrl &url,
                                       Clock::time_point since) const
{
	std::lock_guard lock(login_timeouts_mu_);
	for (const std::string &key : {DiscoveryKey(url), LoginKey(url)})
		if (auto it = login_timeouts_.find(key);
		    it != login_timeouts_.end() && it->second >= since)
			return true;
	return false;
}

Result<IscsiAttachment> IscsiSessions::Attach(const IscsiUrl &url)
{
	const auto asked = Clock::now();
	KeyedLock::Hold hold(sequences_, SequenceKey(url));
	const auto deadline = Clock::now() + options_.login_bound;
	const std::string name = url.Canonical();

	if (FindSession(url)) {
		auto a = WaitForDisk(url, deadline);
		if (a.ok())
			LogInfo() << "iSCSI " << name << ": existing session "
			          << a->session << ", disk " << a->device;
		return a;
	}

	// A call that waited for the portal's turn while the one before it
	// ran out of time there (the portal did not answer a discovery, or
	// the target a login) would take its whole bound too: the calls
	// behind logins to a dead peer (the reconcile's pipes, a CLI call)
	// took one bound each, one after the other.
	if (LoginTimedOutSince(url, asked))
		return Status::Error(
		        "iSCSI " + name + ": not tried: a discovery or login " +
		                "at " + url.Portal() +
		                " ran out of time while this call waited " +
		                "for its turn",
		        ETIMEDOUT);
	auto found = admin_.Discover(url, Left(deadline));
	NoteTimeout(DiscoveryKey(url),
	            !found.ok() && found.status().err() == ETIMEDOUT);
	if (!found.ok())
		return found.status();
	bool offered = false;
	std::string list;
	for (const DiscoveredTarget &t : *found) {
		offered = offered || t.iqn == url.iqn;
		list += (list.empty() ? "" : ", ") + t.iqn;
	}
	if (!offered)
		return Status::Error(
		        "portal " + url.Portal() + " does not offer target " +
		                url.iqn + " (it offers: " +
		                (list.empty() ? "none" : list) + ")",
		        ENXIO);
	if (Status st = admin_.Update(url, "node.startup", "manual",
	                              Left(deadline));
	    !st.ok())
		return st;
	if (Status st = admin_.Update(
	            url, "node.session.timeo.replacement_timeout",
	            std::to_string(options_.replacement_timeout_s),
	            Left(deadline));
	    !st.ok())
		return st;
	if (Status st = ApplyChap(url, Left(deadline)); !st.ok())
		return st;

	// A login killed at the bound may still complete in iscsid: take back
	// whatever it made. One killed because the daemon stops (ECANCELED)
	// may too, but its logout would be refused at once (the runner is
	// cancelled) and the stop has no time for it: such a session stays
	// logged in, as it would after a SIGKILL from systemd. The next start
	// copes: Attach reuses a session that exists (step 1), for a stored
	// pair when the reconcile reconnects it; a session that no stored
	// pair uses (a create that was cut short) stays until an
	// administrator logs out of it, and a later pair to that target takes
	// it for the administrator's and never logs out of it
	// (IscsiTargetConnector).
	Status login = admin_.Login(url, Left(deadline));
	// Made since FindSession() looked (another tool's login, or one it
	// missed): not this call's session, never logged out by it.
	const bool existed = login.err() == EEXIST;
	if (!login.ok() && !existed) {
		if (login.err() == ETIMEDOUT) {
			NoteTimeout(LoginKey(url), true);
			(void)admin_.Logout(url, options_.logout_bound);
		}
		return login;
	}
	NoteTimeout(LoginKey(url), false);
	auto a = WaitForDisk(url, deadline);
	if (!a.ok() && a.status().err() == ECANCELED)
		return Status::Error(a.status().message() +
		                             "; the session stays logged in",
		                     ECANCELED);
	if (!a.ok() && existed)
		return Status::Error(a.status().message() +
		                             " (the session existed already: "
		                             "it stays logged in)",
		                     a.status().err());
	if (existed) {
		LogInfo() << "iSCSI " << name << ": a session made meanwhile, "
		          << a->session << ", disk " << a->device;
		return a;
	}
	if (!a.ok()) {
		Status out = admin_.Logout(url, options_.logout_bound);
		if (!out.ok())
			return Status::Error(
			        a.status().message() +
			                "; logging out failed too: " +
			                out.message(),
			        a.status().err());
		return a.status();
	}
	a->logged_in = true;
	LogNotice() << "iSCSI " << name << ": logged in, " << a->session
	            << ", disk " << a->device;
	return a;
}

Status IscsiSessions::Logout(const IscsiUrl &url, const KeepSession &keep,
                             bool *kept, const std::string &only)
{
	if (kept)
		*kept = false;
	KeyedLock::Hold hold(sequences_, SequenceKey(url));
	std::optional<IscsiSysfsSession> session;
	if (only.empty()) {
		session = Find(url, Resolve::kWait, Iface::kDaemon);
	} else {
		for (IscsiSysfsSession &s : ListIscsiSessions(options_.sysfs))
			if (s.name == only)
				session = std::move(s);
	}
	if (!session)
		return Status();
	if (!only.empty()) {
		Result<bool> same = IsStillUrls(url, *session);
		if (!same.ok())
			return same.status();
		if (!*same)
			return Status();
	}
	if (keep && keep(*session)) {
		if (kept)
			*kept = true;
		return Status();
	}
	// By its sid: the node record's logout ends every session of the
	// record, an administrator's on another iface too.
	const std::string what = url.iqn + " on " + url.Portal();
	const auto deadline = Clock::now() + options_.logout_bound;
	Status st = admin_.LogoutSession(session->sid, what, Left(deadline));
	if (!st.ok() && st.err() != ENOENT)
		return st;
	// Whatever iscsiadm said, sysfs says whether the session ended: its
	// "no such session" may mean that iscsid did not answer.
	if (!SessionEnds(session->name, deadline)) {
		const std::string said =
		        st.ok() ? "logout of session " +
		                          std::to_string(session->sid) + " (" +
		                          what + "): iscsiadm said done"
		                : st.message();
		return Status::Error(said + "; the session is still there",
		                     EIO);
	}
	LogNotice() << "iSCSI " << what << ": logged out of " << session->name;
	return Status();
}

// A name comes back when scsi_transport_iscsi is loaded again, and then it
// may be another target's or an administrator's session: the one owed has
// ended. Only what sysfs says otherwise tells that; an attribute that did
// not read (a connection being re-made has no port for a moment) is asked
// again at the next try. The address is not compared: that would ask the
// resolver for url's host name.
Result<bool> IscsiSessions::IsStillUrls(const IscsiUrl &url,
                                        const IscsiSysfsSession &s) const
{
	if (s.target.empty() || s.port == 0)
		return Status::Error("cannot tell whether " + s.name +
		                             " is still the session to " +
		                             url.iqn + " on " + url.Portal() +
		                             ": its target name or port did "
		                             "not read in sysfs",
		                     EAGAIN);
	if (OnDaemonIface(s) &&
	    strcasecmp(s.target.c_str(), url.iqn.c_str()) == 0 &&
	    s.port == url.port)
		return true;
	LogInfo() << "iSCSI " << url.iqn << " on " << url.Portal() << ": "
	          << s.name << " is another session now (" << s.target
	          << ", port " << s.port << ", iface "
	          << (s.iface.empty() ? "unknown" : s.iface)
	          << "): the one to log out has ended";
	return false;
}

bool IscsiSessions::SessionEnds(const std::string &name,
                                Clock::time_point deadline) const
{
	const std::filesystem::path dir =
	        std::filesystem::path(options_.sysfs) / "class" /
	        "iscsi_session" / name;
	// iscsiadm's logout returns once iscsid removed the session; a
	// moment more for sysfs, not the bound's 15 s.
	deadline = std::min(deadline, Clock::now() + std::chrono::seconds(1));
	for (;;) {
		std::error_code ec;
		if (!std::filesystem::exists(dir, ec) && !ec)
			return true;
		if (Clock::now() >= deadline)
			return false;
		std::this_thread::sleep_for(
		        std::min(options_.poll_interval, Left(deadline)));
	}
}

} // namespace replipipe
