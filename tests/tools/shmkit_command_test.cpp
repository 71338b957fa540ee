// Tests the `shmkit` command end to end, as a separate process: create, info (text and --json,
// run by another process than the creator), ls, rm, rm --stale, verify, --help, and one-line
// errors with a non-zero status for bad input (random bytes, missing segments, bad arguments).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <random>

#include "shmkit/shm/segment.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::run_tool;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

namespace {
std::string field(const std::string& json, const std::string& key) {
  auto p = json.find("\"" + key + "\":");
  if (p == std::string::npos) return "";
  p += key.size() + 3;
  auto e = json.find_first_of(",}", p);
  std::string v = json.substr(p, e - p);
  if (!v.empty() && v.front() == '"') v = v.substr(1, v.size() - 2);
  return v;
}
int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

TEST(ShmkitCommand, CreateInfoRm) {
  ShmNameGuard n(unique_name("cli"));
  auto c = run_tool({"create", n.name(), "--size", "64M"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto info = run_tool({"info", n.name(), "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  // The base printed by create is the base info reports, and info (another process) is at home.
  std::string base = field(info.out, "base");
  EXPECT_NE(c.out.find("base " + base), std::string::npos) << c.out << " vs " << info.out;
  EXPECT_EQ(field(info.out, "at_home"), "true");
  EXPECT_EQ(field(info.out, "size"), std::to_string(64 << 20));
  EXPECT_EQ(field(info.out, "capacity"), std::to_string(Segment::kDefaultCapacity));
  // Cross-check against the library's own view of the segment.
  {
    SegmentOptions o;
    o.attach = false;
    Segment s = Segment::open(n.name(), o);
    char hex[32];
    std::snprintf(hex, sizeof hex, "%#lx", static_cast<unsigned long>(s.home()));
    EXPECT_EQ(base, hex);
  }
  auto text = run_tool({"info", n.name()});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("at home"), std::string::npos);
  auto rm = run_tool({"rm", n.name()});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_NE(::access(("/dev/shm" + n.name()).c_str(), F_OK), 0);
  auto again = run_tool({"info", n.name()});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_EQ(lines(again.err), 1) << again.err;
}

TEST(ShmkitCommand, CreateWithCapacityAndBase) {
  ShmNameGuard n(unique_name("cli-base"));
  auto c = run_tool({"create", n.name(), "--size", "1M", "--capacity", "1G", "--base", "0x310000000000"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto info = run_tool({"info", n.name(), "--json"});
  EXPECT_EQ(field(info.out, "base"), "0x310000000000");
  EXPECT_EQ(field(info.out, "capacity"), std::to_string(1 << 30));
}

TEST(ShmkitCommand, RandomBytesFileIsAOneLineError) {
  ShmNameGuard n(unique_name("cli-random"));
  int fd = ::shm_open(n.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  std::vector<char> junk(1 << 20);
  std::mt19937 rng(3);
  for (auto& b : junk) b = static_cast<char>(rng());
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  ::close(fd);
  for (auto args : std::vector<std::vector<std::string>>{{"info", n.name()}, {"info", n.name(), "--json"},
                                                         {"verify", n.name()}}) {
    auto r = run_tool(args);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_GT(r.exit_code, 0) << "must exit, not crash";
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("not a shmkit segment"), std::string::npos) << r.err;
  }
}

TEST(ShmkitCommand, LsListsSegmentsAndStaleness) {
  ShmNameGuard live(unique_name("cli-ls"));
  ShmNameGuard stale(unique_name("cli-stale"));
  Segment keep = Segment::create(live.name(), 1 << 20);
  {
    Child dying([&] {
      Segment s = Segment::create(stale.name(), 1 << 20);
      ::raise(SIGKILL);  // dies attached
      return 0;
    });
    EXPECT_EQ(dying.wait(), -SIGKILL);
  }
  auto ls = run_tool({"ls", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  auto entry = [&](const std::string& name) {
    auto p = ls.out.find("\"name\":\"" + name + "\"");
    if (p == std::string::npos) return std::string();
    return ls.out.substr(p, ls.out.find("\"stale\"", p) + 14 - p);
  };
  std::string e_live = entry(live.name()), e_stale = entry(stale.name());
  ASSERT_FALSE(e_live.empty()) << ls.out;
  ASSERT_FALSE(e_stale.empty()) << ls.out;
  EXPECT_NE(e_live.find("\"stale\":false"), std::string::npos) << e_live;
  EXPECT_NE(e_stale.find("\"stale\":true"), std::string::npos) << e_stale;
  EXPECT_NE(e_stale.find("\"state\":\"dead\""), std::string::npos) << e_stale;
  auto table = run_tool({"ls"});
  EXPECT_NE(table.out.find(live.name()), std::string::npos);
  auto rm = run_tool({"rm", "--stale"});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_NE(rm.out.find(stale.name()), std::string::npos);
  EXPECT_NE(::access(("/dev/shm" + stale.name()).c_str(), F_OK), 0);
  EXPECT_EQ(::access(("/dev/shm" + live.name()).c_str(), F_OK), 0);
}

TEST(ShmkitCommand, BadArgumentsAreOneLineErrors) {
  std::vector<std::vector<std::string>> bad = {
      {"create", "/x"},                       // no --size
      {"create", "/x", "--size", "12Q"},      // bad suffix
      {"create", "/x", "--size", "abc"},
      {"create", "noslash", "--size", "1M"},  // bad name
      {"frobnicate"},
      {"info"},
      {"rm"},
      {"ls", "--bogus"},
  };
  for (auto& args : bad) {
    auto r = run_tool(args);
    EXPECT_GT(r.exit_code, 0) << args[0];
    EXPECT_EQ(lines(r.err), 1) << r.err;
  }
  auto help = run_tool({"info", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("usage: shmkit info"), std::string::npos);
  EXPECT_EQ(run_tool({"--help"}).exit_code, 0);
}
