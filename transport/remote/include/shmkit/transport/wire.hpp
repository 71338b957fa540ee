/// The wire format shared by every shmkit stream protocol (the memory agent, RPC channels, io_uring
/// transport): framed messages over a connected byte stream, in the spirit of gVisor's lisafs.
///
/// Frame = Header (16 bytes) + payload.
///
///   offset size field
///   0      4    length   total frame length in bytes, header included: kHeaderSize <= length <= max
///   4      2    id       message id (MsgId); ids 0..15 are this file's, see "Id ranges" below
///   6      2    flags    reserved, must be 0 (a frame with other bits set is malformed)
///   8      8    tag      chosen by the requester; the reply carries the same tag, so replies may
///                        come out of order and a client matches each to its request
///
/// All integers are little-endian. Fixed-layout structs and slices of them travel as their in-memory
/// bytes (standard layout, trivially copyable, no padding holes: checked with static_assert by
/// the protocol that defines them); every host shmkit supports is little-endian (static_assert
/// below), so the in-memory bytes are the wire bytes.
///
/// Payload marshalling (Writer / Reader):
///   integers             u8 u16 u32 u64 i32 i64, little-endian, unaligned
///   sized string         u32 byte count + bytes (no terminator)
///   string array         u32 count + count sized strings
///   fixed-layout struct  sizeof(T) bytes
///   slice of structs     u32 count + count * sizeof(T) bytes
///
/// Bounds. Every Reader call checks the remaining bytes before touching them and fails (sticky)
/// instead of reading past the end; counts are checked against the bytes remaining BEFORE anything
/// is sized from them (count * element size cannot overflow: both are bounded by the frame length,
/// itself bounded by the negotiated maximum). Readers hand out views into the frame buffer, so
/// decoding never allocates; the caller's frame buffer is the only allocation and check_header()
/// refuses any frame longer than the negotiated maximum before the caller sizes a buffer for it.
///
/// Handshake. The first frame each way is Hello: protocol version, the sender's maximum frame
/// length, the sender's pid, the list of message ids it serves, and a string array of feature
/// names. Each side then uses max_message = min(own, peer) and answers a request for an id it
/// does not serve with an Error reply (EOPNOTSUPP), keeping the connection open. A peer that sends anything else first, or
/// a malformed Hello, gets an Error reply and the connection is closed.
///
/// Errors. An Error frame (id 0) answers a request (same tag) with an errno-style positive code, the
/// id of the request it answers, and a short human-readable detail string. A receiver of a
/// malformed frame answers with Error{EPROTO or EMSGSIZE} (tag 0 if the header itself was bad) and
/// closes that connection: after a framing error the stream position is unknown.
///
/// Id ranges (so protocols can share one connection and one Hello):
///   0..15    wire core (this file): error, hello
///   16..31   memory agent protocol (memory_protocol.hpp): windows, read, write
///   32..63   RPC channels (issue 8)
///   64..95   io_uring transport extensions (issue 7)
///   96..     free
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace shmkit::transport::wire {

static_assert(std::endian::native == std::endian::little,
              "the wire format sends fixed-layout structs as their memory bytes (little-endian)");

using MsgId = std::uint16_t;
using Tag = std::uint64_t;

inline constexpr std::uint32_t kVersion = 1;

namespace ids {
inline constexpr MsgId error = 0;  // reply only: ErrorPayload
inline constexpr MsgId hello = 1;  // first frame each way: HelloFixed + ids + features
inline constexpr MsgId kCoreEnd = 16;
}  // namespace ids

struct Header {
  std::uint32_t length;  // INVARIANT1: kHeaderSize <= length <= negotiated max_message
  std::uint16_t id;
  std::uint16_t flags;   // INVARIANT2: flags == 0 (reserved)
  std::uint64_t tag;
};
static_assert(std::is_standard_layout_v<Header> && std::is_trivially_copyable_v<Header>);
static_assert(sizeof(Header) == 16 && offsetof(Header, length) == 0 && offsetof(Header, id) == 4 &&
              offsetof(Header, flags) == 6 && offsetof(Header, tag) == 8);

inline constexpr std::uint32_t kHeaderSize = sizeof(Header);
/// The smallest maximum a peer may announce (a Hello and an Error must always fit).
inline constexpr std::uint32_t kMinMaxMessage = 4096;
/// What shmkit announces by default: 4 MiB of data plus room for headers.
inline constexpr std::uint32_t kDefaultMaxMessage = (4u << 20) + 4096;
/// No peer may announce more (bounds what a malicious Hello can make us allocate).
inline constexpr std::uint32_t kAbsoluteMaxMessage = 64u << 20;

/// Why a frame or payload was refused. Each maps to the errno sent back in the Error reply.
enum class Status : std::uint8_t {
  ok = 0,
  truncated,       // fewer bytes than a field needs                            -> EBADMSG
  too_large,       // header.length over the negotiated maximum                 -> EMSGSIZE
  malformed,       // impossible values: length < header, flags != 0, bad count -> EPROTO
  trailing_bytes,  // a payload decoded fully but bytes were left over          -> EPROTO
  unsupported_id,  // an id the receiver does not serve                         -> EOPNOTSUPP
};
std::string_view to_string(Status s) noexcept;
int to_errno(Status s) noexcept;  // positive errno

/// Validates a received header against the negotiated maximum. Call before sizing any buffer.
[[nodiscard]] Status check_header(const Header& h, std::uint32_t max_message) noexcept;
inline std::uint32_t payload_size(const Header& h) noexcept { return h.length - kHeaderSize; }

/// Types that may travel as raw bytes: fixed-layout structs.
template <class T>
concept WireStruct = std::is_standard_layout_v<T> && std::is_trivially_copyable_v<T> &&
                     std::has_unique_object_representations_v<T>;

/// ---- encoding ---------------------------------------------------------------------------------

/// Appends to a caller-owned byte buffer of fixed capacity; never allocates. Writing past the end
/// sets a sticky failure (ok() == false) and writes nothing more, so a sender checks once at the end.
class Writer {
 public:
  explicit Writer(std::span<std::byte> buf) noexcept : buf_(buf) {}

  /// Frame helpers: begin() reserves the header, finish() fills in the length and returns it
  /// (0 when anything overflowed).
  void begin(MsgId id, Tag tag) noexcept {
    id_ = id;
    tag_ = tag;
    skip(kHeaderSize);
  }
  [[nodiscard]] std::uint32_t finish() noexcept;

  void u8(std::uint8_t v) noexcept { raw(&v, 1); }
  void u16(std::uint16_t v) noexcept { raw(&v, 2); }
  void u32(std::uint32_t v) noexcept { raw(&v, 4); }
  void u64(std::uint64_t v) noexcept { raw(&v, 8); }
  void i32(std::int32_t v) noexcept { raw(&v, 4); }
  void i64(std::int64_t v) noexcept { raw(&v, 8); }
  void bytes(std::span<const std::byte> b) noexcept { raw(b.data(), b.size()); }
  void string(std::string_view s) noexcept;
  void strings(std::span<const std::string_view> v) noexcept;
  void strings(std::span<const std::string> v) noexcept;
  template <WireStruct T>
  void pod(const T& v) noexcept { raw(&v, sizeof(T)); }
  template <WireStruct T>
  void slice(std::span<const T> v) noexcept {
    if (v.size() > UINT32_MAX) return fail();
    u32(static_cast<std::uint32_t>(v.size()));
    raw(v.data(), v.size_bytes());
  }

  bool ok() const noexcept { return ok_; }
  std::size_t size() const noexcept { return pos_; }
  std::span<const std::byte> written() const noexcept { return buf_.first(pos_); }

 private:
  void raw(const void* p, std::size_t n) noexcept {
    if (!ok_ || n > buf_.size() - pos_) return fail();
    if (n != 0) std::memcpy(buf_.data() + pos_, p, n);
    pos_ += n;
  }
  void skip(std::size_t n) noexcept {
    if (!ok_ || n > buf_.size() - pos_) return fail();
    pos_ += n;
  }
  void fail() noexcept { ok_ = false; }

  std::span<std::byte> buf_;
  std::size_t pos_ = 0;  // INVARIANT3: pos_ <= buf_.size()
  bool ok_ = true;
  MsgId id_ = 0;
  Tag tag_ = 0;
};

/// ---- decoding ---------------------------------------------------------------------------------

/// A slice of fixed-layout structs inside a frame; elements are copied out (the frame bytes need
/// not be aligned for T).
template <WireStruct T>
class SliceView {
 public:
  SliceView() = default;
  SliceView(const std::byte* p, std::uint32_t n) noexcept : p_(p), n_(n) {}
  std::uint32_t size() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  /// Precondition: i < size().
  T operator[](std::uint32_t i) const noexcept {
    T v;
    std::memcpy(&v, p_ + std::size_t{i} * sizeof(T), sizeof(T));
    return v;
  }
  std::vector<T> to_vector() const {
    std::vector<T> out(n_);
    if (n_ != 0) std::memcpy(out.data(), p_, std::size_t{n_} * sizeof(T));
    return out;
  }

 private:
  const std::byte* p_ = nullptr;
  std::uint32_t n_ = 0;
};

/// An array of sized strings inside a frame, already validated (every element lies inside it).
class StringArrayView {
 public:
  StringArrayView() = default;
  StringArrayView(const std::byte* p, std::size_t bytes, std::uint32_t n) noexcept
      : p_(p), bytes_(bytes), n_(n) {}
  std::uint32_t size() const noexcept { return n_; }
  /// Calls f(std::string_view) for each element in order.
  template <class F>
  void for_each(F&& f) const {
    std::size_t pos = 0;
    for (std::uint32_t i = 0; i < n_; ++i) {
      std::uint32_t len;
      std::memcpy(&len, p_ + pos, 4);
      f(std::string_view(reinterpret_cast<const char*>(p_ + pos + 4), len));
      pos += 4 + std::size_t{len};
    }
  }
  std::vector<std::string> to_vector() const;
  bool contains(std::string_view s) const;

 private:
  const std::byte* p_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint32_t n_ = 0;
};

/// Reads a payload front to back. The first failure is sticky: later calls return false and
/// leave outputs untouched, status() says what went wrong. finish() also requires that every byte
/// was consumed (a payload longer than its message is malformed).
class Reader {
 public:
  explicit Reader(std::span<const std::byte> payload) noexcept : buf_(payload) {}

  [[nodiscard]] bool u8(std::uint8_t& v) noexcept { return raw(&v, 1); }
  [[nodiscard]] bool u16(std::uint16_t& v) noexcept { return raw(&v, 2); }
  [[nodiscard]] bool u32(std::uint32_t& v) noexcept { return raw(&v, 4); }
  [[nodiscard]] bool u64(std::uint64_t& v) noexcept { return raw(&v, 8); }
  [[nodiscard]] bool i32(std::int32_t& v) noexcept { return raw(&v, 4); }
  [[nodiscard]] bool i64(std::int64_t& v) noexcept { return raw(&v, 8); }
  /// A view of the next n bytes.
  [[nodiscard]] bool bytes(std::size_t n, std::span<const std::byte>& out) noexcept;
  /// A view into the frame; valid while the frame buffer is.
  [[nodiscard]] bool string(std::string_view& out) noexcept;
  [[nodiscard]] bool strings(StringArrayView& out) noexcept;
  template <WireStruct T>
  [[nodiscard]] bool pod(T& v) noexcept { return raw(&v, sizeof(T)); }
  template <WireStruct T>
  [[nodiscard]] bool slice(SliceView<T>& out) noexcept {
    std::uint32_t n;
    if (!u32(n)) return false;
    /// n * sizeof(T) computed in 64 bits: n < 2^32 and sizeof(T) is small, so no overflow.
    std::uint64_t need = std::uint64_t{n} * sizeof(T);
    if (need > remaining()) return fail(sizeof(T) == 0 ? Status::malformed : Status::truncated);
    out = SliceView<T>(buf_.data() + pos_, n);
    pos_ += static_cast<std::size_t>(need);
    return true;
  }

  std::size_t remaining() const noexcept { return buf_.size() - pos_; }
  /// ok when nothing failed and every byte was consumed.
  [[nodiscard]] Status finish() noexcept {
    if (status_ == Status::ok && remaining() != 0) status_ = Status::trailing_bytes;
    return status_;
  }
  Status status() const noexcept { return status_; }

 private:
  bool raw(void* p, std::size_t n) noexcept {
    if (status_ != Status::ok) return false;
    if (n > remaining()) return fail(Status::truncated);
    if (n != 0) std::memcpy(p, buf_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool fail(Status s) noexcept {
    if (status_ == Status::ok) status_ = s;
    return false;
  }

  std::span<const std::byte> buf_;
  std::size_t pos_ = 0;  // INVARIANT4: pos_ <= buf_.size()
  Status status_ = Status::ok;
};

/// ---- core messages ----------------------------------------------------------------------------

/// Error reply payload: ErrorFixed + sized string (detail, at most kMaxErrorDetail bytes).
struct ErrorFixed {
  std::int32_t code;         // positive errno (EFAULT, EACCES, EPROTO, EMSGSIZE, EOPNOTSUPP, ...)
  std::uint16_t request_id;  // id of the request this answers (0 when the header was unreadable)
  std::uint16_t reserved;    // 0
};
static_assert(sizeof(ErrorFixed) == 8 && std::has_unique_object_representations_v<ErrorFixed>);
inline constexpr std::size_t kMaxErrorDetail = 200;

struct ErrorView {
  std::int32_t code = 0;
  MsgId request_id = 0;
  std::string_view detail;
};
/// Encodes a whole Error frame (detail truncated to kMaxErrorDetail). Returns the frame length, 0
/// if buf is too small (kMinMaxMessage always suffices).
[[nodiscard]] std::uint32_t encode_error(std::span<std::byte> buf, Tag tag, MsgId request_id,
                                         int code, std::string_view detail) noexcept;
[[nodiscard]] Status decode_error(std::span<const std::byte> payload, ErrorView& out) noexcept;

/// Hello payload: HelloFixed + slice<MsgId> (ids served) + string array (features).
struct HelloFixed {
  std::uint32_t version;      // kVersion
  std::uint32_t max_message;  // kMinMaxMessage <= max_message <= kAbsoluteMaxMessage
  std::int32_t pid;           // the sender's pid (in its own pid namespace)
  std::uint32_t reserved;     // 0
};
static_assert(sizeof(HelloFixed) == 16 && std::has_unique_object_representations_v<HelloFixed>);

struct Hello {
  std::uint32_t max_message = kDefaultMaxMessage;
  std::int32_t pid = 0;
  std::vector<MsgId> ids;             // ids this side serves (requests it accepts)
  std::vector<std::string> features;  // free-form names ("splice", "vm", ...)
  bool serves(MsgId id) const noexcept;
  bool has_feature(std::string_view f) const noexcept;
};
/// Returns the frame length, 0 if buf is too small.
[[nodiscard]] std::uint32_t encode_hello(std::span<std::byte> buf, Tag tag, const Hello& h) noexcept;
/// Checks version, max_message range, reserved == 0, and that the payload is fully consumed.
[[nodiscard]] Status decode_hello(std::span<const std::byte> payload, Hello& out);

/// The negotiated maximum frame length of a connection.
inline std::uint32_t negotiate_max(std::uint32_t mine, std::uint32_t peer) noexcept {
  return mine < peer ? mine : peer;
}

}  // namespace shmkit::transport::wire
