// Tests open_or_create raced by many processes (exactly one initialises, all see the same segment)
// and a creator killed while initialising — with its header written, or killed while sizing the
// file, before it wrote one: open() fails within its time bound, open_or_create() initialises
// the segment again.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "killed_creator.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

TEST(OpenRace, ManyProcessesOneInitialiser) {
  for (int round = 0; round < 5; ++round) {
    ShmNameGuard name(unique_name("race"));
    // A shared page for a start barrier and the processes' reports.
    auto* shared = static_cast<std::atomic<std::uintptr_t>*>(
        ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(shared, MAP_FAILED);
    constexpr int kProcs = 8;
    std::vector<Child> kids;
    for (int i = 0; i < kProcs; ++i)
      kids.emplace_back([&, i] {
        while (shared[0].load() == 0) {
        }
        Segment s = Segment::open_or_create(name.name(), 1 << 20);
        // Every process records the base it mapped and bumps a counter inside the segment.
        shared[1 + i].store(reinterpret_cast<std::uintptr_t>(s.base()));
        s.at<std::atomic<int>>(SegmentHeader::kDataOffset)->fetch_add(1);
        return 0;
      });
    shared[0].store(1);
    for (auto& k : kids) EXPECT_EQ(k.wait(), 0);
    for (int i = 1; i < kProcs; ++i) EXPECT_EQ(shared[1 + i].load(), shared[1].load());
    Segment s = Segment::open(name.name());
    // Had anyone re-initialised after another process bumped the counter, it would be < kProcs.
    EXPECT_EQ(s.at<std::atomic<int>>(SegmentHeader::kDataOffset)->load(), kProcs);
    ::munmap(shared, 4096);
  }
}

namespace {
// Plays a creator that dies during initialisation: creates the file, takes its flock, writes a
// header with state `initialising`, signals, and waits to be killed.
int fake_dying_creator(const std::string& name, std::atomic<int>* ready) {
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return 1;
  if (::flock(fd, LOCK_EX) != 0) return 2;
  Segment real = Segment::create_anonymous(1 << 20);  // a valid header image to copy
  std::vector<char> img(SegmentHeader::kDataOffset + 4096);
  std::memcpy(img.data(), real.base(), img.size());
  auto* h = reinterpret_cast<SegmentHeader*>(img.data());
  h->state.store(static_cast<std::uint32_t>(SegmentState::initialising));
  h->creator = sys::this_process();
  if (::pwrite(fd, img.data(), img.size(), 0) != static_cast<ssize_t>(img.size())) return 3;
  ready->store(1);
  ::pause();
  return 0;
}
}  // namespace

TEST(OpenRace, CreatorKilledWhileInitialising) {
  ShmNameGuard name(unique_name("dead-creator"));
  auto* ready = static_cast<std::atomic<int>*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  Child creator([&] { return fake_dying_creator(name.name(), ready); });
  while (ready->load() == 0) ::usleep(100);

  // While the creator lives (holding the flock), an opener waits and times out with a clear error.
  SegmentOptions quick;
  quick.open_timeout = std::chrono::milliseconds(200);
  auto t0 = std::chrono::steady_clock::now();
  try {
    (void)Segment::open(name.name(), quick);
    FAIL() << "open succeeded while the creator was initialising";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::timed_out) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));

  // An opener blocked at the moment of death proceeds: open_or_create re-initialises.
  Child waiter([&] {
    Segment s = Segment::open_or_create(name.name(), 1 << 20);
    return s.header().state.load() == static_cast<std::uint32_t>(SegmentState::ready) ? 0 : 1;
  });
  ::usleep(20000);
  creator.kill(SIGKILL);
  EXPECT_EQ(creator.wait(), -SIGKILL);
  EXPECT_EQ(waiter.wait(std::chrono::seconds(5)), 0);
  ::munmap(ready, 4096);
}

TEST(OpenRace, OpenOfDeadCreatorsSegmentFailsPromptly) {
  ShmNameGuard name(unique_name("dead-creator2"));
  auto* ready = static_cast<std::atomic<int>*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  {
    Child creator([&] { return fake_dying_creator(name.name(), ready); });
    while (ready->load() == 0) ::usleep(100);
    creator.kill(SIGKILL);
    EXPECT_EQ(creator.wait(), -SIGKILL);
  }
  auto t0 = std::chrono::steady_clock::now();
  try {
    (void)Segment::open(name.name());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::owner_dead);
    EXPECT_NE(std::string(e.what()).find("died while initialising"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  Segment s = Segment::open_or_create(name.name(), 1 << 20);
  EXPECT_TRUE(s.valid());
  ::munmap(ready, 4096);
}

// Issue 14 item 9: a creator killed while sizing the file (between fallocate and writing the
// header) leaves a zero-filled file; open_or_create must initialise it again, as it does for a
// creator killed later, and open must say what happened.
TEST(OpenRace, ACreatorKilledWhileSizingTheFileLeavesANameOpenOrCreateInitialisesAgain) {
  ShmNameGuard name(unique_name("sizing-killed"));
  ASSERT_TRUE(shmkit::testing::leave_file_of_creator_killed_while_sizing(name.name(), 1 << 20));
  try {
    (void)Segment::open(name.name());
    FAIL() << "open accepted a file with no header";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::owner_dead) << e.what();
    EXPECT_NE(std::string(e.what()).find("no header"), std::string::npos) << e.what();
  }
  // In another process, as a program restarted after the crash would do it.
  Child reopener([&] {
    Segment s = Segment::open_or_create(name.name(), 1 << 20);
    if (s.header().state.load() != static_cast<std::uint32_t>(SegmentState::ready)) return 2;
    s.at<std::atomic<int>>(SegmentHeader::kDataOffset)->store(7);
    return 0;
  });
  EXPECT_EQ(reopener.wait(), 0);
  Segment s = Segment::open(name.name());
  EXPECT_EQ(s.at<std::atomic<int>>(SegmentHeader::kDataOffset)->load(), 7);
}

// A file of zeros that is not the shape a creator leaves (not page-sized) is not a segment:
// open_or_create refuses it and leaves it as it was.
TEST(OpenRace, AZeroFilledFileOfAnotherShapeIsNotInitialised) {
  ShmNameGuard name(unique_name("zeros-odd"));
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, (1 << 20) + 100), 0);
  EXPECT_THROW((void)Segment::open_or_create(name.name(), 1 << 20), Error);
  struct ::stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, (1 << 20) + 100);
  ::close(fd);
}
