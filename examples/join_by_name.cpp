// join_by_name: two programs, started separately, share a std::map in a named segment.
//
//   shmkit_join_by_name put /orders 7 "seven"    # one terminal: store order 7
//   shmkit_join_by_name get /orders 7            # another terminal: read it back
//   shmkit_join_by_name dump /orders             # every order
//   shmkit rm /orders                            # when done
//
// Each run opens (or creates) the segment by name: it lands at the same fixed address in every
// process, so the std::map — with shmkit::Allocator, found or constructed by name in the shared
// heap — holds plain pointers that are valid everywhere. A shmkit::Lock, also found by name,
// guards it; if a process dies holding it, the next one is told (owner_died) and carries on.
//
// With no arguments it runs a self-check: it starts `put` and `get` as separate programs (exec) on
// a fresh segment and exits non-zero unless `get` printed what `put` stored.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>

#include "shmkit/shmkit.hpp"

namespace {

struct Order {
  char item[48];
  int quantity;
};
using OrderMap = std::map<int, Order, std::less<>, shmkit::Allocator<std::pair<const int, Order>>>;

// Runs `fn` with the map locked. A dead previous holder leaves the map as it was at its last
// completed insert (std::map's insert links the node last), so marking consistent is safe here.
template <class F>
int with_orders(const std::string& name, F fn) {
  auto seg = shmkit::Segment::open_or_create(name, 64 << 20);
  shmkit::Heap& heap = shmkit::Heap::attach(seg);
  auto* lock = heap.find_or_construct<shmkit::Lock>("orders.lock");
  auto* orders = heap.find_or_construct<OrderMap>("orders", shmkit::Allocator<std::pair<const int, Order>>(heap));
  shmkit::LockResult r = lock->acquire();
  if (r == shmkit::LockResult::owner_died) lock->mark_consistent();
  else if (r != shmkit::LockResult::acquired) {
    std::fprintf(stderr, "join_by_name: the orders lock is not usable\n");
    return 1;
  }
  int rc = fn(*orders);
  lock->unlock();
  shmkit::Heap::detach(seg);
  return rc;
}

int run(const std::vector<std::string>& a) {
  if (a.size() == 4 && a[0] == "put") {
    return with_orders(a[1], [&](OrderMap& m) {
      Order o{};
      std::snprintf(o.item, sizeof o.item, "%s", a[3].c_str());
      o.quantity = std::stoi(a[2]);
      m[std::stoi(a[2])] = o;
      std::printf("put %d %s\n", o.quantity, o.item);
      return 0;
    });
  }
  if (a.size() == 3 && a[0] == "get") {
    return with_orders(a[1], [&](OrderMap& m) {
      auto it = m.find(std::stoi(a[2]));
      if (it == m.end()) {
        std::printf("no order %s\n", a[2].c_str());
        return 1;
      }
      std::printf("got %d %s\n", it->first, it->second.item);
      return 0;
    });
  }
  if (a.size() == 2 && a[0] == "dump") {
    return with_orders(a[1], [&](OrderMap& m) {
      for (auto& [k, v] : m) std::printf("%d %s\n", k, v.item);
      return 0;
    });
  }
  std::fprintf(stderr, "usage: shmkit_join_by_name [put NAME N ITEM | get NAME N | dump NAME]\n");
  return 2;
}

// Runs this program again with args, its stdout captured; returns the exit status.
int run_self(const char* self, std::vector<std::string> args, std::string& out) {
  int p[2];
  if (pipe(p) != 0) return -1;
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    std::vector<char*> argv{const_cast<char*>(self)};
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(p[1]);
  char buf[256];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1) return run(std::vector<std::string>(argv + 1, argv + argc));
    std::string name = "/shmkit-join-by-name-" + std::to_string(getpid());
    std::string out1, out2;
    int rc1 = run_self(argv[0], {"put", name, "7", "seven-widgets"}, out1);
    int rc2 = run_self(argv[0], {"get", name, "7"}, out2);
    shmkit::Segment::remove(name);
    std::printf("%s%s", out1.c_str(), out2.c_str());
    bool ok = rc1 == 0 && rc2 == 0 && out2 == "got 7 seven-widgets\n";
    std::printf("join_by_name: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "join_by_name: %s\n", e.what());
    return 1;
  }
}
