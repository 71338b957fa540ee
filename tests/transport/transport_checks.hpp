// The transport checks every MemoryTransport must pass against the test agent of
// memory_agent_fixture.hpp (windows 0: fd-backed read-write, 1: read-only, 2: anonymous
// read-write, each filled with pattern()): reads of every size at unaligned addresses, writes that
// land exactly, and refused out-of-window / read-only requests after which the transport keeps
// serving. Used by the shared suite (socket, socket_copy, vm) and by the io_uring suite, so every
// transport is held to the same cases.
#pragma once

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <random>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/transport/memory_transport.hpp"

namespace shmkit::transport::testing {

class TransportChecks {
 public:
  explicit TransportChecks(MemoryTransport& t) : t_(t) {}

  std::uint64_t base(unsigned w) const { return t_.windows()[w].address; }

  // Reads [off, off+len) of window w and checks it against the expected bytes (the window's
  // pattern by default).
  void expect_window(unsigned w, std::uint64_t off, std::size_t len,
                     const std::vector<std::uint8_t>* expected = nullptr) const {
    std::vector<std::uint8_t> buf(len + 2, 0xEE);
    ASSERT_EQ(t_.read(base(w) + off, buf.data() + 1, len), 0) << "window " << w << " off " << off << " len " << len;
    EXPECT_EQ(buf[0], 0xEE);
    EXPECT_EQ(buf[len + 1], 0xEE);  // nothing written outside the destination
    for (std::size_t i = 0; i < len; ++i) {
      std::uint8_t want = expected ? (*expected)[i] : pattern(w, off + i);
      if (buf[i + 1] != want) {
        ADD_FAILURE() << "window " << w << " byte " << off + i << ": got " << int(buf[i + 1]) << " want " << int(want);
        return;
      }
    }
  }

  void reads_patterns_of_every_size_at_unaligned_addresses() const {
    const std::size_t sizes[] = {0, 1, 7, 4095, 4096, 4097, 65539, 1 << 20, (5 << 20) + 123, 20 << 20};
    const std::uint64_t offsets[] = {0, 1, 4095, 13};
    for (std::size_t len : sizes) {
      for (std::uint64_t off : offsets) {
        if (off + len <= kRwSize) expect_window(0, off, len);
      }
    }
    expect_window(1, 3, kRoSize - 3);
    expect_window(2, 4097, 100000);
  }

  void writes_land_exactly_and_read_back() const {
    std::mt19937 rng(7);
    struct Case {
      unsigned window;
      std::uint64_t off;
      std::size_t len;
    };
    const Case cases[] = {{0, 5, 1}, {0, 4093, 9000}, {0, 1 << 20, 3 << 20}, {0, 77, (6 << 20) + 5},
                          {2, 0, 4096}, {2, 123, 1 << 20}, {0, 100, 0}};
    for (const auto& c : cases) {
      std::vector<std::uint8_t> data(c.len);
      for (auto& b : data) b = static_cast<std::uint8_t>(rng());
      ASSERT_EQ(t_.write(base(c.window) + c.off, data.data(), c.len), 0) << c.off << "+" << c.len;
      expect_window(c.window, c.off, c.len, &data);
      // The bytes on either side are untouched.
      if (c.off > 0) expect_window(c.window, c.off - 1, 1);
      expect_window(c.window, c.off + c.len, 1);
      // Restore the pattern for the next case.
      std::vector<std::uint8_t> orig(c.len);
      fill_pattern(orig.data(), c.window, c.off, c.len);
      ASSERT_EQ(t_.write(base(c.window) + c.off, orig.data(), c.len), 0);
    }
  }

  void out_of_window_requests_are_refused_and_the_transport_keeps_working() const {
    std::vector<std::uint8_t> buf(8192);
    const std::uint64_t end0 = base(0) + kRwSize;
    EXPECT_EQ(t_.read(base(0) - 1, buf.data(), 2), -EFAULT);             // starts before
    EXPECT_EQ(t_.read(end0 - 10, buf.data(), 11), -EFAULT);              // runs past the end
    EXPECT_EQ(t_.read(end0, buf.data(), 1), -EFAULT);                    // just past
    EXPECT_EQ(t_.read(0, buf.data(), 16), -EFAULT);                      // address 0
    EXPECT_EQ(t_.read(~std::uint64_t{0} - 4, buf.data(), 16), -EFAULT);  // wraps around
    EXPECT_EQ(t_.write(end0 - 1, buf.data(), 2), -EFAULT);
    EXPECT_EQ(t_.write(base(1) + 10, buf.data(), 10), -EACCES);  // read-only window
    // A multi-chunk read whose last chunk leaves the window fails as a whole.
    std::vector<std::uint8_t> big(kRwSize);
    EXPECT_EQ(t_.read(base(0) + 4096, big.data(), kRwSize), -EFAULT);
    // The read-only window was not modified, and the connection still serves.
    expect_window(1, 0, 4096);
    expect_window(0, kRwSize - 4096, 4096);
  }

 private:
  MemoryTransport& t_;
};

}  // namespace shmkit::transport::testing
