#include "iscsi_targets.h"

#include <cerrno>
#include <set>

namespace replipipe
{
namespace
{

std::optional<IscsiUrl> Url(const std::string &target)
{
	if (!LooksLikeIscsiUrl(target))
		return std::nullopt;
	auto url = ParseIscsiUrl(target);
	if (!url.ok())
		return std::nullopt;
	return *url;
}

} // namespace

bool IscsiTargetConnector::Handles(const std::string &target) const
{
	return LooksLikeIscsiUrl(target);
}

std::optional<std::string>
IscsiTargetConnector::UsedBy(const std::vector<std::string> &targets,
                             const std::string &session) const
{
	for (const std::string &t : targets)
		if (auto url = Url(t))
			if (auto s = sessions_.FindSession(*url);
			    s && s->name == session)
				return t;
	return std::nullopt;
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
	if (a->logged_in) {
		std::lock_guard<std::mutex> lock(mu_);
		ours_.insert(a->session);
		foreign_.erase(a->session);
		return a->device;
	}
	if (!existed)
		return a->device;
	{
		std::lock_guard<std::mutex> lock(mu_);
		if (ours_.count(a->session))
			return a->device;
	}
	// A sysfs look-up per target in use: only for a session this daemon
	// did not make (found after a restart, or the administrator's).
	if (!Uses(in_use, a->session)) {
		std::lock_guard<std::mutex> lock(mu_);
		foreign_.insert(a->session);
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

bool IscsiTargetConnector::MayBeDiskOf(const std::string &target,
                                       const std::string &device)
{
	auto url = ParseIscsiUrl(target);
	return !url.ok() || sessions_.MayBeDiskOf(*url, device);
}

bool IscsiTargetConnector::LoginTimedOutSince(
        const std::string &target,
        std::chrono::steady_clock::time_point since) const
{
	auto url = Url(target);
	return url && sessions_.LoginTimedOutSince(*url, since);
}

std::vector<DisconnectFailure>
IscsiTargetConnector::Disconnect(const std::vector<std::string> &targets,
                                 const TargetsInUse &in_use)
{
	std::vector<DisconnectFailure> failures;
	for (const std::string &t : targets) {
		auto url = Url(t);
		if (!url)
			continue;
		std::string session;
		SessionDisconnect done = End(*url, "", in_use, &session);
		if (done.outcome == SessionDisconnect::Outcome::kFailed)
			failures.push_back({t, std::move(done.why), session});
	}
	return failures;
}

SessionDisconnect
IscsiTargetConnector::DisconnectSession(const std::string &target,
                                        const std::string &session,
                                        const TargetsInUse &in_use)
{
	auto url = Url(target);
	if (!url)
		return {};
	return End(*url, session, in_use, nullptr);
}

SessionDisconnect IscsiTargetConnector::End(const IscsiUrl &url,
                                            const std::string &only,
                                            const TargetsInUse &in_use,
                                            std::string *session)
{
	SessionDisconnect out;
	std::string found;
	const auto keep = [&](const IscsiSysfsSession &s) {
		found = s.name;
		{
			std::lock_guard<std::mutex> lock(mu_);
			if (foreign_.count(s.name))
				return true;
		}
		if (auto by = UsedBy(in_use(), s.name)) {
			out.kept_for = *by;
			return true;
		}
		return false;
	};
	bool kept = false;
	Status st = sessions_.Logout(url, keep, &kept, only);
	if (session)
		*session = found;
	if (!st.ok()) {
		out.outcome = SessionDisconnect::Outcome::kFailed;
		out.why = st.message();
		return out;
	}
	if (kept) {
		out.outcome = SessionDisconnect::Outcome::kKept;
		return out;
	}
	// Logged out now, or gone already (only's, ended meanwhile).
	const std::string &ended = found.empty() ? only : found;
	if (!ended.empty()) {
		std::lock_guard<std::mutex> lock(mu_);
		ours_.erase(ended);
	}
	return out;
}

void IscsiTargetConnector::Adopt(const std::string &session)
{
	std::lock_guard<std::mutex> lock(mu_);
	ours_.insert(session);
	foreign_.erase(session);
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
