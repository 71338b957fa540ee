// Tests the `shmkit` command end to end, as a separate process: create, info (text and --json,
// run by another process than the creator), ls, rm, rm --stale, verify, --help, and one-line
// errors with a non-zero status for bad input (random bytes, missing segments, bad arguments).
// rm --stale never removes a segment a live process maps — also one that only forked children of
// a dead opener use — and does remove the zero-filled file of a creator killed while sizing it;
// NAME may be given without its leading '/'.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <random>

#include "killed_creator.hpp"
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
      {"create", "/a/b", "--size", "1M"},     // bad name
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

namespace {
bool exists(const std::string& name) { return ::access(("/dev/shm" + name).c_str(), F_OK) == 0; }

// Makes this test process the subreaper of its descendants, so that a grandchild orphaned by
// its parent's death is reparented here and can be reaped (Child adopts it by pid).
struct Subreaper {
  Subreaper() { EXPECT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0); }
  ~Subreaper() { (void)::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};
}  // namespace

TEST(ShmkitCommand, RmStaleDeletesASegmentThatForkedWorkersStillUse) {
  Subreaper subreaper;
  ShmNameGuard n(unique_name("cli-workers"));
  shmkit::testing::SharedMem shared(4096);
  auto* worker_pid = reinterpret_cast<std::atomic<pid_t>*>(shared.base);
  auto* beats = reinterpret_cast<std::atomic<long>*>(shared.base + 64);
  // The opener: attaches, forks a worker that keeps writing the segment through the inherited
  // mapping (a worker does not open the segment: it is not in the attach table), then waits.
  Child opener([&] {
    Segment seg = Segment::open_or_create(n.name(), 1 << 20);
    auto* counter = seg.at<std::atomic<long>>(SegmentHeader::kDataOffset);
    pid_t w = ::fork();
    if (w < 0) return 1;
    if (w == 0) {
      for (;;) {
        counter->fetch_add(1);
        beats->fetch_add(1);
        ::usleep(1000);
      }
    }
    worker_pid->store(w);
    ::pause();
    return 0;
  });
  // Both: the worker beats as soon as it runs, possibly before the opener has stored its pid.
  for (int i = 0; i < 10000 && (beats->load() < 3 || worker_pid->load() == 0); ++i) ::usleep(500);
  ASSERT_GE(beats->load(), 3) << "the worker never started";
  ASSERT_GT(worker_pid->load(), 0) << "the opener never published its worker's pid";
  Child worker(worker_pid->load());  // reaped (and killed, at the latest) by this test
  opener.kill(SIGKILL);
  ASSERT_EQ(opener.wait(), -SIGKILL);

  // The opener died attached; its worker lives on and maps the segment.
  auto rm = run_tool({"rm", "--stale"});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_TRUE(exists(n.name())) << "rm --stale removed a segment a live worker maps\n" << rm.out;
  long before = beats->load();
  for (int i = 0; i < 2000 && beats->load() < before + 3; ++i) ::usleep(500);
  EXPECT_GE(beats->load(), before + 3) << "the worker stopped";
  auto ls = run_tool({"ls", "--json"});
  auto at = ls.out.find("\"name\":\"" + n.name() + "\"");
  ASSERT_NE(at, std::string::npos) << ls.out;
  std::string entry = ls.out.substr(at, ls.out.find('}', ls.out.find("\"stale\"", at)) - at);
  EXPECT_NE(entry.find("\"in_use\":true"), std::string::npos) << entry;
  EXPECT_NE(entry.find("\"stale\":false"), std::string::npos) << entry;

  // Once the worker is gone nothing maps it: now it is stale, and removed.
  worker.kill(SIGKILL);
  ASSERT_EQ(worker.wait(), -SIGKILL);
  auto rm2 = run_tool({"rm", "--stale"});
  EXPECT_EQ(rm2.exit_code, 0) << rm2.err;
  EXPECT_NE(rm2.out.find("removed " + n.name()), std::string::npos) << rm2.out;
  EXPECT_FALSE(exists(n.name()));
}

TEST(ShmkitCommand, ACreatorKilledWhileSizingTheFileLeavesANameNothingCanClean) {
  ShmNameGuard n(unique_name("cli-sizing"));
  ASSERT_TRUE(shmkit::testing::leave_file_of_creator_killed_while_sizing(n.name(), 1 << 20));
  // ls lists it, as incomplete and stale.
  auto ls = run_tool({"ls", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  auto at = ls.out.find("\"name\":\"" + n.name() + "\"");
  ASSERT_NE(at, std::string::npos) << "ls does not list the file\n" << ls.out;
  std::string entry = ls.out.substr(at, ls.out.find('}', at) - at);
  EXPECT_NE(entry.find("incomplete"), std::string::npos) << entry;
  EXPECT_NE(entry.find("\"stale\":true"), std::string::npos) << entry;
  auto table = run_tool({"ls"});
  EXPECT_NE(table.out.find(n.name()), std::string::npos) << table.out;

  // While a live process holds it (here: a creator in the middle of sizing it, holding the
  // creation flock) rm --stale keeps it.
  {
    shmkit::testing::SharedMem flag(4096);
    auto* holding = reinterpret_cast<std::atomic<int>*>(flag.base);
    Child holder([&] {
      int fd = ::shm_open(n.c_str(), O_RDWR, 0);
      if (fd < 0 || ::flock(fd, LOCK_EX) != 0) return 1;
      holding->store(1);
      ::pause();
      return 0;
    });
    for (int i = 0; i < 10000 && holding->load() == 0; ++i) ::usleep(500);
    ASSERT_EQ(holding->load(), 1);
    auto rm = run_tool({"rm", "--stale"});
    EXPECT_EQ(rm.exit_code, 0) << rm.err;
    EXPECT_TRUE(exists(n.name())) << "removed a file a live process holds\n" << rm.out;
    holder.kill(SIGKILL);
    EXPECT_EQ(holder.wait(), -SIGKILL);
  }
  auto rm = run_tool({"rm", "--stale"});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_NE(rm.out.find("removed " + n.name()), std::string::npos) << rm.out;
  EXPECT_FALSE(exists(n.name()));
}

TEST(ShmkitCommand, NameWithOrWithoutTheLeadingSlashIsTheSameSegment) {
  ShmNameGuard n(unique_name("cli-slash"));
  const std::string bare = n.name().substr(1);
  auto c = run_tool({"create", bare, "--size", "1M"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_TRUE(exists(n.name()));
  auto with = run_tool({"info", n.name(), "--json"});
  auto without = run_tool({"info", bare, "--json"});
  ASSERT_EQ(with.exit_code, 0) << with.err;
  ASSERT_EQ(without.exit_code, 0) << without.err;
  EXPECT_EQ(field(without.out, "name"), n.name());
  EXPECT_EQ(field(without.out, "base"), field(with.out, "base"));
  EXPECT_EQ(run_tool({"verify", bare}).exit_code, 0);
  auto rm = run_tool({"rm", bare});
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_FALSE(exists(n.name()));
}
