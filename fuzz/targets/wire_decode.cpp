// Fuzz entry point: decoding wire messages (transport/include/shmkit/transport/wire.hpp and
// memory_protocol.hpp) from hostile bytes. Shared by fuzz/fuzz_wire_decode.cpp (libFuzzer) and
// tests/fuzz/corpus_replay_test.cpp (GCC).
//
// Input: byte 0 picks the negotiated maximum (kMinMaxMessage .. kAbsoluteMaxMessage); the rest is
// a byte stream of frames, split the way a receiver splits it: a 16-byte header, check_header(),
// then exactly payload_size() bytes (a frame running past the end is truncated: the receiver
// would wait for more). Each payload is decoded as the message its id names (Hello, Error, the
// memory protocol's Read/Write requests and Windows reply) and ALSO as every other kind, since a
// peer controls the id. A Reader "program" (byte 1) additionally drives the raw Reader calls.
//
// Properties checked (a violation aborts, which libFuzzer reports as a crash):
//   * a decoder never reads outside the payload (ASan) and never throws anything but bad_alloc;
//   * a Hello or Error that decodes ok re-encodes to a frame that decodes to the same values;
//   * check_header() ok implies kHeaderSize <= length <= max and flags == 0;
//   * decoded window descriptors that the client would accept do not wrap.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "shmkit/transport/memory_protocol.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit::fuzz {

namespace wire = transport::wire;
namespace mp = transport::memproto;

[[noreturn]] inline void property_failed(const char* what) {
  std::fprintf(stderr, "fuzz_wire_decode: property violated: %s\n", what);
  std::abort();
}

inline void decode_as_hello(std::span<const std::byte> payload) {
  wire::Hello h;
  if (wire::decode_hello(payload, h) != wire::Status::ok) return;
  if (h.max_message < wire::kMinMaxMessage || h.max_message > wire::kAbsoluteMaxMessage)
    property_failed("decode_hello accepted a max_message out of range");
  for (auto id : h.ids) (void)h.serves(id);
  for (auto& f : h.features) (void)h.has_feature(f);
  // Round trip: what we accepted we can send back unchanged.
  std::vector<std::byte> buf(wire::kHeaderSize + payload.size() + 64);
  std::uint32_t len = wire::encode_hello(buf, 5, h);
  if (len == 0) property_failed("encode_hello failed for a Hello that decoded");
  wire::Header hdr;
  std::memcpy(&hdr, buf.data(), sizeof hdr);
  if (wire::check_header(hdr, wire::kAbsoluteMaxMessage) != wire::Status::ok || hdr.length != len ||
      hdr.id != wire::ids::hello || hdr.tag != 5)
    property_failed("encode_hello wrote a bad header");
  wire::Hello h2;
  if (wire::decode_hello(std::span<const std::byte>(buf.data() + wire::kHeaderSize, len - wire::kHeaderSize), h2) !=
      wire::Status::ok)
    property_failed("re-encoded Hello does not decode");
  if (h2.max_message != h.max_message || h2.pid != h.pid || h2.ids != h.ids || h2.features != h.features)
    property_failed("Hello round trip changed a value");
}

inline void decode_as_error(std::span<const std::byte> payload) {
  wire::ErrorView e;
  if (wire::decode_error(payload, e) != wire::Status::ok) return;
  if (e.detail.data() != nullptr && !e.detail.empty() &&
      (e.detail.data() < reinterpret_cast<const char*>(payload.data()) ||
       e.detail.data() + e.detail.size() > reinterpret_cast<const char*>(payload.data() + payload.size())))
    property_failed("decode_error's detail view lies outside the payload");
  std::array<std::byte, wire::kMinMaxMessage> buf{};
  std::uint32_t len = wire::encode_error(buf, 9, e.request_id, e.code, e.detail);
  if (len == 0) property_failed("encode_error failed");
  wire::ErrorView e2;
  if (wire::decode_error(std::span<const std::byte>(buf.data() + wire::kHeaderSize, len - wire::kHeaderSize), e2) !=
      wire::Status::ok)
    property_failed("re-encoded Error does not decode");
  std::string_view expect = e.detail.substr(0, wire::kMaxErrorDetail);
  if (e2.code != e.code || e2.request_id != e.request_id || e2.detail != expect)
    property_failed("Error round trip changed a value");
}

