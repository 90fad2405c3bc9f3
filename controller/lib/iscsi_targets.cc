#include "iscsi_targets.h"

#include <cerrno>

namespace replipipe
{
namespace
{

// One session per (portal, IQN).
std::string SessionKey(const IscsiUrl &url)
{
	return url.Portal() + " " + url.iqn;
}

std::optional<IscsiUrl> Url(const std::string &target)
{
	if (!LooksLikeIscsiUrl(target))
		return std::nullopt;
	auto url = ParseIscsiUrl(target);
	if (!url.ok())
		return std::nullopt;
	return *url;
}

bool Shared(const IscsiUrl &url, const std::vector<std::string> &in_use)
{
	for (const std::string &t : in_use) {
		if (auto u = Url(t); u && SessionKey(*u) == SessionKey(url))
			return true;
	}
	return false;
}

} // namespace

bool IscsiTargetConnector::Handles(const std::string &target) const
{
	return LooksLikeIscsiUrl(target);
}

Result<std::string>
IscsiTargetConnector::Connect(const std::string &target,
                              const std::vector<std::string> &in_use,
                              bool *made)
{
	*made = false;
	auto url = ParseIscsiUrl(target);
	if (!url.ok()) // parsed before; keep EINVAL out of this layer
		return Status::Error(url.status().message(), EIO);
	const bool existed = sessions_.FindSession(*url).has_value();
	auto a = sessions_.Attach(*url);
	if (!a.ok())
		return a.status().err() == EINVAL
		               ? Status::Error(a.status().message(), EIO)
		               : a.status();
	*made = a->logged_in;
	std::lock_guard<std::mutex> lock(mu_);
	if (a->logged_in) {
		ours_.insert(SessionKey(*url));
		foreign_.erase(SessionKey(*url));
	} else if (existed && !ours_.count(SessionKey(*url)) &&
	           !Shared(*url, in_use)) {
		foreign_.insert(SessionKey(*url));
	}
	return a->device;
}

Result<std::string> IscsiTargetConnector::DevicePath(const std::string &target)
{
	auto url = ParseIscsiUrl(target);
	if (!url.ok())
		return Status::Error(url.status().message(), EIO);
	return sessions_.DevicePath(*url);
}

std::vector<std::string>
IscsiTargetConnector::Disconnect(const std::vector<std::string> &targets,
                                 const std::vector<std::string> &in_use)
{
	std::vector<std::string> failures;
	std::set<std::string> done;
	for (const std::string &t : targets) {
		auto url = Url(t);
		if (!url || Shared(*url, in_use) ||
		    !done.insert(SessionKey(*url)).second)
			continue;
		{
			std::lock_guard<std::mutex> lock(mu_);
			if (foreign_.count(SessionKey(*url)))
				continue;
		}
		if (Status st = sessions_.Logout(*url); !st.ok()) {
			failures.push_back(st.message());
		} else {
			std::lock_guard<std::mutex> lock(mu_);
			ours_.erase(SessionKey(*url));
		}
	}
	return failures;
}

std::optional<PeerView>
IscsiTargetConnector::Describe(const std::string &target)
{
	auto url = Url(target);
	if (!url)
		return std::nullopt;
	IscsiPeerState st = sessions_.Describe(*url);
	PeerView v;
	v.portal = st.portal;
	v.iqn = st.iqn;
	v.lun = st.lun;
	v.session = st.session;
	v.device = st.device;
	return v;
}

} // namespace replipipe
