#include "endpoint_check.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <optional>
#include <vector>

#include "iscsi_url.h"
#include "object_path.h"
#include "text_scan.h"
#include "unique_fd.h"

namespace replipipe
{
namespace
{

constexpr std::string_view kBackstorePrefix = "replipipe_";
constexpr size_t kSourceMaxLen = 127; // REPLIPIPE_SOURCE_MAX_LEN
constexpr size_t kTargetMaxLen = 255; // REPLIPIPE_TARGET_MAX_LEN

bool EndsWithIgnoreCase(std::string_view s, std::string_view suffix)
{
	return s.size() >= suffix.size() &&
	       EqualsIgnoreCase(s.substr(s.size() - suffix.size()), suffix);
}

// A CIM_ProtocolEndpoint reference -> its Name and SystemName keys; text
// that is no reference is the name itself.
Result<EndpointName> ParseEndpointText(std::string_view text, const char *what)
{
	EndpointName ep;
	// A device path starts with one '/'; a reference never does.
	bool device_path = text.starts_with("/") && !text.starts_with("//");
	if (device_path || !LooksLikeObjectPath(text)) {
		ep.name = std::string(text);
		return ep;
	}
	auto path = ParseObjectPath(text);
	if (!path.ok())
		return path.status().Context(what);
	if (!EndsWithIgnoreCase(path->class_name, "ProtocolEndpoint"))
		return Status::Error(std::string(what) + ": " +
		                             path->class_name +
		                             " is not a CIM_ProtocolEndpoint",
		                     EINVAL);
	const KeyValue *name = path->Find("Name");
	if (!name || name->type != KeyValue::Type::kString)
		return Status::Error(std::string(what) + " \"" +
		                             std::string(text) +
		                             "\": no Name string key",
		                     EINVAL);
	ep.name = name->string;
	if (const KeyValue *sys = path->Find("SystemName");
	    sys && sys->type == KeyValue::Type::kString)
		ep.system_name = sys->string;
	return ep;
}

// Reads a small configfs/sysfs attribute, without the trailing newline.
Result<std::string> ReadAttribute(const std::string &path)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid())
		return Status::FromErrno("open " + path, errno);
	char buf[4096];
	ssize_t n;
	do {
		n = ::read(fd.get(), buf, sizeof(buf) - 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return Status::FromErrno("read " + path, errno);
	std::string value(buf, static_cast<size_t>(n));
	while (!value.empty() &&
	       std::isspace(static_cast<unsigned char>(value.back())))
		value.pop_back();
	return value;
}

// A decimal sysfs attribute; nullopt when it is missing or not a number.
std::optional<uint64_t> ReadNumber(const std::string &path)
{
	auto text = ReadAttribute(path);
	if (!text.ok() || text->empty())
		return std::nullopt;
	char *end = nullptr;
	unsigned long long v = std::strtoull(text->c_str(), &end, 10);
	if (!end || *end != '\0')
		return std::nullopt;
	return uint64_t(v);
}

std::string SysfsBlockDir(const std::string &sysfs, dev_t rdev)
{
	return sysfs + "/dev/block/" + std::to_string(major(rdev)) + ":" +
	       std::to_string(minor(rdev));
}

Result<uint64_t> BlockDeviceSize(const std::string &sysfs, dev_t rdev,
                                 const std::string &path)
{
	if (auto sectors = ReadNumber(SysfsBlockDir(sysfs, rdev) + "/size"))
		return *sectors * 512; // sysfs counts 512-byte sectors
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid())
		return Status::FromErrno("open " + path, errno);
	uint64_t bytes = 0;
	if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0)
		return Status::FromErrno("BLKGETSIZE64 " + path, errno);
	return bytes;
}

Result<uint32_t> BlockDeviceLogicalBlockSize(const std::string &sysfs,
                                             dev_t rdev,
                                             const std::string &path)
{
	// A partition has no queue/ of its own: its disk's is one up.
	const std::string dir = SysfsBlockDir(sysfs, rdev);
	for (const char *attr :
	     {"/queue/logical_block_size", "/../queue/logical_block_size"})
		if (auto bytes = ReadNumber(dir + attr); bytes && *bytes)
			return uint32_t(*bytes);
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd.valid())
		return Status::FromErrno("open " + path, errno);
	int bytes = 0;
	if (::ioctl(fd.get(), BLKSSZGET, &bytes) != 0)
		return Status::FromErrno("BLKSSZGET " + path, errno);
	return uint32_t(bytes);
}

