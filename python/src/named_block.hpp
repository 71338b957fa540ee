// Named variable-size blocks (shared arrays, queues): the heap's named-object directory holds
// fixed-size records, so each is a small record, named, that points at a block of the heap.
// Records are written once, by their constructor under the directory lock, and then only read;
// a reader validates every field against its own heap before using it (a peer may be buggy).
#pragma once

#include <cstdint>
#include <string>

#include "segment_ref.hpp"
#include "shmkit/sys/process.hpp"

namespace shmkit::python {

struct BlockRecord {
  std::uint64_t magic;
  std::uint64_t data;     // segment offset of the block
  std::uint64_t nbytes;   // bytes of the block that belong to the object
  std::uint32_t owned;    // 1: allocated with allocate_owned by `owner` (reclaimed at its death)
  std::uint32_t param;    // object-specific (a queue's max_message)
  sys::ProcessIdentity owner;
};
static_assert(sizeof(BlockRecord) == 48 && std::is_standard_layout_v<BlockRecord>);

/// The block of a validated record: pointer into this process's mapping, or raises Corrupt.
std::byte* block_of(SegmentRef& ref, const BlockRecord& rec, std::uint64_t magic, const std::string& what);

/// Allocates the block of a new record (zero-filled); raises OutOfMemory.
void init_record(Heap& heap, BlockRecord& rec, std::uint64_t magic, std::uint64_t nbytes, bool owned,
                 const std::string& what);

}  // namespace shmkit::python
