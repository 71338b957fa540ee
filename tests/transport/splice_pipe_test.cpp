// Tests SplicePipe and transfer_once (transport/splice_pipe.hpp): moving exact byte counts
// file -> socket (behind a prefix written into the pipe first) and socket -> file between processes, duplicating a stream with tee, a deadline
// that ends a wait on a peer that never reads (no hang), EINVAL from a destination that cannot
// take a splice with the bytes kept in the pipe, and SIGPIPE kept from the process when the
// reader of a socket is gone.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/transport/splice_pipe.hpp"

namespace shmkit::transport {
namespace {

using shmkit::testing::Child;

int make_memfd(std::size_t size, unsigned window) {
  int fd = sys::memfd_create("splice-test", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  std::vector<std::uint8_t> data(size);
  testing::fill_pattern(data.data(), window, 0, size);
  EXPECT_EQ(sys::write(fd, data.data(), size), static_cast<ssize_t>(size));
  return fd;
}

TEST(SplicePipe, MovesExactlyLenBytesFileToSocketAcrossProcesses) {
  constexpr std::size_t kLen = (3 << 20) + 123;
  int file = make_memfd(kLen + 5000, 0);
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  const char prefix[] = "frame-header-16b";  // 16 bytes + NUL; the 16 go first, in the pipe
  Child reader([&] {
    char head[16];
    if (recv_exact(sv[1], head, sizeof head, Deadline::after(std::chrono::seconds(10))) != 0) return 5;
    if (std::memcmp(head, prefix, 16) != 0) return 6;
    std::vector<std::uint8_t> buf(kLen);
    if (recv_exact(sv[1], buf.data(), kLen, Deadline::after(std::chrono::seconds(10))) != 0) return 2;
    for (std::size_t i = 0; i < kLen; ++i)
      if (buf[i] != testing::pattern(0, 1000 + i)) return 3;
    // Nothing past kLen was sent.
    char extra;
    return sys::recv(sv[1], &extra, 1, MSG_DONTWAIT) == -EAGAIN ? 0 : 4;
  });
  SplicePipe pipe(1 << 16);
  EXPECT_GE(pipe.capacity(), std::size_t{1} << 16);
  loff_t off = 1000;
  ASSERT_EQ(pipe.move(file, &off, sv[0], nullptr, kLen, Deadline::after(std::chrono::seconds(10)),
                      std::as_bytes(std::span<const char>(prefix, 16))),
            static_cast<ssize_t>(16 + kLen));
  EXPECT_EQ(pipe.moved(), 16 + kLen);
  EXPECT_EQ(off, static_cast<loff_t>(1000 + kLen));
  EXPECT_EQ(pipe.buffered(), 0u);
  EXPECT_EQ(reader.wait(std::chrono::seconds(10)), 0);
  (void)sys::close(sv[0]);
  (void)sys::close(sv[1]);
  (void)sys::close(file);
}

TEST(SplicePipe, MovesSocketToFileAndStopsAtLen) {
  constexpr std::size_t kLen = (2 << 20) + 7;
  int file = make_memfd(kLen + 100, 1);
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  Child writer([&] {
    std::vector<std::uint8_t> buf(kLen + 10, 0x3C);  // 10 bytes more than the move takes
    return send_all(sv[1], buf.data(), buf.size(), Deadline::after(std::chrono::seconds(10))) == 0 ? 0 : 2;
  });
  SplicePipe pipe(1 << 20);
  loff_t off = 50;
  ASSERT_EQ(pipe.move(sv[0], nullptr, file, &off, kLen, Deadline::after(std::chrono::seconds(10))),
            static_cast<ssize_t>(kLen));
  EXPECT_EQ(writer.wait(std::chrono::seconds(10)), 0);
  std::vector<std::uint8_t> back(kLen + 100);
  ASSERT_EQ(sys::pread(file, back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
  for (std::size_t i = 0; i < back.size(); ++i) {
    std::uint8_t want = (i >= 50 && i < 50 + kLen) ? 0x3C : testing::pattern(1, i);
    ASSERT_EQ(back[i], want) << i;
  }
  char rest[32];
  EXPECT_EQ(sys::recv(sv[0], rest, sizeof rest, MSG_DONTWAIT), 10);  // left for the next reader
  (void)sys::close(sv[0]);
  (void)sys::close(sv[1]);
  (void)sys::close(file);
}

TEST(SplicePipe, TeeDuplicatesAStream) {
  int file = make_memfd(100000, 2);
  SplicePipe a(1 << 17), b(1 << 17);
  loff_t off = 0;
  ASSERT_EQ(a.fill(file, &off, 100000, Deadline::after(std::chrono::seconds(5))), 100000);
  ASSERT_EQ(a.tee_to(b.write_end(), 100000, Deadline::after(std::chrono::seconds(5))), 100000);
  std::vector<std::uint8_t> x(100000), y(100000);
  EXPECT_EQ(a.drain_to_memory(x.data(), x.size()), 100000);
  EXPECT_EQ(sys::read(b.read_end(), y.data(), y.size()), 100000);
  EXPECT_TRUE(x == y);
  EXPECT_EQ(x[99999], testing::pattern(2, 99999));
  (void)sys::close(file);
}

TEST(SplicePipe, DeadlineEndsAWaitOnAPeerThatNeverReads) {
  int file = make_memfd(8 << 20, 0);
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ASSERT_EQ(sys::set_nonblocking(sv[0], true), 0);
  SplicePipe pipe(1 << 20);
  loff_t off = 0;
  auto t0 = std::chrono::steady_clock::now();
  ssize_t r = pipe.move(file, &off, sv[0], nullptr, 8 << 20, Deadline::after(std::chrono::milliseconds(300)));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r, -ETIMEDOUT);
  EXPECT_GE(took, std::chrono::milliseconds(290));
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_GT(pipe.moved(), 0u);  // the socket buffer took some before it filled
  EXPECT_EQ(pipe.discard(), 0);
  EXPECT_EQ(pipe.buffered(), 0u);
  (void)sys::close(sv[0]);
  (void)sys::close(sv[1]);
  (void)sys::close(file);
}

TEST(SplicePipe, EinvalFromAnAppendOnlyDestinationKeepsTheBytes) {
  int file = make_memfd(4096, 0);
  std::string path = "/proc/self/fd/" + std::to_string(file);
  int append = sys::open(path.c_str(), O_RDWR | O_APPEND);
  ASSERT_GE(append, 0);
  int src = make_memfd(4096, 1);
  SplicePipe pipe(1 << 16);
  loff_t in_off = 0, out_off = 0;
  EXPECT_EQ(pipe.move(src, &in_off, append, &out_off, 4096, Deadline::after(std::chrono::seconds(5))), -EINVAL);
  EXPECT_EQ(pipe.moved(), 0u);
  ASSERT_EQ(pipe.buffered(), 4096u);
  std::vector<std::uint8_t> got(4096);
  EXPECT_EQ(pipe.drain_to_memory(got.data(), got.size()), 4096);
  EXPECT_EQ(got[4095], testing::pattern(1, 4095));
  (void)sys::close(append);
  (void)sys::close(file);
  (void)sys::close(src);
}

TEST(SplicePipe, SigpipeBlockKeepsADeadReaderFromKillingUs) {
  int file = make_memfd(1 << 16, 0);
  int sv[2];
  ASSERT_EQ(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  (void)sys::close(sv[1]);  // the reader is gone
  Child splicer([&] {
    // SIGPIPE at its default action (terminate) in this process.
    ::signal(SIGPIPE, SIG_DFL);
    SplicePipe pipe(1 << 16);
    loff_t off = 0;
    ssize_t r;
    {
      SigpipeBlock guard;
      r = pipe.move(file, &off, sv[0], nullptr, 1 << 16, Deadline::after(std::chrono::seconds(5)));
    }
    return r == -EPIPE ? 0 : 2;
  });
  EXPECT_EQ(splicer.wait(std::chrono::seconds(5)), 0);  // not -SIGPIPE
  (void)sys::close(sv[0]);
  (void)sys::close(file);
}

}  // namespace
}  // namespace shmkit::transport
