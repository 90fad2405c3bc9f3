// What the kernel's iSCSI transport class shows in sysfs: the sessions, the
// portal each is connected to, and the SCSI disk a LUN of a session became.
// No udev is assumed (the VM bench has none): the disk is found at
//   <sysfs>/class/iscsi_session/session<N>/device/target*/<H:C:T:LUN>/block/<sdX>
// and the portal at
//   <sysfs>/class/iscsi_connection/connection<N>:0/persistent_{address,port}
// The root is a parameter so that unit tests read a temp directory tree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace replipipe
{

struct IscsiSysfsSession {
	std::string name;      // "session3"
	uint32_t sid = 0;      // 3
	std::string target;    // targetname (the IQN)
	std::string tpgt;      // the target portal group tag ("" unknown)
	std::string initiator; // initiatorname ("" unknown)
	std::string iface;     // ifacename: open-iscsi's iface ("" unknown)
	std::string address; // the connection's persistent address ("" if none)
	uint16_t port = 0;
	std::string state; // "LOGGED_IN", "FAILED", "FREE", ... ("" unknown)
};

struct IscsiSysfsDisk {
	std::string name;       // "sdb"
	std::string dev;        // "8:16" (<block>/dev)
	bool read_only = false; // <block>/ro reads 1
	std::string scsi_state; // <scsi device>/state: "running", "blocked",
	                        // "transport-offline", ...
};

// Every session, ordered by sid. Unreadable entries are skipped.
std::vector<IscsiSysfsSession> ListIscsiSessions(const std::string &sysfs);
// The disk of LUN lun on the session, or a disk with an empty name when
// the LUN has no block device (yet).
IscsiSysfsDisk FindIscsiDisk(const std::string &sysfs,
                             const std::string &session, uint32_t lun);

} // namespace replipipe
