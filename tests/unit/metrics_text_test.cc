// RenderMetrics(): the Prometheus text exposition of a status snapshot.
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "metrics_text.h"
#include "test_dir_fake.h"

namespace replipipe
{
namespace
{

std::vector<std::string> Lines(const std::string &text)
{
	std::vector<std::string> lines;
	std::istringstream in(text);
	for (std::string line; std::getline(in, line);)
		lines.push_back(line);
	return lines;
}

// The samples of the exposition, "name{labels}" -> value text.
std::map<std::string, std::string> Samples(const std::string &text)
{
	std::map<std::string, std::string> samples;
	for (const std::string &line : Lines(text)) {
		if (line.empty() || line[0] == '#')
			continue;
		size_t sp = line.rfind(' ');
		samples[line.substr(0, sp)] = line.substr(sp + 1);
	}
	return samples;
}

ControlPipe TwoPairPipe()
{
	ControlPipe pipe;
	pipe.ref = "CIM_NetworkPipe.InstanceID=\"replipipe:1111\"";
	pipe.instance_id = "replipipe:1111";
	pipe.name = "db";
	pipe.source_system = "localhost";
	pipe.target_system = "backup1";
	pipe.mode = "Asynchronous";
	pipe.failure_policy = "Degrade";
	pipe.max_lag_kib = 65536;
	pipe.region_kib = 64;
	pipe.in_kernel = true;
	ControlPair a;
	a.source = "replipipe_0/v1";
	a.target = "/dev/ram1";
	a.state = "InSync";
	a.regions = 1024;
	a.source_bytes = 64 << 20;
	a.writes_mirrored = 1234;
	a.bytes_mirrored = 5678901;
	a.target_errors = 2;
	a.lag_bytes = 4096;
	a.resync.failures = 3; // its target refused, say
	ControlPair b;
	b.source = "replipipe_0/v2";
	b.target = "/dev/ram2";
	b.state = "Syncing";
	b.regions = 3;
	b.dirty_regions = 3;
	b.source_bytes = 100 * 1024; // 3 regions of 64 KiB cover 192 KiB
	b.resync = {4096, 100 * 1024, 8192, true};
	pipe.pairs = {a, b};
	return pipe;
}

const std::string kPairA = "pipe=\"replipipe:1111\",pipe_name=\"db\","
                           "source=\"replipipe_0/v1\",target=\"/dev/ram1\"";
const std::string kPairB = "pipe=\"replipipe:1111\",pipe_name=\"db\","
                           "source=\"replipipe_0/v2\",target=\"/dev/ram2\"";

TEST(MetricsText, EscapesLabelValues)
{
	EXPECT_EQ(EscapeLabelValue("plain /dev/sdb"), "plain /dev/sdb");
	EXPECT_EQ(EscapeLabelValue("a\\b"), "a\\\\b");
	EXPECT_EQ(EscapeLabelValue("say \"hi\""), "say \\\"hi\\\"");
	EXPECT_EQ(EscapeLabelValue("two\nlines"), "two\\nlines");
	EXPECT_EQ(EscapeLabelValue("\\\"\n"), "\\\\\\\"\\n");
}

TEST(MetricsText, EveryFamilyHasHelpAndTypeOnceBeforeItsSamples)
{
	std::string text = RenderMetrics({TwoPairPipe()});
	ASSERT_FALSE(text.empty());
	EXPECT_EQ(text.back(), '\n');
	const std::regex help(R"(# HELP ([a-z_]+) \S.*)");
	const std::regex type(R"(# TYPE ([a-z_]+) (counter|gauge))");
	const std::regex sample(R"(([a-z_]+)(\{[^{}]*\})? [0-9]+)");
	std::set<std::string> seen;
	std::string helped, current;
	std::smatch m;
	for (const std::string &line : Lines(text)) {
		if (std::regex_match(line, m, help)) {
			EXPECT_TRUE(seen.insert(m[1]).second)
			        << "family declared twice: " << line;
			helped = m[1];
		} else if (std::regex_match(line, m, type)) {
			EXPECT_EQ(m[1], helped)
			        << "TYPE without HELP: " << line;
			current = m[1];
			// Counters and only counters end in _total.
			bool total = current.ends_with("_total");
			EXPECT_EQ(m[2] == "counter", total) << line;
		} else if (std::regex_match(line, m, sample)) {
			EXPECT_EQ(m[1], current)
			        << "sample outside its family: " << line;
		} else {
			ADD_FAILURE() << "not an exposition line: " << line;
		}
	}
	for (const char *family :
	     {"replipipe_pipes", "replipipe_pairs", "replipipe_pair_state",
	      "replipipe_pair_dirty_bytes", "replipipe_pair_resync_done_bytes",
	      "replipipe_pair_resync_total_bytes",
	      "replipipe_pair_resync_rate_bytes_per_second",
	      "replipipe_pair_resync_failures",
	      "replipipe_pair_mirrored_writes_total",
	      "replipipe_pair_mirrored_bytes_total",
	      "replipipe_pair_target_errors_total", "replipipe_pair_lag_bytes"})
		EXPECT_TRUE(seen.count(family)) << family;
}

TEST(MetricsText, PairStateIsOneHotOverTheFourStates)
{
	ControlPipe pipe = TwoPairPipe();
	pipe.pairs[1].state = "Unknown"; // the kernel does not know it
	auto samples = Samples(RenderMetrics({pipe}));
	for (const char *state : {"Syncing", "InSync", "Degraded", "Paused"}) {
		std::string a = "replipipe_pair_state{" + kPairA + ",state=\"" +
		                state + "\"}";
		std::string b = "replipipe_pair_state{" + kPairB + ",state=\"" +
		                state + "\"}";
		ASSERT_TRUE(samples.count(a)) << a;
		ASSERT_TRUE(samples.count(b)) << b;
		EXPECT_EQ(samples[a],
		          std::string(state) == "InSync" ? "1" : "0")
		        << a;
		EXPECT_EQ(samples[b], "0") << b;
	}
	size_t state_samples = 0;
	for (const auto &[key, value] : samples)
		state_samples += key.starts_with("replipipe_pair_state{");
	EXPECT_EQ(state_samples, 8u);
}

TEST(MetricsText, FiguresAreTheStatusSnapshots)
{
	auto samples = Samples(RenderMetrics({TwoPairPipe()}));
	auto at = [&samples](const std::string &name,
	                     const std::string &labels) {
		auto it = samples.find(name + "{" + labels + "}");
		return it == samples.end() ? std::string("missing")
		                           : it->second;
	};
	EXPECT_EQ(samples["replipipe_pipes"], "1");
	EXPECT_EQ(samples["replipipe_pairs"], "2");
	EXPECT_EQ(at("replipipe_pair_mirrored_writes_total", kPairA), "1234");
	EXPECT_EQ(at("replipipe_pair_mirrored_bytes_total", kPairA), "5678901");
	EXPECT_EQ(at("replipipe_pair_target_errors_total", kPairA), "2");
	EXPECT_EQ(at("replipipe_pair_lag_bytes", kPairA), "4096");
	EXPECT_EQ(at("replipipe_pair_source_bytes", kPairA), "67108864");
	EXPECT_EQ(at("replipipe_pair_dirty_bytes", kPairA), "0");
	// 3 dirty regions of 64 KiB, capped at the 100 KiB source.
	EXPECT_EQ(at("replipipe_pair_dirty_bytes", kPairB), "102400");
	EXPECT_EQ(at("replipipe_pair_resync_done_bytes", kPairB), "4096");
	EXPECT_EQ(at("replipipe_pair_resync_total_bytes", kPairB), "102400");
	EXPECT_EQ(at("replipipe_pair_resync_rate_bytes_per_second", kPairB),
	          "8192");
	EXPECT_EQ(at("replipipe_pair_resync_running", kPairB), "1");
	EXPECT_EQ(at("replipipe_pair_resync_running", kPairA), "0");
	EXPECT_EQ(at("replipipe_pair_resync_failures", kPairA), "3");
	EXPECT_EQ(at("replipipe_pair_resync_failures", kPairB), "0");
	EXPECT_EQ(at("replipipe_pipe_max_lag_bytes",
	             "pipe=\"replipipe:1111\",pipe_name=\"db\""),
	          "67108864");
	EXPECT_EQ(at("replipipe_pipe_in_kernel",
	             "pipe=\"replipipe:1111\",pipe_name=\"db\""),
	          "1");
	EXPECT_EQ(at("replipipe_pipe_info",
	             "pipe=\"replipipe:1111\",pipe_name=\"db\",source_system="
	             "\"localhost\",target_system=\"backup1\",mode="
	             "\"Asynchronous\",failure_policy=\"Degrade\""),
	          "1");
}

TEST(MetricsText, NamesWithQuotesBackslashesAndNewlinesAreEscaped)
{
	ControlPipe pipe = TwoPairPipe();
	pipe.name = "a \"quoted\\name\"\nline2";
	pipe.pairs.resize(1);
	std::string text = RenderMetrics({pipe});
	EXPECT_NE(text.find("replipipe_pair_mirrored_bytes_total{pipe="
	                    "\"replipipe:1111\",pipe_name=\"a \\\"quoted\\\\"
	                    "name\\\"\\nline2\",source="),
	          std::string::npos)
	        << text;
	// The raw newline never reaches the output inside a label.
	for (const std::string &line : Lines(text))
		EXPECT_FALSE(line == "line2\"" || line.starts_with("line2"))
		        << line;
}

TEST(MetricsText, NoPipesStillHasTheDaemonGauges)
{
	auto samples = Samples(RenderMetrics({}));
	EXPECT_EQ(samples["replipipe_pipes"], "0");
	EXPECT_EQ(samples["replipipe_pairs"], "0");
	EXPECT_EQ(samples.count("replipipe_build_info{version=\"" +
	                        std::string(REPLIPIPE_VERSION) + "\"}"),
	          1u);
}

// The reference checker, when installed (tools/setup-deps.sh installs the
// Debian package prometheus, which has it).
TEST(MetricsText, PromtoolCheckMetricsAccepts)
{
	if (std::system("command -v promtool > /dev/null 2>&1") != 0)
		GTEST_SKIP() << "promtool not installed (package prometheus)";
	ControlPipe odd = TwoPairPipe();
	odd.instance_id = "replipipe:2222";
	odd.name = "we\"ird\\\nname";
	odd.mode = "Synchronous";
	testing::TempDir dir;
	dir.Write("scrape.prom", RenderMetrics({TwoPairPipe(), odd}));
	std::string cmd = "promtool check metrics < " + (dir / "scrape.prom") +
	                  " > " + (dir / "out") + " 2>&1";
	int rc = std::system(cmd.c_str());
	EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << dir.Read("out");
	EXPECT_EQ(dir.Read("out"), "");
}

} // namespace
} // namespace replipipe
