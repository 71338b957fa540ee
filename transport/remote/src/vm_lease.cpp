#include "shmkit/transport/vm_lease.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <new>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/frame_io.hpp"
#include "shmkit/transport/memory_protocol.hpp"

namespace shmkit::transport {

namespace mp = memproto;

namespace {
constexpr int kLeaseSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

int map_page(int fd, LeasePage** out) noexcept {
  void* p = nullptr;
  if (int r = sys::mmap(&p, nullptr, kLeasePageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0); r < 0) return r;
  *out = static_cast<LeasePage*>(p);
  return 0;
}
}  // namespace

LeaseMapping::~LeaseMapping() {
  if (page_ != nullptr) (void)sys::munmap(page_, kLeasePageSize);
}

LeaseMapping& LeaseMapping::operator=(LeaseMapping&& o) noexcept {
  if (this != &o) {
    if (page_ != nullptr) (void)sys::munmap(page_, kLeasePageSize);
    page_ = o.page_;
    o.page_ = nullptr;
  }
  return *this;
}

LeaseMapping LeaseMapping::create(std::span<const WindowDesc> windows, int* fd_out) {
  if (windows.size() > kLeaseMaxWindows)
    throw Error(Errc::invalid_argument, "vm lease: " + std::to_string(windows.size()) +
                                            " windows, a lease page holds at most " +
                                            std::to_string(kLeaseMaxWindows));
  const int fd = sys::check(sys::memfd_create("shmkit-vm-lease", MFD_CLOEXEC | MFD_ALLOW_SEALING),
                            "vm lease: memfd_create");
  LeasePage* page = nullptr;
  int r = sys::ftruncate(fd, kLeasePageSize);
  const char* what = "ftruncate";
  if (r == 0) {
    // Sealed before the client sees it: neither side can shrink the file under the other's mapping.
    r = sys::add_seals(fd, kLeaseSeals);
    what = "F_ADD_SEALS";
  }
  if (r == 0) {
    r = map_page(fd, &page);
    what = "mmap";
  }
  if (r < 0) {
    (void)sys::close(fd);
    throw Error(Errc::system, std::string("vm lease: ") + what + " failed", -r);
  }
  // The file is new and zero-filled: every in_flight and revoked starts at 0. Placement-new makes
  // the atomics live objects; the plain fields are written before the fd is passed (send_lease's
  // sendmsg orders them before the client's recvmsg).
  auto* lp = new (page) LeasePage{};
  lp->magic = kLeaseMagic;
  lp->count = static_cast<std::uint32_t>(windows.size());
  for (std::size_t i = 0; i < windows.size(); ++i) {
    lp->windows[i].address = windows[i].address;
    lp->windows[i].length = windows[i].length;
    lp->windows[i].access = windows[i].access;
    lp->windows[i].flags = windows[i].flags;
  }
  *fd_out = fd;
  return LeaseMapping(lp);
}

int LeaseMapping::attach(int fd, LeaseMapping& out, std::vector<WindowDesc>& windows, std::string& why) noexcept {
  struct ::stat st{};
  if (int r = sys::fstat(fd, &st); r < 0) return why = "fstat of the lease failed", r;
  const int seals = sys::get_seals(fd);
  if (!S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(kLeasePageSize) || seals < 0 ||
      (seals & F_SEAL_SHRINK) == 0)
    return why = "the lease is not a memfd of one page sealed against shrinking", -EPROTO;
  LeasePage* page = nullptr;
  if (int r = map_page(fd, &page); r < 0) return why = "mapping the lease failed", r;
  LeaseMapping m(page);
  // Read once each: the agent may rewrite these fields; only the checked copies are used.
  const std::uint32_t magic = page->magic;
  const std::uint32_t count = page->count;
  if (magic != kLeaseMagic || count > kLeaseMaxWindows)
    return why = "the lease page's magic or window count is wrong", -EPROTO;  // INVARIANT3
  std::vector<WindowDesc> ws;
  try {
    ws.reserve(count);
  } catch (...) {
    return why = "out of memory", -ENOMEM;
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    const WindowDesc w{page->windows[i].address, page->windows[i].length, page->windows[i].access,
                        page->windows[i].flags};
    if (w.length == 0 || w.address + w.length < w.address)
      return why = "the lease page holds an empty or wrapping window", -EPROTO;  // INVARIANT2
    ws.push_back(w);
  }
  out = std::move(m);
  windows = std::move(ws);
  return 0;
}

bool LeaseMapping::revoke(std::uint64_t address) noexcept {
  bool any = false;
  const std::uint32_t n = page_->count;  // our own page's count: the client does not write it
  for (std::uint32_t i = 0; i < n && i < kLeaseMaxWindows; ++i)
    if (page_->windows[i].address == address) {
      // (C): seq_cst, pairs with the client's (A)(B) in VmTransport (vm_lease.hpp, Dekker).
      page_->windows[i].revoked.store(1, std::memory_order_seq_cst);
      any = true;
    }
  return any;
}

void LeaseMapping::revoke_all() noexcept {
  for (std::size_t i = 0; i < kLeaseMaxWindows; ++i)
    page_->windows[i].revoked.store(1, std::memory_order_seq_cst);  // (C) for every window
}

int LeaseMapping::wait_until_idle(int sock, Deadline deadline) const noexcept {
  for (;;) {
    // (D): seq_cst, after (C) in this thread; pairs with the client's (A), and its acquire side
    // with the client's release (E): the finished transfer happens-before our return.
    if (page_->in_flight.load(std::memory_order_seq_cst) == 0) return 0;
    if (deadline.expired()) return -ETIMEDOUT;
    // A transfer takes microseconds; sleeping 1 ms at a time leaves the CPU to the client. No
    // events asked: poll reports only a hang-up (or error) of the client's connection.
    const int ev = sys::poll_one(sock, 0, 1);
    if (ev > 0 && (ev & (POLLHUP | POLLERR | POLLNVAL)) != 0) return -EPIPE;
  }
}

int send_lease(int sock, wire::Tag tag, int lease_fd, Deadline deadline) noexcept {
  // The header alone, then the payload's one byte with the descriptor: a plain recv of the header
  // never reaches into the message that carries it (the kernel does not merge them).
  const wire::Header h{wire::kHeaderSize + 1, mp::ids::lease, 0, tag};
  if (int r = send_all(sock, &h, sizeof h, deadline); r < 0) return r;
  for (;;) {
    const int r = sys::send_fd(sock, lease_fd);
    if (r != -EAGAIN) return r;
    if (deadline.expired()) return -ETIMEDOUT;
    if (int p = sys::poll_one(sock, POLLOUT, deadline.poll_timeout_ms()); p < 0) return p;
  }
}

int request_lease(int sock, std::uint32_t max_message, Deadline deadline, LeaseMapping& out,
                  std::vector<WindowDesc>& windows, std::string& why, bool* refused) noexcept {
  *refused = false;
  const wire::Header req{wire::kHeaderSize, mp::ids::lease, 0, 0};
  if (int r = send_all(sock, &req, sizeof req, deadline); r < 0) return why = "sending the Lease request failed", r;
  wire::Header h{};
  if (int r = recv_exact(sock, &h, sizeof h, deadline); r < 0) return why = "no reply to the Lease request", r;
  if (wire::check_header(h, max_message) != wire::Status::ok || h.tag != 0)
    return why = "malformed reply to the Lease request", -EPROTO;
  if (h.id == wire::ids::error) {
    std::byte buf[wire::kMinMaxMessage];
    const std::uint32_t n = wire::payload_size(h);
    wire::ErrorView e;
    if (n > sizeof buf || recv_exact(sock, buf, n, deadline) < 0 ||
        wire::decode_error(std::span<const std::byte>(buf, n), e) != wire::Status::ok)
      return why = "malformed Error reply to the Lease request", -EPROTO;
    why = "the agent refused a lease: " + std::string(e.detail);
    *refused = true;
    return e.code > 0 ? -e.code : -EPROTO;
  }
  if (h.id != mp::ids::lease || h.length != wire::kHeaderSize + 1)
    return why = "the reply to Lease is not a lease", -EPROTO;
  int fd = -EAGAIN;
  for (;;) {
    fd = sys::recv_fd(sock);
    if (fd != -EAGAIN) break;
    if (deadline.expired()) return why = "timed out waiting for the lease descriptor", -ETIMEDOUT;
    if (int p = sys::poll_one(sock, POLLIN, deadline.poll_timeout_ms()); p < 0) return why = "poll failed", p;
  }
  if (fd < 0) return why = "the Lease reply carried no descriptor", fd == -EPIPE ? -EPIPE : -EPROTO;
  const int r = LeaseMapping::attach(fd, out, windows, why);
  (void)sys::close(fd);
  *refused = r < 0;  // the whole reply was read: the stream is in step
  return r;
}

}  // namespace shmkit::transport
