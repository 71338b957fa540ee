// Tests OffsetPtr<T>'s encoding: null is a value no valid target can produce — in particular a T
// of alignment 1 at this+1 (issue 14 item 14: it read as null when diff == 1 was the sentinel),
// a pointer to itself, and targets before and after it — and a copy recomputes the distance.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <new>

#include "shmkit/shm/offset_ptr.hpp"

using shmkit::OffsetPtr;

TEST(OffsetPtr, ACharAtThisPlusOneIsNotNull) {
  alignas(16) unsigned char buf[32];
  char* target = reinterpret_cast<char*>(buf) + 1;
  auto* p = new (buf) OffsetPtr<char>(target);
  EXPECT_TRUE(static_cast<bool>(*p));
  EXPECT_EQ(p->get(), target);
  p->~OffsetPtr();
}

TEST(OffsetPtr, EveryDistanceRoundTripsAndNullStaysNull) {
  alignas(16) unsigned char buf[4096];
  auto* p = new (buf + 2048) OffsetPtr<char>();
  EXPECT_FALSE(*p);
  EXPECT_EQ(p->get(), nullptr);
  for (std::ptrdiff_t d = -2048; d < 2048; ++d) {
    char* target = reinterpret_cast<char*>(buf + 2048 + d);
    *p = target;
    ASSERT_TRUE(static_cast<bool>(*p)) << "distance " << d << " reads as null";
    ASSERT_EQ(p->get(), target) << "distance " << d;
  }
  *p = nullptr;
  EXPECT_FALSE(*p);
  p->~OffsetPtr();
}

TEST(OffsetPtr, ACopyElsewherePointsAtTheSameTarget) {
  struct Node {
    int value;
    OffsetPtr<Node> next;
  };
  Node a{1, nullptr}, b{2, nullptr};
  a.next = &b;
  b.next = &b;  // points at the object it lives in (distance -8): not null either
  EXPECT_EQ(b.next.get(), &b);
  OffsetPtr<Node> copy = a.next;
  EXPECT_EQ(copy.get(), &b);
  EXPECT_EQ(copy->value, 2);
  OffsetPtr<Node> null_copy = OffsetPtr<Node>(nullptr);
  EXPECT_FALSE(null_copy);
}
