// rp-nlctl: talk to replipipe.ko over generic netlink directly (no daemon).
// A test tool for the VM scenarios: machine-readable output, one line per
// object, `key=value` fields separated by spaces. Values are escaped: a space
// is \x20, a backslash \\, so a line always splits on spaces.
//
// Exit status: 0 ok, 1 kernel (or I/O) error with the extack text and errno
// name on stderr, 3 time-out of `events --count`, 64 usage, 69 module not
// loaded, 125 --make-it-fail could not be set. Out of memory in the tool
// itself (failslab refusing its brk or mmap) is 1 too.
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/replipipe.h>
#include <linux/sock_diag.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <netlink/attr.h>
#include <netlink/netlink.h>

#include "netlink_client.h"
#include "netlink_events.h"
#include "netlink_resync.h"
#include "netlink_socket.h"
#include "resync_copier.h"
#include "resync_pair.h"
#include "resync_rate.h"
#include "unique_fd.h"

using namespace replipipe;

namespace
{

constexpr int kExitOk = 0;
constexpr int kExitKernel = 1;
constexpr int kExitTimeout = 3;
constexpr int kExitUsage = 64;
constexpr int kExitNoModule = 69;
constexpr int kExitMakeItFail = 125;

const char kUsage[] =
        "usage: rp-nlctl COMMAND ...\n"
        "  family\n"
        "  set-pipe --id ID [--name N] [--mode sync|async]\n"
        "           [--policy degrade|failio] [--max-lag-kib K]\n"
        "           [--region-kib K] [--pair SRC=TGT[,clean]]...\n"
        "  del-pipe ID\n"
        "  get [ID] [--repeat N]   (--repeat: asks for ID N times in one\n"
        "        process and prints get-repeat n=N us=MICROSECONDS\n"
        "        max_us=LONGEST after the pipe: what a PIPE_GET costs,\n"
        "        without fork and exec)\n"
        "  pair-state ID SRC pause|resume\n"
        "        [--once [--again]]   (resume: one request as the kernel\n"
        "        answers it, EINPROGRESS while the target's probe runs,\n"
        "        printed as resume result=ok|ERRNO; --again with\n"
        "        PAIR_RESUME_WAIT, which starts no probe)\n"
        "  bitmap ID SRC\n"
        "  claim ID SRC [--hint H] [--max N] [--serial N] [--hold SECONDS]\n"
        "        [--done|--failed]   (prints claim-pending id=N first if\n"
        "        the kernel's first answer is that it is not granted yet;\n"
        "        --serial: the pair's serial as get\n"
        "        prints it; the claim fails with ESTALE once that pair was\n"
        "        replaced)\n"
        "        [--give-up-pending]   (a claim answered pending: its\n"
        "        RESYNC_DONE must fail with EBUSY, its RESYNC_FAILED end it)\n"
        "        [--full-rcvbuf SECONDS]   (the smallest receive buffer,\n"
        "        filled with unread PIPE_GET replies (up to SECONDS), then\n"
        "        claim: the reply cannot be delivered; --hold then keeps\n"
        "        the socket open after the failure too)\n"
        "  events [--count N] [--timeout SECONDS]\n"
        "  send-error PORT [ERRNO]   (an NLMSG_ERROR of -ERRNO, default\n"
        "        EINVAL, from this process to the netlink socket of port\n"
        "        PORT: a failed receive there; needs CAP_NET_ADMIN)\n"
        "  resync ID SRC [--source-dev DEV] [--target-dev DEV] [--qd N]\n"
        "         [--chunk-kib K] [--rate-kibps R] [--batch-regions N]\n"
        "  copy SRC DST [--offset BYTES] [--length BYTES] [--qd N]\n"
        "       [--chunk-kib K] [--rate-kibps R]   (the resync copier alone,\n"
        "       no kernel: for benchmarks; --rate-kibps paces slices of a\n"
        "       quarter second of the rate, as resync paces its claims)\n"
        "  (every command takes --nl-timeout SECONDS, default 10, and\n"
        "  --make-it-fail: this process under the kernel's fault-injection\n"
        "  task filter before it opens its socket; debug kernels)\n";

struct UsageError {
	std::string what;
};

int Usage(const std::string &what)
{
	if (!what.empty())
		std::fprintf(stderr, "rp-nlctl: %s\n", what.c_str());
	std::fputs(kUsage, stderr);
	return kExitUsage;
}

// Prints the error; returns the exit status for it.
int Fail(const Status &st)
{
	if (IsModuleMissing(st)) {
		std::fprintf(stderr, "rp-nlctl: %s\n", st.message().c_str());
		return kExitNoModule;
	}
	const char *name = st.err() != 0 ? strerrorname_np(st.err()) : nullptr;
	std::fprintf(stderr, "rp-nlctl: %s (errno %s)\n", st.message().c_str(),
	             name != nullptr ? name : "none");
	return kExitKernel;
}

std::string Esc(const std::string &s)
{
	std::string out;
	for (char c : s) {
		if (c == ' ')
			out += "\\x20";
		else if (c == '\\')
			out += "\\\\";
		else if (c == '\n')
			out += "\\n";
		else if (c == '\t')
			out += "\\t";
		else
			out += c;
	}
	return out;
}

const char *ModeWord(Mode m)
{
	return m == Mode::kAsynchronous ? "async" : "sync";
}
const char *PolicyWord(FailurePolicy p)
{
	return p == FailurePolicy::kFailIO ? "failio" : "degrade";
}
uint64_t ParseU64(const std::string &opt, const std::string &value)
{
	char *end = nullptr;
	errno = 0;
	const unsigned long long v = std::strtoull(value.c_str(), &end, 0);
	if (value.empty() || *end != '\0' || errno != 0 || value[0] == '-')
		throw UsageError{opt + ": not a number: '" + value + "'"};
	return v;
}

double ParseSeconds(const std::string &opt, const std::string &value)
{
	char *end = nullptr;
	const double v = std::strtod(value.c_str(), &end);
	if (value.empty() || *end != '\0' || v < 0)
		throw UsageError{opt + ": not a number of seconds: '" + value +
		                 "'"};
	return v;
}

// Arguments after the command: options (--x value, or flags) and positionals.
class Args
{
public:
	Args(int argc, char **argv, int first)
	    : argv_(argv + first, argv + argc)
	{
	}
	// Takes "--name VALUE" (or --name=VALUE); all occurrences.
	std::vector<std::string> TakeAll(const std::string &name)
	{
		std::vector<std::string> values;
		for (size_t i = 0; i < argv_.size();) {
			if (argv_[i] == name) {
				if (i + 1 >= argv_.size())
					throw UsageError{name +
					                 " needs a value"};
				values.push_back(argv_[i + 1]);
				argv_.erase(argv_.begin() + i,
				            argv_.begin() + i + 2);
			} else if (argv_[i].rfind(name + "=", 0) == 0) {
				values.push_back(
				        argv_[i].substr(name.size() + 1));
				argv_.erase(argv_.begin() + i);
			} else {
				++i;
			}
		}
		return values;
	}
	std::optional<std::string> Take(const std::string &name)
	{
		auto all = TakeAll(name);
		if (all.size() > 1)
			throw UsageError{name + " given twice"};
		if (all.empty())
			return std::nullopt;
		return all[0];
	}
	bool Flag(const std::string &name)
	{
		for (size_t i = 0; i < argv_.size(); ++i)
			if (argv_[i] == name) {
				argv_.erase(argv_.begin() + i);
				return true;
			}
		return false;
	}
	// The remaining arguments, which must all be positional.
	std::vector<std::string> Positionals(size_t min, size_t max)
	{
		for (const auto &a : argv_)
			if (a.rfind("--", 0) == 0)
				throw UsageError{"unknown option " + a};
		if (argv_.size() < min || argv_.size() > max)
			throw UsageError{"wrong number of arguments"};
		return argv_;
	}

private:
	std::vector<std::string> argv_;
};

std::chrono::milliseconds g_timeout = kNetlinkDefaultTimeout;

int CmdFamily(Args &args)
{
	args.Positionals(0, 0);
	auto sock = NetlinkSocket::Open(g_timeout);
	if (!sock.ok())
		return Fail(sock.status());
	std::printf("family name=%s id=%d version=%u group=%s group_id=%d\n",
	            REPLIPIPE_GENL_NAME, (*sock)->family_id(),
	            (*sock)->family_version(), REPLIPIPE_MCGRP_EVENTS,
	            (*sock)->events_group());
	return kExitOk;
}

int CmdSetPipe(Args &args)
{
	KernelPipeSpec spec;
	auto id = args.Take("--id");
	if (!id)
		throw UsageError{"set-pipe needs --id"};
	spec.id = *id;
	spec.name = args.Take("--name").value_or("");
	if (auto mode = args.Take("--mode")) {
		if (*mode == "sync")
			spec.mode = Mode::kSynchronous;
		else if (*mode == "async")
			spec.mode = Mode::kAsynchronous;
		else
			throw UsageError{"--mode: sync or async"};
	}
	if (auto policy = args.Take("--policy")) {
		if (*policy == "degrade")
			spec.failure_policy = FailurePolicy::kDegrade;
		else if (*policy == "failio")
			spec.failure_policy = FailurePolicy::kFailIO;
		else
			throw UsageError{"--policy: degrade or failio"};
	}
	if (auto v = args.Take("--max-lag-kib"))
		spec.max_lag_kib =
		        static_cast<uint32_t>(ParseU64("--max-lag-kib", *v));
	if (auto v = args.Take("--region-kib"))
		spec.region_kib =
		        static_cast<uint32_t>(ParseU64("--region-kib", *v));
	for (const std::string &p : args.TakeAll("--pair")) {
		KernelPairSpec pair;
		const size_t eq = p.find('=');
		if (eq == std::string::npos || eq == 0)
			throw UsageError{"--pair SRC=TGT[,clean]: '" + p + "'"};
		pair.source = p.substr(0, eq);
		pair.target = p.substr(eq + 1);
		const std::string clean = ",clean";
		if (pair.target.size() > clean.size() &&
		    pair.target.compare(pair.target.size() - clean.size(),
		                        clean.size(), clean) == 0) {
			pair.assume_clean = true;
			pair.target.resize(pair.target.size() - clean.size());
		}
		spec.pairs.push_back(pair);
	}
	args.Positionals(0, 0);
	auto kernel = NetlinkKernel::Open(g_timeout);
	if (!kernel.ok())
		return Fail(kernel.status());
	Status st = (*kernel)->SetPipe(spec);
	return st.ok() ? kExitOk : Fail(st);
}

int CmdDelPipe(Args &args)
{
	auto pos = args.Positionals(1, 1);
	auto kernel = NetlinkKernel::Open(g_timeout);
	if (!kernel.ok())
		return Fail(kernel.status());
	Status st = (*kernel)->DeletePipe(pos[0]);
	return st.ok() ? kExitOk : Fail(st);
}

void PrintPair(const std::string &pipe_id, const KernelPairStatus &p)
{
	std::printf("pair pipe=%s source=%s target=%s state=%s regions=%" PRIu64
	            " dirty=%" PRIu64 " writes=%" PRIu64 " bytes=%" PRIu64
	            " errors=%" PRIu64 " lag=%" PRIu64 " source_bytes=%" PRIu64
	            " intent=%s intent_regions=%" PRIu64
	            " intent_marked=%" PRIu64 " serial=%" PRIu64 "\n",
	            Esc(pipe_id).c_str(), Esc(p.source).c_str(),
	            Esc(p.target).c_str(), PairStateName(p.state), p.regions,
	            p.dirty_regions, p.writes_mirrored, p.bytes_mirrored,
	            p.target_errors, p.lag_bytes, p.source_bytes,
	            p.intent ? IntentRecordName(p.intent) : "none",
	            p.intent_loaded_regions, p.intent_marked_regions, p.serial);
}

void PrintPipe(const KernelPipeStatus &p)
{
	std::printf("pipe id=%s name=%s mode=%s policy=%s region_kib=%u "
	            "max_lag_kib=%u pairs=%zu\n",
	            Esc(p.id).c_str(), Esc(p.name).c_str(), ModeWord(p.mode),
	            PolicyWord(p.failure_policy), p.region_kib, p.max_lag_kib,
	            p.pairs.size());
	for (const auto &pair : p.pairs)
		PrintPair(p.id, pair);
}

int CmdGet(Args &args)
{
	const auto repeat_opt = args.Take("--repeat");
	const uint64_t repeat =
	        repeat_opt ? ParseU64("--repeat", *repeat_opt) : 1;
	auto pos = args.Positionals(0, 1);
	if (repeat_opt && (pos.empty() || repeat == 0))
		throw UsageError{"--repeat N needs a pipe ID and N > 0"};
	auto kernel = NetlinkKernel::Open(g_timeout);
	if (!kernel.ok())
		return Fail(kernel.status());
	if (pos.empty()) {
		auto pipes = (*kernel)->ListPipes();
		if (!pipes.ok())
			return Fail(pipes.status());
		for (const auto &p : *pipes)
			PrintPipe(p);
		return kExitOk;
	}
	using Clock = std::chrono::steady_clock;
	const auto t0 = Clock::now();
	Clock::duration longest{};
	auto pipe = (*kernel)->GetPipe(pos[0]);
	longest = Clock::now() - t0;
	for (uint64_t i = 1; i < repeat && pipe.ok(); ++i) {
		const auto ti = Clock::now();
		pipe = (*kernel)->GetPipe(pos[0]);
		longest = std::max(longest, Clock::now() - ti);
	}
	const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
	        Clock::now() - t0);
	const auto max_us =
	        std::chrono::duration_cast<std::chrono::microseconds>(longest);
	if (!pipe.ok())
		return Fail(pipe.status());
	if (!pipe->has_value())
		return Fail(Status::Error(
		        "no pipe " + pos[0] + " in the kernel", ENOENT));
	PrintPipe(**pipe);
	if (repeat_opt)
		std::printf("get-repeat n=%" PRIu64 " us=%lld max_us=%lld\n",
		            repeat, static_cast<long long>(us.count()),
		            static_cast<long long>(max_us.count()));
	return kExitOk;
}

