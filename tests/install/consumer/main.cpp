// An outside program built against the installed shmkit: a heap-backed std::vector in an anonymous
// segment, filled by a forked child and summed by the parent. Exit 0 when the sum is right.
#include <shmkit/shmkit.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

int main() {
  auto seg = shmkit::Segment::create_anonymous(8 << 20);
  shmkit::Heap& heap = shmkit::Heap::attach(seg);
  using Vec = std::vector<int, shmkit::Allocator<int>>;
  Vec* v = heap.find_or_construct<Vec>("numbers", shmkit::Allocator<int>(heap));
  pid_t pid = fork();
  if (pid == 0) {
    for (int i = 1; i <= 100; ++i) v->push_back(i);
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  long sum = 0;
  for (int x : *v) sum += x;
  std::printf("consumer: %zu numbers, sum %ld\n", v->size(), sum);
  return sum == 5050 ? 0 : 1;
}
