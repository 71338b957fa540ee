// The named-object directory: find_or_construct / find / destroy / names, and its repair after an
// owner death. Locking and the table's checks: directory.hpp.
#include <algorithm>
#include <cstring>
#include <string>

#include "directory.hpp"

namespace shmkit {

using namespace heapimpl;

namespace heapimpl {
DirEntry* dir_entries(Engine& e, u64& cap, bool& bad) noexcept {
  const HeapControl& c = e.c;
  u64 t = c.dir_table.load(std::memory_order_acquire);
  cap = c.dir_capacity.load(std::memory_order_acquire);
  bad = false;
  if (t == 0) {
    bad = cap != 0;
    cap = 0;
    return nullptr;
  }
  const u64 ch = t - kHeaderSize;
  bool ok = t % 64 == 0 && t >= kHeaderSize && e.valid_chunk(ch) && cap != 0;
  if (ok) {
    u64 w = e.word(ch).load(std::memory_order_acquire);
    ok = word_state(w) == st_used && cap <= (word_size(w) - kHeaderSize) / sizeof(DirEntry);
  }
  if (!ok) {
    bad = true;
    cap = 0;
    return nullptr;
  }
  return reinterpret_cast<DirEntry*>(e.base + t);  // cast-align: t % 64 == 0 (checked above)
}
[[noreturn]] void throw_bad_directory(const Heap& h) {
  const HeapControl& c = *h.control();
  throw Error(Errc::corrupt, "named-object directory of segment " + h.segment_name() +
                                 " is damaged (table offset " +
                                 std::to_string(c.dir_table.load(std::memory_order_relaxed)) + ", capacity " +
                                 std::to_string(c.dir_capacity.load(std::memory_order_relaxed)) +
                                 " do not describe a live block); run `shmkit verify` on it");
}
}  // namespace heapimpl

// Dir lock held, previous owner dead: undo a torn table swap, then settle entries that were being
// constructed or destroyed (their objects are freed: a half-built object is never published).
void Heap::repair_directory() noexcept {
  Engine e(*this);
  e.rollback(ctl_->dir_log);
  ctl_->dir_log.op.store(op_none, std::memory_order_relaxed);
  ctl_->dir_old_table.store(0, std::memory_order_relaxed);  // (a torn swap leaks the old table)
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);  // a damaged table is left alone (verify reports it)
  for (u64 i = 0; t != nullptr && i < cap; ++i) {
    DirEntry& d = t[i];
    u64 st = d.state.load(std::memory_order_acquire);
    if (st != dir_constructing && st != dir_destroying) continue;
    u64 ch = d.object - kHeaderSize;
    if (d.object >= kHeaderSize && e.valid_chunk(ch)) {
      u64 w = e.word(ch).load(std::memory_order_acquire);
      // Free it if it is still the entry's object: owned by the constructing process (a death before
      // disown; the owned-block CAS in deallocate decides against reclaim_dead) or shared.
      if ((word_state(w) == st_owned && word_owner(w) == d.owner_idx) || word_state(w) == st_used)
        (void)deallocate(base_ + d.object);
    }
    d.state.store(dir_empty, std::memory_order_release);
  }
}

