/// Moving whole byte ranges and whole wire frames over a stream socket, with partial transfers
/// handled and every wait bounded by a Deadline. Works on blocking and non-blocking sockets
/// (EAGAIN, also from SO_RCVTIMEO/SO_SNDTIMEO, becomes a poll() until the deadline). Sends use
/// MSG_NOSIGNAL: a dead peer is -EPIPE, never SIGPIPE. Shared by the socket transport, the agent
/// and other protocols built on wire.hpp.
#pragma once

#include <sys/uio.h>

#include <chrono>

#include <cstddef>
#include <cstdint>
#include <span>

#include "shmkit/transport/splice_pipe.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit::transport {

/// Sends every byte of iov[0..n) (the array is modified to track progress). 0 or -errno
/// (-EPIPE / -ECONNRESET: peer gone; -ETIMEDOUT). `flags` is OR-ed into MSG_NOSIGNAL (MSG_MORE).
[[nodiscard]] int send_all(int fd, iovec* iov, std::size_t n, Deadline deadline, int flags = 0) noexcept;
[[nodiscard]] int send_all(int fd, const void* p, std::size_t len, Deadline deadline, int flags = 0) noexcept;

/// Receives exactly len bytes. 0, -EPIPE when the peer closed first (even after some bytes),
/// -ETIMEDOUT, or -errno.
[[nodiscard]] int recv_exact(int fd, void* p, std::size_t len, Deadline deadline) noexcept;

/// recv_exact that first spins: receives with MSG_DONTWAIT while bytes keep arriving, and polls
/// without sleeping for up to `spin` after the last progress, before falling back to blocking
/// waits. A reply that is on its way is then taken without a sleep and wake-up; `spin` bounds the CPU spent when it is not.
[[nodiscard]] int recv_exact_spin(int fd, void* p, std::size_t len, Deadline deadline,
                                  std::chrono::microseconds spin) noexcept;

/// Receives and discards exactly len bytes (a request whose data the receiver refuses).
[[nodiscard]] int recv_discard(int fd, std::uint64_t len, Deadline deadline) noexcept;

/// Receives one whole frame: the header (checked with wire::check_header against max_message)
/// and its payload into buf. Returns the payload length (>= 0), or -errno: -EMSGSIZE / -EPROTO for
/// a bad header (h is filled in; nothing past the header was read), -ENOBUFS when the payload does
/// not fit buf (nothing past the header was read), -EPIPE, -ETIMEDOUT.
[[nodiscard]] long recv_frame(int fd, wire::Header& h, std::span<std::byte> buf,
                              std::uint32_t max_message, Deadline deadline) noexcept;

}  // namespace shmkit::transport
