// TempDir: a fresh directory under $TMPDIR for one test, removed with
// everything in it when the test ends.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace replipipe::testing
{

class TempDir
{
public:
	TempDir()
	{
		std::string pattern = (std::filesystem::temp_directory_path() /
		                       "replipipe-test-XXXXXX")
		                              .string();
		char *made = ::mkdtemp(pattern.data());
		path_ = made ? made : "";
	}
	~TempDir()
	{
		std::error_code ec;
		std::filesystem::remove_all(path_, ec);
	}
	TempDir(const TempDir &) = delete;
	TempDir &operator=(const TempDir &) = delete;

	const std::string &path() const { return path_; }
	std::string operator/(const std::string &name) const
	{
		return path_ + "/" + name;
	}
	// Writes text to path()/name, creating parent directories.
	void Write(const std::string &name, const std::string &text) const
	{
		std::filesystem::path p = path_ + "/" + name;
		std::filesystem::create_directories(p.parent_path());
		std::ofstream(p) << text;
	}
	std::string Read(const std::string &name) const
	{
		std::ifstream in(path_ + "/" + name);
		return std::string(std::istreambuf_iterator<char>(in), {});
	}

private:
	std::string path_;
};

} // namespace replipipe::testing
