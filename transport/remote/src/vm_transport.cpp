#include "shmkit/transport/vm_transport.hpp"

#include <poll.h>
#include <sys/uio.h>

#include <cerrno>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/socket_transport.hpp"

namespace shmkit::transport {

namespace mp = memproto;

VmTransport::VmTransport(pid_t pid, LeaseMapping lease, std::vector<WindowDesc> windows,
                         std::unique_ptr<MemoryTransport> control)
    : pid_(pid), lease_(std::move(lease)), windows_(std::move(windows)), control_(std::move(control)) {
  // begin_transfer indexes the page's table with the index of windows_: it must be that table.
  if (!lease_ || windows_.size() > lease_.page()->count || windows_.size() > kLeaseMaxWindows)
    throw Error(Errc::invalid_argument, "VmTransport: the window list is not the lease page's table");
  if (auto* s = dynamic_cast<SocketTransport*>(control_.get())) control_fd_ = s->fd();
}

int VmTransport::agent_hung_up() const noexcept {
  if (control_fd_ < 0) return 0;
  // Hang-up on the control connection: the agent died; its pid may already name another process.
  int ev = sys::poll_one(control_fd_, POLLIN, 0);
  return ev > 0 && (ev & (POLLHUP | POLLERR)) != 0 ? -EPIPE : 0;
}

int VmTransport::begin_transfer(std::uint64_t remote, std::size_t len, bool write) noexcept {
  std::size_t i = 0;
  while (i < windows_.size() && !mp::window_contains(windows_[i].address, windows_[i].length, remote, len)) ++i;
  if (i == windows_.size()) return -EFAULT;
  if (write && (windows_[i].access & mp::access_write) == 0) return -EACCES;
  LeasePage* page = lease_.page();
  // (A): seq_cst, pairs with the agent's revoke (C) then load of in_flight (D) (vm_lease.hpp,
  // Dekker): either the load below sees the revoke, or the agent sees this count and waits.
  page->in_flight.fetch_add(1, std::memory_order_seq_cst);
  // (B): seq_cst, the other half of the pair. i < windows_.size() <= the page's count: in bounds.
  if (page->windows[i].revoked.load(std::memory_order_seq_cst) != 0) {
    end_transfer();
    return -EFAULT;  // unexported: the socket transport's answer too
  }
  if (int r = agent_hung_up(); r < 0) {
    end_transfer();
    return r;
  }
  return 0;
}

void VmTransport::end_transfer() noexcept {
  // (E): release, pairs with the agent's (D): the finished transfer happens-before the agent's
  // return from unexport_window(). No later access needs ordering against it, hence not seq_cst.
  lease_.page()->in_flight.fetch_sub(1, std::memory_order_release);
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
  if (int r = begin_transfer(remote, len, false); r < 0) return r;
  const int r = vm_loop(remote, static_cast<std::byte*>(local), len, [&](const iovec* l, const iovec* rv) {
    return sys::process_vm_readv(pid_, l, 1, rv, 1);
  });
  end_transfer();
  if (r < 0) return r;
  return agent_hung_up();  // the bytes are the agent's only if it was still alive after the copy
}

int VmTransport::write(std::uint64_t remote, const void* local, std::size_t len) noexcept {
  if (len == 0) return 0;
  if (int r = begin_transfer(remote, len, true); r < 0) return r;
  auto* p = static_cast<std::byte*>(const_cast<void*>(local));
  const int r = vm_loop(remote, p, len, [&](const iovec* l, const iovec* rv) {
    return sys::process_vm_writev(pid_, l, 1, rv, 1);
  });
  end_transfer();
  return r;
}

int VmTransport::probe(pid_t pid, std::uint64_t remote, void* local, std::size_t len) noexcept {
  iovec l{local, len};
  iovec r{reinterpret_cast<void*>(static_cast<std::uintptr_t>(remote)), len};
  ssize_t n = sys::process_vm_readv(pid, &l, 1, &r, 1);
  if (n < 0) return static_cast<int>(n);
  return static_cast<std::size_t>(n) == len ? 0 : -EFAULT;
}

}  // namespace shmkit::transport
