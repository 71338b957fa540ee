// Tests UringRing, the io_uring wrapper of the io_uring transport: the three submission cases of
// the design (free SQE; SQ full -> flush; EBUSY -> reap first, then retry) forced with tiny rings,
// completion-queue overflow losing nothing, completions routed by user_data to the mailbox of the
// requester that submitted them (many threads, results checked one by one), fixed buffers from a
// SpanArena, and a clear Errc::unsupported where io_uring is unavailable (a seccomp filter in a
// forked child). Tests that need io_uring skip themselves, with the reason, where it is missing.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"
#include "shmkit/sys/uring.hpp"
#include "shmkit/transport/span_arena.hpp"
#include "shmkit/transport/uring_ring.hpp"
#include "testing.hpp"

namespace {
using shmkit::transport::AllocStatus;
using shmkit::transport::SpanArena;
using shmkit::transport::UringCompletion;
using shmkit::transport::UringMailbox;
using shmkit::transport::UringRing;

#define SKIP_WITHOUT_URING()                                                          \
  do {                                                                                \
    if (int probe_ = shmkit::sys::uring_probe(); probe_ < 0) {                        \
      GTEST_SKIP() << shmkit::sys::uring_unavailable_reason(probe_);                  \
    }                                                                                 \
  } while (0)

int submit_nop(UringRing& ring, UringMailbox& mb, std::uint64_t token, bool flush = true) {
  return ring.submit(mb, token, [](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); }, flush);
}

// Receives exactly the tokens [0, n) from mb, each once.
void expect_tokens(UringRing& ring, UringMailbox& mb, std::uint64_t n) {
  std::set<std::uint64_t> seen;
  for (std::uint64_t i = 0; i < n; ++i) {
    UringCompletion c;
    ASSERT_EQ(ring.wait(mb, &c, 5000), 0) << "completion " << i << " of " << n;
    EXPECT_EQ(c.res, 0);
    EXPECT_LT(c.token, n);
    EXPECT_TRUE(seen.insert(c.token).second) << "token " << c.token << " delivered twice";
  }
  UringCompletion c;
  EXPECT_EQ(ring.wait(mb, &c, 0), -ENOMSG);  // nothing more outstanding: nothing extra delivered
}

TEST(UringRing, Case1FreeSlotFilledAndSubmitted) {
  SKIP_WITHOUT_URING();
  UringRing ring(UringRing::Options{4, 8, 64});
  UringMailbox mb(ring);
  ASSERT_EQ(submit_nop(ring, mb, 0), 0);
  ASSERT_EQ(submit_nop(ring, mb, 1), 0);
  EXPECT_EQ(ring.stats().direct, 2u);
  EXPECT_EQ(ring.stats().flushed_full, 0u);
  expect_tokens(ring, mb, 2);
}

TEST(UringRing, Case2FullQueueIsFlushed) {
  SKIP_WITHOUT_URING();
  UringRing ring(UringRing::Options{2, 64, 64});
  ASSERT_EQ(ring.sq_entries(), 2u);
  UringMailbox mb(ring);
  // Queue without flushing: every third submission finds the 2-entry SQ full.
  for (std::uint64_t i = 0; i < 12; ++i) ASSERT_EQ(submit_nop(ring, mb, i, false), 0);
  EXPECT_GE(ring.stats().flushed_full, 5u);
  expect_tokens(ring, mb, 12);
}

TEST(UringRing, Case3EbusyReapsThenRetries) {
  SKIP_WITHOUT_URING();
  UringRing ring(UringRing::Options{2, 4, 64});
  UringMailbox mb(ring);
  // Fill the CQ with finished NOPs nobody has reaped, then make the kernel answer EBUSY.
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(submit_nop(ring, mb, i), 0);
  ASSERT_EQ(ring.stats().completions, 0u);  // nothing reaped yet
  ring.inject_ebusy(3);
  for (std::uint64_t i = 4; i < 10; ++i) ASSERT_EQ(submit_nop(ring, mb, i, false), 0);
  ASSERT_EQ(ring.flush(), 0);
  auto st = ring.stats();
  EXPECT_EQ(st.ebusy_reaped, 3u);
  // The EBUSY path reaped the four finished completions into the mailbox before retrying.
  EXPECT_GE(st.completions, 4u);
  expect_tokens(ring, mb, 10);
}

TEST(UringRing, CompletionOverflowLosesNothing) {
  SKIP_WITHOUT_URING();
  UringRing ring(UringRing::Options{2, 4, 512});
  if (!ring.nodrop()) GTEST_SKIP() << "kernel without IORING_FEAT_NODROP: in-flight is capped instead";
  UringMailbox mb(ring);
  // 300 completions into a 4-entry CQ, nothing reaped in between: the kernel must hold the rest.
  for (std::uint64_t i = 0; i < 300; ++i) ASSERT_EQ(submit_nop(ring, mb, i), 0);
  EXPECT_EQ(ring.stats().completions, 0u);
  expect_tokens(ring, mb, 300);
  EXPECT_GT(ring.stats().overflow_flushes, 0u);
  EXPECT_EQ(ring.stats().completions, 300u);
  EXPECT_EQ(ring.stats().stale, 0u);
}