Status CheckPair(EndpointProbe &probe, const std::string &source,
                 const std::string &target,
                 const std::set<uint64_t> &held_by_pipe);

// EINVAL is reserved for "source = target" (an invalid parameter); a probe
// that fails with EINVAL is a failed verification like any other.
// Why a target could not be opened for writing, from the open's errno.
// EROFS is a read-only disk: a write-protected LUN, also when the iSCSI
// attach read its sysfs "ro" before the SCSI scan had set it.
const char *WhyNotWritable(int err)
{
	if (err == EBUSY)
		return "is in use (mounted or held by another driver)";
	if (err == EROFS)
		return "is write-protected (read-only)";
	return "cannot be opened for writing";
}

Status ProbeFailed(const Status &st, const std::string &context)
{
	Status out = st.Context(context);
	return out.err() == EINVAL ? Status::Error(out.message(), EIO) : out;
}

constexpr std::string_view kComesBack =
        ": every mirrored write would come back to the source "
        "(source = target)";

// "<pair>: target T [(on sdX)] is <LUN> of this host (disk sdX at
// SCSI H:C:T:L)"
std::string LoopedTarget(const std::string &pair, const std::string &target,
                         const LioLocalLun &lun)
{
	std::string text = pair + ": target " + target;
	if ("/dev/" + lun.disk != target)
		text += " (on " + lun.disk + ")";
	return text + " is " + lun.lun + " of this host (disk " + lun.disk +
	       " at SCSI " + lun.hctl + ")";
}

// A target that is a LUN of this host's LIO exporting the source, or
// another backstore on the source's primary, sends every mirrored write
// back into the primary (docs/decisions.md, 33): "source = target".
Status CheckNotLoopedBack(EndpointProbe &probe, const std::string &pair,
                          const std::string &source, const std::string &target,
                          const std::string &primary_path,
                          const DeviceFacts &primary)
{
	auto luns = probe.LocalLioLuns(target);
	if (!luns.ok())
		return ProbeFailed(luns.status(), pair);
	for (const LioLocalLun &lun : *luns) {
		if (lun.backstore == source)
			return Status::Error(LoopedTarget(pair, target, lun) +
			                             ", which exports " +
			                             source + " itself" +
			                             std::string(kComesBack),
			                     EINVAL);
		if (lun.udev_path.empty())
			continue;
		bool same = lun.udev_path == primary_path;
		if (!same && primary.is_block_device) {
			auto dev = probe.Device(lun.udev_path);
			if (!dev.ok())
				return ProbeFailed(dev.status(), pair);
			same = dev->exists && dev->is_block_device &&
			       dev->rdev == primary.rdev;
		}
		if (same)
			return Status::Error(
			        LoopedTarget(pair, target, lun) +
			                ", which exports backstore " +
			                lun.backstore + " on " + lun.udev_path +
			                ", the primary device of " + source +
			                std::string(kComesBack),
			        EINVAL);
	}
	return Status();
}

} // namespace

std::string TargetIdentity(const std::string &target)
{
	if (!LooksLikeIscsiUrl(target))
		return target;
	auto url = ParseIscsiUrl(target);
	if (!url.ok())
		return target;
	return "iscsi LUN " + std::to_string(url->lun) + " of " + url->iqn;
}

bool IsBackstoreName(std::string_view name)
{
	if (name.size() > kSourceMaxLen || !name.starts_with(kBackstorePrefix))
		return false;
	size_t i = kBackstorePrefix.size();
	size_t digits = 0;
	while (i < name.size() &&
	       std::isdigit(static_cast<unsigned char>(name[i]))) {
		i++;
		digits++;
	}
	if (digits == 0 || i >= name.size() || name[i] != '/')
		return false;
	std::string_view rest = name.substr(i + 1);
	if (rest.empty() || rest == "." || rest == "..")
		return false;
	for (char c : rest)
		if (!std::isalnum(static_cast<unsigned char>(c)) &&
		    std::string_view("_-.:").find(c) == std::string_view::npos)
			return false;
	return true;
}

