// Test support: a fake memory agent in a forked process that speaks the handshake by hand, so a
// test can make it lie (the pid in its Hello, the messages it serves) or stall in the middle of a
// Read reply's payload, which a real Agent never does on purpose.
#pragma once

#include <unistd.h>

#include <array>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "memory_agent_fixture.hpp"
#include "shmkit/transport/memory_protocol.hpp"
#include "shmkit/transport/vm_lease.hpp"

namespace shmkit::transport::testing {

namespace mp = shmkit::transport::memproto;

// Set before fork, so the forked fake agent and the test process hold the same cookie and the same
// window contents at the same addresses.
inline std::uint64_t g_cookie = 0;
inline std::array<std::uint8_t, 1 << 20> g_window{};

struct FakeAgent {
  std::int32_t claimed_pid = 0;  // the pid its Hello names
  bool memory_agent = true;      // false: a wire peer that serves nothing
  // Read replies: after this many payload bytes, wait for one byte on `resume_fd` before the
  // rest (SIZE_MAX: never stall).
  std::size_t stall_after = SIZE_MAX;
  int resume_fd = -1;
  std::uint8_t fill = 0xAB;      // the bytes of every Read reply
  bool grants_lease = true;      // false: an agent from before vm leases (memproto::ids::lease)
};

// Answers one client the way an agent would, with `fake`'s lies; then waits for the client to hang
// up. Exit 0, or the step that failed.
inline int serve_fake_agent(int fd, const FakeAgent& fake) {
  std::vector<std::byte> buf(wire::kDefaultMaxMessage);
  wire::Header h{};
  const auto deadline = [] { return Deadline::after(std::chrono::seconds(10)); };
  if (recv_frame(fd, h, buf, wire::kDefaultMaxMessage, deadline()) < 0 || h.id != wire::ids::hello) return 3;
  wire::Hello mine;
  mine.pid = fake.claimed_pid;
  if (fake.memory_agent) {
    mine.ids = {mp::ids::windows, mp::ids::read, mp::ids::write};
    if (fake.grants_lease) mine.ids.push_back(mp::ids::lease);
    char cookie[80];
    std::snprintf(cookie, sizeof cookie, "vm-cookie=%llx:%llx",
                  static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(&g_cookie)),
                  static_cast<unsigned long long>(g_cookie));
    mine.features = {"memory", cookie};
  } else {
    mine.features = {"chat"};
  }
  const std::uint32_t n = wire::encode_hello(buf, h.tag, mine);
  if (n == 0 || send_all(fd, buf.data(), n, deadline()) < 0) return 4;
  const mp::WindowDesc w{reinterpret_cast<std::uintptr_t>(g_window.data()), g_window.size(),
                         mp::access_read | mp::access_write, 0};
  LeaseMapping lease;  // the vm client's, kept while it is connected
  for (;;) {
    const long p = recv_frame(fd, h, buf, wire::kDefaultMaxMessage, deadline());
    if (p < 0) return 0;  // the client hung up
    if (h.id == mp::ids::lease) {
      int lease_fd = -1;
      lease = LeaseMapping::create(std::span<const mp::WindowDesc>(&w, 1), &lease_fd);
      const int r = send_lease(fd, h.tag, lease_fd, deadline());
      (void)sys::close(lease_fd);
      if (r < 0) return 8;
    } else if (h.id == mp::ids::windows) {
      wire::Writer wr(buf);
      wr.begin(mp::ids::windows, h.tag);
      wr.slice(std::span<const mp::WindowDesc>(&w, 1));
      const std::uint32_t m = wr.finish();
      if (m == 0 || send_all(fd, buf.data(), m, deadline()) < 0) return 5;
    } else if (h.id == mp::ids::read && static_cast<std::size_t>(p) >= sizeof(mp::ReadRequest)) {
      mp::ReadRequest rq;
      std::memcpy(&rq, buf.data(), sizeof rq);
      wire::Header reply{static_cast<std::uint32_t>(wire::kHeaderSize + rq.length), mp::ids::read, 0, h.tag};
      std::vector<std::uint8_t> payload(rq.length, fake.fill);
      if (send_all(fd, &reply, sizeof reply, deadline()) < 0) return 0;
      const std::size_t first = std::min<std::size_t>(payload.size(), fake.stall_after);
      if (send_all(fd, payload.data(), first, deadline()) < 0) return 0;
      if (first < payload.size()) {
        char go = 0;
        if (sys::read(fake.resume_fd, &go, 1) != 1) return 6;
        (void)send_all(fd, payload.data() + first, payload.size() - first, deadline());
      }
    } else {
      return 7;
    }
  }
}

// A connected socket whose other end a forked fake agent serves.
struct FakeAgentProcess {
  explicit FakeAgentProcess(const FakeAgent& fake) {
    int sv[2];
    sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
    client_fd = sv[0];
    child.emplace([&] {
      (void)sys::close(sv[0]);
      return serve_fake_agent(sv[1], fake);
    });
    (void)sys::close(sv[1]);
  }
  std::optional<shmkit::testing::Child> child;
  int client_fd = -1;
};

}  // namespace shmkit::transport::testing
