#include "mapping_registry.hpp"

#include <mutex>
#include <vector>

namespace shmkit::detail {
namespace {
struct Entry {
  MappingKey key;
  std::byte* map;
  std::size_t capacity;
  int refs;
  std::vector<Hook> hooks;
};
std::mutex& mu() {
  static std::mutex m;
  return m;
}
std::vector<Entry>& entries() {
  static std::vector<Entry> e;
  return e;
}
}  // namespace

std::byte* registry_find(MappingKey key, std::uintptr_t base, std::size_t* mapped_capacity) noexcept {
  std::lock_guard g(mu());
  for (auto& e : entries())
    if (e.key.dev == key.dev && e.key.ino == key.ino && reinterpret_cast<std::uintptr_t>(e.map) == base) {
      ++e.refs;
      *mapped_capacity = e.capacity;
      return e.map;
    }
  return nullptr;
}

void registry_add(MappingKey key, std::byte* map, std::size_t capacity) {
  std::lock_guard g(mu());
  entries().push_back({key, map, capacity, 1, {}});
}

bool registry_release(std::byte* map, std::vector<Hook>& hooks) noexcept {
  std::lock_guard g(mu());
  auto& es = entries();
  for (std::size_t i = 0; i < es.size(); ++i)
    if (es[i].map == map) {
      if (--es[i].refs > 0) return false;
      hooks.swap(es[i].hooks);
      es.erase(es.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    }
  return true;
}

void registry_add_hook(std::byte* map, Hook h) {
  std::lock_guard g(mu());
  for (auto& e : entries())
    if (e.map == map) {
      e.hooks.push_back(h);
      return;
    }
  // A relocated mapping is not shared: keep an entry for its hooks only.
  entries().push_back({{0, 0}, map, 0, 1, {h}});
}

void registry_remove_hook(std::byte* map, void* ctx) noexcept {
  std::lock_guard g(mu());
  for (auto& e : entries())
    if (e.map == map)
      std::erase_if(e.hooks, [ctx](const Hook& h) { return h.ctx == ctx; });
}

}  // namespace shmkit::detail
