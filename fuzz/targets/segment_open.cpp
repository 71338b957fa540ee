// Fuzz entry point: a segment file made of hostile bytes, opened with Segment::adopt and, when
// that succeeds, walked the way `shmkit info` / `shmkit verify` and a user process do (heap
// attach, verify, stats, names, a few allocations). Nothing may crash; refusals are
// shmkit::Error. Shared by fuzz/fuzz_segment_open.cpp (libFuzzer, clang) and
// tests/fuzz/corpus_replay_test.cpp (GCC), so the corpus is replayed by the normal suite.
//
// Input: byte 0 chooses how the rest becomes the file (so short inputs reach deep fields):
//   0 raw      the rest IS the file (header validation, truncated files)
//   1 overlay  the rest overwrites the start of a template segment (the header and the heap
//              control block, with a valid remainder behind them)
//   2 patches  the rest is a list of patches {u32 offset (mod template size), u8 len, bytes}
//              applied to the template (reaches chunks, free lists and the directory)
// The template is a real segment with a heap, live/free/cached blocks and named objects, made
// once per process.
//
// SHMKIT_FUZZ_NO_HEAP=1 stops after the segment checks (open, header, attach table): a way to
// keep fuzzing header validation while a heap crash the fuzzer found is still open.
//
// Lock words: the harness clears every lock it will take (the segment's admin lock and the
// heap's arena, class and directory locks) before using the segment. A lock word naming a live
// thread legitimately blocks every acquirer (no lock can tell a forged owner from a slow one), so
// a random owner would make the fuzzer report hangs instead of bugs; what a forged owner does is
// tested in tests/hostile/lock_word_test.cpp.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../heap/src/layout.hpp"  // the heap control block, to clear its lock words
#include "shmkit/heap/heap.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/syscall.hpp"

namespace shmkit::fuzz {

struct NamedPair {
  std::uint64_t a, b;
};

// A small real segment: heap with used, free (arena bins) and cached (central lists) chunks, and
// a named-object directory. Returned as the file's bytes.
inline const std::vector<std::byte>& segment_template() {
  static const std::vector<std::byte> image = [] {
    SegmentOptions o;
    o.capacity = std::size_t{4} << 20;
    o.attach = true;  // leaves one attach entry (this process) in the image
    Segment seg = Segment::create_anonymous(std::size_t{1} << 18, o);
    Heap& heap = Heap::attach(seg);
    std::vector<void*> blocks;
    for (std::size_t n : {16u, 24u, 40u, 100u, 500u, 1000u, 2000u, 5000u, 9000u, 70u, 16u, 3000u})
      blocks.push_back(heap.allocate(n));
    // Free every other one: arena-free chunks in bins, small ones via the cache.
    for (std::size_t i = 0; i < blocks.size(); i += 2) (void)heap.deallocate(blocks[i]);
    (void)heap.allocate_owned(64);
    *heap.find_or_construct<std::uint64_t>("counter", std::uint64_t{7}) += 1;
    (void)heap.find_or_construct<NamedPair>("pair", NamedPair{1, 2});
    Heap::detach(seg);  // caches go back to the central lists
    long size = sys::file_size(seg.fd());
    std::vector<std::byte> out(static_cast<std::size_t>(size > 0 ? size : 0));
    std::size_t got = 0;
    while (got < out.size()) {
      ssize_t r = sys::pread(seg.fd(), out.data() + got, out.size() - got, static_cast<off_t>(got));
      if (r <= 0) break;
      got += static_cast<std::size_t>(r);
    }
    out.resize(got);
    return out;
  }();
  return image;
}

inline std::vector<std::byte> segment_file_from_input(const std::uint8_t* data, std::size_t n) {
  if (n == 0) return {};
  const std::uint8_t mode = data[0] % 3;
  ++data;
  --n;
  if (mode == 0) {
    std::vector<std::byte> f(n);
    if (n != 0) std::memcpy(f.data(), data, n);
    return f;
  }
  std::vector<std::byte> f = segment_template();
  if (f.empty()) return f;
  if (mode == 1) {
    std::memcpy(f.data(), data, std::min(n, f.size()));
    return f;
  }
  std::size_t pos = 0;
  while (pos + 5 <= n) {
    std::uint32_t off;
    std::memcpy(&off, data + pos, 4);
    std::size_t len = data[pos + 4];
    pos += 5;
    len = std::min(len, n - pos);
    std::size_t at = off % f.size();
    len = std::min(len, f.size() - at);
    std::memcpy(f.data() + at, data + pos, len);
    pos += len;
  }
  return f;
}

inline void clear_lock(Lock& l) noexcept {
  // All-zero bytes are an unlocked, consistent Lock (segment_header.hpp relies on the same).
  std::memset(static_cast<void*>(&l), 0, sizeof(Lock));
}

// Clears the locks of the heap control block at its root, when the root points at a block that
// lies inside the segment.
inline void clear_heap_locks(Segment& seg) noexcept {
  std::uint64_t off = seg.header().root(RootSlot::heap).load(std::memory_order_relaxed);
  auto* ctl = static_cast<heapimpl::ControlBlock*>(seg.pointer_at(off, sizeof(heapimpl::ControlBlock)));
  if (ctl == nullptr || off % 64 != 0) return;
  clear_lock(ctl->arena_lock);
  for (auto& c : ctl->classes) clear_lock(c.lock);
  clear_lock(ctl->dir_lock);
}

// Runs what info/verify and a user process would do on the segment. Returns 0 always (libFuzzer).
inline int segment_open_one(const std::uint8_t* data, std::size_t n) {
  std::vector<std::byte> file = segment_file_from_input(data, n);
  int fd = sys::memfd_create("shmkit-fuzz", MFD_CLOEXEC);
  if (fd < 0) return 0;
  std::size_t done = 0;
  while (done < file.size()) {
    ssize_t w = sys::write(fd, file.data() + done, file.size() - done);
    if (w <= 0) {
      (void)sys::close(fd);
      return 0;
    }
    done += static_cast<std::size_t>(w);
  }
  SegmentOptions o;
  o.attach = false;  // as the shmkit command does; attach=true is covered after the checks below
  o.relocate = Relocate::allowed;
  o.open_timeout = std::chrono::milliseconds(50);
  try {
    Segment seg = Segment::adopt(fd, o);  // owns fd
    clear_lock(seg.header().admin_lock);
    (void)seg.home();
    (void)seg.at_home();
    (void)seg.attached();
    clear_heap_locks(seg);
    static const bool no_heap = [] {
      const char* v = std::getenv("SHMKIT_FUZZ_NO_HEAP");
      return v != nullptr && v[0] == '1';
    }();
    if (no_heap) return 0;
    try {
      Heap& heap = Heap::attach(seg);
      clear_heap_locks(seg);  // attach may have created the heap: harmless
      (void)heap.verify();
      (void)heap.stats();
      (void)heap.names();
      void* a = heap.allocate(48);
      void* b = heap.allocate(3000);
      if (a != nullptr) (void)heap.deallocate(a);
      if (b != nullptr) (void)heap.deallocate(b);
      try {
        (void)heap.find<std::uint64_t>("counter");
      } catch (const Error&) {
      }
      (void)heap.reclaim_dead();
    } catch (const Error&) {
    }
    Heap::detach(seg);
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace shmkit::fuzz
