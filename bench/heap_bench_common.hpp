// Shared set-up for the heap benchmark families (heap_*.cpp): the three allocators behind one
// interface, each in a fresh arena, and the fixed-seed random generator every variant shares.
//   shmkit       — shmkit::Heap in an anonymous segment (memfd, MAP_SHARED; fork-inheritable)
//   boost_rbtree — boost::interprocess::managed_shared_memory (rbtree_best_fit, its default)
//   glibc_malloc — malloc/free of this process (the limit a process-local heap sets)
#pragma once

#include <unistd.h>

#include <boost/interprocess/managed_shared_memory.hpp>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "shmkit/heap/heap.hpp"
#include "shmkit/shm/segment.hpp"

namespace heap_bench {

// xorshift64*: cheap and identical for every variant, so generator cost cancels in the ratios.
struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed ? seed : 1) {}
  std::uint64_t operator()() noexcept {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
};

struct ShmkitArena {
  shmkit::Segment seg;
  shmkit::Heap* heap;
  explicit ShmkitArena(std::size_t size)
      : seg(shmkit::Segment::create_anonymous(std::size_t{4} << 20, {.capacity = size})),
        heap(&shmkit::Heap::attach(seg)) {}
  ~ShmkitArena() { shmkit::Heap::detach(seg); }
  void* allocate(std::size_t n) noexcept { return heap->allocate(n); }
  void deallocate(void* p) noexcept { (void)heap->deallocate(p); }
  const std::byte* base() const noexcept { return seg.base(); }
};

struct BoostArena {
  std::string name;
  std::unique_ptr<boost::interprocess::managed_shared_memory> msm;
  explicit BoostArena(std::size_t size)
      : name("shmkit-bench-heap-" + std::to_string(::getpid())) {
    boost::interprocess::shared_memory_object::remove(name.c_str());
    msm = std::make_unique<boost::interprocess::managed_shared_memory>(boost::interprocess::create_only,
                                                                       name.c_str(), size);
  }
  ~BoostArena() {
    msm.reset();
    boost::interprocess::shared_memory_object::remove(name.c_str());
  }
  void* allocate(std::size_t n) noexcept { return msm->allocate(n, std::nothrow); }
  void deallocate(void* p) noexcept { msm->deallocate(p); }
  const std::byte* base() const noexcept { return static_cast<const std::byte*>(msm->get_address()); }
};

struct GlibcArena {
  explicit GlibcArena(std::size_t) {}
  void* allocate(std::size_t n) noexcept { return std::malloc(n); }
  void deallocate(void* p) noexcept { std::free(p); }
};

}  // namespace heap_bench
