// The replipipe genl attributes <-> controller structs, and the extended-ack
// parser. Pure functions on messages, no socket: unit-tested by building the
// messages the kernel would send.
//
// Parsing is tolerant in the way user space must be towards a newer kernel:
// unknown attributes are ignored, missing ones keep their defaults; a string
// is read up to its NUL or its length, whichever comes first.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>

#include "kernel_api.h"
#include "status.h"

struct nl_msg;
struct nlattr;
struct nlmsghdr;

namespace replipipe
{

// Adds the attributes of PIPE_SET: id, name, mode, policy, max lag, region
// size and REPLIPIPE_A_PIPE_PAIRS with one REPLIPIPE_A_PIPE_PAIR per pair.
Status PutPipeSpec(nl_msg *msg, const KernelPipeSpec &spec);

// A pipe from the attributes of a PIPE_GET reply or a pipe event (the genl
// message, header included). Fails when REPLIPIPE_A_PIPE_ID is absent.
Result<KernelPipeStatus> ParsePipeMessage(nlmsghdr *hdr);
// One REPLIPIPE_A_PIPE_PAIR nest.
KernelPairStatus ParsePairNest(const nlattr *nest);
// A device number the module sends (new_encode_dev(): 12 bits of major,
// 20 of minor) as a dev_t.
dev_t DecodeKernelDev(uint32_t encoded);

// The genl command of a message (its genlmsghdr).
uint8_t GenlCommand(const nlmsghdr *hdr);

// The NLMSGERR_ATTR_MSG text of an NLMSG_ERROR message, "" if it has none
// (no NLM_F_ACK_TLVS, or no message). Handles capped and uncapped acks.
// Falls back to naming NLMSGERR_ATTR_MISS_TYPE / NLMSGERR_ATTR_OFFS.
std::string ExtackOfError(const nlmsghdr *hdr);
// The errno (positive, 0 on success) and extack text of an NLMSG_DONE.
int ErrorOfDone(const nlmsghdr *hdr, std::string *extack);

// Status for a kernel error: "<extack>: <strerror(err)>" or strerror alone.
Status KernelError(int err, const std::string &extack);

} // namespace replipipe