Result<EndpointName> ParseSourceEndpoint(std::string_view text)
{
	auto ep = ParseEndpointText(text, "SourceEndpoint");
	if (!ep.ok())
		return ep;
	if (!IsBackstoreName(ep->name))
		return Status::Error("SourceEndpoint \"" + ep->name +
		                             "\" is not a replipipe backstore "
		                             "(expected replipipe_<N>/<name>)",
		                     EINVAL);
	return ep;
}

Result<EndpointName> ParseTargetEndpoint(std::string_view text)
{
	auto ep = ParseEndpointText(text, "TargetEndpoint");
	if (!ep.ok())
		return ep;
	if (LooksLikeIscsiUrl(ep->name)) { // docs/iscsi.md
		auto url = ParseIscsiUrl(ep->name);
		if (!url.ok())
			return url.status().Context("TargetEndpoint");
		ep->name = url->Canonical();
		return ep;
	}
	const std::string &raw = ep->name;
	if (raw.empty() || raw[0] != '/')
		return Status::Error("TargetEndpoint \"" + raw +
		                             "\" is not an absolute device "
		                             "path",
		                     EINVAL);
	std::string normalized;
	size_t i = 0;
	while (i < raw.size()) {
		size_t next = raw.find('/', i + 1);
		if (next == std::string::npos)
			next = raw.size();
		std::string_view part(raw.data() + i + 1, next - i - 1);
		i = next;
		if (part.empty() || part == ".")
			continue;
		if (part == "..")
			return Status::Error("TargetEndpoint \"" + raw +
			                             "\": \"..\" is not "
			                             "allowed",
			                     EINVAL);
		normalized += "/";
		normalized += part;
	}
	if (normalized.empty() || normalized.size() > kTargetMaxLen)
		return Status::Error("TargetEndpoint \"" + raw +
		                             "\" is not a device path",
		                     EINVAL);
	ep->name = normalized;
	return ep;
}

Result<BackstoreFacts> SystemEndpointProbe::Backstore(const std::string &source)
{
	BackstoreFacts facts;
	const std::string dir = roots_.configfs + "/target/core/" + source;
	struct stat st;
	if (::stat(dir.c_str(), &st) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return facts;
		return Status::FromErrno("stat " + dir, errno);
	}
	facts.exists = S_ISDIR(st.st_mode);
	if (!facts.exists)
		return facts;
	auto enable = ReadAttribute(dir + "/enable");
	if (!enable.ok())
		return enable.status();
	facts.enabled = *enable == "1";
	auto udev_path = ReadAttribute(dir + "/udev_path");
	if (!udev_path.ok())
		return udev_path.status();
	facts.primary_path = *udev_path;
	return facts;
}

Result<DeviceFacts> SystemEndpointProbe::Device(const std::string &path)
{
	DeviceFacts facts;
	struct stat st;
	if (::stat(path.c_str(), &st) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return facts;
		return Status::FromErrno("stat " + path, errno);
	}
	facts.exists = true;
	facts.is_block_device = S_ISBLK(st.st_mode);
	if (!facts.is_block_device) {
		facts.size_bytes = static_cast<uint64_t>(st.st_size);
		return facts;
	}
	facts.rdev = st.st_rdev;
	auto size = BlockDeviceSize(roots_.sysfs, st.st_rdev, path);
	if (!size.ok())
		return size.status();
	facts.size_bytes = *size;
	auto block =
	        BlockDeviceLogicalBlockSize(roots_.sysfs, st.st_rdev, path);
	if (!block.ok())
		return block.status();
	facts.logical_block_size = *block;
	return facts;
}

Status SystemEndpointProbe::OpenExclusive(const std::string &path)
{
	UniqueFd fd(::open(path.c_str(), O_WRONLY | O_EXCL | O_CLOEXEC));
	if (!fd.valid())
		return Status::FromErrno("open " + path + " for writing",
		                         errno);
	return Status();
}

