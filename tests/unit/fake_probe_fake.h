// FakeProbe: an EndpointProbe whose facts the test states (backstores,
// devices, which devices are held), so that every verification rule can be
// checked without root or real block devices. Thread-safe.
//
// A block device is held as a device, whatever path names it: an open
// error set on one path holds for its aliases too.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "endpoint_check.h"

namespace replipipe::testing
{

class FakeProbe : public EndpointProbe
{
public:
	// A backstore and its primary block device (rdev chosen here).
	void AddBackstore(const std::string &source,
	                  const std::string &primary_path, uint64_t size_bytes,
	                  bool enabled = true);
	// A block device (or, with block = false, some other file).
	void AddDevice(const std::string &path, uint64_t size_bytes,
	               bool block = true);
	// A block device's logical block size (AddDevice() gives 512).
	void SetLogicalBlockSize(const std::string &path, uint32_t bytes);
	// path names the same device as existing (a symlink).
	void AddAlias(const std::string &path, const std::string &existing);
	// OpenExclusive(path) fails with err (EBUSY: in use); on a block
	// device, under each of its paths.
	void SetOpenError(const std::string &path, int err);
	// OpenExclusive() of a block device fails with EBUSY when held(rdev)
	// says so (e.g. replipipe.ko has it as a pair's target). Called
	// without the probe's lock, so it may call the probe.
	void SetHeldCheck(std::function<bool(uint64_t rdev)> held);
	// The block device at path is (or is stacked on) these LUNs of this
	// host's LIO, under each of its paths.
	void SetLocalLioLuns(const std::string &path,
	                     std::vector<LioLocalLun> luns);
	// The next probe call of any kind fails with err.
	void FailNext(int err);

	Result<BackstoreFacts> Backstore(const std::string &source) override;
	Result<DeviceFacts> Device(const std::string &path) override;
	Status OpenExclusive(const std::string &path) override;
	Result<std::vector<LioLocalLun>>
	LocalLioLuns(const std::string &path) override;

private:
	Status TakeFault();
	// The key of open_errors_: the device for a block device, else path.
	std::string OpenKeyLocked(const std::string &path) const;

	std::mutex mu_;
	std::map<std::string, BackstoreFacts> backstores_; // guarded by mu_
	std::map<std::string, DeviceFacts> devices_;       // guarded by mu_
	std::map<std::string, int> open_errors_;           // guarded by mu_
	std::function<bool(uint64_t)> held_;               // guarded by mu_
	int next_fault_ = 0;                               // guarded by mu_
	uint64_t next_rdev_ = 0x800;                       // guarded by mu_
	// Keyed like open_errors_; guarded by mu_.
	std::map<std::string, std::vector<LioLocalLun>> lio_luns_;
};

} // namespace replipipe::testing
