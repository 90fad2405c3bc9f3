#include "lio_loopback.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>

#include "iscsi_sysfs.h"
#include "sysfs_read.h"
#include "text_scan.h"

namespace replipipe
{
namespace
{

namespace fs = std::filesystem;

// dm over dm over a disk is common; a tree deeper than this is not, and a
// bound keeps a sysfs loop (or a fake tree's) from recursing forever.
constexpr int kMaxStackDepth = 16;
constexpr std::string_view kLoopbackProcName = "tcm_loopback";

bool IsSymlink(const fs::path &p)
{
	std::error_code ec;
	return fs::is_symlink(fs::symlink_status(p, ec));
}

// "H:C:T:L" -> its four numbers as text; nullopt if it is no SCSI address.
std::optional<std::vector<std::string>> SplitHctl(const std::string &hctl)
{
	std::vector<std::string> parts;
	size_t start = 0;
	while (true) {
		size_t colon = hctl.find(':', start);
		std::string part = hctl.substr(
		        start, colon == std::string::npos ? std::string::npos
		                                          : colon - start);
		if (part.empty() ||
		    !std::all_of(part.begin(), part.end(), [](char c) {
			    return std::isdigit(static_cast<unsigned char>(c));
		    }))
			return std::nullopt;
		parts.push_back(part);
		if (colon == std::string::npos)
			break;
		start = colon + 1;
	}
	if (parts.size() != 4)
		return std::nullopt;
	return parts;
}

// An address in binary (AF_INET: 4 bytes, AF_INET6: 16; a v4-mapped IPv6
// address as its IPv4 one), brackets allowed; nullopt if it is no address.
std::optional<std::string> AddressBytes(std::string addr)
{
	if (addr.size() >= 2 && addr.front() == '[' && addr.back() == ']')
		addr = addr.substr(1, addr.size() - 2);
	in_addr v4;
	if (::inet_pton(AF_INET, addr.c_str(), &v4) == 1)
		return std::string(reinterpret_cast<const char *>(&v4),
		                   sizeof(v4));
	in6_addr v6;
	if (::inet_pton(AF_INET6, addr.c_str(), &v6) != 1)
		return std::nullopt;
	if (IN6_IS_ADDR_V4MAPPED(&v6))
		return std::string(reinterpret_cast<const char *>(&v6) + 12, 4);
	return std::string(reinterpret_cast<const char *>(&v6), sizeof(v6));
}

bool SameAddress(const std::string &a, const std::string &b)
{
	auto x = AddressBytes(a);
	auto y = AddressBytes(b);
	return x && y ? *x == *y : EqualsIgnoreCase(a, b);
}

struct IfaddrsFree {
	void operator()(ifaddrs *list) const { ::freeifaddrs(list); }
};

// The backstore a LUN directory links to: its symlink into target/core.
std::optional<LioLocalLun> LunBackstore(const fs::path &configfs,
                                        const fs::path &lun_dir)
{
	for (const fs::path &entry : SortedEntries(lun_dir)) {
		if (!IsSymlink(entry))
			continue;
		std::error_code ec;
		const fs::path to = fs::read_symlink(entry, ec);
		if (ec || to.parent_path().parent_path().filename() != "core")
			continue;
		LioLocalLun lun;
		lun.backstore = to.parent_path().filename().string() + "/" +
		                to.filename().string();
		lun.udev_path = ReadFirstLine(configfs / "target" / "core" /
		                              lun.backstore / "udev_path");
		return lun;
	}
	return std::nullopt;
}

class LunWalk
{
public:
	LunWalk(const std::string &sysfs, const std::string &configfs)
	    : sysfs_(sysfs), configfs_(configfs)
	{
	}

