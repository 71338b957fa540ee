// Tests what happens when another process cuts a segment's file short (issue 14 item 10): the
// cold paths of a process that has it mapped — attached(), close(), and with them the attach
// table — read through the file descriptor or check the file's size first, so they never die of
// SIGBUS; and an anonymous (memfd) segment is sealed, so no process holding its descriptor can
// shrink it at all. (Hot-path accesses after a shrink of a /dev/shm file cannot be protected:
// README "Guarantees".)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

namespace {
// Exec'd: the other process, which cuts /dev/shm/NAME to LENGTH bytes.
SHMKIT_TEST_HELPER(cut_file) {
  int fd = ::shm_open(args.at(0).c_str(), O_RDWR, 0);
  if (fd < 0) return 1;
  int r = ::ftruncate(fd, std::stoll(args.at(1)));
  ::close(fd);
  return r == 0 ? 0 : 2;
}

std::string outcome(int rc) {
  if (rc == -SIGBUS) return "died of SIGBUS";
  if (rc < 0) return "killed by signal " + std::to_string(-rc);
  return "exit " + std::to_string(rc);
}
}  // namespace

TEST(FileShrink, AnotherProcessShrinkingTheFileMeansNoSigbusInAttachedOrClose) {
  for (long cut_to : {0L, 2048L}) {  // no header at all; half a header page
    SCOPED_TRACE(cut_to);
    ShmNameGuard name(unique_name("shrink"));
    // The attached process runs in a child, so that a SIGBUS is a failed test, not a dead runner.
    Child attached([&] {
      Segment seg = Segment::create(name.name(), 1 << 20);
      auto cutter = shmkit::testing::spawn_helper("cut_file", {name.name(), std::to_string(cut_to)});
      if (cutter.wait() != 0) return 10;
      (void)seg.attached();  // read through the descriptor: a short table, no fault
      seg.close();           // skips the detach it cannot do, unmaps, closes
      return seg.valid() ? 11 : 0;
    });
    int rc = attached.wait(std::chrono::seconds(20));
    EXPECT_EQ(rc, 0) << outcome(rc);
  }
}

TEST(FileShrink, AnonymousSegmentIsSealedAgainstShrinking) {
  Segment seg = Segment::create_anonymous(1 << 20);
  seg.at<std::atomic<int>>(SegmentHeader::kDataOffset)->store(5);
  // A child holding the (inherited) descriptor tries to cut the file: the seal refuses.
  Child child([&] {
    if (::ftruncate(seg.fd(), 0) == 0) return 1;
    if (errno != EPERM) return 2;
    if (::ftruncate(seg.fd(), 4096) == 0) return 3;
    return 0;
  });
  EXPECT_EQ(child.wait(), 0) << "0: refused with EPERM; 1/3: the file was shrunk";
  EXPECT_EQ(seg.at<std::atomic<int>>(SegmentHeader::kDataOffset)->load(), 5);
  // Growth (the one change the seal allows) still works.
  seg.grow(2 << 20);
  EXPECT_EQ(seg.size(), std::size_t{2} << 20);
  *seg.at<char>((2 << 20) - 1) = 1;
}
