// Test support shared by every test file: unique segment names, forked children that are always
// reaped, exec'd helper processes, and running the shmkit command.
//
// Exec'd helpers: a test file registers a function with SHMKIT_TEST_HELPER(name); the test binary
// started as `<binary> --shmkit-helper name args...` runs that function instead of the tests (the
// shared main() in testing.cpp dispatches), so a test can exec a fresh process image of itself.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace shmkit::testing {

// "/shmkit-test-<tag>-<pid>-<n>": unique per process and call, so parallel ctest runs never collide.
std::string unique_name(const std::string& tag);

// Removes the named /dev/shm segment on destruction (and at construction, in case a previous run
// crashed and left it).
class ShmNameGuard {
 public:
  explicit ShmNameGuard(std::string name);
  ~ShmNameGuard();
  ShmNameGuard(const ShmNameGuard&) = delete;
  ShmNameGuard& operator=(const ShmNameGuard&) = delete;
  const std::string& name() const { return name_; }
  const char* c_str() const { return name_.c_str(); }

 private:
  std::string name_;
};

// A forked child running `body`; its return value is the exit code. A child that throws exits 99.
// The destructor SIGKILLs and reaps a child still running, so no test leaves a process behind.
class Child {
 public:
  explicit Child(std::function<int()> body);
  explicit Child(pid_t pid) : pid_(pid) {}  // adopt an already started process
  ~Child();
  Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  Child& operator=(Child&&) = delete;
  pid_t pid() const { return pid_; }
  // Waits up to `timeout` for exit; returns the wait status, or nullopt on timeout.
  std::optional<int> wait_status(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Exit code when it exited normally, -signal when a signal killed it, -1000 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  void kill(int sig = 9);

 private:
  pid_t pid_;
};

// n bytes of MAP_SHARED|MAP_ANONYMOUS memory, inherited by forked children; unmapped on
// destruction. Throws std::runtime_error when mmap fails.
struct SharedMem {
  explicit SharedMem(std::size_t n);
  ~SharedMem();
  SharedMem(const SharedMem&) = delete;
  SharedMem& operator=(const SharedMem&) = delete;
  std::byte* base;
  std::size_t size;
};

// Starts this test binary again as `--shmkit-helper name args...` (fork + exec).
Child spawn_helper(const std::string& name, const std::vector<std::string>& args = {});

using HelperFn = int (*)(const std::vector<std::string>& args);
bool register_helper(const char* name, HelperFn fn);
#define SHMKIT_TEST_HELPER(name)                                                        \
  static int shmkit_helper_##name(const std::vector<std::string>& args);                \
  [[maybe_unused]] static const bool shmkit_helper_reg_##name =                         \
      ::shmkit::testing::register_helper(#name, &shmkit_helper_##name);                 \
  static int shmkit_helper_##name([[maybe_unused]] const std::vector<std::string>& args)

struct CommandResult {
  int exit_code = -1;  // -signal if killed by a signal
  std::string out;
  std::string err;
};
// Runs argv (argv[0] a path) with a time limit; kills it when the limit passes.
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));
// Runs the shmkit command-line tool built with this tree.
CommandResult run_tool(const std::vector<std::string>& args);

}  // namespace shmkit::testing