Result<std::vector<LioLocalLun>>
SystemEndpointProbe::LocalLioLuns(const std::string &path)
{
	struct stat st;
	if (::stat(path.c_str(), &st) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return std::vector<LioLocalLun>{};
		return Status::FromErrno("stat " + path, errno);
	}
	if (!S_ISBLK(st.st_mode))
		return std::vector<LioLocalLun>{};
	return FindLocalLioLuns(roots_.sysfs, roots_.configfs, st.st_rdev);
}

Status VerifyNewPair(EndpointProbe &probe, const std::string &source,
                     const std::string &target,
                     const std::set<uint64_t> &held_by_pipe)
{
	return CheckPair(probe, source, target, held_by_pipe);
}

namespace
{

Status CheckPair(EndpointProbe &probe, const std::string &source,
                 const std::string &target,
                 const std::set<uint64_t> &held_by_pipe)
{
	const std::string pair = "pair " + source + " -> " + target;
	auto backstore = probe.Backstore(source);
	if (!backstore.ok())
		return ProbeFailed(backstore.status(), pair);
	if (!backstore->exists)
		return Status::Error(pair + ": backstore " + source +
		                             " does not exist in configfs",
		                     ENOENT);
	if (!backstore->enabled)
		return Status::Error(pair + ": backstore " + source +
		                             " is not enabled",
		                     ENODEV);
	if (backstore->primary_path.empty())
		return Status::Error(pair + ": backstore " + source +
		                             " has no udev_path (no primary "
		                             "device)",
		                     ENODEV);
	const std::string &primary_path = backstore->primary_path;

	auto tgt = probe.Device(target);
	if (!tgt.ok())
		return ProbeFailed(tgt.status(), pair);
	if (!tgt->exists)
		return Status::Error(pair + ": target " + target +
		                             " does not exist",
		                     ENOENT);
	if (!tgt->is_block_device)
		return Status::Error(pair + ": target " + target +
		                             " is not a block device",
		                     ENOTBLK);
	auto primary = probe.Device(primary_path);
	if (!primary.ok())
		return ProbeFailed(primary.status(), pair);
	if (!primary->exists)
		return Status::Error(pair + ": primary device " + primary_path +
		                             " of " + source +
		                             " does not exist",
		                     ENOENT);
	// Two paths may name one device (symlinks, /dev/disk/by-*): compare
	// device numbers, not only names.
	if (target == primary_path ||
	    (primary->is_block_device && primary->rdev == tgt->rdev))
		return Status::Error(pair + ": target " + target +
		                             " is the primary device of " +
		                             source + " (source = target)",
		                     EINVAL);
	if (Status loop = CheckNotLoopedBack(probe, pair, source, target,
	                                     primary_path, *primary);
	    !loop.ok())
		return loop;
	Status st;
	if (!held_by_pipe.count(tgt->rdev))
		st = probe.OpenExclusive(target);
	if (!st.ok()) {
		const char *why = WhyNotWritable(st.err());
		return Status::Error(pair + ": target " + target + " " + why +
		                             ": " + st.message(),
		                     st.err() == EINVAL ? EIO : st.err());
	}
	if (tgt->size_bytes < primary->size_bytes)
		return Status::Error(
		        pair + ": target " + target + " (" +
		                std::to_string(tgt->size_bytes) +
		                " bytes) is smaller than " + source + " (" +
		                std::to_string(primary->size_bytes) + " bytes)",
		        ENOSPC);
	// The target must take every write the source takes: one of its
	// blocks would be more than the source's smallest write (dm refuses
	// such a table; the kernel refuses the pair). 0 is "not known".
	if (tgt->logical_block_size && primary->logical_block_size &&
	    tgt->logical_block_size > primary->logical_block_size)
		return Status::Error(
		        pair + ": target " + target +
		                " has logical blocks of " +
		                std::to_string(tgt->logical_block_size) +
		                " bytes, larger than the " +
		                std::to_string(primary->logical_block_size) +
		                " bytes of " + source +
		                " (every smaller write would fail on it)",
		        EMEDIUMTYPE);
	return Status();
}

} // namespace

} // namespace replipipe
