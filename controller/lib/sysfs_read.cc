#include "sysfs_read.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <system_error>

namespace replipipe
{

namespace fs = std::filesystem;

std::string ReadFirstLine(const fs::path &path)
{
	std::ifstream in(path);
	if (!in)
		return "";
	std::string s;
	std::getline(in, s);
	while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
		s.pop_back();
	return s;
}

std::vector<fs::path> SortedEntries(const fs::path &dir)
{
	std::vector<fs::path> out;
	std::error_code ec;
	for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
	     it.increment(ec))
		out.push_back(it->path());
	std::sort(out.begin(), out.end());
	return out;
}

} // namespace replipipe
