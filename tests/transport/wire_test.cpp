// Tests the wire format (transport/wire.hpp): round trips of every marshalled kind, header checks
// against the negotiated maximum, and that every decoder refuses truncated, oversized and
// malformed input instead of reading past the end of the buffer.
#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <string>
#include <vector>

#include "shmkit/transport/wire.hpp"

namespace wire = shmkit::transport::wire;
using wire::Status;

namespace {

struct Pair {
  std::uint64_t a;
  std::uint32_t b;
  std::uint32_t c;
};

std::span<const std::byte> payload_of(std::span<const std::byte> frame) {
  return frame.subspan(wire::kHeaderSize);
}

TEST(Wire, RoundTripsEveryKind) {
  std::array<std::byte, 512> buf{};
  wire::Writer w(buf);
  w.begin(77, 0x1122334455667788ull);
  w.u8(0xab);
  w.u16(0xbeef);
  w.u32(0xdeadbeef);
  w.u64(0x0102030405060708ull);
  w.i32(-5);
  w.i64(-6);
  w.string("hello");
  std::vector<std::string> arr{"", "x", "three"};
  w.strings(std::span<const std::string>(arr));
  w.pod(Pair{1, 2, 3});
  std::array<Pair, 2> pairs{Pair{4, 5, 6}, Pair{7, 8, 9}};
  w.slice(std::span<const Pair>(pairs));
  std::uint32_t len = w.finish();
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(len, w.size());

  wire::Header h;
  std::memcpy(&h, buf.data(), sizeof h);
  EXPECT_EQ(h.length, len);
  EXPECT_EQ(h.id, 77);
  EXPECT_EQ(h.tag, 0x1122334455667788ull);
  EXPECT_EQ(wire::check_header(h, 4096), Status::ok);

  wire::Reader r(payload_of(std::span<const std::byte>(buf).first(len)));
  std::uint8_t u8;
  std::uint16_t u16;
  std::uint32_t u32;
  std::uint64_t u64;
  std::int32_t i32;
  std::int64_t i64;
  std::string_view s;
  wire::StringArrayView sa;
  Pair p;
  wire::SliceView<Pair> sl;
  ASSERT_TRUE(r.u8(u8) && r.u16(u16) && r.u32(u32) && r.u64(u64) && r.i32(i32) && r.i64(i64));
  ASSERT_TRUE(r.string(s) && r.strings(sa) && r.pod(p) && r.slice(sl));
  EXPECT_EQ(r.finish(), Status::ok);
  EXPECT_EQ(u8, 0xab);
  EXPECT_EQ(u16, 0xbeef);
  EXPECT_EQ(u32, 0xdeadbeefu);
  EXPECT_EQ(u64, 0x0102030405060708ull);
  EXPECT_EQ(i32, -5);
  EXPECT_EQ(i64, -6);
  EXPECT_EQ(s, "hello");
  EXPECT_EQ(sa.to_vector(), arr);
  EXPECT_TRUE(sa.contains("three"));
  EXPECT_FALSE(sa.contains("four"));
  EXPECT_EQ(p.c, 3u);
  ASSERT_EQ(sl.size(), 2u);
  EXPECT_EQ(sl[1].a, 7u);
  EXPECT_EQ(sl[1].c, 9u);
}

TEST(Wire, WriterOverflowIsStickyAndFinishReturnsZero) {
  std::array<std::byte, 24> buf{};
  wire::Writer w(buf);
  w.begin(3, 1);
  w.u64(1);
  EXPECT_TRUE(w.ok());
  w.u8(1);  // 25 > 24
  EXPECT_FALSE(w.ok());
  EXPECT_EQ(w.finish(), 0u);
}

TEST(Wire, HeaderChecks) {
  EXPECT_EQ(wire::check_header({15, 1, 0, 0}, 4096), Status::malformed);
  EXPECT_EQ(wire::check_header({16, 1, 1, 0}, 4096), Status::malformed);
  EXPECT_EQ(wire::check_header({4097, 1, 0, 0}, 4096), Status::too_large);
  EXPECT_EQ(wire::check_header({0xffffffffu, 1, 0, 0}, 4096), Status::too_large);
  EXPECT_EQ(wire::check_header({4096, 1, 0, 0}, 4096), Status::ok);
  EXPECT_EQ(wire::to_errno(Status::too_large), EMSGSIZE);
  EXPECT_EQ(wire::to_errno(Status::unsupported_id), EOPNOTSUPP);
}

TEST(Wire, EveryTruncationOfAMessageIsRefused) {
  std::array<std::byte, 256> buf{};
  wire::Writer w(buf);
  w.begin(5, 9);
  w.string("abcdef");
  std::vector<std::string> arr{"a", "bc"};
  w.strings(std::span<const std::string>(arr));
  std::array<Pair, 1> pairs{Pair{1, 2, 3}};
  w.slice(std::span<const Pair>(pairs));
  std::uint32_t len = w.finish();
  ASSERT_NE(len, 0u);
  auto full = payload_of(std::span<const std::byte>(buf).first(len));
  for (std::size_t cut = 0; cut < full.size(); ++cut) {
    wire::Reader r(full.first(cut));
    std::string_view s;
    wire::StringArrayView sa;
    wire::SliceView<Pair> sl;
    bool all = r.string(s) && r.strings(sa) && r.slice(sl);
    EXPECT_FALSE(all) << "cut at " << cut;
    EXPECT_EQ(r.status(), Status::truncated) << "cut at " << cut;
  }
}

TEST(Wire, HugeCountsAreRefusedWithoutAllocating) {
  std::array<std::byte, 8> buf{};
  std::uint32_t huge = 0xffffffffu;
  std::memcpy(buf.data(), &huge, 4);
  {
    wire::Reader r(buf);
    wire::SliceView<Pair> sl;
    EXPECT_FALSE(r.slice(sl));
    EXPECT_EQ(r.status(), Status::truncated);
  }
  {
    wire::Reader r(buf);
    wire::StringArrayView sa;
    EXPECT_FALSE(r.strings(sa));
  }
  {
    wire::Reader r(buf);
    std::string_view s;
    EXPECT_FALSE(r.string(s));
  }
}

TEST(Wire, TrailingBytesAreMalformed) {
  std::array<std::byte, 8> buf{};
  wire::Reader r(buf);
  std::uint32_t v;
  ASSERT_TRUE(r.u32(v));
  EXPECT_EQ(r.finish(), Status::trailing_bytes);
}

TEST(Wire, HelloRoundTripAndValidation) {
  std::array<std::byte, 4096> buf{};
  wire::Hello h;
  h.max_message = 65536;
  h.pid = 1234;
  h.ids = {1, 16, 17};
  h.features = {"splice", "vm"};
  std::uint32_t len = wire::encode_hello(buf, 42, h);
  ASSERT_GT(len, wire::kHeaderSize);
  wire::Hello got;
  ASSERT_EQ(wire::decode_hello(payload_of(std::span<const std::byte>(buf).first(len)), got), Status::ok);
  EXPECT_EQ(got.max_message, 65536u);
  EXPECT_EQ(got.pid, 1234);
  EXPECT_TRUE(got.serves(17));
  EXPECT_FALSE(got.serves(18));
  EXPECT_TRUE(got.has_feature("vm"));
  EXPECT_EQ(wire::negotiate_max(got.max_message, wire::kDefaultMaxMessage), 65536u);

  h.max_message = 100;  // below kMinMaxMessage
  len = wire::encode_hello(buf, 42, h);
  EXPECT_EQ(wire::decode_hello(payload_of(std::span<const std::byte>(buf).first(len)), got),
            Status::malformed);
  h.max_message = wire::kAbsoluteMaxMessage + 1;
  len = wire::encode_hello(buf, 42, h);
  EXPECT_EQ(wire::decode_hello(payload_of(std::span<const std::byte>(buf).first(len)), got),
            Status::malformed);
}

TEST(Wire, ErrorRoundTripTruncatesDetail) {
  std::array<std::byte, 4096> buf{};
  std::string long_detail(1000, 'x');
  std::uint32_t len = wire::encode_error(buf, 7, 16, EFAULT, long_detail);
  ASSERT_NE(len, 0u);
  wire::ErrorView e;
  ASSERT_EQ(wire::decode_error(payload_of(std::span<const std::byte>(buf).first(len)), e), Status::ok);
  EXPECT_EQ(e.code, EFAULT);
  EXPECT_EQ(e.request_id, 16);
  EXPECT_EQ(e.detail.size(), wire::kMaxErrorDetail);
  // A non-positive code is malformed.
  len = wire::encode_error(buf, 7, 16, 0, "");
  EXPECT_EQ(wire::decode_error(payload_of(std::span<const std::byte>(buf).first(len)), e),
            Status::malformed);
}

}  // namespace