	// The block device <maj>:<min> and everything below it.
	void Device(const std::string &majmin, int depth)
	{
		if (majmin.empty() || depth > kMaxStackDepth ||
		    !seen_.insert(majmin).second)
			return;
		const fs::path dir = sysfs_ / "dev" / "block" / majmin;
		// A partition has no device link of its own: its disk is one
		// up (resolved through the symlink, as the kernel does).
		const fs::path disk_dir =
		        fs::exists(dir / "partition") ? dir / ".." : dir;
		std::error_code ec;
		const fs::path scsi = fs::canonical(disk_dir / "device", ec);
		if (!ec) {
			const fs::path disk = fs::canonical(disk_dir, ec);
			ScsiDisk(ec ? majmin : disk.filename().string(),
			         scsi.filename().string());
		}
		for (const fs::path &slave : SortedEntries(dir / "slaves"))
			Device(ReadFirstLine(slave / "dev"), depth + 1);
	}

	std::vector<LioLocalLun> Take() { return std::move(found_); }

private:
	void ScsiDisk(const std::string &disk, const std::string &hctl)
	{
		auto parts = SplitHctl(hctl);
		if (!parts)
			return;
		const std::string &host = (*parts)[0];
		const std::string &lun = (*parts)[3];
		const std::string proc_name =
		        ReadFirstLine(sysfs_ / "class" / "scsi_host" /
		                      ("host" + host) / "proc_name");
		if (proc_name == kLoopbackProcName)
			Loopback(disk, hctl, host, (*parts)[2], lun);
		else
			Iscsi(disk, hctl, lun);
	}

	// tcm_loop adds its disks at H:0:<tpgt>:<lun> of its HBA's host,
	// which each TPG's address attribute names ("H:0:<tpgt>").
	void Loopback(const std::string &disk, const std::string &hctl,
	              const std::string &host, const std::string &target,
	              const std::string &lun)
	{
		const std::string address = host + ":0:" + target;
		for (const fs::path &wwn :
		     SortedEntries(configfs_ / "target" / "loopback"))
			for (const fs::path &tpg : SortedEntries(wwn)) {
				if (!tpg.filename().string().starts_with(
				            "tpgt_") ||
				    ReadFirstLine(tpg / "address") != address)
					continue;
				Add(disk, hctl, tpg / "lun" / ("lun_" + lun),
				    "tcm_loop " + wwn.filename().string() +
				            "/" + tpg.filename().string() +
				            " LUN " + lun);
			}
	}

	void Iscsi(const std::string &disk, const std::string &hctl,
	           const std::string &lun)
	{
		const std::string target_dir =
		        "target" + hctl.substr(0, hctl.rfind(':'));
		for (const IscsiSysfsSession &session :
		     ListIscsiSessions(sysfs_.string())) {
			if (!fs::exists(sysfs_ / "class" / "iscsi_session" /
			                session.name / "device" / target_dir /
			                hctl))
				continue;
			IscsiSession(disk, hctl, lun, session);
		}
	}

	void IscsiSession(const std::string &disk, const std::string &hctl,
	                  const std::string &lun,
	                  const IscsiSysfsSession &session)
	{
		const std::string &iqn = session.target;
		const std::string &tpgt = session.tpgt;
		const std::string &initiator = session.initiator;
		const std::string &address = session.address;
		const std::string port = std::to_string(session.port);
		if (iqn.empty() || address.empty())
			return;
		for (const fs::path &node :
		     SortedEntries(configfs_ / "target" / "iscsi")) {
			if (!EqualsIgnoreCase(node.filename().string(), iqn))
				continue;
			for (const fs::path &tpg : SortedEntries(node)) {
				const std::string name =
				        tpg.filename().string();
				if (!name.starts_with("tpgt_") ||
				    (!tpgt.empty() && name != "tpgt_" + tpgt) ||
				    !ServesPortal(tpg, address, port))
					continue;
				auto lun_dir = IscsiLunDir(tpg, initiator, lun);
				if (!lun_dir)
					continue;
				Add(disk, hctl, *lun_dir,
				    "iSCSI " + node.filename().string() + "/" +
				            name + " LUN " + lun + " (portal " +
				            address + ":" + port + ")");
			}
		}
	}

