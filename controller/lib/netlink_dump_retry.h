// RetryDump: runs a PIPE_GET dump again while the kernel says its result is
// not the list of pipes as it is.
//
// Two ways (decision 28): the kernel sizes every message of a dump in its
// .start for the largest pipe at that moment, so a pipe that grows during
// the dump (a PIPE_SET that adds pairs) may no longer fit, and the dump
// fails with EMSGSIZE, extack "a pipe grew during the dump; dump again".
// And a dump resumes by position in the list of pipes, so a pipe made or
// deleted between two of its callbacks may make it leave one out: the
// kernel then flags its messages NLM_F_DUMP_INTR, which NetlinkSocket
// returns as EAGAIN. A new dump is right for the pipes as they are now.
// Bounded: pipes that change during every attempt (modifies in a tight
// loop) end with the last error, which then says how many dumps were
// tried.
#pragma once

#include <functional>

#include "status.h"

namespace replipipe
{

inline constexpr unsigned kDumpAttempts = 3;

// dump() runs one whole dump and must start from empty output each time
// (the failed attempt may have delivered some pipes already). Returns its
// first result that is neither EMSGSIZE nor EAGAIN, or the error of the
// last attempt.
Status RetryDump(const std::function<Status()> &dump,
                 unsigned attempts = kDumpAttempts);

} // namespace replipipe
