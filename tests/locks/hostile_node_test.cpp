// A peer that can write a segment must not be able to steer what a lock's owner writes (issue 14,
// item 4). A held lock's robust-list node lives in the segment; before the fix the owner's unlock()
// followed the node's prev/next pointers and stored through them, so a peer could make it write a
// pointer to any address it chose, and the node showed every reader the owner's list-head address.
// Real processes throughout: an owner, an attacker that writes the node (or the word) while the
// owner holds the lock, and the test process checking canaries the attacker aimed at.
//  * APeerCannotSteerTheOwnersUnlock: the attacker points prev/next at two canaries; the owner's
//    unlock must leave them intact, release the lock, and report the overwritten link.
//  * AHeldLocksNodeRevealsNoPrivateAddressOfItsOwner: while a process holds two locks, every
//    pointer-sized field of both nodes is 0 or an address inside the segment (never glibc's head);
//    killed, the process still leaves both locks owner_died (the kernel's walk still finds them).
//  * AnOverwrittenWordIsReportedAndLeavesTheOwnersList: the attacker rewrites the word itself; the
//    owner's unlock() throws Errc::corrupt and the lock leaves the owner's robust chain, so its
//    later locking and unlocking of other locks works.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "lock_test_util.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

using namespace shmkit;
using namespace std::chrono_literals;
using shmkit::testing::Child;
using shmkit::testing::eventually;
using shmkit::testing::Shared;
using shmkit::testing::sleep_until_killed;

namespace {

constexpr std::uint64_t kCanary = 0x5ca1ab1e0ddba11ull;

struct Arena {
  Lock a;
  Lock b;
  std::atomic<int> stage{0};
  std::uint64_t canary_prev = kCanary;  // the attacker aims the node's links at these two
  std::uint64_t canary_next = kCanary;
  std::uint64_t owner_head = 0;         // the owner's glibc robust list head address
  std::uint64_t owner_overwrites = ~std::uint64_t{0};
  int owner_errc = -1;
};

// The robust-list node of a Lock: prev at offset 24, next at offset 32 (lock.hpp static_asserts).
void write_node_field(Lock& l, std::size_t offset, const void* value) {
  std::memcpy(reinterpret_cast<char*>(&l) + offset, &value, sizeof value);
}
std::uint64_t read_field(const Lock& l, std::size_t offset) {
  std::uint64_t v;
  std::memcpy(&v, reinterpret_cast<const char*>(&l) + offset, sizeof v);
  return v;
}

bool wait_stage(Arena& s, int stage) {
  return eventually([&] { return s.stage.load() >= stage; }, 5s);
}

// The owner's first half: takes lock a, says so (stage 1), and waits until the attacker is done
// (stage 2). Returns the child's failure exit code, or 0.
int hold_a_while_attacked(Arena& s) {
  if (s.a.acquire() != LockResult::acquired) return 1;
  s.stage.store(1);
  return wait_stage(s, 2) ? 0 : 2;
}

}  // namespace

TEST(LocksHostileNode, APeerCannotSteerTheOwnersUnlock) {
  Shared<Arena> s;
  Child owner([&] {
    if (int rc = hold_a_while_attacked(*s); rc != 0) return rc;
    try {
      s->a.unlock();
    } catch (const Error&) {
      return 3;
    }
    s->owner_overwrites = robust_link_overwrites();
    return 0;
  });
  Child attacker([&] {
    if (!wait_stage(*s, 1)) return 1;
    // The old unlink stored prev into *(next - 8) and next into *prev: aim both at a canary.
    write_node_field(s->a, 24, &s->canary_prev);
    write_node_field(s->a, 32, reinterpret_cast<char*>(&s->canary_next) + 8);
    s->stage.store(2);
    return 0;
  });
  EXPECT_EQ(attacker.wait(10s), 0);
  EXPECT_EQ(owner.wait(10s), 0) << "the owner's unlock (exit 3: threw; negative: killed by that signal)";
  EXPECT_EQ(s->canary_prev, kCanary) << std::hex << "the owner's unlock wrote 0x" << s->canary_prev
                                     << " through a link the attacker set";
  EXPECT_EQ(s->canary_next, kCanary) << std::hex << "the owner's unlock wrote 0x" << s->canary_next
                                     << " through a link the attacker set";
  EXPECT_EQ(s->a.try_acquire(), LockResult::acquired) << "the owner's unlock did not release the lock";
  s->a.unlock();
  EXPECT_EQ(s->owner_overwrites, 1u) << "the owner did not report the overwritten link";
}

TEST(LocksHostileNode, AHeldLocksNodeRevealsNoPrivateAddressOfItsOwner) {
  Shared<Arena> s;
  Child owner([&] {
    if (s->a.acquire() != LockResult::acquired || s->b.acquire() != LockResult::acquired) return 1;
    s->owner_head = reinterpret_cast<std::uintptr_t>(locks_detail::thread_state().head);
    s->stage.store(1);
    sleep_until_killed();
  });
  ASSERT_TRUE(wait_stage(*s, 1)) << "owner exit " << owner.wait(1s);
  const auto lo = reinterpret_cast<std::uintptr_t>(s.get());
  const auto hi = lo + sizeof(Arena);
  for (const Lock* l : {&s->a, &s->b}) {
    for (std::size_t off = 8; off + 8 <= sizeof(Lock); off += 8) {
      const std::uint64_t v = read_field(*l, off);
      EXPECT_NE(v, s->owner_head) << "lock " << (l == &s->a ? "a" : "b") << " offset " << off
                                  << " shows the owner's robust list head";
      EXPECT_TRUE(v == 0 || (v >= lo && v < hi))
          << "lock " << (l == &s->a ? "a" : "b") << " offset " << off << " holds 0x" << std::hex << v
          << ", an address outside the segment [0x" << lo << ", 0x" << hi << ")";
    }
  }
  owner.kill(SIGKILL);
  ASSERT_EQ(owner.wait(5s), -SIGKILL);
  EXPECT_EQ(s->a.acquire(), LockResult::owner_died) << "the kernel's walk missed lock a";
  EXPECT_EQ(s->b.acquire(), LockResult::owner_died) << "the kernel's walk missed lock b";
  s->a.mark_consistent();
  s->b.mark_consistent();
  s->b.unlock();
  s->a.unlock();
}

TEST(LocksHostileNode, AnOverwrittenWordIsReportedAndLeavesTheOwnersList) {
  Shared<Arena> s;
  Child owner([&] {
    if (int rc = hold_a_while_attacked(*s); rc != 0) return rc;
    try {
      s->a.unlock();
      return 3;  // the word says someone else holds it: this cannot be a normal unlock
    } catch (const Error& e) {
      s->owner_errc = static_cast<int>(e.code());
    }
    if (s->a.held_by_this_thread()) return 4;
    // The lock is no longer in this thread's chain: locking others still works, and the old node
    // is not written again (the attacker now owns its bytes).
    const std::uint64_t before = read_field(s->a, 32);
    if (s->b.acquire() != LockResult::acquired) return 5;
    s->b.unlock();
    if (read_field(s->a, 32) != before) return 6;
    return 0;
  });
  ASSERT_TRUE(wait_stage(*s, 1)) << "owner exit " << owner.wait(1s);
  const std::uint32_t forged = 1;  // tid 1 (init): alive, never ours
  std::memcpy(static_cast<void*>(&s->a), &forged, sizeof forged);
  s->stage.store(2);
  EXPECT_EQ(owner.wait(10s), 0);
  EXPECT_EQ(s->owner_errc, static_cast<int>(Errc::corrupt));
}