// pair-state ... resume --once [--again]: one PAIR_SET Syncing, not asked
// again while the kernel answers EINPROGRESS (its probe of the target
// runs); prints how the kernel answered.
int ResumeOnce(const std::vector<std::string> &pos, bool again)
{
	auto sock = NetlinkSocket::Open(g_timeout);
	if (!sock.ok())
		return Fail(sock.status());
	NlMsgPtr msg = (*sock)->NewRequest(REPLIPIPE_CMD_PAIR_SET);
	if (nla_put_string(msg.get(), REPLIPIPE_A_PIPE_ID, pos[0].c_str()) <
	            0 ||
	    nla_put_string(msg.get(), REPLIPIPE_A_PAIR_SOURCE, pos[1].c_str()) <
	            0 ||
	    nla_put_u8(msg.get(), REPLIPIPE_A_PAIR_STATE,
	               REPLIPIPE_PAIR_SYNCING) < 0 ||
	    (again &&
	     nla_put_flag(msg.get(), REPLIPIPE_A_PAIR_RESUME_WAIT) < 0))
		return Fail(
		        Status::Error("netlink message too large", EMSGSIZE));
	Status r = (*sock)->Request(std::move(msg));
	const char *err = r.err() != 0 ? strerrorname_np(r.err()) : nullptr;
	std::printf("resume result=%s\n", r.ok()           ? "ok"
	                                  : err != nullptr ? err
	                                                   : "error");
	if (!r.ok())
		std::fprintf(stderr, "%s\n", r.message().c_str());
	return kExitOk;
}

