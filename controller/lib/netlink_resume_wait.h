// AskUntilProbed: a resume (PAIR_SET Syncing) asked again until the kernel's
// probe of the pair's target has ended.
//
// The kernel waits for the probe at most REPLIPIPE_RESUME_WAIT_MS per
// request (generic netlink holds a lock that every family shares while a
// request runs, decision 100) and answers EINPROGRESS while the probe runs;
// the resume is applied when the probe ends well. Asked again with
// PAIR_RESUME_WAIT, which starts no probe of its own (a pause made meanwhile
// stands), until the answer is not EINPROGRESS. The probe's own bound is
// 5 s; `bound` only stops the asking should a kernel never end it. The
// caller's lock on its socket is held meanwhile, as it was while the
// kernel probed inside the request.
#pragma once

#include <chrono>
#include <functional>

#include "status.h"

namespace replipipe
{

inline constexpr std::chrono::milliseconds kResumeProbeBound{20000};
inline constexpr std::chrono::milliseconds kResumeAskPause{10};

// ask(again) sends one PAIR_SET Syncing, with PAIR_RESUME_WAIT if again.
// Returns its first answer that is not EINPROGRESS, or EINPROGRESS with
// context once `bound` has passed.
Status AskUntilProbed(const std::function<Status(bool again)> &ask,
                      std::chrono::milliseconds bound = kResumeProbeBound);

} // namespace replipipe