// Many threads, each with its own mailbox, read 64-byte records at random offsets of a memfd
// through one small ring into fixed buffers of a shared SpanArena; each checks every result.
TEST(UringRing, ManyRequestersEachGetOnlyTheirOwnCompletions) {
  SKIP_WITHOUT_URING();
  constexpr int kThreads = 4, kOps = 2000, kRecords = 4096;
  int fd = shmkit::sys::memfd_create("uring-ring-test", 0);
  ASSERT_GE(fd, 0);
  std::vector<std::uint64_t> file(kRecords * 8);
  for (std::size_t i = 0; i < file.size(); ++i) file[i] = i * 0x9E3779B97F4A7C15ull;
  ASSERT_EQ(shmkit::sys::write(fd, file.data(), file.size() * 8),
            static_cast<ssize_t>(file.size() * 8));

  UringRing ring(UringRing::Options{4, 8, 256});  // tiny: all three paths get exercised
  SpanArena arena(1 << 20);
  const bool fixed = ring.register_buffer(arena.base(), arena.capacity()) == 0;
  std::vector<SpanArena::Span> bufs(kThreads * 8);
  for (auto& b : bufs) ASSERT_EQ(arena.try_allocate(64, &b), AllocStatus::ok);

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      UringMailbox mb(ring);
      std::uint64_t rng = 88172645463325252ull + static_cast<std::uint64_t>(t);
      int done = 0, issued = 0;
      std::uint64_t record_of[8];
      std::vector<unsigned> free_bufs = {0, 1, 2, 3, 4, 5, 6, 7};  // buffers with no read in flight
      while (done < kOps) {
        // Keep up to 8 reads in flight; token = thread << 32 | buffer index.
        while (!free_bufs.empty() && issued < kOps) {
          rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
          const unsigned bi = free_bufs.back();
          free_bufs.pop_back();
          record_of[bi] = rng % kRecords;
          SpanArena::Span& b = bufs[static_cast<std::size_t>(t * 8) + bi];
          std::memset(b.data, 0, 64);
          const std::uint64_t token = (std::uint64_t(t) << 32) | bi;
          int r = ring.submit(mb, token, [&](io_uring_sqe* sqe) {
            if (fixed) {
              io_uring_prep_read_fixed(sqe, fd, b.data, 64, record_of[bi] * 64, 0);
            } else {
              io_uring_prep_read(sqe, fd, b.data, 64, record_of[bi] * 64);
            }
          });
          if (r != 0) {
            ++failures;
            return;
          }
          ++issued;
        }
        UringCompletion c;
        if (ring.wait(mb, &c, 5000) != 0 || (c.token >> 32) != std::uint64_t(t) || c.res != 64) {
          ++failures;  // a timeout, another requester's completion, or a failed read
          return;
        }
        const unsigned bi = c.token & 0xffffffffu;
        std::uint64_t got[8];
        std::memcpy(got, bufs[static_cast<std::size_t>(t * 8) + bi].data, 64);
        for (int k = 0; k < 8; ++k) {
          if (got[k] != file[record_of[bi] * 8 + static_cast<std::uint64_t>(k)]) ++failures;
        }
        free_bufs.push_back(bi);
        ++done;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto st = ring.stats();
  EXPECT_EQ(st.completions, std::uint64_t{kThreads} * kOps);
  EXPECT_EQ(st.stale, 0u);
  EXPECT_GT(st.flushed_full + st.direct, 0u);
  (void)shmkit::sys::close(fd);
}

// A seccomp filter that makes io_uring_setup fail with `err`, installed in a forked child.
bool block_io_uring(int err) {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<unsigned>(err) & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

TEST(UringRing, UnavailableIsAClearUnsupportedError) {
  for (int err : {ENOSYS, EPERM}) {
    shmkit::testing::Child child([err] {
      if (!block_io_uring(err)) return 3;
      if (shmkit::sys::uring_probe() != -err) return 4;
      try {
        UringRing ring;
        return 5;  // must not get here
      } catch (const shmkit::Error& e) {
        if (e.code() != shmkit::Errc::unsupported || e.sys_errno() != err) return 6;
        if (std::strstr(e.what(), "io_uring") == nullptr) return 7;
        return 0;
      }
    });
    EXPECT_EQ(child.wait(std::chrono::seconds(10)), 0) << "errno " << err;
  }
}

}  // namespace