int CmdPairState(Args &args)
{
	const bool once = args.Flag("--once");
	const bool again = args.Flag("--again");
	auto pos = args.Positionals(3, 3);
	PairState state;
	if (pos[2] == "pause")
		state = PairState::kPaused;
	else if (pos[2] == "resume")
		state = PairState::kSyncing;
	else
		throw UsageError{"pair-state: pause or resume"};
	if ((once || again) && state != PairState::kSyncing)
		throw UsageError{
		        "pair-state: --once and --again go with resume"};
	if (again && !once)
		throw UsageError{"pair-state: --again goes with --once"};
	if (once)
		return ResumeOnce(pos, again);
	auto kernel = NetlinkKernel::Open(g_timeout);
	if (!kernel.ok())
		return Fail(kernel.status());
	Status st = (*kernel)->SetPairState(pos[0], pos[1], state);
	return st.ok() ? kExitOk : Fail(st);
}

int CmdBitmap(Args &args)
{
	auto pos = args.Positionals(2, 2);
	auto channel = NetlinkResyncChannel::Open(g_timeout);
	if (!channel.ok())
		return Fail(channel.status());
	auto bitmap = (*channel)->GetBitmap(pos[0], pos[1]);
	if (!bitmap.ok())
		return Fail(bitmap.status());
	std::printf("bitmap pipe=%s source=%s nbits=%" PRIu64 " dirty=%" PRIu64
	            "\n",
	            Esc(pos[0]).c_str(), Esc(pos[1]).c_str(), bitmap->nbits,
	            bitmap->count());
	// Runs of dirty regions, "first-last" (or "first" for one region).
	for (uint64_t i = 0; i < bitmap->nbits;) {
		if (!bitmap->test(i)) {
			++i;
			continue;
		}
		uint64_t j = i;
		while (j + 1 < bitmap->nbits && bitmap->test(j + 1))
			++j;
		if (i == j)
			std::printf("dirty %" PRIu64 "\n", i);
		else
			std::printf("dirty %" PRIu64 "-%" PRIu64 "\n", i, j);
		i = j + 1;
	}
	return kExitOk;
}