// What the agent does with a Read / Write request payload, and what a client does with a
// Windows reply (socket_transport.cpp): the same Reader calls and checks.
inline void decode_as_memproto(const wire::Header& h, std::span<const std::byte> payload) {
  {
    wire::Reader r(payload);
    mp::ReadRequest req{};
    if (r.pod(req) && r.finish() == wire::Status::ok)
      (void)mp::window_contains(0x1000, 0x10000, req.address, req.length);
  }
  {
    wire::Reader r(payload);
    mp::WriteRequest req{};
    if (r.pod(req)) {
      std::span<const std::byte> data;
      std::uint64_t want = std::uint64_t{h.length} - std::min<std::uint64_t>(h.length, mp::kWriteRequestPrefix);
      if (req.length == want && r.bytes(static_cast<std::size_t>(req.length), data) &&
          r.finish() == wire::Status::ok && data.size() != req.length)
        property_failed("Write data view has the wrong size");
    }
  }
  {
    wire::Reader r(payload);
    wire::SliceView<mp::WindowDesc> ws;
    if (r.slice(ws) && r.finish() == wire::Status::ok) {
      if (std::uint64_t{ws.size()} * sizeof(mp::WindowDesc) + 4 != payload.size())
        property_failed("Windows slice count disagrees with the payload size");
      for (std::uint32_t i = 0; i < ws.size(); ++i) {
        mp::WindowDesc w = ws[i];
        if (w.address + w.length < w.address) continue;  // the client refuses it (EPROTO)
        (void)mp::window_contains(w.address, w.length, w.address, w.length);
      }
      (void)ws.to_vector();
    }
  }
}

// Byte-driven Reader calls: every call checks bounds; nothing may read outside the payload.
inline void reader_program(std::uint8_t prog, std::span<const std::byte> payload) {
  wire::Reader r(payload);
  for (int step = 0; step < 16; ++step) {
    std::uint8_t op = static_cast<std::uint8_t>((prog >> (step % 8)) ^ step) % 9;
    bool ok = true;
    switch (op) {
      case 0: { std::uint8_t v; ok = r.u8(v); break; }
      case 1: { std::uint16_t v; ok = r.u16(v); break; }
      case 2: { std::uint32_t v; ok = r.u32(v); break; }
      case 3: { std::uint64_t v; ok = r.u64(v); break; }
      case 4: {
        std::string_view s;
        ok = r.string(s);
        if (ok && !s.empty() &&
            (s.data() < reinterpret_cast<const char*>(payload.data()) ||
             s.data() + s.size() > reinterpret_cast<const char*>(payload.data() + payload.size())))
          property_failed("Reader::string view outside the payload");
        break;
      }
      case 5: {
        wire::StringArrayView a;
        ok = r.strings(a);
        if (ok) {
          std::size_t total = 0;
          a.for_each([&](std::string_view s) { total += s.size(); });
          if (total > payload.size()) property_failed("string array longer than its payload");
          (void)a.to_vector();
          (void)a.contains("memory");
        }
        break;
      }
      case 6: { wire::SliceView<std::uint16_t> s; ok = r.slice(s); if (ok) (void)s.to_vector(); break; }
      case 7: { std::span<const std::byte> b; ok = r.bytes(prog % 32, b); break; }
      default: { mp::WindowDesc d; ok = r.pod(d); break; }
    }
    if (!ok) {
      if (r.status() == wire::Status::ok) property_failed("a failed Reader call left status ok");
      break;
    }
  }
  (void)r.finish();
  (void)wire::to_string(r.status());
  (void)wire::to_errno(r.status());
}

inline int wire_decode_one(const std::uint8_t* data, std::size_t n) {
  if (n < 2) return 0;
  const std::uint32_t maxes[] = {wire::kMinMaxMessage, 8192, 65536, wire::kDefaultMaxMessage,
                                 wire::kAbsoluteMaxMessage};
  const std::uint32_t max_message = maxes[data[0] % 5];
  const std::uint8_t prog = data[1];
  const auto* p = reinterpret_cast<const std::byte*>(data + 2);
  std::size_t left = n - 2;
  // Copy into an exact-size heap buffer so ASan sees any read past the end.
  std::vector<std::byte> stream(p, p + left);
  std::size_t pos = 0;
  for (int frames = 0; frames < 64 && stream.size() - pos >= wire::kHeaderSize; ++frames) {
    wire::Header h;
    std::memcpy(&h, stream.data() + pos, sizeof h);
    wire::Status st = wire::check_header(h, max_message);
    if (st != wire::Status::ok) {
      (void)wire::to_errno(st);
      break;  // a receiver closes the connection after a framing error
    }
    if (h.length < wire::kHeaderSize || h.length > max_message || h.flags != 0)
      property_failed("check_header accepted an impossible header");
    pos += wire::kHeaderSize;
    std::size_t plen = std::min<std::size_t>(wire::payload_size(h), stream.size() - pos);
    std::vector<std::byte> payload(stream.begin() + static_cast<std::ptrdiff_t>(pos),
                                   stream.begin() + static_cast<std::ptrdiff_t>(pos + plen));
    std::span<const std::byte> pl(payload);
    switch (h.id) {
      case wire::ids::hello: decode_as_hello(pl); break;
      case wire::ids::error: decode_as_error(pl); break;
      default: decode_as_memproto(h, pl); break;
    }
    // The peer chooses the id: every decoder must survive every payload.
    decode_as_hello(pl);
    decode_as_error(pl);
    decode_as_memproto(h, pl);
    reader_program(prog, pl);
    pos += plen;
  }
  return 0;
}

}  // namespace shmkit::fuzz