	// The session's portal is this TPG's: the TPG listens on its port,
	// and the address is one of its portals or an address of this host.
	// A target of the same name on another host (a cloned machine) is
	// reached at an address that is neither.
	static bool ServesPortal(const fs::path &tpg,
	                         const std::string &address,
	                         const std::string &port)
	{
		const bool local = IsLocalAddress(address);
		for (const fs::path &np : SortedEntries(tpg / "np")) {
			const std::string name = np.filename().string();
			const size_t colon = name.rfind(':');
			if (colon == std::string::npos ||
			    name.substr(colon + 1) != port)
				continue;
			if (local ||
			    SameAddress(name.substr(0, colon), address))
				return true;
		}
		return false;
	}

	// The TPG LUN the initiator sees as LUN lun: its own ACL's mapping
	// when the TPG has an ACL for it, else the TPG's LUN of that number
	// (demo mode, generate_node_acls).
	static std::optional<fs::path> IscsiLunDir(const fs::path &tpg,
	                                           const std::string &initiator,
	                                           const std::string &lun)
	{
		for (const fs::path &acl : SortedEntries(tpg / "acls")) {
			if (initiator.empty() ||
			    !EqualsIgnoreCase(acl.filename().string(),
			                      initiator))
				continue;
			for (const fs::path &entry :
			     SortedEntries(acl / ("lun_" + lun))) {
				if (!IsSymlink(entry))
					continue;
				std::error_code ec;
				const fs::path to = fs::read_symlink(entry, ec);
				if (!ec && to.parent_path().filename() == "lun")
					return tpg / "lun" / to.filename();
			}
			return std::nullopt; // mapped LUNs only
		}
		return tpg / "lun" / ("lun_" + lun);
	}

	void Add(const std::string &disk, const std::string &hctl,
	         const fs::path &lun_dir, const std::string &what)
	{
		auto lun = LunBackstore(configfs_, lun_dir);
		if (!lun)
			return;
		lun->disk = disk;
		lun->hctl = hctl;
		lun->lun = what;
		found_.push_back(std::move(*lun));
	}

	const fs::path sysfs_;
	const fs::path configfs_;
	std::set<std::string> seen_; // <maj>:<min> visited
	std::vector<LioLocalLun> found_;
};

} // namespace

bool IsLocalAddress(const std::string &addr)
{
	auto bytes = AddressBytes(addr);
	if (!bytes)
		return false;
	if (bytes->size() == 4 &&
	    static_cast<unsigned char>((*bytes)[0]) == 127) // 127.0.0.0/8
		return true;
	if (bytes->size() == 16 &&
	    std::memcmp(bytes->data(), &in6addr_loopback, 16) == 0)
		return true;
	ifaddrs *raw = nullptr;
	if (::getifaddrs(&raw) != 0)
		return false;
	std::unique_ptr<ifaddrs, IfaddrsFree> list(raw);
	for (const ifaddrs *ifa = list.get(); ifa; ifa = ifa->ifa_next) {
		if (!ifa->ifa_addr)
			continue;
		std::string mine;
		if (ifa->ifa_addr->sa_family == AF_INET) {
			const auto *in = reinterpret_cast<const sockaddr_in *>(
			        ifa->ifa_addr);
			mine.assign(
			        reinterpret_cast<const char *>(&in->sin_addr),
			        4);
		} else if (ifa->ifa_addr->sa_family == AF_INET6) {
			const auto *in6 =
			        reinterpret_cast<const sockaddr_in6 *>(
			                ifa->ifa_addr);
			mine.assign(
			        reinterpret_cast<const char *>(&in6->sin6_addr),
			        16);
		}
		if (!mine.empty() && mine == *bytes)
			return true;
	}
	return false;
}

std::vector<LioLocalLun> FindLocalLioLuns(const std::string &sysfs,
                                          const std::string &configfs,
                                          uint64_t rdev)
{
	LunWalk walk(sysfs, configfs);
	walk.Device(std::to_string(major(rdev)) + ":" +
	                    std::to_string(minor(rdev)),
	            0);
	return walk.Take();
}

} // namespace replipipe