// claim --full-rcvbuf: a claim whose reply the kernel cannot deliver (the
// socket's receive buffer is full, here of replies nobody read). The module
// must drop such a claim at once; the socket stays open for @hold seconds so
// that a test can see the claim is gone while its socket is still there.
int ClaimFullRcvbuf(const std::vector<std::string> &pos, uint64_t hint,
                    uint32_t max, uint64_t serial, double wait, double hold)
{
	auto sock = NetlinkSocket::Open(g_timeout);
	if (!sock.ok())
		return Fail(sock.status());
	const int fd = (*sock)->fd();
	const int smallest = 1; // the kernel raises it to its minimum
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &smallest,
	               sizeof(smallest)) != 0)
		return Fail(Status::Error("setsockopt", errno));
	std::printf("listening\n");
	std::fflush(stdout);
	// PIPE_GET requests whose replies nobody reads, until the kernel
	// queues no more of them (they take more than the receive buffer, or
	// one was dropped: the socket is then congested until it is read), at
	// most @wait seconds.
	const auto deadline =
	        std::chrono::steady_clock::now() +
	        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
	                std::chrono::duration<double>(wait));
	uint32_t mem[SK_MEMINFO_VARS] = {};
	uint32_t last = 0;
	for (;;) {
		socklen_t len = sizeof(mem);
		if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0)
			return Fail(Status::Error("SO_MEMINFO", errno));
		if (mem[SK_MEMINFO_RMEM_ALLOC] > mem[SK_MEMINFO_RCVBUF] ||
		    (last != 0 && mem[SK_MEMINFO_RMEM_ALLOC] == last) ||
		    std::chrono::steady_clock::now() >= deadline)
			break;
		last = mem[SK_MEMINFO_RMEM_ALLOC];
		NlMsgPtr get = (*sock)->NewRequest(REPLIPIPE_CMD_PIPE_GET);
		if (nla_put_string(get.get(), REPLIPIPE_A_PIPE_ID,
		                   pos[0].c_str()) < 0 ||
		    nl_send_auto((*sock)->get(), get.get()) < 0)
			return Fail(Status::Error("PIPE_GET not sent", EIO));
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
	}
	std::printf("queued rmem=%u rcvbuf=%u\n", mem[SK_MEMINFO_RMEM_ALLOC],
	            mem[SK_MEMINFO_RCVBUF]);
	std::fflush(stdout);
	NlMsgPtr msg = (*sock)->NewRequest(REPLIPIPE_CMD_RESYNC_CLAIM);
	Status st =
	        PutClaimRequest(msg.get(), pos[0], pos[1], hint, max, serial);
	if (st.ok())
		st = (*sock)->Request(std::move(msg));
	std::printf("claim-sent result=%s\n",
	            st.ok() ? "ok" : Esc(st.message()).c_str());
	std::fflush(stdout);
	if (hold > 0)
		std::this_thread::sleep_for(
		        std::chrono::duration<double>(hold));
	return st.ok() ? kExitOk : kExitKernel;
}

