// remote_memory: reading and updating objects in another process's shared heap from a process
// that cannot map the segment.
//
// The owner creates an anonymous segment (a memfd nobody else can open), puts an Inventory in its
// heap as a named object, and exports the segment through a transport Agent (serving on a thread
// of its own). It then starts a client with fork + exec: a fresh program image that inherits only
// two connected sockets, never the segment's descriptor. The client connects twice:
//   * connect_memory(): process_vm_readv when the kernel allows it (same user), else sockets;
//   * connect_memory(socket_only): requests over the socket, the agent splicing from the
//     segment's fd.
// Through each it reads the whole Inventory, prints it, and updates one item's quantity with a
// write of just that field. The owner then checks in its own mapping that both updates landed.
// Exit status 0 when they did.
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/transport/agent.hpp"
#include "shmkit/transport/connect_memory.hpp"

namespace {

using namespace shmkit;
using namespace shmkit::transport;

struct Item {
  char name[24];
  std::int64_t quantity;
  std::int64_t price_cents;
};
struct Inventory {
  std::uint32_t count;
  std::uint32_t version;
  Item items[8];
};

void print(const char* who, const Inventory& inv) {
  std::printf("[%s] inventory version %u, %u items:\n", who, inv.version, inv.count);
  for (std::uint32_t i = 0; i < inv.count && i < 8; ++i)
    std::printf("    %-12s qty %4" PRId64 "  price %6.2f\n", inv.items[i].name, inv.items[i].quantity,
                static_cast<double>(inv.items[i].price_cents) / 100.0);
}

// The client: reads and updates the remote Inventory at `remote` through one transport.
bool use(MemoryTransport& t, const char* label, std::uint64_t remote, std::uint32_t item,
         std::int64_t new_quantity) {
  Inventory inv;
  if (int r = t.read(remote, &inv, sizeof inv); r != 0) {
    std::fprintf(stderr, "[%s] read failed: %s\n", label, std::strerror(-r));
    return false;
  }
  print(label, inv);
  // Update one field, in place, in the other process.
  const std::uint64_t field = remote + offsetof(Inventory, items) + item * sizeof(Item) + offsetof(Item, quantity);
  if (int r = t.write(field, &new_quantity, sizeof new_quantity); r != 0) {
    std::fprintf(stderr, "[%s] write failed: %s\n", label, std::strerror(-r));
    return false;
  }
  std::printf("[%s] set %s quantity to %" PRId64 "\n", label, inv.items[item].name, new_quantity);
  // Reading outside the exported segment is refused, not served.
  std::uint64_t probe = 0;
  int r = t.read(8, &probe, sizeof probe);
  std::printf("[%s] reading address 0x8 (not exported): %s\n", label, std::strerror(-r));
  return r == -EFAULT;
}

int client(int auto_fd, int socket_fd, std::uint64_t remote) {
  Connection a = connect_memory(auto_fd);
  std::printf("[client pid %d] connect_memory picked %s\n", ::getpid(), a.reason.c_str());
  ConnectOptions so;
  so.choice = TransportChoice::socket_only;
  Connection b = connect_memory(socket_fd, so);
  bool ok = use(*a.transport, a.transport->kind() == "vm" ? "client/vm" : "client/socket", remote, 1, 41);
  ok = use(*b.transport, "client/socket", remote, 2, 17) && ok;
  return ok ? 0 : 1;
}

int owner(const char* self) {
  Segment seg = Segment::create_anonymous(std::size_t{16} << 20);
  Heap& heap = Heap::attach(seg);
  auto* inv = heap.find_or_construct<Inventory>("inventory");
  const char* names[] = {"bolts", "nuts", "washers", "rivets"};
  inv->count = 4;
  inv->version = 1;
  for (std::uint32_t i = 0; i < inv->count; ++i) {
    std::snprintf(inv->items[i].name, sizeof inv->items[i].name, "%s", names[i]);
    inv->items[i].quantity = 100 * (i + 1);
    inv->items[i].price_cents = 5 + 7 * i;
  }
  print("owner", *inv);

  Agent agent;
  agent.export_segment(seg, /*writable=*/true);
  int a[2], b[2];
  sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, a), "socketpair");
  sys::check(sys::socketpair(AF_UNIX, SOCK_STREAM, 0, b), "socketpair");
  agent.add_client(a[0]);
  agent.add_client(b[0]);
  agent.start();

  // The client inherits exactly these two descriptors (everything else is close-on-exec,
  // including the segment's memfd).
  sys::check(sys::set_cloexec(a[1], false), "fcntl");
  sys::check(sys::set_cloexec(b[1], false), "fcntl");
  std::string fa = std::to_string(a[1]), fb = std::to_string(b[1]);
  char addr[32];
  std::snprintf(addr, sizeof addr, "%" PRIxPTR, reinterpret_cast<std::uintptr_t>(inv));
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw Error(Errc::system, "fork failed", errno);
  if (pid == 0) {
    ::execl(self, self, "--client", fa.c_str(), fb.c_str(), addr, static_cast<char*>(nullptr));
    std::perror("exec");
    ::_exit(127);
  }
  (void)sys::close(a[1]);
  (void)sys::close(b[1]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  agent.stop();
  print("owner, after the client", *inv);
  bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && inv->items[1].quantity == 41 &&
            inv->items[2].quantity == 17 && inv->items[0].quantity == 100 && inv->items[3].quantity == 400;
  AgentStats s = agent.stats();
  std::printf("[owner] agent served %" PRIu64 " requests (%" PRIu64 " bytes spliced, %" PRIu64
              " copied, %" PRIu64 " errors); %s\n",
              s.requests, s.bytes_spliced, s.bytes_copied, s.error_replies, ok ? "OK" : "FAILED");
  Heap::detach(seg);  // before the segment closes (the heap's per-thread state lives in it)
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 5 && std::strcmp(argv[1], "--client") == 0)
      return client(std::stoi(argv[2]), std::stoi(argv[3]), std::stoull(argv[4], nullptr, 16));
    return owner("/proc/self/exe");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "remote_memory: %s\n", e.what());
    return 1;
  }
}
