#include "iscsi_sysfs.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "sysfs_read.h"

namespace replipipe
{
namespace
{

namespace fs = std::filesystem;

bool ParseU32(const std::string &s, uint32_t *out)
{
	if (s.empty() || s.size() > 9)
		return false;
	for (char c : s)
		if (!std::isdigit(static_cast<unsigned char>(c)))
			return false;
	*out = static_cast<uint32_t>(std::strtoul(s.c_str(), nullptr, 10));
	return true;
}

} // namespace

std::vector<IscsiSysfsSession> ListIscsiSessions(const std::string &sysfs)
{
	std::vector<IscsiSysfsSession> sessions;
	const fs::path cls = fs::path(sysfs) / "class" / "iscsi_session";
	for (const fs::path &p : SortedEntries(cls)) {
		const std::string name = p.filename().string();
		IscsiSysfsSession s;
		if (!name.starts_with("session") ||
		    !ParseU32(name.substr(7), &s.sid))
			continue;
		s.name = name;
		s.target = ReadFirstLine(p / "targetname");
		s.tpgt = ReadFirstLine(p / "tpgt");
		s.initiator = ReadFirstLine(p / "initiatorname");
		s.iface = ReadFirstLine(p / "ifacename");
		s.state = ReadFirstLine(p / "state");
		const fs::path conn =
		        fs::path(sysfs) / "class" / "iscsi_connection" /
		        ("connection" + std::to_string(s.sid) + ":0");
		s.address = ReadFirstLine(conn / "persistent_address");
		std::string port = ReadFirstLine(conn / "persistent_port");
		if (s.address.empty()) {
			s.address = ReadFirstLine(conn / "address");
			port = ReadFirstLine(conn / "port");
		}
		uint32_t v = 0;
		if (ParseU32(port, &v) && v <= 65535)
			s.port = static_cast<uint16_t>(v);
		sessions.push_back(std::move(s));
	}
	std::sort(sessions.begin(), sessions.end(),
	          [](const auto &a, const auto &b) { return a.sid < b.sid; });
	return sessions;
}

IscsiSysfsDisk FindIscsiDisk(const std::string &sysfs,
                             const std::string &session, uint32_t lun)
{
	IscsiSysfsDisk disk;
	const fs::path dev = fs::path(sysfs) / "class" / "iscsi_session" /
	                     session / "device";
	for (const fs::path &target : SortedEntries(dev)) {
		if (!target.filename().string().starts_with("target"))
			continue;
		for (const fs::path &sdev : SortedEntries(target)) {
			// H:C:T:L
			const std::string hctl = sdev.filename().string();
			size_t colon = hctl.rfind(':');
			uint32_t l = 0;
			if (std::count(hctl.begin(), hctl.end(), ':') != 3 ||
			    !ParseU32(hctl.substr(colon + 1), &l) || l != lun)
				continue;
			for (const fs::path &blk :
			     SortedEntries(sdev / "block")) {
				disk.name = blk.filename().string();
				disk.dev = ReadFirstLine(blk / "dev");
				disk.read_only =
				        ReadFirstLine(blk / "ro") == "1";
				disk.scsi_state = ReadFirstLine(sdev / "state");
				return disk;
			}
			disk.scsi_state = ReadFirstLine(sdev / "state");
		}
	}
	return disk;
}

} // namespace replipipe