// claim --give-up-pending: a claim the kernel answers pending (writes to
// its regions still in flight, or the pair fenced) is not the engine's yet:
// RESYNC_DONE is refused (EBUSY), RESYNC_FAILED gives it up. Prints the
// first answer and each of the two results; fails if the claim was granted
// at once (nothing pending to try them on).
int ClaimGiveUpPending(const std::vector<std::string> &pos, uint64_t hint,
                       uint32_t max, uint64_t serial)
{
	auto sock = NetlinkSocket::Open(g_timeout);
	if (!sock.ok())
		return Fail(sock.status());
	NlMsgPtr msg = (*sock)->NewRequest(REPLIPIPE_CMD_RESYNC_CLAIM);
	Status st =
	        PutClaimRequest(msg.get(), pos[0], pos[1], hint, max, serial);
	RegionClaim claim;
	bool pending = false;
	if (st.ok())
		st = (*sock)->Request(std::move(msg), [&](nlmsghdr *hdr) {
			return ParseClaimReply(hdr, &claim, &pending);
		});
	if (!st.ok())
		return Fail(st);
	if (!pending)
		return Fail(Status::Error("claim " + std::to_string(claim.id) +
		                                  " was granted at once",
		                          EINVAL));
	std::printf("claim-pending id=%" PRIu64 "\n", claim.id);
	for (const auto &[cmd, name] :
	     {std::pair{REPLIPIPE_CMD_RESYNC_DONE, "done"},
	      std::pair{REPLIPIPE_CMD_RESYNC_FAILED, "failed"}}) {
		NlMsgPtr end = (*sock)->NewRequest(cmd);
		if (nla_put_u64(end.get(), REPLIPIPE_A_CLAIM_ID, claim.id) < 0)
			return Fail(Status::Error("netlink message too large",
			                          EMSGSIZE));
		Status r = (*sock)->Request(std::move(end));
		const char *err =
		        r.err() != 0 ? strerrorname_np(r.err()) : nullptr;
		std::printf("%s result=%s\n", name,
		            r.ok()           ? "ok"
		            : err != nullptr ? err
		                             : "error");
	}
	return kExitOk;
}

