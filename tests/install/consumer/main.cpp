// An outside program built against the installed shmkit, as README.md's "Use it in your project"
// builds it: a heap-backed std::vector filled by a forked child and summed by the parent. Without
// arguments the segment is anonymous; with a NAME it is the named segment NAME, left in /dev/shm
// so that the installed `shmkit` command (the package's imported target) can verify and remove it.
// Exit 0 when the sum is right.
#include <shmkit/shmkit.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

namespace {

int fill_and_sum(shmkit::Segment& seg) {
  shmkit::Heap& heap = shmkit::Heap::attach(seg);
  using Vec = std::vector<int, shmkit::Allocator<int>>;
  Vec* v = heap.find_or_construct<Vec>("numbers", shmkit::Allocator<int>(heap));
  pid_t pid = fork();
  if (pid < 0) return 2;
  if (pid == 0) {
    for (int i = 1; i <= 100; ++i) v->push_back(i);
    _exit(0);
  }
  int st = 0;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 3;
  long sum = 0;
  for (int x : *v) sum += x;
  std::printf("consumer: %zu numbers, sum %ld\n", v->size(), sum);
  shmkit::Heap::detach(seg);
  return sum == 5050 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    auto seg = shmkit::Segment::open_or_create(argv[1], 8 << 20);
    return fill_and_sum(seg);
  }
  auto seg = shmkit::Segment::create_anonymous(8 << 20);
  return fill_and_sum(seg);
}
