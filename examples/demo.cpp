// demo: two processes share one segment at the same fixed address.
//
// The first process creates a segment, writes a message into it, and stores a *raw pointer* to
// that message in the segment. It then starts a second, separately exec'd process that joins the
// segment by name: because the segment is mapped at the same base address in both, the raw
// pointer is valid there too. The second process prints what it sees and writes a reply, which
// the first prints. Exit status 0 when both saw what they expected.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"

namespace {

struct Board {            // lives at the start of the segment's data area
  const char* message;    // a raw pointer into the segment, valid in every process at home
  char reply[64];
};

int join(const char* name) {
  shmkit::Segment seg = shmkit::Segment::open(name);
  auto* board = seg.at<Board>(shmkit::SegmentHeader::kDataOffset);
  std::printf("[joiner  pid %d] mapped %s at %p (at home: %s)\n", getpid(), name,
              static_cast<void*>(seg.base()), seg.at_home() ? "yes" : "no");
  std::printf("[joiner  pid %d] following the raw pointer %p: \"%s\"\n", getpid(),
              static_cast<const void*>(board->message), board->message);
  std::snprintf(board->reply, sizeof board->reply, "hello back from pid %d", getpid());
  return std::strncmp(board->message, "hello from pid", 14) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::strcmp(argv[1], "--join") == 0) return join(argv[2]);
    std::string name = "/shmkit-demo-" + std::to_string(getpid());
    shmkit::Segment seg = shmkit::Segment::create(name, 1 << 20);
    std::printf("[creator pid %d] created %s at %p\n", getpid(), name.c_str(), static_cast<void*>(seg.base()));
    auto* board = seg.at<Board>(shmkit::SegmentHeader::kDataOffset);
    char* text = reinterpret_cast<char*>(board + 1);
    std::snprintf(text, 64, "hello from pid %d", getpid());
    board->message = text;

    std::fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
      execl("/proc/self/exe", argv[0], "--join", name.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    waitpid(child, &status, 0);
    std::printf("[creator pid %d] the joiner replied: \"%s\"\n", getpid(), board->reply);
    shmkit::Segment::remove(name);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && std::strncmp(board->reply, "hello back", 10) == 0;
    std::printf("%s\n", ok ? "demo: ok" : "demo: FAILED");
    return ok ? 0 : 1;
  } catch (const shmkit::Error& e) {
    std::fprintf(stderr, "demo: %s\n", e.what());
    return 1;
  }
}
