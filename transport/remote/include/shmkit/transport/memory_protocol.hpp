/// The memory agent protocol: the messages (ids 16..31 of wire.hpp) with which a client reads and
/// writes the memory windows an Agent exported. Built on wire.hpp framing; reusable by any
/// transport that speaks to an Agent (socket, io_uring).
///
/// Conversation (client -> agent; every reply carries the request's tag):
///   Hello  (wire::ids::hello)  both ways first; the agent lists the ids below and feature
///                              "memory" (plus "splice" when zero-copy is on). The client's Hello
///                              lists no ids (it serves none).
///   Windows  payload: empty             reply Windows: slice<WindowDesc>
///   Read     payload: ReadRequest       reply Read: exactly request.length raw bytes
///   Write    payload: WriteRequest + request.length raw bytes
///                                       reply Write: empty payload
///   Lease  payload: empty             reply Lease: one byte carrying a descriptor (SCM_RIGHTS):
///                                       the client's vm lease page (vm_lease.hpp). At most one per
///                                       connection (a second: EALREADY). Agents that do not know it
///                                       answer EOPNOTSUPP; the client then does not use process_vm.
///   Any request may instead be answered by wire Error{code}: EFAULT (range not inside one exported
///   window), EACCES (write to a read-only window), EINVAL (length 0 or over the frame limit),
///   EOPNOTSUPP (unknown id), EPROTO / EBADMSG / EMSGSIZE (malformed frame: the agent then closes
///   the connection).
///
/// Frame lengths: Read request = 16 + 16; its reply = 16 + length. Write request = 16 + 16 + length.
/// Both must fit the negotiated maximum, so one request moves at most max_data(max_message) bytes;
/// clients split larger transfers into chunks (and may pipeline several requests before reading
/// the replies: the agent answers in order on one connection).
///
/// Addresses are the agent process's own virtual addresses; a range is served only when it lies
/// entirely inside one exported window (checked without overflow: address >= window.address,
/// length <= window.length, address - window.address <= window.length - length).
#pragma once

#include <cstdint>
#include <type_traits>

#include "shmkit/transport/wire.hpp"

namespace shmkit::transport::memproto {

namespace ids {
inline constexpr wire::MsgId windows = 16;
inline constexpr wire::MsgId read = 17;
inline constexpr wire::MsgId write = 18;
inline constexpr wire::MsgId lease = 19;
}  // namespace ids

enum WindowAccess : std::uint32_t {
  access_read = 1u,
  access_write = 2u,
};
enum WindowFlags : std::uint32_t {
  window_zero_copy = 1u,  // the agent serves this window by splicing from/to its backing fd
};

struct WindowDesc {
  std::uint64_t address;  // in the agent's address space
  std::uint64_t length;   // INVARIANT1: address + length does not wrap (checked on decode)
  std::uint32_t access;   // WindowAccess bits
  std::uint32_t flags;    // WindowFlags bits
};
static_assert(sizeof(WindowDesc) == 24 && std::has_unique_object_representations_v<WindowDesc>);

struct ReadRequest {
  std::uint64_t address;
  std::uint64_t length;
};
static_assert(sizeof(ReadRequest) == 16 && std::has_unique_object_representations_v<ReadRequest>);

struct WriteRequest {
  std::uint64_t address;
  std::uint64_t length;  // INVARIANT2: header.length == kHeaderSize + sizeof(WriteRequest) + length
};
static_assert(sizeof(WriteRequest) == 16 && std::has_unique_object_representations_v<WriteRequest>);

inline constexpr std::uint32_t kReadRequestFrame = wire::kHeaderSize + sizeof(ReadRequest);
inline constexpr std::uint32_t kWriteRequestPrefix = wire::kHeaderSize + sizeof(WriteRequest);

/// Bytes one Read or Write request may move under a negotiated maximum frame length: the largest
/// page multiple that fits beside the headers (page multiples keep spliced chunks page-aligned).
inline std::uint64_t max_data(std::uint32_t max_message) noexcept {
  std::uint64_t room = max_message > kWriteRequestPrefix ? max_message - kWriteRequestPrefix : 0;
  std::uint64_t pages = room & ~std::uint64_t{4095};
  return pages != 0 ? pages : room;
}

/// True when [address, address+length) lies inside the window (no overflow for any inputs).
inline bool window_contains(std::uint64_t w_address, std::uint64_t w_length, std::uint64_t address,
                            std::uint64_t length) noexcept {
  return address >= w_address && length <= w_length && address - w_address <= w_length - length;
}

}  // namespace shmkit::transport::memproto