int CmdClaim(Args &args)
{
	const uint64_t hint =
	        ParseU64("--hint", args.Take("--hint").value_or("0"));
	const uint64_t max =
	        ParseU64("--max", args.Take("--max").value_or(std::to_string(
	                                  REPLIPIPE_CLAIM_MAX_REGIONS)));
	const uint64_t serial =
	        ParseU64("--serial", args.Take("--serial").value_or("0"));
	const double hold =
	        ParseSeconds("--hold", args.Take("--hold").value_or("0"));
	const bool done = args.Flag("--done");
	const bool failed = args.Flag("--failed");
	if (done && failed)
		throw UsageError{"--done and --failed exclude each other"};
	const std::optional<std::string> full = args.Take("--full-rcvbuf");
	const bool give_up_pending = args.Flag("--give-up-pending");
	auto pos = args.Positionals(2, 2);
	if (give_up_pending)
		return ClaimGiveUpPending(pos, hint, static_cast<uint32_t>(max),
		                          serial);
	if (full)
		return ClaimFullRcvbuf(
		        pos, hint, static_cast<uint32_t>(max), serial,
		        ParseSeconds("--full-rcvbuf", *full), hold);
	auto channel = NetlinkResyncChannel::Open(g_timeout);
	if (!channel.ok())
		return Fail(channel.status());
	// The kernel answers within REPLIPIPE_CLAIM_WAIT_MS; a claim not
	// granted by then is said so once, for the scenarios that look.
	bool said_pending = false;
	auto claim = (*channel)->Claim(
	        pos[0], pos[1], hint, static_cast<uint32_t>(max), serial,
	        [&](uint64_t id) {
		        if (!said_pending) {
			        said_pending = true;
			        std::printf("claim-pending id=%" PRIu64 "\n",
			                    id);
			        std::fflush(stdout);
		        }
		        return true;
	        });
	if (!claim.ok())
		return Fail(claim.status());
	std::printf("claim pipe=%s source=%s id=%" PRIu64 " first=%" PRIu64
	            " count=%u",
	            Esc(pos[0]).c_str(), Esc(pos[1]).c_str(), claim->id,
	            claim->first, claim->count);
	if (claim->time_left)
		std::printf(" left_ms=%lld",
		            static_cast<long long>(claim->time_left->count()));
	std::printf("\n");
	std::fflush(stdout);
	if (hold > 0)
		std::this_thread::sleep_for(
		        std::chrono::duration<double>(hold));
	if (claim->count == 0)
		return kExitOk;
	Status st;
	if (done)
		st = (*channel)->Done(claim->id);
	else if (failed)
		st = (*channel)->Failed(claim->id);
	if (!st.ok())
		return Fail(st);
	if (done || failed)
		std::printf("finished id=%" PRIu64 " as=%s\n", claim->id,
		            done ? "done" : "failed");
	return kExitOk;
}

void PrintEvent(const KernelEvent &e)
{
	std::printf("event type=%s", KernelEventTypeName(e.type));
	if (e.type != KernelEventType::kOverrun)
		std::printf(" pipe=%s", Esc(e.pipe_id).c_str());
	if (e.pair)
		std::printf(" source=%s target=%s state=%s dirty=%" PRIu64,
		            Esc(e.pair->source).c_str(),
		            Esc(e.pair->target).c_str(),
		            PairStateName(e.pair->state),
		            e.pair->dirty_regions);
	else if (e.pipe)
		std::printf(" name=%s mode=%s policy=%s pairs=%zu",
		            Esc(e.pipe->name).c_str(), ModeWord(e.pipe->mode),
		            PolicyWord(e.pipe->failure_policy),
		            e.pipe->pairs.size());
	std::printf("\n");
	std::fflush(stdout);
}

int CmdEvents(Args &args)
{
	const auto count_opt = args.Take("--count");
	const uint64_t count = count_opt ? ParseU64("--count", *count_opt) : 0;
	const auto timeout_opt = args.Take("--timeout");
	const double timeout =
	        timeout_opt ? ParseSeconds("--timeout", *timeout_opt) : 0;
	args.Positionals(0, 0);
	auto listener = NetlinkEventListener::Open();
	if (!listener.ok())
		return Fail(listener.status());
	std::fprintf(stderr, "rp-nlctl: listening\n");
	std::fflush(stderr);
	const auto deadline =
	        std::chrono::steady_clock::now() +
	        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
	                std::chrono::duration<double>(timeout));
	uint64_t seen = 0;
	for (;;) {
		auto wait = std::chrono::milliseconds(1000);
		if (timeout_opt) {
			const auto left = std::chrono::duration_cast<
			        std::chrono::milliseconds>(
			        deadline - std::chrono::steady_clock::now());
			if (left.count() <= 0)
				break;
			wait = std::min(wait, left);
		}
		auto batch = (*listener)->Wait(wait);
		for (const auto &e : batch.events) {
			PrintEvent(e);
			if (count_opt && ++seen >= count)
				return kExitOk;
		}
		if (!batch.receive_error.ok())
			return Fail(batch.receive_error);
	}
	if (count_opt) {
		std::fprintf(stderr,
		             "rp-nlctl: timed out with %" PRIu64 " of %" PRIu64
		             " events\n",
		             seen, count);
		return kExitTimeout;
	}
	return kExitOk;
}

