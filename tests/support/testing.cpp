#include "testing.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include "shmkit/sys/syscall.hpp"

namespace shmkit::testing {

std::string unique_name(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "/shmkit-test-" + tag + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
}

ShmNameGuard::ShmNameGuard(std::string name) : name_(std::move(name)) { ::shm_unlink(name_.c_str()); }
ShmNameGuard::~ShmNameGuard() { ::shm_unlink(name_.c_str()); }

SharedMem::SharedMem(std::size_t n) : base(nullptr), size(n) {
  void* p = nullptr;
  if (sys::mmap(&p, nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0) != 0)
    throw std::runtime_error("mmap MAP_SHARED|MAP_ANONYMOUS failed");
  base = static_cast<std::byte*>(p);
}
SharedMem::~SharedMem() { (void)sys::munmap(base, size); }

Child::Child(std::function<int()> body) {
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d threw: %s\n", ::getpid(), e.what());
    } catch (...) {
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
  }
}

std::optional<int> Child::wait_status(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return st;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

int Child::wait(std::chrono::milliseconds timeout) {
  auto st = wait_status(timeout);
  if (!st) return -1000;
  if (WIFEXITED(*st)) return WEXITSTATUS(*st);
  if (WIFSIGNALED(*st)) return -WTERMSIG(*st);
  return -999;
}

void Child::kill(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

namespace {
std::map<std::string, HelperFn>& helpers() {
  static std::map<std::string, HelperFn> m;
  return m;
}
std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) throw std::runtime_error("readlink /proc/self/exe");
  buf[n] = '\0';
  return buf;
}
pid_t spawn(const std::vector<std::string>& argv, int out_fd, int err_fd) {
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (out_fd >= 0) ::dup2(out_fd, 1);
    if (err_fd >= 0) ::dup2(err_fd, 2);
    ::execv(cargv[0], cargv.data());
    std::fprintf(stderr, "exec %s: %s\n", cargv[0], std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}
}  // namespace

bool register_helper(const char* name, HelperFn fn) {
  helpers()[name] = fn;
  return true;
}

Child spawn_helper(const std::string& name, const std::vector<std::string>& args) {
  std::vector<std::string> argv{self_exe(), "--shmkit-helper", name};
  argv.insert(argv.end(), args.begin(), args.end());
  return Child(spawn(argv, -1, -1));
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_t pid = spawn(argv, out[1], err[1]);
  ::close(out[1]);
  ::close(err[1]);
  CommandResult res;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int r = ::poll(fds, 2, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        char buf[4096];
        ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n <= 0) {
          ::close(fds[i].fd);
          fds[i].fd = -1;
          --open_fds;
        } else {
          (i == 0 ? res.out : res.err).append(buf, static_cast<size_t>(n));
        }
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (killed) res.exit_code = -1000;
  else if (WIFEXITED(st)) res.exit_code = WEXITSTATUS(st);
  else if (WIFSIGNALED(st)) res.exit_code = -WTERMSIG(st);
  return res;
}

CommandResult run_tool(const std::vector<std::string>& args) {
  std::vector<std::string> argv{SHMKIT_TOOL_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv);
}

}  // namespace shmkit::testing

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--shmkit-helper") == 0) {
    auto& h = shmkit::testing::helpers();
    auto it = h.find(argv[2]);
    if (it == h.end()) {
      std::fprintf(stderr, "no test helper named %s\n", argv[2]);
      return 127;
    }
    std::vector<std::string> args(argv + 3, argv + argc);
    return it->second(args);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
