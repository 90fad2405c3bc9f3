#include "iscsi_sysfs.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace replipipe
{
namespace
{

namespace fs = std::filesystem;

std::string ReadLine(const fs::path &path)
{
	std::ifstream in(path);
	if (!in)
		return "";
	std::string s;
	std::getline(in, s);
	while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
		s.pop_back();
	return s;
}

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

std::vector<fs::path> Entries(const fs::path &dir)
{
	std::vector<fs::path> out;
	std::error_code ec;
	for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
	     it.increment(ec))
		out.push_back(it->path());
	std::sort(out.begin(), out.end());
	return out;
}

} // namespace

std::vector<IscsiSysfsSession> ListIscsiSessions(const std::string &sysfs)
{
	std::vector<IscsiSysfsSession> sessions;
	const fs::path cls = fs::path(sysfs) / "class" / "iscsi_session";
	for (const fs::path &p : Entries(cls)) {
		const std::string name = p.filename().string();
		IscsiSysfsSession s;
		if (!name.starts_with("session") ||
		    !ParseU32(name.substr(7), &s.sid))
			continue;
		s.name = name;
		s.target = ReadLine(p / "targetname");
		s.state = ReadLine(p / "state");
		const fs::path conn =
		        fs::path(sysfs) / "class" / "iscsi_connection" /
		        ("connection" + std::to_string(s.sid) + ":0");
		s.address = ReadLine(conn / "persistent_address");
		std::string port = ReadLine(conn / "persistent_port");
		if (s.address.empty()) {
			s.address = ReadLine(conn / "address");
			port = ReadLine(conn / "port");
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
	for (const fs::path &target : Entries(dev)) {
		if (!target.filename().string().starts_with("target"))
			continue;
		for (const fs::path &sdev : Entries(target)) {
			// H:C:T:L
			const std::string hctl = sdev.filename().string();
			size_t colon = hctl.rfind(':');
			uint32_t l = 0;
			if (std::count(hctl.begin(), hctl.end(), ':') != 3 ||
			    !ParseU32(hctl.substr(colon + 1), &l) || l != lun)
				continue;
			for (const fs::path &blk : Entries(sdev / "block")) {
				disk.name = blk.filename().string();
				disk.dev = ReadLine(blk / "dev");
				disk.read_only = ReadLine(blk / "ro") == "1";
				disk.scsi_state = ReadLine(sdev / "state");
				return disk;
			}
			disk.scsi_state = ReadLine(sdev / "state");
		}
	}
	return disk;
}

} // namespace replipipe
