// Tests handing a segment to another process as a file descriptor over a unix socket
// (SCM_RIGHTS): the receiver adopts it at the same base, for named and anonymous (memfd)
// segments; a message without a descriptor is an error.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::Child;

TEST(FdPassing, AnonymousSegmentAdoptedByUnrelatedMapping) {
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  // The child exists before the segment, so it inherits neither mapping nor fd.
  Child c([&] {
    ::close(sv[0]);
    Segment s = Segment::receive_from(sv[1]);
    auto* v = s.at<std::atomic<int>>(SegmentHeader::kDataOffset);
    if (!s.at_home()) return 1;
    if (v->load() != 99) return 2;
    v->store(100);
    return 0;
  });
  ::close(sv[1]);
  Segment seg = Segment::create_anonymous(1 << 20);
  seg.at<std::atomic<int>>(SegmentHeader::kDataOffset)->store(99);
  seg.send_to(sv[0]);
  EXPECT_EQ(c.wait(), 0);
  EXPECT_EQ(seg.at<std::atomic<int>>(SegmentHeader::kDataOffset)->load(), 100);
  ::close(sv[0]);
}

TEST(FdPassing, MessageWithoutDescriptorIsAnError) {
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(::write(sv[0], "x", 1), 1);
  try {
    (void)Segment::receive_from(sv[1]);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::protocol) << e.what();
  }
  ::close(sv[0]);
  try {
    (void)Segment::receive_from(sv[1]);  // peer closed
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::peer_closed) << e.what();
  }
  ::close(sv[1]);
}

TEST(FdPassing, AdoptingANonSegmentFdIsAnError) {
  int fd = sys::memfd_create("junk", 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "not a segment", 13), 13);
  try {
    (void)Segment::adopt(fd);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_a_segment);
  }
}
