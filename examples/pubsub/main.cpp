// pubsub: zero-copy publish/subscribe between processes, as a camera would use it.
//
// The parent creates a named segment /shmkit-example-pubsub-PID and two topics in its heap:
// "camera/frames" (1 MiB frames) and "camera/meta" (64-byte samples: frame number and the frame's
// checksum). It starts three subscriber processes with fork + exec of this program
// (`shmkit_pubsub --subscriber SEGMENT INDEX FRAMES`): each opens the segment by name, finds the
// topics by name, and waits on both at once with a shmkit::WaitSet.
//   * subscribers 0 and 1 use BackPressure::block_publisher: they must receive every frame and
//     every metadata sample, in order, exactly once;
//   * subscriber 2 is a slow viewer with BackPressure::drop_oldest and a queue of 2: it receives an
//     increasing subsequence that ends with the last frame.
// Every subscriber checks each frame's content against its checksum and its metadata sample. The
// publisher loans each frame from the heap, fills it in place (nothing is copied afterwards) and
// publishes it. The parent waits until all three subscribers are attached (it reads the topics'
// subscriber lists), publishes, reaps the subscribers, checks their exit codes and that the topics
// hold no sample any more (Topic::verify(), live_samples == 0), prints a summary and exits 0 only
// then.
//
//   shmkit_pubsub [frames=120]
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "shmkit/channels/pubsub.hpp"
#include "shmkit/channels/waitset.hpp"
#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/proc_control.hpp"

