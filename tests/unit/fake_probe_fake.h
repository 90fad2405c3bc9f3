// FakeProbe: an EndpointProbe whose facts the test states (backstores,
// devices, which devices are held), so that every verification rule can be
// checked without root or real block devices. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

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
	// path names the same device as existing (a symlink).
	void AddAlias(const std::string &path, const std::string &existing);
	// OpenExclusive(path) fails with err (EBUSY: in use).
	void SetOpenError(const std::string &path, int err);
	// The next probe call of any kind fails with err.
	void FailNext(int err);

	Result<BackstoreFacts> Backstore(const std::string &source) override;
	Result<DeviceFacts> Device(const std::string &path) override;
	Status OpenExclusive(const std::string &path) override;

private:
	Status TakeFault();

	std::mutex mu_;
	std::map<std::string, BackstoreFacts> backstores_; // guarded by mu_
	std::map<std::string, DeviceFacts> devices_;       // guarded by mu_
	std::map<std::string, int> open_errors_;           // guarded by mu_
	int next_fault_ = 0;                               // guarded by mu_
	uint64_t next_rdev_ = 0x800;                       // guarded by mu_
};

} // namespace replipipe::testing
