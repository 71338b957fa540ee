// MappingRegistry: this process's mappings of segments, keyed by the backing file (device, inode),
// so that opening a segment that is already mapped here — a second open in the same process, or
// an open by name in a forked child that inherited its parent's mapping — shares that mapping
// instead of failing on the occupied home address.
//
// INVARIANT1  for each entry: refs == number of live Segment objects in this process using `map`.
// The registry is plain process memory, so a forked child inherits it together with the mappings
// it describes (both copies stay true).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace shmkit::detail {

struct MappingKey {
  dev_t dev;
  ino_t ino;
};

// Returns the existing mapping of `key` at `base` (refs incremented) and sets *mapped_capacity to
// the length this process mapped there; or nullptr. The length is the one to trust: a header
// read back later may have been rewritten by another process.
std::byte* registry_find(MappingKey key, std::uintptr_t base, std::size_t* mapped_capacity) noexcept;
// Records a new mapping with refs = 1.
void registry_add(MappingKey key, std::byte* map, std::size_t capacity);
using CloseHook = void (*)(std::byte* map, void* ctx);
struct Hook {
  CloseHook fn;
  void* ctx;
};
// Drops one reference; returns true when it was the last (the caller runs `hooks` and unmaps).
// A mapping that was never registered returns true with no hooks.
bool registry_release(std::byte* map, std::vector<Hook>& hooks) noexcept;
void registry_add_hook(std::byte* map, Hook h);
void registry_remove_hook(std::byte* map, void* ctx) noexcept;

}  // namespace shmkit::detail
