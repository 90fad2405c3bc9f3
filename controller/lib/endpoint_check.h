// Endpoints of a pair and the peer verification done before a pair is
// created.
//
// Syntax (ParseSourceEndpoint/ParseTargetEndpoint, errors err() EINVAL):
// a source is a LIO backstore of the replipipe backend, "replipipe_<N>/<name>";
// a target is an absolute block-device path or an iscsi:// URL (iscsi_url.h,
// kept in its canonical form). Either may come as a
// CIM_ProtocolEndpoint reference (any class whose name ends in
// ProtocolEndpoint) whose Name key holds it.
//
// Verification (VerifyNewPair) reads facts through an EndpointProbe so that
// unit tests can state every fact (block device or not, sizes, in use)
// without root or real devices; SystemEndpointProbe is the real one, the one
// the daemon uses, with its configfs and sysfs roots injectable.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "lio_loopback.h"
#include "status.h"

namespace replipipe
{

struct EndpointName {
	std::string name;        // backstore name or device path
	std::string system_name; // the reference's SystemName key, if any
};

Result<EndpointName> ParseSourceEndpoint(std::string_view text);
// The path is normalized lexically ("//" and "/./" collapse); ".." and
// relative paths are refused.
Result<EndpointName> ParseTargetEndpoint(std::string_view text);
// What makes two TargetEndpoints (normal form) one target: an iSCSI
// endpoint is its target's name and LUN, whichever portal reaches it (an
// iSCSI name is unique world-wide, RFC 3720 3.2.6; a target's portals are
// ways to the same LUNs), so two URLs that differ only in the portal are
// one target; a device path is itself (two paths of one device are caught
// by device number once they resolve).
std::string TargetIdentity(const std::string &target);
// "replipipe_<N>/<name>", name of letters, digits and "_-.:" (no "/").
bool IsBackstoreName(std::string_view name);

struct BackstoreFacts {
	bool exists = false;      // the configfs directory exists
	bool enabled = false;     // its enable attribute reads 1
	std::string primary_path; // its udev_path attribute ("" if unset)
};

struct DeviceFacts {
	bool exists = false;
	bool is_block_device = false;
	uint64_t rdev = 0;       // st_rdev (block devices)
	uint64_t size_bytes = 0; // device size (st_size for other files)
	uint32_t logical_block_size = 0; // block devices; 0: not known
};

// Reads facts; the errors it returns are I/O errors other than "missing".
// Thread-safety: implementations must allow concurrent calls.
class EndpointProbe
{
public:
	virtual ~EndpointProbe() = default;
	// source is "replipipe_<N>/<name>".
	virtual Result<BackstoreFacts> Backstore(const std::string &source) = 0;
	// stat (following symlinks) and size; never opens for writing.
	virtual Result<DeviceFacts> Device(const std::string &path) = 0;
	// open(path, O_WRONLY | O_EXCL) and close again: Status() when the
	// device is writable and nobody holds it. On a block device O_EXCL
	// fails with EBUSY while it is mounted or claimed by a driver (md,
	// dm, LIO, replipipe.ko itself), which is exactly "in use" here.
	virtual Status OpenExclusive(const std::string &path) = 0;
	// The LUNs of this host's own LIO that the block device at path is,
	// or that a device stacked on it (dm, md) reaches through its slaves
	// (lio_loopback.h); empty for anything else.
	virtual Result<std::vector<LioLocalLun>>
	LocalLioLuns(const std::string &path) = 0;
};

class SystemEndpointProbe final : public EndpointProbe
{
public:
	struct Roots {
		std::string configfs = "/sys/kernel/config";
		std::string sysfs = "/sys";
	};
	SystemEndpointProbe() = default;
	explicit SystemEndpointProbe(Roots roots) : roots_(std::move(roots)) {}

	// <configfs>/target/core/<source>/{enable,udev_path}
	Result<BackstoreFacts> Backstore(const std::string &source) override;
	// Block devices: size from <sysfs>/dev/block/<maj>:<min>/size, else
	// BLKGETSIZE64 on a read-only open; logical block size from its
	// queue/logical_block_size (a partition's parent's), else BLKSSZGET.
	Result<DeviceFacts> Device(const std::string &path) override;
	Status OpenExclusive(const std::string &path) override;
	// stat, then FindLocalLioLuns() under both roots.
	Result<std::vector<LioLocalLun>>
	LocalLioLuns(const std::string &path) override;

private:
	const Roots roots_;
};

// The rules for a new pair, in this order: the backstore exists and is
// enabled and has a primary device; the target exists and is a block
// device; the target is not the primary (same path or st_rdev), nor a LUN
// of this host's LIO (tcm_loop, iSCSI to a portal of this host, or a
// device stacked on one) whose backstore is the source or another
// backstore on the source's primary (same udev_path or st_rdev): every
// mirrored write would come back into the source; it can be opened for
// writing exclusively; it is at least as large as the primary;
// its logical blocks are not larger than the primary's (the kernel refuses
// that pair too: every smaller write would fail on the target).
// err() EINVAL when the target is the primary or loops back into it
// (source = target, an invalid parameter); any other error is a failed
// verification (ENOENT, ENOTBLK, EBUSY, EACCES, ENOSPC for "too small",
// EMEDIUMTYPE for "larger blocks", or the probe's own errno).
// held_by_pipe: devices (st_rdev) that the pipe's own kernel pairs hold,
// which the PIPE_SET replaces; their exclusive open is not tried (it
// would fail while the kernel holds them, and that is no "in use" by
// anyone else). Whether the kernel can take them over is its to say.
Status VerifyNewPair(EndpointProbe &probe, const std::string &source,
                     const std::string &target,
                     const std::set<uint64_t> &held_by_pipe = {});

} // namespace replipipe
