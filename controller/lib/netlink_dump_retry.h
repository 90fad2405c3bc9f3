// RetryGrownDump: runs a PIPE_GET dump again while it fails with EMSGSIZE.
//
// The kernel sizes every message of a dump in its .start for the largest
// pipe at that moment (decision 28); a pipe that grows during the dump (a
// PIPE_SET that adds pairs) may no longer fit, and the dump then fails with
// EMSGSIZE, extack "a pipe grew during the dump; dump again". A new dump is
// sized for the pipe as it is now. Bounded: a pipe that grows during every
// attempt (modifies in a tight loop) ends with the last error, which then
// says how many dumps were tried.
#pragma once

#include <functional>

#include "status.h"

namespace replipipe
{

inline constexpr unsigned kGrownDumpAttempts = 3;

// dump() runs one whole dump and must start from empty output each time
// (the failed attempt may have delivered some pipes already). Returns its
// first result that is not EMSGSIZE, or the EMSGSIZE of the last attempt.
Status RetryGrownDump(const std::function<Status()> &dump,
                      unsigned attempts = kGrownDumpAttempts);

} // namespace replipipe
