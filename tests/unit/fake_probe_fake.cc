#include "fake_probe_fake.h"

namespace replipipe::testing
{

void FakeProbe::AddBackstore(const std::string &source,
                             const std::string &primary_path,
                             uint64_t size_bytes, bool enabled)
{
	AddDevice(primary_path, size_bytes);
	std::lock_guard<std::mutex> lock(mu_);
	backstores_[source] = {true, enabled, primary_path};
	// LIO holds its primary exclusively.
	open_errors_[OpenKeyLocked(primary_path)] = EBUSY;
}

void FakeProbe::AddDevice(const std::string &path, uint64_t size_bytes,
                          bool block)
{
	std::lock_guard<std::mutex> lock(mu_);
	DeviceFacts d;
	d.exists = true;
	d.is_block_device = block;
	d.rdev = block ? next_rdev_++ : 0;
	d.size_bytes = size_bytes;
	d.logical_block_size = block ? 512 : 0;
	devices_[path] = d;
}

void FakeProbe::SetLogicalBlockSize(const std::string &path, uint32_t bytes)
{
	std::lock_guard<std::mutex> lock(mu_);
	devices_.at(path).logical_block_size = bytes;
}

void FakeProbe::AddAlias(const std::string &path, const std::string &existing)
{
	std::lock_guard<std::mutex> lock(mu_);
	devices_[path] = devices_.at(existing);
}

void FakeProbe::SetOpenError(const std::string &path, int err)
{
	std::lock_guard<std::mutex> lock(mu_);
	open_errors_[OpenKeyLocked(path)] = err;
}

void FakeProbe::SetLocalLioLuns(const std::string &path,
                                std::vector<LioLocalLun> luns)
{
	std::lock_guard<std::mutex> lock(mu_);
	lio_luns_[OpenKeyLocked(path)] = std::move(luns);
}

void FakeProbe::SetHeldCheck(std::function<bool(uint64_t rdev)> held)
{
	std::lock_guard<std::mutex> lock(mu_);
	held_ = std::move(held);
}

std::string FakeProbe::OpenKeyLocked(const std::string &path) const
{
	auto it = devices_.find(path);
	if (it != devices_.end() && it->second.is_block_device)
		return "device " + std::to_string(it->second.rdev);
	return path;
}

void FakeProbe::FailNext(int err)
{
	std::lock_guard<std::mutex> lock(mu_);
	next_fault_ = err;
}

Status FakeProbe::TakeFault()
{
	if (!next_fault_)
		return Status();
	int err = next_fault_;
	next_fault_ = 0;
	return Status::FromErrno("probe", err);
}

Result<BackstoreFacts> FakeProbe::Backstore(const std::string &source)
{
	std::lock_guard<std::mutex> lock(mu_);
	if (Status st = TakeFault(); !st.ok())
		return st;
	auto it = backstores_.find(source);
	return it == backstores_.end() ? BackstoreFacts{} : it->second;
}

Result<DeviceFacts> FakeProbe::Device(const std::string &path)
{
	std::lock_guard<std::mutex> lock(mu_);
	if (Status st = TakeFault(); !st.ok())
		return st;
	auto it = devices_.find(path);
	return it == devices_.end() ? DeviceFacts{} : it->second;
}

Status FakeProbe::OpenExclusive(const std::string &path)
{
	std::function<bool(uint64_t)> held;
	uint64_t rdev = 0;
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (Status st = TakeFault(); !st.ok())
			return st;
		auto it = open_errors_.find(OpenKeyLocked(path));
		if (it != open_errors_.end())
			return Status::FromErrno("open " + path, it->second);
		auto dev = devices_.find(path);
		if (dev != devices_.end() && dev->second.is_block_device)
			rdev = dev->second.rdev;
		held = held_;
	}
	if (rdev && held && held(rdev))
		return Status::FromErrno("open " + path, EBUSY);
	return Status();
}

Result<std::vector<LioLocalLun>>
FakeProbe::LocalLioLuns(const std::string &path)
{
	std::lock_guard<std::mutex> lock(mu_);
	if (Status st = TakeFault(); !st.ok())
		return st;
	auto it = lio_luns_.find(OpenKeyLocked(path));
	return it == lio_luns_.end() ? std::vector<LioLocalLun>{} : it->second;
}

} // namespace replipipe::testing
