// Which LUNs of this host's own LIO a block device leads back to: a SCSI
// disk that tcm_loop made, or that an iSCSI session to a portal of this
// host made, or a device (dm, md) stacked on such a disk. A pair whose
// target is such a LUN of its own source would send every mirrored write
// back into the source (docs/decisions.md, 33).
//
// Read from sysfs and configfs only (no udev, no ioctl), with both roots
// parameters so that unit tests read a temp directory tree:
//   <sysfs>/dev/block/<maj>:<min>/device -> .../<H:C:T:L>  (a partition:
//       its disk's, one up), slaves/<name>/dev for what lies below;
//   tcm_loop: <sysfs>/class/scsi_host/host<H>/proc_name "tcm_loopback",
//       <configfs>/target/loopback/<wwn>/tpgt_<N>/address "H:0:T";
//   iSCSI: the <sysfs>/class/iscsi_session/session<N> whose
//       device/target*/<H:C:T:L> is the disk (targetname, tpgt,
//       initiatorname; the connection's persistent_address and _port),
//       <configfs>/target/iscsi/<iqn>/tpgt_<tpgt>/np/<addr>:<port>;
//   then the TPG's lun/lun_<L>/ (or, for an initiator with an ACL of its
//   own, acls/<initiator>/lun_<L>/ -> that TPG LUN) holds a symlink to
//   the backstore, <configfs>/target/core/<hba>/<name>.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace replipipe
{

// One LUN of this host's LIO.
struct LioLocalLun {
	std::string disk;      // the SCSI disk that is the LUN: "sdb"
	std::string hctl;      // its SCSI address: "2:0:1:0"
	std::string lun;       // "tcm_loop naa.5001405.../tpgt_1 LUN 0"
	std::string backstore; // "<hba>/<name>" under target/core
	std::string udev_path; // that backstore's udev_path ("" if none)
};

// The LUNs of this host's LIO that the block device <maj>:<min> (rdev,
// st_rdev) is or is stacked on (slaves, recursively). An iSCSI session
// counts as this host's when its target name is a TPG of this host's
// LIO and its portal is one of that TPG's network portals or an address
// of this host: a remote target with the same name (a cloned machine)
// does not. What cannot be read is skipped: nothing found is an empty
// list, never an error.
std::vector<LioLocalLun> FindLocalLioLuns(const std::string &sysfs,
                                          const std::string &configfs,
                                          uint64_t rdev);

// addr (IPv4, or IPv6 with or without brackets) is a loopback address or
// one of this host's interfaces' addresses (getifaddrs).
bool IsLocalAddress(const std::string &addr);

} // namespace replipipe
