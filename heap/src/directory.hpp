// The named-object directory's lock and table (heap/src): DirectoryLock, the one way the
// directory lock is taken, and dir_entries, the checked view of the table. The directory's
// operations are Heap members (directory.cpp).
#pragma once

#include "engine.hpp"
#include "shmkit/sys/error.hpp"

namespace shmkit::heapimpl {

// The directory locks this thread holds, innermost last (process-private: never read from the
// segment). A constructor run by find_or_construct may use another heap's directory, hence a stack.
inline constexpr int kMaxDirDepth = 8;
inline thread_local const HeapControl* t_dir_held[kMaxDirDepth];
inline thread_local int t_dir_depth = 0;

// Holds a heap's directory lock for a scope (repaired when its previous owner died). A scope
// nested in one of this thread that holds the same lock takes nothing: the lock is held and was
// repaired already, and Lock is not recursive. That nesting is real: a failed allocation inside
// find_or_construct (or a thread there that finds every cache slot taken) runs reclaim_dead,
// which needs the directory lock (issue 14 item 11).
class DirectoryLock {
 public:
  explicit DirectoryLock(Engine& e) noexcept : c_(e.c) {
    for (int i = 0; i < t_dir_depth; ++i)
      if (t_dir_held[i] == &c_) {
        held_ = true;
        return;
      }
    if (t_dir_depth == kMaxDirDepth || !e.lock_directory()) return;
    held_ = taken_ = true;
    t_dir_held[t_dir_depth++] = &c_;
  }
  ~DirectoryLock() {
    if (!taken_) return;
    --t_dir_depth;  // scopes end in reverse order of their start
    Engine::unlock(c_.dir_lock);
  }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  bool held() const noexcept { return held_; }
  void require() const {
    if (!held_)
      throw Error(Errc::not_recoverable, t_dir_depth == kMaxDirDepth
                                             ? "named object directory: named objects nested more than 8 deep"
                                             : "named object directory: its lock is not recoverable");
  }

 private:
  HeapControl& c_;
  bool held_ = false, taken_ = false;
};

// The directory table, checked before use (issue 10): dir_table must be the user memory of a
// live (used) chunk of the arena, 64-aligned as named_get allocates it, and dir_capacity entries
// must fit in that chunk. Returns nullptr with cap 0 when there is no table, and nullptr with
// `bad` set when the two words do not describe one (a damaged segment).
DirEntry* dir_entries(Engine& e, u64& cap, bool& bad) noexcept;
[[noreturn]] void throw_bad_directory(const Heap& h);

}  // namespace shmkit::heapimpl
