/// The client side of the memory protocol's handshake, written once for every transport that talks
/// to an Agent (SocketTransport, UringTransport; connect_memory() selects among them):
///
///   client                                   agent
///   Hello{pid, features}            ->
///                                   <-       Hello{ids it serves, features, vm-cookie}
///   Windows (tag 0)                 ->
///                                   <-       Windows: slice<WindowDesc>
///
/// The agent's pid is the one the kernel records for the sender of its Hello (SCM_CREDENTIALS,
/// SO_PASSCRED on while the Hello arrives), never the pid field the agent wrote in it: a peer that
/// names another process there would otherwise steer the process_vm transport at that process.
/// SO_PEERCRED would not do either: on a socketpair it names the process that created the pair.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmkit/transport/memory_transport.hpp"
#include "shmkit/transport/splice_pipe.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit::transport::detail {

struct AgentSession {
  wire::Hello hello;               // the agent's Hello, its pid field replaced by `pid`
  pid_t pid = 0;                   // the kernel's word; 0 when the agent is outside this pid namespace
  std::uint32_t max_message = 0;   // negotiated
  std::vector<WindowDesc> windows;
};

/// Performs the handshake on the connected stream socket `fd`. `who` names the transport in
/// error messages. Throws shmkit::Error: timed_out, peer_closed, protocol (the peer is not a
/// memory agent, or sent a malformed frame), or the agent's refusal.
AgentSession handshake_with_agent(int fd, std::string_view who, std::uint32_t max_message,
                                  std::vector<std::string> features, Deadline deadline);

/// Decodes a Windows reply payload; checks INVARIANT1 of WindowDesc (no range wraps).
/// 0, -EPROTO (malformed) or -ENOMEM.
[[nodiscard]] int decode_windows(std::span<const std::byte> payload, std::vector<WindowDesc>& out) noexcept;

}  // namespace shmkit::transport::detail
