// Tests that processes joining a segment — forked children and separately exec'd programs — map it
// at the creator's base address and see each other's writes; the ways in (create, open,
// open_or_create, anonymous memfd, adopt); the file mode; the attach table across death.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cinttypes>
#include <cstring>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

namespace {
constexpr std::size_t kOff = SegmentHeader::kDataOffset;

// Exec'd joiner: opens NAME, checks the base it was told, follows a raw pointer stored by the
// creator, writes back a value.
SHMKIT_TEST_HELPER(join_and_reply) {
  Segment seg = Segment::open(args.at(0));
  std::uintptr_t expected = std::stoull(args.at(1), nullptr, 16);
  if (reinterpret_cast<std::uintptr_t>(seg.base()) != expected || !seg.at_home()) return 2;
  auto** p = seg.at<int*>(kOff);
  if (**p != 4242) return 3;  // a raw pointer written by the creator is valid here
  **p = 777;
  return 0;
}
}  // namespace

TEST(SegmentSharing, ForkedChildrenSeeSameAddressAndWrites) {
  ShmNameGuard name(unique_name("share"));
  Segment seg = Segment::create(name.name(), 1 << 20);
  ASSERT_TRUE(seg.at_home());
  auto* counter = seg.at<std::atomic<int>>(kOff);
  std::vector<Child> kids;
  for (int i = 0; i < 4; ++i)
    kids.emplace_back([&] {
      Segment s2 = Segment::open(name.name());
      if (s2.base() != seg.base()) return 2;
      for (int k = 0; k < 1000; ++k) s2.at<std::atomic<int>>(kOff)->fetch_add(1);
      return 0;
    });
  for (auto& k : kids) EXPECT_EQ(k.wait(), 0);
  EXPECT_EQ(counter->load(), 4000);
}

TEST(SegmentSharing, ExecdProcessFollowsRawPointer) {
  ShmNameGuard name(unique_name("exec"));
  Segment seg = Segment::create(name.name(), 1 << 20);
  int* value = seg.at<int>(kOff + 64);
  *value = 4242;
  *seg.at<int*>(kOff) = value;
  char base[32];
  std::snprintf(base, sizeof base, "%" PRIxPTR, reinterpret_cast<std::uintptr_t>(seg.base()));
  auto child = shmkit::testing::spawn_helper("join_and_reply", {name.name(), base});
  EXPECT_EQ(child.wait(), 0);
  EXPECT_EQ(*value, 777);
}

TEST(SegmentSharing, BaseIsDerivedFromNameInWindow) {
  ShmNameGuard name(unique_name("base"));
  Segment seg = Segment::create(name.name(), 1 << 20);
  auto b = reinterpret_cast<std::uintptr_t>(seg.base());
  EXPECT_GE(b, Segment::kBaseWindowLow);
  EXPECT_LT(b, Segment::kBaseWindowHigh);
  EXPECT_EQ(seg.home(), b);
  EXPECT_EQ(seg.capacity(), Segment::kDefaultCapacity);
}

TEST(SegmentSharing, UserBaseIsHonoured) {
  ShmNameGuard name(unique_name("userbase"));
  SegmentOptions o;
  o.base = Segment::kBaseWindowLow + (std::uintptr_t{3} << 36);  // a slot of the window, also in TSan builds
  o.capacity = 1 << 30;
  Segment seg = Segment::create(name.name(), 1 << 20, o);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(seg.base()), o.base);
  Child c([&] {
    Segment s2 = Segment::open(name.name());
    return reinterpret_cast<std::uintptr_t>(s2.base()) == o.base && s2.capacity() == (1u << 30) ? 0 : 1;
  });
  EXPECT_EQ(c.wait(), 0);
}

TEST(SegmentSharing, CreateFailsWhenExistsOpenFailsWhenMissing) {
  ShmNameGuard name(unique_name("excl"));
  try {
    (void)Segment::open(name.name());
    FAIL() << "open of a missing segment succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
  }
  Segment seg = Segment::create(name.name(), 1 << 20);
  try {
    (void)Segment::create(name.name(), 1 << 20);
    FAIL() << "second create succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::already_exists);
  }
}

TEST(SegmentSharing, FileModeDefaultsTo0600AndHonoursMode) {
  ShmNameGuard a(unique_name("mode"));
  ShmNameGuard b(unique_name("mode"));
  Segment s1 = Segment::create(a.name(), 1 << 20);
  SegmentOptions o;
  o.mode = 0640;
  Segment s2 = Segment::create(b.name(), 1 << 20, o);
  struct stat st1, st2;
  ASSERT_EQ(::stat(("/dev/shm" + a.name()).c_str(), &st1), 0);
  ASSERT_EQ(::stat(("/dev/shm" + b.name()).c_str(), &st2), 0);
  EXPECT_EQ(st1.st_mode & 07777, 0600u);
  EXPECT_EQ(st2.st_mode & 07777, 0640u);
}

TEST(SegmentSharing, AnonymousSegmentIsInheritedByFork) {
  Segment seg = Segment::create_anonymous(1 << 20);
  auto* v = seg.at<int>(kOff);
  *v = 1;
  Child c([&] {
    if (*v != 1) return 1;
    *v = 2;
    return 0;
  });
  EXPECT_EQ(c.wait(), 0);
  EXPECT_EQ(*v, 2);
}

TEST(SegmentSharing, AttachTableShowsLiveAndDeadProcesses) {
  ShmNameGuard name(unique_name("attach"));
  Segment seg = Segment::create(name.name(), 1 << 20);
  auto mine = seg.attached();
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].id.pid, ::getpid());
  EXPECT_EQ(mine[0].liveness, sys::Liveness::alive);
  // A child that attaches and is killed shows as dead; one that closes cleanly disappears.
  Child killed([&] {
    Segment s2 = Segment::open(name.name());
    ::pause();
    return 0;
  });
  Child clean([&] {
    Segment s2 = Segment::open(name.name());
    return 0;
  });
  EXPECT_EQ(clean.wait(), 0);
  for (int i = 0; i < 2000 && seg.attached().size() < 2; ++i) ::usleep(1000);
  pid_t kpid = killed.pid();
  killed.kill(SIGKILL);
  EXPECT_EQ(killed.wait(), -SIGKILL);
  auto all = seg.attached();
  ASSERT_EQ(all.size(), 2u);
  for (auto& a : all) {
    if (a.id.pid == kpid) EXPECT_EQ(a.liveness, sys::Liveness::dead);
    else EXPECT_EQ(a.liveness, sys::Liveness::alive);
  }
  // The dead entry is reclaimed by the next process that attaches.
  Child next([&] {
    Segment s3 = Segment::open(name.name());
    for (auto& a : s3.attached())
      if (a.liveness == sys::Liveness::dead) return 1;
    return 0;
  });
  EXPECT_EQ(next.wait(), 0);
}

TEST(SegmentSharing, InvalidNamesAreRejected) {
  for (const char* bad : {"", "noslash", "/", "/a/b", "/.."}) {
    try {
      (void)Segment::open_or_create(bad, 1 << 20);
      FAIL() << "accepted name '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument) << bad;
      EXPECT_NE(std::string(e.what()).find("invalid segment name"), std::string::npos);
    }
  }
}
