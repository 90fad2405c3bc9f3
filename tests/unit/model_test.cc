#include "model.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace replipipe
{
namespace
{

constexpr const char *kUuid = "0b5b2a3e-8c6f-4d2a-9f59-2f7c1a0d4e11";

PipeRecord SamplePipe()
{
	PipeRecord p;
	p.instance_id = kUuid;
	p.name = "db";
	p.source_system = "node1";
	p.target_system = "node2";
	p.settings.mode = Mode::kAsynchronous;
	p.settings.failure_policy = FailurePolicy::kFailIO;
	p.settings.max_lag_kib = 4096;
	p.settings.resync_rate_kibps = 100;
	p.settings.region_kib = 128;
	p.settings.element_name = "goal name";
	p.pairs = {{"replipipe_0/a", "/dev/sdb"},
	           {"replipipe_0/b", "/dev/sdc"}};
	return p;
}

TEST(Model, Names)
{
	EXPECT_STREQ(ModeName(Mode::kAsynchronous), "Asynchronous");
	EXPECT_STREQ(FailurePolicyName(FailurePolicy::kFailIO), "FailIO");
	EXPECT_STREQ(PairStateName(PairState::kInSync), "InSync");
	EXPECT_STREQ(PairStateName(PairState::kPaused), "Paused");
	EXPECT_EQ(ParseModeName("synchronous"), Mode::kSynchronous);
	EXPECT_EQ(ParseFailurePolicyName("degrade"), FailurePolicy::kDegrade);
	EXPECT_EQ(ParsePairStateName("Degraded"), PairState::kDegraded);
	EXPECT_FALSE(ParseModeName("x"));
}

TEST(Model, JsonRoundTrip)
{
	PipeRecord p = SamplePipe();
	auto back = PipeFromJson(PipeToJson(p));
	ASSERT_TRUE(back.ok()) << back.status().message();
	EXPECT_EQ(*back, p);
	// The text form too.
	auto again = PipeFromJson(nlohmann::json::parse(PipeToJson(p).dump()));
	ASSERT_TRUE(again.ok());
	EXPECT_EQ(*again, p);
}

TEST(Model, JsonErrorsNameTheField)
{
	nlohmann::json j = PipeToJson(SamplePipe());
	j["settings"]["region_kib"] = 48;
	auto r = PipeFromJson(j);
	ASSERT_FALSE(r.ok());
	EXPECT_NE(r.status().message().find("region_kib"), std::string::npos);
	EXPECT_NE(r.status().message().find(kUuid), std::string::npos);

	j = PipeToJson(SamplePipe());
	j["pairs"][1].erase("target");
	r = PipeFromJson(j);
	ASSERT_FALSE(r.ok());
	EXPECT_NE(r.status().message().find("pair 1: missing \"target\""),
	          std::string::npos)
	        << r.status().message();

	j = PipeToJson(SamplePipe());
	j["instance_id"] = "not-a-uuid";
	EXPECT_FALSE(PipeFromJson(j).ok());
	j = PipeToJson(SamplePipe());
	j["settings"]["mode"] = "Bogus";
	EXPECT_FALSE(PipeFromJson(j).ok());
	j = PipeToJson(SamplePipe());
	j["settings"]["max_lag_kib"] = -1;
	EXPECT_FALSE(PipeFromJson(j).ok());
}

TEST(Model, KernelSpec)
{
	KernelPipeSpec spec = ToKernelSpec(SamplePipe());
	EXPECT_EQ(spec.id, kUuid);
	EXPECT_EQ(spec.name, "db");
	EXPECT_EQ(spec.mode, Mode::kAsynchronous);
	EXPECT_EQ(spec.failure_policy, FailurePolicy::kFailIO);
	EXPECT_EQ(spec.max_lag_kib, 4096u);
	EXPECT_EQ(spec.region_kib, 128u);
	ASSERT_EQ(spec.pairs.size(), 2u);
	EXPECT_EQ(spec.pairs[1].source, "replipipe_0/b");
	EXPECT_EQ(spec.pairs[1].target, "/dev/sdc");
	EXPECT_FALSE(spec.pairs[0].assume_clean);
}

TEST(Model, References)
{
	EXPECT_EQ(PipeReference(kUuid),
	          std::string("CIM_NetworkPipe.InstanceID=\"replipipe:") +
	                  kUuid + "\"");
	for (std::string text :
	     {PipeReference(kUuid), std::string("replipipe:") + kUuid,
	      std::string(kUuid),
	      std::string("//h/root/cimv2:CIM_NetworkPipe.InstanceID="
	                  "\"replipipe:") +
	              kUuid + "\"",
	      std::string("cim_networkpipe . instanceid = \"replipipe:") +
	              kUuid + "\""}) {
		auto id = ParsePipeIdentifier(text);
		ASSERT_TRUE(id.ok()) << text << ": " << id.status().message();
		ASSERT_TRUE(id->has_value()) << text;
		EXPECT_EQ(**id, kUuid);
	}
	// Names are not identifiers.
	auto name = ParsePipeIdentifier("db.mirror");
	ASSERT_TRUE(name.ok());
	EXPECT_FALSE(name->has_value());
	// Broken references are errors.
	EXPECT_FALSE(
	        ParsePipeIdentifier("CIM_NetworkPipe.InstanceID=\"x\"").ok());
	EXPECT_FALSE(
	        ParsePipeIdentifier("CIM_NetworkPipe.InstanceID=\"open").ok());
	EXPECT_FALSE(ParsePipeIdentifier("CIM_NetworkPipe.Name=\"replipipe:" +
	                                 std::string(kUuid) + "\"")
	                     .ok());
}

TEST(Model, NewUuid)
{
	std::string a = NewUuid(), b = NewUuid();
	EXPECT_TRUE(IsUuidText(a)) << a;
	EXPECT_NE(a, b);
	EXPECT_FALSE(IsUuidText("0B5B2A3E-8C6F-4D2A-9F59-2F7C1A0D4E11"));
}

} // namespace
} // namespace replipipe
