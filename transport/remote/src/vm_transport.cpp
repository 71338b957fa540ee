#include "shmkit/transport/vm_transport.hpp"

#include <poll.h>
#include <sys/uio.h>

#include <cerrno>

#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/socket_transport.hpp"

namespace shmkit::transport {

namespace mp = memproto;

VmTransport::VmTransport(pid_t pid, std::vector<WindowDesc> windows,
                         std::unique_ptr<MemoryTransport> control)
    : pid_(pid), windows_(std::move(windows)), control_(std::move(control)) {
  if (auto* s = dynamic_cast<SocketTransport*>(control_.get())) control_fd_ = s->fd();
}

int VmTransport::agent_hung_up() const noexcept {
  if (control_fd_ < 0) return 0;
  // Hang-up on the control connection: the agent died; its pid may already name another process.
  int ev = sys::poll_one(control_fd_, POLLIN, 0);
  return ev > 0 && (ev & (POLLHUP | POLLERR)) != 0 ? -EPIPE : 0;
}

int VmTransport::check(std::uint64_t remote, std::size_t len, bool write) const noexcept {
  const WindowDesc* hit = nullptr;
  for (const auto& w : windows_)
    if (mp::window_contains(w.address, w.length, remote, len)) {
      hit = &w;
      break;
    }
  if (hit == nullptr) return -EFAULT;
  if (write && (hit->access & mp::access_write) == 0) return -EACCES;
  return agent_hung_up();
}

namespace {
template <class Call>
int vm_loop(std::uint64_t remote, std::byte* local, std::size_t len, Call call) noexcept {
  std::size_t done = 0;
  while (done < len) {
    iovec l{local + done, len - done};
    iovec r{reinterpret_cast<void*>(static_cast<std::uintptr_t>(remote + done)), len - done};
    ssize_t n = call(&l, &r);
    if (n < 0) return n == -ESRCH ? -EPIPE : static_cast<int>(n);
    if (n == 0) return -EFAULT;  // a partial transfer stops at an unmapped page
    done += static_cast<std::size_t>(n);
  }
  return 0;
}
}  // namespace

int VmTransport::read(std::uint64_t remote, void* local, std::size_t len) noexcept {
  if (len == 0) return 0;
  if (int r = check(remote, len, false); r < 0) return r;
  const int r = vm_loop(remote, static_cast<std::byte*>(local), len, [&](const iovec* l, const iovec* rv) {
    return sys::process_vm_readv(pid_, l, 1, rv, 1);
  });
  if (r < 0) return r;
  return agent_hung_up();  // the bytes are the agent's only if it was still alive after the copy
}

int VmTransport::write(std::uint64_t remote, const void* local, std::size_t len) noexcept {
  if (len == 0) return 0;
  if (int r = check(remote, len, true); r < 0) return r;
  auto* p = static_cast<std::byte*>(const_cast<void*>(local));
  return vm_loop(remote, p, len, [&](const iovec* l, const iovec* r) {
    return sys::process_vm_writev(pid_, l, 1, r, 1);
  });
}

int VmTransport::probe(pid_t pid, std::uint64_t remote, void* local, std::size_t len) noexcept {
  iovec l{local, len};
  iovec r{reinterpret_cast<void*>(static_cast<std::uintptr_t>(remote)), len};
  ssize_t n = sys::process_vm_readv(pid, &l, 1, &r, 1);
  if (n < 0) return static_cast<int>(n);
  return static_cast<std::size_t>(n) == len ? 0 : -EFAULT;
}

}  // namespace shmkit::transport
