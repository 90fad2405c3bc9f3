#include "control_protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "control_client.h"
#include "test_dir_fake.h"
#include "unique_fd.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace replipipe
{
namespace
{

using json = nlohmann::json;

ControlRequest RoundTrip(const ControlRequest &request)
{
	auto decoded = DecodeRequest(EncodeRequest(request));
	EXPECT_TRUE(decoded.ok()) << decoded.status().message();
	return decoded.ok() ? *decoded : ControlRequest{};
}

CreateOrModifyCall SampleCall()
{
	CreateOrModifyCall call;
	call.pipe_element_name = "db";
	call.source_system = "localhost";
	call.target_system = "backup1";
	call.goal = "instance of CIM_SettingData { Mode = \"Asynchronous\"; };";
	return call;
}

TEST(ControlProtocol, NullEndpointsStayNull)
{
	ControlRequest request;
	request.op = ControlOp::kCreateOrModify;
	request.call = SampleCall();
	ControlRequest back = RoundTrip(request);
	EXPECT_EQ(back.op, ControlOp::kCreateOrModify);
	EXPECT_FALSE(back.call.source_endpoints.has_value());
	EXPECT_FALSE(back.call.target_endpoints.has_value());
	EXPECT_FALSE(back.call.replication_pipe.has_value());
	EXPECT_EQ(back.call.pipe_element_name, "db");
	EXPECT_EQ(back.call.goal, request.call.goal);
	// On the wire NULL is an explicit null.
	json j = json::parse(EncodeRequest(request));
	EXPECT_TRUE(j.at("SourceEndpoint").is_null());
	EXPECT_TRUE(j.at("ReplicationPipe").is_null());
}

TEST(ControlProtocol, EmptyArraysAreNotNull)
{
	ControlRequest request;
	request.op = ControlOp::kCreateOrModify;
	request.call = SampleCall();
	request.call.source_endpoints.emplace();
	request.call.target_endpoints.emplace();
	request.call.replication_pipe = "replipipe:1234";
	ControlRequest back = RoundTrip(request);
	ASSERT_TRUE(back.call.source_endpoints.has_value());
	ASSERT_TRUE(back.call.target_endpoints.has_value());
	EXPECT_TRUE(back.call.source_endpoints->empty());
	EXPECT_TRUE(back.call.target_endpoints->empty());
	EXPECT_EQ(back.call.replication_pipe, "replipipe:1234");
}

TEST(ControlProtocol, EndpointsKeepOrderAndQuotes)
{
	ControlRequest request;
	request.op = ControlOp::kCreateOrModify;
	request.call = SampleCall();
	request.call.source_endpoints = std::vector<std::string>{
	        "replipipe_0/a", "CIM_ProtocolEndpoint.Name=\"replipipe_0/b\""};
	request.call.target_endpoints =
	        std::vector<std::string>{"/dev/sdb", "/dev/sdc"};
	ControlRequest back = RoundTrip(request);
	EXPECT_EQ(back.call.source_endpoints, request.call.source_endpoints);
	EXPECT_EQ(back.call.target_endpoints, request.call.target_endpoints);
}

TEST(ControlProtocol, AbsentKeysMeanNull)
{
	auto decoded = DecodeRequest(
	        R"({"v":1,"op":"create_or_modify","SourceSystem":"h",)"
	        R"("TargetSystem":"t","SourceEndpoint":[]})");
	ASSERT_TRUE(decoded.ok()) << decoded.status().message();
	EXPECT_TRUE(decoded->call.source_endpoints.has_value());
	EXPECT_FALSE(decoded->call.target_endpoints.has_value());
	EXPECT_EQ(decoded->call.pipe_element_name, "");
	EXPECT_EQ(decoded->call.goal, "");
}

TEST(ControlProtocol, RejectsMalformedRequests)
{
	const char *bad[] = {
	        "",
	        "not json",
	        "[1,2]",
	        R"({"op":"list"})",                   // no version
	        R"({"v":2,"op":"list"})",             // future version
	        R"({"v":1})",                         // no op
	        R"({"v":1,"op":"frobnicate"})",       // unknown op
	        R"({"v":1,"op":"list","extra":1})",   // unknown field
	        R"({"v":1,"op":"delete"})",           // no pipe
	        R"({"v":1,"op":"delete","pipe":""})", // empty pipe
	        R"({"v":1,"op":"create_or_modify","SourceEndpoints":[]})",
	        R"({"v":1,"op":"create_or_modify","SourceEndpoint":"x"})",
	        R"({"v":1,"op":"create_or_modify","SourceEndpoint":[1]})",
	        R"({"v":1,"op":"create_or_modify","Goal":5})",
	};
	for (const char *line : bad)
		EXPECT_FALSE(DecodeRequest(line).ok()) << line;
}

TEST(ControlProtocol, UnknownFieldIsNamed)
{
	auto decoded = DecodeRequest(
	        R"({"v":1,"op":"create_or_modify","SourceEndpoints":[]})");
	ASSERT_FALSE(decoded.ok());
	EXPECT_NE(decoded.status().message().find("SourceEndpoints"),
	          std::string::npos);
}

TEST(ControlProtocol, OtherOpsRoundTrip)
{
	ControlRequest pause;
	pause.op = ControlOp::kPause;
	pause.pipe = "db";
	pause.pair = "replipipe_0/a";
	ControlRequest back = RoundTrip(pause);
	EXPECT_EQ(back.op, ControlOp::kPause);
	EXPECT_EQ(back.pipe, "db");
	EXPECT_EQ(back.pair, "replipipe_0/a");

	ControlRequest status;
	status.op = ControlOp::kStatus;
	back = RoundTrip(status);
	EXPECT_EQ(back.op, ControlOp::kStatus);
	EXPECT_FALSE(back.pipe.has_value());

	for (ControlOp op : {ControlOp::kList, ControlOp::kEvents}) {
		ControlRequest r;
		r.op = op;
		EXPECT_EQ(RoundTrip(r).op, op);
	}
}

TEST(ControlProtocol, ReplyRoundTrip)
{
	ControlReply reply;
	reply.return_value = ReturnValue::kCompleted;
	reply.replication_pipe = "CIM_NetworkPipe.InstanceID=\"replipipe:x\"";
	ControlPipe pipe;
	pipe.ref = reply.replication_pipe;
	pipe.instance_id = "replipipe:x";
	pipe.name = "db";
	pipe.source_system = "h";
	pipe.target_system = "t";
	pipe.mode = "Synchronous";
	pipe.in_kernel = true;
	ControlPair pair;
	pair.source = "replipipe_0/a";
	pair.target = "/dev/sdb";
	pair.state = "Syncing";
	pair.resync = {100, 1000, 50, true};
	pair.dirty_regions = 7;
	pipe.pairs.push_back(pair);
	reply.pipes.push_back(pipe);

	auto back = DecodeReply(EncodeReply(reply));
	ASSERT_TRUE(back.ok()) << back.status().message();
	EXPECT_TRUE(back->ok);
	EXPECT_EQ(back->return_value, ReturnValue::kCompleted);
	EXPECT_EQ(back->replication_pipe, reply.replication_pipe);
	ASSERT_EQ(back->pipes.size(), 1u);
	const ControlPipe &p = back->pipes[0];
	EXPECT_EQ(p.name, "db");
	EXPECT_TRUE(p.in_kernel);
	ASSERT_EQ(p.pairs.size(), 1u);
	EXPECT_EQ(p.pairs[0].state, "Syncing");
	EXPECT_EQ(p.pairs[0].resync.done_bytes, 100u);
	EXPECT_EQ(p.pairs[0].resync.total_bytes, 1000u);
	EXPECT_EQ(p.pairs[0].resync.rate_bytes_per_s, 50u);
	EXPECT_EQ(p.pairs[0].dirty_regions, 7u);
}

TEST(ControlProtocol, StatusJsonHasContractKeys)
{
	ControlPipe pipe;
	pipe.pairs.emplace_back();
	json j = ControlPipeToJson(pipe);
	for (const char *key : {"ref", "instance_id", "name", "source_system",
	                        "target_system", "mode", "pairs"})
		EXPECT_TRUE(j.contains(key)) << key;
	const json &pair = j["pairs"][0];
	for (const char *key : {"source", "target", "state", "resync"})
		EXPECT_TRUE(pair.contains(key)) << key;
	for (const char *key :
	     {"done_bytes", "total_bytes", "rate_bytes_per_s"})
		EXPECT_TRUE(pair["resync"].contains(key)) << key;
}

// A failing pair's resync: how many jobs failed in a row, the last one's
// message (whole) and when the next may start go to the CLI and back.
TEST(ControlProtocol, ResyncFailureRoundTrips)
{
	const std::string message =
	        "resync pipe x pair replipipe_0/a: /dev/rp-target is block "
	        "device 1:2 but the kernel mirrors block device 1:1 (the path "
	        "was re-pointed since the pipe was set); not copying \"q\" " +
	        std::string(2000, 'm');
	ControlReply reply;
	ControlPipe pipe;
	pipe.instance_id = "replipipe:x";
	ControlPair failing;
	failing.source = "replipipe_0/a";
	failing.state = "Syncing";
	failing.resync.total_bytes = 32 << 20;
	failing.resync.failures = 3;
	failing.resync.last_error = message;
	failing.resync.retry_in_s = 8;
	pipe.pairs.push_back(failing);
	ControlPair due = failing;
	due.source = "replipipe_0/b";
	due.resync.retry_in_s = 0; // due: not the same as none
	pipe.pairs.push_back(due);
	ControlPair running;
	running.source = "replipipe_0/c";
	running.resync = {5, 10, 1, true};
	running.resync.failures = 1;
	running.resync.last_error = "write: EIO";
	pipe.pairs.push_back(running);
	reply.pipes.push_back(pipe);

	const std::string line = EncodeReply(reply);
	json j = json::parse(line);
	json resync = j["pipes"][0]["pairs"][0]["resync"];
	EXPECT_EQ(resync["failures"], 3);
	EXPECT_EQ(resync["last_error"], message);
	EXPECT_EQ(resync["retry_in_s"], 8);
	EXPECT_EQ(j["pipes"][0]["pairs"][1]["resync"]["retry_in_s"], 0);
	EXPECT_TRUE(
	        j["pipes"][0]["pairs"][2]["resync"]["retry_in_s"].is_null());

	auto back = DecodeReply(line);
	ASSERT_TRUE(back.ok()) << back.status().message();
	ASSERT_EQ(back->pipes.size(), 1u);
	ASSERT_EQ(back->pipes[0].pairs.size(), 3u);
	const ControlResync &a = back->pipes[0].pairs[0].resync;
	EXPECT_EQ(a.total_bytes, 32u << 20);
	EXPECT_FALSE(a.running);
	EXPECT_EQ(a.failures, 3u);
	EXPECT_EQ(a.last_error, message);
	EXPECT_EQ(a.retry_in_s, std::optional<uint64_t>(8));
	EXPECT_EQ(back->pipes[0].pairs[1].resync.retry_in_s,
	          std::optional<uint64_t>(0));
	const ControlResync &c = back->pipes[0].pairs[2].resync;
	EXPECT_TRUE(c.running);
	EXPECT_EQ(c.done_bytes, 5u);
	EXPECT_EQ(c.failures, 1u);
	EXPECT_EQ(c.last_error, "write: EIO");
	EXPECT_FALSE(c.retry_in_s.has_value());
}

// The keys of the CLI contract stay as they were, the new ones beside
// them; a reply of a daemon that sends none of the new keys still parses:
// no failure, no retry.
TEST(ControlProtocol, ResyncWithoutFailureKeysParses)
{
	ControlPipe empty;
	empty.pairs.emplace_back();
	json resync = ControlPipeToJson(empty)["pairs"][0]["resync"];
	for (const char *key :
	     {"done_bytes", "total_bytes", "rate_bytes_per_s", "running",
	      "failures", "last_error", "retry_in_s"})
		EXPECT_TRUE(resync.contains(key)) << key;
	EXPECT_EQ(resync["failures"], 0);
	EXPECT_EQ(resync["last_error"], "");
	EXPECT_TRUE(resync["retry_in_s"].is_null());

	const std::string old_daemon =
	        R"({"ok": true, "pipes": [{"ref": "r", "instance_id": "i",)"
	        R"( "pairs": [{"source": "replipipe_0/a", "state": "Syncing",)"
	        R"( "resync": {"done_bytes": 1, "total_bytes": 4,)"
	        R"( "rate_bytes_per_s": 2, "running": false}}]}]})";
	auto back = DecodeReply(old_daemon);
	ASSERT_TRUE(back.ok()) << back.status().message();
	ASSERT_EQ(back->pipes.size(), 1u);
	ASSERT_EQ(back->pipes[0].pairs.size(), 1u);
	const ControlResync &r = back->pipes[0].pairs[0].resync;
	EXPECT_EQ(r.done_bytes, 1u);
	EXPECT_EQ(r.total_bytes, 4u);
	EXPECT_EQ(r.rate_bytes_per_s, 2u);
	EXPECT_FALSE(r.running);
	EXPECT_EQ(r.failures, 0u);
	EXPECT_EQ(r.last_error, "");
	EXPECT_FALSE(r.retry_in_s.has_value());

	// A malformed new key is an error of the reply, as with old ones.
	json bad = json::parse(old_daemon);
	bad["pipes"][0]["pairs"][0]["resync"]["retry_in_s"] = "soon";
	EXPECT_FALSE(DecodeReply(bad.dump()).ok());
}

TEST(ControlProtocol, MethodReplyCarriesReturnValue)
{
	MethodOutcome failed{ReturnValue::kInvalidParameter, "",
	                     "unknown property Foo"};
	ControlReply reply = MethodReply(failed);
	EXPECT_FALSE(reply.ok);
	auto back = DecodeReply(EncodeReply(reply));
	ASSERT_TRUE(back.ok());
	EXPECT_FALSE(back->ok);
	EXPECT_EQ(back->return_value, ReturnValue::kInvalidParameter);
	EXPECT_EQ(back->error, "unknown property Foo");

	MethodOutcome busy{ReturnValue::kBusy, "", "pipe busy"};
	EXPECT_EQ(MethodReply(busy).code, kCodeBusy);
}

TEST(ControlProtocol, ErrorReplyAndMalformedReplies)
{
	auto back = DecodeReply(EncodeReply(
	        ErrorReply(kCodePermissionDenied, "permission denied: x")));
	ASSERT_TRUE(back.ok());
	EXPECT_FALSE(back->ok);
	EXPECT_EQ(back->code, kCodePermissionDenied);
	EXPECT_FALSE(back->return_value.has_value());
	EXPECT_FALSE(DecodeReply("{}").ok());
	EXPECT_FALSE(DecodeReply(R"({"ok":true,"pipes":5})").ok());
	EXPECT_FALSE(DecodeReply(R"({"ok":"yes"})").ok());
}

TEST(ControlProtocol, EventRoundTrip)
{
	ControlEvent event;
	event.type = "pair_state";
	event.time = NowRfc3339();
	event.instance_id = "replipipe:x";
	event.source = "replipipe_0/a";
	event.state = "InSync";
	auto back = DecodeEvent(EncodeEvent(event));
	ASSERT_TRUE(back.ok());
	EXPECT_EQ(back->type, "pair_state");
	EXPECT_EQ(back->time, event.time);
	EXPECT_EQ(back->state, "InSync");
	EXPECT_EQ(back->source, "replipipe_0/a");
	EXPECT_FALSE(DecodeEvent(R"({"time":"x"})").ok());
	EXPECT_EQ(event.time.size(), 24u); // 2026-11-25T16:03:07.123Z
}

// `events --json` prints the daemon's line as is: its keys in docs/cli.md's
// order, not sorted ("event", "instance_id", ..., "time" before).
TEST(ControlProtocol, AnEventKeepsTheDocumentedOrderOfKeys)
{
	ControlEvent event;
	event.type = "pair_state";
	event.time = "2026-11-25T16:03:07.123Z";
	event.instance_id = "replipipe:x";
	event.name = "db";
	event.source = "replipipe_0/vol1";
	event.target = "/dev/sdb";
	event.state = "InSync";
	EXPECT_EQ(EncodeEvent(event),
	          R"({"event":"pair_state","time":"2026-11-25T16:03:07.123Z",)"
	          R"("instance_id":"replipipe:x","name":"db",)"
	          R"("source":"replipipe_0/vol1","target":"/dev/sdb",)"
	          R"("state":"InSync"})");
}

// An error that quotes a caller's bytes may not be UTF-8: the reply (and an
// event) is still encoded, with U+FFFD for the bad bytes, instead of
// throwing out of the connection thread.
TEST(ControlProtocol, InvalidUtf8IsEncodedNotThrown)
{
	const std::string bad = "Mode \"\xed\xa0\x80\" is not a mode \xff";
	std::string line;
	ASSERT_NO_THROW(line = EncodeReply(ErrorReply(kCodeBadRequest,
	                                              "bad request: " + bad)));
	auto back = DecodeReply(line);
	ASSERT_TRUE(back.ok()) << back.status().message();
	EXPECT_EQ(back->error, "bad request: Mode \"\xef\xbf\xbd\xef\xbf\xbd"
	                       "\xef\xbf\xbd\" is not a mode \xef\xbf\xbd");

	ControlEvent event;
	event.type = "resync_failed";
	event.message = bad;
	ASSERT_NO_THROW(line = EncodeEvent(event));
	EXPECT_TRUE(DecodeEvent(line).ok()) << line;
}

TEST(ControlProtocol, OverlongLineIsRefused)
{
	std::string line(kMaxLineBytes + 1, ' ');
	EXPECT_FALSE(DecodeRequest(line).ok());
	EXPECT_FALSE(DecodeEvent(line).ok());
	EXPECT_FALSE(DecodeReply(std::string(kMaxReplyBytes + 1, ' ')).ok());
}

// The status of a host with thousands of pairs is one reply line of
// megabytes. With the requests' 1 MiB limit on replies too, `status` and
// `list` failed there with EMSGSIZE, which the CLI reports as a bad reply.
TEST(ControlProtocol, AReplyOfManyPipesReachesTheClient)
{
	testing::TempDir dir;
	const std::string path = dir / "sock";
	UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	ASSERT_TRUE(listener.valid());
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	ASSERT_LT(path.size(), sizeof(addr.sun_path));
	std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
	ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr *>(&addr),
	                 sizeof(addr)),
	          0);
	ASSERT_EQ(::listen(listener.get(), 1), 0);

	ControlReply big;
	for (int i = 0; i < 4000; i++) {
		ControlPipe pipe;
		pipe.instance_id = "replipipe:" + std::to_string(i);
		pipe.name = "pipe-" + std::to_string(i);
		ControlPair pair;
		pair.source = "replipipe_0/volume-" + std::to_string(i);
		pair.target = "/dev/disk/by-id/wwn-0x6001405" +
		              std::to_string(1000000 + i);
		pair.state = "InSync";
		pipe.pairs.push_back(pair);
		big.pipes.push_back(pipe);
	}
	const std::string line = EncodeReply(big) + "\n";
	ASSERT_GT(line.size(), kMaxLineBytes);

	// Bounded on every step: a client that stops reading must not hang
	// the test.
	std::thread server([&] {
		pollfd pfd{listener.get(), POLLIN, 0};
		if (::poll(&pfd, 1, 5000) != 1)
			return;
		UniqueFd conn(::accept4(listener.get(), nullptr, nullptr,
		                        SOCK_CLOEXEC));
		if (!conn.valid())
			return;
		timeval five{5, 0};
		::setsockopt(conn.get(), SOL_SOCKET, SO_SNDTIMEO, &five,
		             sizeof(five));
		LineReader request(conn.get());
		(void)request.ReadLine(std::chrono::milliseconds(5000));
		(void)WriteAllToSocket(conn.get(), line);
	});
	Result<ControlReply> reply = Status::Error("not connected", ENOTCONN);
	if (auto client = ControlClient::Connect(path, std::chrono::seconds(5));
	    client.ok()) {
		ControlRequest list;
		list.op = ControlOp::kList;
		reply = client->Call(list, std::chrono::seconds(30));
	}
	server.join();
	ASSERT_TRUE(reply.ok()) << reply.status().message();
	ASSERT_EQ(reply->pipes.size(), 4000u);
	EXPECT_EQ(reply->pipes[3999].name, "pipe-3999");
}

} // namespace
} // namespace replipipe