int CmdSendError(Args &args)
{
	auto pos = args.Positionals(1, 2);
	const uint64_t port = ParseU64("PORT", pos[0]);
	const uint64_t err =
	        pos.size() > 1 ? ParseU64("ERRNO", pos[1]) : EINVAL;
	if (port == 0 || port > UINT32_MAX || err == 0 || err > 4095)
		throw UsageError{"PORT: 1..4294967295, ERRNO: 1..4095"};
	UniqueFd sender(
	        socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC));
	if (!sender.valid())
		return Fail(Status::FromErrno("netlink socket", errno));
	struct {
		nlmsghdr hdr;
		nlmsgerr error;
	} failure{};
	failure.hdr.nlmsg_len = sizeof(failure);
	failure.hdr.nlmsg_type = NLMSG_ERROR;
	failure.error.error = -static_cast<int>(err);
	failure.error.msg.nlmsg_len = sizeof(failure.error.msg);
	sockaddr_nl to{};
	to.nl_family = AF_NETLINK;
	to.nl_pid = static_cast<uint32_t>(port);
	if (sendto(sender.get(), &failure, sizeof(failure), 0,
	           reinterpret_cast<const sockaddr *>(&to), sizeof(to)) < 0)
		return Fail(Status::FromErrno(
		        "send to port " + std::to_string(port), errno));
	return kExitOk;
}

// Copier options shared by resync and copy.
CopierOptions TakeCopierOptions(Args &args)
{
	CopierOptions copier;
	if (auto v = args.Take("--qd"))
		copier.queue_depth =
		        static_cast<uint32_t>(ParseU64("--qd", *v));
	if (auto v = args.Take("--chunk-kib"))
		copier.chunk_bytes = static_cast<uint32_t>(
		        ParseU64("--chunk-kib", *v) * 1024);
	if (auto v = args.Take("--rate-kibps"))
		copier.rate_limit_kibps = ParseU64("--rate-kibps", *v);
	return copier;
}

int CmdCopy(Args &args)
{
	const uint64_t offset =
	        ParseU64("--offset", args.Take("--offset").value_or("0"));
	const uint64_t length = ParseU64(
	        "--length",
	        args.Take("--length").value_or(std::to_string(UINT64_MAX)));
	const CopierOptions options = TakeCopierOptions(args);
	auto pos = args.Positionals(2, 2);
	auto copier = RegionCopier::Open(pos[0], pos[1], options);
	if (!copier.ok())
		return Fail(copier.status());
	// RegionCopier::Copy() runs at full speed whatever the rate (a resync
	// claim must not be held longer than its copy); PairResync paces its
	// claims instead. So does this: slices of a quarter second of the
	// rate (at least one chunk), each after the bucket has paid for the
	// last one. Without a rate, one Copy() of everything.
	const uint64_t rate = options.rate_limit_kibps * 1024;
	const uint64_t slice =
	        rate ? std::max<uint64_t>(rate / 4 / options.chunk_bytes *
	                                          options.chunk_bytes,
	                                  options.chunk_bytes)
	             : UINT64_MAX;
	const uint64_t end =
	        length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
	TokenBucket bucket(rate, slice);
	const auto t0 = std::chrono::steady_clock::now();
	Status st;
	uint64_t bytes = 0;
	for (uint64_t pos_bytes = offset;
	     st.ok() && pos_bytes < std::min(end, (*copier)->source_bytes());
	     pos_bytes += slice) {
		std::this_thread::sleep_for(bucket.Wait(0));
		st = (*copier)->Copy(pos_bytes,
		                     std::min(slice, end - pos_bytes));
		bytes += (*copier)->batch_bytes();
		bucket.Take((*copier)->batch_bytes());
		if (slice == UINT64_MAX)
			break;
	}
	const double secs = std::chrono::duration<double>(
	                            std::chrono::steady_clock::now() - t0)
	                            .count();
	std::printf("copy source=%s target=%s result=%s bytes=%" PRIu64
	            " seconds=%.3f mb_per_s=%.1f qd=%u chunk_kib=%u direct=%d "
	            "fixed_buffers=%d rate_kibps=%" PRIu64 "\n",
	            Esc(pos[0]).c_str(), Esc(pos[1]).c_str(),
	            st.ok() ? "ok" : "failed", bytes, secs,
	            secs > 0 ? bytes / secs / 1e6 : 0.0, options.queue_depth,
	            options.chunk_bytes / 1024, (*copier)->direct_io(),
	            (*copier)->fixed_buffers(), options.rate_limit_kibps);
	return st.ok() ? kExitOk : Fail(st);
}