void* Heap::named_get(std::string_view name, std::size_t size, std::size_t align, std::uint64_t type,
                      ConstructFn construct, void* ctx) {
  if (name.empty() || name.size() > kMaxName)
    throw Error(Errc::invalid_argument, "named object: a name must have 1.." + std::to_string(kMaxName) +
                                            " characters, got " + std::to_string(name.size()));
  Engine e(*this);
  DirectoryLock dir(e);
  dir.require();
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);
  if (bad) throw_bad_directory(*this);
  DirEntry* empty = nullptr;
  for (u64 i = 0; t != nullptr && i < cap; ++i) {
    DirEntry& d = t[i];
    u64 st = d.state.load(std::memory_order_acquire);
    if (st == dir_empty) {
      if (empty == nullptr) empty = &d;
      continue;
    }
    if (st != dir_ready || d.name_len != name.size() || std::memcmp(d.name, name.data(), name.size()) != 0)
      continue;
    if (d.size != size || d.type != type)
      throw Error(Errc::invalid_argument,
                  "named object '" + std::string(name) + "' exists with another type (size " +
                      std::to_string(d.size) + ", type hash " + std::to_string(d.type) + "; asked for size " +
                      std::to_string(size) + ", type hash " + std::to_string(type) + ")");
    void* obj = pointer_at_checked(d.object, size);
    if (obj == nullptr) throw Error(Errc::corrupt, "named object '" + std::string(name) + "': offset out of range");
    return obj;
  }
  if (construct == nullptr) return nullptr;
  if (empty == nullptr) {
    // Grow the table: new one (owned until published: a death before the swap frees it through
    // reclaim_dead), copy, swap in one logged transaction that also disowns the new table.
    u64 ncap = cap == 0 ? 32 : cap * 2;
    void* nt = allocate_owned(ncap * sizeof(DirEntry), 64);
    if (nt == nullptr) throw Error(Errc::out_of_memory, "named object directory: out of memory");
    std::memset(nt, 0, ncap * sizeof(DirEntry));
    if (t != nullptr) std::memcpy(nt, t, cap * sizeof(DirEntry));
    u64 nt_off = e.off_of(nt), nch = nt_off - kHeaderSize;
    u64 old = ctl_->dir_table.load(std::memory_order_relaxed);
    {
      Engine::Tx<kDirLogEntries> tx(e, ctl_->dir_log);
      u64 w = e.word(nch).load(std::memory_order_relaxed);
      tx.set(e.word(nch), e.make_word(nch, word_size(w), st_used));
      tx.set(ctl_->dir_table, nt_off);
      tx.set(ctl_->dir_capacity, ncap);
      tx.commit();
    }
    if (old != 0) (void)deallocate(base_ + old);
    t = static_cast<DirEntry*>(nt);
    empty = &t[cap];
  }
  void* obj = allocate_owned(size, std::max<std::size_t>(align, 16));
  if (obj == nullptr) throw Error(Errc::out_of_memory, "named object '" + std::string(name) + "': out of memory");
  u64 obj_off = e.off_of(obj), och = obj_off - kHeaderSize;
  empty->object = obj_off;
  empty->size = size;
  empty->type = type;
  empty->owner_idx = word_owner(e.word(och).load(std::memory_order_relaxed));
  empty->name_len = static_cast<u32>(name.size());
  std::memcpy(empty->name, name.data(), name.size());
  empty->name[name.size()] = '\0';
  empty->state.store(dir_constructing, std::memory_order_release);  // after the fields above
  try {
    construct(obj, ctx);
  } catch (...) {
    (void)deallocate(obj);
    empty->state.store(dir_empty, std::memory_order_release);
    throw;
  }
  // Disown, then publish (a death in between: the repairer frees the shared, unpublished object).
  u64 w = e.word(och).load(std::memory_order_relaxed);
  // acq_rel: the owned-block CAS protocol (see deallocate).
  if (!e.word(och).compare_exchange_strong(w, e.make_word(och, word_size(w), st_used), std::memory_order_acq_rel))
    throw Error(Errc::corrupt, "named object '" + std::string(name) + "': its block changed state while constructing");
  empty->state.store(dir_ready, std::memory_order_release);
  return obj;
}

void* Heap::pointer_at_checked(std::uint64_t off, std::size_t len) const noexcept {
  const u64 top = Engine(const_cast<Heap&>(*this)).limit();
  if (off < arena_begin_ || off > top || len > top - off) return nullptr;
  return base_ + off;
}

bool Heap::named_destroy(std::string_view name, std::size_t size, std::uint64_t type, DestroyFn destroy_fn) {
  Engine e(*this);
  DirectoryLock dir(e);
  dir.require();
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);
  if (bad) throw_bad_directory(*this);
  for (u64 i = 0; t != nullptr && i < cap; ++i) {
    DirEntry& d = t[i];
    if (d.state.load(std::memory_order_acquire) != dir_ready || d.name_len != name.size() ||
        std::memcmp(d.name, name.data(), name.size()) != 0)
      continue;
    if (d.size != size || d.type != type)
      throw Error(Errc::invalid_argument, "named object '" + std::string(name) + "' exists with another type");
    void* obj = pointer_at_checked(d.object, size);
    if (obj == nullptr) throw Error(Errc::corrupt, "named object '" + std::string(name) + "': offset out of range");
    d.state.store(dir_destroying, std::memory_order_release);
    destroy_fn(obj);
    // Unpublish before freeing: a death between the two leaks the block rather than freeing twice.
    d.state.store(dir_empty, std::memory_order_release);
    (void)deallocate(obj);
    return true;
  }
  return false;
}

std::vector<std::string> Heap::names() {
  Engine e(*this);
  DirectoryLock dir(e);
  dir.require();
  std::vector<std::string> out;
  u64 cap = 0;
  bool bad = false;
  DirEntry* t = dir_entries(e, cap, bad);
  for (u64 i = 0; t != nullptr && i < cap; ++i)
    if (t[i].state.load(std::memory_order_acquire) == dir_ready)
      out.emplace_back(t[i].name, std::min<std::size_t>(t[i].name_len, kMaxName));
  if (bad) throw_bad_directory(*this);
  return out;
}

}  // namespace shmkit
