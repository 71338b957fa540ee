#include "shmkit/transport/connect_memory.hpp"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/transport/vm_lease.hpp"
#include "shmkit/transport/vm_transport.hpp"

namespace shmkit::transport {

namespace mp = memproto;

namespace {
// Parses "vm-cookie=ADDR:VALUE" (hex) from the agent's features.
bool find_cookie(const wire::Hello& h, std::uint64_t& addr, std::uint64_t& value) {
  for (const auto& f : h.features) {
    unsigned long long a = 0, v = 0;
    int used = 0;
    if (std::sscanf(f.c_str(), "vm-cookie=%llx:%llx%n", &a, &v, &used) == 2 &&
        static_cast<std::size_t>(used) == f.size()) {
      addr = a;
      value = v;
      return true;
    }
  }
  return false;
}
}  // namespace

Connection connect_memory(int fd, const ConnectOptions& opts) {
  std::string uring_why;
  if (opts.choice == TransportChoice::uring) {
    try {
      auto u = std::make_unique<UringTransport>(fd, opts.uring);
      std::string reason = "uring: asked for the io_uring transport";
      log().info("connect_memory: {}", reason);
      return {std::move(u), reason};
    } catch (const Error& e) {
      // Errc::unsupported comes from the ring's set-up, before the socket is touched (the
      // UringTransport contract), so the same connection can still do the socket handshake.
      if (e.code() != Errc::unsupported) throw;
      uring_why = std::string("io_uring unavailable (") + e.what() + ")";
    }
  }
  auto sock = std::make_unique<SocketTransport>(fd, opts.socket);
  const pid_t pid = sock->remote_pid();
  if (!uring_why.empty()) {
    std::string reason = "socket: " + uring_why;
    log().info("connect_memory: {}", reason);
    return {std::move(sock), reason};
  }
  if (opts.choice == TransportChoice::socket_only)
    return {std::move(sock), "socket: asked for the socket transport"};

  std::string why;
  std::uint64_t cookie_addr = 0, cookie = 0, seen = 0;
  if (!find_cookie(sock->peer_hello(), cookie_addr, cookie)) {
    why = "the agent announced no vm-cookie";
  } else if (pid <= 0) {
    why = "the kernel names no sender pid for the agent's Hello (the agent is in another pid namespace)";
  } else {
    int r = VmTransport::probe(pid, cookie_addr, &seen, sizeof seen);
    if (r < 0)
      why = "process_vm_readv on pid " + std::to_string(pid) + " failed: " + std::strerror(-r) +
            (r == -EPERM || r == -EACCES ? " (another user, a non-dumpable agent or no ptrace permission)"
             : r == -ESRCH ? " (the agent is in another pid namespace)" : "");
    else if (seen != cookie)
      why = "pid " + std::to_string(pid) + " does not hold the agent's cookie (another pid namespace?)";
  }
  LeaseMapping lease;
  std::vector<WindowDesc> ws;
  if (why.empty()) {
    // Without a lease the agent could not keep unexport_window()'s promise towards this client.
    std::string lease_why;
    bool refused = false;
    if (!sock->peer_hello().serves(mp::ids::lease)) {
      why = "the agent grants no vm lease (an older agent)";
    } else if (int r = request_lease(sock->fd(), sock->max_message(), Deadline::after(opts.socket.io_timeout),
                                     lease, ws, lease_why, &refused);
               r < 0) {
      if (!refused)  // the stream is out of step: not even the socket transport can use it
        throw Error(r == -ETIMEDOUT ? Errc::timed_out : Errc::protocol, "connect_memory: " + lease_why, -r);
      why = "no vm lease: " + lease_why;
    }
  }
  if (why.empty()) {
    std::string reason = "vm: process_vm_readv allowed on pid " + std::to_string(pid);
    log().info("connect_memory: {}", reason);
    return {std::make_unique<VmTransport>(pid, std::move(lease), std::move(ws), std::move(sock)), reason};
  }
  if (opts.choice == TransportChoice::vm_only)
    throw Error(Errc::permission_denied, "connect_memory: vm transport not possible: " + why);
  std::string reason = "socket: " + why;
  log().info("connect_memory: {}", reason);
  return {std::move(sock), reason};
}

}  // namespace shmkit::transport