int CmdResync(Args &args)
{
	auto source_dev = args.Take("--source-dev");
	auto target_dev = args.Take("--target-dev");
	PairResyncOptions opts;
	opts.copier = TakeCopierOptions(args);
	if (auto v = args.Take("--batch-regions"))
		opts.max_regions_per_claim =
		        static_cast<uint32_t>(ParseU64("--batch-regions", *v));
	auto pos = args.Positionals(2, 2);
	const std::string &pipe_id = pos[0], &source = pos[1];

	auto kernel = NetlinkKernel::Open(g_timeout);
	if (!kernel.ok())
		return Fail(kernel.status());
	auto pipe = (*kernel)->GetPipe(pipe_id);
	if (!pipe.ok())
		return Fail(pipe.status());
	if (!pipe->has_value())
		return Fail(Status::Error(
		        "no pipe " + pipe_id + " in the kernel", ENOENT));
	const KernelPairStatus *pair = nullptr;
	for (const auto &p : (*pipe)->pairs)
		if (p.source == source)
			pair = &p;
	if (pair == nullptr)
		return Fail(Status::Error(
		        "pipe " + pipe_id + " has no pair " + source, ENOENT));
	opts.pipe_id = pipe_id;
	opts.source = source;
	opts.region_bytes = uint64_t{(*pipe)->region_kib} * 1024;
	opts.target_path = target_dev.value_or(pair->target);
	if (source_dev) {
		opts.source_path = *source_dev;
	} else {
		auto dev = BackstorePrimaryDevice(source);
		if (!dev.ok())
			return Fail(dev.status());
		opts.source_path = *dev;
	}

	auto channel = NetlinkResyncChannel::Open(g_timeout);
	if (!channel.ok())
		return Fail(channel.status());
	NetlinkPairClaims claims(channel->get(), pipe_id, source);
	auto resync = PairResync::Create(opts, &claims);
	if (!resync.ok())
		return Fail(resync.status());

	std::atomic<bool> finished{false};
	std::thread reporter([&] {
		while (!finished.load()) {
			for (int i = 0; i < 10 && !finished.load(); ++i)
				std::this_thread::sleep_for(
				        std::chrono::milliseconds(100));
			if (finished.load())
				break;
			const ResyncProgress p = (*resync)->progress();
			std::printf("progress done=%" PRIu64 " total=%" PRIu64
			            " rate=%" PRIu64 "\n",
			            p.done_bytes, p.total_bytes,
			            p.rate_bytes_per_s);
			std::fflush(stdout);
		}
	});
	const auto t0 = std::chrono::steady_clock::now();
	Status st = (*resync)->Run();
	finished = true;
	reporter.join();
	const double secs = std::chrono::duration<double>(
	                            std::chrono::steady_clock::now() - t0)
	                            .count();
	const ResyncProgress p = (*resync)->progress();
	std::printf("resync pipe=%s source=%s result=%s bytes=%" PRIu64
	            " claims=%" PRIu64 " seconds=%.3f mb_per_s=%.1f\n",
	            Esc(pipe_id).c_str(), Esc(source).c_str(),
	            st.ok() ? "clean" : "failed", p.done_bytes, p.claims, secs,
	            secs > 0 ? p.done_bytes / secs / 1e6 : 0.0);
	return st.ok() ? kExitOk : Fail(st);
}

bool MakeItFail()
{
	const char path[] = "/proc/self/make-it-fail";
	const UniqueFd fd(open(path, O_WRONLY | O_CLOEXEC));

	if (fd.valid() && write(fd.get(), "1", 1) == 1)
		return true;
	std::fprintf(stderr, "rp-nlctl: --make-it-fail: %s: %s\n", path,
	             std::strerror(errno));
	return false;
}

} // namespace

int main(int argc, char **argv)
{
	if (argc < 2)
		return Usage("");
	const std::string cmd = argv[1];
	if (cmd == "-h" || cmd == "--help" || cmd == "help") {
		std::fputs(kUsage, stdout);
		return kExitOk;
	}
	try {
		Args args(argc, argv, 2);
		if (auto t = args.Take("--nl-timeout"))
			g_timeout =
			        std::chrono::milliseconds(static_cast<int64_t>(
			                ParseSeconds("--nl-timeout", *t) *
			                1000));
		if (g_timeout.count() <= 0)
			throw UsageError{"--nl-timeout must be positive"};
		// With failslab's (or fail_page_alloc's) task-filter=Y only
		// this process's kernel allocations can then fail: its genl
		// requests run in its context, and the fork and exec that
		// started it are spared.
		if (args.Flag("--make-it-fail") && !MakeItFail())
			return kExitMakeItFail;
		if (cmd == "family")
			return CmdFamily(args);
		if (cmd == "set-pipe")
			return CmdSetPipe(args);
		if (cmd == "del-pipe")
			return CmdDelPipe(args);
		if (cmd == "get")
			return CmdGet(args);
		if (cmd == "pair-state")
			return CmdPairState(args);
		if (cmd == "bitmap")
			return CmdBitmap(args);
		if (cmd == "claim")
			return CmdClaim(args);
		if (cmd == "events")
			return CmdEvents(args);
		if (cmd == "send-error")
			return CmdSendError(args);
		if (cmd == "resync")
			return CmdResync(args);
		if (cmd == "copy")
			return CmdCopy(args);
		return Usage("unknown command " + cmd);
	} catch (const UsageError &e) {
		return Usage(cmd + ": " + e.what);
	} catch (const std::bad_alloc &) {
		// Under failslab's task filter (debug-fault-inject) the kernel
		// refuses this process's brk and mmap too: an error like the
		// kernel's own ENOMEM, not an abort.
		std::fputs("rp-nlctl: out of memory (errno ENOMEM)\n", stderr);
		return 1;
	}
}
