// Prometheus metrics of replipiped in the text exposition format (0.0.4),
// rendered from the same status snapshot that `replipipectl status --json`
// prints (DaemonService's status reply: the kernel's PIPE_GET counters, the
// store and the resync jobs). A pure function: no I/O, no clock.
//
// Families (base units, `_total` for counters, HELP and TYPE for each):
//   replipipe_build_info{version}                          gauge, 1
//   replipipe_pipes                                         gauge
//   replipipe_pairs                                         gauge
//   replipipe_pipe_info{pipe,pipe_name,source_system,target_system,mode,
//                       failure_policy}                     gauge, 1
//   replipipe_pipe_in_kernel{pipe,pipe_name}                gauge, 0|1
//   replipipe_pipe_max_lag_bytes{pipe,pipe_name}            gauge
// and per pair, labelled {pipe,pipe_name,source,target}:
//   replipipe_pair_state{...,state}     gauge, one-hot over Syncing, InSync,
//                                       Degraded, Paused (all 0 when the
//                                       kernel does not know the pair)
//   replipipe_pair_source_bytes         gauge
//   replipipe_pair_dirty_bytes          gauge (dirty regions, at most the size)
//   replipipe_pair_resync_done_bytes    gauge (of the current or last job)
//   replipipe_pair_resync_total_bytes   gauge
//   replipipe_pair_resync_rate_bytes_per_second  gauge
//   replipipe_pair_resync_running       gauge, 0|1
//   replipipe_pair_mirrored_writes_total  counter
//   replipipe_pair_mirrored_bytes_total   counter
//   replipipe_pair_target_errors_total    counter
//   replipipe_pair_lag_bytes            gauge (asynchronous pipes)
// "pipe" is the InstanceID ("replipipe:<uuid>"), "pipe_name" the
// PipeElementName. The kernel's counters start at 0 when the kernel pipe is
// created (a module reload is a counter reset, which Prometheus handles).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "control_protocol.h"

namespace replipipe
{

// The Content-Type of RenderMetrics()'s text.
inline constexpr const char *kMetricsContentType =
        "text/plain; version=0.0.4; charset=utf-8";

// The whole exposition, one family after the other, ending in '\n'.
std::string RenderMetrics(const std::vector<ControlPipe> &pipes);

// A label value with '\\', '"' and newline escaped as the format demands.
std::string EscapeLabelValue(std::string_view value);

} // namespace replipipe
