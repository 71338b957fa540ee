#include "named_block.hpp"

#include <cstring>

#include "shmkit/sys/error.hpp"

namespace shmkit::python {

std::byte* block_of(SegmentRef& ref, const BlockRecord& rec, std::uint64_t magic, const std::string& what) {
  Heap& heap = ref.heap();
  void* p = rec.magic == magic ? ref.segment().pointer_at(rec.data, rec.nbytes) : nullptr;
  // The block must be a live block of this heap that is large enough: anything else is a record
  // written by a buggy or hostile peer (or a block freed under us).
  if (p == nullptr || !heap.owns(p) || heap.usable_size(p) < rec.nbytes)
    throw Error(Errc::corrupt, what + ": its record does not describe a live block of the heap (offset " +
                                   std::to_string(rec.data) + ", " + std::to_string(rec.nbytes) +
                                   " bytes); run `shmkit verify` on the segment");
  return static_cast<std::byte*>(p);
}

void init_record(Heap& heap, BlockRecord& rec, std::uint64_t magic, std::uint64_t nbytes, bool owned,
                 const std::string& what) {
  const std::size_t n = nbytes == 0 ? 1 : nbytes;
  void* p = owned ? heap.allocate_owned(n, 64) : heap.allocate(n, 64);
  if (p == nullptr)
    throw Error(Errc::out_of_memory, what + ": out of memory for " + std::to_string(nbytes) +
                                         " bytes in the heap of segment '" + heap.segment_name() + "'");
  std::memset(p, 0, n);
  rec.magic = magic;
  rec.data = static_cast<std::uint64_t>(static_cast<std::byte*>(p) - heap.base());  // just allocated: inside the mapping
  rec.nbytes = nbytes;
  rec.owned = owned ? 1 : 0;
  rec.param = 0;
  rec.owner = sys::this_process();
}

}  // namespace shmkit::python