namespace {

using namespace shmkit;
using namespace std::chrono_literals;

constexpr std::size_t kFrameBytes = std::size_t{1} << 20;

struct Meta {  // 64 bytes
  std::uint64_t frame;
  std::uint64_t checksum;
  std::uint64_t width, height;
  std::uint8_t reserved[32];
};
static_assert(sizeof(Meta) == 64);

std::uint64_t fill_frame(std::byte* p, std::uint64_t frame) {
  std::uint64_t h = 1469598103934665603ULL;
  auto* w = reinterpret_cast<std::uint64_t*>(p);
  for (std::size_t i = 0; i < kFrameBytes / 8; ++i) {
    w[i] = (frame << 32) ^ (i * 0x9E3779B97F4A7C15ULL);
    h = (h ^ w[i]) * 1099511628211ULL;
  }
  return h;
}
std::uint64_t frame_checksum(const std::byte* p) {
  std::uint64_t h = 1469598103934665603ULL;
  const auto* w = reinterpret_cast<const std::uint64_t*>(p);
  for (std::size_t i = 0; i < kFrameBytes / 8; ++i) h = (h ^ w[i]) * 1099511628211ULL;
  return h;
}

int run_subscriber(const std::string& segment, int index, std::uint64_t frames) {
  Segment seg = Segment::open(segment);
  Heap& heap = Heap::attach(seg);
  const bool lossless = index < 2;
  SubscriberOptions so;
  so.policy = lossless ? BackPressure::block_publisher : BackPressure::drop_oldest;
  so.queue_depth = lossless ? 8 : 2;
  so.history = false;
  BytesSubscriber frames_sub(heap, "camera/frames", {}, so);
  Subscriber<Meta> meta_sub(heap, "camera/meta", {}, so);
  WaitSet ws(heap);
  ws.attach(frames_sub);
  ws.attach(meta_sub);
  std::uint64_t last_frame = 0, last_meta = 0, got_frames = 0, got_meta = 0, bad = 0;
  std::vector<std::uint64_t> sums(frames + 1, 0);  // frame -> checksum computed from the frame
  const auto give_up = Clock::now() + 60s;
  auto drain_frames = [&] {
    while (SampleBytes f = frames_sub.try_take()) {
      std::uint64_t n = 0;
      std::memcpy(&n, f.data(), 8);
      n >>= 32;
      if (f.size() != kFrameBytes || n <= last_frame || n > frames || (lossless && n != last_frame + 1)) ++bad;
      else sums[n] = frame_checksum(f.data());
      last_frame = n;
      ++got_frames;
    }
  };
  while ((last_frame < frames || last_meta < frames) && Clock::now() < give_up) {
    if (ws.wait(Clock::now() + 1s).empty()) continue;
    drain_frames();
    while (Sample<Meta> m = meta_sub.try_take()) {
      // A frame is published before its metadata: if this sample's frame was not queued when the
      // frames were drained above, it is now.
      if (m->frame <= frames && m->frame > last_frame) drain_frames();
      if (m->frame <= last_meta || m->frame > frames || (lossless && m->frame != last_meta + 1)) ++bad;
      else if (sums[m->frame] != 0 && sums[m->frame] != m->checksum) ++bad;
      else if (lossless && sums[m->frame] == 0) ++bad;  // a lossless subscriber has every frame
      last_meta = m->frame;
      ++got_meta;
    }
  }
  std::printf("subscriber %d (%s): %" PRIu64 " frames, %" PRIu64 " metadata samples, last %" PRIu64 "/%" PRIu64
              ", %" PRIu64 " bad\n",
              index, lossless ? "block_publisher" : "drop_oldest, queue 2", got_frames, got_meta, last_frame,
              last_meta, bad);
  if (bad != 0 || last_frame != frames || last_meta != frames) return 1;
  if (lossless && (got_frames != frames || got_meta != frames)) return 1;
  return 0;
}

void remove_quietly(const std::string& name) {
  try {
    Segment::remove(name);
  } catch (const Error& e) {
    if (e.code() != Errc::not_found) std::fprintf(stderr, "shmkit_pubsub: %s\n", e.what());
  }
}

int run_parent(std::uint64_t frames) {
  const std::string name = "/shmkit-example-pubsub-" + std::to_string(::getpid());
  remove_quietly(name);  // a leftover of a crashed earlier run with the same pid
  int rc = 1;
  std::vector<pid_t> kids;
  try {
    Segment seg = Segment::create(name, 32 << 20);
    Heap& heap = Heap::attach(seg);
    Topic frames_topic = Topic::open(heap, "camera/frames", {.max_subscribers = 4});
    Topic meta_topic = Topic::open(heap, "camera/meta", {.max_subscribers = 4});
    BytesPublisher frame_pub(heap, "camera/frames");
    Publisher<Meta> meta_pub(heap, "camera/meta");
    for (int i = 0; i < 3; ++i) {
      const pid_t pid = sys::fork();
      if (pid < 0) throw Error(Errc::system, "fork failed", -pid);
      if (pid == 0) {
        const std::string idx = std::to_string(i), n = std::to_string(frames);
        ::execl("/proc/self/exe", "shmkit_pubsub", "--subscriber", name.c_str(), idx.c_str(), n.c_str(),
                static_cast<char*>(nullptr));
        std::perror("shmkit_pubsub: exec");
        ::_exit(127);
      }
      kids.push_back(pid);
    }
    // Discovery works both ways: the subscribers found the topics by name; the publisher sees them
    // in the topics' subscriber lists.
    const auto until = Clock::now() + 30s;
    while ((frames_topic.stats().subscribers.size() < 3 || meta_topic.stats().subscribers.size() < 3) &&
           Clock::now() < until)
      std::this_thread::sleep_for(5ms);
    const auto t0 = Clock::now();
    for (std::uint64_t f = 1; f <= frames; ++f) {
      LoanedBytes frame = frame_pub.loan(kFrameBytes);
      if (!frame) throw Error(Errc::out_of_memory, "frame loan failed");
      const std::uint64_t sum = fill_frame(frame.data(), f);  // the camera writes in place
      if (frame_pub.publish(frame, Clock::now() + 10s) != PubSubStatus::ok) throw Error(Errc::timed_out, "frame publish");
      Loan<Meta> meta = meta_pub.loan(Meta{f, sum, 512, 512, {}});
      if (!meta || meta_pub.publish(std::move(meta), Clock::now() + 10s) != PubSubStatus::ok)
        throw Error(Errc::timed_out, "metadata publish");
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    bool kids_ok = true;
    for (pid_t pid : kids) {
      int st = 0;
      kids_ok = sys::waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 && kids_ok;
    }
    kids.clear();
    auto f1 = frames_topic.verify(), f2 = meta_topic.verify();
    for (auto& f : f1) std::printf("camera/frames: %s\n", f.c_str());
    for (auto& f : f2) std::printf("camera/meta: %s\n", f.c_str());
    const std::uint64_t live = frames_topic.stats().live_samples + meta_topic.stats().live_samples;
    std::printf("published %" PRIu64 " frames of 1 MiB and %" PRIu64 " metadata samples to 3 subscriber processes in %.3f s; samples still live: %" PRIu64 "\n",
                frames, frames, secs, live);
    rc = kids_ok && f1.empty() && f2.empty() && live == 0 ? 0 : 1;
    // No Heap::detach here: the publishers (destroyed before seg) still use the heap; closing the
    // mapping's last Segment gives the heap back.
  } catch (const Error& e) {
    std::fprintf(stderr, "shmkit_pubsub: %s\n", e.what());
    for (pid_t pid : kids) (void)sys::kill(pid, SIGKILL);
    for (pid_t pid : kids) (void)sys::waitpid(pid, nullptr, 0);
    rc = 1;
  }
  remove_quietly(name);
  std::printf("%s\n", rc == 0 ? "ok" : "FAILED");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 5 && std::strcmp(argv[1], "--subscriber") == 0)
      return run_subscriber(argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10));
    const std::uint64_t frames = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 120;
    if (frames == 0) {
      std::fprintf(stderr, "usage: shmkit_pubsub [frames >= 1]\n");
      return 2;
    }
    return run_parent(frames);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shmkit_pubsub: %s\n", e.what());
    return 1;
  }
}
